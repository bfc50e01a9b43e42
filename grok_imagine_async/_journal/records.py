"""A job's record: how each journal call changes it, and the one JSON text every store keeps.

An intent clears the previous task id (the new POST's outcome is unknown until answered),
attempts and credits never go down (but by what the provider did not charge for a task, as the
job's end or the intent of the POST replacing it says), a completed task whose download failed
keeps its URLs.
A record keeps the prompt cut to :data:`PROMPT_KEPT` characters; its digest names the whole.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._errors import TaskFailedError
from .._models import CREDITS_PER_GENERATION, FailureClass, GenerationRequest, uncharged_credits
from .._scheduling.jobs import JobResult, StoredJob, StoreRecord, StoreState, request_digest
from .._settings import DEFAULT_MAX_PROMPT_CHARS

Change = Callable[[StoreRecord | None], StoreRecord]
"""A transition of one job's record, given its current record (None: never written)."""
Refund = Callable[[StoreRecord | None], int] | None
"""Credits of a job's reserved POST to give back, given its record before the change."""

PROMPT_KEPT = DEFAULT_MAX_PROMPT_CHARS
"""The most characters of a prompt a journal (or manifest) keeps."""

QUEUED = "queued"  # a job a shared store knows before its record: accepted, no POST sent yet
_RECORD_FIELDS = [f.name for f in dataclasses.fields(StoreRecord)][2:]  # after key, request


def intent(
    old: StoreRecord | None,
    key: str,
    request: GenerationRequest,
    attempt: int,
    unbilled: int = 0,
) -> StoreRecord:
    """The record once POST number ``attempt`` is about to be sent, replacing a task whose
    ``unbilled`` credits the provider did not charge: its submission counted 40, so they are
    taken off, once (only while the record is still that task's).
    """
    credits = old.credits if old else 0
    if old is not None and old.state is StoreState.SUBMITTED and old.attempts < attempt:
        credits -= min(max(unbilled, 0), CREDITS_PER_GENERATION)
    return StoreRecord(
        key=key,
        request=request,
        state=StoreState.INTENT,
        attempts=max(attempt, old.attempts if old else 0),
        credits=max(credits, 0),
        request_digest=request_digest(request),
    )


def submitted(old: StoreRecord | None, key: str, task_id: str) -> StoreRecord:
    """The record once the POST created ``task_id`` (and cost its credits)."""
    if old is None:
        raise KeyError(f"record_submitted({key!r}) without record_intent")
    credits = old.credits + CREDITS_PER_GENERATION
    return dataclasses.replace(old, state=StoreState.SUBMITTED, task_id=task_id, credits=credits)


def finished(old: StoreRecord | None, result: JobResult) -> StoreRecord:
    """The record of how the job ended."""
    failed = result.error.task if isinstance(result.error, TaskFailedError) else result.task
    if result.ok:
        error = None
    elif result.error is not None and not isinstance(result.error, TaskFailedError):
        error = str(result.error)
    else:  # a task's failure is stored as its reason: the replay's TaskFailedError adds the rest
        error = None if failed is None else failed.error_message or f"status {failed.raw_status!r}"
    credits = old.credits if old else 0
    if old is not None and result.task is not None and result.task.task_id == old.task_id:
        credits -= unbilled(result)  # its submission counted 40: the provider charged less
    return StoreRecord(
        key=result.key,
        request=result.request,
        state=StoreState.COMPLETED if result.ok else StoreState.FAILED,
        task_id=result.task_id or (old.task_id if old else None),
        attempts=max(result.attempts, old.attempts if old else 0),
        credits=max(result.credits, credits),
        videos=result.task.videos if result.task is not None and result.task.succeeded else (),
        files=tuple(str(f) for f in result.files) or (old.files if old else ()),
        error=error,
        failure_class=result.failure_class,
        request_digest=request_digest(result.request),
    )


def unbilled(result: JobResult, old: StoreRecord | None = None) -> int:
    """Credits of ``result``'s last POST the provider did not charge: all of a POST refused
    outright, or what its task's status answer says it did not cost (as the scheduler refunds
    its own budget). Not a job whose record ``old`` holds the task of its last POST: ended
    with no task (its looks failed: 404s, unreadable answers), it was paid all the same."""
    if result.task is None:
        refused = result.failure_class is FailureClass.REQUEST_ERROR
        paid = old is not None and old.state is StoreState.SUBMITTED
        return CREDITS_PER_GENERATION if refused and not paid else 0
    return uncharged_credits(result.task)


def with_files(old: StoreRecord | None, key: str, files: Sequence[Path]) -> StoreRecord:
    """The record once its videos were downloaded to ``files``."""
    if old is None:
        raise KeyError(f"record_files({key!r}) for a job the journal never saw")
    return dataclasses.replace(old, files=tuple(str(f) for f in files))


def excerpt(prompt: str) -> str:
    """``prompt`` as a journal or manifest keeps it: at most :data:`PROMPT_KEPT` characters."""
    return prompt if len(prompt) <= PROMPT_KEPT else prompt[: PROMPT_KEPT - 1] + "\u2026"


def encode_job(job: StoredJob) -> str:
    """The JSON text a store keeps for ``job``: its record, or its request if queued."""
    request = {**job.request.payload(), "prompt": excerpt(job.request.prompt)}
    if job.request.allow_unlisted:
        request["allow_unlisted"] = True
    data: dict[str, Any] = {"key": job.key, "request": request, "state": QUEUED}
    if (record := job.record) is not None:  # its fields in order, enums as their (str) values
        data |= {name: getattr(record, name) for name in _RECORD_FIELDS}
        data["request_digest"] = record.request_digest or request_digest(record.request)
    return json.dumps(data, separators=(",", ":"))


def decode_job(text: str | bytes, *, owner: str = "") -> StoredJob:
    """Read back what :func:`encode_job` wrote; ValueError if ``text`` is not such a job
    (foreign data under our keys)."""
    data = json.loads(text)
    if not isinstance(data, dict) or "key" not in data or "request" not in data:
        raise ValueError("not a job record of this store")
    key = str(data["key"])
    try:
        request = GenerationRequest(**data["request"])
    except ValueError:  # validated when recorded: a later, stricter version still reads it
        request = GenerationRequest.model_construct(**data["request"])
    if data.get("state") == QUEUED:
        return StoredJob(key, request, None, owner)
    try:  # a failure class this version does not know reads as UNKNOWN
        failure = FailureClass(data["failure_class"]) if data.get("failure_class") else None
    except ValueError:
        failure = FailureClass.UNKNOWN
    record = StoreRecord(
        key=key,
        request=request,
        state=StoreState(data["state"]),
        task_id=data.get("task_id"),
        attempts=int(data.get("attempts", 0)),
        credits=int(data.get("credits", 0)),
        videos=tuple(data.get("videos", ())),
        files=tuple(data.get("files", ())),
        error=data.get("error"),
        failure_class=failure,
        request_digest=data.get("request_digest") or request_digest(request),
    )
    return StoredJob(key, request, record, owner)
