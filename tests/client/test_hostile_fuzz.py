"""Property-based fuzzing of both endpoints: whatever the server answers, only our errors escape
and no call outlives its bound (in virtual time)."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import anyio
from fakes import TOKEN, examples
from hostile import ChunkStream, make_client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grok_imagine_async import GrokImagineError, Limits, RetryPolicy
from grok_imagine_async._http import lib as httpx  # httpx2 if installed, else httpx
from grok_imagine_async.testing import VirtualTimeEventLoop

LIMITS = Limits(max_answer_bytes=64 * 1024, max_request_time=30.0)
RETRY = RetryPolicy(attempts=2, wait_initial=0.5, wait_max=4.0)
PERIOD = 60.0  # the free plan's window: the longest wait hint obeyed

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["inf", "-inf", "nan", "1e400", "9" * 400, TOKEN, "completed", "failed"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "task_id": json_values,
        "status": json_values,
        "consumed_credits": json_values,
        "created_at": json_values,
        "error_message": json_values,
        "request": json_values,
        "response": json_values
        | st.lists(st.sampled_from(["https://cdn.test/v.mp4", "http://a\x00b", "ftp://x", ""])),
    },
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "code": json_values,
        "message": json_values,
        "error": json_values,
        "data": fields | json_values,
    },
)


def _encode(value: Any) -> bytes:
    try:
        return json.dumps(value, allow_nan=True).encode()
    except (ValueError, TypeError, OverflowError):
        return b"{}"


bodies = st.one_of(
    envelopes.map(_encode),
    st.binary(max_size=200),
    st.integers(min_value=1, max_value=5000).map(lambda n: b"[" * n + b"]" * n),
)
header_values = st.one_of(
    st.sampled_from(
        ["0", "5", "-1", "999999", "1e20", "nan", "inf", "Fri, 31 Dec 9999 23:59:59 GMT", ""]
    ),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
)
headers = st.dictionaries(
    st.sampled_from(["retry-after", "x-ratelimit-reset", "x-ratelimit-remaining", "content-type"]),
    header_values,
    max_size=4,
)
encodings = st.sampled_from([None, "gzip", "deflate", "br", "gzip, gzip", "identity", "x-unknown"])
statuses = st.sampled_from([200, 201, 204, 301, 400, 401, 404, 429, 500, 502, 503, 599])


@st.composite
def answers(draw: st.DrawFn) -> dict[str, Any]:
    body = draw(bodies)
    encoding = draw(encodings)
    if encoding == "gzip" and draw(st.booleans()):
        body = gzip.compress(body)
    elif encoding == "deflate" and draw(st.booleans()):
        body = zlib.compress(body)
    return {
        "status": draw(statuses),
        "headers": {**draw(headers), **({"content-encoding": encoding} if encoding else {})},
        "body": body,
        "trickle": draw(st.sampled_from([0.0, 0.0, 0.0, 2.0])),
        "transport_error": draw(st.sampled_from([None, None, None, "read", "connect", "timeout"])),
    }


def _handler(spec: dict[str, Any]) -> Any:
    def handle(request: httpx.Request) -> httpx.Response:
        if spec["transport_error"] == "read":
            raise httpx.ReadError("reset", request=request)
        if spec["transport_error"] == "connect":
            raise httpx.ConnectError("refused", request=request)
        if spec["transport_error"] == "timeout":
            raise httpx.ReadTimeout("slow", request=request)
        if spec["trickle"]:
            stream = ChunkStream(spec["body"][:1] or b" ", pause=spec["trickle"])
        else:
            stream = ChunkStream(spec["body"], count=1)
        return httpx.Response(spec["status"], headers=spec["headers"], stream=stream)

    return handle


def _bound() -> float:
    """The longest any call may take: each try bounded, each pause at most one window."""
    tries = RETRY.attempts + 1
    return tries * LIMITS.max_request_time + RETRY.attempts * max(PERIOD, RETRY.wait_max) + 1


def _run(spec: dict[str, Any], call: str) -> None:
    async def main() -> None:
        client = make_client(_handler(spec), retry=RETRY, limits=LIMITS)
        start = anyio.current_time()
        try:
            with anyio.fail_after(10 * _bound()):
                if call == "get":
                    result: object = await client.get_task("task_1")
                else:
                    result = await client.generate("a cat")
            assert TOKEN not in repr(result)
        except GrokImagineError as exc:
            text = f"{exc!s} {exc!r} {vars(exc)!r}"
            assert TOKEN not in text, text
        elapsed = anyio.current_time() - start
        assert elapsed <= _bound(), f"the call took {elapsed:.1f}s"

    anyio.run(main, backend="asyncio", backend_options={"loop_factory": VirtualTimeEventLoop})


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers())
def test_any_status_answer_ends_in_our_errors_within_the_bound(spec: dict[str, Any]) -> None:
    _run(spec, "get")


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers())
def test_any_generate_answer_ends_in_our_errors_within_the_bound(spec: dict[str, Any]) -> None:
    _run(spec, "post")


locations = st.one_of(
    st.sampled_from(
        [
            "/v2.mp4",
            "https://cdn.test/v3.mp4",
            "http://cdn.test/v.mp4",
            "http://127.0.0.1/v",
            "ftp://x/y",
            "//other.test/v",
            "",
            "http://[::1",
            "javascript:x",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30),
)


@st.composite
def video_answers(draw: st.DrawFn) -> list[dict[str, Any]]:
    spec = []
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        answer = draw(answers())
        if draw(st.booleans()):
            answer["status"] = draw(st.sampled_from([301, 302, 303, 307, 308]))
            answer["headers"]["location"] = draw(locations)
        spec.append(answer)
    return spec


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(video_answers())
def test_any_video_answer_ends_in_our_errors_and_leaves_no_partial_file(
    spec: list[dict[str, Any]],
) -> None:
    import tempfile
    from pathlib import Path

    from grok_imagine_async import Task, TaskStatus

    answers_left = list(spec)

    def handle(request: httpx.Request) -> httpx.Response:
        current = answers_left.pop(0) if len(answers_left) > 1 else answers_left[0]
        return _handler(current)(request)

    async def main(folder: Path) -> None:
        limits = Limits(max_video_bytes=4096, max_request_time=30.0)
        client = make_client(handle, retry=RETRY, limits=limits)
        task = Task(
            task_id="t1",
            status=TaskStatus.COMPLETED,
            raw_status="completed",
            videos=("https://cdn.test/v.mp4",),
        )
        try:
            with anyio.fail_after(10_000):
                await client.download(task, folder)
        except GrokImagineError:
            pass
        assert not [p for p in folder.iterdir() if p.name.endswith(".part")]

    with tempfile.TemporaryDirectory() as folder:
        anyio.run(
            main,
            Path(folder),
            backend="asyncio",
            backend_options={"loop_factory": VirtualTimeEventLoop},
        )
