"""Telemetry of a batch on the emulator: span names, attributes, parent links, and metrics.

One batch holds every case the issue names: a retried POST (HTTP 500 once), 429s (the server's
quota is far below what the client's limiter allows), a job that fails (content policy) and a
job resubmitted after a transient failure. Virtual time; in-memory SDK pipelines.
"""

from __future__ import annotations

from typing import Any

import pytest
from _otel import Pipeline, every_attribute, total
from fakes import RecordingLimiter
from opentelemetry.trace import SpanKind, StatusCode

from grok_imagine_async import AsyncGrokImagine, GenerationRequest, JobResult, JobSpec, RateLimit
from grok_imagine_async.batch import SchedulerConfig
from grok_imagine_async.testing import Emulator, EmulatorConfig

TOKEN = "sk-otel-SECRET-4242"
PROMPTS = {
    "plain": "a lighthouse at dawn [duration:20]",
    "retried": "a fox in snow [fail:500:1] [duration:30]",
    "refused": "a forbidden thing [fail:content]",
    "resubmitted": "a stormy sea [fail:network:1] [duration:25]",
    "late": "a quiet harbour",
}


async def run_batch(
    pipeline: Pipeline, **telemetry_options: Any
) -> tuple[Emulator, list[JobResult]]:
    # The server admits 5 requests per 10 s; the client's limiter lets everything through, so
    # the burst of submissions and polls meets 429s that the sender retries.
    emu = Emulator(EmulatorConfig(tokens={TOKEN: RateLimit(5, 10.0)}, seed=3))
    client = AsyncGrokImagine(
        api_key=TOKEN,
        http_client=emu.client(token=None),
        limiter=RecordingLimiter(),
        telemetry=pipeline.telemetry(**telemetry_options),
    )
    specs = [JobSpec(GenerationRequest(prompt=prompt), key=key) for key, prompt in PROMPTS.items()]
    async with client.generate_many(specs, max_credits=1000) as results:
        return emu, [result async for result in results]


@pytest.mark.anyio
async def test_job_spans_carry_the_job_and_request_spans_hang_under_them() -> None:
    pipeline = Pipeline()
    emu, results = await run_batch(pipeline)
    by_key = {r.key: r for r in results}
    assert by_key["refused"].ok is False and by_key["resubmitted"].attempts == 2
    jobs = {s.attributes["grok_imagine.job.key"]: s for s in pipeline.spans("generate_video")}
    assert set(jobs) == set(PROMPTS)
    for key, span in jobs.items():
        attributes = span.attributes or {}
        assert span.kind is SpanKind.INTERNAL
        assert attributes["gen_ai.operation.name"] == "generate_video"
        assert attributes["gen_ai.provider.name"] == "grok_imagine"
        assert attributes["gen_ai.response.id"] == by_key[key].task_id
        assert attributes["grok_imagine.request.mode"] == "normal"
        assert attributes["grok_imagine.request.ratio"] == "1:1"
        assert attributes["grok_imagine.job.credits"] == by_key[key].credits
        assert span.parent is None
    refused = jobs["refused"]
    assert refused.status.status_code is StatusCode.ERROR
    assert refused.attributes["grok_imagine.job.failure_class"] == "content_policy"
    assert refused.attributes["error.type"] == "content_policy"
    assert jobs["plain"].status.status_code is StatusCode.UNSET
    assert "grok_imagine.job.failure_class" not in jobs["plain"].attributes

    # Events: each submission and poll; the resubmission between the two submissions.
    lifecycle = [e.name for e in jobs["resubmitted"].events if e.name != "poll"]
    assert lifecycle == ["submit", "resubmit", "submit"]
    for key, span in jobs.items():
        polls = [e for e in span.events if e.name == "poll"]
        answered = [p for p in polls if "error.type" not in p.attributes]
        # Every poll the job made is an event: answered, or failed (a failed send is retried,
        # and a call whose retries ran out, e.g. on 429s, ends failed).
        assert len(answered) <= by_key[key].polls <= len(polls)

    # Every request span is a child of its job's span, in its trace.
    requests = [s for s in pipeline.spans() if s.name != "generate_video"]
    assert len(requests) == emu.statistics().requests_total
    by_span_id = {s.context.span_id: s for s in jobs.values()}
    for span in requests:
        assert span.kind is SpanKind.CLIENT
        assert span.name in ("POST /v1/generate", "GET /v1/status")
        assert span.parent is not None and span.parent.span_id in by_span_id
        assert span.context.trace_id == by_span_id[span.parent.span_id].context.trace_id
        assert span.attributes["server.address"] == "emulator.local"
        assert span.attributes["server.port"] == 80
        assert span.attributes["url.full"].startswith("http://emulator.local/v1/")
    children = {
        key: [s for s in requests if s.parent.span_id == j.context.span_id]
        for key, j in jobs.items()
    }
    assert [s.name for s in children["resubmitted"]].count("POST /v1/generate") >= 2


