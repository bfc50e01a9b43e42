"""grok_imagine_lifespan and the dependencies, in apps of our own (not the example's)."""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from test_fastapi import EMULATOR, TOKEN, client_of, settings_of

from grok_imagine_async import (
    AsyncGrokImagine,
    ConfigurationError,
    GenerationRequest,
    JobEvent,
    JobFinished,
    JobScheduler,
    JobState,
    Settings,
)
from grok_imagine_async._journal.memory import MemoryJobStore
from grok_imagine_async.batch import BreakerPolicy, SchedulerConfig
from grok_imagine_async.fastapi import (
    GrokClient,
    GrokImagineResources,
    GrokJobs,
    GrokScheduler,
    JobRegistry,
    grok_imagine_lifespan,
    install_error_handlers,
)
from grok_imagine_async.testing import Emulator, EmulatorConfig

pytestmark = [pytest.mark.anyio, EMULATOR]


def small_app(upstream: httpx.AsyncClient, *, plan: str | None = None, **options: Any) -> FastAPI:
    """An app using all three dependencies, on the in-process emulator."""
    settings = settings_of(upstream, plan=plan)
    lifespan = functools.partial(
        grok_imagine_lifespan, settings=settings, http_client=upstream, **options
    )
    app = FastAPI(lifespan=lifespan)
    install_error_handlers(app)

    @app.post("/videos", status_code=202)
    async def start(prompt: str, jobs: GrokJobs) -> dict[str, str]:
        job = await jobs.submit(prompt)
        return {"id": job.key}

    @app.get("/videos/{video_id}")
    async def look(video_id: str, jobs: GrokJobs) -> dict[str, Any]:
        job = await jobs.get(video_id)
        if job is None:
            raise HTTPException(404)
        return {"status": job.status.value}

    @app.get("/whoami")
    async def whoami(client: GrokClient, scheduler: GrokScheduler) -> dict[str, Any]:
        return {
            "client": id(client),
            "scheduler": id(scheduler),
            "limit": client.limiter.limit.requests,
        }

    return app


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(app) as web, app.router.lifespan_context(app):
        yield web


async def test_every_request_gets_the_apps_one_client_and_scheduler(
    grok_emulator: Emulator,
) -> None:
    async with grok_emulator.client(token=None) as upstream:
        app = small_app(upstream, plan="pro")
        async with serving(app) as web:
            answers = [(await web.get("/whoami")).json() for _ in range(3)]
            resources = app.state.grok_imagine
    assert isinstance(resources, GrokImagineResources)
    assert isinstance(resources.scheduler, JobScheduler)
    assert answers == [answers[0]] * 3
    assert answers[0] == {
        "client": id(resources.client),
        "scheduler": id(resources.scheduler),
        "limit": 1000,
    }
    assert not hasattr(app.state, "grok_imagine")  # gone after shutdown


async def test_without_the_lifespan_a_handler_fails_with_a_bare_500(
    grok_emulator: Emulator,
) -> None:
    async with grok_emulator.client(token=None) as upstream:
        app = small_app(upstream)
        async with client_of(app) as web:  # the lifespan never ran
            answer = await web.post("/videos?prompt=a+cat")
    assert answer.status_code == 500
    assert answer.text == "Internal Server Error"


async def test_a_prompt_the_library_refuses_is_422(grok_emulator: Emulator) -> None:
    async with grok_emulator.client(token=None) as upstream, serving(small_app(upstream)) as web:
        answer = await web.post("/videos", params={"prompt": "   "})
    assert answer.status_code == 422
    assert answer.json()["error"] == "invalid_request"
    assert grok_emulator.statistics().requests_total == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"client_factory": lambda: None, "settings": Settings(api_key="x")}, "either client_f"),
        ({"redis_url": "redis://127.0.0.1:9", "journal": "jobs.db"}, "either redis_url"),
    ],
)
async def test_settings_that_cannot_work_are_refused_at_startup(
    options: dict[str, Any], message: str
) -> None:
    app = FastAPI()
    with pytest.raises(ConfigurationError, match=message):
        async with grok_imagine_lifespan(app, **options):
            pass


