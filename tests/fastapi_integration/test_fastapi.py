"""The example FastAPI app, driven in process through ``httpx.ASGITransport``, on virtual time.

The app's one client talks to the emulator in process too, so whole minutes of generations and
rate limiting run in milliseconds, with the ordering they would have in real time.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import anyio
import httpx
import pytest
from fastapi import FastAPI

from grok_imagine_async import JobScheduler, RateLimit, Settings
from grok_imagine_async._limiting.line import SlotLine
from grok_imagine_async.abc import LimiterStatistics, Permit, Priority, RateLimitFeedback
from grok_imagine_async.batch import SchedulerConfig
from grok_imagine_async.fastapi import GrokImagineResources
from grok_imagine_async.testing import Emulator

TOKEN = "sk-live-7f3a9c21-do-not-print"
# The plugin's grok_emulator for the app's client: our token's plan, the real service's times.
EMULATOR = pytest.mark.grok_emulator(seed=7, tokens={TOKEN: "free"}, time_scale=1)

pytestmark = [pytest.mark.anyio, EMULATOR]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app.py"
ONE_IN_FLIGHT = SchedulerConfig(max_in_flight=1)


def load_example() -> ModuleType:
    """examples/fastapi_app.py as a module (registered, so pydantic resolves its annotations)."""
    if "fastapi_app" in sys.modules:
        return sys.modules["fastapi_app"]
    spec = importlib.util.spec_from_file_location("fastapi_app", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fastapi_app"] = module
    spec.loader.exec_module(module)
    return module


class Served(NamedTuple):
    web: httpx.AsyncClient
    app: FastAPI

    @property
    def resources(self) -> GrokImagineResources:
        resources = self.app.state.grok_imagine
        assert isinstance(resources, GrokImagineResources)
        return resources

    @property
    def scheduler(self) -> JobScheduler:
        return self.resources.scheduler


def settings_of(upstream: httpx.AsyncClient, **options: Any) -> Settings:
    """The app's settings: our token, sent to the emulator behind ``upstream``."""
    return Settings.from_env(api_key=TOKEN, base_url=str(upstream.base_url), **options)


@asynccontextmanager
async def running(
    emulator: Emulator, *, plan: str | None = None, **options: Any
) -> AsyncIterator[Served]:
    """The example app, started against ``emulator``; stopped (its lifespan ended) on exit."""
    async with emulator.client(token=None) as upstream:
        settings = settings_of(upstream, plan=plan)
        app = load_example().create_app(settings=settings, http_client=upstream, **options)
        # The lifespan ends first: requests still running then see the app shut down.
        async with client_of(app) as web, app.router.lifespan_context(app):
            yield Served(web, app)


