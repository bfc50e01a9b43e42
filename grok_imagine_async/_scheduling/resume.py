"""The resume policy: how a new run takes up a journal record (pure; see the batches guide).

The scheduler applies :func:`reopened` to each record; ``grok-imagine batch`` counts
:func:`reopening` kinds to tell what it will try again.
"""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path

from .._errors import AmbiguousSubmitError, GrokImagineError, TaskFailedError
from .._models import FailureClass, GenerationRequest, Task, TaskStatus
from .jobs import JobResult, StoreRecord, StoreState, request_digest

FINAL_STATES = frozenset({StoreState.COMPLETED, StoreState.FAILED})
"""Records in these states are replayed, not resumed."""


class Reopening(enum.Enum):
    """Why a new run takes an earlier record up differently from how it was left."""

    NONE = "none"
    """Taken as it is."""
    UNPAID = "unpaid"
    """Refused before it could be charged (budget, or the API): submitted afresh."""
    UNDOWNLOADED = "undownloaded"
    """Completed, but its download failed: downloaded again."""
    AMBIGUOUS = "ambiguous"
    """Outcome unknown, and the client resubmits those: sent again."""


def reopening(record: StoreRecord, *, resubmit_ambiguous: bool) -> Reopening:
    """How a new run reopens ``record`` (see :func:`reopened`)."""
    if never_paid(record):
        return Reopening.UNPAID
    if record.state is StoreState.FAILED and record.videos:
        return Reopening.UNDOWNLOADED
    if (
        resubmit_ambiguous
        and record.state is StoreState.FAILED
        and record.failure_class is FailureClass.AMBIGUOUS_SUBMIT
        and not record.task_id
    ):
        return Reopening.AMBIGUOUS
    return Reopening.NONE


def reopened(record: StoreRecord, *, resubmit_ambiguous: bool) -> StoreRecord | None:
    """``record`` as a new run takes it up; None: submit afresh. ``resubmit_ambiguous``
    (``on_ambiguous_submit="resubmit"``) turns an ambiguous failure back into an intent."""
    kind = reopening(record, resubmit_ambiguous=resubmit_ambiguous)
    if kind is Reopening.UNPAID:
        return None
    if kind is Reopening.UNDOWNLOADED:
        return dataclasses.replace(
            record, state=StoreState.COMPLETED, files=(), error=None, failure_class=None
        )
    if kind is Reopening.AMBIGUOUS:
        return dataclasses.replace(record, state=StoreState.INTENT, error=None, failure_class=None)
    return record


def never_paid(record: StoreRecord) -> bool:
    """A failure refused before any charge, which a new run may not meet: by the budget (a
    resubmission too), or by the API on a first submission."""
    if record.state is not StoreState.FAILED:
        return False
    if record.failure_class is FailureClass.BUDGET_EXCEEDED:
        return True
    return record.failure_class is FailureClass.REQUEST_ERROR and record.task_id is None


def must_retake(
    record: StoreRecord, request: GenerationRequest, *, resubmit_ambiguous: bool
) -> bool:
    """Whether a finished record must run again: its request changed, or it is reopened."""
    if not same_request(record, request):
        return True
    return reopening(record, resubmit_ambiguous=resubmit_ambiguous) is not Reopening.NONE


def journal_error(record: StoreRecord) -> GrokImagineError:
    """The exception a FAILED record's replayed result carries."""
    if record.failure_class is FailureClass.AMBIGUOUS_SUBMIT:
        return AmbiguousSubmitError(record.error or "submission outcome unknown")
    if record.task_id:
        return TaskFailedError(
            Task(
                task_id=record.task_id,
                status=TaskStatus.FAILED,
                raw_status="failed",
                error_message=record.error,
            )
        )
    return GrokImagineError(record.error or "failed in an earlier run")


def replayed_task(record: StoreRecord) -> Task:
    """The completed task a COMPLETED record stands for."""
    return Task(
        task_id=record.task_id or "",
        status=TaskStatus.COMPLETED,
        raw_status="completed",
        videos=record.videos,
    )


def same_request(record: StoreRecord, request: GenerationRequest) -> bool:
    """True if ``record`` was made for ``request`` (a key whose prompt changed is a new job)."""
    recorded = record.request_digest or request_digest(record.request)
    return recorded == request_digest(request)


def recorded_result(record: StoreRecord, request: GenerationRequest, *, at: float) -> JobResult:
    """The result a finished ``record`` stands for, as a replay of it yields (no request)."""
    failed = record.state is StoreState.FAILED
    return JobResult(
        key=record.key,
        request=request,
        task=None if failed else replayed_task(record),
        error=journal_error(record) if failed else None,
        failure_class=(record.failure_class or FailureClass.UNKNOWN) if failed else None,
        attempts=record.attempts,
        credits=record.credits,
        polls=0,
        submitted_at=None,
        finished_at=at,
        files=tuple(Path(f) for f in record.files),
        from_journal=True,
        last_task_id=record.task_id,
    )
