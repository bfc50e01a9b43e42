"""The FastAPI integration's errors over HTTP: documented in OpenAPI, one JSON body, a body cap.

Clients generated from an app's schema can handle only the statuses it documents: every
status the example app answers is driven here and looked up in its schema.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field
from test_fastapi import EMULATOR, ONE_IN_FLIGHT, Served, running, wait_until_status

from grok_imagine_async import (
    AmbiguousSubmitError,
    APITimeoutError,
    AuthenticationError,
    BudgetExceededError,
    InvalidRequestError,
    RateLimitError,
    SchedulerClosedError,
    ServerError,
)
from grok_imagine_async.fastapi import (
    DEFAULT_MAX_BODY_BYTES,
    BacklogFullError,
    BodyLimitMiddleware,
    ErrorBody,
    error_responses,
    http_error_for,
    install_error_handlers,
)
from grok_imagine_async.testing import Emulator, EmulatorConfig

pytestmark = [pytest.mark.anyio, EMULATOR]


_ROUTES = [  # (template, pattern) of the example app's paths
    ("/videos/{video_id}/events", re.compile(r"^/videos/[^/]+/events$")),
    ("/videos/{video_id}", re.compile(r"^/videos/[^/]+$")),
    ("/videos", re.compile(r"^/videos$")),
    ("/healthz", re.compile(r"^/healthz$")),
]


class Recorder:
    """Every (method, route, status) the example app answered."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str, int]] = set()

    async def __call__(self, response: httpx.Response) -> None:
        request = response.request
        route = next(t for t, pattern in _ROUTES if pattern.match(request.url.path))
        self.seen.add((request.method.lower(), route, response.status_code))


async def recorded(served: Served, recorder: Recorder) -> Served:
    served.web.event_hooks["response"].append(recorder)
    return served


def documented(app: FastAPI) -> dict[tuple[str, str], set[int]]:
    schema = app.openapi()
    return {
        (method, path): {int(status) for status in operation["responses"]}
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }


async def test_every_status_the_example_app_answers_is_documented(grok_emulator: Emulator) -> None:
    recorder = Recorder()
    async with running(
        grok_emulator, max_credits=200, scheduler_config=ONE_IN_FLIGHT, max_queued=1
    ) as served:
        web = (await recorded(served, recorder)).web
        ok = await web.post("/videos", json={"prompt": "a kite [duration:5]"})  # 202
        await web.get(f"/videos/{ok.json()['id']}")  # 200
        async with web.stream("GET", f"/videos/{ok.json()['id']}/events") as events:
            await events.aread()  # 200, until the job is done
        await web.post("/videos?wait=true", json={"prompt": "a quick one [duration:2]"})  # 200
        malformed = {"content": b"{prompt", "headers": {"content-type": "application/json"}}
        await web.post("/videos", **malformed)  # 400
        await web.post("/videos", json={"prompt": "x" * (DEFAULT_MAX_BODY_BYTES + 1)})  # 413
        await web.post("/videos", json={"prompt": ""})  # 422
        await web.post("/videos?wait=true&timeout=60", json={"prompt": "a [fail:build]"})  # 502
        await web.get("/videos/no-such-job")  # 404
        await web.get("/videos/no-such-job/events")  # 404
        await web.get("/healthz")  # 200
        first = await web.post("/videos", json={"prompt": "slow 1 [duration:60]"})
        await wait_until_status(web, first.json()["id"], "running")
        second = await web.post("/videos", json={"prompt": "slow 2 [duration:60]"})  # waits
        await web.post("/videos", json={"prompt": "one too many"})  # 429
        await wait_until_status(web, second.json()["id"], "completed")
        await web.post("/videos", json={"prompt": "past the budget"})  # 402
    # A second emulator, where our token is unknown: 401 upstream.
    revoked = Emulator(EmulatorConfig(seed=7, tokens={"another-token": "free"}))
    async with running(revoked) as served:
        web = (await recorded(served, recorder)).web
        await web.post("/videos", json={"prompt": "a kite"})  # 202, then the scheduler stops
        for _ in range(60):  # the scheduler stops at its first 401
            if (await web.get("/healthz")).status_code == 503:
                break
            await anyio.sleep(1)
        await web.post("/videos", json={"prompt": "a kite"})  # 503
    statuses = {status for _, _, status in recorder.seen}
    assert statuses >= {200, 202, 400, 402, 404, 413, 422, 429, 502, 503}
    schema = documented(served.app)
    missing = {seen for seen in recorder.seen if seen[2] not in schema[seen[:2]]}
    assert missing == set()


