"""Test helpers: a virtual-time event loop and an emulator of the Grok Imagine API.

The emulator needs the ``emulator`` extra (Starlette, uvicorn):
``pip install "grok-imagine-async[emulator]"``. Its names are imported on first use, so the
virtual-time loop works without the extra.

The pytest plugin (:mod:`grok_imagine_async.testing.pytest_plugin`, loaded by pytest through
its ``pytest11`` entry point) turns these into fixtures: ``grok_emulator``, ``grok_client``,
``grok_emulator_env``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .._clock import ManualClock
from .._public import set_module as _set_module
from ._config import EmulatorConfig, Vocabulary, client_environment
from ._faults import FaultConfig, Outage
from ._state import EmulatorStatistics
from ._virtual_time import VirtualTimeEventLoop, run_virtual

if TYPE_CHECKING:  # these need the extra: imported on first use (see __getattr__)
    from ._emulator import Emulator
    from ._server import serve_in_thread
    from ._transport import ConnectionDropped

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
    "client_environment",
    "run_virtual",
    "serve_in_thread",
]

_LAZY = {
    "ConnectionDropped": "._transport",
    "Emulator": "._emulator",
    "serve_in_thread": "._server",
}

_set_module(globals(), [name for name in __all__ if name not in _LAZY])

INSTALL_HINT = 'the emulator needs its extra: pip install "grok-imagine-async[emulator]"'


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(module_name, __name__)
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in {"starlette", "uvicorn"}:
            raise ImportError(f"{INSTALL_HINT} ({exc})", name=exc.name) from exc
        raise
    globals()[name] = getattr(module, name)
    _set_module(globals(), [name])
    return globals()[name]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
