"""Reading a journal record back at the start of a run: pure decisions, no I/O.

A record says how far a job got in an earlier run. Finished records are replayed without any
request; never-paid failures (refused by the budget or by the API) are tried again; a record
of a submitted task resumes polling it; an intent without a task id is a submission whose
outcome is unknown (see the client's ``on_ambiguous_submit``).
"""

from __future__ import annotations

import hashlib
import json

from .._errors import AmbiguousSubmitError, GrokImagineError, TaskFailedError
from .._models import FailureClass, GenerationRequest, Task, TaskStatus
from .jobs import JournalRecord, JournalState

FINAL_STATES = frozenset({JournalState.COMPLETED, JournalState.FAILED})
"""Records in these states are replayed, not resumed."""


def never_paid(record: JournalRecord) -> bool:
    """A failed record whose job never created a task, for a reason a new run may not meet."""
    return (
        record.state is JournalState.FAILED
        and record.task_id is None
        and record.failure_class in (FailureClass.BUDGET_EXCEEDED, FailureClass.REQUEST_ERROR)
    )


def journal_error(record: JournalRecord) -> GrokImagineError:
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


def replayed_task(record: JournalRecord) -> Task:
    """The completed task a COMPLETED record stands for."""
    return Task(
        task_id=record.task_id or "",
        status=TaskStatus.COMPLETED,
        raw_status="completed",
        videos=record.videos,
    )


def request_digest(request: GenerationRequest) -> str:
    """A digest of what ``request`` asks the API for (its payload), stored with its record."""
    canonical = json.dumps(request.payload(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def same_request(record: JournalRecord, request: GenerationRequest) -> bool:
    """True if ``record`` was made for ``request``: only then may its outcome be reused.

    A key names a job, not its content: an input whose line ``id=job1`` changed its prompt
    must not get the old prompt's video back.
    """
    recorded = record.request_digest or request_digest(record.request)
    return recorded == request_digest(request)
