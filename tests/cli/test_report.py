"""The batch summary counts what was surely paid apart from what may have been."""

from __future__ import annotations

from grok_imagine_async._cli.batch import BatchOutcome, summary_rows


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
