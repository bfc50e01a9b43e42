"""Telemetry of calls made without a scheduler, of failures without an answer, and when off."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from _otel import Pipeline
from fakes import TOKEN, Script, ok, task_data
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import SpanKind

from grok_imagine_async import AmbiguousSubmitError, AsyncGrokImagine, Limits, RetryPolicy
from grok_imagine_async._http import lib as httpx  # httpx2 if installed, else httpx
from grok_imagine_async.testing import Emulator, EmulatorConfig

FAST_RETRY = RetryPolicy(attempts=2, wait_initial=0.01, wait_jitter=0.0)


def scripted(script: Script, **options: Any) -> AsyncGrokImagine:
    http = httpx.AsyncClient(transport=httpx.MockTransport(script), base_url="https://api.test")
    return AsyncGrokImagine(api_key=TOKEN, http_client=http, retry=FAST_RETRY, **options)


@pytest.mark.anyio
async def test_calls_outside_a_scheduler_are_children_of_the_callers_span() -> None:
    pipeline = Pipeline()
    emu = Emulator(EmulatorConfig(tokens={TOKEN: "pro"}, seed=1))
    client = AsyncGrokImagine(
        api_key=TOKEN, http_client=emu.client(token=None), telemetry=pipeline.telemetry()
    )
    tracer = pipeline.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("handler") as handler:
        task = await client.generate_and_wait("a red kite [duration:5]")
    spans = pipeline.spans()
    requests = [s for s in spans if s.name != "handler"]
    assert requests[0].name == "POST /v1/generate"
    assert {s.name for s in requests[1:]} == {"GET /v1/status"}
    assert all(s.parent is not None for s in requests)
    assert {s.parent.span_id for s in requests} == {handler.get_span_context().span_id}
    assert requests[-1].attributes["grok_imagine.task.id"] == task.task_id
    assert not pipeline.spans("generate_video")
    metrics = pipeline.metrics()
    assert sum(v for _, v in metrics["grok_imagine.credits.consumed"]) == 40
    assert "grok_imagine.jobs.finished" not in metrics


@pytest.mark.anyio
async def test_a_request_without_an_answer_is_named_by_its_error_and_then_resent() -> None:
    pipeline = Pipeline()
    script = Script(httpx.ConnectError("refused"), ok(task_data(status="processing")))
    client = scripted(script, telemetry=pipeline.telemetry())
    await client.get_task("task_1")
    first, second = pipeline.spans()
    assert first.kind is SpanKind.CLIENT
    assert first.attributes["error.type"] == "APIConnectionError"
    assert "http.response.status_code" not in first.attributes
    assert "http.request.resend_count" not in first.attributes
    assert second.attributes["http.request.resend_count"] == 1
    assert second.attributes["http.response.status_code"] == 200
    assert "error.type" not in second.attributes
    assert second.attributes["server.address"] == "api.test"
    assert second.attributes["server.port"] == 443
    assert second.attributes["url.full"] == "https://api.test/v1/status"
    assert second.attributes["grok_imagine.task.id"] == "task_1"
    points = pipeline.metrics()["http.client.request.duration"]
    assert sorted(a.get("error.type", "ok") for a, _ in points) == ["APIConnectionError", "ok"]


@pytest.mark.anyio
async def test_a_body_error_is_typed_by_the_bodys_code() -> None:
    pipeline = Pipeline()
    body_error = httpx.Response(200, json={"code": 500, "message": "busy", "error": "X"})
    script = Script(body_error, body_error, body_error)
    client = scripted(script, telemetry=pipeline.telemetry())
    with pytest.raises(Exception, match="busy"):
        await client.get_task("task_1")
    spans = pipeline.spans()
    assert [s.attributes["error.type"] for s in spans] == ["500", "500", "500"]
    assert [s.attributes["http.response.status_code"] for s in spans] == [200, 200, 200]
    assert [s.attributes.get("http.request.resend_count") for s in spans] == [None, 1, 2]


@pytest.mark.anyio
async def test_with_telemetry_off_nothing_is_recorded() -> None:
    pipeline = Pipeline()
    emu = Emulator(EmulatorConfig(tokens={TOKEN: "pro"}, seed=1))
    off = AsyncGrokImagine(api_key=TOKEN, http_client=emu.client(token=None), telemetry=False)
    on = AsyncGrokImagine(
        api_key=TOKEN, http_client=emu.client(token=None), telemetry=pipeline.telemetry()
    )
    assert off.telemetry is None
    assert AsyncGrokImagine(api_key=TOKEN).telemetry is None
    async with off.generate_many(["a calm lake [duration:5]"]) as results:
        assert [r.ok async for r in results] == [True]
    assert pipeline.spans() == []
    assert pipeline.metrics().get("grok_imagine.client.requests") is None
    # The same pipeline does record a client that has it, so the silence above is meaningful.
    async with on.generate_many(["a calm lake [duration:5]"]) as results:
        assert [r.ok async for r in results] == [True]
    assert len(pipeline.spans("generate_video")) == 1


class _Broken(SpanProcessor):
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise RuntimeError("exporter bug")


@pytest.mark.anyio
async def test_a_failing_pipeline_never_breaks_a_request(caplog: pytest.LogCaptureFixture) -> None:
    pipeline = Pipeline()
    pipeline.tracer_provider.add_span_processor(_Broken())
    script = Script(ok(task_data(status="completed")), ok(task_data(status="completed")))
    client = scripted(script, telemetry=pipeline.telemetry())
    with caplog.at_level(logging.ERROR, logger="grok_imagine_async.otel"):
        assert (await client.get_task("task_1")).succeeded
        assert (await client.get_task("task_1")).succeeded
    failures = [r for r in caplog.records if r.name == "grok_imagine_async.otel"]
    assert len(failures) == 1  # logged once, not per request


def test_telemetry_true_uses_the_global_providers() -> None:
    from grok_imagine_async.otel import Telemetry

    client = AsyncGrokImagine(api_key=TOKEN, telemetry=True)
    assert isinstance(client.telemetry, Telemetry)
    mine = Pipeline().telemetry()
    assert AsyncGrokImagine(api_key=TOKEN, telemetry=mine).telemetry is mine


@pytest.mark.anyio
async def test_a_span_lasts_as_long_as_its_request_and_the_histogram_agrees() -> None:
    pipeline = Pipeline()
    emu = Emulator(EmulatorConfig(tokens={TOKEN: "pro"}, seed=1))
    client = AsyncGrokImagine(
        api_key=TOKEN, http_client=emu.client(token=None), telemetry=pipeline.telemetry()
    )
    await client.generate("a slow answer [slow:3]")  # answered 3 s (virtual) after sending
    (span,) = pipeline.spans()
    assert span.end_time is not None and span.start_time is not None
    assert (span.end_time - span.start_time) / 1e9 == pytest.approx(3.0, abs=0.05)
    ((_, (count, seconds)),) = pipeline.metrics()["http.client.request.duration"]
    assert count == 1
    assert seconds == pytest.approx(3.0, abs=0.05)


@pytest.mark.anyio
async def test_a_lost_answer_is_a_timeout_span_lasting_max_request_time() -> None:
    # A POST's answer is read for the whole max_request_time (not the per-read timeout).
    pipeline = Pipeline()
    emu = Emulator(EmulatorConfig(tokens={TOKEN: "pro"}, seed=1))
    http = emu.client(token=None)
    client = AsyncGrokImagine(
        api_key=TOKEN,
        http_client=http,
        telemetry=pipeline.telemetry(),
        limits=Limits(max_request_time=2.0),
    )
    with pytest.raises(AmbiguousSubmitError):
        await client.generate("an answer too slow [slow:9]")
    (span,) = pipeline.spans()  # not resent: a POST whose answer was lost may have been paid
    assert span.attributes["error.type"] == "APITimeoutError"
    assert "http.response.status_code" not in span.attributes
    assert (span.end_time - span.start_time) / 1e9 == pytest.approx(2.0, abs=0.05)
    assert "grok_imagine.credits.consumed" not in pipeline.metrics()
