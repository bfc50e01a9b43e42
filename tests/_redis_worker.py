"""Helpers for the Redis limiter tests and benchmark: a throwaway redis-server, a worker process.

``RedisServer`` runs ``redis-server`` on a free 127.0.0.1 port with persistence off and can kill
and restart it on the same port (to test the fallback). Run as a script, this module is one of
the K worker processes of the multi-process test: it sends requests through its own
``AsyncGrokImagine`` and ``RedisRateLimiter`` and prints a JSON summary on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from grok_imagine_async import RateLimit, RetryPolicy

REDIS_MISSING = (
    "redis-server is not installed (Debian/Ubuntu: apt-get install redis-server; "
    ".ci/run installs it): the shared-limiter tests need a real Redis"
)


def redis_server_binary() -> str | None:
    """Path of ``redis-server`` if installed."""
    return shutil.which("redis-server")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def committed_credits(url: str) -> int:
    """Credits reserved or spent by every process sharing the Redis at ``url``, less the
    reserves they set aside for an outage (one token's budget: the tests use one)."""
    import redis.asyncio as aioredis

    raw = aioredis.Redis.from_url(url)
    try:
        [credits] = await raw.keys("*:credits")
        async with raw.pipeline(transaction=True) as pipe:
            pipe.get(credits)
            pipe.hvals(credits.replace(b":credits", b":reserves"))
            value, reserves = await pipe.execute()
    finally:
        await raw.aclose()
    return int(value or 0) - sum(int(held) for held in reserves)


class RedisServer:
    """A ``redis-server`` subprocess on 127.0.0.1 that a test owns, kills and restarts."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (again, on the same port) and wait until it answers PING."""
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start within 10 s")

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL), as a crash or a lost host would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


def start_workers(
    *,
    redis_url: str,
    base_url: str,
    token: str,
    limit: RateLimit,
    per_worker: int,
    skews: list[float],
    start_in: float = 2.0,
    limiter: str = "redis",
    probe_intervals: list[float] | None = None,
) -> list[subprocess.Popen[str]]:
    """Start one worker process per entry of ``skews``, all to begin ``start_in`` s from now.

    ``probe_intervals`` gives each worker its ``fallback_probe_interval`` (default 0.5 s).
    """
    probes = probe_intervals or [0.5] * len(skews)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    start_at = time.time() + start_in  # wall clock: the one clock all local processes share
    return [
        subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__)),
                f"--redis-url={redis_url}",
                f"--base-url={base_url}",
                f"--token={token}",
                f"--requests={limit.requests}",
                f"--period={limit.period}",
                f"--count={per_worker}",
                f"--skew={skew}",
                f"--start-at={start_at}",
                f"--limiter={limiter}",
                f"--probe-interval={probe}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for skew, probe in zip(skews, probes, strict=True)
    ]


def collect(workers: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    """Wait for the workers and return their JSON summaries.

    Raises:
        RuntimeError: If a worker failed, with the end of its stderr.
    """
    summaries = []
    for worker in workers:
        out, err = worker.communicate(timeout=90)
        if worker.returncode != 0:
            raise RuntimeError(f"worker exited with {worker.returncode}:\n{err[-3000:]}")
        summaries.append(json.loads(out.strip().splitlines()[-1]))
    return summaries


WARM_UP_TOKEN = "warm-up-token"
"""A second token the emulator must accept, so warming it up does not count against the first."""


def warm_up_emulator(base_url: str) -> None:
    """Send one request of each kind under :data:`WARM_UP_TOKEN`.

    The emulator's first generate request spends about 100 ms in one-time work after it is
    logged, holding up the requests that arrive meanwhile, which are then logged as one bunch:
    an artefact of a cold test server that a 3 s test window would count as a burst.
    """
    import httpx

    headers = {"Authorization": f"Bearer {WARM_UP_TOKEN}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30.0) as http:
        answer = http.post("/v1/generate", json={"prompt": "warm-up", "mode": "normal"})
        answer.raise_for_status()
        http.get("/v1/status", params={"task_id": answer.json()["data"]["task_id"]})


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--period", type=float, required=True)
    parser.add_argument("--count", type=int, required=True, help="requests this worker sends")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--skew", type=float, default=0.0, help="seconds added to local clock")
    parser.add_argument("--start-at", type=float, default=0.0, help="time.time() to start at")
    parser.add_argument("--probe-interval", type=float, default=0.5)
    parser.add_argument(
        "--limiter",
        choices=["redis", "local"],
        default="redis",
        help="local: each process paces itself alone (the baseline the shared limiter fixes)",
    )
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace) -> dict[str, object]:
    import anyio
    import httpx

    from grok_imagine_async import AsyncGrokImagine, GenerationRequest
    from grok_imagine_async._limiting.local import LocalRateLimiter
    from grok_imagine_async.redis import RedisRateLimiter

    class SkewedClock:
        """The loop clock shifted by a fixed offset: this host's clock disagrees with others."""

        def monotonic(self) -> float:
            return anyio.current_time() + args.skew

        def unix(self) -> float:
            return time.time() + args.skew

    limit = RateLimit(args.requests, args.period)
    clock = SkewedClock()
    limiter = RedisRateLimiter(
        args.redis_url,
        limit=limit,
        api_key=args.token,
        fallback_probe_interval=args.probe_interval,
        clock=clock,
    )
    baseline = LocalRateLimiter(limit, clock=clock) if args.limiter == "local" else None
    latencies: list[float] = []
    errors: list[str] = []
    remaining = args.count

    async with (
        limiter,
        httpx.AsyncClient(timeout=30.0, limits=httpx.Limits(max_connections=64)) as http,
        AsyncGrokImagine(
            api_key=args.token,
            base_url=args.base_url,
            http_client=http,
            limiter=baseline or limiter,
            retry=RetryPolicy(attempts=0),
            clock=clock,  # also reads X-RateLimit-Reset epochs with the skewed clock
        ) as client,
    ):
        # Warm up before the start line: open connections (outside /v1, so nothing is counted)
        # and import what the first request would, so that cold-start latency of tens of ms,
        # which a 3 s test window cannot absorb as a 60 s one would, does not bunch the first
        # requests.
        async with anyio.create_task_group() as tg:
            for _ in range(args.concurrency):
                tg.start_soon(http.get, f"{args.base_url}/")
        GenerationRequest(prompt="warm-up")
        await anyio.sleep(max(0.0, args.start_at - time.time()))

        async def sender() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                try:
                    await client.generate("a lighthouse at dawn")
                except Exception as exc:  # recorded and reported: the test asserts there are none
                    errors.append(type(exc).__name__)
                latencies.append(time.perf_counter() - started)

        async with anyio.create_task_group() as tg:
            for _ in range(args.concurrency):
                tg.start_soon(sender)
        stats = limiter.statistics()
    latencies.sort()
    return {
        "sent": len(latencies),
        "errors": errors,
        "redis_calls": stats.redis_calls,
        "permits": (baseline or limiter).statistics().permits_granted,
        "fallbacks": stats.fallbacks,
        "recoveries": stats.recoveries,
        "late_slots": stats.late_slots,
        "rate_limited": (baseline or limiter).statistics().rate_limited_responses,
        "server_pauses": (baseline or limiter).statistics().server_pauses,
        "latency_p50": latencies[len(latencies) // 2] if latencies else None,
    }


def main(argv: list[str] | None = None) -> None:
    """Run one worker process and print its JSON summary."""
    import anyio

    args = _parse_args(sys.argv[1:] if argv is None else argv)
    summary = anyio.run(_run, args)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
