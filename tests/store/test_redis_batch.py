"""Two ``grok-imagine batch INPUT --journal redis://...`` processes splitting one batch.

Real processes, a real redis-server and the emulator served on 127.0.0.1; one process is
SIGKILLed once every job is submitted, and run again: every job completes once, none is paid
twice, and the rate limit holds over both.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from _redis_worker import RedisServer

from grok_imagine_async import RateLimit
from grok_imagine_async._cli.batch import batch_namespace
from grok_imagine_async._scheduling.inputs import JobFile
from grok_imagine_async.abc import StoreState

pytest.importorskip("redis.asyncio", reason='needs the "redis" extra')
pytest.importorskip("uvicorn", reason='needs the "emulator" extra')

from grok_imagine_async.redis import RedisJobStore
from grok_imagine_async.testing import Emulator, EmulatorConfig, serve_in_thread

# Real processes on a shared machine: more than the default 120 s may be needed under load.
pytestmark = [pytest.mark.redis, pytest.mark.integration, pytest.mark.timeout(300)]

TOKEN = "sk-test-SECRET-batch-token"
SCALE = 20.0
LIMIT = RateLimit(100, 60.0 / SCALE)  # the free plan, as --time-scale 20 paces it
JOBS = 16
TIMEOUT = 90.0


def wait_for(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def served() -> Iterator[tuple[str, Emulator]]:
    config = EmulatorConfig(
        tokens={TOKEN: LIMIT}, duration_median=30.0, duration_sigma=0.2, time_scale=SCALE, seed=5
    )
    emulator = Emulator(config)
    with serve_in_thread(emulator) as url:
        yield url, emulator


def batch(input_file: Path, out: Path, *, redis_url: str, base_url: str) -> subprocess.Popen[str]:
    argv = [
        sys.executable, "-m", "grok_imagine_async._cli", "batch", str(input_file),
        "--out", str(out), "--journal", redis_url, "--base-url", base_url,
        "--time-scale", str(SCALE), "--lease", "3", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "GROK_IMAGINE_API_KEY": TOKEN, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def states(
    redis_url: str, namespace: str, keys: frozenset[str]
) -> list[tuple[StoreState | None, str]]:
    """Each job's recorded state and owner, as any process reads them from Redis."""

    async def read() -> list[tuple[StoreState | None, str]]:
        async with RedisJobStore(redis_url, api_key=TOKEN, namespace=namespace) as store:
            found = []
            for key in sorted(keys):
                job = await store.peek(key)
                state = None if job is None or job.record is None else job.record.state
                found.append((state, job.owner if job is not None else ""))
            return found

    return anyio.run(read)


def process_id(process: subprocess.Popen[str]) -> str:
    """The store id a batch process announces on its first line."""
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.search(r"as process ([0-9a-f]{16})", line)
    assert found is not None, line + process.stdout.read()
    return found[1]


def manifest(out: Path) -> list[dict[str, object]]:
    path = out / "manifest.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_processes_split_a_batch_and_a_killed_one_rerun_finishes_it(
    tmp_path: Path, redis_server: RedisServer, served: tuple[str, Emulator]
) -> None:
    url, emulator = served
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"a paper crane number {n}\n" for n in range(JOBS)))
    keys = JobFile(prompts).check().keys
    namespace = batch_namespace(keys, url)
    out_a, out_b = tmp_path / "host-a", tmp_path / "host-b"
    a = batch(prompts, out_a, redis_url=redis_server.url, base_url=url)
    b = batch(prompts, out_b, redis_url=redis_server.url, base_url=url)
    submitted = {StoreState.SUBMITTED, StoreState.COMPLETED}
    try:
        ids = {process_id(a): a, process_id(b): b}
        wait_for(
            "every job to be submitted",
            lambda: all(s in submitted for s, _ in states(redis_server.url, namespace, keys)),
        )
        owners = [owner for _, owner in states(redis_server.url, namespace, keys)]
        victim_id = max(ids, key=owners.count)
        victim, survivor = ids[victim_id], next(p for i, p in ids.items() if i != victim_id)
        assert owners.count(victim_id) > 0
        victim.send_signal(signal.SIGKILL)  # its jobs are adopted by the other once its lease ends
        victim.communicate(timeout=10)
        out, _ = survivor.communicate(timeout=TIMEOUT)
        assert survivor.returncode == 0, out
        rerun_out = out_a if victim is a else out_b
        rerun = batch(prompts, rerun_out, redis_url=redis_server.url, base_url=url)
        again, _ = rerun.communicate(timeout=TIMEOUT)
        assert rerun.returncode == 0, again  # nothing left: every job completed
    finally:
        for process in (a, b):
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=10)
    assert all(s is StoreState.COMPLETED for s, _ in states(redis_server.url, namespace, keys))
    stats = emulator.statistics()
    assert dict(stats.duplicate_submissions) == {}
    assert stats.tasks_created == JOBS
    assert stats.rate_limited == 0
    for out_dir in (out_a, out_b):  # each host's manifest lists the whole batch, from Redis
        lines = manifest(out_dir)
        assert sorted(line["key"] for line in lines) == sorted(keys)
        assert {line["status"] for line in lines} == {"completed"}

    def holders(key: str) -> set[Path]:
        return {v.parent for v in (*out_a.glob("*.mp4"), *out_b.glob("*.mp4")) if key in v.name}

    assert all(len(holders(key)) == 1 for key in keys)  # downloaded once, by one process
    assert TOKEN not in out + again


