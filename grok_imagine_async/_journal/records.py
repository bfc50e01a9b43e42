"""How each journal call changes a job's record: pure functions, no I/O (Redis, memory).

The same rules as the SQLite journal: an intent clears the previous task id (the new POST's
outcome is unknown until answered), attempts and credits never go down, a completed task
whose download failed keeps its URLs.
"""

from __future__ import annotations

import dataclasses

from .._models import CREDITS_PER_GENERATION, GenerationRequest
from .._scheduling.jobs import JobResult, StoreRecord, StoreState
from .codec import request_digest


def intent(
    old: StoreRecord | None, key: str, request: GenerationRequest, attempt: int
) -> StoreRecord:
    """The record once POST number ``attempt`` is about to be sent."""
    return StoreRecord(
        key=key,
        request=request,
        state=StoreState.INTENT,
        attempts=max(attempt, old.attempts if old else 0),
        credits=old.credits if old else 0,
        request_digest=request_digest(request),
    )


def submitted(old: StoreRecord, task_id: str) -> StoreRecord:
    """The record once the POST created ``task_id`` (and cost its credits)."""
    return StoreRecord(
        key=old.key,
        request=old.request,
        state=StoreState.SUBMITTED,
        task_id=task_id,
        attempts=old.attempts,
        credits=old.credits + CREDITS_PER_GENERATION,
        request_digest=old.request_digest,
    )


def finished(old: StoreRecord | None, result: JobResult) -> StoreRecord:
    """The record of how the job ended."""
    error: str | None = None
    if not result.ok:
        if result.error is not None:
            error = str(result.error)
        elif result.task is not None:
            error = result.task.error_message or f"status {result.task.raw_status!r}"
    task = result.task
    return StoreRecord(
        key=result.key,
        request=result.request,
        state=StoreState.COMPLETED if result.ok else StoreState.FAILED,
        task_id=result.task_id or (old.task_id if old else None),
        attempts=max(result.attempts, old.attempts if old else 0),
        credits=max(result.credits, old.credits if old else 0),
        videos=task.videos if task is not None and task.succeeded else (),
        files=tuple(str(f) for f in result.files) or (old.files if old else ()),
        error=error,
        failure_class=result.failure_class,
        request_digest=request_digest(result.request),
    )


def with_files(old: StoreRecord, files: tuple[str, ...]) -> StoreRecord:
    """The record once its videos were downloaded to ``files``."""
    return dataclasses.replace(old, files=files)
