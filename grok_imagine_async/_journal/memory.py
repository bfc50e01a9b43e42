"""A journal in memory: the job store of one process that need not survive it."""

from __future__ import annotations

from collections.abc import AsyncIterator

from .._scheduling.jobs import StoreRecord
from .records import Change, OneProcessStore


class MemoryJobStore(OneProcessStore):
    """A :class:`~grok_imagine_async.abc.JobStore` in a dict, with the SQLite journal's rules:
    a scheduler given one resumes, replays and refuses to pay twice within the process as it
    would across runs with a file."""

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
        record = self._records[key] = change(self._records.get(key))
        return record

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
