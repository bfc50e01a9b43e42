"""Checks made before the first credit is spent: every place a command will write to.

A batch that pays for its videos and then cannot save them (a folder that cannot be created or
written, a manifest path taken by a folder) has wasted the money; these checks turn that into a
usage error that names the folder, before any request is sent.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["PreflightError", "check_file_target", "check_folder"]

_PROBE_PREFIX = ".grok-imagine-write-test-"


class PreflightError(Exception):
    """A place the command must write to cannot be used; the message names it."""


def check_folder(path: Path, what: str) -> None:
    """Create ``path`` (and its parents) if needed and check a file can be written in it.

    Args:
        path: The folder.
        what: What it is for, for the message (e.g. ``"output folder"``).

    Raises:
        PreflightError: It cannot be created, is not a folder, or cannot be written.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise PreflightError(f"the {what} {path} is a file, not a folder") from None
    except OSError as exc:
        blocker = _file_in_the_way(path)
        because = f" ({blocker} is a file)" if blocker is not None else ""
        raise PreflightError(
            f"cannot create the {what} {path}: {exc.strerror or exc}{because}"
        ) from None
    if not path.is_dir():
        raise PreflightError(f"the {what} {path} is not a folder")
    try:  # mode bits do not say it all (read-only mounts, ACLs, root): try it
        handle, probe = tempfile.mkstemp(prefix=_PROBE_PREFIX, dir=path)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise PreflightError(f"cannot write in the {what} {path}: {exc.strerror or exc}") from None


def check_file_target(path: Path, what: str) -> None:
    """Check that ``path`` can be written as a file: its folder is usable, no folder is there.

    Raises:
        PreflightError: Naming ``path`` or its folder.
    """
    if path.is_dir():
        raise PreflightError(f"the {what} {path} is a folder; a file is needed there")
    check_folder(path.parent if str(path.parent) else Path("."), f"{what}'s folder")


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is not a folder, else None."""
    for parent in [path, *path.parents]:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None
