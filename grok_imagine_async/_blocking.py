"""Blocking work (files, SQLite) in a worker thread, in a way a virtual clock can see.

A virtual-time loop skips ahead whenever it would otherwise wait; while a worker thread is busy
for us it must not, or simulated time would race ahead of a disk write. The loop offers a
``hold_time()`` context for that; on a normal loop this is just ``anyio.to_thread.run_sync``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, TypeVar

import anyio.to_thread

T = TypeVar("T")


async def run_blocking(func: Callable[..., T], *args: Any) -> T:
    """Run ``func(*args)`` in a worker thread and return its result.

    Cancelling the caller does not interrupt the thread; the result is then discarded.
    """
    hold = getattr(asyncio.get_running_loop(), "hold_time", None)
    with hold() if hold is not None else nullcontext():
        return await anyio.to_thread.run_sync(func, *args)
