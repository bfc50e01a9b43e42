"""What ``grok-imagine batch`` tells people: bad input, the advice after a run, counts.

Plain sentences in the command line's terms: options rather than Python keywords, and the
command to run next.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._errors import GrokImagineError, InputError
from .._scheduling.breaker import BreakerSnapshot
from .common import command_line, error
from .report import BatchOutcome

EXIT_REFUSED = 3
"""The batch stopped submitting: the provider refused its last jobs systematically."""

MAX_PROBLEMS_SHOWN = 20
"""Bad input lines listed before the rest are only counted."""
_RETRIED_FAILURES = ("budget_exceeded", "request_error")  # what a re-run reopens


def report_input_problems(exc: InputError) -> None:
    """Print every bad line gathered (the first ``MAX_PROBLEMS_SHOWN``), then how many in all."""
    if exc.problem_count == 1:
        error("batch", for_cli(f"{exc} (nothing was submitted)"))
        return
    for problem in exc.problems:
        error("batch", for_cli(str(problem)))
    hidden = exc.problem_count - len(exc.problems)
    shown = f" (the first {len(exc.problems)} are shown above)" if hidden else ""
    error(
        "batch",
        f"{exc.problem_count} problems in {exc.path}{shown}; nothing was submitted. Fix them "
        "and run the same command again.",
    )


def for_cli(message: str) -> str:
    """``message`` with the library's advice on keywords turned into the option to use."""
    return message.replace("pass allow_unlisted=True", "use --allow-unlisted")


def advice_after(
    args: argparse.Namespace,
    outcome: BatchOutcome,
    interrupted: bool,
    emulated: bool,
    emulator_state: Path | None = None,
) -> list[str]:
    """The lines after the summary: what happened to unfinished jobs, and what to run next.

    ``emulator_state`` is where the in-process emulator kept its tasks, if it did.
    """
    resume = command_line(args.argv)
    lines: list[str] = []
    if outcome.ambiguous and not emulated and args.on_ambiguous != "resubmit":
        again = command_line([*args.argv, "--on-ambiguous", "resubmit"])
        lines.append(
            f"{count_jobs(outcome.ambiguous)} may or may not have been submitted: "
            "the answer to the request was lost. They were not sent again, to avoid paying "
            "twice. Check your account; to send them again anyway, possibly paying twice, run: "
            f"{again}"
        )
    if interrupted:
        if emulated and emulator_state is None:
            kept = (
                "The emulator's tasks ended with this process, so the jobs that were in flight "
                "will start again, at no cost."
            )
        elif emulated and outcome.running:
            kept = (
                f"Jobs still in flight: {outcome.running}. The emulator kept its tasks in "
                f"{emulator_state}: the next run polls them, as it would the API's."
            )
        elif outcome.running:
            kept = (
                f"Jobs still in flight: {outcome.running}. They go on generating; the next run "
                "polls them and does not pay for them again."
            )
        else:
            kept = "No job was left in flight."
        lines.append(f"Interrupted. Every job is recorded in the journal. {kept}")
        lines.append("To carry on where this run stopped, run the same command again:")
        lines.append(f"  {resume}")
    elif outcome.not_started or outcome.running:
        lines.append(f"Some jobs did not finish. Run the same command to carry on: {resume}")
    elif any(outcome.failures.get(name) for name in _RETRIED_FAILURES):
        lines.append(
            "Jobs refused by the credit budget or by the API, and videos that could not be "
            "saved, are tried again when you run the same command (a task already paid is "
            f"not paid again): {resume}"
        )
    return lines


def refused_line(stopped: BreakerSnapshot | None, outcome: BatchOutcome) -> str | None:
    """The one line for a batch stopped on systematic refusals, None if it was not."""
    if stopped is None or stopped.reason != "refused" or stopped.failure_class is None:
        return None
    why = stopped.failure_class.value.replace("_", " ")
    unsent = outcome.not_started
    prompts = "1 prompt was" if unsent == 1 else f"{unsent} prompts were"
    return (
        f"the last {stopped.streak} jobs were all refused for {why}; {prompts} not "
        "submitted; fix the prompts and rerun"
    )


def count_jobs(n: int) -> str:
    """``1 job``, ``2 jobs``."""
    return "1 job" if n == 1 else f"{n} jobs"


def print_pending(exc: GrokImagineError) -> None:
    """Print the paid tasks the journal may not hold, so that none is lost with the run."""
    if not exc.pending_tasks:
        return
    print(
        f"{len(exc.pending_tasks)} paid jobs ended or were in flight without the journal "
        "recording it; their task ids (key task_id):",
        file=sys.stderr,
    )
    for key, task_id in exc.pending_tasks.items():
        print(f"  {key} {task_id}", file=sys.stderr)