@pytest.mark.anyio
async def test_retries_and_429s_follow_the_http_conventions() -> None:
    pipeline = Pipeline()
    emu, _ = await run_batch(pipeline)
    requests = [s for s in pipeline.spans() if s.name != "generate_video"]
    failed_500 = [s for s in requests if s.attributes.get("http.response.status_code") == 500]
    assert len(failed_500) == 1
    assert failed_500[0].attributes["error.type"] == "500"
    assert failed_500[0].status.status_code is StatusCode.ERROR
    resent = [
        s
        for s in requests
        if s.parent.span_id == failed_500[0].parent.span_id
        and s.attributes.get("http.request.resend_count", 0) >= 1
    ]
    assert resent, "the retry of the 500 carries http.request.resend_count"
    refused = [s for s in requests if s.attributes.get("http.response.status_code") == 429]
    assert len(refused) == emu.statistics().rate_limited > 0
    assert all(s.attributes["error.type"] == "429" for s in refused)
    # A resent request follows as many failed sends of the same call, under the same job.
    resends = [s for s in requests if "http.request.resend_count" in s.attributes]
    # The 500 was retried (above), and so was a 429 unless its call had used up its retries or
    # the server's hint was past the cap: every resend must follow its own failed sends.
    assert len(resends) >= 1
    for span in resends:
        count = span.attributes["http.request.resend_count"]
        assert count >= 1
        earlier_failures = [
            s
            for s in requests
            if s.parent.span_id == span.parent.span_id
            and s.name == span.name
            and s.end_time <= span.start_time
            and s.status.status_code is StatusCode.ERROR
        ]
        assert len(earlier_failures) >= count


@pytest.mark.anyio
async def test_metrics_count_requests_429s_credits_and_jobs() -> None:
    pipeline = Pipeline()
    emu, results = await run_batch(pipeline)
    stats = emu.statistics()
    metrics = pipeline.metrics()

    duration = metrics["http.client.request.duration"]
    assert total(duration) == stats.requests_total
    assert (
        total(duration, {"http.request.method": "POST"})
        == stats.requests_by_endpoint["POST /v1/generate"]
    )
    assert total(metrics["grok_imagine.client.requests"], {"http.response.status_code": 500}) == 1
    assert total(metrics["grok_imagine.client.rate_limited"]) == stats.rate_limited > 0
    assert total(metrics["grok_imagine.credits.consumed"]) == stats.credits_consumed
    finished = metrics["grok_imagine.jobs.finished"]
    assert total(finished, {"grok_imagine.job.outcome": "completed"}) == 4
    assert total(finished, {"grok_imagine.job.failure_class": "content_policy"}) == 1
    # Every job seen finishing by a poll has a generation time and a detection latency.
    assert total(metrics["grok_imagine.generation.duration"]) == len(results)
    assert total(metrics["grok_imagine.generation.detection_latency"]) == len(results)
    for _, (count, seconds) in metrics["grok_imagine.generation.duration"]:
        assert seconds >= 20.0 * count  # no generation here takes less than 20 s

    jobs = {a["grok_imagine.job.state"]: v for a, v in metrics["grok_imagine.jobs"]}
    assert jobs == {"queued": 0, "submitting": 0, "running": 0}
    assert total(metrics["grok_imagine.scheduler.credits"]) == stats.credits_consumed
    assert total(metrics["grok_imagine.scheduler.credit_budget"]) == 1000
    assert total(metrics["grok_imagine.rate_limit.limit"]) == pytest.approx(1_000_000)
    assert 0 <= total(metrics["grok_imagine.rate_limit.remaining"]) <= 5


@pytest.mark.anyio
async def test_no_attribute_holds_the_token_or_by_default_the_prompt() -> None:
    pipeline = Pipeline()
    await run_batch(pipeline)
    values = [str(v) for v in every_attribute(pipeline.spans())]
    assert values
    assert not [v for v in values if TOKEN in v]
    assert not [v for v in values for p in PROMPTS.values() if p in v or p.split(" [")[0] in v]
    for points in pipeline.metrics().values():
        for attributes, _ in points:
            assert not [v for v in map(str, attributes.values()) if TOKEN in v]


