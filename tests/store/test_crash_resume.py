"""The crash test: ``grok-imagine batch`` killed with SIGKILL again and again, then resumed.

The emulator is served on 127.0.0.1 by this test process, so its records outlive every run of
the command and say what was really sent and paid: POSTs and tasks per prompt, videos served.
Each run is killed at a point read from those records (never after a bare sleep):

1. right after the POST of a prompt whose answer the emulator holds back (``[slow:3]``): the
   task exists but the command never learns its id, the one case no journal can resolve;
2. later runs at points drawn from a seeded generator: after the k-th new task (right after a
   POST), after the k-th new status poll, after the k-th video served (mid-download).

Then the command runs to the end with the default policy, which must report the unresolvable
jobs as ambiguous (and pay nothing for them again), and once more with
``--on-ambiguous resubmit``, which completes them. The assertions: every prompt completed, every
video file present and byte for byte the emulator's, and one paid task per prompt except for
the jobs reported as ambiguous. The whole scenario is repeated with 5 % of requests answered
HTTP 500 and 2 % of connections dropped.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from grok_imagine_async.testing import EmulatorConfig, EmulatorStatistics, FaultConfig
from grok_imagine_async.testing._emulator import mp4_bytes

if TYPE_CHECKING:
    from grok_imagine_async.testing import Emulator

pytestmark = pytest.mark.integration

SCALE = 30  # generations of about a second instead of thirty
TOKEN = "crash-test-token"
JOBS = 24
SLOW = "[slow:3] clip 00, whose answer is always held back"
PROMPTS = [SLOW, *(f"clip {i:02d} of the crash test" for i in range(1, JOBS))]
# With faults on, two prompts make sure each fault happens at least once whatever the timing:
# a POST answered 500 (no task: retried) and one whose connection drops after the task exists.
REFUSED_ONCE = "[fail:500:1] clip 01, refused once"
DROPPED_ONCE = "[fail:drop:1] clip 02, answer dropped once"
FAULTY_PROMPTS = [SLOW, REFUSED_ONCE, DROPPED_ONCE, *PROMPTS[3:]]


def config(seed: int, faults: FaultConfig | None = None) -> EmulatorConfig:
    return EmulatorConfig(
        tokens={TOKEN: "pro"},
        period=60 / SCALE,
        time_scale=SCALE,
        duration_sigma=0.3,
        faults=faults or FaultConfig(),
        seed=seed,
    )


CLEAN = config(11)
FAULTY = config(12, FaultConfig(server_error_rate=0.05, drop_rate=0.02))

Counter = Callable[[EmulatorStatistics], int]
COUNTERS: dict[str, Counter] = {
    "task": lambda s: s.tasks_created,
    "poll": lambda s: s.requests_by_endpoint.get("GET /v1/status", 0),
    "video": lambda s: s.videos_served,
}


@dataclass
class CrashReport:
    """What a scenario did, printed at the end (``pytest -s``) for the record."""

    kills: list[str] = field(default_factory=list)
    runs: int = 0
    ambiguous: set[str] = field(default_factory=set)


def command(out: Path, prompts: Path, url: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "grok_imagine_async._cli", "batch", str(prompts),
        "--out", str(out), "--no-progress", "--max-in-flight", "4",
        "--base-url", url, "--api-key", TOKEN, "--plan", "pro",
        "--time-scale", str(SCALE), *extra,
    ]  # fmt: skip


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GROK_IMAGINE_")}


def run_until(
    argv: list[str],
    emulator: Emulator,
    condition: Callable[[EmulatorStatistics], bool],
    logs: Path,
) -> bool:
    """Run the command; SIGKILL it as soon as ``condition`` holds. True if it was killed."""
    with (logs / "stdout").open("a") as out, (logs / "stderr").open("a") as err:
        process = subprocess.Popen(argv, env=env(), stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + 40
            while process.poll() is None:
                if condition(emulator.statistics()):
                    process.send_signal(signal.SIGKILL)
                    process.wait(timeout=10)
                    return True
                assert time.monotonic() < deadline, "a run took more than 40 s"
                time.sleep(0.002)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode in (0, 1), (logs / "stderr").read_text()
    return False


def run_to_end(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env(), capture_output=True, text=True, timeout=60)


def after(counter: str, more: int, emulator: Emulator) -> Callable[[EmulatorStatistics], bool]:
    read = COUNTERS[counter]
    target = read(emulator.statistics()) + more
    return lambda stats: read(stats) >= target


def manifest(out: Path) -> list[dict[str, Any]]:
    text = (out / "manifest.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def crash_and_resume(
    emulator: Emulator, url: str, tmp_path: Path, seed: int, lines: list[str]
) -> CrashReport:
    rng = random.Random(seed)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "videos"
    argv = command(out, prompts, url)
    report = CrashReport()

    # 1. Right after a POST whose answer is held back: the task exists, its id is unknowable.
    slow_task = lambda stats: stats.tasks_per_prompt.get(SLOW, 0) >= 1  # noqa: E731
    assert run_until(argv, emulator, slow_task, tmp_path), "the first run must be killed"
    report.kills.append("after the held-back POST")
    report.runs += 1

    # 2. Random points, each relative to what the emulator saw when the run started.
    points = [("task", rng.randint(1, 4)), ("poll", rng.randint(2, 12))]
    points += [("video", rng.randint(1, 4)), ("task", rng.randint(1, 3))]
    for counter, more in points:
        report.runs += 1
        if run_until(argv, emulator, after(counter, more, emulator), tmp_path):
            report.kills.append(f"after {more} new {counter}(s)")

    # 3. To the end with the default policy: what cannot be known is reported, not resent.
    final = run_to_end(argv)
    report.runs += 1
    entries = manifest(out)
    report.ambiguous = {e["prompt"] for e in entries if e["status"] == "ambiguous"}
    assert SLOW in report.ambiguous
    assert final.returncode == 1, final.stderr
    assert f"{len(report.ambiguous)} jobs may or may not have been submitted" in final.stdout
    assert "--on-ambiguous resubmit" in final.stdout
    assert {e["status"] for e in entries} <= {"completed", "ambiguous"}
    before = emulator.statistics()

    # 4. The user accepts to maybe pay twice for those: they complete.
    last = run_to_end([*argv, "--on-ambiguous", "resubmit"])
    report.runs += 1
    assert last.returncode == 0, last.stdout + last.stderr

    stats = emulator.statistics()
    entries = manifest(out)
    assert len(entries) == JOBS
    assert {e["status"] for e in entries} == {"completed"}
    assert sorted(e["prompt"] for e in entries) == sorted(lines)
    for entry in entries:
        prompt = entry["prompt"]
        if prompt in report.ambiguous:
            # One more task at most, for its resubmission; under this policy the client also
            # resends a resubmission whose answer is dropped: one more per drop of that run.
            paid = stats.tasks_per_prompt[prompt] - before.tasks_per_prompt.get(prompt, 0)
            assert 0 <= paid <= 1 + stats.dropped - before.dropped, (prompt, report)
        else:
            assert stats.tasks_per_prompt[prompt] == 1, (prompt, report)
        assert len(entry["files"]) == 2
        for name in entry["files"]:
            index = int(name.rsplit("_", 1)[1].removesuffix(".mp4")) - 1
            shade = zlib.crc32(f"{entry['task_id']}/{index}".encode()) % 256
            assert (out / name).read_bytes() == mp4_bytes(shade), name
    videos = sorted(p.name for p in out.iterdir() if p.suffix == ".mp4")
    assert videos == sorted(name for e in entries for name in e["files"])
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]
    assert len(report.kills) >= 3, report
    print(
        f"\ncrash test (seed {seed}): {report.runs} runs, {len(report.kills)} SIGKILLs "
        f"({'; '.join(report.kills)}); POSTs per prompt "
        f"{sorted(stats.posts_per_prompt.values())}; tasks per prompt "
        f"{sorted(stats.tasks_per_prompt.values())}; ambiguous reported "
        f"{len(report.ambiguous)}; 500s {stats.server_errors}; dropped {stats.dropped}"
    )
    return report


@pytest.mark.grok_emulator(CLEAN)
def test_killed_again_and_again_no_job_lost_none_paid_twice(
    grok_emulator_env: Mapping[str, str], grok_emulator: Emulator, tmp_path: Path
) -> None:
    url = grok_emulator_env["GROK_IMAGINE_BASE_URL"]
    crash_and_resume(grok_emulator, url, tmp_path, seed=1, lines=PROMPTS)
    stats = grok_emulator.statistics()
    # No fault injected: every POST but the ambiguous ones' second created exactly one task.
    assert stats.server_errors == stats.dropped == 0
    assert sum(stats.posts_per_prompt.values()) == stats.tasks_created


@pytest.mark.grok_emulator(FAULTY)
def test_killed_again_and_again_with_500s_and_dropped_connections(
    grok_emulator_env: Mapping[str, str], grok_emulator: Emulator, tmp_path: Path
) -> None:
    url = grok_emulator_env["GROK_IMAGINE_BASE_URL"]
    report = crash_and_resume(grok_emulator, url, tmp_path, seed=2, lines=FAULTY_PROMPTS)
    stats = grok_emulator.statistics()
    assert stats.server_errors >= 1 and stats.dropped >= 1  # the faults really happened
    # A dropped answer after the task was created is the live twin of a crash after a POST.
    assert DROPPED_ONCE in report.ambiguous
    # Paid tasks are what counts: a POST answered 500 created none and was retried.
    assert stats.posts_per_prompt[REFUSED_ONCE] >= 2
