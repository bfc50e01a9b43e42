"""A hostile server, one test per defect of issue #13: every bad answer ends in our own errors.

Wait-hint and duration bounds run in virtual time; memory bounds are measured with tracemalloc.
"""

from __future__ import annotations

import logging
import tracemalloc
from typing import Any

import anyio
import pytest
from fakes import TOKEN
from hostile import ChunkStream, answer, deep_json, exception_chain, gzip_bomb, make_client

from grok_imagine_async import (
    AmbiguousSubmitError,
    APIResponseValidationError,
    APIStatusError,
    ConfigurationError,
    GrokImagineError,
    InvalidRequestError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    Task,
    TaskStatus,
)
from grok_imagine_async._http import lib as httpx  # httpx2 if installed, else httpx
from grok_imagine_async._redact import MAX_DEPTH, Redactor

TASK = {"task_id": "t1", "status": "completed", "response": ["https://cdn.test/v.mp4"]}


# -- 1. one malformed field must not kill the batch -----------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("code", ["inf", "1e400", "9" * 400, "-inf", "nan"])
async def test_unreadable_body_code_is_a_validation_error(code: str) -> None:
    client = make_client(lambda request: answer(TASK, code=code))
    with pytest.raises(APIResponseValidationError):
        await client.get_task("t1")
    with pytest.raises(AmbiguousSubmitError):  # a 200 to a POST: the task may exist
        await client.generate("a cat")


@pytest.mark.anyio
@pytest.mark.parametrize("credits", ["inf", "1e400", "9" * 400, float("1e300")])
async def test_unreadable_credits_become_none(credits: Any) -> None:
    client = make_client(lambda request: answer({**TASK, "consumed_credits": credits}))
    task = await client.get_task("t1")
    assert task.consumed_credits is None


@pytest.mark.anyio
async def test_json_nested_100000_deep_is_a_validation_error() -> None:
    client = make_client(lambda request: httpx.Response(200, content=deep_json(100_000)))
    with pytest.raises(APIResponseValidationError):
        await client.get_task("t1")


@pytest.mark.anyio
async def test_bad_content_encoding_is_a_validation_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"not gzip at all", headers={"content-encoding": "gzip"})

    with pytest.raises(APIResponseValidationError):
        await make_client(handler).get_task("t1")


@pytest.mark.anyio
async def test_result_url_holding_a_nul_is_a_validation_error() -> None:
    data = {**TASK, "response": ["https://cdn.test/a\x00b.mp4"]}
    with pytest.raises(APIResponseValidationError):
        await make_client(lambda request: answer(data)).get_task("t1")


def video_server(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b"video of " + request.url.path.encode())


def done(*urls: str, task_id: str = "t1") -> Task:
    return Task(task_id=task_id, status=TaskStatus.COMPLETED, raw_status="completed", videos=urls)


@pytest.mark.anyio
async def test_folder_at_the_target_name_is_a_typed_error(tmp_path: Any) -> None:
    (tmp_path / "job.mp4").mkdir()
    with pytest.raises(GrokImagineError):
        await make_client(video_server).download(
            done("https://cdn.test/v.mp4"), tmp_path, stem="job"
        )


@pytest.mark.anyio
async def test_symlink_at_the_target_name_is_not_followed(tmp_path: Any) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / "job.mp4").symlink_to(victim)
    with pytest.raises(GrokImagineError):
        await make_client(video_server).download(done("https://cdn.test/v.mp4"), out, stem="job")
    assert victim.read_text() == "keep me"


# -- 2. a server's wait hint is capped -------------------------------------------------------


HUGE_RETRY_AFTER = ["999999", "1e20", "Fri, 31 Dec 9999 23:59:59 GMT"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "headers"),
    [(s, {"retry-after": v}) for s in (429, 503) for v in HUGE_RETRY_AFTER]
    + [(429, {"x-ratelimit-reset": "1e20", "x-ratelimit-remaining": "0"})],
)
async def test_a_huge_wait_hint_ends_the_call_with_retry_after(
    status: int, headers: dict[str, str]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status, json={"code": status, "message": "slow down"}, headers=headers
        )

    client = make_client(handler)
    start = anyio.current_time()
    with pytest.raises(RateLimitError if status == 429 else ServerError) as caught:
        await client.get_task("t1")
    assert anyio.current_time() - start < client.limiter.limit.period
    assert caught.value.retry_after is not None
    assert caught.value.retry_after > client.limiter.limit.period


# -- 3. the token never leaks ---------------------------------------------------------------


