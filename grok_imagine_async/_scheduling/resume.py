"""The resume policy: how a new run takes up a journal record (pure; see the batches guide):
the scheduler applies :func:`reopened`, ``grok-imagine batch`` counts :func:`reopening`s."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path

from .._errors import AmbiguousSubmitError, GrokImagineError, TaskFailedError
from .._models import FailureClass, GenerationRequest, Task, TaskStatus
from .jobs import JobResult, StoreRecord, StoreState, request_digest


class Reopening(enum.Enum):
    """Why a new run takes a record up differently from how it was left: ``UNPAID``, refused
    before any charge (by the budget, or the API on a first submission): submitted afresh;
    ``UNDOWNLOADED``, completed but its download failed: downloaded again; ``AMBIGUOUS``,
    outcome unknown and the client resubmits those: sent again."""

    NONE = "none"
    UNPAID = "unpaid"
    UNDOWNLOADED = "undownloaded"
    AMBIGUOUS = "ambiguous"


def reopening(record: StoreRecord, *, resubmit_ambiguous: bool) -> Reopening:
    if record.state is not StoreState.FAILED:
        return Reopening.NONE
    failure = record.failure_class
    if failure is FailureClass.BUDGET_EXCEEDED or (
        failure is FailureClass.REQUEST_ERROR and record.task_id is None
    ):
        return Reopening.UNPAID
    if record.videos:
        return Reopening.UNDOWNLOADED
    if resubmit_ambiguous and failure is FailureClass.AMBIGUOUS_SUBMIT and not record.task_id:
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


def must_retake(
    record: StoreRecord, request: GenerationRequest, *, resubmit_ambiguous: bool
) -> bool:
    """Whether a finished record must run again: its request changed, or it is reopened."""
    if not same_request(record, request):
        return True
    return reopening(record, resubmit_ambiguous=resubmit_ambiguous) is not Reopening.NONE


def same_request(record: StoreRecord, request: GenerationRequest) -> bool:
    """Whether ``record`` was made for ``request`` (a key whose prompt changed is a new job)."""
    return (record.request_digest or request_digest(record.request)) == request_digest(request)


def recorded_result(record: StoreRecord, request: GenerationRequest, *, at: float) -> JobResult:
    """The result a finished ``record`` stands for, replayed with no request (the one builder:
    the scheduler, ``grok-imagine batch`` and the FastAPI registry replay through it)."""
    task: Task | None = None
    error: GrokImagineError | None = None
    if record.state is not StoreState.FAILED:
        task = Task(
            task_id=record.task_id or "",
            status=TaskStatus.COMPLETED,
            raw_status="completed",
            videos=record.videos,
        )
    elif record.failure_class is FailureClass.AMBIGUOUS_SUBMIT:
        error = AmbiguousSubmitError(record.error or "submission outcome unknown")
    elif record.task_id:  # the task's failure, as the server reported it
        failed = Task(
            task_id=record.task_id,
            status=TaskStatus.FAILED,
            raw_status="failed",
            error_message=record.error,
        )
        error = TaskFailedError(failed)
    else:
        error = GrokImagineError(record.error or "failed in an earlier run")
    return JobResult(
        key=record.key,
        request=request,
        task=task,
        error=error,
        failure_class=(record.failure_class or FailureClass.UNKNOWN) if error is not None else None,
        attempts=record.attempts,
        credits=record.credits,
        polls=0,
        submitted_at=None,
        finished_at=at,
        files=tuple(Path(f) for f in record.files),
        from_journal=True,
        last_task_id=record.task_id,
    )
