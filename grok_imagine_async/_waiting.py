"""Waiting for one task: polls spaced by the time waited, and a deadline that names the task.

The client's :meth:`~grok_imagine_async.AsyncGrokImagine.wait` and ``generate_and_wait`` run
this loop. A deadline ends the wait, not the task (the API cannot cancel one): the
:class:`~grok_imagine_async.WaitTimeoutError` carries the task id, so a later wait picks the
task up without paying for it again.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable

import anyio

from ._backoff import PollPolicy
from ._errors import TaskFailedError, WaitTimeoutError
from ._models import Task


async def wait_for_task(
    get_task: Callable[[str], Awaitable[Task]],
    task_id: str,
    policy: PollPolicy,
    rng: random.Random,
    *,
    first_delay: bool = False,
    timeout: float | None = None,  # noqa: ASYNC109 (expiry must name the paid task)
    since: float | None = None,
) -> Task:
    """Poll ``task_id`` with ``get_task`` until it finishes; return it if it succeeded.

    Looks at once (or after the policy's first gap, with ``first_delay``), then spaced in
    proportion to the time waited (:meth:`PollPolicy.gap`), so a task is noticed within a
    few percent of its duration, whatever that is.

    Raises:
        TaskFailedError: If the task failed, or completed without a video URL.
        WaitTimeoutError: ``timeout`` seconds after ``since`` (clock time, default: now),
            naming the task and its last status. None: no deadline.
    """
    task: Task | None = None
    started = anyio.current_time()
    deadline = math.inf if timeout is None else (started if since is None else since) + timeout
    with anyio.CancelScope(deadline=deadline):
        if first_delay:
            await anyio.sleep(policy.gap(0.0, rng=rng))
        while True:
            task = await get_task(task_id)
            if task.is_terminal:
                if not task.succeeded:
                    raise TaskFailedError(task)
                return task
            await anyio.sleep(policy.gap(anyio.current_time() - started, rng=rng))
    assert timeout is not None
    raise WaitTimeoutError(
        task_id, last_status=task.status if task is not None else None, timeout=timeout
    )
