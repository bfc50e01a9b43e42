"""Benchmark of what the client costs per request over bare httpx and bare httpx2.

Run from the repository root::

    python -m benchmarks.bench_overhead

Needs ``httpx2`` installed beside ``httpx`` (``pip install ".[httpx2]" uvicorn``); without it
only the httpx rows are measured. Writes ``benchmarks/results/overhead.md`` and prints it.

One uvicorn process on 127.0.0.1 serves a fixed ``GET /v1/status`` answer (a finished task,
with the rate-limit headers the real service sends; with ``--plain``, without them, as a
proxy's or nginx's limiter answers, written to ``results/overhead-plain.md``). Against it, in
this process:

- **bare**: the library alone as one writes it, ``AsyncClient(timeout=...)``, then
  ``get(url, params=..., headers={"Authorization": ...})``, status checked, ``.json()`` read.
- **ours**: :class:`AsyncGrokImagine` on that library, with the ``AsyncClient`` a default
  client builds for itself (``_http.new_client``), ``get_task(...)``: the default rate limiter
  (on a quota too large to wait for), the rate-limit headers fed back, the bounded read, the
  parsed :class:`Task`.
- **bare, query written** (a diagnostic): bare with the query written into the URL string
  (``urlencode``, as the library writes ``params``), as the client does: what the library
  costs when the URL is parsed once, not twice.
- **ours, open limiter** (a diagnostic): the same with a limiter that grants at once, which
  shows what the rate limiter's own bookkeeping costs within "ours".

- **before** (with ``--baseline REF``): "ours" with the package as it was at the git commit
  ``REF``, the code this run is compared with.

Each configuration sends ``CALLS`` requests, ``1`` or ``50`` at a time (as many coroutines,
each calling in a loop), after a warm-up that opens the pool's connections, in a process of
its own (so each starts alike, and "before" can import another version of the package),
pinned to the second CPU while the server keeps the first. Each round runs, per library, the
configurations back to back in random order, so the sides of a ratio see the same load on the
machine; the table shows medians over the rounds: wall time per request, the client process's
CPU time per request (the server runs in its own process), and the median of the per-round
ratios to bare.

    python -m benchmarks.bench_overhead --baseline 1224e31  # and "ours" at that commit
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

import anyio

from benchmarks._git import code_state, extract
from benchmarks._open_limiter import OpenLimiter
from grok_imagine_async import _http

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "overhead.md"
TOKEN = "bench-token"
TASK_ID = "task_1"
QUOTA = "10000000/min"  # the default limiter, on a quota it never has to wait for
CALLS = 1000
ROUNDS = 15
CONCURRENCY = (1, 50)
ANSWER = json.dumps(
    {
        "code": 200,
        "message": "success",
        "data": {
            "task_id": TASK_ID,
            "status": "completed",
            "consumed_credits": 40,
            "created_at": "2026-01-01T00:00:00Z",
            "request": {"mode": "normal", "prompt": "a red kite", "ratio": "1:1"},
            "response": ["https://cdn.example.com/generated/video1.mp4"],
            "error_message": None,
        },
    }
).encode()
HEADERS = [
    (b"content-type", b"application/json"),
    (b"x-ratelimit-remaining", b"999999"),
    (b"x-ratelimit-reset", b"60"),
    (b"content-length", str(len(ANSWER)).encode()),  # not chunked: one write per answer
]
PLAIN = [header for header in HEADERS if not header[0].startswith(b"x-ratelimit")]
_answer_headers = HEADERS  # the served answer's (--plain: PLAIN)


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The endpoint: every request gets the same finished task, at once."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": _answer_headers})
    await send({"type": "http.response.body", "body": ANSWER})


def pin(cpu: int) -> None:
    """Keep this process on one CPU of two or more: the server on the first, the client on the
    second. Left to the scheduler, the two sometimes share a core and sometimes not, which
    moved a configuration's median by several percent from one run to the next."""
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[cpu]})


