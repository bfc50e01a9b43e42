"""K = 4 OS processes, one token, one Redis: they must behave as one client at the plan's rate.

Each worker (``tests/_redis_worker.py``) has its own ``AsyncGrokImagine`` and
``RedisRateLimiter`` and sends through uvicorn to one emulator on 127.0.0.1 that enforces
100 requests per sliding 3 s window. The emulator's own log of arrival times is the judge.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from _redis_worker import (
    REDIS_MISSING,
    WARM_UP_TOKEN,
    RedisServer,
    redis_server_binary,
    warm_up_emulator,
)

from grok_imagine_async import RateLimit

pytest.importorskip("redis.asyncio", reason='needs the "redis" extra')
pytest.importorskip("uvicorn", reason='needs the "emulator" extra')

from grok_imagine_async.testing import Emulator, EmulatorConfig, serve_in_thread

pytestmark = [pytest.mark.redis, pytest.mark.integration]

WORKER = Path(__file__).with_name("_redis_worker.py")
TOKEN = "sk-test-SECRET-shared-token"
LIMIT = RateLimit(100, 3.0)
K = 4


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    binary = redis_server_binary()
    if binary is None:
        pytest.skip(REDIS_MISSING)
    server = RedisServer(binary, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def new_emulator(*, seed: int, reset_format: Literal["seconds", "unix"] = "seconds") -> Emulator:
    tokens = {TOKEN: LIMIT, WARM_UP_TOKEN: LIMIT}
    return Emulator(
        EmulatorConfig(tokens=tokens, window="sliding", reset_format=reset_format, seed=seed)
    )


def start_workers(
    redis_url: str, base_url: str, *, per_worker: int, skews: list[float], start_at: float
) -> list[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                f"--redis-url={redis_url}",
                f"--base-url={base_url}",
                f"--token={TOKEN}",
                f"--requests={LIMIT.requests}",
                f"--period={LIMIT.period}",
                f"--count={per_worker}",
                f"--skew={skew}",
                f"--start-at={start_at}",
                "--probe-interval=0.5",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for skew in skews
    ]


def collect(workers: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    summaries = []
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, f"worker crashed:\n{err[-3000:]}"
        summaries.append(json.loads(out.strip().splitlines()[-1]))
    return summaries


def utilization(times: list[float]) -> float:
    """Achieved rate between the first and the last arrival, as a fraction of the plan's rate."""
    return (len(times) - 1) / (times[-1] - times[0]) / LIMIT.per_second


@pytest.mark.parametrize(
    ("skews", "reset_format"),
    [
        pytest.param([0.0] * K, "seconds", id="same-clocks"),
        # Clocks 1 s apart; with Unix-time resets, each client also reads the headers skewed.
        pytest.param([-0.5, 0.5, -0.5, 0.5], "unix", id="skew-500ms"),
    ],
)
def test_four_processes_on_one_token_pace_as_one_client(
    redis_server: RedisServer, skews: list[float], reset_format: Literal["seconds", "unix"]
) -> None:
    emulator = new_emulator(seed=1, reset_format=reset_format)
    per_worker = 50  # 200 requests: two windows' worth, about 6 s
    with serve_in_thread(emulator) as base_url:
        warm_up_emulator(base_url)
        workers = start_workers(
            redis_server.url, base_url, per_worker=per_worker, skews=skews, start_at=time.time() + 2
        )
        summaries = collect(workers)

    assert [s["errors"] for s in summaries] == [[]] * K
    assert sum(s["sent"] for s in summaries) == K * per_worker
    assert all(s["sent"] == s["permits"] == s["redis_calls"] for s in summaries)
    times = emulator.request_times(TOKEN)
    assert emulator.statistics().rate_limited == 0
    assert emulator.max_window_count(LIMIT.period, TOKEN) <= LIMIT.requests
    assert utilization(times) >= 0.95


def test_redis_killed_mid_run_falls_back_and_returns_without_a_burst(
    redis_server: RedisServer,
) -> None:
    emulator = new_emulator(seed=2)
    per_worker = 60  # about 8 s at the plan's rate, Redis gone for 2 s of it
    with serve_in_thread(emulator) as base_url:
        warm_up_emulator(base_url)
        start_at = time.time() + 2
        workers = start_workers(
            redis_server.url, base_url, per_worker=per_worker, skews=[0.0] * K, start_at=start_at
        )
        # Fault injection on the wall clock the workers also start on, not a wait for a result.
        time.sleep(max(0.0, start_at + 2.5 - time.time()))
        redis_server.kill()
        time.sleep(2.0)
        redis_server.start()
        summaries = collect(workers)

    assert [s["errors"] for s in summaries] == [[]] * K
    assert all(s["fallbacks"] >= 1 and s["recoveries"] >= 1 for s in summaries)
    assert emulator.statistics().rate_limited == 0
    assert emulator.max_window_count(LIMIT.period, TOKEN) <= LIMIT.requests
