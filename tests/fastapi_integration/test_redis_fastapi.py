"""Two workers of the example app in one process, sharing a real redis-server.

Each "worker" is the example app with its own lifespan (client, limiter, scheduler, store),
driven through ``httpx.ASGITransport``; both send to one in-process emulator. The real
``uvicorn --workers 2`` runs are in ``test_redis_workers.py``; these check the same behaviour
faster and name the worker that answers.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from _redis_worker import RedisServer, committed_credits
from fastapi import FastAPI
from test_fastapi import client_of, load_example

from grok_imagine_async import AsyncGrokImagine, JournalError, PollPolicy, RateLimit, Settings
from grok_imagine_async.batch import DurationModel, SchedulerConfig
from grok_imagine_async.testing import Emulator, EmulatorConfig

pytest.importorskip("redis.asyncio", reason='needs the "redis" extra')

TOKEN = "sk-test-SECRET-two-workers"
LIMIT = RateLimit(50, 1.0)

pytestmark = [
    pytest.mark.redis,
    pytest.mark.anyio,
    # The plugin's grok_emulator: quick jobs, unscaled (the workers are told no time scale).
    pytest.mark.grok_emulator(
        tokens={TOKEN: LIMIT}, duration_median=0.4, duration_sigma=0.1, seed=3, time_scale=1
    ),
]
FINAL = ("completed", "failed")
FAST_POLL = PollPolicy(wait_initial=0.1, wait_factor=1.5, wait_max=0.5, wait_jitter=0.1)


@asynccontextmanager
async def worker(emulator: Emulator, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with worker_app(emulator, **options) as (web, _):
        yield web


@asynccontextmanager
async def worker_app(
    emulator: Emulator, **options: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """A worker, and its app (whose ``state.grok_imagine`` holds its scheduler and jobs)."""
    async with emulator.client(token=None) as upstream:
        app = load_example().create_app(
            settings=Settings.from_env(api_key=TOKEN, base_url=str(upstream.base_url), plan=LIMIT),
            http_client=upstream,
            scheduler_config=SchedulerConfig(
                poll=FAST_POLL, duration_model=DurationModel(prior_median=0.4)
            ),
            **options,
        )
        async with client_of(app) as web, app.router.lifespan_context(app):
            yield web, app


async def events(web: httpx.AsyncClient, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every event of the job's stream, until its last."""
    seen: list[tuple[str, dict[str, Any]]] = []
    async with web.stream("GET", f"/videos/{job_id}/events") as stream:
        assert stream.status_code == 200
        name = ""
        async for line in stream.aiter_lines():
            if line.startswith("event:"):
                name = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                seen.append((name, json.loads(line.removeprefix("data:"))))
                if name in ("done", "error"):
                    return seen
    return seen


async def test_a_job_started_on_one_worker_is_found_and_streamed_from_the_other(
    grok_emulator: Emulator,
    redis_server: RedisServer,
) -> None:
    async with (
        worker(grok_emulator, redis_url=redis_server.url) as a,
        worker(grok_emulator, redis_url=redis_server.url) as b,
    ):
        started = await a.post("/videos", json={"prompt": "a heron at dusk"})
        assert started.status_code == 202
        job_id = started.json()["id"]
        found = await b.get(f"/videos/{job_id}")
        assert found.status_code == 200 and found.json()["id"] == job_id
        with anyio.fail_after(20):
            stream = await events(b, job_id)
        name, last = stream[-1]
        assert name == "done" and last["status"] == "completed" and last["videos"]
        again = await b.get(f"/videos/{job_id}")
        assert again.json()["videos"] == last["videos"]
        assert (await b.get("/videos/no-such-job")).status_code == 404
    assert grok_emulator.statistics().tasks_created == 1


