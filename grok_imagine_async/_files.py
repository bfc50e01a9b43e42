"""Local files: blocking work in a thread, temporary files no one can plant or redirect, and
the task log kept beside a journal."""

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


TASK_LOG_SIZE = 32 * 1024  # about 500 task ids


class TaskLog:
    """Paid task ids kept beside a journal that could not take them (a full disk, a quota).

    The file's blocks are allocated before anything is paid and then overwritten in place, so
    it needs no new space when the disk has none. Lines are ``key task_id``; NUL bytes end it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def reserve(self) -> None:
        """Create the file with its bytes allocated (``OSError`` if it cannot be)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            size = os.fstat(fd).st_size
            if size < TASK_LOG_SIZE:
                os.pwrite(fd, bytes(TASK_LOG_SIZE - size), size)  # real blocks, not a hole
                os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> dict[str, str]:
        """The task ids kept, by job key (empty if there is no file)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return {}
        try:
            data = os.read(fd, TASK_LOG_SIZE)
        finally:
            os.close(fd)
        kept: dict[str, str] = {}
        for line in data.split(b"\0", 1)[0].decode("utf-8", "replace").splitlines():
            key, _, task_id = line.rpartition(" ")
            if key and task_id:
                kept[key] = task_id
        return kept

    def write(self, tasks: dict[str, str]) -> int:
        """Keep ``tasks`` (key: task id) in place of what was kept; return how many fit."""
        lines = b""
        kept = 0
        for key, task_id in tasks.items():
            line = f"{key} {task_id}\n".encode("utf-8", "replace")
            if len(lines) + len(line) > TASK_LOG_SIZE:
                break
            lines += line
            kept += 1
        fd = os.open(self.path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            os.pwrite(fd, lines + bytes(TASK_LOG_SIZE - len(lines)), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        return kept
