"""What every job store shares, and the store in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from .._models import GenerationRequest
from .._scheduling.jobs import Claim, JobResult, Listener, StoredJob, StoreRecord
from .records import Change, Refund, finished, intent, submitted, unbilled, with_files


class StoreBase:
    """The journal calls as the transitions of ``records.py``, and the listeners. A backend
    supplies :meth:`load` and :meth:`_change`; a shared store overrides :meth:`claim` and
    :meth:`_apply` (reserving attempt ``reserve``'s credits, first giving ``replaced`` of attempt
    ``reserve - 1``'s back; giving back what ``refund`` says of the reserved attempt's, given the
    record the change replaces)."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    async def load(self, key: str) -> StoreRecord | None:
        raise NotImplementedError

    async def _change(self, key: str, change: Change, *, shield: bool) -> StoreRecord:
        """Apply ``change`` to the record of ``key`` durably; the new record."""
        raise NotImplementedError

    async def _apply(
        self,
        key: str,
        change: Change,
        *,
        shield: bool,
        reserve: int = 0,
        refund: Refund = None,
        replaced: int = 0,
    ) -> None:
        record = await self._change(key, change, shield=shield)
        self._tell(StoredJob(key, record.request, record))

    async def record_intent(
        self, key: str, request: GenerationRequest, attempt: int, *, unbilled: int = 0
    ) -> None:
        """POST number ``attempt`` for ``key`` is about to be sent (its credits reserved), and
        ``unbilled`` credits of the task it replaces (attempt ``attempt - 1``) go back; not
        shielded: cancelled, it wrote nothing, so the job is not taken for ambiguous."""
        change: Change = lambda old: intent(old, key, request, attempt, unbilled)  # noqa: E731
        await self._apply(key, change, shield=False, reserve=attempt, replaced=unbilled)

    async def record_submitted(self, key: str, task_id: str) -> None:
        """The POST for ``key`` created ``task_id`` (shielded: a paid task id is never lost)."""
        await self._apply(key, lambda old: submitted(old, key, task_id), shield=True)

    async def record_finished(self, result: JobResult) -> None:
        """The job ended (attempts and credits never go down: earlier runs count); what its
        last POST was not charged (refused outright, or a task the provider did not bill) goes
        back, and is not counted in the record's credits."""
        change: Change = lambda old: finished(old, result)  # noqa: E731
        refund: Refund = lambda old: unbilled(result, old)  # noqa: E731
        await self._apply(result.key, change, shield=True, refund=refund)

    async def record_files(self, key: str, files: Sequence[Path]) -> None:
        """The job's videos were downloaded to ``files``."""
        await self._apply(key, lambda old: with_files(old, key, files), shield=True)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with each change of a job; returns a remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _tell(self, job: StoredJob | None) -> None:
        for listener in list(self._listeners):
            listener(job)

    async def claim(
        self, key: str, *, create: GenerationRequest | None = None, reopen: bool = False
    ) -> Claim:
        """``"final"`` for a finished job unless ``reopen``, else ``"mine"``, ``"created"``
        (written at its intent) or ``"unknown"``."""
        record = await self.load(key)
        if record is None:
            created = None if create is None else StoredJob(key, create, None)
            return Claim("unknown" if created is None else "created", created)
        job = StoredJob(key, record.request, record)
        return Claim(("reopened" if reopen else "final") if job.final else "mine", job)


class MemoryJobStore(StoreBase):
    """A :class:`~grok_imagine_async.abc.JobStore` in a dict, with the SQLite journal's rules:
    a scheduler resumes, replays and refuses to pay twice within the process as across runs."""

    def __init__(self) -> None:
        super().__init__()
        self._records: dict[str, StoreRecord] = {}
        self._meta: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"MemoryJobStore({len(self._records)} jobs)"

    async def load(self, key: str) -> StoreRecord | None:
        """The record for ``key``, or None."""
        return self._records.get(key)

    async def _change(self, key: str, change: Change, *, shield: bool) -> StoreRecord:
        self._records[key] = change(self._records.get(key))
        return self._records[key]

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

    async def aclose(self) -> None:
        """Nothing to close."""