@pytest.mark.parametrize("bad", [TOKEN + "\nX-Evil: 1", "sk-tökén-123", "sk test", "sk-\x00-1"])
def test_a_token_with_illegal_characters_is_refused_without_showing_it(bad: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        _construct(bad)
    assert bad.strip() not in str(caught.value)
    assert "tökén" not in str(caught.value) and TOKEN not in str(caught.value)


def _construct(token: str) -> None:
    from fakes import RecordingLimiter

    from grok_imagine_async import AsyncGrokImagine

    AsyncGrokImagine(api_key=token, base_url="http://api.test", limiter=RecordingLimiter())


def _echo(request: httpx.Request) -> str:
    return request.headers["authorization"]


@pytest.mark.anyio
async def test_an_echoed_token_is_redacted_from_errors_and_tasks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def error_echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400, json={"code": 400, "message": f"bad {_echo(request)}", "error": _echo(request)}
        )

    with pytest.raises(APIStatusError) as caught:
        await make_client(error_echo).get_task("t1")
    assert TOKEN not in f"{caught.value} {caught.value.body!r} {caught.value.error_code}"

    def not_json_echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=f"<html>{_echo(request)}</html>")

    with pytest.raises(APIResponseValidationError) as invalid:
        await make_client(not_json_echo).get_task("t1")
    assert TOKEN not in f"{invalid.value} {invalid.value.body}"

    def task_echo(request: httpx.Request) -> httpx.Response:
        token = _echo(request)
        data = {
            "task_id": "t1",
            "status": f"weird {token}",
            "error_message": token,
            "request": {"prompt": token},
        }
        return answer(data)

    with caplog.at_level(logging.WARNING, logger="grok_imagine_async"):
        task = await make_client(task_echo).get_task("t1")
    assert TOKEN not in repr(task)
    assert caplog.records and all(TOKEN not in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_a_token_hidden_in_json_escapes_is_redacted_too() -> None:
    # No literal token in the body, so a check of the raw text alone would let it through.
    escaped = "".join(f"\\u{ord(c):04x}" for c in TOKEN)

    def handler(request: httpx.Request) -> httpx.Response:
        body = '{"code": 200, "data": {"task_id": "t1", "status": "failed", "error_message": "%s"}}'
        return httpx.Response(200, text=body % escaped)

    task = await make_client(handler).get_task("t1")
    assert TOKEN not in repr(task)
    assert task.error_message == "***"


def test_an_answer_nested_past_the_depth_bound_is_not_read_as_data() -> None:
    redactor = Redactor(TOKEN)
    assert redactor.loads('{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}
    with pytest.raises(ValueError, match="deeper than"):
        redactor.loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))


@pytest.mark.anyio
async def test_redaction_comes_before_truncation() -> None:
    def handler(request: httpx.Request) -> httpx.Response:  # the token straddles the cut at 200
        return httpx.Response(500, text="x" * 190 + _echo(request).removeprefix("Bearer "))

    with pytest.raises(ServerError) as caught:
        await make_client(handler, retry=RetryPolicy(attempts=0)).get_task("t1")
    assert TOKEN[:8] not in f"{caught.value} {caught.value.body!r}"


@pytest.mark.anyio
async def test_an_ambiguous_submit_keeps_no_request_in_its_chain() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    with pytest.raises(AmbiguousSubmitError) as caught:
        await make_client(handler).generate("a cat")
    for item in exception_chain(caught.value):
        assert not isinstance(getattr(item, "_request", None), httpx.Request)
        assert not isinstance(item, httpx.HTTPError)


def test_the_cli_refuses_abbreviated_options() -> None:
    from grok_imagine_async._cli import build_parser

    parser = build_parser()
    full = parser.parse_args(["generate", "--api-key", TOKEN, "--out", "v", "a cat"])
    assert full.api_key == TOKEN
    with pytest.raises(SystemExit):
        parser.parse_args(["generate", "--api", TOKEN, "--out", "v", "a cat"])


# -- 4. size limits --------------------------------------------------------------------------


async def _peak_while(call: Any) -> tuple[int, BaseException | None]:
    tracemalloc.start()
    try:
        try:
            await call()
            error: BaseException | None = None
        except Exception as exc:
            error = exc
        return tracemalloc.get_traced_memory()[1], error
    finally:
        tracemalloc.stop()


@pytest.mark.anyio
async def test_a_50_mb_answer_is_refused_without_reading_it_whole() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=ChunkStream(b"x" * 65536, count=800))

    peak, error = await _peak_while(lambda: make_client(handler).get_task("t1"))
    assert isinstance(error, APIResponseValidationError)
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"


@pytest.mark.anyio
async def test_api_requests_ask_only_for_encodings_the_bounded_read_inflates() -> None:
    from grok_imagine_async import _http

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["accept-encoding"])
        return answer(TASK)

    await make_client(handler).get_task("t1")  # a caller's client keeps its own default
    built = _http.new_client(httpx, timeout=1.0)  # a client's own: set once
    await built.aclose()
    assert seen == ["gzip, deflate"]
    assert built.headers["accept-encoding"] == "gzip, deflate"
    assert built.headers["user-agent"].startswith("grok-imagine-async/")


@pytest.mark.anyio
async def test_a_gzip_bomb_is_refused_without_inflating_it() -> None:
    bomb = gzip_bomb(100 * 2**20)

    def handler(request: httpx.Request) -> httpx.Response:
        stream = ChunkStream(bomb, count=1)  # content= would be inflated here, by httpx
        return httpx.Response(200, stream=stream, headers={"content-encoding": "gzip"})

    peak, error = await _peak_while(lambda: make_client(handler).get_task("t1"))
    assert isinstance(error, APIResponseValidationError)
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"


