"""The command line's pure pieces: pre-flight checks, progress counters, summary and advice."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
from pathlib import Path
from typing import Any

import anyio
import pytest

from grok_imagine_async._cli.batch import (
    BatchOutcome,
    BatchProgress,
    advice_after,
    count_jobs,
    format_duration,
    note_jobs,
    show_progress,
    summary_rows,
)
from grok_imagine_async._cli.common import (
    UsageError,
    check_file_target,
    check_folder,
    command_line,
)
from grok_imagine_async._cli.task import _paid_task
from grok_imagine_async._models import GenerationRequest
from grok_imagine_async._scheduling.breaker import BreakerSnapshot
from grok_imagine_async._scheduling.jobs import (
    JobFinished,
    JobSubmitted,
    SchedulerStatistics,
    StoreRecord,
    StoreState,
)
from grok_imagine_async._scheduling.resume import recorded_result
from grok_imagine_async._settings import with_redis_password
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
    # A folder the caller has just probed is not probed (nor created) again.
    check_file_target(tmp_path / "new" / "journal.db", "journal", checked=tmp_path / "new")
    assert not (tmp_path / "new").exists()


# -- the progress counters -----------------------------------------------------------------------


def statistics(**changes: Any) -> SchedulerStatistics:
    """The scheduler's statistics: zeros, but for ``changes``."""
    fields = [f.name for f in dataclasses.fields(SchedulerStatistics) if f.name != "breaker"]
    return SchedulerStatistics(**{**dict.fromkeys(fields, 0), **changes})


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


def test_jobs_max_at_risk_holds_say_why_they_wait() -> None:
    async def main(held: bool) -> str:
        return BatchProgress(200).line(statistics(in_flight=16, at_risk_held=held))

    assert "| 184 waiting (--max-at-risk: until a look shows the newest submissions working), " in (
        run_virtual(main, True)
    )
    assert "| 184 waiting, 0 submitting, 16 generating |" in run_virtual(main, False)


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


def progress_line(stats: dict[str, Any], *, from_journal: int = 3) -> str:
    """The line of a batch of 20, 80 s in: 12 completed (the first ``from_journal`` in earlier
    runs), 1 failed, 14 submitted; the scheduler's ``stats`` on top of zeros."""

    async def main() -> str:
        progress = BatchProgress(20)
        request = GenerationRequest(prompt="a kite")
        for n in range(14):
            progress(JobSubmitted(key=f"k{n}", at=0.0, task_id=f"t{n}"))
        for n in range(13):
            record = StoreRecord(
                f"k{n}", request, StoreState.COMPLETED, task_id=f"t{n}", videos=("https://v",)
            )
            if n == 12:
                record = StoreRecord(f"k{n}", request, StoreState.FAILED, error="no")
            result = recorded_result(record, request, at=0.0)
            result = dataclasses.replace(result, from_journal=n < from_journal)
            progress(JobFinished(key=f"k{n}", at=0.0, result=result))
        await anyio.sleep(80)
        return progress.line(statistics(**stats))

    return run_virtual(main)


def test_a_plain_progress_line_says_everything_at_a_glance() -> None:
    stats = {"submitting": 1, "in_flight": 4, "credits_consumed": 680}
    stats |= {"requests_per_minute": 45.4, "limit_per_minute": 100.0}
    line = progress_line(stats)
    assert line == (
        "[1:20] 13/20 done (12 completed, 1 failed, 3 from earlier runs) | 2 waiting, "
        "1 submitting, 4 generating | 14 submitted | 680 credits | 45/100 req/min | ETA 0:56"
    )
    assert "earlier runs" not in progress_line(stats, from_journal=0)
    assert progress_line(stats, from_journal=13).endswith("ETA ?")  # none finished here yet
    assert progress_line({**stats, "rate_limited": 3}).endswith(
        "45/100 req/min (3 429s) | ETA 0:56"
    )


def test_the_progress_line_says_its_credits_take_in_earlier_runs() -> None:
    """A rerun after Ctrl-C showed "480 credits" while its summary said "credits this run 0,
    credits earlier 800": the scheduler counts what earlier runs spent on each job it takes
    up (the count max_credits holds to), and the line now says so."""

    async def line(earlier_credits: int) -> str:
        progress = BatchProgress(20, earlier_credits=earlier_credits)
        return progress.line(statistics(credits_consumed=480))

    assert " | 480 credits (with earlier runs') | " in run_virtual(lambda: line(800))
    assert " | 480 credits | " in run_virtual(lambda: line(0))  # a first run: all its own