def client_of(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://videos.test")


@dataclass
class SseEvent:
    event: str | None
    data: Any
    comment: bool = False


def parse_sse(text: str) -> list[SseEvent]:
    import json

    events = []
    for block in text.split("\n\n"):
        if not block:
            continue
        if block.startswith(":"):
            events.append(SseEvent(None, None, comment=True))
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append(SseEvent(fields.get("event"), json.loads(fields["data"])))
    return events


async def wait_until_status(
    web: httpx.AsyncClient, video_id: str, *wanted: str, every: float = 1.0
) -> dict[str, Any]:
    """Poll the app (not the API) until the job reaches a wanted status."""
    while True:
        answer = await web.get(f"/videos/{video_id}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        if body["status"] in wanted:
            return body
        await anyio.sleep(every)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text
        assert "Traceback" not in text


# -- many users --------------------------------------------------------------------------------


@pytest.mark.grok_emulator(tokens={TOKEN: RateLimit(100, 60.0)})
async def test_200_concurrent_users_get_their_videos_with_no_429_upstream(
    grok_emulator: Emulator,
) -> None:
    finished: dict[str, dict[str, Any]] = {}
    started = anyio.current_time()
    async with running(grok_emulator) as served:

        async def user(n: int) -> None:
            answer = await served.web.post("/videos", json={"prompt": f"user {n}'s kite"})
            assert answer.status_code == 202, answer.text
            video_id = answer.json()["id"]
            assert answer.headers["location"] == f"/videos/{video_id}"
            if n % 2:  # half of them follow the event stream
                events = parse_sse((await served.web.get(f"/videos/{video_id}/events")).text)
                assert events[-1].event == "done"
                finished[video_id] = events[-1].data
                return
            while True:  # the other half poll the app, as a browser would
                await anyio.sleep(20.0)
                body = (await served.web.get(f"/videos/{video_id}")).json()
                if body["status"] in ("completed", "failed"):
                    finished[video_id] = body
                    return

        async with anyio.create_task_group() as users:
            for n in range(200):
                users.start_soon(user, n)
        scheduler_stats = served.scheduler.statistics()
    elapsed = anyio.current_time() - started
    stats = grok_emulator.statistics()
    assert len(finished) == 200
    assert all(body["status"] == "completed" for body in finished.values())
    assert all(len(body["videos"]) == 2 for body in finished.values())
    assert stats.rate_limited == 0
    assert stats.tasks_created == 200
    assert stats.duplicate_submissions == {}
    assert grok_emulator.max_window_count(60.0) <= 100
    # Users' thousands of GETs were answered by the app: the API saw only the scheduler.
    assert stats.requests_total == scheduler_stats.submissions + scheduler_stats.polls
    assert 200 * 60 / 100 < elapsed < 15 * 60  # the quota, not the users, sets the pace


# -- Server-Sent Events ------------------------------------------------------------------------


async def test_event_stream_follows_a_job_to_completion(grok_emulator: Emulator) -> None:
    async with running(grok_emulator, heartbeat=5.0) as served:
        video_id = (await served.web.post("/videos", json={"prompt": "a lighthouse"})).json()["id"]
        answer = await served.web.get(f"/videos/{video_id}/events")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.headers["cache-control"] == "no-cache"
    events = parse_sse(answer.text)
    named = [e for e in events if not e.comment]
    assert named[0].event == "status"
    assert named[0].data["status"] in ("queued", "submitting", "running")
    assert "running" in [e.data["status"] for e in named if e.event == "status"]
    progress = [e.data["progress"] for e in named if e.event == "progress"]
    assert progress, "a 30 s generation with 5 s heartbeats sends progress events"
    assert progress == sorted(progress) and all(0 < p < 1 for p in progress)
    assert named[-1].event == "done"
    assert named[-1].data["status"] == "completed"
    assert named[-1].data["progress"] == 1.0
    assert len(named[-1].data["videos"]) == 2
    assert [e.event for e in named].count("done") == 1


@pytest.mark.grok_emulator(duration_median=4.0, duration_sigma=0.01, tokens={TOKEN: "pro"})
async def test_event_stream_reports_a_short_job_done_about_a_second_after_it_ends(
    grok_emulator: Emulator,
) -> None:
    # Issue 12: a 4 s job followed in a browser was reported done after 34 s (the 30 s prior).
    async with running(grok_emulator, heartbeat=5.0) as served:
        video_id = (await served.web.post("/videos", json={"prompt": "a lighthouse"})).json()["id"]
        answer = await served.web.get(f"/videos/{video_id}/events")
        reported = anyio.current_time()
        [task_id] = grok_emulator.task_ids()
    times = grok_emulator.task_times(task_id)
    assert times is not None
    assert parse_sse(answer.text)[-1].event == "done"
    assert reported - times[1] <= 1.5  # max(1 s, 5 %) at the median, and a margin for the stream


async def test_event_stream_of_a_finished_job_is_one_done_event(grok_emulator: Emulator) -> None:
    async with running(grok_emulator) as served:
        answer = await served.web.post(
            "/videos?wait=true&timeout=60", json={"prompt": "a kite [duration:3]"}
        )
        assert answer.status_code == 200
        stream = await served.web.get(f"/videos/{answer.json()['id']}/events")
    assert [(e.event, e.data["status"]) for e in parse_sse(stream.text)] == [("done", "completed")]


async def test_event_stream_of_a_refused_prompt_ends_with_its_failure(
    grok_emulator: Emulator,
) -> None:
    async with running(grok_emulator, heartbeat=5.0) as served:
        video_id = (
            await served.web.post("/videos", json={"prompt": "a crime [fail:content]"})
        ).json()["id"]
        answer = await served.web.get(f"/videos/{video_id}/events")
    done = parse_sse(answer.text)[-1]
    assert done.event == "done"
    assert done.data["status"] == "failed"
    assert done.data["error"]["code"] == "content_policy"
    assert done.data["videos"] == []


async def test_event_stream_sends_heartbeats_while_a_job_waits_in_the_queue(
    grok_emulator: Emulator,
) -> None:
    async with running(grok_emulator, heartbeat=2.0, scheduler_config=ONE_IN_FLIGHT) as served:
        first = (await served.web.post("/videos", json={"prompt": "one [duration:20]"})).json()
        second = (await served.web.post("/videos", json={"prompt": "two [duration:1]"})).json()
        answer = await served.web.get(f"/videos/{second['id']}/events")
        first_now = (await served.web.get(f"/videos/{first['id']}")).json()
    events = parse_sse(answer.text)
    assert events[0].data["status"] == "queued"
    queued_part = events[1 : next(i for i, e in enumerate(events) if e.data and i > 0)]
    assert queued_part and all(e.comment for e in queued_part)  # keep-alives while queued
    assert events[-1].data["status"] == "completed"
    assert first_now["status"] == "completed"  # one at a time: the first finished before


# -- waiting for the result --------------------------------------------------------------------


async def test_wait_mode_answers_200_with_the_videos_when_ready_in_time(
    grok_emulator: Emulator,
) -> None:
    async with running(grok_emulator) as served:
        start = anyio.current_time()
        answer = await served.web.post(
            "/videos?wait=true&timeout=60", json={"prompt": "a fox [duration:8]"}
        )
        waited = anyio.current_time() - start
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "completed"
    assert len(body["videos"]) == 2
    assert 8 <= waited < 60


async def test_wait_mode_gives_up_at_its_timeout_with_202_and_the_job_goes_on(
    grok_emulator: Emulator,
) -> None:
    async with running(grok_emulator) as served:
        start = anyio.current_time()
        answer = await served.web.post(
            "/videos?wait=true&timeout=5", json={"prompt": "a slow whale [duration:120]"}
        )
        waited = anyio.current_time() - start
        assert answer.status_code == 202
        assert 5.0 <= waited < 5.5
        body = answer.json()
        assert body["status"] in ("submitting", "running")
        done = await wait_until_status(served.web, body["id"], "completed", "failed")
    assert done["status"] == "completed"
    assert grok_emulator.statistics().tasks_created == 1


@pytest.mark.parametrize("wait_for", ["0", "-1", "61", "3600", "soon"])
async def test_wait_timeout_is_bounded(grok_emulator: Emulator, wait_for: str) -> None:
    async with running(grok_emulator) as served:
        answer = await served.web.post(
            f"/videos?wait=true&timeout={wait_for}", json={"prompt": "a cat"}
        )
    assert answer.status_code == 422
    assert grok_emulator.statistics().requests_total == 0


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"prompt": ""},
        {"prompt": "   "},
        {"prompt": "x" * 2001},
        {"prompt": "a cat", "ratio": "4:3"},
        {"prompt": "a cat", "mode": "angry"},
        {"prompt": "a cat", "images": ["ftp://example.com/cat.png"]},
        {"prompt": "a cat", "mode": "spicy", "images": ["https://example.com/cat.png"]},
        {"prompt": "a cat", "seed": 4},
        ["a cat"],
    ],
)
async def test_bad_input_is_422_and_costs_nothing(grok_emulator: Emulator, body: Any) -> None:
    async with running(grok_emulator) as served:
        answer = await served.web.post("/videos", json=body)
    assert answer.status_code == 422, answer.text
    assert "detail" in answer.json()
    assert_no_secret(answer.text)
    assert grok_emulator.statistics().tasks_created == 0


