"""Local files: blocking work in a thread, and temporary files no one can plant or redirect."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import anyio.to_thread

T = TypeVar("T")

_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
)


async def run_blocking(func: Callable[..., T], *args: Any) -> T:
    """Run ``func(*args)`` in a worker thread, holding a virtual-time loop's clock meanwhile."""
    hold = getattr(asyncio.get_running_loop(), "hold_time", None)
    with hold() if hold is not None else nullcontext():
        return await anyio.to_thread.run_sync(func, *args)


def create_exclusive(path: Path, *, mode: int = 0o644) -> BinaryIO:
    """Create and open ``path`` for writing; ``FileExistsError`` if anything (even a link) is
    there, so a planted link redirects nothing."""
    fd = os.open(path, _FLAGS, mode)
    try:
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


def create_temp(target: Path, *, mode: int = 0o644) -> tuple[Path, BinaryIO]:
    """A new hidden ``.<name>.<8 hex>.part`` next to ``target``, open for writing."""
    for _ in range(8):
        path = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
        try:
            return path, create_exclusive(path, mode=mode)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {target}")
