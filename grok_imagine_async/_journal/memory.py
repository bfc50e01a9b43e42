"""A journal in memory: the job store of one process that need not survive it.

It keeps what the SQLite journal keeps, with the same rules (an intent clears the last task id,
attempts and credits never go down), so a scheduler given one resumes, replays and refuses to
pay twice within the process exactly as it would across runs with a file. A base for test
journals too (one that fails its writes on demand, as a full disk would).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from .._models import GenerationRequest
from .._scheduling.jobs import Claim, JobResult, Listener, StoredJob, StoreRecord
from .records import finished, intent, submitted


class MemoryJobStore:
    """A :class:`~grok_imagine_async.JobStore` in a dict: one process owns every job."""

    def __init__(self) -> None:
        self._records: dict[str, StoreRecord] = {}
        self._meta: dict[str, str] = {}
        self._listeners: list[Listener] = []

    def __repr__(self) -> str:
        return f"MemoryJobStore({len(self._records)} jobs)"

    async def load(self, key: str) -> StoreRecord | None:
        """The record for ``key``, or None."""
        return self._records.get(key)

    async def claim(
        self, key: str, *, create: GenerationRequest | None = None, reopen: bool = False
    ) -> Claim:
        """As :meth:`SqliteJobStore.claim`: every job is this process's."""
        record = self._records.get(key)
        if record is None:
            if create is None:
                return Claim("unknown", None)
            return Claim("created", StoredJob(key, create, None))
        job = StoredJob(key, record.request, record)
        if job.final:
            return Claim("reopened" if reopen else "final", job)
        return Claim("mine", job)

    async def record_intent(self, key: str, request: GenerationRequest, attempt: int) -> None:
        """POST number ``attempt`` for ``key`` is about to be sent."""
        self._records[key] = intent(self._records.get(key), key, request, attempt)
        self._tell(key)

    async def record_submitted(self, key: str, task_id: str) -> None:
        """The POST for ``key`` created ``task_id``."""
        old = self._records.get(key)
        if old is None:
            raise KeyError(f"record_submitted({key!r}) without record_intent")
        self._records[key] = submitted(old, task_id)
        self._tell(key)

    async def record_finished(self, result: JobResult) -> None:
        """The job ended."""
        self._records[result.key] = finished(self._records.get(result.key), result)
        self._tell(result.key)

    async def record_files(self, key: str, files: Sequence[Path]) -> None:
        """The job's videos were downloaded to ``files``."""
        old = self._records.get(key)
        if old is None:
            raise KeyError(f"record_files({key!r}) for a job the journal never saw")
        self._records[key] = dataclasses.replace(old, files=tuple(str(f) for f in files))

    async def forget(self, key: str) -> None:
        """Take ``key`` back to never started."""
        self._records.pop(key, None)

    async def records(self) -> AsyncIterator[StoreRecord]:
        """Every record, in the order the jobs were first recorded."""
        for record in list(self._records.values()):
            yield record

    async def get_meta(self, name: str) -> str | None:
        """A value stored with :meth:`set_meta`, or None."""
        return self._meta.get(name)

    async def set_meta(self, name: str, value: str) -> None:
        """Store a small named value."""
        self._meta[name] = value

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with each change of a job (this process is the only writer)."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _tell(self, key: str) -> None:
        if not self._listeners:
            return
        record = self._records[key]
        job = StoredJob(key, record.request, record)
        for listener in list(self._listeners):
            listener(job)

    async def aclose(self) -> None:
        """Nothing to close."""
