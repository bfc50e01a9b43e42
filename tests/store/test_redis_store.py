"""RedisJobStore against a real redis-server started for these tests (127.0.0.1 only).

Two stores on one token stand for two processes: what one writes, the other finds and is told
of; a job has one owner at a time; the credit budget is one for both; an outage loses nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from _redis_worker import RedisServer, committed_credits

from grok_imagine_async import (
    AsyncGrokImagine,
    BudgetExceededError,
    ConfigurationError,
    FailureClass,
    GenerationRequest,
    JobResult,
    JobScheduler,
    JobSpec,
    PollPolicy,
    RateLimit,
    Task,
    TaskStatus,
)
from grok_imagine_async._errors import APIConnectionError, JobTakenOver, JournalError
from grok_imagine_async.abc import StoreState
from grok_imagine_async.batch import SchedulerConfig

pytest.importorskip("redis.asyncio", reason='needs the "redis" extra')

from grok_imagine_async._journal.records import decode_job, encode_job
from grok_imagine_async._scheduling.jobs import StoredJob
from grok_imagine_async.redis import RedisJobStore, RedisRateLimiter
from grok_imagine_async.testing import Emulator, EmulatorConfig, FaultConfig, Outage

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

TOKEN = "sk-test-SECRET-store-token"
REQUEST = GenerationRequest(prompt="a lantern on a lake")


def outage_emulator(*, fails_after: float = 0.05, free: bool = True) -> Emulator:
    """The emulator on pro, where every task fails ``fails_after`` seconds after it is created,
    charged or not (``free``)."""
    outage = Outage(start=0.0, end=None, fails_after=fails_after, free=free)
    return Emulator(
        EmulatorConfig(tokens={TOKEN: "pro"}, faults=FaultConfig(outages=(outage,)), seed=2)
    )


QUICK_POLL = PollPolicy(wait_initial=0.1, wait_factor=1.0, wait_max=0.1, wait_jitter=0.0)
"""A look every 0.1 s: a failed task is seen at once."""


def store(url: str, **options: object) -> RedisJobStore:
    options.setdefault("lease", 0.6)
    return RedisJobStore(url, api_key=TOKEN, **options)  # type: ignore[arg-type]


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Wait for what a background task or Redis makes true, within a generous 10 s."""
    with anyio.fail_after(10.0):
        while not predicate():  # noqa: ASYNC110 - Redis and its pub/sub raise no local event
            await anyio.sleep(0.01)


async def completed(job_store: RedisJobStore, key: str, task_id: str) -> None:
    """Run ``key`` through ``job_store`` to a completion (40 credits)."""
    await job_store.register(key, REQUEST)
    await job_store.record_intent(key, REQUEST, 1)
    await job_store.record_submitted(key, task_id)
    await job_store.record_finished(result(key, ok=True, task_id=task_id, credits=40))


def result(key: str, *, ok: bool, task_id: str | None, credits: int) -> JobResult:
    task = None
    if task_id is not None:
        task = Task(
            task_id=task_id,
            status=TaskStatus.COMPLETED if ok else TaskStatus.FAILED,
            raw_status="completed" if ok else "failed",
            videos=("http://127.0.0.1/v.mp4",) if ok else (),
        )
    error = None if ok else APIConnectionError("refused", path="/v1/generate")
    return JobResult(
        key=key,
        request=REQUEST,
        task=task,
        error=error,
        failure_class=None if ok else FailureClass.REQUEST_ERROR,
        attempts=1,
        credits=credits,
        polls=1,
        submitted_at=None,
        finished_at=0.0,
    )


def test_records_round_trip_through_json() -> None:
    queued = StoredJob("k", REQUEST, None, "me")
    assert decode_job(encode_job(queued), owner="me") == queued
    with pytest.raises(ValueError, match="not a job record"):
        decode_job('{"not": "ours"}')


async def test_jobs_written_by_one_process_are_found_and_followed_by_another(
    redis_server: RedisServer,
) -> None:
    seen: list[StoredJob] = []
    async with store(redis_server.url) as a, store(redis_server.url) as b:
        b.subscribe(lambda job: seen.append(job) if job is not None else None)
        await a.register("job-1", REQUEST)
        found = await b.peek("job-1")
        assert found is not None and found.record is None and found.owner == a.id
        assert (await b.claim("job-1")).status == "foreign"
        await a.record_intent("job-1", REQUEST, 1)
        await a.record_submitted("job-1", "task-1")
        await wait_until(lambda: any(j.record and j.record.task_id == "task-1" for j in seen))
        await a.record_finished(result("job-1", ok=True, task_id="task-1", credits=40))
        await wait_until(lambda: any(j.final for j in seen))
        final = await b.peek("job-1")
        assert final is not None and final.record is not None
        assert final.record.state is StoreState.COMPLETED
        assert final.record.videos == ("http://127.0.0.1/v.mp4",)
        assert (await b.claim("job-1")).status == "final"
        with pytest.raises(ConfigurationError, match="exists already"):
            await b.register("job-1", REQUEST)  # a key is one job, whoever asks


async def test_a_client_of_yours_that_decodes_responses_is_served_alike(
    redis_server: RedisServer,
) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        async with store(client) as a, store(redis_server.url) as b:  # type: ignore[arg-type]
            await completed(a, "d", "task-d")
            claim = await a.claim("new", create=REQUEST)
            assert claim.status == "created" and claim.job is not None
            assert claim.job.owner == a.id
            assert (await b.claim("new")).status == "foreign"
            await a.set_meta("base_url", "http://x")
            assert await b.get_meta("base_url") == "http://x"
            found = await a.load("d")
            assert found is not None and found.state is StoreState.COMPLETED
            assert (await b.claim("d")).status == "final"
    finally:
        await client.aclose()


