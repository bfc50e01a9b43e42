"""JobRegistry on its own: looking ids up in the store, per id, with short negative caching."""

from __future__ import annotations

import anyio
import pytest
from test_fastapi import EMULATOR, settings_of

from grok_imagine_async import (
    GenerationRequest,
    JobResult,
    JobState,
    JournalError,
    Task,
    TaskStatus,
)
from grok_imagine_async._errors import JobTakenOver
from grok_imagine_async._journal.memory import MemoryJobStore
from grok_imagine_async.abc import Claim, StoredJob, StoreRecord, StoreState
from grok_imagine_async.fastapi import JobRegistry, http_error_for
from grok_imagine_async.fastapi._jobs import _UNCOUNTED, UNKNOWN_TTL, _Tracked
from grok_imagine_async.testing import Emulator

pytestmark = pytest.mark.anyio

REQUEST = GenerationRequest(prompt="a heron at dusk")


class SlowStore(MemoryJobStore):
    """A store whose lookups of unknown ids hang until released (a slow Redis round trip)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = anyio.Event()
        self.claims: list[str] = []

    async def claim(
        self, key: str, *, create: GenerationRequest | None = None, reopen: bool = False
    ) -> Claim:
        self.claims.append(key)
        if await self.load(key) is None:
            await self.release.wait()
        return await super().claim(key, create=create, reopen=reopen)


async def finished(store: MemoryJobStore, key: str) -> None:
    await store.record_intent(key, REQUEST, 1)
    await store.record_submitted(key, "task-1")
    task = Task(
        task_id="task-1",
        status=TaskStatus.COMPLETED,
        raw_status="completed",
        videos=("https://videos.example/1.mp4",),
    )
    await store.record_finished(
        JobResult(
            key=key, request=REQUEST, task=task, error=None, failure_class=None, attempts=1,
            credits=40, polls=1, submitted_at=None, finished_at=0.0,
        )
    )  # fmt: skip


async def test_a_lookup_of_a_known_id_does_not_wait_for_lookups_of_unknown_ones() -> None:
    store = SlowStore()
    await finished(store, "known")
    jobs = JobRegistry(store)
    async with anyio.create_task_group() as group:
        for n in range(50):  # clients asking random ids, each a slow round trip
            group.start_soon(jobs.get, f"random-{n}")
        await anyio.wait_all_tasks_blocked()
        with anyio.fail_after(1):  # one lock for every id would hold it behind the 50
            job = await jobs.get("known")
        store.release.set()
    assert job is not None and job.status is JobState.COMPLETED
    assert job.result is not None and job.result.videos == ("https://videos.example/1.mp4",)


async def test_two_lookups_of_one_id_ask_the_store_once() -> None:
    store = SlowStore()
    jobs = JobRegistry(store)
    found: list[object] = []

    async def look() -> None:
        found.append(await jobs.get("nobody"))

    async with anyio.create_task_group() as group:
        group.start_soon(look)
        group.start_soon(look)
        await anyio.wait_all_tasks_blocked()
        store.release.set()
    assert found == [None, None]
    assert store.claims == ["nobody"]  # the second found the answer of the first


async def test_an_unknown_id_is_answered_from_memory_for_a_short_while() -> None:
    store = SlowStore()
    store.release.set()
    jobs = JobRegistry(store)
    for _ in range(20):
        assert await jobs.get("nobody") is None
    assert store.claims == ["nobody"]
    await anyio.sleep(UNKNOWN_TTL)
    await finished(store, "nobody")  # it may exist by now: asked again after the short while
    assert await jobs.get("nobody") is not None
    assert store.claims == ["nobody", "nobody"]


async def test_a_store_that_fails_a_lookup_is_a_503_with_retry_after() -> None:
    class Down(MemoryJobStore):
        async def claim(
            self, key: str, *, create: GenerationRequest | None = None, reopen: bool = False
        ) -> Claim:
            raise JournalError("Redis unreachable, cannot claim job x (ConnectionError)")

    with pytest.raises(JournalError) as raised:
        await JobRegistry(Down()).get("some-id")
    problem = http_error_for(raised.value)
    assert (problem.status_code, problem.code) == (503, "store_unavailable")
    assert int(problem.headers["Retry-After"]) >= 1


@EMULATOR
async def test_waiting_on_a_job_ends_when_the_app_stops(grok_emulator: Emulator) -> None:
    from fastapi import FastAPI

    from grok_imagine_async import SchedulerClosedError
    from grok_imagine_async.fastapi import grok_imagine_lifespan

    app = FastAPI()
    async with grok_emulator.client(token=None) as upstream:
        async with grok_imagine_lifespan(app, settings=settings_of(upstream), http_client=upstream):
            jobs: JobRegistry = app.state.grok_imagine.jobs
            job = await jobs.submit("a long one [duration:600]")
        with anyio.fail_after(5), pytest.raises(SchedulerClosedError):
            await job.wait()


@pytest.mark.anyio
async def test_a_job_another_worker_took_over_reports_that_workers_end() -> None:
    request = GenerationRequest(prompt="adopted")
    tracked = _Tracked("k", request, _UNCOUNTED)
    taken = JobTakenOver("job k is owned by another process now; not sending it")
    ran_here = JobResult(
        key="k",
        request=request,
        task=None,
        error=taken,
        failure_class=None,
        attempts=0,
        credits=0,
        polls=0,
        submitted_at=None,
        finished_at=0.0,
    )

    class Local:  # this worker's scheduler job: it ended when the other worker took it over
        result: JobResult | None = None

    local = tracked.local = Local()  # type: ignore[assignment]
    assert tracked.here is tracked.local  # running here: this worker's scheduler tells its life
    local.result = ran_here
    assert tracked.here is None  # taken over: the store tells it (a re-read included)
    record = StoreRecord("k", request, StoreState.COMPLETED, task_id="t-1", attempts=1)
    assert tracked.update(StoredJob("k", request, record), max_credits=None)
    result = tracked.result
    assert result is not None and result.error is None and result.task_id == "t-1"


class CountingStore(MemoryJobStore):
    """A store that lists the ids it was asked to claim."""

    def __init__(self) -> None:
        super().__init__()
        self.claims: list[str] = []

    async def claim(
        self, key: str, *, create: GenerationRequest | None = None, reopen: bool = False
    ) -> Claim:
        self.claims.append(key)
        return await super().claim(key, create=create, reopen=reopen)


@EMULATOR
async def test_a_lookup_cancelled_while_resuming_a_job_leaves_no_entry_behind(
    grok_emulator: Emulator,
) -> None:
    # A job another worker left unfinished is claimed by the lookup, whose submit() to this
    # worker's scheduler waits for room in a full queue; the request goes away meanwhile.
    from grok_imagine_async import AsyncGrokImagine, JobScheduler, SchedulerClosedError
    from grok_imagine_async._scheduling import workers
    from grok_imagine_async.batch import SchedulerConfig

    store = CountingStore()
    await store.record_intent("orphan", REQUEST, 1)
    await store.record_submitted("orphan", "task-gone")
    async with (
        grok_emulator.client(token=None) as upstream,
        AsyncGrokImagine(settings=settings_of(upstream), http_client=upstream) as client,
        anyio.create_task_group() as group,
    ):
        jobs = JobRegistry(store)
        scheduler = JobScheduler(client, SchedulerConfig(max_in_flight=1), journal=store)
        await group.start(jobs.run, scheduler)
        lead = await jobs.submit("lead [duration:60]")  # holds the one slot
        with anyio.fail_after(10):
            while lead.status is not JobState.RUNNING:
                await jobs.wait_changed(lead, lead.status)
        for i in range(workers._SUBMITTERS + workers._QUEUE_SIZE):  # each submitter holds one
            await jobs.submit(f"filler {i} [duration:5]")
        tracked, told = len(jobs), []

        async def follow() -> None:  # another request for it, found while the first waits
            await anyio.sleep(0.5)  # virtual time: the first lookup waits in submit() by then
            job = await jobs.get("orphan")
            assert job is not None
            with pytest.raises(SchedulerClosedError):  # told, not left waiting for ever
                await jobs.wait_changed(job, job.status)
            told.append(job.key)

        with anyio.move_on_after(1) as gone:  # a request whose client went away
            group.start_soon(follow)
            await jobs.get("orphan")
        assert gone.cancelled_caught
        await anyio.wait_all_tasks_blocked()
        assert told == ["orphan"]
        # Kept, the entry would answer the next lookup at once with a job nobody runs until
        # this worker gives up its lease: the next lookup claims it again instead.
        assert len(jobs) == tracked
        with anyio.move_on_after(1) as again:
            await jobs.get("orphan")
        assert again.cancelled_caught
        assert store.claims == ["orphan", "orphan"]
        scheduler.cancel()


async def test_waiting_on_a_finished_job_forgotten_since_answers_its_state_at_once() -> None:
    store = MemoryJobStore()
    jobs = JobRegistry(store, max_jobs=1)
    for key in ("first", "second"):
        await finished(store, key)
    first = await jobs.get("first")
    assert first is not None and await jobs.get("second") is not None  # "first" forgotten
    assert len(jobs) == 1
    with anyio.fail_after(1):
        assert await jobs.wait_changed(first, JobState.RUNNING) is JobState.COMPLETED
        assert (await jobs.wait_finished(first)).ok
