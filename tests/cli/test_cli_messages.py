"""What the ``grok-imagine`` command says when something is wrong, and that it costs nothing.

``main(argv)`` in process (the ``run_cli`` fixture), against the emulator served on 127.0.0.1
where a test needs a server (its statistics tell what was paid).
The tests run as root, which may write anywhere: a folder that cannot be written is made by
putting a regular file where the folder, or one of its parents, should be.
"""

from __future__ import annotations

import errno
import json
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cli_support import TOKEN, against, fast_emulator, manifest, prompts_file

from grok_imagine_async import AsyncGrokImagine

if TYPE_CHECKING:
    from conftest import RunCli

    from grok_imagine_async.testing import Emulator


def nothing_paid(emulator: Emulator) -> bool:
    stats = emulator.statistics()
    return stats.credits_consumed == 0 and stats.requests_total == 0


# -- pre-flight: every place written to is checked before the first credit ----------------------


BATCH = ["batch", "prompts.txt", "--out"]


@fast_emulator
@pytest.mark.parametrize(
    ("in_the_way", "argv", "said"),
    [
        ("blocker", [*BATCH, "blocker/v"], "cannot create the output folder blocker/v"),
        (
            "blocker",
            [*BATCH, "blocker/v", "--journal", "run.db"],
            "cannot create the output folder blocker/v",
        ),
        ("v", [*BATCH, "v"], "the output folder v is a file, not a folder"),
        ("v/manifest.jsonl/", [*BATCH, "v"], "the manifest v/manifest.jsonl is a folder"),
        (
            "state",
            [*BATCH, "v", "--journal", "state/run.db"],
            "the journal's folder state is a file, not a folder",
        ),
        (
            "blocker",
            ["generate", "a red kite", "--out", "blocker/v"],
            "cannot create the output folder blocker/v: Not a directory",
        ),
        (
            "blocker",
            ["status", "task_0", "--download", "blocker/v"],
            "cannot create the download folder blocker/v",
        ),
    ],
)
def test_a_place_a_command_cannot_write_costs_nothing_and_is_named(
    run_cli: RunCli,
    grok_emulator_env: Mapping[str, str],
    grok_emulator: Emulator,
    tmp_path: Path,
    in_the_way: str,
    argv: list[str],
    said: str,
) -> None:
    prompts_file(tmp_path, "a red kite", "a blue whale")
    if in_the_way.endswith("/"):
        (tmp_path / in_the_way).mkdir(parents=True)
    else:
        (tmp_path / in_the_way).write_text("in the way\n")
    done = run_cli(*argv, *against(grok_emulator_env), cwd=tmp_path)
    assert done.returncode == 2
    assert said in done.stderr
    if argv[0] != "status":  # which asks, and pays nothing in any case
        assert "nothing was submitted" in done.stderr
    if in_the_way == "blocker":  # the folder is the problem, and it is what is named
        assert "(blocker is a file)" in done.stderr and "journal" not in done.stderr
    assert nothing_paid(grok_emulator)


