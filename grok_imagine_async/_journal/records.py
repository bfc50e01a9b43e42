"""How each journal call changes a job's record (pure functions, shared by every backend), and
the stores of one process built on them.

An intent clears the previous task id (the new POST's outcome is unknown until answered),
attempts and credits never go down, a completed task whose download failed keeps its URLs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from .._errors import TaskFailedError
from .._models import CREDITS_PER_GENERATION, GenerationRequest
from .._scheduling.jobs import (
    Claim,
    JobResult,
    Listener,
    StoredJob,
    StoreRecord,
    StoreState,
    request_digest,
)

Change = Callable[[StoreRecord | None], StoreRecord]
"""A transition of one job's record, given its current record (None: never written)."""


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


def submitted(old: StoreRecord | None, key: str, task_id: str) -> StoreRecord:
    """The record once the POST created ``task_id`` (and cost its credits)."""
    if old is None:
        raise KeyError(f"record_submitted({key!r}) without record_intent")
    return dataclasses.replace(
        old,
        state=StoreState.SUBMITTED,
        task_id=task_id,
        credits=old.credits + CREDITS_PER_GENERATION,
    )


def finished(old: StoreRecord | None, result: JobResult) -> StoreRecord:
    """The record of how the job ended."""
    error: str | None = None
    if not result.ok:
        # A task's failure is stored as its reason: the replay's TaskFailedError adds the rest.
        failed = result.error.task if isinstance(result.error, TaskFailedError) else result.task
        if result.error is not None and not isinstance(result.error, TaskFailedError):
            error = str(result.error)
        elif failed is not None:
            error = failed.error_message or f"status {failed.raw_status!r}"
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


def with_files(old: StoreRecord | None, key: str, files: Sequence[Path]) -> StoreRecord:
    """The record once its videos were downloaded to ``files``."""
    if old is None:
        raise KeyError(f"record_files({key!r}) for a job the journal never saw")
    return dataclasses.replace(old, files=tuple(str(f) for f in files))


class OneProcessStore:
    """The part of a job store that one process owns whole (memory, a locked file): every
    job is this process's, so a claim is a lookup and its own writes are the only news.

    A backend supplies :meth:`load` and :meth:`_change` (apply a transition durably).
    """

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    async def load(self, key: str) -> StoreRecord | None:
        """The record for ``key``, or None if the journal never saw it."""
        raise NotImplementedError

    async def _change(self, key: str, change: Change, *, shield: bool) -> StoreRecord:
        """Apply ``change`` to the record of ``key`` and store the result, returned."""
        raise NotImplementedError

    async def claim(
        self, key: str, *, create: GenerationRequest | None = None, reopen: bool = False
    ) -> Claim:
        """``"final"`` for a finished job unless ``reopen``, else ``"mine"``, ``"created"``
        (written at its intent) or ``"unknown"``."""
        record = await self.load(key)
        if record is None:
            if create is None:
                return Claim("unknown", None)
            return Claim("created", StoredJob(key, create, None))
        job = StoredJob(key, record.request, record)
        if job.final:
            return Claim("reopened" if reopen else "final", job)
        return Claim("mine", job)

    async def record_intent(self, key: str, request: GenerationRequest, attempt: int) -> None:
        """POST number ``attempt`` for ``key`` is about to be sent (its previous task id is
        cleared: the outcome is unknown until answered). Not shielded: a call cancelled before
        its write started writes nothing, so the job is not taken for an ambiguous one."""
        await self._told(key, lambda old: intent(old, key, request, attempt), shield=False)

    async def record_submitted(self, key: str, task_id: str) -> None:
        """The POST for ``key`` created ``task_id`` (shielded: a paid task id is never lost)."""
        await self._told(key, lambda old: submitted(old, key, task_id), shield=True)

    async def record_finished(self, result: JobResult) -> None:
        """The job ended (attempts and credits never go down: earlier runs count)."""
        await self._told(result.key, lambda old: finished(old, result), shield=True)

    async def record_files(self, key: str, files: Sequence[Path]) -> None:
        """The job's videos were downloaded to ``files``."""
        await self._told(key, lambda old: with_files(old, key, files), shield=True)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with each change of a job (this process is the only writer)."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def _told(self, key: str, change: Change, *, shield: bool) -> None:
        record = await self._change(key, change, shield=shield)
        job = StoredJob(key, record.request, record)
        for listener in list(self._listeners):
            listener(job)