async def test_the_credit_budget_is_one_for_every_worker(
    grok_emulator: Emulator, redis_server: RedisServer
) -> None:
    shared = {"redis_url": redis_server.url, "max_credits": 80}
    async with worker(grok_emulator, **shared) as a, worker(grok_emulator, **shared) as b:
        ids = []
        for web, prompt in ((a, "one"), (b, "two"), (a, "three")):
            started = await web.post("/videos", json={"prompt": prompt})
            if started.status_code == 202:  # refused at once if the others were counted
                ids.append(started.json()["id"])
        with anyio.fail_after(20):
            while True:
                jobs = [(await b.get(f"/videos/{job_id}")).json() for job_id in ids]
                if all(job["status"] in ("completed", "failed") for job in jobs):
                    break
                await anyio.sleep(0.05)
        done = sorted(job["status"] for job in jobs)
        assert done.count("completed") == 2
        assert all(job["error"]["code"] == "budget_exceeded" for job in jobs if job["error"])
        refused = await a.post("/videos", json={"prompt": "four"})
        assert refused.status_code == 402, refused.text
    assert grok_emulator.statistics().credits_consumed == 80


async def test_two_workers_given_one_sqlite_journal_fail_the_second_startup(
    grok_emulator: Emulator,
    tmp_path: Path,
) -> None:
    journal = tmp_path / "videos.db"
    async with worker(grok_emulator, journal=journal) as a:
        assert (await a.get("/healthz")).status_code == 200
        with pytest.raises(JournalError, match="in use"):
            async with worker(grok_emulator, journal=journal):
                pass


