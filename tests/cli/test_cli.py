"""The ``grok-imagine`` command line, end to end: ``main(argv)`` in process (the ``run_cli``
fixture), and in a subprocess where the process is the point (Ctrl-C, a file-size limit).

Against the emulator served by uvicorn on 127.0.0.1 (its statistics tell what was really sent;
see ``cli_support``), and with ``--emulate``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from cli_support import SCALE, TOKEN, against, fast_emulator, manifest, prompts_file

from grok_imagine_async._cli.common import command_line
from grok_imagine_async.testing import EmulatorConfig
from grok_imagine_async.testing._emulator import mp4_bytes

if TYPE_CHECKING:
    from _redis_worker import RedisServer
    from conftest import RunCli

    from grok_imagine_async.testing import Emulator

pytestmark = pytest.mark.integration


def cli_env() -> dict[str, str]:
    """The environment without any GROK_IMAGINE_* setting of the developer's shell."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GROK_IMAGINE_")}


def expected_video(task_id: str, file_name: str) -> bytes:
    """The bytes the emulator serves for the video a file name stands for."""
    index = int(file_name.rsplit("_", 1)[1].split(".")[0]) - 1
    return mp4_bytes(zlib.crc32(f"{task_id}/{index}".encode()) % 256)


def posts(emulator: Emulator) -> int:
    return emulator.statistics().requests_by_endpoint.get("POST /v1/generate", 0)


def requests(emulator: Emulator) -> int:
    return emulator.statistics().requests_total


