"""The journal's SQLite file, synchronously: schema, checks, and rows to records.

Everything here blocks; :mod:`grok_imagine_async._journal.sqlite` runs it in a worker thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._errors import JournalError
from .._models import GenerationRequest
from .._scheduling.jobs import StoreRecord, StoreState
from .codec import failure_class, request_data, request_digest, request_from

SCHEMA_VERSION = 2
APPLICATION_ID = 0x47494A31  # "GIJ1": marks the file as ours, so a stray database is refused

_SCHEMA = """
CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE jobs (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    state TEXT NOT NULL,
    task_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    credits INTEGER NOT NULL DEFAULT 0,
    videos TEXT NOT NULL DEFAULT '[]',
    files TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    failure_class TEXT,
    updated_at REAL NOT NULL,
    request_digest TEXT
);
CREATE INDEX jobs_state ON jobs (state);
CREATE TABLE tasks (
    key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    task_id TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX tasks_key ON tasks (key);
"""
COLUMNS = (
    "key, request, state, task_id, attempts, credits, videos, files, error, failure_class, "
    "request_digest"
)


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed), check and lock the journal file ``path``.

    Raises:
        JournalError: If the file cannot be used as a journal.
    """
    _check_header(path)
    _create_private(path)
    try:
        conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=0.5
        )
    except sqlite3.Error as exc:
        raise journal_error(path, exc) from None
    try:
        # EXCLUSIVE: the lock taken by the first write below is held until close, so a second
        # process on the same journal fails at once instead of submitting the same jobs.
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(f"journal {path}: cannot use WAL mode (got {mode})", path=path)
        conn.execute("PRAGMA synchronous = FULL")  # a commit is on disk when it returns
        conn.execute("BEGIN IMMEDIATE")
        try:
            _check_or_create_schema(conn, path)
            conn.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES ('created_at', ?)",
                (str(time.time()),),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.OperationalError as exc:
        conn.close()
        if "locked" in str(exc) or "busy" in str(exc):
            raise JournalError(
                f"journal {path} is in use by another process (another run of this batch?)",
                path=path,
            ) from None
        raise journal_error(path, exc) from None
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise journal_error(path, exc) from None
    except BaseException:
        conn.close()
        raise
    return conn


def _check_header(path: Path) -> None:
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise JournalError(
                f"cannot create journal {path}: folder {path.parent} does not exist", path=path
            ) from None
        return
    except OSError as exc:
        raise JournalError(f"cannot read journal {path}: {exc.strerror}", path=path) from None
    if head and head != b"SQLite format 3\x00":
        raise JournalError(f"{path} is not a journal (not an SQLite file)", path=path)


def _create_private(path: Path) -> None:
    """Create the journal file readable by its owner only (it holds prompts, task ids and
    bearer video URLs; SQLite gives its WAL the same mode), never through a planted link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        os.close(os.open(path, flags, 0o600))
    except FileExistsError:
        if path.is_symlink() and not path.exists():  # a dangling link would create it elsewhere
            raise JournalError(f"journal {path} is a link to nothing: refused", path=path) from None
    except OSError as exc:
        raise JournalError(f"cannot create journal {path}: {exc.strerror}", path=path) from None


def _check_or_create_schema(conn: sqlite3.Connection, path: Path) -> None:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if app_id == 0 and version == 0 and tables == 0:
        # One statement at a time: executescript() would COMMIT the open transaction.
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute(
            "INSERT INTO meta (name, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        return
    if app_id != APPLICATION_ID:
        raise JournalError(
            f"{path} is an SQLite database but not a grok-imagine journal", path=path
        )
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"journal {path} has schema version {version}, newer than this version of "
            f"grok-imagine-async understands ({SCHEMA_VERSION}): upgrade the package",
            path=path,
        )
    if version == 1:
        _migrate_from_1(conn)
        return
    if version < SCHEMA_VERSION:
        raise JournalError(
            f"journal {path} has schema version {version}, which this version cannot read "
            f"(it reads {SCHEMA_VERSION})",
            path=path,
        )


def _migrate_from_1(conn: sqlite3.Connection) -> None:
    """Version 2 stores each job's request digest: version 1 files get it computed."""
    conn.execute("ALTER TABLE jobs ADD COLUMN request_digest TEXT")
    rows = conn.execute("SELECT key, request FROM jobs").fetchall()
    conn.executemany(
        "UPDATE jobs SET request_digest = ? WHERE key = ?",
        [(request_digest(request_from(json.loads(text))), key) for key, text in rows],
    )
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.execute(
        "INSERT OR REPLACE INTO meta (name, value) VALUES ('schema_version', ?)",
        (str(SCHEMA_VERSION),),
    )


def read_one(conn: sqlite3.Connection, *, key: str) -> StoreRecord | None:
    """The record of ``key``, if any."""
    row = conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE key = ?", (key,)).fetchone()
    return None if row is None else to_record(row)


def read_page(conn: sqlite3.Connection, *, after: int, size: int) -> tuple[int, list[StoreRecord]]:
    rows = conn.execute(
        f"SELECT rowid, {COLUMNS} FROM jobs WHERE rowid > ? ORDER BY rowid LIMIT ?", (after, size)
    ).fetchall()
    return (rows[-1][0] if rows else after), [to_record(row[1:]) for row in rows]


def close(conn: sqlite3.Connection) -> None:
    """Checkpoint and close."""
    # Fold the WAL back into the main file, so the journal is one self-contained file; if that
    # fails the WAL is still valid and is recovered at the next open.
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def journal_error(path: Path, exc: BaseException) -> JournalError:
    """A :class:`JournalError` for an SQLite error on ``path``."""
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return JournalError(f"journal {path} is corrupt or not a journal ({text})", path=path)
    return JournalError(f"journal {path}: {text}", path=path)


def request_json(request: GenerationRequest) -> str:
    """The request as stored (see :func:`~grok_imagine_async._journal.codec.request_data`)."""
    return json.dumps(request_data(request), sort_keys=True, separators=(",", ":"))


def to_record(row: Sequence[Any]) -> StoreRecord:
    """A row of :data:`COLUMNS` as a :class:`StoreRecord`."""
    key, request, state, task_id, attempts, credits, videos, files, error, failure, digest = row
    return StoreRecord(
        key=key,
        request=request_from(json.loads(request)),
        state=StoreState(state),
        task_id=task_id,
        attempts=int(attempts),
        credits=int(credits),
        videos=tuple(json.loads(videos)),
        files=tuple(json.loads(files)),
        error=error,
        failure_class=failure_class(failure),
        request_digest=digest,
    )
