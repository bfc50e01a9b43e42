"""The limiter benchmark's virtual-time sweep: the same clients, a simulated network, no load.

Over real sockets on a shared machine the figures move with the machine's load (the emulator and
the client compete for two cores). Here the emulator runs in process on the virtual-time loop
and every request travels through :class:`Travel`, which delays it on the way to the server and
on the way back by seeded random times: requests overtake each other as over a real network,
but nothing depends on how busy the machine is, so every run gives the same figures.
"""

from __future__ import annotations

import platform
import random
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import httpx

from grok_imagine_async import APIError, AsyncGrokImagine, RateLimit
from grok_imagine_async.abc import RateLimiter

TRAVEL = (0.005, 0.030)  # one-way travel time, seconds: uniform between these
WORKERS = 300
VIRTUAL_START = 1_000_000.0
"""Where every run's virtual clock starts: fixed windows are aligned on it, so a run that
started at the real monotonic time counted the baseline's 429s differently each time."""


class Travel(httpx.AsyncBaseTransport):
    """Delays each request on its way to the server and its answer on the way back."""

    def __init__(self, inner: httpx.AsyncBaseTransport, rng: random.Random) -> None:
        self._inner = inner
        self._rng = rng

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await anyio.sleep(self._rng.uniform(*TRAVEL))
        response = await self._inner.handle_async_request(request)
        await response.aread()
        await anyio.sleep(self._rng.uniform(*TRAVEL))
        return response


@dataclass(frozen=True)
class VirtualRun:
    limit: RateLimit
    server: str
    strategy: str
    requests: int
    rate_limited: int
    utilization: float
    max_window: int


def run_virtual_one(
    server: str,
    burst: int,
    limit: RateLimit,
    strategy: str,
    make: Callable[[RateLimit], RateLimiter],
    windows: float,
) -> VirtualRun:
    """One client flooding one in-process emulator for ``windows`` periods of virtual time."""
    from grok_imagine_async.testing import Emulator, EmulatorConfig, run_virtual

    async def main() -> VirtualRun:
        config = EmulatorConfig(
            tokens={"t": limit},
            window=server,  # type: ignore[arg-type]
            burst=burst,
            reset_format="unix" if server == "fixed" else "seconds",
            seed=1,
        )
        emulator = Emulator(config)
        http = httpx.AsyncClient(
            transport=Travel(emulator.transport(), random.Random(1)),
            base_url="http://emulator.local",
        )
        grok = AsyncGrokImagine(
            api_key="t",
            base_url="http://emulator.local",
            limiter=make(limit),
            http_client=http,
            max_retries=0,
        )
        async with http, grok:
            task_id = await grok.generate("a benchmark")
            start = anyio.current_time()

            async def worker(n: int) -> None:
                calls = 0
                while True:
                    calls += 1
                    try:
                        if (n + calls) % 10 == 0:
                            await grok.generate(f"worker {n}")
                        else:
                            await grok.get_task(task_id)
                    except APIError:
                        pass

            end = start + windows * limit.period
            with anyio.move_on_after(end - anyio.current_time()):
                async with anyio.create_task_group() as group:
                    for n in range(WORKERS):
                        group.start_soon(worker, n)
        seen = [t for t in emulator.request_times("t") if start <= t <= end]
        admitted = [t for t in emulator.request_times("t", admitted_only=True) if start <= t <= end]
        return VirtualRun(
            limit=limit,
            server=server,
            strategy=strategy,
            requests=len(seen),
            rate_limited=len(seen) - len(admitted),
            utilization=len(seen) / (limit.requests * windows),
            max_window=emulator.max_window_count(limit.period, "t"),
        )

    return run_virtual(main, start=VIRTUAL_START)


def render_virtual(
    runs: list[VirtualRun], *, command: str, windows: float, names: dict[str, str], burst: int
) -> str:
    """The Markdown table of the sweep."""
    low, high = (f"{t * 1000:g}" for t in TRAVEL)
    lines = [
        "# Local rate limiter on virtual time",
        "",
        f"Command: `{command}` · Python {platform.python_version()} · in-process emulator on "
        "the virtual-time loop: the same figures on any machine, whatever its load",
        "",
        f"One `AsyncGrokImagine` (`max_retries=0`) driven by {WORKERS} concurrent "
        f"coroutines (`get_task`, one call in ten a `generate`) for {windows:g} windows of 6 s. "
        f"Each request travels {low}-{high} ms to the server and as long back (uniform, "
        "seeded), so requests overtake each other as on a real network. Server kinds as over "
        f"sockets: `sliding`, `fixed` and `gcra` (a bucket of {burst} refilled at the quota's "
        "rate). Utilization = requests the server received / (limit x periods).",
        "",
        "| limit | server | limiter | requests | 429s | utilization | max in any 6 s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for run in runs:
        lines.append(
            f"| {run.limit.requests}/{run.limit.period:g} s | {run.server} "
            f"| {names[run.strategy]} | {run.requests} | {run.rate_limited} "
            f"| {run.utilization:.1%} | {run.max_window} |"
        )
    return "\n".join(lines) + "\n"