@fast_emulator
def test_batch_runs_to_completion_and_a_rerun_sends_nothing(
    run_cli: RunCli, grok_emulator_env: Mapping[str, str], grok_emulator: Emulator, tmp_path: Path
) -> None:
    prompts = prompts_file(
        tmp_path, "# three videos", "a red kite", "", "a blue whale", "a red kite"
    )
    out = tmp_path / "videos"
    done = run_cli(
        "batch", str(prompts), "--out", str(out), *against(grok_emulator_env), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout + done.stderr

    stats = grok_emulator.statistics()
    assert dict(stats.tasks_per_prompt) == {"a red kite": 2, "a blue whale": 1}
    assert dict(stats.posts_per_prompt) == {"a red kite": 2, "a blue whale": 1}
    entries = manifest(out)
    assert [e["prompt"] for e in entries].count("a red kite") == 2
    assert {e["status"] for e in entries} == {"completed"}
    for entry in entries:
        assert len(entry["files"]) == 2
        for name in entry["files"]:
            assert (out / name).read_bytes() == expected_video(entry["task_id"], name)
    assert "completed" in done.stdout and "manifest" in done.stdout

    before = requests(grok_emulator)
    again = run_cli(
        "batch", str(prompts), "--out", str(out), *against(grok_emulator_env), cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    assert requests(grok_emulator) == before  # everything came from the journal
    assert manifest(out) == entries


@fast_emulator
def test_jsonl_ids_name_the_files_and_defaults_apply(
    run_cli: RunCli, grok_emulator_env: Mapping[str, str], tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        '{"id": "intro/shot 1", "prompt": "a harbour at dusk"}\n'
        '{"id": "outro", "prompt": "a harbour at dawn", "ratio": "1:1"}\n'
    )
    out = tmp_path / "out"
    done = run_cli(
        "batch", str(jobs), "--out", str(out), "--ratio", "3:2", *against(grok_emulator_env),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in out.glob("*.mp4"))
    assert names == ["intro_shot_1_1.mp4", "intro_shot_1_2.mp4", "outro_1.mp4", "outro_2.mp4"]
    entries = {e["key"]: e for e in manifest(out)}
    assert set(entries) == {"intro/shot 1", "outro"}
    # The server echoes each task's request: the default ratio reached the first job only.
    ratios = {}
    for key, entry in entries.items():
        answer = httpx.get(
            f"{grok_emulator_env['GROK_IMAGINE_BASE_URL']}/v1/status",
            params={"task_id": entry["task_id"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        ratios[key] = answer.json()["data"]["request"]["ratio"]
    assert ratios == {"intro/shot 1": "3:2", "outro": "1:1"}


@fast_emulator
def test_failed_jobs_give_exit_status_1_and_manifest_errors(
    run_cli: RunCli, grok_emulator_env: Mapping[str, str], grok_emulator: Emulator, tmp_path: Path
) -> None:
    prompts = prompts_file(tmp_path, "a good one", "a refused one [fail:content]")
    out = tmp_path / "out"
    done = run_cli(
        "batch", str(prompts), "--out", str(out), *against(grok_emulator_env), cwd=tmp_path
    )
    assert done.returncode == 1, done.stderr
    by_prompt = {e["prompt"]: e for e in manifest(out)}
    assert by_prompt["a good one"]["status"] == "completed"
    refused = by_prompt["a refused one [fail:content]"]
    assert (refused["status"], refused["failure_class"], refused["files"]) == (
        "failed",
        "content_policy",
        [],
    )
    assert "Inappropriate content" in refused["error"]
    assert "content_policy" in done.stdout
    # Content refusals are never resubmitted, not even by a re-run.
    again = run_cli(
        "batch", str(prompts), "--out", str(out), *against(grok_emulator_env), cwd=tmp_path
    )
    assert again.returncode == 1
    assert grok_emulator.statistics().tasks_per_prompt[refused["prompt"]] == 1


@fast_emulator
def test_a_rerun_with_a_larger_budget_runs_what_the_budget_refused(
    run_cli: RunCli, grok_emulator_env: Mapping[str, str], grok_emulator: Emulator, tmp_path: Path
) -> None:
    prompts = prompts_file(tmp_path, "first", "second", "third")
    argv = ["batch", str(prompts), "--out", str(tmp_path / "o"), *against(grok_emulator_env)]
    short = run_cli(*argv, "--max-credits", "80", "--max-in-flight", "1", cwd=tmp_path)
    assert short.returncode == 1, short.stderr
    statuses = sorted((e["status"], e["failure_class"]) for e in manifest(tmp_path / "o"))
    assert statuses == [("completed", None), ("completed", None), ("failed", "budget_exceeded")]
    assert grok_emulator.statistics().tasks_created == 2

    enough = run_cli(*argv, "--max-credits", "120", cwd=tmp_path)
    assert enough.returncode == 0, enough.stderr
    assert "1 job that failed without being paid" in enough.stderr
    stats = grok_emulator.statistics()
    assert dict(stats.tasks_per_prompt) == {"first": 1, "second": 1, "third": 1}
    assert {e["status"] for e in manifest(tmp_path / "o")} == {"completed"}


@fast_emulator
def test_a_job_whose_retry_the_budget_refused_runs_on_a_rerun_with_more(
    run_cli: RunCli, grok_emulator_env: Mapping[str, str], grok_emulator: Emulator, tmp_path: Path
) -> None:
    prompts = prompts_file(tmp_path, "steady", "shaky [fail:network:1]")
    argv = ["batch", str(prompts), "--out", str(tmp_path / "o"), *against(grok_emulator_env)]
    short = run_cli(*argv, "--max-credits", "80", "--max-in-flight", "1", cwd=tmp_path)
    assert short.returncode == 1, short.stderr
    [shaky] = [e for e in manifest(tmp_path / "o") if "shaky" in e["prompt"]]
    assert (shaky["failure_class"], shaky["credits"]) == ("budget_exceeded", 40)  # its retry
    enough = run_cli(*argv, "--max-credits", "200", cwd=tmp_path)
    assert enough.returncode == 0, enough.stdout + enough.stderr
    assert {e["status"] for e in manifest(tmp_path / "o")} == {"completed"}
    assert grok_emulator.statistics().tasks_created == 3  # steady was not paid again


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("jobs.jsonl", '{"prompt": "fine"}\n{"prompt": "broken",\n', "jobs.jsonl:2: bad JSON"),
        ("jobs.jsonl", '{"prompt": "fine"}\n\n{"mode": "fun"}\n', "jobs.jsonl:3: missing prompt"),
        ("jobs.csv", "prompt,colour\na cat,red\n", "jobs.csv:1: unknown column 'colour'"),
        ("jobs.csv", "id,prompt\na,one\na,two\n", "jobs.csv:3: duplicate id 'a'"),
    ],
)
@fast_emulator
def test_input_errors_name_file_and_line_and_submit_nothing(
    run_cli: RunCli,
    grok_emulator_env: Mapping[str, str],
    grok_emulator: Emulator,
    tmp_path: Path,
    name: str,
    text: str,
    where: str,
) -> None:
    path = tmp_path / name
    path.write_text(text)
    out = tmp_path / "out"
    done = run_cli("batch", name, "--out", str(out), *against(grok_emulator_env), cwd=tmp_path)
    assert done.returncode == 2
    assert where in done.stderr
    assert "nothing was submitted" in done.stderr
    assert requests(grok_emulator) == 0
    assert not out.exists()


@fast_emulator
def test_a_rejected_token_is_a_usage_error_and_never_printed(
    run_cli: RunCli, grok_emulator_env: Mapping[str, str], grok_emulator: Emulator, tmp_path: Path
) -> None:
    prompts = prompts_file(tmp_path, "a cat")
    secret = "sk-WRONG-secret-value-123"
    argv = against(grok_emulator_env)
    argv[argv.index(TOKEN)] = secret
    done = run_cli("batch", str(prompts), "--out", str(tmp_path / "o"), *argv, cwd=tmp_path)
    assert done.returncode == 2
    assert "401" in done.stderr or "nauthori" in done.stderr
    assert secret not in done.stdout + done.stderr
    assert posts(grok_emulator) == 1  # refused with 401: not a task, not a charge
    assert grok_emulator.statistics().tasks_created == 0
    # With the right token, the refused job is submitted: no "outcome unknown" for it.
    again = run_cli(
        "batch", str(prompts), "--out", str(tmp_path / "o"), *against(grok_emulator_env),
        cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert grok_emulator.statistics().tasks_created == 1


@fast_emulator
def test_a_journal_is_tied_to_its_endpoint(
    run_cli: RunCli, grok_emulator_env: Mapping[str, str], tmp_path: Path
) -> None:
    prompts = prompts_file(tmp_path, "a cat")
    out = tmp_path / "out"
    journal = out / "shared.db"
    argv = ["batch", str(prompts), "--out", str(out), "--journal", str(journal)]
    assert run_cli(*argv, *against(grok_emulator_env), cwd=tmp_path).returncode == 0
    done = run_cli(*argv, "--emulate", "--time-scale", "60", cwd=tmp_path)
    assert done.returncode == 2
    assert "holds jobs run against" in done.stderr


@pytest.mark.grok_emulator(
    EmulatorConfig(tokens={TOKEN: "pro"}, period=60 / SCALE, time_scale=SCALE, seed=3)
)
def test_ctrl_c_stops_cleanly_names_the_resume_command_and_resume_pays_nothing_twice(
    run_cli: RunCli, grok_emulator_env: Mapping[str, str], grok_emulator: Emulator, tmp_path: Path
) -> None:
    prompts = prompts_file(tmp_path, *(f"clip {i} [duration:3]" for i in range(6)))
    out = tmp_path / "out"
    argv = ["batch", str(prompts), "--out", str(out), *against(grok_emulator_env)]
    with (tmp_path / "stdout").open("w") as stdout, (tmp_path / "stderr").open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "grok_imagine_async._cli", *argv],
            cwd=tmp_path,
            env=cli_env(),
            stdout=stdout,
            stderr=stderr,
        )
        wait_for(lambda: grok_emulator.statistics().tasks_created == 6, process)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
    text = (tmp_path / "stdout").read_text() + (tmp_path / "stderr").read_text()
    assert code == 130, text
    assert "Interrupted. Every job is recorded in the journal." in text
    assert "Jobs still in flight: 6. They go on generating; the next run polls them" in text
    assert "run the same command again:" in text
    assert command_line(argv) in text
    assert TOKEN not in text
    assert {e["status"] for e in manifest(out)} == {"running"}

    again = run_cli(*argv, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    stats = grok_emulator.statistics()
    assert set(stats.posts_per_prompt.values()) == {1}
    assert stats.tasks_created == 6
    assert {e["status"] for e in manifest(out)} == {"completed"}


@fast_emulator
def test_a_full_disk_under_the_journal_loses_no_paid_task(
    run_cli: RunCli, grok_emulator_env: Mapping[str, str], grok_emulator: Emulator, tmp_path: Path
) -> None:
    resource = pytest.importorskip("resource")  # POSIX: a file-size limit stands for the disk
    prompts = prompts_file(tmp_path, *(f"clip {i}" for i in range(12)))
    argv = ["batch", str(prompts), "--out", str(tmp_path / "o"), *against(grok_emulator_env)]

    def full_disk() -> None:  # the journal's WAL cannot grow past 60 kB
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

    first = subprocess.run(
        [sys.executable, "-m", "grok_imagine_async._cli", *argv, "--no-progress"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=60,
        preexec_fn=full_disk,
    )  # fmt: skip
    assert first.returncode == 1, first.stderr
    assert "the next run polls them" in first.stderr  # a paid task the journal lost, kept
    again = run_cli(*argv, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "they are polled, not sent again" in again.stderr
    assert "--on-ambiguous resubmit" not in again.stdout + again.stderr
    stats = grok_emulator.statistics()
    assert stats.tasks_created == 12
    assert dict(stats.duplicate_submissions) == {}


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert process.poll() is None, "the command ended before the condition held"
        assert time.monotonic() < deadline, "condition not reached in 30 s"
        time.sleep(0.005)


def test_emulate_runs_a_batch_with_no_account(run_cli: RunCli, tmp_path: Path) -> None:
    prompts = prompts_file(tmp_path, "one", "two", "three")
    out = tmp_path / "videos"
    done = run_cli(
        "batch", str(prompts), "--emulate", "--time-scale", "60", "--out", str(out), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert len(list(out.glob("*.mp4"))) == 6
    assert (out / "journal-emulated.db").exists() and not (out / "journal.db").exists()
    assert {e["status"] for e in manifest(out)} == {"completed"}


@pytest.mark.integration
def test_emulate_keeps_its_tasks_so_a_rerun_after_ctrl_c_polls_them(
    run_cli: RunCli, tmp_path: Path
) -> None:
    prompts = prompts_file(
        tmp_path, *(f"clip {i} [duration:3]" for i in range(3))
    )  # seconds, unscaled
    out = tmp_path / "videos"
    argv = ["batch", str(prompts), "--emulate", "--time-scale", "60", "--out", str(out)]
    stdout = tmp_path / "stdout"
    with stdout.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "grok_imagine_async._cli", *argv, "--log-level", "debug"],
            cwd=tmp_path,
            env=cli_env(),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        # Interrupted as soon as the third task is paid for (the client logs each at debug
        # level), while all three are still generating in the run's own emulator.
        wait_for(lambda: stdout.read_text().count("submitted task") == 3, process)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130
    first = stdout.read_text()
    assert "The emulator kept its tasks in" in first and "will start again" not in first
    assert first.count("credits this run") == 1
    assert "credits this run  120 (emulated, nothing paid)" in first and "USD" not in first
    assert (out / "journal-emulated-tasks.json").exists()
    in_flight = {e["task_id"] for e in manifest(out)}

    again = run_cli(*argv, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "will start again" not in again.stderr
    assert "credits this run  0 (emulated" in again.stdout
    assert {e["status"] for e in manifest(out)} == {"completed"}
    assert {e["task_id"] for e in manifest(out)} == in_flight and len(in_flight) == 3


def test_name_names_the_videos_by_position_and_prompt(run_cli: RunCli, tmp_path: Path) -> None:
    prompts_file(tmp_path, "A red kite, at dawn", "an owl")
    argv = ["batch", "prompts.txt", "--emulate", "--time-scale", "60", "--out", "v"]
    done = run_cli(*argv, "--name", "{index:02d}-{slug}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    names = sorted(path.name for path in (tmp_path / "v").glob("*.mp4"))
    assert names == ["01-a-red-kite-at-dawn_1.mp4", "01-a-red-kite-at-dawn_2.mp4",
                     "02-an-owl_1.mp4", "02-an-owl_2.mp4"]  # fmt: skip
    refused = run_cli(*argv, "--name", "{slug}", cwd=tmp_path)
    assert refused.returncode == 2 and "--name: name template '{slug}'" in refused.stderr


def test_the_example_file_is_a_valid_batch_of_twenty(tmp_path: Path) -> None:
    from grok_imagine_async._scheduling.inputs import JobFile

    example = Path(__file__).parents[2] / "examples" / "prompts.txt"
    assert JobFile(example).check().jobs == 20


@fast_emulator
def test_generate_then_status(
    run_cli: RunCli, grok_emulator_env: Mapping[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "one"
    done = run_cli(
        "generate", "a glass of water on a table", "--out", str(out), *against(grok_emulator_env),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    paths = [Path(line) for line in done.stdout.splitlines()]
    assert len(paths) == 2 and all(p.parent == out.resolve() for p in paths)
    task_id = paths[0].name.rsplit("_", 1)[0]
    assert paths[0].read_bytes() == expected_video(task_id, paths[0].name)
    assert f"grok-imagine status {task_id}" not in done.stderr  # only shown when needed

    status = run_cli("status", task_id, *against(grok_emulator_env), cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"{task_id}  completed")
    assert "a glass of water" in status.stdout

    as_json = run_cli("status", task_id, "--json", *against(grok_emulator_env), cwd=tmp_path)
    data = json.loads(as_json.stdout)
    assert (data["task_id"], data["status"], len(data["videos"])) == (task_id, "completed", 2)


@fast_emulator
def test_status_of_an_unknown_task_and_a_failed_one(
    run_cli: RunCli, grok_emulator_env: Mapping[str, str], tmp_path: Path
) -> None:
    unknown = run_cli("status", "task_nope", *against(grok_emulator_env), cwd=tmp_path)
    assert unknown.returncode == 1
    assert "no task 'task_nope'" in unknown.stderr
    failed = run_cli(
        "generate", "refused [fail:content]", "--out", str(tmp_path), *against(grok_emulator_env),
        cwd=tmp_path,
    )  # fmt: skip
    assert failed.returncode == 1
    assert "content_policy" in failed.stderr


@pytest.mark.redis
@fast_emulator
def test_batch_shares_its_quota_through_redis(
    run_cli: RunCli,
    grok_emulator_env: Mapping[str, str],
    grok_emulator: Emulator,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    redis = pytest.importorskip("redis", reason='needs the "redis" extra')
    prompts = prompts_file(tmp_path, "one", "two")
    argv = ["batch", str(prompts), "--out", str(tmp_path / "o"), "--redis-url", redis_server.url]
    done = run_cli(*argv, *against(grok_emulator_env), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with redis.Redis.from_url(redis_server.url) as client:
        keys = client.keys("*")
    assert keys, "the shared schedule lives in Redis"
    assert all(TOKEN.encode() not in key for key in keys)  # only a hash names the token
    assert grok_emulator.statistics().tasks_created == 2


@fast_emulator
@pytest.mark.parametrize("command", [["status", "task-1"], ["generate", "a cat", "--out", "o"]])
def test_a_rejected_token_exits_2_from_every_command(
    run_cli: RunCli, grok_emulator_env: Mapping[str, str], command: list[str], tmp_path: Path
) -> None:
    # status exited 1 (the guide's "a task failed or is unknown"); the guide says 2 for it.
    secret = "sk-WRONG-secret-value-456"
    argv = against(grok_emulator_env)
    argv[argv.index(TOKEN)] = secret
    done = run_cli(*command, *argv, cwd=tmp_path)
    assert done.returncode == 2
    assert secret not in done.stdout + done.stderr


@fast_emulator
@pytest.mark.parametrize(
    "command",
    [
        ["status", "task-1"],
        ["generate", "a cat", "--out", "o"],
        ["batch", "prompts.txt", "--out", "o", "--no-progress"],
    ],
)
def test_a_rejected_token_says_where_the_token_comes_from(
    run_cli: RunCli, grok_emulator_env: Mapping[str, str], command: list[str], tmp_path: Path
) -> None:
    # It said "401 UNAUTHORIZED: Unauthorized: invalid API key", and not what to change.
    prompts_file(tmp_path, "a cat")
    argv = against(grok_emulator_env)
    argv[argv.index(TOKEN)] = "sk-wrong"
    done = run_cli(*command, *argv, cwd=tmp_path)
    assert done.returncode == 2
    assert "the API token was refused" in done.stderr
    assert "check --api-key or $GROK_IMAGINE_API_KEY" in done.stderr


def test_max_at_risk_reaches_the_batchs_breaker(
    run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from grok_imagine_async._cli import batch as cli_batch

    seen: list[Any] = []
    real = cli_batch.JobScheduler

    def spy(client: Any, config: Any, **options: Any) -> Any:
        seen.append(config.breaker)
        return real(client, config, **options)

    monkeypatch.setattr(cli_batch, "JobScheduler", spy)
    prompts = prompts_file(tmp_path, "one", "two")
    argv = ("batch", str(prompts), "--emulate", "--time-scale", "60")
    for extra, expected in (((), None), (("--max-at-risk", "12"), 12)):
        out = tmp_path / f"videos-{expected}"
        done = run_cli(*argv, "--out", str(out), *extra, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert seen.pop().max_at_risk == expected
    refused = run_cli(*argv, "--out", str(tmp_path / "x"), "--max-at-risk", "0", cwd=tmp_path)
    assert refused.returncode == 2 and "--max-at-risk" in refused.stderr


def test_a_lease_that_is_not_positive_is_refused_naming_the_option(
    run_cli: RunCli, tmp_path: Path
) -> None:
    prompts = prompts_file(tmp_path, "one")
    done = run_cli(
        "batch", str(prompts), "--out", str(tmp_path / "v"), "--lease", "0", cwd=tmp_path
    )
    assert done.returncode == 2
    assert "--lease: must be positive, got 0" in done.stderr
