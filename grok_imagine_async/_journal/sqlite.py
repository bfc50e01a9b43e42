"""A durable journal of a batch in one SQLite file, so a crash loses no job and pays nothing twice.

Each write is committed (WAL, ``synchronous=FULL``) before its call returns; writes that arrive
together share one commit. The file is locked while open, so two processes never run one batch.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import anyio

from .._errors import JournalError
from .._files import create_exclusive, run_blocking
from .._scheduling.jobs import JobStore, StoredJob, StoreRecord, StoreState
from .memory import StoreBase
from .records import Change, decode_job, encode_job

__all__ = ["JournalError", "SqliteJobStore", "open_journal"]

_T = TypeVar("_T")
_Apply = Callable[[sqlite3.Connection], _T]  # a read or write, run in the worker thread

SCHEMA_VERSION = 3
APPLICATION_ID = 0x47494A31  # "GIJ1": marks the file as ours, so a stray database is refused
_SCHEMA = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE jobs (key TEXT PRIMARY KEY, record TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE tasks (
    key TEXT NOT NULL, attempt INTEGER NOT NULL, task_id TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE INDEX tasks_key ON tasks (key)
"""


@dataclass
class _Op(Generic[_T]):
    """One read or write waiting for its turn, and how it went."""

    apply: _Apply[_T]
    write: bool
    done: bool = False
    result: _T | None = None
    error: BaseException | None = None


