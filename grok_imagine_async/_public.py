"""Where a public name says it lives: the module a user imports it from, as httpx does."""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any


def set_module(namespace: Mapping[str, Any], names: Iterable[str]) -> None:
    """Give the classes and functions of ``names`` the ``__module__`` of ``namespace`` (reprs,
    pickle and docs name the public module), their string annotations evaluated first."""
    module = namespace["__name__"]
    for name in names:
        value = namespace[name]
        # Python 3.10 calls a generic alias (``Callable[[X], None]``) a type too.
        if isinstance(value, type) and not isinstance(value, types.GenericAlias):
            own = inspect.get_annotations(value)
            if own:
                hints = typing.get_type_hints(value, include_extras=True)
                value.__annotations__ = {key: hints[key] for key in own}
            value.__module__ = module
        elif inspect.isfunction(value):
            value.__module__ = module  # functions resolve names in __globals__, not here


def require_extra(package: str, module: str, what: str, extra: str) -> None:
    """Import ``module``, which the public ``package`` needs, or raise an :class:`ImportError`
    naming ``what`` it is and the extra that installs it."""
    try:
        importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        install = f'pip install "grok-imagine-async[{extra}]"'
        raise ImportError(f"{package} needs {what}: {install} ({exc})") from exc