async def test_a_store_that_cannot_be_reached_fails_the_startup(
    grok_emulator: Emulator,
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    redis_server.kill()
    with pytest.raises(JournalError, match="cannot reach"):
        async with worker(grok_emulator, redis_url=url):
            pass


@pytest.mark.grok_emulator(EmulatorConfig(tokens={"another-token": LIMIT}))  # 401 for ours
async def test_a_worker_whose_scheduler_died_fails_its_health_check(
    grok_emulator: Emulator, redis_server: RedisServer
) -> None:
    async with worker(grok_emulator, redis_url=redis_server.url) as a:
        assert (await a.get("/healthz")).status_code == 200
        await a.post("/videos", json={"prompt": "never paid"})
        with anyio.fail_after(10):
            while (await a.get("/healthz")).status_code == 200:  # noqa: ASYNC110 - over HTTP
                await anyio.sleep(0.02)
        assert (await a.get("/healthz")).status_code == 503


async def test_a_dead_workers_jobs_are_polled_or_reported_ambiguous_never_resent(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator, redis_server: RedisServer
) -> None:
    from grok_imagine_async import GenerationRequest
    from grok_imagine_async.redis import RedisJobStore

    paid = await grok_client.submit(GenerationRequest(prompt="paid before the crash"))
    # A worker that recorded one job's task and another's intent, then died (its lease given
    # up, as a stopped scheduler does; a SIGKILL lets it run out: test_redis_workers.py).
    dead = RedisJobStore(redis_server.url, api_key=TOKEN, namespace="app")
    async with dead:
        for key, prompt in (("known-task", "paid before the crash"), ("in-flight", "lost")):
            request = GenerationRequest(prompt=prompt)
            await dead.register(key, request)
            await dead.record_intent(key, request, 1)
        await dead.record_submitted("known-task", paid)
    async with worker(grok_emulator, redis_url=redis_server.url, redis_lease=0.3) as b:
        with anyio.fail_after(20):
            jobs: dict[str, Any] = {}
            while not jobs or any(j["status"] not in FINAL for j in jobs.values()):
                jobs = {
                    k: (await b.get(f"/videos/{k}")).json() for k in ("known-task", "in-flight")
                }
                await anyio.sleep(0.05)
    assert jobs["known-task"]["status"] == "completed"
    assert jobs["in-flight"]["status"] == "failed"
    assert jobs["in-flight"]["error"]["code"] == "ambiguous_submit"
    assert grok_emulator.statistics().tasks_created == 1  # nothing was sent again


async def test_redis_refusing_the_worker_is_a_503_with_retry_after_and_never_ends_it(
    grok_emulator: Emulator,
    redis_server: RedisServer,
) -> None:
    import redis.asyncio as aioredis

    admin = aioredis.Redis.from_url(redis_server.url)
    await admin.execute_command("ACL", "SETUSER", "worker", "on", ">pw", "~*", "&*", "+@all")
    url = f"redis://worker:pw@127.0.0.1:{redis_server.port}/0"
    try:
        async with worker(grok_emulator, redis_url=url, redis_lease=0.3) as a:
            assert (await a.get("/healthz")).json()["status"] == "ok"
            # An operator's ACL change (NOPERM): no outage to wait out, a refusal.
            await admin.execute_command("ACL", "SETUSER", "worker", "-@all", "+ping")
            refused = await a.post("/videos", json={"prompt": "not recorded, not sent"})
            unknown = await a.get("/videos/0123456789abcdef")
            # Long enough for the heartbeat and the adoption loop to meet the refusal.
            for _ in range(10):
                await anyio.sleep(0.1)
                health = await a.get("/healthz")
                assert health.status_code == 200, health.text
            assert health.json()["store"] == "unavailable"
            await admin.execute_command("ACL", "SETUSER", "worker", "+@all")
            with anyio.fail_after(10):  # the heartbeat finds it usable again
                while (await a.get("/healthz")).json()["store"] != "ok":  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            started = await a.post("/videos", json={"prompt": "after the fix"})
    finally:
        await admin.aclose()
    for answer in (refused, unknown):
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "store_unavailable"
        assert int(answer.headers["retry-after"]) >= 1
        assert "Traceback" not in answer.text and "NOPERM" not in answer.text
    assert started.status_code == 202, started.text
    assert "not recorded, not sent" not in grok_emulator.statistics().posts_per_prompt


async def redis_maxmemory(url: str, value: str) -> None:
    """``CONFIG SET maxmemory``: "1" refuses writes (an outage to the workers), "0" ends it."""
    import redis.asyncio as aioredis

    raw = aioredis.Redis.from_url(url)
    try:
        await raw.config_set("maxmemory", value)
    finally:
        await raw.aclose()


@pytest.mark.parametrize(
    "failure", ["the app stops", "the app stops, Redis away", "the request is cancelled"]
)
async def test_a_job_whose_submission_failed_after_its_registration_is_never_run(
    grok_emulator: Emulator,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    from grok_imagine_async.redis import RedisJobStore

    prompt = "asked for, refused, then paid anyway"
    shared = {"redis_url": redis_server.url, "max_credits": 400, "redis_lease": 0.3}
    async with worker_app(grok_emulator, **shared) as (_, app_b):
        # b adopts the unfinished jobs of a worker that stopped: which ones, on each pass
        # that may (a stopped, and b's Redis up for a lease), and that began once a stopped.
        store_b = app_b.state.grok_imagine.jobs._store
        adopted: list[str] = []
        passes_after_a = 0
        a_stopped = False

        async def adopt_orphans(limit: int = 100) -> list[Any]:
            nonlocal passes_after_a
            counts = a_stopped and store_b.may_adopt()
            found = await RedisJobStore.adopt_orphans(store_b, limit)
            adopted.extend(job.key for job in found)
            passes_after_a += counts
            return found

        monkeypatch.setattr(store_b, "adopt_orphans", adopt_orphans)
        async with worker_app(grok_emulator, **shared) as (web_a, app_a):
            resources = app_a.state.grok_imagine
            store_a = resources.jobs._store
            registered: list[str] = []
            scope = anyio.CancelScope()

            async def register(key: str, request: Any, *, reserve: bool) -> None:
                await RedisJobStore.register(store_a, key, request, reserve=reserve)
                registered.append(key)
                if failure.startswith("the app stops"):  # as the lifespan ends, meanwhile
                    resources.scheduler.cancel()
                    resources.jobs.close()
                else:  # the client went away
                    scope.cancel()

            monkeypatch.setattr(store_a, "register", register)
            if failure == "the app stops, Redis away":  # full: writes wait in memory
                await redis_maxmemory(redis_server.url, "1")
            if failure.startswith("the app stops"):
                refused = await web_a.post("/videos", json={"prompt": prompt})
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"] == "unavailable"
            else:
                with scope:
                    await resources.jobs.submit(prompt)
                assert scope.cancelled_caught
            assert len(registered) == 1  # the caller never learnt its id
            assert store_a.available is (failure != "the app stops, Redis away")
            # Back before a stops: a writes its jobs back as it gives up its lease.
            await redis_maxmemory(redis_server.url, "0")
        a_stopped = True  # and gave up its lease: b may adopt its jobs at once
        with anyio.fail_after(10):
            while passes_after_a < 1:  # noqa: ASYNC110 - b's adoption loop, on its own
                await anyio.sleep(0.01)
        assert registered[0] not in adopted  # adopted, b would run it: a POST nobody wants
        assert await committed_credits(redis_server.url) == 0  # its reservation given back
    assert prompt not in grok_emulator.statistics().posts_per_prompt


# A whole scheduler on a real Redis for seconds of real time: on the full Python only (nox).
@pytest.mark.integration
async def test_a_request_cancelled_as_its_job_leaves_a_full_queue_never_runs_it(
    grok_emulator: Emulator, redis_server: RedisServer
) -> None:
    # The scheduler's submit() raises the request's cancellation although a submitter moved
    # the job into its queue meanwhile (see tests/scheduling): JobRegistry.submit records it
    # finished in Redis, its credits given back, so the worker must not run it later (an
    # intent written over that record, its credits reserved again, a POST nobody awaits).
    from grok_imagine_async import JobEvent, JobFinished, JobQueued, JobScheduler, JobState
    from grok_imagine_async._scheduling import workers
    from grok_imagine_async.abc import StoreState
    from grok_imagine_async.fastapi import JobRegistry
    from grok_imagine_async.redis import RedisJobStore

    events: list[JobEvent] = []
    refused, watching = anyio.Event(), []

    def on_event(event: JobEvent) -> None:
        events.append(event)
        if watching and isinstance(event, JobFinished) and event.key != lead.key:
            refused.set()  # a POST refused: its submitter goes back to the queue

    async def cancel_on_the_next_refusal(scope: anyio.CancelScope) -> None:
        queue = scheduler._workers.queue  # type: ignore[union-attr]
        while not queue.statistics().tasks_waiting_send:  # noqa: ASYNC110 - the queue is full
            await anyio.sleep(0.01)
        watching.append(lead.status)
        await refused.wait()
        scope.cancel()

    settings = Settings.from_env(api_key=TOKEN, base_url="http://emulator", plan=LIMIT)
    config = SchedulerConfig(
        max_in_flight=1, breaker=None, poll=FAST_POLL, duration_model=DurationModel(0.4)
    )
    async with (
        grok_emulator.client(token=None) as upstream,
        AsyncGrokImagine(settings=settings, http_client=upstream) as client,
        RedisJobStore(redis_server.url, api_key=TOKEN, max_credits=8000) as store,
        anyio.create_task_group() as tg,
    ):
        jobs = JobRegistry(store, max_queued=1000, max_credits=8000)
        scheduler = JobScheduler(client, config, journal=store, on_event=on_event)
        await tg.start(jobs.run, scheduler)
        lead = await jobs.submit("lead [duration:8]")  # holds the one slot meanwhile
        with anyio.fail_after(5):
            while lead.status is not JobState.RUNNING:
                await jobs.wait_changed(lead, lead.status)
        for i in range(workers._SUBMITTERS + workers._QUEUE_SIZE):  # each refused (a 400)
            await jobs.submit(f"filler {i} [fail:nonsense]")
        with anyio.CancelScope() as scope:
            tg.start_soon(cancel_on_the_next_refusal, scope)
            await jobs.submit("victim")
        assert scope.cancelled_caught
        assert watching == [JobState.RUNNING]  # as planned: the queue was full, the lead ran
        with anyio.fail_after(30):
            while (stats := scheduler.statistics()).queued or stats.submitting:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        victim = [e.key for e in events if isinstance(e, JobQueued)][-1]
        record = await store.load(victim)
        assert record is not None and (record.state, record.attempts) == (StoreState.FAILED, 0)
        assert await committed_credits(redis_server.url) == 40  # the lead's alone
        scheduler.cancel()
    assert "victim" not in grok_emulator.statistics().posts_per_prompt


async def test_a_stream_of_a_job_whose_resume_here_was_dropped_ends_with_an_error_event(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator, redis_server: RedisServer
) -> None:
    # A lookup adopts a dead worker's job and is cancelled (its client gone) while the
    # scheduler's queue is full: the registry drops the entry, so that the next lookup claims
    # the job again. A stream that found the entry meanwhile must end with an "error" event
    # (look the job up again), not fail with the registry's KeyError; and the next lookup
    # resumes the job, never paying twice. The stream's window is one event's send (a slow
    # client widens it); the test opens it by making the stream's first wait_for_change wait
    # for the lookup's cancellation.
    from grok_imagine_async import GenerationRequest
    from grok_imagine_async.redis import RedisJobStore

    request = GenerationRequest(prompt="paid before the crash [duration:1]")
    paid = await grok_client.submit(request)
    async with RedisJobStore(redis_server.url, api_key=TOKEN, namespace="app") as dead:
        await dead.register("orphan", request)
        await dead.record_intent("orphan", request, 1)
        await dead.record_submitted("orphan", paid)
    async with worker_app(grok_emulator, redis_url=redis_server.url, heartbeat=60.0) as (b, app):
        resources = app.state.grok_imagine
        scheduler, jobs = resources.scheduler, resources.jobs
        queued, lookup_ended = anyio.Event(), anyio.Event()
        real_submit, real_wait_changed = scheduler.submit, jobs.wait_changed

        async def full_queue(spec: Any) -> Any:  # the first resume waits for a free slot
            if not queued.is_set():
                queued.set()
                await anyio.sleep_forever()
            return await real_submit(spec)

        async def after_the_lookup(job: Any, seen: Any) -> Any:
            lookup.cancel()
            await lookup_ended.wait()
            return await real_wait_changed(job, seen)

        lookup = anyio.CancelScope()

        async def look_up() -> None:
            with lookup:
                try:
                    await b.get("/videos/orphan")
                finally:
                    lookup_ended.set()

        scheduler.submit = full_queue
        jobs.wait_changed = after_the_lookup
        async with anyio.create_task_group() as lookups:
            lookups.start_soon(look_up)
            with anyio.fail_after(10):
                await queued.wait()
                stream = await events(b, "orphan")
        assert stream[0][0] == "status" and stream[0][1]["status"] == "running"
        name, last = stream[-1]
        assert (name, last["error"]) == ("error", "unavailable")
        jobs.wait_changed = real_wait_changed
        with anyio.fail_after(20):
            stream = await events(b, "orphan")  # looked up again: resumed here
        name, last = stream[-1]
        assert name == "done" and last["status"] == "completed" and last["videos"]
    assert grok_emulator.statistics().tasks_created == 1


async def test_a_budget_spent_before_redis_lost_its_data_stays_spent(
    grok_emulator: Emulator, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Redis restarted empty (no persistence): the workers write their jobs back, and the
    # credits those jobs hold must count again, or the budget starts afresh and is overspent.
    shared = {"redis_url": redis_server.url, "max_credits": 80, "redis_lease": 0.6}
    async with worker_app(grok_emulator, **shared) as (a, app):
        ids = []
        for prompt in ("one", "two"):
            started = await a.post("/videos", json={"prompt": prompt})
            assert started.status_code == 202, started.text
            ids.append(started.json()["id"])
        with anyio.fail_after(20):
            for job_id in ids:
                while (await a.get(f"/videos/{job_id}")).json()["status"] not in FINAL:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
        assert (await a.post("/videos", json={"prompt": "three"})).status_code == 402
        store = app.state.grok_imagine.jobs._store
        redis_server.kill()
        redis_server.start()  # empty
        with anyio.fail_after(10):  # the worker noticed, and wrote its jobs back
            while "Redis lost its data" not in caplog.text:  # noqa: ASYNC110 - its heartbeat
                await anyio.sleep(0.05)
            while store.statistics().pending_writes or not store.available:  # noqa: ASYNC110
                await anyio.sleep(0.05)
            # For a lease, the budget waits for every worker to write its jobs back: a 503.
            while (refused := await a.post("/videos", json={"prompt": "four"})).status_code == 503:
                assert refused.json()["error"] == "store_unavailable"
                await anyio.sleep(0.1)
        assert refused.status_code == 402, refused.text
    assert grok_emulator.statistics().credits_consumed == 80