def test_every_answer_of_a_job_s_failure_is_documented_where_jobs_start() -> None:
    # What no emulator scenario above reaches (an upstream timeout), from the mapping itself.
    raised = [
        InvalidRequestError("bad"),
        BudgetExceededError(max_credits=40, committed_credits=40),
        BacklogFullError(queued=3, retry_after=2.0),
        SchedulerClosedError("stopped"),
        RateLimitError("busy", status_code=429),
        APITimeoutError("slow"),
        AmbiguousSubmitError("lost"),
        AuthenticationError("no", status_code=401),
        ServerError("down", status_code=500),
    ]
    documented_here = set(error_responses(400, 402, 413, 422, 429, 502, 503, 504))
    assert {http_error_for(exc).status_code for exc in raised} <= documented_here


def test_error_responses_name_the_model_and_retry_after() -> None:
    everything = error_responses()
    assert sorted(everything) == [400, 402, 404, 413, 422, 429, 502, 503, 504]
    assert all(answer["model"] is ErrorBody for answer in everything.values())
    assert "Retry-After" in everything[429]["headers"]


# -- a small app: the handlers and the cap on their own -------------------------------------------


JSON = {"content-type": "application/json"}


class Order(BaseModel):
    prompt: str = Field(max_length=50)
    count: int = 1
    sizes: list[int] = []


def small_app(**limit: Any) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, **limit)

    @app.post("/orders", responses=error_responses(400, 413, 422))
    async def order(body: Order) -> dict[str, int]:
        return {"length": len(body.prompt)}

    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://app.test")


async def test_a_streamed_body_over_the_cap_is_413_in_our_format() -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        nonlocal sent
        yield b'{"prompt": "'
        for _ in range(100):
            sent += 1
            yield b"x" * 1024

    async with client(small_app(max_bytes=10_000)) as web:
        answer = await web.post("/orders", content=chunks())
        fine = await web.post("/orders", json={"prompt": "short"})
    assert answer.status_code == 413
    assert answer.json() == {
        "detail": "the request body is larger than 10000 bytes",
        "error": "body_too_large",
    }
    assert sent < 100  # not read to its end
    assert fine.status_code == 200


async def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    async with client(small_app(max_bytes=100)) as web:
        answer = await web.post("/orders", content=b"x" * 101, headers=JSON)
    assert answer.status_code == 413 and answer.json()["error"] == "body_too_large"


@pytest.mark.parametrize(
    "body",
    [b'{"prompt": ', b"{prompt}", b'{"prompt": "caf\xe9"}'],  # the last: not UTF-8
)
async def test_a_body_that_is_not_json_is_400_in_our_format(body: bytes) -> None:
    async with client(small_app()) as web:
        answer = await web.post(
            "/orders", content=body, headers={"content-type": "application/json"}
        )
    assert answer.status_code == 400, answer.text
    assert answer.json() == {
        "detail": "the request body is not valid JSON",
        "error": "malformed_body",
    }


async def test_422_names_the_fields_and_never_echoes_their_input() -> None:
    prompt = "SECRET-INPUT-" + "y" * 5000
    async with client(small_app()) as web:
        answer = await web.post("/orders", json={"prompt": prompt, "count": "many-SECRET"})
    assert answer.status_code == 422
    body = answer.json()
    assert "SECRET" not in answer.text
    assert body["error"] == "invalid_request"
    assert [f["field"] for f in body["fields"]] == ["body.prompt", "body.count"]
    assert "body.prompt" in body["detail"] and "body.count" in body["detail"]
    assert len(answer.content) < 1000
    ErrorBody.model_validate(body)


async def test_a_body_of_many_bad_fields_gets_a_bounded_answer() -> None:
    async with client(small_app()) as web:
        answer = await web.post("/orders", json={"prompt": "a", "sizes": ["big"] * 2000})
        keys = await web.post("/orders", json={"prompt": "a", "k" * 5000: 1})
    assert answer.status_code == 422
    assert len(answer.content) < 5000
    assert "and 1980 more" in answer.json()["detail"]
    assert keys.status_code == 200  # extra keys are ignored by this model: nothing echoed
    assert "kkkk" not in keys.text


async def test_http_exceptions_answer_in_our_format() -> None:
    app = small_app()
    async with client(app) as web:
        missing = await web.get("/nowhere")
        wrong = await web.delete("/orders")
    assert missing.json() == {"detail": "Not Found", "error": "not_found"}
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"
    assert wrong.headers["allow"] == "POST"