class SqliteJobStore(StoreBase):
    """The :class:`~grok_imagine_async.abc.JobStore` of one batch, in one SQLite file.

    The file is created or opened (and locked) by :meth:`open`, ``async with`` or the first
    call that needs it. Re-running a batch with the same file resumes it.

    Args:
        path: The journal file (created if missing; its folder must exist).

    Raises:
        JournalError: From the first call, if the file cannot be used (locked by another
            process, not a journal, corrupt, of a newer schema).

    Example:
        >>> async def main() -> None:
        ...     async with SqliteJobStore("run.db") as journal:
        ...         print(await journal.load("job-1"))
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        """The journal file."""
        self._conn: sqlite3.Connection | None = None
        self._lock = anyio.Lock()
        self._pending: list[_Op[Any]] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"SqliteJobStore({str(self.path)!r})"

    async def open(self) -> SqliteJobStore:
        """Open (creating if needed) and lock the file now; :class:`JournalError` if unusable."""
        await self._run(lambda conn: None)
        return self

    __aenter__ = open

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Commit what is pending, close the file and release its lock. Idempotent."""
        with anyio.CancelScope(shield=True):
            async with self._lock:
                self._closed = True
                conn, self._conn = self._conn, None
                if conn is not None:
                    await run_blocking(_close, conn)

    async def load(self, key: str) -> StoreRecord | None:
        """The record for ``key``, or None if the journal never saw it."""
        return await self._run(lambda conn: _read_one(conn, key))

    async def _change(self, key: str, change: Change, *, shield: bool) -> StoreRecord:
        def apply(conn: sqlite3.Connection) -> StoreRecord:
            old, now = _read_one(conn, key), time.time()
            new = change(old)
            conn.execute(
                "INSERT INTO jobs (key, record, updated_at) VALUES (?, ?, ?) ON CONFLICT (key) "
                "DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at",
                (key, encode_job(StoredJob(key, new.request, new)), now),
            )
            if new.state is StoreState.SUBMITTED and new.task_id != (old.task_id if old else None):
                conn.execute(  # a paid task: kept in the history whatever happens to the job
                    "INSERT INTO tasks (key, attempt, task_id, created_at) VALUES (?, ?, ?, ?)",
                    (key, new.attempts, new.task_id, now),
                )
            return new

        return await self._run(apply, write=True, shield=shield)

    async def forget(self, key: str) -> None:
        """Take ``key`` back to never started (its task history is kept)."""
        delete = "DELETE FROM jobs WHERE key = ?"
        await self._run(lambda c: c.execute(delete, (key,)), write=True, shield=True)

    async def records(self, *, page_size: int = 1000) -> AsyncIterator[StoreRecord]:
        """Every record, in the order the jobs were first recorded, a page at a time."""
        after, page = 0, "SELECT rowid, record FROM jobs WHERE rowid > ? ORDER BY rowid LIMIT ?"
        while True:
            args = (after, page_size)  # the call is awaited before the loop moves on
            rows = await self._run(lambda c: c.execute(page, args).fetchall())  # noqa: B023
            for _, text in rows:
                yield _record(text)
            if len(rows) < page_size:
                return
            after = rows[-1][0]

    async def get_meta(self, name: str) -> str | None:
        """A value stored with :meth:`set_meta`, or None."""
        read = "SELECT value FROM meta WHERE name = ?"
        row = await self._run(lambda c: c.execute(read, (name,)).fetchone())
        return None if row is None else str(row[0])

    async def set_meta(self, name: str, value: str) -> None:
        """Store a small named value with the batch (e.g. the API base URL it ran against)."""
        upsert = "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)"
        await self._run(lambda c: c.execute(upsert, (name, value)), write=True, shield=True)

    async def _run(self, apply: _Apply[_T], *, write: bool = False, shield: bool = False) -> _T:
        # Whoever takes the lock runs every operation queued so far in one worker-thread trip
        # and one transaction (group commit); the others find theirs done when they get it.
        op: _Op[_T] = _Op(apply, write)
        self._pending.append(op)
        with anyio.CancelScope(shield=shield):
            try:
                async with self._lock:
                    if not op.done:
                        batch, self._pending = self._pending, []
                        await run_blocking(self._execute, batch)
            except BaseException:
                if not op.done and op in self._pending:
                    self._pending.remove(op)  # cancelled while waiting: never run
                raise
        if op.error is not None:
            raise op.error
        return op.result  # type: ignore[return-value]

    def _execute(self, batch: list[_Op[Any]]) -> None:
        # In the worker thread, the lock held; a savepoint per write keeps a failing one apart.
        writes = [item for item in batch if item.write]
        try:
            if self._closed:
                raise JournalError(f"journal {self.path} is closed", path=self.path)
            conn = self._conn = self._conn or _connect(self.path)
            if writes:
                conn.execute("BEGIN IMMEDIATE")
            for item in batch:
                if item.write:
                    conn.execute("SAVEPOINT op")
                try:
                    item.result = item.apply(conn)
                except Exception as exc:
                    if item.write:
                        conn.execute("ROLLBACK TO op")
                    is_db = isinstance(exc, sqlite3.DatabaseError)
                    item.error = _journal_error(self.path, exc) if is_db else exc
                if item.write:
                    conn.execute("RELEASE op")
            if writes:
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:  # the transaction failed: no write holds
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = _journal_error(self.path, exc)
            for item in writes:
                item.error = error
        except Exception as exc:  # closed, or the file unusable (_connect): nothing ran
            for item in batch:
                item.error = exc
        finally:
            for item in batch:
                item.done = True


async def open_journal(journal: JobStore | str | os.PathLike[str] | None) -> JobStore | None:
    """The journal a ``journal=`` option names: a :class:`JobStore` as it is (its owner closes
    it), a path as a :class:`SqliteJobStore` opened and locked now (the caller closes it), so
    an unusable file fails the start of a scheduler or an app, not its first job. Raises
    JournalError for such a file, TypeError (naming the methods it lacks) for a bad store."""
    if journal is None or isinstance(journal, JobStore):
        return journal
    if not isinstance(journal, (str, os.PathLike)):
        names = [name for name in dir(JobStore) if not name.startswith("_")]  # its methods
        missing = ", ".join(name for name in names if not callable(getattr(journal, name, None)))
        raise TypeError(
            f"journal= takes a path or a JobStore; {type(journal).__name__} lacks {missing} "
            "(see grok_imagine_async.abc.JobStore)"
        )
    return await SqliteJobStore(Path(journal)).open()


