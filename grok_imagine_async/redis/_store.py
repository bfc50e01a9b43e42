"""A job store in Redis shared by every process using one token: a journal they all see.

See :class:`RedisJobStore`. The scripts and key names are in ``_store_script``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import redis.asyncio as aioredis
from anyio.abc import TaskGroup
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .._errors import BudgetExceededError, JournalError
from .._journal import records
from .._models import CREDITS_PER_GENERATION, FailureClass, GenerationRequest
from .._redact import redact_url
from .._scheduling.jobs import Claim, JobResult, Listener, StoredJob, StoreRecord
from ._store_script import (
    CLAIM_SCRIPT,
    HEARTBEAT_SCRIPT,
    ORPHANS_SCRIPT,
    RESERVE_SCRIPT,
    STORE_ERRORS,
    RedisStoreStatistics,
    StoreKeys,
    decode,
    encode,
    outage_like,
)
from ._writeback import WriteBack

if TYPE_CHECKING:
    from ._limiter import RedisRateLimiter

__all__ = ["RedisJobStore", "RedisStoreStatistics"]

logger = logging.getLogger("grok_imagine_async.redis")

DEFAULT_STORE_PREFIX = "grok-imagine:jobs"
DEFAULT_LEASE = 10.0
DEFAULT_FINISHED_TTL = 7 * 86_400.0
RESERVE_JOBS = 4
"""POSTs whose credits each process sets aside, from a shared budget, to spend while Redis is
away (none is spent offline beyond them)."""
POOL_SIZE = 64
"""Connections a store opened from a URL keeps at most (its pub/sub listener holds one)."""
POOL_WAIT = 5.0
"""Seconds a call waits for a free connection before it counts as Redis unreachable."""


class RedisJobStore:
    """A :class:`~grok_imagine_async.abc.JobStore` in Redis that every process of a token shares.

    Any number of processes on any hosts open one store (same Redis, same token, same
    ``namespace``) and act as one client: each job is owned by one process at a time, which
    alone writes it; all of them can read it and are told of its changes (pub/sub); when a
    process stops renewing its lease (``lease`` seconds), another one adopts its unfinished jobs
    (:meth:`adopt_orphans`, :meth:`claim`). A job whose task id is known is then polled, never
    resubmitted; one whose POST was in flight has an unknown outcome and is reported as
    ambiguous, exactly as with the SQLite journal across restarts.

    ``max_credits`` is one budget for all of them: each POST's 40 credits are reserved
    atomically in Redis before it is sent, and refused (:class:`BudgetExceededError`) past it.

    If Redis becomes unreachable, writes are kept in memory and written back when it answers
    again (also after a restart that lost its data); jobs go on meanwhile. While it answers,
    each process sets aside a reserve in the shared count (its share of what is left, at most
    :data:`RESERVE_JOBS` POSTs); while it is down, budgeted POSTs spend only from that reserve,
    so the budget holds through an outage. A reserve is spent online once nothing else is
    left, and given back when its process stops (or, killed, once its lease lapsed). Only a
    keyed hash of the token names the keys.

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
        lease: float = DEFAULT_LEASE,
        finished_ttl: float | None = DEFAULT_FINISHED_TTL,
        limiter: RedisRateLimiter | None = None,
        key_prefix: str = DEFAULT_STORE_PREFIX,
    ) -> None:
        if not api_key:
            raise ValueError("RedisJobStore needs the api_key whose jobs it stores")
        if max_credits is not None and max_credits < 0:
            raise ValueError(f"max_credits must be >= 0, got {max_credits}")
        if not lease > 0:
            raise ValueError("lease must be positive seconds")
        self._owns_client = isinstance(redis, str)
        self._url = redact_url(redis) if isinstance(redis, str) else ""
        if isinstance(redis, str):
            # A bounded pool that waits for a free connection: redis-py's default pool raises
            # MaxConnectionsError (a ConnectionError) under a burst, which would pass for an
            # outage and spend the offline allowance while Redis is up.
            pool = aioredis.BlockingConnectionPool.from_url(
                redis,
                max_connections=POOL_SIZE,
                timeout=POOL_WAIT,
                socket_timeout=1.0,
                socket_connect_timeout=1.0,
                retry=Retry(NoBackoff(), 1),
            )
            self._redis: aioredis.Redis = aioredis.Redis.from_pool(pool)  # closes it too
        else:
            self._redis = redis
        self._keys = StoreKeys.for_token(api_key, prefix=key_prefix, namespace=namespace)
        self.id = uuid.uuid4().hex[:16]
        """This process's owner id (random, never reused)."""
        self._max_credits = max_credits
        self._lease = lease
        self._limiter = limiter
        self._writes = WriteBack(
            self._redis,
            self._keys,
            owner=self.id,
            max_credits=max_credits,
            finished_ms=0 if finished_ttl is None else math.ceil(finished_ttl * 1000),
        )
        self._claim_script = self._redis.register_script(CLAIM_SCRIPT)
        self._orphans_script = self._redis.register_script(ORPHANS_SCRIPT)
        self._heartbeat_script = self._redis.register_script(HEARTBEAT_SCRIPT)
        self._reserve_script = self._redis.register_script(RESERVE_SCRIPT)
        self._reserve = 0  # credits set aside in Redis for an outage (see _settle_reserve)
        self._jobs = self._writes.jobs  # owned here and unfinished, or not yet written
        self._listeners: list[Listener] = []
        self._epoch: bytes | None = None
        self._lost_at = -math.inf  # loop time this process learnt that Redis lost its data
        self._tg: TaskGroup | None = None
        self._calls = self._adopted = 0
        self._released = False

    def __repr__(self) -> str:
        # Neither the token nor the URL's password.
        where = f"{self._url!r}, " if self._url else ""
        return f"RedisJobStore({where}id={self.id!r}, keys={self._keys.base!r})"

    # -- lifetime -----------------------------------------------------------------------------

    async def __aenter__(self) -> RedisJobStore:
        try:
            await self._heartbeat()
            if self._max_credits is not None:
                await self._settle_reserve()  # what may be spent should Redis fail soon
        except STORE_ERRORS as exc:
            await self._close_client()
            where = f" at {self._url}" if self._url else ""
            if outage_like(exc):
                raise self._error(
                    f"cannot reach the Redis job store{where} ({type(exc).__name__})"
                ) from exc
            raise self._error(f"the Redis job store{where} refused us: {exc}") from exc
        self._writes.up_since = anyio.current_time()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._keep_alive)
        self._tg.start_soon(self._listen)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Write back what waits, give up this process's lease (its unfinished jobs are then
        adopted by the others at once) and close the connections it opened. Idempotent."""
        tg, self._tg = self._tg, None
        if tg is not None:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
            with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                try:
                    await self._writes.flush()
                    await self._settle_reserve(keep=False)
                    await self._redis.delete(self._keys.alive_prefix + self.id)
                except STORE_ERRORS as exc:
                    pending = len(self._writes.dirty)
                    logger.warning(
                        "Redis unreachable at shutdown (%s): %d jobs not written", exc, pending
                    )
        await self._close_client()

    async def give_up_lease(self) -> None:
        """Stop renewing this process's lease and give it up now, from any task: its
        unfinished jobs are adopted by the other processes at once. For a process whose
        scheduler stopped; the store stays open (closing is still the owner's job)."""
        self._released = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
            try:
                await self._writes.flush()
                await self._settle_reserve(keep=False)
                await self._redis.delete(self._keys.alive_prefix + self.id)
            except STORE_ERRORS as exc:
                logger.warning(
                    "Redis unreachable (%s): this process's lease runs out by itself", exc
                )

    async def _close_client(self) -> None:
        if self._owns_client:
            await self._redis.aclose()

    # -- the JobStore protocol -----------------------------------------------------------------

    async def load(self, key: str) -> StoreRecord | None:
        """The record of ``key`` (None if it was never sent); call :meth:`claim` first.

        Raises:
            JournalError: If the job is not in this process's memory and Redis is unreachable.
        """
        job = self._jobs.get(key) or await self.peek(key)
        return None if job is None else job.record

    async def record_intent(self, key: str, request: GenerationRequest, attempt: int) -> None:
        """Record that POST number ``attempt`` is about to be sent, reserving its credits.

        Raises:
            BudgetExceededError: If the shared budget cannot pay for it (nothing was written).
            JournalError: If another process owns the job now (this one must not send).
        """
        before = self._jobs.get(key)
        old = before.record if before is not None else None
        record = records.intent(old, key, request, attempt)
        status = await self._write(StoredJob(key, request, record, self.id), reserve=attempt)
        if status == "owner":
            raise self._error(f"job {key} is owned by another process now; not sending it")

    async def record_submitted(self, key: str, task_id: str) -> None:
        """Record that the POST for ``key`` created ``task_id``."""
        job = self._jobs.get(key)
        if job is None or job.record is None:
            raise KeyError(f"record_submitted({key!r}) without record_intent")
        new = records.submitted(job.record, key, task_id)
        await self._write(StoredJob(key, job.request, new, self.id), task_id=task_id)

    async def record_finished(self, result: JobResult) -> None:
        """Record how the job ended; a POST refused outright gives its credits back."""
        job = self._jobs.get(result.key)
        old = job.record if job is not None else None
        record = records.finished(old, result)
        refund = result.task is None and result.failure_class is FailureClass.REQUEST_ERROR
        await self._write(StoredJob(result.key, result.request, record, self.id), refund=refund)

    async def record_files(self, key: str, files: Sequence[Path]) -> None:
        """Record that the job's videos were downloaded to ``files``."""
        job = self._jobs.get(key) or await self.peek(key)
        if job is None or job.record is None:
            raise KeyError(f"record_files({key!r}) for a job the store never saw")
        record = records.with_files(job.record, key, files)
        await self._write(StoredJob(key, job.request, record, self.id))

    async def _write(
        self,
        job: StoredJob,
        *,
        reserve: int = 0,
        refund: bool = False,
        create: bool = False,
        task_id: str | None = None,
    ) -> str:
        # An outage keeps the write in memory (WriteBack); any other refusal is reported.
        try:
            try:
                status = await self._writes.write(
                    job, reserve=reserve, refund=refund, create=create, task_id=task_id
                )
            except BudgetExceededError:
                if self._reserve < CREDITS_PER_GENERATION or not self._writes.available:
                    raise
                # What this process set aside for an outage is what is left: spend it now.
                await self._settle_reserve(keep=False)
                status = await self._writes.write(
                    job, reserve=reserve, refund=refund, create=create, task_id=task_id
                )
        except STORE_ERRORS as exc:
            raise self._error(f"Redis refused to record job {job.key}: {exc}") from exc
        if status == "ok":  # told here too: an outage delays the others' message, not ours
            self._tell(job)
        return status

    # -- sharing ------------------------------------------------------------------------------

    async def register(
        self, key: str, request: GenerationRequest, *, reserve: bool = False
    ) -> None:
        """Record a new job, owned by this process, before it is queued: every process can
        find it from now on. Kept in memory (and written back) while Redis is down.

        Args:
            key: The new job's key.
            request: What it generates.
            reserve: Reserve its first POST's credits now, in the same atomic step (an app
                refuses a job it could not pay for before accepting it).

        Raises:
            ValueError: If a job with this key exists already.
            BudgetExceededError: If ``reserve`` and the shared budget cannot pay for it.
        """
        job = StoredJob(key, request, None, self.id)
        status = await self._write(job, create=True, reserve=1 if reserve else 0)
        if status == "exists":
            raise ValueError(f"a job with key {key!r} exists already")

    async def peek(self, key: str) -> StoredJob | None:
        """The job as stored (this process's own newer state first), without claiming it.

        Raises:
            JournalError: If Redis is unreachable and the job is not in this process's memory.
        """
        mine = self._jobs.get(key)
        if mine is not None:
            return mine
        try:
            self._calls += 1
            owner, text = await self._redis.hmget(self._keys.job(key), ["owner", "record"])
            owner = owner.decode() if isinstance(owner, bytes) else owner
        except STORE_ERRORS as exc:
            raise self._failed(exc, f"look up job {key}") from exc
        if text is None:
            return None
        return decode(text, owner=owner or "")

    async def claim(
        self, key: str, *, create: GenerationRequest | None = None, reopen: bool = False
    ) -> Claim:
        """Make this process the owner of ``key`` if nobody alive owns it.

        Args:
            key: The job.
            create: Create the job with this request, owned here, if nobody knows it (one
                round trip for :meth:`claim` and :meth:`register` together).
            reopen: Take the job back even if it finished (a new run must do it again).

        Raises:
            JournalError: If Redis is unreachable (and the job is not this process's).
        """
        mine = self._jobs.get(key)
        if mine is not None:
            return Claim("mine", mine)
        keys = self._keys
        for _ in range(2):  # a second time once a changed epoch is known
            creating = create is not None and self.may_create()
            try:
                self._calls += 1
                status, text, owner = await self._claim_script(
                    keys=[keys.job(key), keys.owned_prefix + self.id, keys.owners, keys.epoch],
                    args=[
                        self.id,
                        keys.alive_prefix,
                        keys.owned_prefix,
                        keys.channel,
                        encode(StoredJob(key, create, None, self.id))
                        if create is not None and creating
                        else "",
                        self._epoch or b"",
                        "1" if reopen else "0",
                    ],
                )
                if status != b"epoch":
                    break
                # Redis lost its data: learn the new epoch (and write back) before any answer.
                await self._heartbeat()
            except STORE_ERRORS as exc:
                raise self._failed(exc, f"claim job {key}") from exc
        name = status.decode()
        if name == "epoch" or (name == "unknown" and create is not None and not creating):
            raise self._error(
                "Redis lost its data; waiting for every process to write its jobs back"
            )
        if name == "unknown":
            return Claim("unknown", None)
        job = decode(text, owner=self.id if name == "adopted" else owner.decode())
        if name in ("created", "mine", "adopted", "reopened"):
            self._jobs[key] = job
            if name == "adopted":
                self._adopted += 1
                logger.info("adopted job %s from a process that stopped", key)
        return Claim(name, job)

    def may_create(self) -> bool:
        """Whether a job unknown to Redis may be taken as new: not within a lease of Redis
        losing its data (the job may be one another process has yet to write back)."""
        return anyio.current_time() - self._lost_at >= self._lease

    def may_adopt(self) -> bool:
        """Whether this process may adopt orphans now: Redis has answered for a whole lease.

        After an outage every process's lease may have lapsed; each one gets a lease to renew
        it before anyone takes its jobs.
        """
        writes = self._writes
        if self._released or not writes.available:
            return False
        return anyio.current_time() - writes.up_since >= self._lease

    async def adopt_orphans(self, limit: int = 100) -> list[StoredJob]:
        """Take over up to ``limit`` unfinished jobs of processes whose lease lapsed.

        Returns nothing unless :meth:`may_adopt`; never raises for an unreachable Redis.
        """
        if not self.may_adopt():
            return []
        try:
            self._calls += 1
            names = await self._orphans_script(
                keys=[self._keys.owners, self._keys.owned_prefix + self.id],
                args=[self.id, self._keys.alive_prefix, self._keys.owned_prefix, limit],
            )
            adopted = []
            for name in names:
                self._calls += 1
                text = await self._redis.hget(name, "record")
                if text is None:
                    continue
                job = decode(text, owner=self.id)
                self._jobs[job.key] = job
                adopted.append(job)
        except STORE_ERRORS as exc:
            if not outage_like(exc):
                raise self._failed(exc, "adopt orphaned jobs") from exc
            self._writes.went_down(exc)
            return []
        if adopted:
            self._adopted += len(adopted)
            logger.info("adopted %d jobs from processes that stopped", len(adopted))
        return adopted

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every job change any process makes; returns a remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def forget(self, key: str) -> None:
        """Take ``key`` (owned here) back to queued: its POST is known not to have left."""
        job = self._jobs.get(key)
        if job is not None:
            await self._write(StoredJob(key, job.request, None, self.id))

    async def records(self, *, page_size: int = 500) -> AsyncIterator[StoreRecord]:
        """Every job of the namespace with a record (queued ones have none), in no set order.

        Raises:
            JournalError: If Redis cannot be reached.
        """
        seen: set[str] = set()
        for job in list(self._jobs.values()):  # this process's newest state first
            if job.record is not None:
                seen.add(job.key)
                yield job.record
        cursor: int = 0
        pattern = self._keys.job("*")
        try:
            while True:
                self._calls += 1
                cursor, names = await self._redis.scan(cursor, match=pattern, count=page_size)
                if names:
                    self._calls += 1
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for name in names:
                            pipe.hget(name, "record")
                        texts = await pipe.execute()
                    for text in texts:
                        found = _decoded(text)
                        if found is not None and found.record and found.key not in seen:
                            yield found.record
                if cursor == 0:
                    return
        except STORE_ERRORS as exc:
            raise self._failed(exc, "list the jobs") from exc

    async def get_meta(self, name: str) -> str | None:
        """A value stored with :meth:`set_meta`, or None.

        Raises:
            JournalError: If Redis cannot be reached.
        """
        try:
            self._calls += 1
            value = await self._redis.hget(self._keys.meta, name)
        except STORE_ERRORS as exc:
            raise self._failed(exc, "read the store's settings") from exc
        return None if value is None else value.decode() if isinstance(value, bytes) else value

    async def set_meta(self, name: str, value: str) -> None:
        """Store a small named value with the jobs of the namespace.

        Raises:
            JournalError: If Redis cannot be reached.
        """
        try:
            self._calls += 1
            await self._redis.hset(self._keys.meta, name, value)
        except STORE_ERRORS as exc:
            raise self._failed(exc, "store the store's settings") from exc

    async def credits_committed(self) -> int:
        """Credits reserved for POSTs or spent in this namespace by every process (from
        Redis); the reserves processes set aside for an outage are not counted."""
        self._calls += 1
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self._keys.credits)
            pipe.hvals(self._keys.reserves)
            value, reserves = await pipe.execute()
        return int(value or 0) - sum(int(held) for held in reserves)

    async def eviction_policy(self) -> str:
        """Redis's ``maxmemory-policy`` ("" if it will not say, e.g. under an ACL)."""
        try:
            self._calls += 1
            found: dict[Any, Any] = await self._redis.config_get("maxmemory-policy")
        except STORE_ERRORS:
            return ""
        value = next(iter(found.values()), b"")
        return value.decode() if isinstance(value, bytes) else str(value)

    @property
    def lease(self) -> float:
        """Seconds a process may go silent before its jobs are adopted."""
        return self._lease

    @property
    def available(self) -> bool:
        """False while Redis cannot be reached."""
        return self._writes.available

    def statistics(self) -> RedisStoreStatistics:
        """A frozen snapshot of this store's counters."""
        return RedisStoreStatistics(
            redis_calls=self._calls + self._writes.calls,
            available=self._writes.available,
            pending_writes=len(self._writes.dirty),
            outages=self._writes.outages,
            adopted=self._adopted,
            refused_writes=self._writes.refused,
        )

    # -- internals ----------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        self._calls += 1
        keys = self._keys
        epoch = await self._heartbeat_script(
            keys=[
                keys.alive_prefix + self.id,
                keys.owners,
                keys.epoch,
                keys.reserves,
                keys.credits,
            ],
            args=[
                self.id,
                math.ceil(self._lease * 1000),
                uuid.uuid4().hex,
                keys.alive_prefix,
                # The reserves of processes gone go back to the budget, once every live one
                # has had a lease to renew its key after an outage.
                "1" if self.may_adopt() else "0",
            ],
        )
        lost_data = self._epoch is not None and epoch != self._epoch
        self._epoch = epoch
        if lost_data:
            logger.warning("Redis lost its data; writing back this process's jobs")
            self._lost_at = anyio.current_time()
            self._writes.rewrite_all()
        if self._limiter is not None:
            self._calls += 1
            await self._limiter.heartbeat()

    async def _keep_alive(self) -> None:
        while True:
            await anyio.sleep(self._lease / 3)
            if self._released:
                return
            try:
                await self._heartbeat()
                self._writes.came_back()
                await self._writes.flush()
                if self._max_credits is not None:
                    await self._settle_reserve()
            except STORE_ERRORS as exc:
                # Never fatal to the process that owns the store: a refusal that is no outage
                # (an ACL change) is logged, and its writes wait as in an outage.
                if not outage_like(exc):
                    logger.error("Redis refuses the job store's heartbeat: %s", exc)
                self._writes.went_down(exc)

    async def _settle_reserve(self, *, keep: bool = True) -> None:
        """Set aside (``keep``) or give back this process's reserve: the credits it may spend
        while Redis is away, taken from the shared count while Redis answers, so that spending
        offline never passes the budget. What was spent from it offline has been written back
        since (each POST counted again), so that much of the reserve is given back."""
        if self._max_credits is None:
            return
        spent = self._reserve - self._writes.allowance
        peers = self._limiter.statistics().peers if self._limiter is not None else 1
        self._calls += 2
        alive = await self._redis.scard(self._keys.owners)
        held = await self._reserve_script(
            keys=[self._keys.credits, self._keys.reserves],
            args=[
                self.id,
                max(0, spent),
                RESERVE_JOBS * CREDITS_PER_GENERATION if keep else 0,
                self._max_credits,
                max(1, peers or 1, int(alive)),
            ],
        )
        self._reserve = self._writes.allowance = int(held)

    async def _listen(self) -> None:
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._keys.channel)
                self._tell(None)  # anything may have changed while unsubscribed
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None:
                        self._on_message(message["data"])
            except STORE_ERRORS:
                await anyio.sleep(min(1.0, self._lease / 3))
            finally:
                with anyio.CancelScope(shield=True), contextlib.suppress(*STORE_ERRORS):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    def _on_message(self, data: bytes) -> None:
        try:
            owner, _version, text = json.loads(data)
            job = decode(text, owner=owner)
        except (ValueError, TypeError):
            return  # not ours
        self._tell(job)

    def _tell(self, job: StoredJob | None) -> None:
        for listener in list(self._listeners):
            listener(job)

    def _failed(self, exc: BaseException, what: str) -> JournalError:
        """The error for ``exc`` raised by Redis while trying to ``what``."""
        if outage_like(exc):
            self._writes.went_down(exc)
            return self._error(f"Redis unreachable, cannot {what} ({type(exc).__name__})")
        return self._error(f"Redis refused to {what}: {exc}")

    def _error(self, message: str) -> JournalError:
        # The key space stands where a journal's path would: it names no secret (a hash).
        return JournalError(message, path=Path(self._keys.base))


def _decoded(text: bytes | None) -> StoredJob | None:
    if text is None:
        return None
    try:
        return decode(text)
    except (ValueError, TypeError, KeyError):
        return None  # not ours
