"""The command line's pure pieces: pre-flight checks, progress counters, summary and advice."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import anyio
import pytest

from grok_imagine_async._cli.batch import (
    BatchOutcome,
    BatchProgress,
    advice_after,
    count_jobs,
    show_progress,
    summary_rows,
)
from grok_imagine_async._cli.common import UsageError, check_file_target, check_folder
from grok_imagine_async._cli.task import _paid_task
from grok_imagine_async._scheduling.breaker import BreakerSnapshot
from grok_imagine_async._scheduling.jobs import JobSubmitted, SchedulerStatistics
from grok_imagine_async.testing import run_virtual

# -- pre-flight ----------------------------------------------------------------------------------


def test_a_folder_is_created_and_left_clean(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    check_folder(folder, "output folder")
    assert folder.is_dir() and list(folder.iterdir()) == []  # the probe file is gone


def test_a_file_in_the_way_is_named(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("x")
    with pytest.raises(UsageError, match=r"\(.*a is a file\)$"):
        check_folder(tmp_path / "a" / "b" / "c", "output folder")
    with pytest.raises(UsageError, match=r"the output folder .*a is a file, not a folder"):
        check_folder(tmp_path / "a", "output folder")


def test_a_file_target_taken_by_a_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "manifest.jsonl").mkdir()
    with pytest.raises(UsageError, match=r"manifest .* is a folder"):
        check_file_target(tmp_path / "manifest.jsonl", "manifest")
    check_file_target(tmp_path / "journal.db", "journal")  # an absent file is fine
    assert not (tmp_path / "journal.db").exists()


# -- the progress counters -----------------------------------------------------------------------


def statistics(**changes: Any) -> SchedulerStatistics:
    values: dict[str, Any] = {
        "queued": 0,
        "submitting": 0,
        "in_flight": 0,
        "completed": 0,
        "failed": 0,
        "submissions": 0,
        "polls": 0,
        "requests_sent": 0,
        "rate_limited": 0,
        "credits_consumed": 0,
        "requests_per_minute": 0.0,
        "limit_per_minute": 100.0,
        "max_in_flight": 20,
        "predicted_duration": 30.0,
    }
    values.update(changes)
    return SchedulerStatistics(**values)


def test_a_faster_server_counts_requests_over_its_own_minute() -> None:
    async def main() -> str:
        progress = BatchProgress(20, time_scale=5.0)  # a real minute is 5 of the server's
        return progress.line(statistics(requests_per_minute=150.0, limit_per_minute=500.0))

    assert " 30/100 req/min " in run_virtual(main)


def test_the_job_counters_add_up_to_the_total() -> None:
    async def main() -> str:
        progress = BatchProgress(20)
        for n in range(13):
            progress(JobSubmitted(key=f"k{n}", at=0.0, task_id=f"t{n}"))
        return progress.line(statistics(submitting=7, in_flight=13))

    line = run_virtual(main)
    # 0 waiting + 7 submitting + 13 generating + 0 done == 20; the 13 tasks created so far are
    # the ones generating.
    assert "0/20 done" in line and "| 0 waiting, 7 submitting, 13 generating |" in line
    assert "| 13 submitted |" in line


def test_jobs_the_warm_up_holds_say_why_they_wait() -> None:
    async def main(warming_up: bool) -> str:
        progress = BatchProgress(200)
        held = BreakerSnapshot(warming_up=warming_up)
        return progress.line(statistics(in_flight=10, breaker=held))

    assert "| 190 waiting (warm-up: until a first job shows the API works), 0 submitting" in (
        run_virtual(main, True)
    )
    assert "| 190 waiting, 0 submitting, 10 generating |" in run_virtual(main, False)


def test_progress_to_a_pipe_is_a_line_every_ten_seconds_at_any_server_speed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def main() -> None:
        progress = BatchProgress(20, time_scale=5.0)  # --emulate's speed
        async with anyio.create_task_group() as tg:
            tg.start_soon(show_progress, progress, statistics, "t", False)
            await anyio.sleep(25.0)
            tg.cancel_scope.cancel()

    run_virtual(main)
    lines = capsys.readouterr().out.splitlines()
    assert [line[:6] for line in lines] == ["[0:10]", "[0:20]"]


# -- the summary and the advice ------------------------------------------------------------------


def test_the_summary_separates_this_run_from_earlier_runs() -> None:
    outcome = BatchOutcome(total=20, completed=20, credits=800, earlier_credits=800)
    rows = dict(summary_rows(outcome))
    assert rows["credits this run"] == "0 (about 0.00 USD)"
    assert rows["credits earlier"] == "800 (about 8.00 USD, earlier runs)"
    first = dict(summary_rows(BatchOutcome(total=20, completed=20, credits=800)))
    assert first["credits this run"] == "800 (about 8.00 USD)" and "credits earlier" not in first
    emulated = dict(summary_rows(outcome, emulated=True))
    assert emulated["credits this run"] == "0 (emulated, nothing paid)"
    assert emulated["credits earlier"] == "800 (emulated, nothing paid, earlier runs)"


def test_ambiguous_jobs_are_possibly_charged_and_counted_apart() -> None:
    outcome = BatchOutcome()
    outcome.note({"key": "a", "status": "completed", "credits": 40})
    outcome.note({"key": "b", "status": "ambiguous", "credits": 40})  # lost answer this run
    outcome.note({"key": "c", "status": "ambiguous", "credits": 0})  # an intent left by a crash
    outcome.note({"key": "d", "status": "ambiguous", "credits": 80})  # a task, then a lost one
    assert (outcome.credits, outcome.uncertain_credits, outcome.ambiguous) == (80, 120, 3)
    rows = dict(summary_rows(outcome))
    assert rows["credits this run"].startswith("80 ")
    assert rows["possibly charged"].startswith("120 more")


def test_no_possibly_charged_row_without_ambiguous_jobs() -> None:
    outcome = BatchOutcome()
    outcome.note({"key": "a", "status": "completed", "credits": 40})
    assert "possibly charged" not in dict(summary_rows(outcome))


def cli_args(*argv: str) -> argparse.Namespace:
    return argparse.Namespace(argv=["batch", "p.txt", "--out", "v", *argv], on_ambiguous="report")


def test_the_interrupt_message_is_plain_sentences() -> None:
    outcome = BatchOutcome(total=6, running=4, not_started=2)
    real = advice_after(cli_args(), outcome, True, False)
    assert real == [
        "Interrupted. Every job is recorded in the journal. Jobs still in flight: 4. They go "
        "on generating; the next run polls them and does not pay for them again.",
        "To carry on where this run stopped, run the same command again:",
        "  grok-imagine batch p.txt --out v",
    ]
    emulated = advice_after(cli_args("--emulate"), outcome, True, True)
    assert emulated[0] == (
        "Interrupted. Every job is recorded in the journal. The emulator's tasks ended with "
        "this process, so the jobs that were in flight will start again, at no cost."
    )
    assert all("(" not in line for line in real + emulated)  # no nested asides


def test_an_unfinished_run_names_the_command_to_carry_on() -> None:
    lines = advice_after(cli_args(), BatchOutcome(total=3, completed=2, running=1), False, False)
    assert lines == [
        "Some jobs did not finish. Run the same command to carry on: "
        "grok-imagine batch p.txt --out v"
    ]
    assert advice_after(cli_args(), BatchOutcome(total=3, completed=3), False, False) == []


@pytest.mark.parametrize("command", ["batch", "generate", "status", "emulator"])
def test_plan_names_parse_in_any_case(command: str) -> None:
    from grok_imagine_async._cli import build_parser

    first = {"batch": ["p.txt", "--out", "v"], "generate": ["x", "--out", "v"]}
    argv = [command, *first.get(command, ["task_1"] if command == "status" else [])]
    assert build_parser().parse_args([*argv, "--plan", "Pro"]).plan == "pro"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--plan", "gold"])


def test_failures_a_rerun_fixes_say_to_run_it_again() -> None:
    outcome = BatchOutcome(total=3, completed=2, failed=1)
    outcome.failures["request_error"] += 1
    [line] = advice_after(cli_args(), outcome, False, False)
    assert line.startswith("Jobs refused by the credit budget or by the API, and videos")
    assert line.endswith("not paid again): grok-imagine batch p.txt --out v")
    refused = BatchOutcome(total=3, completed=2, failed=1)
    refused.failures["content_policy"] += 1  # a new run would not change the answer
    assert advice_after(cli_args(), refused, False, False) == []


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, ""),
        (1, "1 job was stopped, 1 job is listed\n"),
        (3, "3 jobs were stopped, 3 jobs are listed\n"),
    ],
)
def test_a_note_about_jobs_agrees_with_their_number(
    n: int, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from grok_imagine_async._cli.batch import note_jobs

    note_jobs(n, "{were} stopped, " + count_jobs(n) + " {are} listed" if n else "{were}")
    assert capsys.readouterr().err == expected


def test_a_note_about_jobs_keeps_the_braces_of_a_path(capsys: pytest.CaptureFixture[str]) -> None:
    from grok_imagine_async._cli.batch import note_jobs

    note_jobs(2, "{are} listed in out{1}/{name}.jsonl")
    assert capsys.readouterr().err == "2 jobs are listed in out{1}/{name}.jsonl\n"


def test_a_paid_task_not_brought_home_says_how_to_fetch_it_or_that_it_is_gone() -> None:
    # One sentence for generate's failed wait, failed save and interrupt; the failed wait
    # once offered a status command with --emulate, whose task ends with the process.
    args = argparse.Namespace(
        emulate=False, out="videos", base_url="https://me:secret@x.test/", plan="pro",
        time_scale=None,
    )  # fmt: skip
    real = _paid_task(args, "task_1")
    command = "grok-imagine status task_1 --download videos --base-url 'https://me:***@x.test/'"
    assert f"`{command} --plan pro` checks it" in real and "secret" not in real
    emulated = _paid_task(argparse.Namespace(**{**vars(args), "emulate": True}), "task_1")
    assert emulated == "Task task_1 ended with the built-in emulator."
