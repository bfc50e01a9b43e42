"""How a journal writes a record down and reads it back: one codec for every backend.

A record keeps its request with the prompt cut to :data:`PROMPT_KEPT` characters (a 50 MB line
of input is not copied into every journal and manifest); the digest names the whole request.
"""

from __future__ import annotations

import json
from typing import Any

from .._models import FailureClass, GenerationRequest
from .._scheduling.jobs import StoredJob, StoreRecord, StoreState, request_digest
from .._settings import DEFAULT_MAX_PROMPT_CHARS

PROMPT_KEPT = DEFAULT_MAX_PROMPT_CHARS
"""The most characters of a prompt a journal (or manifest) keeps."""


def excerpt(prompt: str) -> str:
    """``prompt`` as a journal or manifest keeps it: at most :data:`PROMPT_KEPT` characters."""
    return prompt if len(prompt) <= PROMPT_KEPT else prompt[: PROMPT_KEPT - 1] + "\u2026"


def request_data(request: GenerationRequest) -> dict[str, Any]:
    """The request as stored: its payload (prompt cut short), plus ``allow_unlisted`` if set."""
    data = request.payload()
    data["prompt"] = excerpt(request.prompt)
    if request.allow_unlisted:
        data["allow_unlisted"] = True
    return data


def request_from(data: dict[str, Any]) -> GenerationRequest:
    """Read back what :func:`request_data` wrote."""
    try:
        return GenerationRequest(**data)
    except ValueError:
        # Validated when it was recorded; a later, stricter version must still read it back.
        return GenerationRequest.model_construct(**data)


def record_data(record: StoreRecord) -> dict[str, Any]:
    """Every field of ``record`` as JSON values."""
    return {
        "key": record.key,
        "request": request_data(record.request),
        "state": record.state.value,
        "task_id": record.task_id,
        "attempts": record.attempts,
        "credits": record.credits,
        "videos": list(record.videos),
        "files": list(record.files),
        "error": record.error,
        "failure_class": None if record.failure_class is None else record.failure_class.value,
        "request_digest": record.request_digest or request_digest(record.request),
    }


def record_from(data: dict[str, Any], request: GenerationRequest | None = None) -> StoreRecord:
    """Read back what :func:`record_data` wrote (``request`` if already read)."""
    request = request if request is not None else request_from(data["request"])
    return StoreRecord(
        key=str(data["key"]),
        request=request,
        state=StoreState(data["state"]),
        task_id=data.get("task_id"),
        attempts=int(data.get("attempts", 0)),
        credits=int(data.get("credits", 0)),
        videos=tuple(data.get("videos", ())),
        files=tuple(data.get("files", ())),
        error=data.get("error"),
        failure_class=_failure_class(data.get("failure_class")),
        request_digest=data.get("request_digest") or request_digest(request),
    )


QUEUED = "queued"  # a job a shared store knows before its record: accepted, no POST sent yet


def encode_job(job: StoredJob) -> str:
    """The JSON text a shared store keeps for ``job`` (its record, or its request if queued)."""
    if job.record is None:
        data = {"key": job.key, "request": request_data(job.request), "state": QUEUED}
    else:
        data = record_data(job.record)
    return json.dumps(data, separators=(",", ":"))


def decode_job(text: str | bytes, *, owner: str = "") -> StoredJob:
    """Read back what :func:`encode_job` wrote.

    Raises:
        ValueError: If ``text`` is not such a job (foreign data under our keys).
    """
    data = json.loads(text)
    if not isinstance(data, dict) or "key" not in data or "request" not in data:
        raise ValueError("not a job record of this store")
    request = request_from(data["request"])
    record = None if data.get("state") == QUEUED else record_from(data, request)
    return StoredJob(str(data["key"]), request, record, owner)


def _failure_class(value: str | None) -> FailureClass | None:
    try:  # one this version does not know reads as UNKNOWN
        return FailureClass(value) if value else None
    except ValueError:
        return FailureClass.UNKNOWN