@pytest.mark.anyio
async def test_a_video_that_never_ends_stops_at_the_cap(tmp_path: Any) -> None:
    from grok_imagine_async import Limits

    def endless(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=ChunkStream(b"v" * 65536))

    client = make_client(endless, limits=Limits(max_video_bytes=2**20))
    with pytest.raises(GrokImagineError, match="1048576"):
        await client.download(done("https://cdn.test/v.mp4"), tmp_path, stem="job")
    assert list(tmp_path.iterdir()) == []  # the partial file is gone


@pytest.mark.anyio
async def test_a_20_mb_prompt_is_refused_before_sending() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return answer({"task_id": "t1"})

    with pytest.raises(InvalidRequestError, match="5000"):
        await make_client(handler).generate("p" * 20_000_000)
    assert sent == []


# -- 5. the POST is bounded in total, not per read -------------------------------------------


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_trickling_answer_does_not_hold_a_post_forever() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=ChunkStream(b" ", pause=1.5))

    client = make_client(handler)
    start = anyio.current_time()
    with anyio.fail_after(10_000), pytest.raises(AmbiguousSubmitError):
        await client.generate("a cat")
    assert anyio.current_time() - start <= 121.0


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_trickling_answer_does_not_hold_a_shielded_batch_post_forever() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, stream=ChunkStream(b" ", pause=1.5))
        return answer(TASK)

    client = make_client(handler)
    start = anyio.current_time()
    with anyio.move_on_after(10):  # a Ctrl-C at 10 s waits for the shielded POST, not forever
        async with client.generate_many(["a cat"]) as results:
            async for _ in results:
                pass
    assert anyio.current_time() - start <= 121.0


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_each_request_is_cut_at_its_own_deadline_after_others_ended() -> None:
    # One loop timer serves every request's max_request_time: a request that ended must not
    # cut the next ones early, nor leave them without a deadline.
    from grok_imagine_async import APITimeoutError, Limits, RetryPolicy

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params["task_id"] == "quick":
            return answer(TASK)
        return httpx.Response(200, stream=ChunkStream(b" ", pause=1.5))

    client = make_client(
        handler, limits=Limits(max_request_time=10.0), retry=RetryPolicy(attempts=0)
    )
    ended: dict[str, float] = {}

    async def trickle(name: str, after: float) -> None:
        await anyio.sleep(after)
        with pytest.raises(APITimeoutError, match="max_request_time"):
            await client.get_task(name)
        ended[name] = anyio.current_time() - start

    start = anyio.current_time()
    await client.get_task("quick")  # its deadline (t=10) outlives it
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tg:
            tg.start_soon(trickle, "second", 5.0)
            tg.start_soon(trickle, "third", 7.0)
    assert ended == {
        "second": pytest.approx(15.0, abs=0.01),
        "third": pytest.approx(17.0, abs=0.01),
    }


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_cancellation_from_outside_is_not_taken_for_the_deadline() -> None:
    # On asyncio the deadline cancels the request's own task: a caller's cancellation (here a
    # shorter timeout) still ends the call as a cancellation, and the next call keeps its bound.
    from grok_imagine_async import APITimeoutError, Limits, RetryPolicy

    def trickle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=ChunkStream(b" ", pause=1.5))

    client = make_client(
        trickle, limits=Limits(max_request_time=10.0), retry=RetryPolicy(attempts=0)
    )
    start = anyio.current_time()
    with anyio.move_on_after(3.0) as scope:
        await client.get_task("slow")
    assert scope.cancelled_caught
    assert anyio.current_time() - start == pytest.approx(3.0, abs=0.01)
    with pytest.raises(APITimeoutError, match="max_request_time"):
        await client.get_task("slow")
    assert anyio.current_time() - start == pytest.approx(13.0, abs=0.01)


# -- 6. library downloads never overwrite each other ---------------------------------------


@pytest.mark.anyio
async def test_keys_that_sanitise_alike_get_their_own_files(tmp_path: Any) -> None:
    client = make_client(video_server)
    paths = []
    for key in ("a/b", "a_b", "a?b"):
        url = f"https://cdn.test/{len(paths)}.mp4"
        paths += await client.download(done(url), tmp_path, stem=key)
    assert len({p.name for p in paths}) == 3
    assert sorted(p.read_bytes() for p in paths) == sorted(
        f"video of /{i}.mp4".encode() for i in range(3)
    )


@pytest.mark.anyio
async def test_a_prompt_over_the_limit_fails_its_job_not_the_batch() -> None:
    from grok_imagine_async import Limits

    def handler(request: httpx.Request) -> httpx.Response:
        return answer({"task_id": "t1"} if request.method == "POST" else TASK)

    client = make_client(handler, limits=Limits(max_prompt_chars=100))
    async with client.generate_many(["a cat", "p" * 101]) as results:
        outcome = {r.request.prompt[:5]: r async for r in results}
    assert outcome["a cat"].ok
    assert isinstance(outcome["ppppp"].error, InvalidRequestError)
