"""A hostile API server for tests: answers built by the test, driven through httpx.MockTransport."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from fakes import TOKEN, RecordingLimiter

from grok_imagine_async import AsyncGrokImagine, RetryPolicy
from grok_imagine_async._http import lib as httpx  # httpx2 if installed, else httpx

BASE = "http://api.test"
FAST_RETRY = RetryPolicy(attempts=2, wait_initial=0.5, wait_factor=2.0, wait_max=4.0)
Handler = Callable[[httpx.Request], httpx.Response]


class ChunkStream(httpx.AsyncByteStream):
    """A body produced chunk by chunk (optionally forever, optionally slowly)."""

    def __init__(self, chunk: bytes, *, count: int | None = None, pause: float = 0.0) -> None:
        self.chunk, self.count, self.pause, self.sent = chunk, count, pause, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.count is None or self.sent < self.count:
            if self.pause:
                await anyio.sleep(self.pause)
            self.sent += 1
            yield self.chunk


def deep_json(depth: int) -> bytes:
    """A JSON text nested ``depth`` lists deep."""
    return b"[" * depth + b"]" * depth


def gzip_bomb(size: int) -> bytes:
    """``size`` zero bytes, gzipped (about 1000 times smaller)."""
    return gzip.compress(bytes(size), compresslevel=9)


def answer(data: Any, *, code: Any = 200, status: int = 200, **headers: str) -> httpx.Response:
    body = {"code": code, "message": "success", "data": data}
    return httpx.Response(status, content=json.dumps(body).encode(), headers=headers)


def make_client(handler: Handler, **kwargs: Any) -> AsyncGrokImagine:
    options: dict[str, Any] = {"retry": FAST_RETRY, "limiter": RecordingLimiter(), **kwargs}
    http = options.pop("http", None) or httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return AsyncGrokImagine(
        api_key=TOKEN, base_url=options.pop("base_url", BASE), http_client=http, **options
    )


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception reachable through ``__cause__`` and ``__context__``."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        todo += [item.__cause__, item.__context__]
    return seen