async def test_downloaded_files_change_the_job_as_redis_has_it(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    async with store(redis_server.url) as a, store(redis_server.url) as b:
        await completed(a, "f", "task-f")
        await a.record_files("f", [tmp_path / "f.mp4"])  # a finished job: no longer a's own
        found = await b.load("f")
        assert found is not None and found.files == (str(tmp_path / "f.mp4"),)
        assert (found.state, found.task_id, found.credits) == (StoreState.COMPLETED, "task-f", 40)
        assert (await b.claim("f", reopen=True)).status == "reopened"  # downloaded again
        await b.record_files("f", [tmp_path / "g.mp4"])
        await a.record_files("f", [tmp_path / "stale.mp4"])  # b's now: a's write is refused
        found = await a.load("f")
        assert found is not None and found.files == (str(tmp_path / "g.mp4"),)


async def test_a_stopped_owners_jobs_are_adopted_once_and_its_late_writes_refused(
    redis_server: RedisServer,
) -> None:
    import redis.asyncio as aioredis

    raw = aioredis.Redis.from_url(redis_server.url)
    async with store(redis_server.url) as b, store(redis_server.url) as c:
        a = store(redis_server.url)
        await a.__aenter__()
        await a.register("job-2", REQUEST)
        await a.record_intent("job-2", REQUEST, 1)
        await a.record_submitted("job-2", "task-2")
        await a.register("job-3", REQUEST)
        await a.aclose()  # gives its lease up: the others may adopt at once
        await wait_until(b.may_adopt)
        claim = await b.claim("job-2")
        assert claim.status == "adopted"
        assert claim.job is not None and claim.job.record is not None
        assert claim.job.record.task_id == "task-2"  # polled by its new owner, not resent
        assert (await c.claim("job-2")).status == "foreign"  # one owner at a time
        await wait_until(c.may_adopt)
        orphans = await c.adopt_orphans()
        assert [job.key for job in orphans] == ["job-3"]
        assert await b.adopt_orphans() == []
        # The old owner, were it only stalled, may no longer write the job.
        ghost = RedisJobStore(raw, api_key=TOKEN, lease=0.6)
        ghost.id = a.id
        await ghost.__aenter__()
        with pytest.raises(JobTakenOver):  # not fatal: the scheduler drops the job, goes on
            await ghost.record_intent("job-2", REQUEST, 2)
        assert ghost.statistics().refused_writes == 1
        await ghost.aclose()
    await raw.aclose()


async def test_the_credit_budget_is_one_for_every_process(redis_server: RedisServer) -> None:
    async with (
        store(redis_server.url, max_credits=80) as a,
        store(redis_server.url, max_credits=80) as b,
    ):
        for key in ("x", "y", "z"):
            await a.register(key, REQUEST)
        await a.record_intent("x", REQUEST, 1)
        await a.record_intent("x", REQUEST, 1)  # the same POST retried: reserved once
        for key in ("p", "q"):
            await b.register(key, REQUEST)
        await b.record_intent("p", REQUEST, 1)
        assert await committed_credits(redis_server.url) == 80
        with pytest.raises(BudgetExceededError):
            await a.record_intent("y", REQUEST, 1)
        # A POST refused outright costs nothing: its credits come back.
        await b.record_finished(result("p", ok=False, task_id=None, credits=0))
        assert await committed_credits(redis_server.url) == 40
        await a.record_intent("y", REQUEST, 1)
        with pytest.raises(BudgetExceededError):
            await b.record_intent("q", REQUEST, 1)


async def test_writes_made_while_redis_is_down_are_written_back(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "grok_imagine_async.redis")
    async with store(redis_server.url) as a:
        await a.register("job-4", REQUEST)
        await a.record_intent("job-4", REQUEST, 1)
        redis_server.kill()
        await a.record_submitted("job-4", "task-4")  # goes on from memory
        await a.register("job-5", REQUEST)
        assert not a.available and a.statistics().pending_writes == 2
        record = await a.load("job-4")
        assert record is not None and record.task_id == "task-4"
        redis_server.start()  # empty: it lost everything
        await wait_until(lambda: a.available and a.statistics().pending_writes == 0)
        async with store(redis_server.url) as b:
            job = await b.peek("job-4")
            assert job is not None and job.record is not None
            assert job.record.task_id == "task-4" and job.owner == a.id
            assert await b.peek("job-5") is not None
    assert "unreachable" in caplog.text and TOKEN not in caplog.text


async def test_a_store_that_cannot_be_reached_fails_at_once(redis_server: RedisServer) -> None:
    url = redis_server.url
    redis_server.kill()
    with pytest.raises(JournalError, match="cannot reach"):
        async with store(url):
            pass


async def test_nothing_in_redis_names_the_token(redis_server: RedisServer) -> None:
    import redis.asyncio as aioredis

    limiter = RedisRateLimiter(redis_server.url, limit=RateLimit(50, 1.0), api_key=TOKEN)
    async with limiter, store(redis_server.url, max_credits=400, limiter=limiter) as a:
        await a.register("job-6", REQUEST)
        await a.record_intent("job-6", REQUEST, 1)
        await a.record_submitted("job-6", "task-6")
        await limiter.acquire()  # the limiter's keys are named like the store's
        assert TOKEN not in repr(a)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        names = [name async for name in raw.scan_iter()]
        assert any(b":ratelimit:" in name for name in names)
        assert any(b":jobs:" in name for name in names)
        dump = []
        for name in names:
            kind = (await raw.type(name)).decode()
            if kind == "hash":
                dump.append(repr(await raw.hgetall(name)))
            elif kind == "set":
                dump.append(repr(await raw.smembers(name)))
            elif kind == "string":
                dump.append(repr(await raw.get(name)))
        text = repr(names) + "".join(dump)
        assert TOKEN not in text and "SECRET" not in text
        assert hashlib.sha256(TOKEN.encode()).hexdigest()[:16] not in text  # a keyed hash
    finally:
        await raw.aclose()


async def test_while_redis_is_down_a_process_spends_only_what_it_set_aside(
    redis_server: RedisServer,
) -> None:
    # Leases long enough that a heartbeat delayed on a loaded machine does not expire a's
    # and hand its reserve to b (this test is about the reserve, not about takeover).
    async with store(redis_server.url, max_credits=400, lease=5.0) as a:
        # a set aside 4 POSTs (160) when it started: b, alone on the rest, can spend 240.
        async with store(redis_server.url, max_credits=400, lease=5.0) as b:
            for n in range(6):
                await b.register(f"b{n}", REQUEST)
                await b.record_intent(f"b{n}", REQUEST, 1)
            await b.register("b6", REQUEST)
            with pytest.raises(BudgetExceededError):
                await b.record_intent("b6", REQUEST, 1)
        await redis_command(redis_server.url, "CONFIG", "SET", "maxmemory", "1")  # a: down
        for n in range(4):
            await a.register(f"a{n}", REQUEST)
            await a.record_intent(f"a{n}", REQUEST, 1)  # from its reserve
        assert not a.available
        await a.register("a4", REQUEST)
        with pytest.raises(BudgetExceededError):
            await a.record_intent("a4", REQUEST, 1)
        await redis_command(redis_server.url, "CONFIG", "SET", "maxmemory", "0")
        await wait_until(lambda: a.available and a.statistics().pending_writes == 0)
        # Written back, its reserve settled: never past the budget, not a credit lost.
        with anyio.fail_after(10):
            while await committed_credits(redis_server.url) != 400:  # noqa: ASYNC110 - its heartbeat settles
                await anyio.sleep(0.01)


async def test_a_reserve_is_given_back_when_its_process_stops(redis_server: RedisServer) -> None:
    async def counted() -> int:  # reserves included
        [name] = await redis_command(redis_server.url, "KEYS", "*:credits")  # type: ignore[misc]
        return int(await redis_command(redis_server.url, "GET", name))  # type: ignore[call-overload]

    async with store(redis_server.url, max_credits=400) as a:
        assert (
            await counted() == 160 and await committed_credits(redis_server.url) == 0
        )  # set aside
        await a.register("j", REQUEST)
        await a.record_intent("j", REQUEST, 1)
        async with store(redis_server.url, max_credits=400):
            assert await counted() == 200 + 80  # its share of the 200 left
        assert await counted() == 200
    assert await counted() == 40


async def test_after_redis_lost_its_data_no_finished_job_passes_for_new(
    redis_server: RedisServer,
) -> None:
    async with store(redis_server.url) as a, store(redis_server.url) as b:
        await completed(a, "done", "task-d")
        redis_server.kill()
        redis_server.start()  # empty: "done" would look new, and be paid again
        try:  # refused, or found once a has written it back: never taken as new
            first = (await b.claim("done", create=REQUEST)).status
        except JournalError as exc:
            first = str(exc)
        assert first == "final" or "lost its data" in first
        with anyio.fail_after(10):
            while await b.peek("done") is None:  # noqa: ASYNC110 - a writes it back
                await anyio.sleep(0.01)
        claim = await b.claim("done", create=REQUEST)
        assert claim.status == "final"
        assert claim.job is not None and claim.job.record is not None
        assert claim.job.record.task_id == "task-d"


async def redis_command(url: str, *args: object) -> object:
    import redis.asyncio as aioredis

    raw = aioredis.Redis.from_url(url)
    try:
        return await raw.execute_command(*args)
    finally:
        await raw.aclose()


async def test_redis_out_of_memory_is_an_outage_its_writes_wait_in_memory(
    redis_server: RedisServer,
) -> None:
    async with store(redis_server.url) as a:
        await a.register("m", REQUEST)
        await redis_command(redis_server.url, "CONFIG", "SET", "maxmemory", "1")
        await a.record_intent("m", REQUEST, 1)  # OOM: kept in memory, not raised
        await a.record_submitted("m", "task-m")
        assert not a.available and a.statistics().pending_writes == 1
        await redis_command(redis_server.url, "CONFIG", "SET", "maxmemory", "0")
        await wait_until(lambda: a.available and a.statistics().pending_writes == 0)
        async with store(redis_server.url) as b:
            found = await b.peek("m")
            assert found is not None and found.record is not None
            assert found.record.task_id == "task-m"


def test_write_refusals_are_outages_or_configuration_errors() -> None:
    from redis import exceptions as redis_errors

    from grok_imagine_async.redis._script import outage_like

    assert outage_like(redis_errors.ResponseError("MISCONF Redis is configured to save RDB"))
    assert outage_like(redis_errors.OutOfMemoryError("command not allowed"))
    assert outage_like(redis_errors.ConnectionError("refused"))
    assert not outage_like(redis_errors.NoPermissionError("this user has no permissions"))
    assert not outage_like(
        redis_errors.AuthenticationError("invalid password")
    )  # a ConnectionError
    assert not outage_like(redis_errors.ResponseError("WRONGTYPE"))


async def test_a_permission_refused_is_a_clean_journal_error(redis_server: RedisServer) -> None:
    async with store(redis_server.url) as a:
        await a.register("n", REQUEST)
        await redis_command(redis_server.url, "ACL", "SETUSER", "default", "resetkeys")
        try:
            with pytest.raises(JournalError, match="refused"):
                await a.record_intent("n", REQUEST, 1)
            with pytest.raises(JournalError, match="refused"):
                await a.claim("other", create=REQUEST)
        finally:
            await redis_command(redis_server.url, "ACL", "SETUSER", "default", "~*")


async def test_a_wrong_password_fails_the_start_naming_the_url_not_the_password(
    redis_server: RedisServer,
) -> None:
    await redis_command(redis_server.url, "CONFIG", "SET", "requirepass", "right-one")
    wrong = redis_server.url.replace("redis://", "redis://:wrong-pass-value@")
    with pytest.raises(JournalError) as caught:
        async with store(wrong):
            pass
    message = str(caught.value)
    assert "refused" in message and "cannot reach" not in message
    assert f"127.0.0.1:{redis_server.port}" in message
    assert "wrong-pass-value" not in message


async def test_a_burst_waits_for_a_connection_and_is_never_an_outage(
    redis_server: RedisServer,
) -> None:
    from grok_imagine_async.redis._script import POOL_SIZE

    async with store(redis_server.url) as a:
        async with anyio.create_task_group() as tg:
            for n in range(POOL_SIZE * 4):
                tg.start_soon(a.peek, f"burst-{n}")
        assert a.available and a.statistics().outages == 0


def start_and_kill_a_store(url: str) -> None:
    """A process that opened a store with a budget (so set aside a reserve), SIGKILLed."""
    import os
    import signal
    import subprocess
    import sys

    script = (
        "import anyio\n"
        "from grok_imagine_async.redis import RedisJobStore\n"
        "async def main():\n"
        f"    async with RedisJobStore({url!r}, api_key={TOKEN!r}, lease=0.6, max_credits=400):\n"
        "        print('ready', flush=True)\n"
        "        await anyio.sleep(60)\n"
        "anyio.run(main)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert killed.stdout is not None and killed.stdout.readline() == "ready\n"
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.communicate(timeout=10)


async def test_a_killed_process_reserve_goes_back_once_its_lease_lapsed(
    redis_server: RedisServer,
) -> None:
    await anyio.to_thread.run_sync(start_and_kill_a_store, redis_server.url)
    async with store(redis_server.url, max_credits=400):
        [name] = await redis_command(redis_server.url, "KEYS", "*:credits")  # type: ignore[misc]
        # Its 160 went back to the budget: the survivor holds its own share, nothing else.
        with anyio.fail_after(10):
            while int(await redis_command(redis_server.url, "GET", name)) != 160:  # type: ignore[call-overload]  # noqa: ASYNC110 - Redis raises no local event
                await anyio.sleep(0.05)
        assert await committed_credits(redis_server.url) == 0


async def test_a_scheduler_takes_the_course_another_process_shared_through_redis(
    redis_server: RedisServer,
) -> None:
    """Issue 24: one decision for a batch shared through Redis. Another process (store ``a``)
    stopped on refusals; the scheduler on store ``b`` stops too, well before its own jobs
    could have told it anything."""
    import time

    from grok_imagine_async import SchedulerClosedError
    from grok_imagine_async._scheduling.breaker import COURSE_META, Course
    from grok_imagine_async.batch import BreakerEvent, BreakerPolicy, BreakerState

    emulator = Emulator(EmulatorConfig(tokens={TOKEN: "pro"}))
    client = AsyncGrokImagine(api_key=TOKEN, http_client=emulator.client(token=None), plan="pro")
    policy = BreakerPolicy(warmup=None, probe_wait_initial=0.2, probe_wait_max=1.0)
    stops: list[BreakerEvent] = []

    def hook(event: object) -> None:
        if isinstance(event, BreakerEvent) and event.transition == "stopped":
            stops.append(event)

    async with (
        client,
        store(redis_server.url) as a,
        store(redis_server.url) as b,
        JobScheduler(
            client, SchedulerConfig(breaker=policy), journal=b, on_event=hook
        ) as scheduler,
    ):
        job = await scheduler.submit("a long one [duration:600]")
        course = Course(
            BreakerState.STOPPED, "refused", FailureClass.CONTENT_POLICY, 10, time.time(), a.id
        )
        await a.set_meta(COURSE_META, course.to_text())
        await wait_until(lambda: bool(stops))
        assert stops[0].key == ""
        assert stops[0].breaker.failure_class is FailureClass.CONTENT_POLICY
        late = await scheduler.submit("sent after the stop")
        with pytest.raises(SchedulerClosedError, match="the batch stopped"):
            await late.wait()
        assert job.task_id is not None  # what was paid for goes on being polled
        scheduler.cancel()


class AnswerLost:
    """A Redis client that, once ``armed``, loses the answer of the first script it runs: the
    script ran on the server, and redis-py resends it (as after its socket timeout)."""

    def __init__(self, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.client = Redis.from_url(url, retry=Retry(NoBackoff(), 1))
        self.armed, self.lost = False, 0
        self.only: str | None = None  # the script (its text) whose answer is lost; None: any
        send = self.client._send_command_parse_response

        async def lose_once(conn: object, name: str, *args: object, **options: object) -> object:
            from redis.exceptions import TimeoutError as RedisTimeoutError

            answer = await send(conn, name, *args, **options)
            digest = self.only and hashlib.sha1(self.only.encode()).hexdigest()
            if digest and digest not in args[:2]:  # ("EVALSHA", digest, ...)
                return answer
            if self.armed and name == "EVALSHA" and not self.lost:
                self.lost += 1
                raise RedisTimeoutError("Timeout reading from socket")
            return answer

        monkeypatch.setattr(self.client, "_send_command_parse_response", lose_once)


async def test_a_registration_resent_after_its_answer_was_lost_is_not_a_duplicate(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    lossy = AnswerLost(redis_server.url, monkeypatch)
    try:
        async with RedisJobStore(lossy.client, api_key=TOKEN) as a, store(redis_server.url) as b:
            lossy.armed = True
            await a.register("job-resent", REQUEST, reserve=True)  # the script ran twice
            assert lossy.lost == 1
            found = await b.peek("job-resent")
            assert found is not None and found.owner == a.id
            with pytest.raises(ConfigurationError, match="exists already"):
                await a.register("job-resent", GenerationRequest(prompt="another job"))
            with pytest.raises(ConfigurationError, match="exists already"):
                await b.register("job-resent", REQUEST)
    finally:
        await lossy.client.aclose()


async def test_orphans_adopted_by_a_script_resent_after_its_answer_was_lost_are_known(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    lossy = AnswerLost(redis_server.url, monkeypatch)
    try:
        async with RedisJobStore(lossy.client, api_key=TOKEN, lease=0.6) as c:
            async with store(redis_server.url) as a:
                await a.register("job-4", REQUEST)
                await a.record_intent("job-4", REQUEST, 1)
                await a.record_submitted("job-4", "task-4")
            await wait_until(c.may_adopt)  # a gave its lease up
            lossy.armed = True
            orphans = await c.adopt_orphans()  # the second run finds none left: it must tell
            assert lossy.lost == 1
            assert [job.key for job in orphans] == ["job-4"]  # the first run's, not lost
            assert orphans[0].record is not None and orphans[0].record.task_id == "task-4"
            assert await c.adopt_orphans() == []
    finally:
        await lossy.client.aclose()


def failed_task(key: str, consumed: int | None) -> JobResult:
    """``key`` ended by its task's failure, whose status answer reports ``consumed`` credits."""
    from grok_imagine_async import TaskFailedError

    task = Task(
        task_id=f"task-{key}",
        status=TaskStatus.FAILED,
        raw_status="failed",
        error_message="upstream network error",
        consumed_credits=consumed,
    )
    return JobResult(
        key=key,
        request=REQUEST,
        task=task,
        error=TaskFailedError(task),
        failure_class=task.failure_class,
        attempts=1,
        credits=40 if consumed is None else min(max(consumed, 0), 40),
        polls=1,
        submitted_at=None,
        finished_at=0.0,
    )


@pytest.mark.parametrize("redis_away", [False, True], ids=["written", "written back"])
@pytest.mark.parametrize(
    ("consumed", "kept"), [(0, 0), (25, 25), (40, 40), (None, 40), (-5, 0), (90, 40)]
)
async def test_a_task_the_provider_did_not_charge_gives_its_credits_back_in_the_shared_budget(
    redis_server: RedisServer, consumed: int | None, kept: int, redis_away: bool
) -> None:
    # What the scheduler refunds its own budget (40 less the task's consumed_credits, within
    # 0..40) goes back to the shared one in the write recording the end; as the job is written
    # back if Redis was away then.
    async with store(redis_server.url, max_credits=400, lease=5.0) as a:
        await a.register("free", REQUEST)
        await a.record_intent("free", REQUEST, 1)
        await a.record_submitted("free", "task-free")
        assert await committed_credits(redis_server.url) == 40
        if redis_away:
            await redis_command(redis_server.url, "CONFIG", "SET", "maxmemory", "1")
        await a.record_finished(failed_task("free", consumed))
        if redis_away:
            assert not a.available
            await redis_command(redis_server.url, "CONFIG", "SET", "maxmemory", "0")
            await wait_until(lambda: a.available and a.statistics().pending_writes == 0)
        found = await a.peek("free")
        assert found is not None and found.record is not None and found.final
        assert found.record.credits == kept  # what a later run counts as spent
        assert await committed_credits(redis_server.url) == kept
        # Written again (the same job ended twice, a write-back run again): given back once.
        await a.record_finished(failed_task("free", consumed))
        assert await committed_credits(redis_server.url) == kept


async def test_a_refund_whose_script_is_resent_after_its_answer_was_lost_is_given_once(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    lossy = AnswerLost(redis_server.url, monkeypatch)
    try:
        async with RedisJobStore(lossy.client, api_key=TOKEN, max_credits=400) as a:
            for key in ("free", "paid"):
                await a.register(key, REQUEST)
                await a.record_intent(key, REQUEST, 1)
                await a.record_submitted(key, f"task-{key}")
            assert await committed_credits(redis_server.url) == 80
            lossy.armed = True
            await a.record_finished(failed_task("free", 0))  # the script ran twice
            assert lossy.lost == 1
            assert await committed_credits(redis_server.url) == 40  # not 0: "paid" keeps its 40
    finally:
        await lossy.client.aclose()


async def test_a_batch_sharing_a_budget_does_not_count_the_tasks_it_was_not_charged_for(
    redis_server: RedisServer,
) -> None:
    """A provider's outage fails every task, free: a batch of 4 jobs on a shared budget of 80
    credits ran all 4 (each failure is a result), spending nothing. Before, the shared budget
    counted each free task as 40 credits spent: the third job was refused (budget exceeded)."""
    import random

    emulator = outage_emulator()
    client = AsyncGrokImagine(api_key=TOKEN, http_client=emulator.client(token=None), plan="pro")
    config = SchedulerConfig(
        max_in_flight=1,  # one job after the other: each refund is in before the next intent
        resubmit_on=(),  # each free failure ends its job
        breaker=None,
        poll=QUICK_POLL,
        rng=random.Random(1),
    )
    async with client, store(redis_server.url, max_credits=80, lease=5.0) as shared:
        async with JobScheduler(client, config, journal=shared) as scheduler:
            scheduler.feed([f"free {n}" for n in range(4)])
            results = [r async for r in scheduler.results()]
        stats = scheduler.statistics()
        assert [r.failure_class for r in results] == [FailureClass.TRANSIENT] * 4
        assert emulator.statistics().credits_consumed == stats.credits_consumed == 0
        assert await committed_credits(redis_server.url) == 0


# A whole scheduler on a real Redis for seconds of real time: on the full Python only (nox).
@pytest.mark.integration
async def test_a_resubmitted_job_gives_back_what_its_failed_task_was_not_charged(
    redis_server: RedisServer,
) -> None:
    """A free outage fails every task; each job is resubmitted once (the default for a
    transient failure), fails free again and ends: nothing was paid, so nothing stays counted.
    Before, the resubmission's intent reserved 40 more and the first task's 40 stayed: the
    second job was refused (budget exceeded), and without a budget 160 stayed counted."""
    import random

    emulator = outage_emulator()
    client = AsyncGrokImagine(api_key=TOKEN, http_client=emulator.client(token=None), plan="pro")
    config = SchedulerConfig(
        max_in_flight=1,  # one job after the other: each refund is in before the next intent
        breaker=None,
        poll=QUICK_POLL,
        rng=random.Random(1),
    )
    keys = [f"free {n}" for n in range(4)]
    async with client, store(redis_server.url, max_credits=80, lease=5.0) as shared:
        async with JobScheduler(client, config, journal=shared) as scheduler:
            scheduler.feed(keys)
            results = [r async for r in scheduler.results()]
        assert [(r.failure_class, r.attempts) for r in results] == [(FailureClass.TRANSIENT, 2)] * 4
        assert emulator.statistics().credits_consumed == 0
        assert await committed_credits(redis_server.url) == 0
        for result in results:  # what a later run counts as spent
            found = await shared.peek(result.key)
            assert found is not None and found.record is not None
            assert (found.record.attempts, found.record.credits) == (2, 0)


async def test_a_resubmission_whose_script_is_resent_after_its_answer_was_lost_gives_back_once(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    lossy = AnswerLost(redis_server.url, monkeypatch)
    try:
        async with RedisJobStore(lossy.client, api_key=TOKEN, max_credits=400) as a:
            for key in ("cheap", "paid"):
                await a.register(key, REQUEST)
                await a.record_intent(key, REQUEST, 1)
                await a.record_submitted(key, f"task-{key}")
            assert await committed_credits(redis_server.url) == 80
            lossy.armed = True
            # The task of "cheap" cost 15 of its 40: 25 go back as attempt 2 reserves 40.
            await a.record_intent("cheap", REQUEST, 2, unbilled=25)  # the script ran twice
            assert lossy.lost == 1
            assert await committed_credits(redis_server.url) == 40 + 15 + 40
            # The same intent written again (a POST held back by the breaker, then sent).
            await a.record_intent("cheap", REQUEST, 2, unbilled=25)
            assert await committed_credits(redis_server.url) == 40 + 15 + 40
            await a.record_submitted("cheap", "task-cheap-2")
            found = await a.peek("cheap")
            assert found is not None and found.record is not None
            assert (found.record.attempts, found.record.credits) == (2, 15 + 40)
    finally:
        await lossy.client.aclose()


@pytest.mark.parametrize("first_unbilled", [40, 0], ids=["first free", "first paid"])
@pytest.mark.parametrize("away_from", ["resubmission", "start"])
async def test_a_resubmission_while_redis_is_away_is_written_back_with_what_it_gave_back(
    redis_server: RedisServer, away_from: str, first_unbilled: int
) -> None:
    # Attempt 1's credits are reserved in Redis ("resubmission": Redis goes away after it) or
    # paid from this process's outage allowance ("start"); attempt 2, paid from the allowance,
    # replaces it and fails free. Written back, the shared budget counts what the provider
    # charged: attempt 1's part, nothing of attempt 2. Before, attempt 1 counted 40 when
    # reserved in Redis, and nothing (even if paid) when paid from the allowance too.
    charged = 40 - first_unbilled
    async with store(redis_server.url, max_credits=400, lease=5.0) as a:
        await a.register("job", REQUEST)
        if away_from == "start":
            await redis_command(redis_server.url, "CONFIG", "SET", "maxmemory", "1")
        await a.record_intent("job", REQUEST, 1)
        await a.record_submitted("job", "task-job-1")
        if away_from == "resubmission":
            assert await committed_credits(redis_server.url) == 40
            await redis_command(redis_server.url, "CONFIG", "SET", "maxmemory", "1")
        await a.record_intent("job", REQUEST, 2, unbilled=first_unbilled)
        await a.record_submitted("job", "task-job")
        await a.record_finished(failed_task("job", 0))
        assert not a.available
        await redis_command(redis_server.url, "CONFIG", "SET", "maxmemory", "0")
        await wait_until(lambda: a.available and a.statistics().pending_writes == 0)
        assert await committed_credits(redis_server.url) == charged
        found = await a.peek("job")
        assert found is not None and found.record is not None and found.final
        assert (found.record.attempts, found.record.credits) == (2, charged)


async def test_after_redis_lost_its_data_the_jobs_written_back_hold_their_credits_again(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "grok_imagine_async.redis")
    async with store(redis_server.url, max_credits=400) as a:
        await completed(a, "done", "task-d")  # 40 spent
        await a.register("refused", REQUEST, reserve=True)
        await a.record_intent("refused", REQUEST, 1)
        await a.record_finished(result("refused", ok=False, task_id=None, credits=0))  # 0
        await a.register("queued", REQUEST, reserve=True)  # 40 reserved
        await a.register("unreserved", REQUEST)  # nothing yet
        await a.register("sending", REQUEST)
        await a.record_intent("sending", REQUEST, 1)  # 40 reserved, the answer not in yet
        await a.register("running", REQUEST)
        await a.record_intent("running", REQUEST, 1)
        await a.record_submitted("running", "task-r")  # 40 spent
        before = await committed_credits(redis_server.url)
        assert before == 160
        redis_server.kill()
        redis_server.start()  # empty
        await wait_until(lambda: "Redis lost its data" in caplog.text)
        await wait_until(lambda: a.available and a.statistics().pending_writes == 0)
        assert await committed_credits(redis_server.url) == before
        # Their next writes count nothing twice, and what goes back still goes back.
        await a.record_intent("queued", REQUEST, 1)
        await a.record_finished(result("sending", ok=False, task_id=None, credits=0))  # refused
        assert await committed_credits(redis_server.url) == before - 40


async def test_a_job_resubmitted_after_a_task_it_was_not_charged_for_counts_nothing_for_it(
    redis_server: RedisServer,
) -> None:
    """The default policy resubmits a TRANSIENT failure once: during a free outage each job
    makes two tasks, both free. The scheduler refunds both; the shared budget and the records
    must count nothing either: the resubmission's intent gives the first task's 40 back (found
    in review, fixed by the resubmission's give-back)."""
    import random

    emulator = outage_emulator()
    client = AsyncGrokImagine(api_key=TOKEN, http_client=emulator.client(token=None), plan="pro")
    config = SchedulerConfig(
        max_in_flight=1,
        breaker=None,
        poll=QUICK_POLL,
        rng=random.Random(1),
    )  # resubmit=1 on TRANSIENT: the defaults
    async with client, store(redis_server.url, max_credits=400, lease=5.0) as shared:
        async with JobScheduler(client, config, journal=shared) as scheduler:
            scheduler.feed([f"free {n}" for n in range(2)])
            results = [r async for r in scheduler.results()]
        assert [(r.failure_class, r.attempts) for r in results] == [(FailureClass.TRANSIENT, 2)] * 2
        assert emulator.statistics().credits_consumed == 0
        assert scheduler.statistics().credits_consumed == 0
        records = [await shared.load(r.key) for r in results]
        assert [r.credits for r in records if r is not None] == [0, 0]
        assert await committed_credits(redis_server.url) == 0


# A whole scheduler on a real Redis for seconds of real time: on the full Python only (nox).
@pytest.mark.integration
async def test_a_resumed_job_whose_task_was_not_charged_counts_nothing_for_it(
    redis_server: RedisServer,
) -> None:
    """A job whose task an earlier run created (then stopped) is resumed: its task fails, free.
    Found in review: the shared budget gave its 40 back, but the record kept them and the
    scheduler's own count too (only a task sent by this run was refunded), so a later run
    counted 40 credits the provider never charged."""
    import random

    emulator = outage_emulator(fails_after=5.0)
    client = AsyncGrokImagine(api_key=TOKEN, http_client=emulator.client(token=None), plan="pro")
    config = SchedulerConfig(
        resubmit_on=(),  # its failure ends it
        breaker=None,
        poll=QUICK_POLL,
        rng=random.Random(1),
    )
    async with client, store(redis_server.url, max_credits=400, lease=5.0) as shared:
        task_id = await client.submit(REQUEST)  # the earlier run's POST, then it stopped
        await shared.register("k", REQUEST)
        await shared.record_intent("k", REQUEST, 1)
        await shared.record_submitted("k", task_id)
        assert await committed_credits(redis_server.url) == 40
        async with JobScheduler(client, config, journal=shared) as scheduler:
            scheduler.feed([JobSpec(REQUEST, "k")])
            [result] = [r async for r in scheduler.results()]
        assert result.failure_class is FailureClass.TRANSIENT and result.task_id == task_id
        assert emulator.statistics().credits_consumed == 0
        assert await committed_credits(redis_server.url) == 0  # the shared budget gave it back
        record = await shared.load("k")
        assert record is not None and record.credits == 0  # what a later run counts
        assert (result.credits, scheduler.statistics().credits_consumed) == (0, 0)


async def test_a_paid_job_whose_task_cannot_be_found_keeps_its_credits_in_the_shared_budget(
    redis_server: RedisServer,
) -> None:
    """A job's task is created (paid), then the status endpoint answers 404 three times in a
    row: the job ends REQUEST_ERROR with no task. Found in review: the store took that for a
    POST refused outright and gave the 40 credits back to the shared budget (the record and
    the scheduler's count kept them), so other processes could overspend it."""
    import random

    from grok_imagine_async import _http

    emulator = Emulator(EmulatorConfig(tokens={TOKEN: "pro"}, seed=2))
    upstream = emulator.transport()

    class TaskLost(_http.lib.AsyncBaseTransport):  # type: ignore[misc,name-defined]
        async def handle_async_request(self, request: Any) -> Any:
            if request.method == "GET":  # the provider lost the task it charged for
                return _http.lib.Response(404, json={"error": {"message": "task not found"}})
            return await upstream.handle_async_request(request)

    http = _http.lib.AsyncClient(transport=TaskLost(), base_url="http://emulator")
    client = AsyncGrokImagine(api_key=TOKEN, http_client=http, plan="pro")
    config = SchedulerConfig(
        breaker=None,
        poll=QUICK_POLL,
        rng=random.Random(1),
    )
    async with client, store(redis_server.url, max_credits=400, lease=5.0) as shared:
        async with JobScheduler(client, config, journal=shared) as scheduler:
            scheduler.feed(["charged, then lost"])
            [result] = [r async for r in scheduler.results()]
        assert result.failure_class is FailureClass.REQUEST_ERROR and result.task is None
        assert emulator.statistics().credits_consumed == 40
        assert scheduler.statistics().credits_consumed == 40
        record = await shared.load(result.key)
        assert record is not None and record.credits == 40
        assert await committed_credits(redis_server.url) == 40  # as spent as it was


async def test_a_resubmission_refused_at_connect_then_left_counts_the_first_task_alone(
    redis_server: RedisServer,
) -> None:
    """The first task fails (charged), its resubmission's POST is refused at connect, and the
    batch is left while it waits to retry: the job ends unpaid for that POST (its reservation
    given back), its first task still counted by the record and the shared budget, and a rerun
    does not send it again (its one resubmission was spent on a POST that never left, but the
    job's record holds a paid, failed task: what a rerun replays)."""
    import random

    from grok_imagine_async import _http
    from grok_imagine_async._scheduling.resume import Reopening, reopening

    emulator = outage_emulator(free=False)  # failures charged
    upstream, posts, refused = emulator.transport(), [], anyio.Event()

    class SecondPostRefused(_http.lib.AsyncBaseTransport):  # type: ignore[misc,name-defined]
        async def handle_async_request(self, request: Any) -> Any:
            if request.method == "POST":
                posts.append(request)
                if len(posts) > 1:
                    refused.set()
                    raise _http.lib.ConnectError("Connection refused", request=request)
            return await upstream.handle_async_request(request)

    http = _http.lib.AsyncClient(transport=SecondPostRefused(), base_url="http://emulator")
    client = AsyncGrokImagine(api_key=TOKEN, http_client=http, plan="pro")
    config = SchedulerConfig(
        breaker=None,
        poll=QUICK_POLL,
        rng=random.Random(1),
    )
    async with client, store(redis_server.url, max_credits=400, lease=5.0) as shared:
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as left:

                async def leave_before_the_retry() -> None:
                    await refused.wait()
                    await anyio.sleep(0.1)  # the first retry waits ~0.5 s
                    left.cancel()

                tg.start_soon(leave_before_the_retry)
                async with JobScheduler(client, config, journal=shared) as scheduler:
                    scheduler.feed(["fails, then unreachable"])
                    async for _ in scheduler.results():
                        pass
        assert left.cancelled_caught and len(posts) == 2
        [record] = [r async for r in shared.records()]
        assert (record.state, record.failure_class) == (
            StoreState.FAILED,
            FailureClass.REQUEST_ERROR,
        )
        assert (record.attempts, record.credits) == (2, 40)
        assert record.task_id is not None  # the first task's: paid, failed
        assert reopening(record, resubmit_ambiguous=False) is Reopening.NONE
        assert emulator.statistics().credits_consumed == 40
        assert await committed_credits(redis_server.url) == 40  # the second POST's 40 given back


async def test_a_write_back_resent_after_its_answer_was_lost_counts_what_was_paid_once(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Paid from the outage allowance and refunded in part while Redis was away: the write-back
    # reserves the attempt and gives the refund back in one script. Before, the refund dropped
    # the reservation, so the resent script reserved the attempt again: 15 counted twice.
    from grok_imagine_async.redis._script import WRITE_SCRIPT

    lossy = AnswerLost(redis_server.url, monkeypatch)
    lossy.only = WRITE_SCRIPT
    try:
        async with RedisJobStore(lossy.client, api_key=TOKEN, max_credits=400, lease=5.0) as a:
            await a.register("job", REQUEST)
            await redis_command(redis_server.url, "CONFIG", "SET", "maxmemory", "1")
            await a.record_intent("job", REQUEST, 1)  # from the allowance
            await a.record_submitted("job", "task-job")
            await a.record_finished(failed_task("job", 15))  # 25 go back
            assert not a.available
            lossy.armed = True
            await redis_command(redis_server.url, "CONFIG", "SET", "maxmemory", "0")
            await wait_until(lambda: a.available and a.statistics().pending_writes == 0)
            assert lossy.lost == 1  # the write-back ran twice
            assert await committed_credits(redis_server.url) == 15
    finally:
        await lossy.client.aclose()


async def wiped(job_store: RedisJobStore, url: str) -> None:
    """Redis loses its data (no restart: no outage), and ``job_store`` learns of it through a
    claim (its next write-back waits for its heartbeat)."""
    await redis_command(url, "FLUSHALL")
    with pytest.raises(JournalError, match="lost its data"):
        await job_store.claim("unknown", create=REQUEST)


async def test_a_job_written_after_redis_lost_its_data_counts_what_it_held_before(
    redis_server: RedisServer,
) -> None:
    # Written (not written back) between learning that Redis lost its data and the write-back:
    # before, the write took the job off the jobs to write back, so what it held was never
    # counted again (the budget could be spent twice over).
    async with store(redis_server.url, max_credits=400, lease=5.0) as a:
        await completed(a, "done", "task-d")  # 40
        await a.register("sending", REQUEST)
        await a.record_intent("sending", REQUEST, 1)  # 40 reserved
        await a.register("failed", REQUEST)
        await a.record_intent("failed", REQUEST, 1)
        await a.record_submitted("failed", "task-failed")  # 40, of which 15 charged
        assert await committed_credits(redis_server.url) == 120
        await wiped(a, redis_server.url)
        await a.record_submitted("sending", "task-sending")  # 40 spent
        await a.record_intent("failed", REQUEST, 2, unbilled=25)  # 15, and 40 reserved
        await wait_until(lambda: a.statistics().pending_writes == 0)  # "done" written back
        assert await committed_credits(redis_server.url) == 40 + 40 + 15 + 40


async def test_a_job_that_ended_gives_back_nothing_more_once_written_back_after_a_data_loss(
    redis_server: RedisServer,
) -> None:
    # Its end gave back what its task was not charged; written back after Redis lost its data,
    # it counts what it cost. Before, that write-back reserved its attempt anew, so its end
    # written again gave the refund back a second time (below what was charged).
    async with store(redis_server.url, max_credits=400, lease=5.0) as a:
        await a.register("free", REQUEST)
        await a.record_intent("free", REQUEST, 1)
        await a.record_submitted("free", "task-free")
        await a.record_finished(failed_task("free", 15))
        assert await committed_credits(redis_server.url) == 15
        await wiped(a, redis_server.url)
        await wait_until(lambda: a.statistics().pending_writes == 0)
        assert await committed_credits(redis_server.url) == 15
        await a.record_finished(failed_task("free", 15))  # written again: given back once
        assert await committed_credits(redis_server.url) == 15


async def test_a_job_written_while_its_write_back_waits_counts_what_was_paid_meanwhile(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Attempt 2 paid from the allowance while Redis was away; attempt 3's intent is written as
    # Redis is back, before the write-back reaches the job. Before, attempt 3's reservation
    # made the write-back's reservation of attempt 2 look done: 40 paid, never counted.
    from redis.asyncio import Redis

    from grok_imagine_async.redis._script import WRITE_SCRIPT

    client = Redis.from_url(redis_server.url)
    send, digest = client._send_command_parse_response, hashlib.sha1(WRITE_SCRIPT.encode())
    armed: list[Callable[[], Awaitable[None]]] = []

    async def meanwhile(conn: object, name: str, *args: object, **options: object) -> object:
        if armed and name == "EVALSHA" and digest.hexdigest() in args[:2]:
            await armed.pop()()  # on the first write-back's turn
        return await send(conn, name, *args, **options)

    monkeypatch.setattr(client, "_send_command_parse_response", meanwhile)
    try:
        async with RedisJobStore(client, api_key=TOKEN, max_credits=400, lease=5.0) as a:
            await a.register("z", REQUEST)
            await a.record_intent("z", REQUEST, 1)
            await a.record_submitted("z", "task-z-1")  # 40, in Redis
            await redis_command(redis_server.url, "CONFIG", "SET", "maxmemory", "1")
            await a.register("a", REQUEST)  # written back first
            await a.record_intent("z", REQUEST, 2)  # from the allowance
            await a.record_submitted("z", "task-z-2")  # 40
            assert not a.available
            armed.append(lambda: a.record_intent("z", REQUEST, 3))  # 40 reserved
            await redis_command(redis_server.url, "CONFIG", "SET", "maxmemory", "0")
            await wait_until(lambda: a.available and a.statistics().pending_writes == 0)
            assert not armed
            assert await committed_credits(redis_server.url) == 120
    finally:
        await client.aclose()


async def test_a_write_that_first_finds_redis_lost_its_data_counts_what_the_job_held(
    redis_server: RedisServer,
) -> None:
    # The first to find Redis empty is a write, before a heartbeat or a claim: before, it
    # reserved its attempt in the empty count, which made the job's write-back look done (the
    # earlier attempt's credits never counted again), and a new job reserved its credits at
    # once, as if no other process had jobs to write back.
    async with store(redis_server.url, max_credits=400, lease=5.0) as a:
        await a.register("failed", REQUEST)
        await a.record_intent("failed", REQUEST, 1)
        await a.record_submitted("failed", "task-failed")  # 40, of which 15 charged
        await redis_command(redis_server.url, "FLUSHALL")
        await a.record_intent("failed", REQUEST, 2, unbilled=25)  # 15, and 40 reserved
        with pytest.raises(JournalError, match="lost its data"):
            await a.register("new", REQUEST, reserve=True)
        await wait_until(lambda: a.statistics().pending_writes == 0)
        assert await committed_credits(redis_server.url) == 15 + 40
        found = await a.peek("failed")
        assert found is not None and found.record is not None
        assert (found.record.attempts, found.record.credits) == (2, 15)
