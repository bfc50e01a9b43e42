"""Local files: blocking work in a thread, and temporary files no one can plant or redirect."""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import anyio
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


def create_exclusive(path: Path, mode: int = 0o644) -> BinaryIO:
    """Create and open ``path`` for writing; ``FileExistsError`` if anything (even a link) is
    there, so a planted link redirects nothing."""
    return open(path, "wb", opener=lambda name, _: os.open(name, _FLAGS, mode))


@asynccontextmanager
async def replacing(target: Path, *, mode: int = 0o644) -> AsyncIterator[BinaryIO]:
    """A hidden ``.<name>.<8 hex>.part`` file beside ``target``, renamed onto it once the block
    ends and its bytes are synced, deleted if the block fails: ``target`` is never half written."""
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    out = await run_blocking(create_exclusive, partial, mode)
    try:
        try:
            yield out
            await run_blocking(_flush_and_sync, out)
        finally:
            with anyio.CancelScope(shield=True):
                await run_blocking(out.close)
        await run_blocking(os.replace, partial, target)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await run_blocking(partial.unlink, True)
        raise


def _flush_and_sync(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())


def folder_problem(path: Path, what: str) -> str | None:
    """Create the folder ``path`` if needed and try writing a file in it (blocking): None if it
    can take files, else what stops it, naming it as ``what`` ("output folder")."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        return f"the {what} {path} is a file, not a folder"
    except OSError as exc:
        blocker = next((p for p in [path, *path.parents] if p.exists()), None)
        because = f" ({blocker} is a file)" if blocker and not blocker.is_dir() else ""
        return f"cannot create the {what} {path}: {exc.strerror or exc}{because}"
    try:  # mode bits do not say it all (read-only mounts, ACLs, root): try it
        handle, probe = tempfile.mkstemp(prefix=".grok-imagine-write-test-", dir=path)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        return f"cannot write in the {what} {path}: {exc.strerror or exc}"
    return None