async def test_a_body_that_is_not_json_is_400_in_our_format(grok_emulator: Emulator) -> None:
    async with running(grok_emulator) as served:
        answer = await served.web.post(
            "/videos", content=b"{prompt", headers={"content-type": "application/json"}
        )
    assert answer.status_code == 400
    assert answer.json()["error"] == "malformed_body"
    assert grok_emulator.statistics().requests_total == 0


async def test_unknown_video_is_404(grok_emulator: Emulator) -> None:
    async with running(grok_emulator) as served:
        answers = [
            await served.web.get("/videos/0123456789abcdef0123456789abcdef"),
            await served.web.get("/videos/0123456789abcdef0123456789abcdef/events"),
        ]
    assert [a.status_code for a in answers] == [404, 404]
    assert answers[0].json() == {"detail": "no such video job", "error": "not_found"}


@pytest.mark.parametrize(
    ("marker", "status", "code"),
    [
        ("[fail:content]", 422, "content_policy"),
        ("[fail:input]", 422, "invalid_input"),
        ("[fail:build]", 502, "generation_failed"),
        ("[fail:unknown]", 502, "unknown"),
        ("[fail:empty]", 502, "no_result"),
        ("[fail:500]", 502, "upstream_error"),
        ("[fail:drop]", 502, "ambiguous_submit"),
        ("[fail:typo]", 422, "rejected_by_upstream"),  # the API's own 400
    ],
)
async def test_failures_in_wait_mode_map_to_http_errors(
    grok_emulator: Emulator, marker: str, status: int, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(grok_emulator) as served:
        answer = await served.web.post(
            "/videos?wait=true&timeout=60", json={"prompt": f"a cat {marker}"}
        )
        looked_up = await served.web.get(f"/videos/{answer.json()['id']}")
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["error"] == code
    assert set(body) == {"detail", "error", "id"}
    assert looked_up.json()["status"] == "failed"
    assert looked_up.json()["error"]["code"] == code
    assert_no_secret(answer.text, looked_up.text, caplog.text)
    assert grok_emulator.statistics().duplicate_submissions == {}


async def test_network_failure_is_resubmitted_once_and_then_succeeds(
    grok_emulator: Emulator,
) -> None:
    async with running(grok_emulator) as served:
        answer = await served.web.post("/videos", json={"prompt": "a cat [fail:network:1]"})
        done = await wait_until_status(served.web, answer.json()["id"], "completed", "failed")
    assert done["status"] == "completed"
    assert grok_emulator.statistics().tasks_created == 2  # the failed task, then the good one


async def test_budget_reached_is_402_at_once(grok_emulator: Emulator) -> None:
    async with running(grok_emulator, max_credits=80) as served:
        first = await served.web.post("/videos", json={"prompt": "one"})
        second = await served.web.post("/videos", json={"prompt": "two"})
        third = await served.web.post("/videos", json={"prompt": "three"})
        await wait_until_status(served.web, first.json()["id"], "completed")
        await wait_until_status(served.web, second.json()["id"], "completed")
        fourth = await served.web.post("/videos?wait=true", json={"prompt": "four"})
    assert [first.status_code, second.status_code] == [202, 202]
    assert third.status_code == fourth.status_code == 402
    assert third.json()["error"] == "budget_exceeded"
    assert grok_emulator.statistics().credits_consumed == 80


async def test_too_many_queued_jobs_is_429_with_retry_after(grok_emulator: Emulator) -> None:
    async with running(grok_emulator, scheduler_config=ONE_IN_FLIGHT, max_queued=3) as served:
        answers = [
            await served.web.post("/videos", json={"prompt": f"job {n} [duration:30]"})
            for n in range(5)
        ]
        statuses = [a.status_code for a in answers]
        ids = [a.json()["id"] for a in answers[:4]]
        for video_id in ids:
            await wait_until_status(served.web, video_id, "completed")
        after = await served.web.post("/videos", json={"prompt": "later"})
    assert statuses == [202, 202, 202, 202, 429]
    assert answers[4].json()["error"] == "too_many_pending"
    assert int(answers[4].headers["retry-after"]) >= 1
    assert after.status_code == 202
    assert "job 4 [duration:30]" not in grok_emulator.statistics().posts_per_prompt  # refused: free


# -- a video service that fails systematically ---------------------------------------------------


async def health_of(served: Served) -> dict[str, Any]:
    answer = await served.web.get("/healthz")
    body: dict[str, Any] = answer.json()
    body["code"] = answer.status_code
    return body


@pytest.mark.grok_emulator(tokens={TOKEN: "pro"})
async def test_while_the_provider_is_down_new_jobs_are_503_and_healthz_says_so(
    grok_emulator: Emulator,
) -> None:
    async with running(grok_emulator, plan="pro") as served:
        ok = await served.web.post("/videos?wait=true&timeout=60", json={"prompt": "before"})
        assert ok.status_code == 200, ok.text
        grok_emulator.outage()  # every task created from now on fails with "Network error"
        for n in range(4):
            await served.web.post("/videos", json={"prompt": f"in the outage {n}"})
        while (await health_of(served))["provider"] == "up":  # noqa: ASYNC110 - over HTTP
            await anyio.sleep(1)
        down = await health_of(served)
        refused = await served.web.post("/videos", json={"prompt": "not paid for"})
        grok_emulator.outage(on=False)
        while (await health_of(served))["provider"] != "up":  # noqa: ASYNC110 - a probe
            await anyio.sleep(1)
        after = await served.web.post("/videos", json={"prompt": "after"})
    assert down["code"] == 200 and down["status"] == "degraded"
    assert "fails systematically" in down["detail"]
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == "upstream_down"
    assert "failing" in refused.json()["detail"]
    assert int(refused.headers["retry-after"]) >= 1
    assert after.status_code == 202
    assert "not paid for" not in grok_emulator.statistics().posts_per_prompt


class HeldLimiter:
    """A limiter whose schedule is far ahead (a shared Redis state an hour on, say): it grants
    nothing until released. Its waiters queue in the limiters' own line."""

    limit = RateLimit(100, 60.0)

    def __init__(self) -> None:
        self.released = anyio.Event()
        self._line: SlotLine[None] = SlotLine(anyio.current_time)
        self._granted = 0

    async def acquire(self, *, priority: Priority = Priority.SUBMIT) -> Permit:
        await self._line.wait_turn(int(priority), lambda _: self.released.wait())
        self._granted += 1
        return Permit(granted_at=anyio.current_time(), serial=self._granted)

    async def observe(self, feedback: RateLimitFeedback) -> None:
        pass

    def give_back(self, permit: Permit) -> None:
        pass

    def statistics(self) -> LimiterStatistics:
        stalled_for = self._line.stalled_for(anyio.current_time())
        return LimiterStatistics(
            self.limit, self._granted, len(self._line), 0.0, 0, 0, None, stalled_for
        )


async def test_a_limiter_that_grants_nothing_while_work_waits_fails_healthz(
    grok_emulator: Emulator,
) -> None:
    limiter = HeldLimiter()
    period = limiter.limit.period
    async with running(grok_emulator, limiter=limiter) as served:
        accepted = await served.web.post("/videos", json={"prompt": "waits for the limiter"})
        await anyio.sleep(2 * period - 1.0)
        waiting = await health_of(served)
        await anyio.sleep(2.0)  # past two periods with no permit granted
        stalled = await health_of(served)
        limiter.released.set()
        await wait_until_status(served.web, accepted.json()["id"], "completed")
        after = await health_of(served)
    assert accepted.status_code == 202
    assert waiting["code"] == 200 and waiting["limiter"] == "ok"
    assert stalled["code"] == 503 and stalled["limiter"] == "stalled"
    assert stalled["error"] == "unavailable"
    assert "grants no permit" in stalled["detail"]
    assert after["code"] == 200 and after["limiter"] == "ok"


async def test_an_api_never_reached_is_named_by_healthz() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Name or service not known", request=request)

    from grok_imagine_async import _http

    upstream = _http.lib.AsyncClient(transport=_http.lib.MockTransport(refuse))
    async with upstream:
        app = load_example().create_app(
            settings=Settings.from_env(api_key=TOKEN), http_client=upstream
        )
        async with client_of(app) as web, app.router.lifespan_context(app):
            with anyio.fail_after(120):  # about a minute: every attempt failed to connect
                # Users keep asking (refused with a 503 while paused, but for the probe).
                while (health := await web.get("/healthz")).status_code == 200:
                    await web.post("/videos", json={"prompt": "a wrong base URL"})
                    await anyio.sleep(5)
            later = await web.post("/videos", json={"prompt": "still wrong"})
    assert health.status_code == 503
    assert "cannot be reached" in health.json()["detail"]
    assert later.status_code == 503
