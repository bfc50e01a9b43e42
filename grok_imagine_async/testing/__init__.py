"""Test helpers: a virtual-time event loop and an emulator of the Grok Imagine API.

The emulator needs the ``emulator`` extra (``pip install "grok-imagine-async[emulator]"``);
its names are imported on first use, so the virtual-time loop works without it. The pytest
plugin (:mod:`grok_imagine_async.testing.pytest_plugin`) turns these into fixtures."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._public import set_module as _set_module
from ._config import EmulatorConfig, EmulatorStatistics, FaultConfig, Outage, Vocabulary
from ._virtual_time import ManualClock, VirtualTimeEventLoop, run_virtual

if TYPE_CHECKING:  # these need the extra: imported on first use (see __getattr__)
    from ._emulator import ConnectionDropped, Emulator, serve_in_thread

__all__ = [
    "ConnectionDropped",
    "Emulator",
    "EmulatorConfig",
    "EmulatorStatistics",
    "FaultConfig",
    "ManualClock",
    "Outage",
    "VirtualTimeEventLoop",
    "Vocabulary",
    "run_virtual",
    "serve_in_thread",
]
_NEEDS_EXTRA = ("ConnectionDropped", "Emulator", "serve_in_thread")
_set_module(globals(), [name for name in __all__ if name not in _NEEDS_EXTRA])


def __getattr__(name: str) -> Any:
    if name not in _NEEDS_EXTRA:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from . import _emulator
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in {"starlette", "uvicorn"}:
            raise
        hint = 'the emulator needs its extra: pip install "grok-imagine-async[emulator]"'
        raise ImportError(f"{hint} ({exc})", name=exc.name) from exc
    globals().update({extra: getattr(_emulator, extra) for extra in _NEEDS_EXTRA})
    _set_module(globals(), _NEEDS_EXTRA)
    return globals()[name]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
