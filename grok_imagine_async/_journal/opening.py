"""The one place a ``journal=`` option becomes a journal, for the scheduler and the FastAPI app."""

from __future__ import annotations

import os
from pathlib import Path

from .._scheduling.jobs import Journal
from .sqlite import SqliteJournal

JournalOption = Journal | str | os.PathLike[str] | None
"""What ``journal=`` accepts: a :class:`Journal`, a path for a SQLite journal, or None."""


def journal_from(journal: JournalOption) -> Journal | None:
    """The journal ``journal`` names: a :class:`Journal` as it is, a path as a SqliteJournal.

    Whoever calls this closes a journal it got from a path (``result is not journal``); a
    journal passed in belongs to the caller.
    """
    if journal is None or isinstance(journal, Journal):
        return journal
    return SqliteJournal(Path(journal))


async def open_journal(journal: JournalOption) -> Journal | None:
    """:func:`journal_from`, with a journal made from a path opened (and locked) now.

    So a journal that cannot be used (another process holds it, it is not a journal) fails
    the start of a scheduler or an app, before anything is sent, not its first job.
    """
    opened = journal_from(journal)
    if isinstance(opened, SqliteJournal) and opened is not journal:
        await opened.open()
    return opened