def serve(port_file: Path, *, plain: bool = False) -> None:
    """Serve :func:`_app` on a free port of 127.0.0.1; write ``http://...`` to ``port_file``
    (``plain``: answers without rate-limit headers, as a proxy's or nginx's limiter sends)."""
    global _answer_headers
    import uvicorn

    _answer_headers = PLAIN if plain else HEADERS

    pin(0)

    from grok_imagine_async.testing._emulator import base_url, bind

    sock = bind("127.0.0.1", 0)
    port_file.write_text(base_url(sock))
    config = uvicorn.Config(_app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


def _families() -> list[ModuleType]:
    found = []
    for name in ("httpx", "httpx2"):
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            print(f"{name} is not installed: its rows are skipped", file=sys.stderr)
    return found


Call = Callable[[], Awaitable[None]]


async def _drive(call: Call, concurrency: int, calls: int) -> tuple[float, float]:
    """Wall and CPU seconds per call of ``calls`` calls, ``concurrency`` at a time."""
    each = calls // concurrency

    async def worker() -> None:
        for _ in range(each):
            await call()

    async with anyio.create_task_group() as tg:  # warm-up: every connection of the pool open
        for _ in range(concurrency):
            tg.start_soon(call)
    wall, cpu = time.perf_counter(), time.process_time()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    done = each * concurrency
    return (time.perf_counter() - wall) / done, (time.process_time() - cpu) / done


async def bare(
    lib: ModuleType, url: str, concurrency: int, calls: int, *, written: bool = False
) -> tuple[float, float]:
    """The library alone, as one writes it: ``AsyncClient`` with the client's timeout, the query
    in ``params=`` (``written``: in the URL string, which the library then parses once)."""
    async with lib.AsyncClient(timeout=_http.timeout_in(lib, _http.DEFAULT_TIMEOUT)) as http:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        status_url, params = f"{url}/v1/status", {"task_id": TASK_ID}
        if written:
            status_url, params = f"{status_url}?{urlencode(params)}", None

        async def call() -> None:
            response = await http.get(status_url, params=params, headers=headers)
            response.raise_for_status()
            response.json()

        return await _drive(call, concurrency, calls)


async def bare_written(
    lib: ModuleType, url: str, concurrency: int, calls: int
) -> tuple[float, float]:
    """:func:`bare` with the query written into the URL."""
    return await bare(lib, url, concurrency, calls, written=True)


def _own_client(lib: ModuleType) -> Any:
    """What ``AsyncGrokImagine()`` builds for itself, here on either library."""
    try:
        return _http.new_client(lib)
    except TypeError:  # a --baseline before c6ca3f5, where the caller passed both
        from grok_imagine_async._client import DEFAULT_TIMEOUT  # type: ignore[attr-defined]
        from grok_imagine_async._settings import user_agent  # type: ignore[attr-defined]

        return _http.new_client(lib, timeout=DEFAULT_TIMEOUT, headers={"User-Agent": user_agent()})


async def ours(
    lib: ModuleType, url: str, concurrency: int, calls: int, *, open_limiter: bool = False
) -> tuple[float, float]:
    """The client on ``lib``, with the ``AsyncClient`` a default client builds for itself."""
    from grok_imagine_async import AsyncGrokImagine

    http = _own_client(lib)
    limiter = OpenLimiter() if open_limiter else None
    client = AsyncGrokImagine(
        api_key=TOKEN, base_url=url, plan=QUOTA, http_client=http, limiter=limiter
    )
    async with http, client:

        async def call() -> None:
            await client.get_task(TASK_ID)

        return await _drive(call, concurrency, calls)


async def ours_open(lib: ModuleType, url: str, concurrency: int, calls: int) -> tuple[float, float]:
    """:func:`ours` with a limiter that grants at once."""
    return await ours(lib, url, concurrency, calls, open_limiter=True)


SIDES = {"bare": bare, "written": bare_written, "ours": ours, "open": ours_open, "before": ours}


def run_side(
    side: str, lib: ModuleType, url: str, concurrency: int, calls: int, *, package: Path
) -> tuple[float, float]:
    """One configuration in a child process importing ``grok_imagine_async`` from ``package``."""
    # The package's own folder first (``-m`` puts the working directory before PYTHONPATH).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(package), str(ROOT)]))}
    one = [side, lib.__name__, url, str(concurrency), str(calls)]
    child = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_overhead", "--one", *one],
        env=env,
        cwd=package,
        check=True,
        capture_output=True,
        text=True,
    )
    wall, cpu = json.loads(child.stdout.splitlines()[-1])
    return wall, cpu


def measure(
    url: str,
    families: list[ModuleType],
    *,
    rounds: int,
    calls: int,
    baseline: Path | None = None,
) -> list[dict[str, Any]]:
    """The rows of the table: per library and concurrency, medians over the rounds."""
    rng = random.Random(1)
    names = [side for side in SIDES if side != "before" or baseline is not None]
    rows = []
    for concurrency in CONCURRENCY:
        runs: dict[str, list[dict[str, tuple[float, float]]]] = {
            lib.__name__: [] for lib in families
        }
        for _ in range(rounds):
            for lib in rng.sample(families, len(families)):
                sides = {}
                for side in rng.sample(names, len(names)):
                    package = baseline if side == "before" and baseline is not None else ROOT
                    sides[side] = run_side(side, lib, url, concurrency, calls, package=package)
                runs[lib.__name__].append(sides)
        for lib in families:
            row: dict[str, Any] = {
                "library": lib.__name__,
                "version": lib.__version__,
                "concurrency": concurrency,
            }
            for side in names:
                row[f"{side}_wall"] = statistics.median(r[side][0] for r in runs[lib.__name__])
                row[f"{side}_cpu"] = statistics.median(r[side][1] for r in runs[lib.__name__])
                for i, unit in enumerate(("wall", "cpu")):
                    row[f"{side}_{unit}_ratio"] = statistics.median(
                        r[side][i] / r["bare"][i] for r in runs[lib.__name__]
                    )
            for i, unit in enumerate(("wall", "cpu")):
                row[f"ours_{unit}_to_written"] = statistics.median(
                    r["ours"][i] / r["written"][i] for r in runs[lib.__name__]
                )
            rows.append(row)
    return rows


