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

    Raises:
        TypeError: If ``journal`` is neither a path nor a whole :class:`JobStore` (the
            message names the methods it lacks).
    """
    if journal is None or isinstance(journal, JobStore):
        return journal
    if not isinstance(journal, (str, os.PathLike)):
        missing = [name for name in _METHODS if not callable(getattr(journal, name, None))]
        raise TypeError(
            f"journal= takes a path or a JobStore; {type(journal).__name__} lacks "
            f"{', '.join(missing)} (see grok_imagine_async.abc.JobStore)"
        )
    return SqliteJobStore(Path(journal))


_METHODS = [
    name for name in dir(JobStore) if not name.startswith("_") and callable(getattr(JobStore, name))
]


async def open_journal(journal: JournalOption) -> JobStore | None:
    """:func:`journal_from`, with a journal made from a path opened (and locked) now.

    So a journal that cannot be used (another process holds it, it is not a journal) fails
    the start of a scheduler or an app, before anything is sent, not its first job.
    """
    opened = journal_from(journal)
    if isinstance(opened, SqliteJobStore) and opened is not journal:
        await opened.open()
    return opened
