"""Pure decisions on journal records found at the start of a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from grok_imagine_async import (
    AmbiguousSubmitError,
    FailureClass,
    GenerationRequest,
    GrokImagineError,
    JobResult,
    TaskFailedError,
)
from grok_imagine_async._scheduling.jobs import FINAL_STATES
from grok_imagine_async._scheduling.resume import (
    Reopening,
    recorded_result,
    reopened,
    reopening,
)
from grok_imagine_async.abc import StoreRecord, StoreState

REQUEST = GenerationRequest(prompt="p")


def record(state: StoreState, **fields: object) -> StoreRecord:
    return StoreRecord(key="k", request=REQUEST, state=state, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"failure_class": FailureClass.BUDGET_EXCEEDED}, True),
        # A task failed, and its resubmission was refused by the budget: a rerun with a
        # larger one resubmits it (issue 25.3).
        ({"failure_class": FailureClass.BUDGET_EXCEEDED, "task_id": "t"}, True),
        ({"failure_class": FailureClass.REQUEST_ERROR}, True),
        ({"failure_class": FailureClass.REQUEST_ERROR, "task_id": "t"}, False),  # a task exists
        ({"failure_class": FailureClass.CONTENT_POLICY, "task_id": "t"}, False),
        ({"failure_class": FailureClass.AMBIGUOUS_SUBMIT}, False),  # may have been paid
    ],
)
def test_only_never_paid_failures_are_retried(fields: dict[str, object], expected: bool) -> None:
    unpaid = reopening(record(StoreState.FAILED, **fields), resubmit_ambiguous=False)
    assert (unpaid is Reopening.UNPAID) is expected
    assert reopening(record(StoreState.INTENT), resubmit_ambiguous=False) is Reopening.NONE


def test_final_states() -> None:
    assert {StoreState.COMPLETED, StoreState.FAILED} == FINAL_STATES


def replayed(record: StoreRecord) -> JobResult:
    result = recorded_result(record, REQUEST, at=1.0)
    assert result.from_journal and result.finished_at == 1.0 and result.polls == 0
    return result


def test_replayed_errors_keep_their_kind_and_task_id() -> None:
    ambiguous = replayed(record(StoreState.FAILED, failure_class=FailureClass.AMBIGUOUS_SUBMIT))
    assert isinstance(ambiguous.error, AmbiguousSubmitError)
    assert ambiguous.failure_class is FailureClass.AMBIGUOUS_SUBMIT and ambiguous.task_id is None
    failed = replayed(
        record(
            StoreState.FAILED,
            task_id="t1",
            error="Inappropriate content, please try another prompt.",
            failure_class=FailureClass.CONTENT_POLICY,
            attempts=2,
            credits=80,
        )
    )
    assert isinstance(failed.error, TaskFailedError)
    assert failed.error.failure_class is FailureClass.CONTENT_POLICY
    assert (failed.task_id, failed.attempts, failed.credits) == ("t1", 2, 80)
    other = replayed(record(StoreState.FAILED, error="disk full"))
    assert type(other.error) is GrokImagineError
    assert "disk full" in str(other.error) and other.failure_class is FailureClass.UNKNOWN


def test_a_replayed_completion_has_its_task_and_files() -> None:
    done = replayed(
        record(StoreState.COMPLETED, task_id="t", videos=("https://v/1.mp4",), files=("a.mp4",))
    )
    assert done.ok and done.task_id == "t" and done.failure_class is None
    assert done.videos == ("https://v/1.mp4",)
    assert done.files == (Path("a.mp4"),)


def test_the_resume_policy_reopens_what_a_new_run_can_fix() -> None:
    unpaid = record(StoreState.FAILED, failure_class=FailureClass.BUDGET_EXCEEDED)
    assert reopening(unpaid, resubmit_ambiguous=False) is Reopening.UNPAID
    assert reopened(unpaid, resubmit_ambiguous=False) is None

    undownloaded = record(
        StoreState.FAILED, task_id="t", videos=("https://v/1.mp4",), files=("a.mp4",),
        error="cannot write a.mp4", failure_class=FailureClass.REQUEST_ERROR,
    )  # fmt: skip
    again = reopened(undownloaded, resubmit_ambiguous=False)
    assert again is not None
    assert (again.state, again.task_id, again.videos, again.files) == (
        StoreState.COMPLETED, "t", ("https://v/1.mp4",), (),
    )  # fmt: skip
    assert (again.error, again.failure_class) == (None, None)

    ambiguous = record(StoreState.FAILED, failure_class=FailureClass.AMBIGUOUS_SUBMIT, attempts=1)
    assert reopened(ambiguous, resubmit_ambiguous=False) == ambiguous  # reported, not resent
    resent = reopened(ambiguous, resubmit_ambiguous=True)
    assert resent is not None
    assert (resent.state, resent.attempts, resent.failure_class) == (StoreState.INTENT, 1, None)

    refused = record(StoreState.FAILED, task_id="t", failure_class=FailureClass.CONTENT_POLICY)
    for taken_as_is in (refused, record(StoreState.SUBMITTED, task_id="t")):
        assert reopening(taken_as_is, resubmit_ambiguous=True) is Reopening.NONE
        assert reopened(taken_as_is, resubmit_ambiguous=True) is taken_as_is
