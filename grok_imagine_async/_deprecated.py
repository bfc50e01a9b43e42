"""Names kept for one release after they moved or left the public surface.

A module lists its old names with :func:`module_getattr`; using one still works, with a
:class:`DeprecationWarning` that says what to use instead (PEP 562 module ``__getattr__``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any


def module_getattr(module: str, old_names: Mapping[str, tuple[Any, str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving ``old_names`` (name -> (object, advice)) with a warning."""

    def __getattr__(name: str) -> Any:
        try:
            value, advice = old_names[name]
        except KeyError:
            raise AttributeError(f"module {module!r} has no attribute {name!r}") from None
        warnings.warn(
            f"{module}.{name} is deprecated and will be removed in the next release; {advice}",
            DeprecationWarning,
            stacklevel=2,
        )
        return value

    return __getattr__