@pytest.mark.anyio
async def test_prompts_are_recorded_when_asked() -> None:
    pipeline = Pipeline()
    await run_batch(pipeline, record_prompts=True)
    prompts = {
        s.attributes["grok_imagine.job.key"]: s.attributes["grok_imagine.request.prompt"]
        for s in pipeline.spans("generate_video")
    }
    assert prompts == PROMPTS


@pytest.mark.anyio
async def test_an_interrupted_batch_can_still_export_its_unfinished_jobs() -> None:
    pipeline = Pipeline()
    telemetry = pipeline.telemetry()
    emu = Emulator(EmulatorConfig(tokens={TOKEN: "pro"}, seed=3))
    client = AsyncGrokImagine(
        api_key=TOKEN, http_client=emu.client(token=None), telemetry=telemetry
    )
    prompts = ["a short one [duration:5]", "a long one [duration:600]", "another [duration:900]"]
    async with client.generate_many(prompts) as results:
        first = await results.__anext__()  # then leave: the two long jobs are cancelled
    assert first.ok
    assert len(pipeline.spans("generate_video")) == 1  # open spans are not exported
    assert telemetry.end_unfinished() == 2
    spans = pipeline.spans("generate_video")
    outcomes = sorted(s.attributes["grok_imagine.job.outcome"] for s in spans)
    assert outcomes == ["completed", "unfinished", "unfinished"]
    assert telemetry.end_unfinished() == 0


@pytest.mark.anyio
async def test_gauges_show_a_running_batch_its_jobs_credits_and_quota() -> None:
    import anyio

    from grok_imagine_async import JobScheduler

    pipeline = Pipeline()
    emu = Emulator(EmulatorConfig(tokens={TOKEN: "free"}, seed=3))
    client = AsyncGrokImagine(
        api_key=TOKEN,
        http_client=emu.client(token=None),
        plan="free",
        telemetry=pipeline.telemetry(),
    )
    async with JobScheduler(client, SchedulerConfig(max_in_flight=3), max_credits=400) as scheduler:
        for n in range(5):
            await scheduler.submit(f"a long take {n} [duration:600]")
        await anyio.sleep(30)  # three submitted and being polled, two waiting for a slot
        metrics = pipeline.metrics()
        jobs = {a["grok_imagine.job.state"]: v for a, v in metrics["grok_imagine.jobs"]}
        assert jobs == {"queued": 2, "submitting": 0, "running": 3}
        assert total(metrics["grok_imagine.scheduler.credits"]) == 120
        assert total(metrics["grok_imagine.scheduler.credit_budget"]) == 400
        assert total(metrics["grok_imagine.rate_limit.limit"]) == pytest.approx(100)
        rate = total(metrics["grok_imagine.rate_limit.request_rate"])
        assert rate > 0
        assert total(metrics["grok_imagine.rate_limit.usage"]) == pytest.approx(rate / 100)
        # The server's count, from the latest answer (a request may be on its way right now).
        remaining = total(metrics["grok_imagine.rate_limit.remaining"])
        assert 100 - emu.statistics().requests_total <= remaining < 100
        scheduler.cancel()


@pytest.mark.anyio
async def test_an_outage_pause_probe_and_resume_are_counted() -> None:
    from grok_imagine_async.testing import FaultConfig, Outage

    pipeline = Pipeline()
    outage = Outage(start=0.0, end=20.0)
    emu = Emulator(
        EmulatorConfig(tokens={TOKEN: "pro"}, seed=3, faults=FaultConfig(outages=(outage,)))
    )
    client = AsyncGrokImagine(
        api_key=TOKEN,
        http_client=emu.client(token=None),
        plan="pro",
        telemetry=pipeline.telemetry(),
    )
    async with client, client.generate_many([f"clip {n}" for n in range(30)]) as results:
        done = [result async for result in results]
    assert all(result.ok for result in done)
    events = pipeline.metrics()["grok_imagine.scheduler.breaker.events"]
    paused = {"grok_imagine.breaker.transition": "paused", "grok_imagine.breaker.reason": "outage"}
    assert total(events, paused) == 1
    assert total(events, {"grok_imagine.breaker.transition": "probing"}) >= 1
    assert total(events, {"grok_imagine.breaker.transition": "resumed"}) == 1
    assert not pipeline.spans("generate_video") or all(
        span.attributes is not None and "grok_imagine.breaker.transition" not in span.attributes
        for span in pipeline.spans("generate_video")
    )  # no job span is opened for the batch's own events