def test_two_processes_go_on_through_a_redis_outage_and_pay_nothing_twice(
    tmp_path: Path, redis_server: RedisServer, served: tuple[str, Emulator]
) -> None:
    url, emulator = served
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"a glass harbour number {n}\n" for n in range(JOBS)))
    keys = JobFile(prompts).check().keys
    namespace = batch_namespace(keys, url)
    processes = [
        batch(prompts, tmp_path / name, redis_url=redis_server.url, base_url=url)
        for name in ("host-a", "host-b")
    ]
    try:
        for process in processes:
            process_id(process)  # started: its store is open (one that cannot open fails)
        wait_for(
            "the first jobs to be submitted",
            lambda: sum(s is not None for s, _ in states(redis_server.url, namespace, keys)) > 2,
        )
        redis_server.kill()
        before = emulator.statistics().requests_total
        wait_for(
            "requests while Redis is down",
            lambda: emulator.statistics().requests_total > before + 4,
        )
        redis_server.start()  # empty: each process writes its jobs back
        outputs = [process.communicate(timeout=TIMEOUT)[0] for process in processes]
        assert [process.returncode for process in processes] == [0, 0], outputs
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=10)
    stats = emulator.statistics()
    assert dict(stats.duplicate_submissions) == {}
    assert stats.tasks_created == JOBS
    assert stats.rate_limited == 0
    assert emulator.max_window_count(LIMIT.period, TOKEN) <= LIMIT.requests


def test_a_rerun_lists_a_job_whose_manifest_line_a_killed_process_never_wrote(
    tmp_path: Path, redis_server: RedisServer, served: tuple[str, Emulator]
) -> None:
    # A process killed after a job finished (Redis: completed, its videos in --out) and before
    # it appended the job's line leaves the manifest short; the line is removed here to make
    # that state without racing a kill against one write.
    url, emulator = served
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"an origami boat number {n}\n" for n in range(4)))
    out = tmp_path / "videos"
    first, _ = batch(prompts, out, redis_url=redis_server.url, base_url=url).communicate(
        timeout=TIMEOUT
    )
    lines = manifest(out)
    assert len(lines) == 4 and {line["status"] for line in lines} == {"completed"}, first
    lost, kept = lines[0], lines[1:]
    (out / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in kept))
    rerun = batch(prompts, out, redis_url=redis_server.url, base_url=url)
    again, _ = rerun.communicate(timeout=TIMEOUT)
    assert rerun.returncode == 0, again
    assert sorted(line["key"] for line in manifest(out)) == sorted(line["key"] for line in lines)
    [restored] = [line for line in manifest(out) if line["key"] == lost["key"]]
    assert restored["task_id"] == lost["task_id"] and restored["files"] == lost["files"]
    assert emulator.statistics().tasks_created == 4  # listed again, not generated again


def test_a_rerun_after_redis_lost_every_record_pays_for_nothing_in_out(
    tmp_path: Path, redis_server: RedisServer, served: tuple[str, Emulator]
) -> None:
    import redis

    url, emulator = served
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"a paper lantern number {n}\n" for n in range(4)))
    out = tmp_path / "videos"
    first, _ = batch(prompts, out, redis_url=redis_server.url, base_url=url).communicate(
        timeout=TIMEOUT
    )
    assert {line["status"] for line in manifest(out)} == {"completed"}, first
    with redis.Redis.from_url(redis_server.url) as client:
        jobs = list(client.scan_iter("grok-imagine:jobs:*:job:*"))
        assert len(jobs) == 4
        assert {client.ttl(name) for name in jobs} == {-1}  # kept for the life of the batch
        client.flushall()  # evicted, expired, or a Redis without persistence restarted
    rerun = batch(prompts, out, redis_url=redis_server.url, base_url=url)
    again, _ = rerun.communicate(timeout=TIMEOUT)
    assert rerun.returncode == 0, again
    assert "recorded again from it, not paid again" in again
    assert emulator.statistics().tasks_created == 4  # nothing paid twice
    assert {line["status"] for line in manifest(out)} == {"completed"}


def test_two_inputs_with_the_same_ids_are_two_batches_not_one(
    tmp_path: Path, redis_server: RedisServer, served: tuple[str, Emulator]
) -> None:
    url, emulator = served
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    for path, subject in ((first, "a red kite"), (second, "a blue whale")):
        path.write_text(
            "".join(json.dumps({"id": str(n), "prompt": f"{subject} {n}"}) + "\n" for n in range(3))
        )
    outputs = []
    for path in (first, second):
        run = batch(path, tmp_path / path.stem, redis_url=redis_server.url, base_url=url)
        output, _ = run.communicate(timeout=TIMEOUT)
        assert run.returncode == 0, output
        assert {line["status"] for line in manifest(tmp_path / path.stem)} == {"completed"}
        outputs.append(output)
    assert "was done with another request" in outputs[1]  # said, not silent
    assert emulator.statistics().tasks_created == 6  # the second input's prompts were made
    prompts = {line["prompt"] for line in manifest(tmp_path / "second")}
    assert prompts == {f"a blue whale {n}" for n in range(3)}