def render(
    rows: list[dict[str, Any]],
    *,
    rounds: int,
    calls: int,
    conditions: str,
    command: str,
    baseline: str | None = None,
) -> str:
    """The Markdown table of ``rows``."""
    before = f"before ({baseline}) / bare" if baseline else None
    lines = [
        "# Per-request overhead over bare httpx and bare httpx2",
        "",
        f"`{command}` — Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs. {conditions}",
        "",
        f"{calls} `GET /v1/status` per run against one uvicorn endpoint on 127.0.0.1 (its own "
        f"process); {rounds} rounds, each running a library's configurations back to back in "
        "random order, each in a process of its own; medians over the rounds. *ratio*: the "
        "median of the per-round ratios to bare in the same round. Target: ours <= 1.10x bare, "
        "on each library, at 1 and 50 concurrent calls. *open limiter*: ours with a limiter "
        "that grants at once (what the client costs without the rate limiter's bookkeeping). "
        "*query written*: bare with the query written into the URL, as ours does (the library "
        "then parses the URL once, not twice); *ours / written*: ours over that, per round."
        + (
            f" *before*: ours with the package at {baseline}, in the same rounds." if before else ""
        ),
        "",
    ]
    for unit, label in (("wall", "wall time"), ("cpu", "the client process's CPU time")):
        columns = ["bare µs", "ours µs", "**ours / bare**", "open limiter / bare"]
        columns += ["query written / bare", "ours / written"]
        columns += [before] if before else []
        lines += [
            f"Per request, {label}:",
            "",
            "| library | concurrent calls | " + " | ".join(columns) + " |",
            "|---|---:|" + "---:|" * len(columns),
        ]
        for row in rows:
            cells = [
                f"{row[f'bare_{unit}'] * 1e6:.0f}",
                f"{row[f'ours_{unit}'] * 1e6:.0f}",
                f"**{row[f'ours_{unit}_ratio']:.3f}x**",
                f"{row[f'open_{unit}_ratio']:.3f}x",
                f"{row[f'written_{unit}_ratio']:.3f}x",
                f"{row[f'ours_{unit}_to_written']:.3f}x",
            ]
            if before:
                cells.append(f"{row[f'before_{unit}_ratio']:.3f}x")
            lines.append(
                f"| {row['library']} {row['version']} | {row['concurrency']} | "
                + " | ".join(cells)
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="the server sends no rate-limit headers (the limiter paces on its own)",
    )
    parser.add_argument(
        "--baseline", metavar="REF", help="also run 'ours' with the package of this git commit"
    )
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, plain=args.plain)
        return 0
    if args.one is not None:  # a child: one configuration, its figures as JSON
        side, name, url, concurrency, calls = args.one
        lib = importlib.import_module(name)
        pin(1)
        print(json.dumps(anyio.run(SIDES[side], lib, url, int(concurrency), int(calls))))
        return 0
    families = _families()
    work = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    baseline = extract(args.baseline, work / f"baseline-{args.baseline}") if args.baseline else None
    port_file = work / "url"
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_overhead", "--serve", str(port_file)]
        + (["--plain"] if args.plain else [])
    )
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists() or not port_file.read_text():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the uvicorn endpoint did not start")
            time.sleep(0.05)
        time.sleep(0.5)  # bound and written before uvicorn accepts: let it start
        url = port_file.read_text()
        load = os.getloadavg()[0]
        nice = os.nice(0)
        rows = measure(url, families, rounds=args.rounds, calls=args.calls, baseline=baseline)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    conditions = (
        f"Measured at {code_state()}. Client and server at nice {nice}, each on a CPU of its own "
        f"(``pin``); load average {load:.2f} at "
        f"the start, {os.getloadavg()[0]:.2f} at the end (the machine's 2 cores are shared with "
        "other work)."
    )
    command = "python -m benchmarks.bench_overhead" + "".join(f" {a}" for a in argv)
    table = render(
        rows,
        rounds=args.rounds,
        calls=args.calls,
        conditions=conditions,
        command=command,
        baseline=args.baseline,
    )
    if not args.no_write:
        (RESULTS.with_name("overhead-plain.md") if args.plain else RESULTS).write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
