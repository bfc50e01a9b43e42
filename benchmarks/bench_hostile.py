"""What a hostile server costs the client: memory, disk and (virtual) time per attack.

Run: ``python -m benchmarks.bench_hostile`` (writes ``results/hostile.md``). In process,
through ``httpx.MockTransport`` on the virtual-time loop; nothing reaches the network. Peak
memory is traced with tracemalloc (Python allocations); RSS growth is read with psutil.
"""

from __future__ import annotations

import tempfile
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil

from benchmarks._git import code_state
from grok_imagine_async import AsyncGrokImagine, Limits, RetryPolicy, Task, TaskStatus
from grok_imagine_async.testing import VirtualTimeEventLoop

TOKEN = "bench-token-0123456789"
RESULTS = Path(__file__).parent / "results" / "hostile.md"


class _Stream(httpx.AsyncByteStream):
    def __init__(self, chunk: bytes, count: int | None, pause: float = 0.0) -> None:
        self.chunk, self.count, self.pause = chunk, count, pause

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        while self.count is None or sent < self.count:
            if self.pause:
                await anyio.sleep(self.pause)
            sent += 1
            yield self.chunk


def _client(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> AsyncGrokImagine:
    return AsyncGrokImagine(
        api_key=TOKEN,
        base_url="http://api.test",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
        retry=RetryPolicy(attempts=0),
        **kw,
    )


async def _measure(name: str, call: Callable[[], Awaitable[Any]]) -> list[str]:
    process = psutil.Process()
    rss = process.memory_info().rss
    tracemalloc.start()
    start = anyio.current_time()
    try:
        await call()
        outcome = "returned"
    except Exception as exc:
        outcome = type(exc).__name__
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    grew = max(0, process.memory_info().rss - rss)
    elapsed = anyio.current_time() - start
    return [name, outcome, f"{peak / 2**20:.2f}", f"{grew / 2**20:.1f}", f"{elapsed:.1f}"]


def _gzip_zeros(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: the gzip format
    block = bytes(2**20)
    parts = [packer.compress(block) for _ in range(size // len(block))]
    return b"".join([*parts, packer.flush()])


async def main() -> None:
    bomb = _gzip_zeros(2**30)  # 1 GiB of zeros, about 1 MB gzipped
    rows = []

    def big(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Stream(b"x" * 65536, 800))  # 50 MiB

    rows.append(await _measure("50 MiB answer", lambda: _client(big).get_task("t")))

    def bombing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Stream(bomb, 1), headers={"content-encoding": "gzip"})

    label = f"gzip bomb ({len(bomb) / 2**20:.1f} MiB -> 1 GiB)"
    rows.append(await _measure(label, lambda: _client(bombing).get_task("t")))

    def trickle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Stream(b" ", None, pause=1.5))

    rows.append(
        await _measure("POST answer, 1 byte / 1.5 s", lambda: _client(trickle).generate("p"))
    )

    def hint(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={"code": 429}, headers={"retry-after": "999999"})

    retrying = AsyncGrokImagine(
        api_key=TOKEN,
        base_url="http://api.test",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(hint)),
    )
    rows.append(await _measure("429, Retry-After: 999999", lambda: retrying.get_task("t")))

    def endless(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Stream(b"v" * 65536, None))

    with tempfile.TemporaryDirectory() as folder:
        capped = _client(endless, limits=Limits(max_video_bytes=64 * 2**20))
        task = Task(
            task_id="t",
            status=TaskStatus.COMPLETED,
            raw_status="completed",
            videos=("https://cdn.test/v.mp4",),
        )
        rows.append(
            await _measure("endless video, cap 64 MiB", lambda: capped.download(task, folder))
        )
        left = sum(p.stat().st_size for p in Path(folder).iterdir())
    rows.append(["(bytes left on disk after it)", str(left), "", "", ""])
    prompt = "p" * 20_000_000
    rows.append(await _measure("20 MB prompt", lambda: _client(big).generate(prompt)))
    lines = [
        f"Command: `python -m benchmarks.bench_hostile` at {code_state()} · virtual time, "
        "in process (the same figures on any machine)",
        "",
        "| attack | outcome | traced peak MiB | RSS growth MiB | virtual s |",
        "|---|---|---:|---:|---:|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    anyio.run(main, backend="asyncio", backend_options={"loop_factory": VirtualTimeEventLoop})
