"""A job store in Redis that every process using one token shares.

Each process writes its own copy of a job first, then Redis; a write Redis cannot take leaves
the job *dirty*, written back (its newest state, harmless twice) once Redis answers again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import redis.asyncio as aioredis
from anyio.abc import TaskGroup

from .._errors import BudgetExceededError, ConfigurationError, JobTakenOver, JournalError
from .._journal.memory import StoreBase
from .._journal.records import Change, Refund, decode_job, encode_job
from .._models import CREDITS_PER_GENERATION, GenerationRequest
from .._scheduling.jobs import Claim, StoredJob, StoreRecord, StoreState
from ._script import (
    CLAIM_SCRIPT,
    HEARTBEAT_SCRIPT,
    ORPHANS_SCRIPT,
    REDIS_ERRORS,
    RESERVE_SCRIPT,
    WRITE_SCRIPT,
    Connected,
    outage_like,
)

if TYPE_CHECKING:
    from ._limiter import RedisRateLimiter

__all__ = ["RedisJobStore", "RedisStoreStatistics"]

logger = logging.getLogger("grok_imagine_async.redis")

RESERVE_JOBS = 4  # POSTs a process may pay for while Redis is away, set aside beforehand
FINISHED_KEPT = 10_000  # finished jobs written back should Redis lose its data (or paid again)
LOST = "Redis lost its data; waiting for every process to write its jobs back"


@dataclass(frozen=True, slots=True)
class RedisStoreStatistics:
    """A snapshot of a :class:`RedisJobStore`'s counters.

    Attributes:
        redis_calls: Commands and scripts sent to Redis.
        available: False while Redis cannot be reached (writes wait in memory).
        pending_writes: Jobs whose latest state waits to be written back.
        outages: Times Redis became unreachable.
        adopted: Jobs this process took over from processes that stopped.
        refused_writes: Writes refused because another process owns the job now.
    """

    redis_calls: int
    available: bool
    pending_writes: int
    outages: int
    adopted: int
    refused_writes: int


class RedisJobStore(StoreBase, Connected):
    """A :class:`~grok_imagine_async.abc.JobStore` in Redis that every process of a token shares.

    Processes that open one store (same Redis, token and ``namespace``) act as one client:
    each job is owned (and written) by one process at a time, every process reads it and is
    told of its changes, and the unfinished jobs of a process that stops renewing its lease are
    adopted by another (polled if their task id is known, else ambiguous). ``max_credits`` is
    one budget, each POST's credits reserved atomically before it is sent (``record_intent``
    raises :class:`BudgetExceededError` past it, and ``JobTakenOver``, a :class:`JournalError`,
    for a job another process owns now). Through an outage writes wait in memory and the budget
    spends only a reserve set aside beforehand.

    Args:
        redis: A ``redis://`` URL (the store then owns the connections) or a client you own.
        api_key: The token whose jobs these are (hashed for key names, never stored).
        namespace: Separates stores of one token (an app, a batch file).
        max_credits: The shared credit budget of the namespace; None for none.
        lease: Seconds a process may go silent before its jobs are adopted; renewed every
            third of it.
        finished_ttl: Seconds a finished job stays findable (None: forever).
        limiter: A :class:`RedisRateLimiter` whose peer heartbeat rides on this store's.
        key_prefix: Prefix of every key.

    Raises:
        ConfigurationError: If an argument is out of range.

    Example:
        >>> async def main(token: str) -> None:
        ...     async with RedisJobStore("redis://localhost", api_key=token) as store:
        ...         print(await store.peek("some-job-id"))
    """

    def __init__(
        self,
        redis: str | aioredis.Redis,
        *,
        api_key: str,
        namespace: str = "default",
        max_credits: int | None = None,
        lease: float = 10.0,
        finished_ttl: float | None = 7 * 86_400.0,
        limiter: RedisRateLimiter | None = None,
        key_prefix: str = "grok-imagine:jobs",
    ) -> None:
        super().__init__()
        if max_credits is not None and max_credits < 0:
            raise ConfigurationError(f"max_credits must be >= 0, got {max_credits}")
        if not lease > 0:
            raise ConfigurationError("lease must be positive seconds")
        base = self._base = self._connect(redis, api_key, key_prefix, f":{namespace}")
        self.id = uuid.uuid4().hex[:16]
        """This process's owner id (random, never reused)."""
        # What every script takes after the job's key, and first (see _script.py).
        names = (f"owned:{self.id}", "owners", "epoch", "credits", "reserves", f"alive:{self.id}")
        self._keys = [f"{base}:{name}" for name in names]
        self._channel = f"{base}:events"
        self._argv = [self.id, f"{base}:alive:", f"{base}:owned:", self._channel]
        self._max_credits, self._limiter = max_credits, limiter
        self.lease = lease
        """Seconds a process may go silent before its jobs are adopted."""
        self._finished_ms = 0 if finished_ttl is None else math.ceil(finished_ttl * 1000)
        self._jobs: dict[str, StoredJob] = {}  # owned here and unfinished, or not yet written
        self._dirty: set[str] = set()  # jobs whose newest state is not in Redis yet
        self._finished: OrderedDict[str, StoredJob] = OrderedDict()  # the last FINISHED_KEPT
        self._reserve = 0  # credits set aside in Redis for an outage (see _settle_reserve)
        self._allowance = 0  # what is left of it to spend while Redis is down
        # key -> (the newest attempt paid from the allowance, the credits the job took from it
        # less what the provider did not charge of its earlier attempts paid from it too)
        self._spent_offline: dict[str, tuple[int, int]] = {}
        self._refunds: dict[str, int] = {}  # dirty jobs -> reserved credits that go back
        # dirty jobs -> (an attempt reserved in Redis, replaced since: what it was not charged)
        self._replaced: dict[str, tuple[int, int]] = {}
        self._held_queued: set[str] = set()  # queued, their first POST's credits reserved
        self._recount: set[str] = set()  # to count in the budget again: Redis lost its data
        self._available = True
        self._up_since = anyio.current_time()  # loop time Redis last became reachable
        self._lost_at = -math.inf  # loop time this process learnt that Redis lost its data
        self._epoch: bytes | None = None
        self._tg: TaskGroup | None = None
        self._adopted = self._outages = self._refused = 0
        self._released = False

    def __repr__(self) -> str:
        # Neither the token nor the URL's password.
        return f"RedisJobStore({self._where}, id={self.id!r}, keys={self._base!r})"

    async def __aenter__(self) -> RedisJobStore:
        try:
            with self._asking("open the job store", calls=0):
                await self._heartbeat()
                await self._settle_reserve()  # what may be spent should Redis fail soon
        except JournalError:
            await self.aclose()
            raise
        self._up_since = anyio.current_time()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._keep_alive)
        self._tg.start_soon(self._listen)
        return self

    async def aclose(self) -> None:
        """Write back what waits, :meth:`give_up_lease` and close what it opened. Idempotent."""
        tg, self._tg = self._tg, None
        if tg is not None:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
            await self.give_up_lease()
        await super().aclose()

    async def give_up_lease(self) -> None:
        """Give up this process's lease now, from any task (the store stays open): the others
        adopt its unfinished jobs at once."""
        self._released = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
            try:
                await self._flush()
                await self._settle_reserve(keep=False)
                await self._redis.delete(self._keys[-1])  # this process's alive key
            except REDIS_ERRORS as exc:
                logger.warning(
                    "Redis unreachable (%s): %d jobs not written; this process's lease runs "
                    "out by itself",
                    exc,
                    len(self._dirty),
                )

    async def load(self, key: str) -> StoreRecord | None:
        """The record of ``key`` (None if it was never sent), as :meth:`peek` finds it."""
        return None if (job := await self.peek(key)) is None else job.record

    async def _apply(
        self,
        key: str,
        change: Change,
        *,
        shield: bool,
        reserve: int = 0,
        refund: Refund = None,
        replaced: int = 0,
    ) -> None:
        # Never shielded: a write Redis does not take waits in memory anyway. A job not in
        # memory (finished here, or reopened elsewhere since) changes as Redis has it.
        old = await self.peek(key)
        before = None if old is None else old.record
        record = change(before)
        job = StoredJob(key, record.request, record, self.id)
        given = 0 if refund is None else refund(before)
        status = await self._write(job, reserve=reserve, refund=given, replaced=replaced)
        if status == "owner" and reserve:
            message = f"job {key} is owned by another process now; not sending it"
            raise JobTakenOver(message, path=Path(self._base))

    async def register(
        self, key: str, request: GenerationRequest, *, reserve: bool = False
    ) -> None:
        """Record the job of a new key (a fresh id), owned here, before it is queued: unlike
        ``claim(create=)`` it needs no answer from Redis (kept in memory while it is down), and
        ``reserve`` reserves its first POST's credits in the same atomic step.

        Raises:
            ConfigurationError: If a job with this key exists already (this very write run
                twice, as redis-py resends a command whose answer timed out, is no error).
            BudgetExceededError: If ``reserve`` and the shared budget cannot pay for it.
            JournalError: If ``reserve`` within a lease of Redis losing its data: the budget
                is not known until every process has written its jobs back.
        """
        if reserve and self._max_credits is not None and not self.may_create():
            raise self._error(LOST)
        job = StoredJob(key, request, None, self.id)
        if await self._write(job, create=True, reserve=int(reserve)) == "exists":
            raise ConfigurationError(f"a job with key {key!r} exists already")
        if reserve:
            self._held_queued.add(key)

    async def peek(self, key: str) -> StoredJob | None:
        """The job as stored (this process's own newer state first), without claiming it.

        Raises:
            JournalError: If Redis cannot be reached or refuses (as for every read of Redis).
        """
        if (mine := self._jobs.get(key)) is not None:
            return mine
        with self._asking(f"look up job {key}"):
            owner, text = await self._redis.hmget(self._job(key), ["owner", "record"])
        return None if text is None else decode_job(text, owner=_text(owner))

    async def claim(
        self, key: str, *, create: GenerationRequest | None = None, reopen: bool = False
    ) -> Claim:
        """Make this process the owner of ``key`` if nobody alive owns it (``create`` and
        ``reopen`` as :meth:`JobStore.claim <grok_imagine_async.abc.JobStore.claim>` says).

        Raises:
            JournalError: If Redis is unreachable (and the job is not this process's).
        """
        if (mine := self._jobs.get(key)) is not None:
            return Claim("mine", mine)
        with self._asking(f"claim job {key}", calls=0):
            for _ in range(2):  # a second time once a changed epoch is known
                queued = ""  # the record to create it with, if it may be new
                if create is not None and self.may_create():
                    queued = encode_job(StoredJob(key, create, None, self.id))
                status, text, owner = await self._script(
                    CLAIM_SCRIPT, key, queued, self._epoch or b"", int(reopen)
                )
                if (name := _text(status)) != "epoch":
                    break
                # Redis lost its data: learn the new epoch (and write back) before any answer.
                await self._heartbeat()
        if name == "epoch" or (name == "unknown" and create is not None and not queued):
            raise self._error(LOST)
        if name == "unknown":
            return Claim("unknown", None)
        job = decode_job(text, owner=_text(owner))
        claim = Claim(name, job)  # type: ignore[arg-type]
        if claim.owned:
            self._jobs[key] = job
            if name == "adopted":
                self._adopted += 1
                logger.info("adopted job %s from a process that stopped", key)
        return claim

    def may_create(self) -> bool:
        """Whether a job unknown to Redis may be new: not within a lease of Redis losing its data
        (another process may have yet to write it back)."""
        return anyio.current_time() - self._lost_at >= self.lease

    def may_adopt(self) -> bool:
        """Whether this process may adopt orphans: Redis has answered for a whole lease (so
        every process has renewed its own after an outage)."""
        up_for = anyio.current_time() - self._up_since
        return not self._released and self._available and up_for >= self.lease

    async def adopt_orphans(self, limit: int = 100) -> list[StoredJob]:
        """Take over up to ``limit`` unfinished jobs of processes whose lease lapsed (none unless
        :meth:`may_adopt`; an unreachable Redis is no error)."""
        if not self.may_adopt():
            return []
        try:
            with self._asking("adopt orphaned jobs", calls=0):
                texts = await self._script(ORPHANS_SCRIPT, None, limit, uuid.uuid4().hex)
        except JournalError:
            if self._available:  # refused, not an outage
                raise
            return []
        adopted = [decode_job(text, owner=self.id) for text in texts if text]
        self._jobs.update((job.key, job) for job in adopted)
        if adopted:
            self._adopted += len(adopted)
            logger.info("adopted %d jobs from processes that stopped", len(adopted))
        return adopted

    async def forget(self, key: str) -> None:
        """Take ``key`` (owned here) back to queued: its POST is known not to have left."""
        if (job := self._jobs.get(key)) is not None:
            await self._write(StoredJob(key, job.request, None, self.id))

    async def records(self, *, page_size: int = 500) -> AsyncIterator[StoreRecord]:
        """Every job of the namespace with a record (queued ones have none), in no set order."""
        seen: set[str] = set()
        for job in list(self._jobs.values()):  # this process's newest state first
            if job.record is not None:
                seen.add(job.key)
                yield job.record
        cursor, match = 0, self._job("*")
        with self._asking("list the jobs"):
            while True:
                self._calls += 1
                cursor, names = await self._redis.scan(cursor, match=match, count=page_size)
                if names:
                    self._calls += 1
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for name in names:
                            pipe.hget(name, "record")
                        texts = await pipe.execute()
                    for text in texts:
                        try:
                            found = decode_job(text)  # None (gone since the scan): TypeError
                        except (ValueError, TypeError, KeyError):
                            continue  # not ours
                        if found.record and found.key not in seen:
                            yield found.record
                if cursor == 0:
                    return

    async def get_meta(self, name: str) -> str | None:
        """A value stored with :meth:`set_meta`, or None."""
        with self._asking("read the store's settings"):
            value = await self._redis.hget(f"{self._base}:meta", name)
        return None if value is None else _text(value)

    async def set_meta(self, name: str, value: str) -> None:
        """Store a small named value with the jobs of the namespace."""
        with self._asking("store the store's settings"):
            await self._redis.hset(f"{self._base}:meta", name, value)

    async def eviction_policy(self) -> str:
        """Redis's ``maxmemory-policy`` ("" if it will not say, e.g. under an ACL)."""
        try:
            self._calls += 1
            found: dict[Any, Any] = await self._redis.config_get("maxmemory-policy")
        except REDIS_ERRORS:
            return ""
        return _text(next(iter(found.values()), b""))

    @property
    def available(self) -> bool:
        """False while Redis cannot be reached."""
        return self._available

    def statistics(self) -> RedisStoreStatistics:
        """A frozen snapshot of this store's counters."""
        return RedisStoreStatistics(
            redis_calls=self._calls,
            available=self._available,
            pending_writes=len(self._dirty),
            outages=self._outages,
            adopted=self._adopted,
            refused_writes=self._refused,
        )

    async def _write(
        self,
        job: StoredJob,
        *,
        reserve: int = 0,
        refund: int = 0,
        replaced: int = 0,
        create: bool = False,
    ) -> str:
        """:meth:`_send` ``job`` within the budget: ``"ok"``, ``"exists"`` or ``"owner"``. An
        outage keeps it in memory; a refusal is a :class:`JournalError`."""
        budget = -1 if self._max_credits is None else self._max_credits
        status = None
        gone = (reserve - 1, replaced) if reserve and replaced else (0, 0)
        try:
            # Twice if the first finds that Redis lost its data (the job is written back first).
            for _ in range(2 if self._available else 0):
                if job.key in self._dirty:  # first what it holds, as its write-back counts it
                    await self._write_back(job.key)
                if create and reserve and budget >= 0 and not self.may_create():
                    raise self._error(LOST)
                status = await self._send(
                    job, reserve, budget, refund=refund, replaced=gone, create=create
                )
                if status != "epoch":
                    break
            if status == "epoch":
                raise self._error(LOST)
        except REDIS_ERRORS as exc:
            if not outage_like(exc):
                raise self._error(self._failure(f"record job {job.key}", exc)) from exc
            self._went_down(exc)
        if status is None:  # Redis away: kept here, written back when it answers
            paid, owed = self._spent_offline.get(job.key, (0, 0))
            if reserve > paid:  # once an attempt (its intent may be written again)
                if budget >= 0:
                    if self._allowance < CREDITS_PER_GENERATION:  # refused: nothing changes
                        raise BudgetExceededError(max_credits=budget, committed_credits=budget)
                    self._allowance -= CREDITS_PER_GENERATION
                if paid and gone[0] == paid:  # paid offline too: written back as costing less
                    owed -= gone[1]
                elif gone[1]:  # reserved in Redis: given back as it is written back
                    self._replaced[job.key] = gone
                if budget >= 0:
                    self._spent_offline[job.key] = (reserve, owed + CREDITS_PER_GENERATION)
            if refund:  # given back as it is written back
                self._refunds[job.key] = refund
            self._jobs[job.key] = job
            self._dirty.add(job.key)
            status = "ok"
        if job.record is not None:  # sent, or being sent: its record tells what it holds
            self._held_queued.discard(job.key)
        if status == "ok":  # told here too: an outage delays the others' message, not ours
            self._tell(job)
        return status

    async def _flush(self) -> None:
        """Send every dirty job's newest state (credits spent offline counted, never refused;
        refunds made offline given back)."""
        for key in sorted(self._dirty):
            if key in self._dirty:  # not written since (see _write)
                await self._write_back(key)

    async def _write_back(self, key: str) -> None:
        """Send dirty job ``key``'s newest state with what it holds of the budget: before any
        other write of it, whose reservation would make the write-back's look done."""
        job, status = self._jobs.get(key) or self._finished.get(key), ""
        if job is not None and key in self._recount:
            # Redis lost its data: what the job holds of the budget counts again (never
            # refused: spent, or reserved for a POST under way), net of what went back.
            attempt, credits = self._held(job)
            status = await self._send(job, attempt, -1, credits=credits)
        elif job is not None:
            paid, owed = self._spent_offline.get(key, (0, 0))
            refund, gone = self._refunds.get(key, 0), self._replaced.get(key, (0, 0))
            status = await self._send(job, paid, -1, credits=owed, refund=refund, replaced=gone)
        if status == "epoch":  # Redis lost its data, learnt just now: the job counts again
            await self._write_back(key)
            return
        self._spent_offline.pop(key, None)
        self._dirty.discard(key)
        self._refunds.pop(key, None)
        self._replaced.pop(key, None)
        self._recount.discard(key)

    def _held(self, job: StoredJob) -> tuple[int, int]:
        """The attempt whose credits ``job`` holds in the budget, and all it holds: what its
        record says it cost, and the credits reserved for a POST not answered yet (an intent,
        or a queued job registered with its reservation)."""
        record = job.record
        if record is None:
            held = job.key in self._held_queued
            return (1, CREDITS_PER_GENERATION) if held else (0, 0)
        pending = CREDITS_PER_GENERATION if record.state is StoreState.INTENT else 0
        return record.attempts, record.credits + pending

    async def _send(
        self,
        job: StoredJob,
        reserve: int,
        budget: int,
        *,
        credits: int = CREDITS_PER_GENERATION,
        refund: int = 0,
        replaced: tuple[int, int] = (0, 0),
        create: bool = False,
    ) -> str:
        """Run the write script for ``job``, first reserving attempt ``reserve``'s ``credits``
        within ``budget`` (-1: none) after giving back ``replaced`` (attempt, credits: what the
        provider did not charge of the attempt the new one replaces, once, while its reservation
        is the job's); or giving ``refund`` of the last attempt's credits back, once;
        ``create``: only if new. Its status (``"epoch"``: nothing written, as Redis lost its
        data, learnt now: its jobs wait to be written back). Past the budget, this process's
        reserve for an outage is what is left: it is spent, then :class:`BudgetExceededError`."""
        refund = min(max(refund, 0), CREDITS_PER_GENERATION)  # never more than was reserved
        gone = min(max(replaced[1], 0), CREDITS_PER_GENERATION)
        cost = (credits if reserve else 0, budget, refund)
        args = (
            *(encode_job(job), int(job.final), *cost, reserve, int(create), self._finished_ms),
            *(replaced[0] if gone else 0, gone, self._epoch or b""),
        )
        status, value = await self._script(WRITE_SCRIPT, job.key, *args)
        if _text(status) == "budget" and self._reserve >= CREDITS_PER_GENERATION:
            await self._settle_reserve(keep=False)
            status, value = await self._script(WRITE_SCRIPT, job.key, *args)
        name, key = _text(status), job.key
        if name == "epoch":  # Redis lost its data: learnt (its jobs to write back) first
            await self._heartbeat()
        elif name == "budget":
            raise BudgetExceededError(max_credits=budget, committed_credits=int(value))
        if name == "owner":
            self._refused += 1
            self._jobs.pop(key, None)
            self._dirty.discard(key)
            task_id = job.record.task_id if job.record else None
            logger.warning(
                "job %s was adopted by another process; this one stops writing it%s",
                key,
                f" (its task {task_id} is not recorded)" if task_id else "",
            )
        elif name == "ok":
            self._dirty.discard(key)
            if job.final:
                self._jobs.pop(key, None)
                self._finished[key] = job
                self._finished.move_to_end(key)
                if len(self._finished) > FINISHED_KEPT:
                    self._finished.popitem(last=False)
            else:
                self._jobs[key] = job
        return name

    def _went_down(self, exc: BaseException) -> None:
        if self._available:
            self._available = False
            self._outages += 1
            logger.warning(
                "Redis job store unreachable (%s); jobs go on from memory and are written "
                "back when it answers",
                type(exc).__name__,
            )

    async def _heartbeat(self) -> None:
        # The reserves of processes gone go back to the budget once every live one has had a
        # lease to renew its key after an outage (as for adopting).
        lease_ms = math.ceil(self.lease * 1000)
        epoch = await self._script(
            HEARTBEAT_SCRIPT, None, lease_ms, uuid.uuid4().hex, int(self.may_adopt())
        )
        known, self._epoch = self._epoch, epoch
        if known is not None and epoch != known:
            logger.warning("Redis lost its data; writing back this process's jobs")
            self._lost_at = self._up_since = anyio.current_time()  # nobody adopts for a lease
            self._dirty.update(self._jobs, self._finished)
            self._recount.update(self._jobs, self._finished)
        if self._limiter is not None:
            self._calls += 1
            await self._limiter.heartbeat()

    async def _keep_alive(self) -> None:
        while True:
            await anyio.sleep(self.lease / 3)
            if self._released:
                return
            try:
                await self._heartbeat()
                if not self._available:
                    self._available = True
                    self._up_since = anyio.current_time()
                    logger.warning("Redis job store back; writing back %d jobs", len(self._dirty))
                await self._flush()
                await self._settle_reserve()
            except REDIS_ERRORS as exc:
                # Never fatal to the process that owns the store: a refusal that is no outage
                # (an ACL change) is logged, and its writes wait as in an outage.
                if not outage_like(exc):
                    logger.error("Redis refuses the job store's heartbeat: %s", exc)
                self._went_down(exc)

    async def _settle_reserve(self, *, keep: bool = True) -> None:
        """Set aside (``keep``) or give back the credits to spend while Redis is away (what was
        spent offline has been written back and counted since)."""
        if self._max_credits is None:
            return
        spent = max(0, self._reserve - self._allowance)
        peers = self._limiter.statistics().peers if self._limiter is not None else 1
        most = RESERVE_JOBS * CREDITS_PER_GENERATION if keep else 0
        held = await self._script(RESERVE_SCRIPT, None, spent, most, self._max_credits, peers)
        self._reserve = self._allowance = int(held)

    async def _listen(self) -> None:
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                self._tell(None)  # anything may have changed while unsubscribed
                async for message in pubsub.listen():
                    try:
                        owner, text = json.loads(message["data"])
                        job = decode_job(text, owner=owner)
                    except (ValueError, TypeError):
                        continue  # not ours
                    self._tell(job)
            except REDIS_ERRORS:
                await anyio.sleep(min(1.0, self.lease / 3))
            finally:
                with anyio.CancelScope(shield=True), contextlib.suppress(*REDIS_ERRORS):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    @contextlib.contextmanager
    def _asking(self, what: str, calls: int = 1) -> Iterator[None]:
        """``calls`` commands (counted; scripts count themselves); a :class:`JournalError` for
        what Redis raises (an outage takes it for down)."""
        self._calls += calls
        try:
            yield
        except REDIS_ERRORS as exc:
            if outage_like(exc):
                self._went_down(exc)
            raise self._error(self._failure(what, exc)) from exc

    async def _script(self, script: str, key: str | None, *args: Any) -> Any:
        """Run one of the store's scripts on the job ``key`` (if any), with the keys and first
        arguments they all take."""
        job = self._base if key is None else self._job(key)
        return await self._run(script, [job, *self._keys], [*self._argv, *args])

    def _job(self, key: str) -> str:
        return f"{self._base}:job:{key}"  # the hash holding one job

    def _error(self, message: str) -> JournalError:
        # The key space stands where a journal's path would: it names no secret (a hash).
        return JournalError(message, path=Path(self._base))


def _text(value: bytes | str | None) -> str:
    # What a caller's client decoding responses gives as str, one of ours gives as bytes.
    return value.decode() if isinstance(value, bytes) else value or ""