def _connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed), check and lock the journal file ``path`` (in a worker thread)."""
    _create_private(path)
    try:
        conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=0.5
        )
    except sqlite3.Error as exc:
        raise _journal_error(path, exc) from None
    try:
        # EXCLUSIVE: the lock taken by the first write below is held until close, so a second
        # process on the same journal fails at once instead of submitting the same jobs.
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(f"journal {path}: cannot use WAL mode (got {mode})", path=path)
        conn.execute("PRAGMA synchronous = FULL")  # a commit is on disk when it returns
        conn.execute("BEGIN IMMEDIATE")
        _check_or_create_schema(conn, path)
        conn.execute("COMMIT")
    except BaseException as exc:
        conn.close()  # rolls back what was not committed
        if isinstance(exc, sqlite3.DatabaseError):
            raise _journal_error(path, exc) from None
        raise
    return conn


def _create_private(path: Path) -> None:
    """Create the journal file readable by its owner only (it holds prompts, task ids and
    bearer video URLs; SQLite gives its WAL the same mode), never through a planted link, and
    refuse an existing file that is not SQLite before SQLite touches it."""
    try:
        create_exclusive(path, mode=0o600).close()
        return
    except FileExistsError:
        if path.is_symlink() and not path.exists():  # a dangling link would create it elsewhere
            raise JournalError(f"journal {path} is a link to nothing: refused", path=path) from None
    except FileNotFoundError:
        raise JournalError(
            f"cannot create journal {path}: folder {path.parent} does not exist", path=path
        ) from None
    except OSError as exc:
        raise JournalError(f"cannot create journal {path}: {exc.strerror}", path=path) from None
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise JournalError(f"cannot read journal {path}: {exc.strerror}", path=path) from None
    if head and head != b"SQLite format 3\x00":
        raise JournalError(f"{path} is not a journal (not an SQLite file)", path=path)


def _check_or_create_schema(conn: sqlite3.Connection, path: Path) -> None:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if app_id == 0 and version == 0 and tables == 0:
        # One statement at a time: executescript() would COMMIT the open transaction.
        for statement in _SCHEMA.split(";"):
            conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.executemany(
            "INSERT INTO meta (name, value) VALUES (?, ?)",
            [("schema_version", str(SCHEMA_VERSION)), ("created_at", str(time.time()))],
        )
    elif app_id != APPLICATION_ID:
        raise JournalError(
            f"{path} is an SQLite database but not a grok-imagine journal", path=path
        )
    elif version != SCHEMA_VERSION:
        newer = version > SCHEMA_VERSION
        raise JournalError(
            f"journal {path} has schema version {version}, which this version of "
            f"grok-imagine-async cannot read (it reads {SCHEMA_VERSION}): "
            + ("upgrade the package" if newer else "finish it with the version that wrote it"),
            path=path,
        )


def _read_one(conn: sqlite3.Connection, key: str) -> StoreRecord | None:
    row = conn.execute("SELECT record FROM jobs WHERE key = ?", (key,)).fetchone()
    return None if row is None else _record(row[0])


def _record(text: str) -> StoreRecord:
    record = decode_job(text).record
    assert record is not None  # written by _change, never queued
    return record


def _close(conn: sqlite3.Connection) -> None:
    """Fold the WAL back into the journal, one file again (failing, the next open recovers it)."""
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _journal_error(path: Path, exc: BaseException) -> JournalError:
    text = str(exc)
    if "locked" in text or "busy" in text:  # the EXCLUSIVE lock of another process
        return JournalError(
            f"journal {path} is in use by another process (another run of this batch?)",
            path=path,
        )
    if "not a database" in text or "malformed" in text:
        return JournalError(f"journal {path} is corrupt or not a journal ({text})", path=path)
    return JournalError(f"journal {path}: {text}", path=path)
