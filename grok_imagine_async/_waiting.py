"""Waiting for one task: polls spaced by the time waited, a deadline that names the task, and
the progress estimate along the way.

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
from ._progress import Progress, ProgressHook, report_progress
from ._scheduling.durations import DurationModel


class TaskWaiter:
    """The waits of one client: its status reads, its poll jitter, and what it learnt of
    generation times (the duration model its progress estimates read).

    Args:
        get_task: Reads a task's status.
        rng: Source of the poll jitter.
        expected_duration: The median generation time assumed before any was seen.
    """

    def __init__(
        self,
        get_task: Callable[[str], Awaitable[Task]],
        rng: random.Random,
        expected_duration: float,
    ) -> None:
        self._get_task = get_task
        self._rng = rng
        self.durations = DurationModel(prior_median=expected_duration)

    async def wait(
        self,
        task_id: str,
        policy: PollPolicy,
        *,
        just_created: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 (expiry must name the paid task)
        since: float | None = None,
        on_progress: ProgressHook | None = None,
    ) -> Task:
        """Poll ``task_id`` until it finishes; return it if it succeeded.

        Looks at once, then spaced in proportion to the time waited (:meth:`PollPolicy.gap`),
        so a task is noticed within a few percent of its duration, whatever that is.

        Args:
            task_id: The task.
            policy: The poll schedule.
            just_created: The caller created the task just now: the first look waits a gap,
                and the task's age is known, so its completion teaches :attr:`durations` and
                progress can be estimated (else it is None until the end).
            timeout: Seconds after ``since`` (clock time, default: now) to give up; None:
                never.
            since: When the deadline's count started.
            on_progress: Called with ``(task_id, progress)`` after each look; a hook that
                raises is logged, and the wait goes on.

        Raises:
            TaskFailedError: If the task failed, or completed without a video URL.
            WaitTimeoutError: At the deadline, naming the task and its last status.
        """
        task: Task | None = None
        started = anyio.current_time()
        deadline = math.inf if timeout is None else (started if since is None else since) + timeout
        progress, running_at = Progress(), 0.0  # the age at the last look finding it running
        with anyio.CancelScope(deadline=deadline):
            if just_created:
                await anyio.sleep(policy.gap(0.0, rng=self._rng))
            while True:
                task = await self._get_task(task_id)
                age = anyio.current_time() - started
                if task.is_terminal:
                    if just_created and task.succeeded:
                        self.durations.observe(running_at, age)
                    report_progress(on_progress, task_id, progress.finished())
                    if not task.succeeded:
                        raise TaskFailedError(task)
                    return task
                running_at = age
                estimate = progress.running(age if just_created else None, self.durations.median)
                report_progress(on_progress, task_id, estimate)
                await anyio.sleep(policy.gap(age, rng=self._rng))
        assert timeout is not None
        raise WaitTimeoutError(
            task_id, last_status=task.status if task is not None else None, timeout=timeout
        )