@pytest.mark.parametrize(
    ("given", "favor", "warmup_until", "stop_after_refusals"),
    [
        # The app's defaults: users wait on their own job, and send their own prompts (one
        # user's refusals never stop the service; a task seen running ends the warm-up).
        (SchedulerConfig(max_in_flight=1), "latency", "running", None),
        (
            SchedulerConfig(favor="throughput", breaker=BreakerPolicy()),
            "throughput",
            "completed",
            10,
        ),
    ],
)
async def test_an_app_s_scheduler_config_gets_the_app_s_defaults_unless_it_says(
    grok_emulator: Emulator,
    given: SchedulerConfig,
    favor: str,
    warmup_until: str,
    stop_after_refusals: int | None,
) -> None:
    app = FastAPI()
    async with (
        grok_emulator.client(token=None) as upstream,
        grok_imagine_lifespan(
            app, settings=settings_of(upstream), http_client=upstream, scheduler_config=given
        ),
    ):
        config = app.state.grok_imagine.scheduler._config
    assert config.max_in_flight == given.max_in_flight
    assert config.favor == favor
    assert config.breaker.warmup_until == warmup_until
    assert config.breaker.stop_after_refusals == stop_after_refusals


async def test_the_apps_breaker_keeps_the_settings_max_at_risk(grok_emulator: Emulator) -> None:
    # The app's defaults replace the warm-up and the refusal stop, not the cap on what an
    # outage may cost.
    app = FastAPI()
    async with grok_emulator.client(token=None) as upstream:
        settings = replace(settings_of(upstream), breaker=BreakerPolicy(max_at_risk=8))
        async with grok_imagine_lifespan(app, settings=settings, http_client=upstream):
            config = app.state.grok_imagine.scheduler._config
    assert config.breaker.max_at_risk == 8
    assert config.breaker.warmup_until == "running"


async def test_a_missing_api_key_fails_the_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GROK_IMAGINE_API_KEY", raising=False)
    app = FastAPI(lifespan=grok_imagine_lifespan)
    with pytest.raises(ConfigurationError, match="no API key"):
        async with app.router.lifespan_context(app):
            pass


async def test_the_client_factory_client_is_closed_at_shutdown() -> None:
    made: list[AsyncGrokImagine] = []

    def factory() -> AsyncGrokImagine:
        # Its own connection pool, to a closed local port: it must never be used here.
        made.append(AsyncGrokImagine(api_key=TOKEN, base_url="http://127.0.0.1:9"))
        return made[0]

    app = FastAPI(lifespan=functools.partial(grok_imagine_lifespan, client_factory=factory))
    async with app.router.lifespan_context(app):
        assert app.state.grok_imagine.client is made[0]
    with pytest.raises(RuntimeError, match="closed"):
        await made[0].get_task("task_1")


async def test_your_hook_sees_every_event(grok_emulator: Emulator) -> None:
    seen: list[JobEvent] = []
    async with grok_emulator.client(token=None) as upstream:
        app = small_app(upstream, on_event=seen.append)
        async with serving(app) as web:
            video_id = (await web.post("/videos", params={"prompt": "a cat"})).json()["id"]
            job = await app.state.grok_imagine.jobs.get(video_id)
            result = await app.state.grok_imagine.jobs.wait_finished(job)
    assert result.ok
    assert [type(e).__name__ for e in seen] == ["JobQueued", "JobSubmitted", "JobFinished"]
    assert isinstance(seen[-1], JobFinished) and seen[-1].key == video_id


async def test_it_composes_with_your_lifespan_and_lets_your_errors_through(
    grok_emulator: Emulator,
) -> None:
    order: list[str] = []
    async with grok_emulator.client(token=None) as upstream:

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            order.append("before")
            settings = settings_of(upstream)
            async with grok_imagine_lifespan(app, settings=settings, http_client=upstream):
                order.append("inside")
                yield
            order.append("after")

        app = FastAPI(lifespan=lifespan)
        with pytest.raises(KeyError):  # as is, not wrapped in an ExceptionGroup
            async with app.router.lifespan_context(app):
                raise KeyError("a bug of yours")
        async with app.router.lifespan_context(app):
            pass
    assert order == ["before", "inside", "before", "inside", "after"]


class FullDiskJournal(MemoryJobStore):
    """A journal whose disk fills up at the first write."""

    async def record_intent(
        self, key: str, request: GenerationRequest, attempt: int, *, unbilled: int = 0
    ) -> None:
        raise OSError(28, "No space left on device")


