"""Today's behaviour for the scheduler benchmark: the package as it was at a given commit.

The benchmark compares the current code with the code before issue 12's poll schedule, in the
same run and against the same emulator. :func:`load` extracts ``grok_imagine_async`` from that
commit (``git archive``) into a cache folder under the system's temp directory, renamed so that
it imports beside the current package, and returns the module. Its modules import one another
relatively, so the copy is self-contained; only its client and scheduler are used, the emulator
and the virtual clock stay the current ones.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from benchmarks._git import extract

COMMIT = "98bcd43"
"""The last commit of main before the issue 12 poll schedule."""
LIMITER_COMMIT = "8b0e17b"
"""The last commit of main before the one limiter core (issues 22 and 27)."""


def _package(commit: str) -> str:
    return f"grok_imagine_async_{commit}"


def _extract(commit: str, into: Path) -> None:
    staging = extract(commit, Path(tempfile.mkdtemp(dir=into.parent)))
    (staging / "grok_imagine_async").rename(staging / _package(commit))
    staging.rename(into)


def load(commit: str = COMMIT) -> ModuleType:
    """The package as it was at ``commit``, importable as ``grok_imagine_async_<commit>``."""
    package = _package(commit)
    if package in sys.modules:
        return sys.modules[package]
    cache = Path(tempfile.gettempdir()) / f"grok-imagine-async-{commit}"
    if not (cache / package).is_dir():
        try:
            _extract(commit, cache)
        except OSError:  # another process extracted it first
            if not (cache / package).is_dir():
                raise
    sys.path.insert(0, str(cache))
    return importlib.import_module(package)