@fast_emulator
def test_status_names_the_download_folder_when_the_disk_is_full(
    run_cli: RunCli,
    grok_emulator_env: Mapping[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    done = run_cli("generate", "a kite", "--out", "one", *against(grok_emulator_env), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    task_id = Path(done.stdout.splitlines()[0]).name.rsplit("_", 1)[0]

    async def full(self: AsyncGrokImagine, task: object, dest: object, **_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # as a write fails: no file name

    monkeypatch.setattr(AsyncGrokImagine, "download", full)
    argv = ["status", task_id, "--download", "videos", *against(grok_emulator_env)]
    status = run_cli(*argv, cwd=tmp_path)
    assert status.returncode == 1
    assert "cannot save the videos in videos: No space left on device" in status.stderr


@fast_emulator
def test_a_video_that_cannot_be_saved_is_reported_and_fetched_next_run_without_paying(
    run_cli: RunCli, grok_emulator_env: Mapping[str, str], grok_emulator: Emulator, tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        "".join(json.dumps({"id": key, "prompt": f"clip {key}"}) + "\n" for key in "abc")
    )
    out = tmp_path / "videos"
    (out / "b_1.mp4").mkdir(parents=True)  # where job b's first video must go: a folder
    argv = ["batch", str(jobs), "--out", str(out), "--no-progress", *against(grok_emulator_env)]
    first = run_cli(*argv, cwd=tmp_path)
    assert first.returncode == 1
    text = first.stdout + first.stderr
    [problem] = [line for line in text.splitlines() if "b_1.mp4" in line]  # in one line
    assert "cannot" in problem
    paid = grok_emulator.statistics().tasks_created
    assert paid >= 1
    # Every paid task is in the manifest with its task id: none is lost.
    assert sum(e["task_id"] is not None for e in manifest(out)) == paid
    assert "run the same command" in first.stdout.lower()

    (out / "b_1.mp4").rmdir()
    again = run_cli(*argv, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    stats = grok_emulator.statistics()
    assert stats.tasks_created == 3 and set(stats.posts_per_prompt.values()) == {1}
    assert {e["status"] for e in manifest(out)} == {"completed"}
    assert (out / "b_1.mp4").is_file()


# -- messages in the command line's terms -------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["generate", "a kite", "--out", "v"], ["batch", "prompts.txt"]]
)
def test_a_missing_token_names_the_options_not_the_python_keyword(
    run_cli: RunCli, tmp_path: Path, command: list[str]
) -> None:
    prompts_file(tmp_path, "a kite")
    if command[0] == "batch":
        command = [*command, "--out", "v"]
    done = run_cli(*command, cwd=tmp_path)
    assert done.returncode == 2
    assert "no API key: pass --api-key TOKEN or set $GROK_IMAGINE_API_KEY" in done.stderr
    assert "--emulate" in done.stderr
    assert "api_key=" not in done.stderr and "AsyncGrokImagine" not in done.stderr
    assert not list(
        (tmp_path / "v").glob("journal*")
    )  # nothing created for a run that cannot start


def test_emulate_says_which_connection_options_it_ignores(run_cli: RunCli, tmp_path: Path) -> None:
    # --emulate --base-url URL ran against the built-in emulator without a word about the URL.
    argv = ["--emulate", "--time-scale", "60", "--base-url", "http://127.0.0.1:9"]
    done = run_cli("generate", "a kite", "--out", "v", *argv, "--api-key", "sk-x", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "--emulate uses its built-in emulator: --api-key and --base-url are ignored" in (
        done.stderr
    )
    assert "sk-x" not in done.stdout + done.stderr
    quiet = run_cli(
        "generate", "a kite", "--out", "v", "--emulate", "--time-scale", "60", cwd=tmp_path
    )
    assert "ignored" not in quiet.stderr


def test_status_has_no_emulate_to_suggest(run_cli: RunCli, tmp_path: Path) -> None:
    done = run_cli("status", "task_1", cwd=tmp_path)
    assert done.returncode == 2
    assert "pass --api-key TOKEN or set $GROK_IMAGINE_API_KEY" in done.stderr
    assert "--emulate" not in done.stderr


def test_a_blank_task_id_is_bad_input_before_anything_else(run_cli: RunCli, tmp_path: Path) -> None:
    done = run_cli("status", " ", cwd=tmp_path)  # no token either: the id is wrong first
    assert done.returncode == 2
    assert "TASK_ID: a task id cannot be blank" in done.stderr


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: connecting is refused


def test_an_unreachable_server_is_named(run_cli: RunCli, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    argv = ["--base-url", url, "--api-key", TOKEN, "--time-scale", "100"]
    done = run_cli("generate", "a kite", "--out", "v", *argv, cwd=tmp_path)
    assert done.returncode == 1
    assert f"grok-imagine generate: cannot reach {url}: " in done.stderr

    prompts_file(tmp_path, "a kite", "a whale")
    batch = run_cli("batch", "prompts.txt", "--out", "v", "--no-progress", *argv, cwd=tmp_path)
    assert batch.returncode == 1
    assert f"2 jobs could not reach {url}" in batch.stdout


def test_every_bad_line_is_listed_up_to_twenty_then_counted(
    run_cli: RunCli, tmp_path: Path
) -> None:
    lines = ['{"prompt": "fine"}']
    lines += [f'{{"prompt": "clip {n}", "ratio": "4:{n}"}}' for n in range(25)]
    lines += ["not json", '{"prompt": "x", "colour": "red"}']
    (tmp_path / "jobs.jsonl").write_text("\n".join(lines) + "\n")
    done = run_cli("batch", "jobs.jsonl", "--out", "v", cwd=tmp_path)
    assert done.returncode == 2
    listed = [line for line in done.stderr.splitlines() if "jobs.jsonl:" in line]
    assert [line.split("jobs.jsonl:")[1].split(":")[0] for line in listed] == [
        str(n) for n in range(2, 22)
    ]
    assert "27 problems in jobs.jsonl (the first 20 are shown above)" in done.stderr
    assert "nothing was submitted" in done.stderr
    assert not (tmp_path / "v").exists()  # not even the folder: nothing happened


def test_a_few_bad_lines_are_all_listed(run_cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text('prompt,ratio\na kite,4:3\n"",1:1\na whale,1:1\nx,9:9\n')
    done = run_cli("batch", "p.csv", "--out", "v", cwd=tmp_path)
    assert done.returncode == 2
    assert "p.csv:2: " in done.stderr and "p.csv:3: missing prompt" in done.stderr
    assert "p.csv:5: " in done.stderr and "use --allow-unlisted" in done.stderr
    assert "3 problems in p.csv;" in done.stderr


@fast_emulator
def test_a_rerun_says_it_spent_nothing_and_what_earlier_runs_spent(
    run_cli: RunCli,
    grok_emulator_env: Mapping[str, str],
    grok_emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from grok_imagine_async._cli import batch

    made: list[batch.BatchProgress] = []  # each run's, which makes its progress line

    class Progress(batch.BatchProgress):
        def __init__(self, *args: Any, **options: Any) -> None:
            super().__init__(*args, **options)
            made.append(self)

    monkeypatch.setattr(batch, "BatchProgress", Progress)
    prompts = prompts_file(tmp_path, "a red kite", "a blue whale")
    argv = ["batch", str(prompts), "--out", "v", "--no-progress", *against(grok_emulator_env)]
    first = run_cli(*argv, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "credits this run  80 (about 0.80 USD)" in first.stdout
    assert "credits earlier" not in first.stdout
    assert made[-1].earlier_credits == 0  # its line's credits: all this run's

    again = run_cli(*argv, cwd=tmp_path)
    assert again.returncode == 0
    assert "credits this run  0 (about 0.00 USD)" in again.stdout
    assert "credits earlier   80 (about 0.80 USD, earlier runs)" in again.stdout
    assert grok_emulator.statistics().credits_consumed == 80
    assert made[-1].earlier_credits == 80  # its line says it counts earlier runs' credits


def test_the_log_level_chooses_what_the_library_says(run_cli: RunCli, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    argv = ["generate", "a kite", "--out", "v", "--base-url", url, "--api-key", TOKEN]
    argv += ["--time-scale", "100"]
    default = run_cli(*argv, cwd=tmp_path)
    quiet = run_cli(*argv, "--log-level", "ERROR", cwd=tmp_path)
    assert default.returncode == quiet.returncode == 1
    assert "retry 1 of 3" in default.stderr  # warnings by default
    assert quiet.stderr.splitlines() == default.stderr.splitlines()[-1:]


def test_generate_refuses_an_invalid_request_before_sending(
    run_cli: RunCli, tmp_path: Path
) -> None:
    done = run_cli("generate", "x", "--ratio", "4:3", "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2
    assert "unknown ratio '4:3'" in done.stderr


def test_a_prompt_too_long_is_named_by_generate_and_by_the_batch_check(
    run_cli: RunCli, tmp_path: Path
) -> None:
    long = "x" * 6_000
    done = run_cli("generate", long, "--out", "v", "--emulate", cwd=tmp_path)
    assert done.returncode == 2
    assert "invalid request: the prompt has 6000 characters" in done.stderr
    assert "unexpected" not in done.stderr and "nothing was submitted" in done.stderr
    prompts_file(tmp_path, "a cat", long)
    batch = run_cli("batch", "prompts.txt", "--out", "v", "--emulate", cwd=tmp_path)
    assert batch.returncode == 2
    assert "prompts.txt:2: the prompt has 6000 characters" in batch.stderr
    assert not (tmp_path / "v").exists()  # refused before any folder, journal or credit


def test_batch_refuses_bad_defaults_naming_the_option(run_cli: RunCli, tmp_path: Path) -> None:
    prompts_file(tmp_path, "a cat")
    done = run_cli("batch", "prompts.txt", "--out", "o", "--ratio", "16:9", cwd=tmp_path)
    assert done.returncode == 2
    assert "--mode/--ratio" in done.stderr and "use --allow-unlisted" in done.stderr
    assert not (tmp_path / "o").exists()


def test_generate_refuses_an_unlisted_ratio_naming_the_option(
    run_cli: RunCli, tmp_path: Path
) -> None:
    done = run_cli("generate", "a cat", "--ratio", "16:9", "--out", "o", cwd=tmp_path)
    assert done.returncode == 2
    assert "use --allow-unlisted" in done.stderr and "allow_unlisted=True" not in done.stderr
    assert "nothing was submitted" in done.stderr and not (tmp_path / "o").exists()


def test_help_lists_the_subcommands(run_cli: RunCli, tmp_path: Path) -> None:
    done = run_cli("--help", cwd=tmp_path)
    assert done.returncode == 0
    for command in ("batch", "generate", "status", "emulator"):
        assert command in done.stdout