async def test_a_scheduler_crash_is_logged_and_the_app_answers_503(
    grok_emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with grok_emulator.client(token=None) as upstream:
        app = small_app(upstream, journal=FullDiskJournal())
        async with serving(app) as web:
            first = await web.post("/videos", params={"prompt": "a cat"})
            jobs: JobRegistry = app.state.grok_imagine.jobs
            while not jobs.closed:  # noqa: ASYNC110 - no event tells of it
                await anyio.sleep(0.1)
            later = await web.post("/videos", params={"prompt": "a dog"})
    assert first.status_code == 202
    assert later.status_code == 503
    assert "the video scheduler stopped, no more jobs can run" in caplog.text
    assert "No space left on device" in caplog.text
    assert grok_emulator.statistics().requests_total == 0  # nothing sent without its journal entry


async def test_the_registry_forgets_the_oldest_finished_jobs_beyond_its_size(
    grok_emulator: Emulator,
) -> None:
    async with grok_emulator.client(token=None) as upstream:
        app = small_app(upstream, max_jobs=2)
        async with serving(app) as web:
            jobs: JobRegistry = app.state.grok_imagine.jobs
            running = (await web.post("/videos", params={"prompt": "slow [duration:900]"})).json()
            ids = []
            for n in range(3):
                ids.append(
                    (await web.post("/videos", params={"prompt": f"quick {n}"})).json()["id"]
                )
                job = await jobs.get(ids[-1])
                assert job is not None
                await jobs.wait_finished(job)
            statuses = [(await web.get(f"/videos/{i}")).status_code for i in ids]
            still_running = await web.get(f"/videos/{running['id']}")
            size = len(jobs)
    # The unfinished job is never forgotten; of the finished ones, the two most recent stay.
    assert still_running.json() == {"status": "running"}
    assert statuses == [404, 404, 200]
    assert size == 2


async def test_progress_is_an_estimate_from_0_to_1(grok_emulator: Emulator) -> None:
    async with grok_emulator.client(token=None) as upstream:
        app = small_app(upstream, scheduler_config=SchedulerConfig(max_in_flight=1))
        async with serving(app) as web:
            jobs: JobRegistry = app.state.grok_imagine.jobs
            first = await jobs.get((await web.post("/videos?prompt=a+[duration:60]")).json()["id"])
            second = await jobs.get((await web.post("/videos?prompt=b+[duration:1]")).json()["id"])
            assert first is not None and second is not None
            while first.status is not JobState.RUNNING:
                await jobs.wait_changed(first, first.status)
            seen = []
            while not first.status.is_final:
                seen.append(first.progress)
                assert second.progress == 0.0  # waiting its turn
                with anyio.move_on_after(5):
                    await jobs.wait_finished(first)
            assert first.progress == 1.0
    assert seen[0] is not None and seen[0] < 0.1
    assert seen == sorted(seen)
    assert all(p is not None and 0 <= p < 1 for p in seen)


# -- the README's pattern, as written there ----------------------------------------------------


class VideoIn(BaseModel):
    prompt: str = Field(min_length=1, max_length=2000)
    ratio: str = "1:1"


def readme_app() -> FastAPI:
    app = FastAPI(lifespan=grok_imagine_lifespan)  # token, plan: $GROK_IMAGINE_API_KEY, _PLAN
    install_error_handlers(app)  # our errors -> 422/402/429/502/503/504, never a stack trace

    @app.post("/videos", status_code=202)
    async def start_video(body: VideoIn, jobs: GrokJobs) -> dict[str, str]:
        job = await jobs.submit(GenerationRequest(prompt=body.prompt, ratio=body.ratio))
        return {"id": job.key}  # queued: the app's scheduler submits and polls it

    @app.get("/videos/{video_id}")
    async def get_video(video_id: str, jobs: GrokJobs) -> dict[str, Any]:
        job = await jobs.get(video_id)
        if job is None:
            raise HTTPException(404, "no such video")
        videos = list(job.result.videos) if job.result else []
        return {"status": job.status.value, "progress": job.progress, "videos": videos}

    return app


@pytest.mark.real_time
@pytest.mark.grok_emulator(EmulatorConfig(tokens={TOKEN: "pro"}))
async def test_the_readme_pattern_serves_rate_limited_videos(
    grok_emulator_env: Any, grok_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROK_IMAGINE_PLAN", "pro")  # the plan's name, as the README has it
    app = readme_app()
    async with serving(app) as web:
        started = [await web.post("/videos", json={"prompt": f"a kite {n}"}) for n in range(20)]
        refused = await web.post("/videos", json={"prompt": "a kite", "ratio": "4:3"})
        with anyio.fail_after(10):
            while app.state.grok_imagine.scheduler.statistics().in_flight < 20:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        looked = [(await web.get(f"/videos/{a.json()['id']}")).json() for a in started]
    assert [a.status_code for a in started] == [202] * 20
    assert refused.status_code == 422
    assert "4:3" in refused.json()["detail"]
    assert "allow_unlisted" not in refused.json()["detail"]  # advice for Python, not callers
    assert all(body["status"] == "running" for body in looked)
    stats = grok_emulator.statistics()
    assert stats.tasks_created == 20
    assert stats.rate_limited == 0


def test_a_missing_fastapi_is_named_with_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "grok_imagine_async.fastapi")
    with pytest.raises(ImportError, match=r'pip install "grok-imagine-async\[fastapi\]"'):
        importlib.import_module("grok_imagine_async.fastapi")
