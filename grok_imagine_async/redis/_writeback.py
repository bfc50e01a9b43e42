"""Writing jobs to Redis, and keeping them in memory while Redis cannot be reached.

A process must go on with its jobs through a Redis outage (or restart) and lose nothing:
every write first updates this process's copy of the job, then is sent; a write that cannot be
sent leaves the job *dirty*, and :meth:`WriteBack.flush` sends the newest state of every dirty
job once Redis answers again. A record is a whole job, so writing it twice is harmless.

Credits are the one thing that cannot wait for Redis: a POST's 40 credits are reserved
atomically before it is sent. While Redis is down, a process spends only from its allowance:
its share (one over the processes last seen) of the budget left when it last asked.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import anyio
import redis.asyncio as aioredis

from .._errors import BudgetExceededError
from .._models import CREDITS_PER_GENERATION
from .._scheduling.jobs import StoredJob
from ._store_script import STORE_ERRORS, WRITE_SCRIPT, StoreKeys, encode, outage_like

logger = logging.getLogger("grok_imagine_async.redis")

FINISHED_KEPT = 10_000
"""Finished jobs each process remembers, to write them back should Redis lose its data (a
job forgotten there could look new to another process, and be paid again)."""


class WriteBack:
    """One process's writes to its jobs in Redis, held in memory while Redis is down.

    Args:
        redis: The client to send through.
        keys: The store's keys.
        owner: This process's owner id.
        max_credits: The shared budget, if any.
        finished_ms: Milliseconds a finished job is kept in Redis (0: forever).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: StoreKeys,
        *,
        owner: str,
        max_credits: int | None,
        finished_ms: int,
    ) -> None:
        self._keys = keys
        self._owner = owner
        self._max_credits = max_credits
        self._finished_ms = finished_ms
        self._script = redis.register_script(WRITE_SCRIPT)
        self.jobs: dict[str, StoredJob] = {}
        """Jobs owned here and unfinished, or finished and not yet written."""
        self.dirty: set[str] = set()
        """Jobs whose newest state is not in Redis yet."""
        self.finished: OrderedDict[str, StoredJob] = OrderedDict()
        """The last :data:`FINISHED_KEPT` jobs this process finished, as written."""
        self._reserved: dict[str, int] = {}  # attempt whose credits were spent offline
        self.allowance = 0
        """Credits this process may spend while Redis is down."""
        self.available = True
        self.up_since = anyio.current_time()
        """Loop time Redis last became reachable."""
        self.calls = self.outages = self.refused = 0

    async def write(
        self,
        job: StoredJob,
        *,
        reserve: int = 0,
        refund: bool = False,
        create: bool = False,
        task_id: str | None = None,
    ) -> str:
        """Write ``job``; return ``"ok"``, ``"exists"`` (``create`` only) or ``"owner"``.

        Args:
            job: Its new state.
            reserve: The attempt whose credits to reserve first (0: none).
            refund: Give back the credits reserved for its last attempt (never sent).
            create: Only if the job does not exist yet.
            task_id: A new task id this write records (for the log, should it be refused).

        Raises:
            BudgetExceededError: If ``reserve`` would pass the budget (nothing was written).
        """
        key = job.key
        cost = CREDITS_PER_GENERATION if reserve else 0
        if self.available:
            try:
                status, value = await self._send(
                    job,
                    reserve=reserve,
                    budget=-1 if self._max_credits is None else self._max_credits,
                    refund=refund,
                    create=create,
                )
            except STORE_ERRORS as exc:
                if not outage_like(exc):
                    raise
                self.went_down(exc)
            else:
                return self._written(job, status, value, task_id)
        if cost and self._max_credits is not None:
            self._spend_offline(key, reserve)
        self.jobs[key] = job
        self.dirty.add(key)
        return "ok"

    async def flush(self) -> None:
        """Send the newest state of every dirty job (credits spent offline counted, never
        refused: they were spent within this process's share).

        Raises:
            redis.exceptions.ConnectionError: Or another unavailability error; what was not
                sent stays dirty.
        """
        for key in sorted(self.dirty):
            job = self.jobs.get(key) or self.finished.get(key)
            if job is not None:
                attempt = self._reserved.get(key, 0)
                status, value = await self._send(
                    job, reserve=attempt, budget=-1, refund=False, create=False
                )
                self._reserved.pop(key, None)
                self._written(job, status, value, None)
            self.dirty.discard(key)

    def went_down(self, exc: BaseException) -> None:
        """Note that Redis could not be reached."""
        if self.available:
            self.available = False
            self.outages += 1
            logger.warning(
                "Redis job store unreachable (%s); jobs go on from memory and are written "
                "back when it answers",
                type(exc).__name__,
            )

    def came_back(self) -> None:
        """Note that Redis answered again."""
        if not self.available:
            self.available = True
            self.up_since = anyio.current_time()
            logger.warning("Redis job store back; writing back %d jobs", len(self.dirty))

    async def _send(
        self, job: StoredJob, *, reserve: int, budget: int, refund: bool, create: bool
    ) -> tuple[bytes, int]:
        self.calls += 1
        status, value = await self._script(
            keys=[
                self._keys.job(job.key),
                self._keys.owned_prefix + self._owner,
                self._keys.credits,
            ],
            args=[
                self._owner,
                encode(job),
                1 if job.final else 0,
                CREDITS_PER_GENERATION if reserve else 0,
                budget,
                CREDITS_PER_GENERATION if refund else 0,
                self._keys.channel,
                reserve,
                1 if create else 0,
                self._finished_ms,
            ],
        )
        return bytes(status), int(value)

    def _written(self, job: StoredJob, status: bytes, value: int, task_id: str | None) -> str:
        name = status.decode()
        key = job.key
        if name == "budget":
            assert self._max_credits is not None
            raise BudgetExceededError(max_credits=self._max_credits, committed_credits=value)
        if name == "owner":
            self.refused += 1
            self.jobs.pop(key, None)
            self.dirty.discard(key)
            logger.warning(
                "job %s was adopted by another process; this one stops writing it%s",
                key,
                f" (its new task {task_id} is not recorded)" if task_id else "",
            )
        elif name == "ok":
            self.dirty.discard(key)
            if job.final:
                self.jobs.pop(key, None)
                self.finished[key] = job
                self.finished.move_to_end(key)
                if len(self.finished) > FINISHED_KEPT:
                    self.finished.popitem(last=False)
            else:
                self.jobs[key] = job
        return name

    def rewrite_all(self) -> None:
        """Redis lost its data: every job this process owns or finished must be written again."""
        self.dirty.update(self.jobs)
        self.dirty.update(self.finished)
        self.up_since = anyio.current_time()  # and nobody adopts or creates for a lease

    def _spend_offline(self, key: str, attempt: int) -> None:
        if self._reserved.get(key, 0) >= attempt:
            return
        if self.allowance < CREDITS_PER_GENERATION:
            assert self._max_credits is not None
            raise BudgetExceededError(
                max_credits=self._max_credits, committed_credits=self._max_credits
            )
        self.allowance -= CREDITS_PER_GENERATION
        self._reserved[key] = attempt
