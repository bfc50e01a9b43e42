"""The one place a ``journal=`` option becomes a journal, for the scheduler and the FastAPI app."""

from __future__ import annotations

import os
from pathlib import Path

from .._scheduling.jobs import JobStore
from .sqlite import SqliteJobStore

JournalOption = JobStore | str | os.PathLike[str] | None
"""What ``journal=`` accepts: a :class:`JobStore`, a path for a SQLite journal, or None."""


def journal_from(journal: JournalOption) -> JobStore | None:
    """The journal ``journal`` names: a :class:`JobStore` as it is, a path as a SqliteJobStore.

    Whoever calls this closes a journal it got from a path (``result is not journal``); a
    journal passed in belongs to the caller.
    """
    if journal is None or isinstance(journal, JobStore):
        return journal
    return SqliteJobStore(Path(journal))


async def open_journal(journal: JournalOption) -> JobStore | None:
    """:func:`journal_from`, with a journal made from a path opened (and locked) now.

    So a journal that cannot be used (another process holds it, it is not a journal) fails
    the start of a scheduler or an app, before anything is sent, not its first job.
    """
    opened = journal_from(journal)
    if isinstance(opened, SqliteJobStore) and opened is not journal:
        await opened.open()
    return opened
