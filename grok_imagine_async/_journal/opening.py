"""The one place a ``journal=`` option becomes a journal, for the scheduler and the FastAPI app."""

from __future__ import annotations

import os
from pathlib import Path

from .._scheduling.jobs import JobStore
from .sqlite import SqliteJobStore

JournalOption = JobStore | str | os.PathLike[str] | None
"""What ``journal=`` accepts: a :class:`JobStore`, a path for a SQLite journal, or None."""


async def open_journal(journal: JournalOption) -> JobStore | None:
    """The journal ``journal`` names: a :class:`JobStore` as it is (its owner closes it), a
    path as a :class:`SqliteJobStore` opened and locked now, so that an unusable file fails the
    start of a scheduler or an app, not its first job (the caller closes that one).

    Raises:
        TypeError: If ``journal`` is neither a path nor a whole :class:`JobStore` (the
            message names the methods it lacks).
        JournalError: If the file cannot be used.
    """
    if journal is None or isinstance(journal, JobStore):
        return journal
    if not isinstance(journal, (str, os.PathLike)):
        missing = [
            name
            for name in dir(JobStore)
            if not name.startswith("_")
            and callable(getattr(JobStore, name))
            and not callable(getattr(journal, name, None))
        ]
        raise TypeError(
            f"journal= takes a path or a JobStore; {type(journal).__name__} lacks "
            f"{', '.join(missing)} (see grok_imagine_async.abc.JobStore)"
        )
    return await SqliteJobStore(Path(journal)).open()