def test_durations_are_formatted_for_people() -> None:
    assert [format_duration(s) for s in (0, 59.6, 61, 3600, 3725)] == [
        "0:00",
        "1:00",
        "1:01",
        "1:00:00",
        "1:02:05",
    ]
    assert format_duration(None) == "?"


def test_failure_notices_are_kept_only_where_a_display_shows_them() -> None:
    request = GenerationRequest(prompt="a kite")
    record = StoreRecord("k", request, StoreState.FAILED, error="Network error")
    result = dataclasses.replace(recorded_result(record, request, at=0.0), from_journal=False)
    failed = JobFinished(key="k", at=0.0, result=result)  # in this run

    async def main() -> tuple[BatchProgress, BatchProgress]:
        shown, quiet = BatchProgress(20), BatchProgress(20, notices=False)  # --no-progress
        for progress in (shown, quiet):
            for _ in range(3):
                progress(failed)
        return shown, quiet

    shown, quiet = run_virtual(main)
    assert [notice[:9] for notice in shown.notices] == ["failed k "] * 3
    assert quiet.notices == [] and quiet.failed == shown.failed == 3


def test_the_live_display_shows_the_plain_line_under_a_bar() -> None:
    pytest.importorskip("rich")

    async def main() -> None:
        progress = BatchProgress(20)
        async with anyio.create_task_group() as tg:
            tg.start_soon(show_progress, progress, statistics, "grok-imagine batch", True)
            await anyio.sleep(0.1)
            tg.cancel_scope.cancel()

    with contextlib.redirect_stdout(io.StringIO()) as out:
        run_virtual(main)
    text = out.getvalue()
    assert "grok-imagine batch" in text and "0/20 done" in text and "0/0 req/min" in text


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
    args = cli_args("--emulate")
    args.emulator_state = "v/journal-emulated-tasks.json"  # where run() has --emulate keep them
    emulated = advice_after(args, outcome, True, True)
    assert emulated[0] == (
        "Interrupted. Every job is recorded in the journal. Jobs still in flight: 4. The "
        "emulator kept its tasks in v/journal-emulated-tasks.json: the next run polls them, as "
        "it would the API's."
    )
    assert all("(" not in line for line in real + emulated)  # no nested asides


def test_an_unfinished_run_names_the_command_to_carry_on() -> None:
    lines = advice_after(cli_args(), BatchOutcome(total=3, completed=2, running=1), False, False)
    assert lines == [
        "Some jobs did not finish. Run the same command to carry on: "
        "grok-imagine batch p.txt --out v"
    ]
    assert advice_after(cli_args(), BatchOutcome(total=3, completed=3), False, False) == []


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
    note_jobs(n, "{were} stopped, " + count_jobs(n) + " {are} listed" if n else "{were}")
    assert capsys.readouterr().err == expected


def test_a_note_about_jobs_keeps_the_braces_of_a_path(capsys: pytest.CaptureFixture[str]) -> None:
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


# -- the resume command -------------------------------------------------------------------------


def test_the_resume_command_never_repeats_the_token() -> None:
    line = command_line(["batch", "in.txt", "--api-key", "sk-1", "--out", "o", "--api-key=sk-2"])
    assert line == "grok-imagine batch in.txt --out o"
    assert command_line(["batch", "my prompts.txt"]) == "grok-imagine batch 'my prompts.txt'"


def test_the_resume_command_never_repeats_a_url_password() -> None:
    line = command_line([
        "batch", "in.txt", "--redis-url", "redis://:pw-SECRET@cache:6379/0",
        "--journal=redis://user:pw-SECRET@cache/1", "--base-url", "https://u:pw-SECRET@api.x",
    ])  # fmt: skip
    assert "pw-SECRET" not in line
    assert "redis://:***@cache:6379/0" in line and "--journal=redis://user:***@cache/1" in line
    assert "https://u:***@api.x" in line


def test_the_redis_password_may_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GROK_IMAGINE_REDIS_PASSWORD", "p@ss word")
    assert with_redis_password("redis://cache:6379/0") == "redis://:p%40ss%20word@cache:6379/0"
    given = "redis://:given@cache/0"
    assert with_redis_password(given) == given  # the URL's wins
    monkeypatch.delenv("GROK_IMAGINE_REDIS_PASSWORD")
    assert with_redis_password("redis://cache/0") == "redis://cache/0"
