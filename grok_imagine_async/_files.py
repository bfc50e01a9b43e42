"""Temporary files that no one can plant or redirect: random names, created exclusively."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import BinaryIO

_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
)


def temp_path(target: Path) -> Path:
    """A fresh hidden name next to ``target``: ``.<name>.<8 hex digits>.part``."""
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")


def create_exclusive(path: Path, *, mode: int = 0o644) -> BinaryIO:
    """Create and open ``path`` for writing, failing if anything (even a link) is there.

    ``O_EXCL`` refuses an existing file or symbolic link, so a link planted at the name
    cannot send our bytes elsewhere; ``O_NOFOLLOW`` (where the system has it) adds the same
    guarantee on systems whose ``O_EXCL`` would follow it.

    Raises:
        FileExistsError: If the name is taken.
        OSError: If the file cannot be created.
    """
    fd = os.open(path, _FLAGS, mode)
    try:
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


def create_temp(target: Path, *, mode: int = 0o644) -> tuple[Path, BinaryIO]:
    """A new temporary file next to ``target`` (see :func:`temp_path`), open for writing,
    with permission bits ``mode`` (0o600 for a file only its owner may read)."""
    for _ in range(8):
        path = temp_path(target)
        try:
            return path, create_exclusive(path, mode=mode)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {target}")
