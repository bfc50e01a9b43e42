"""Where a public name says it lives: the module a user imports it from, as httpx does."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any


def set_module(namespace: Mapping[str, Any], names: Iterable[str]) -> None:
    """Give each class and function of ``names`` the ``__module__`` of ``namespace``.

    Reprs, tracebacks and the docs then say ``grok_imagine_async.JobResult`` rather than the
    private module that defines it, and pickle finds the class where a user imports it.
    Constants and type aliases (``Callable[...]`` and the like, whose ``__module__`` is
    read-only on Python 3.10) are left alone.

    A class's annotations are strings (``from __future__ import annotations``) that
    ``typing.get_type_hints`` and pydantic evaluate in the class's ``__module__``; the public
    module does not hold the names they use (``Path``, ``Mapping``), so they are evaluated
    first, where the class was defined.
    """
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
