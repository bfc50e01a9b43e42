"""The SQLite journal: every transition, durability across close and crash, locking, bad files."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import anyio
import pytest

from grok_imagine_async import FailureClass, GenerationRequest, Task, TaskStatus
from grok_imagine_async._errors import AmbiguousSubmitError, TaskFailedError
from grok_imagine_async._journal.memory import MemoryJobStore
from grok_imagine_async._journal.sqlite import JournalError, SqliteJobStore
from grok_imagine_async._scheduling.jobs import JobResult, JobStore, StoreState

pytestmark = pytest.mark.real_time  # the journal runs SQLite in worker threads


REQUEST = GenerationRequest(prompt="a lighthouse at dawn", ratio="3:2")


def task_ids(path: Path, key: str) -> list[str]:
    """The paid tasks of ``key`` in the journal's history, oldest first (the journal closed)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT task_id FROM tasks WHERE key = ? ORDER BY rowid", (key,))
        return [str(task_id) for (task_id,) in rows]


def completed(key: str, task_id: str, *, attempts: int = 1, credits: int = 40) -> JobResult:
    task = Task(
        task_id=task_id,
        status=TaskStatus.COMPLETED,
        raw_status="completed",
        videos=(f"https://cdn.test/{task_id}/0.mp4", f"https://cdn.test/{task_id}/1.mp4"),
    )
    return JobResult(
        key=key,
        request=REQUEST,
        task=task,
        error=None,
        failure_class=None,
        attempts=attempts,
        credits=credits,
        polls=3,
        submitted_at=1.0,
        finished_at=2.0,
    )


def failed(key: str, task_id: str, message: str) -> JobResult:
    task = Task(
        task_id=task_id, status=TaskStatus.FAILED, raw_status="failed", error_message=message
    )
    error = TaskFailedError(task)
    return JobResult(
        key=key,
        request=REQUEST,
        task=task,
        error=error,
        failure_class=error.failure_class,
        attempts=1,
        credits=40,
        polls=2,
        submitted_at=1.0,
        finished_at=2.0,
    )


def test_is_a_journal_and_opening_does_no_io(tmp_path: Path) -> None:
    journal = SqliteJobStore(tmp_path / "run.db")
    assert isinstance(journal, JobStore)
    assert not (tmp_path / "run.db").exists()
    assert "run.db" in repr(journal)


@pytest.mark.anyio
async def test_every_transition_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    async with SqliteJobStore(path) as journal:
        assert await journal.load("a") is None
        await journal.record_intent("a", REQUEST, 1)
        record = await journal.load("a")
        assert record is not None
        assert (record.state, record.task_id, record.attempts, record.credits) == (
            StoreState.INTENT,
            None,
            1,
            0,
        )
        assert record.request == REQUEST

        await journal.record_submitted("a", "task_1")
        record = await journal.load("a")
        assert record is not None
        assert (record.state, record.task_id, record.credits) == (
            StoreState.SUBMITTED,
            "task_1",
            40,
        )

        await journal.record_finished(completed("a", "task_1"))
        await journal.record_files("a", [tmp_path / "a_1.mp4", tmp_path / "a_2.mp4"])

    async with SqliteJobStore(path) as journal:
        record = await journal.load("a")
        assert record is not None
        assert record.state is StoreState.COMPLETED
        assert record.task_id == "task_1"
        assert record.videos == ("https://cdn.test/task_1/0.mp4", "https://cdn.test/task_1/1.mp4")
        assert record.files == (str(tmp_path / "a_1.mp4"), str(tmp_path / "a_2.mp4"))
        assert record.error is None and record.failure_class is None
    assert task_ids(path, "a") == ["task_1"]


@pytest.mark.anyio
async def test_resubmission_clears_the_old_task_and_keeps_counting(tmp_path: Path) -> None:
    async with SqliteJobStore(tmp_path / "run.db") as journal:
        await journal.record_intent("k", REQUEST, 1)
        await journal.record_submitted("k", "task_1")
        # The first task failed transiently; the scheduler submits again.
        await journal.record_intent("k", REQUEST, 2)
        record = await journal.load("k")
        assert record is not None
        # Until the answer arrives, the new POST's outcome is unknown: no task id to poll.
        assert (record.state, record.task_id, record.attempts) == (StoreState.INTENT, None, 2)
        assert record.credits == 40
        await journal.record_submitted("k", "task_2")
        # A result that only counts this run's work does not lower what the journal knows.
        await journal.record_finished(completed("k", "task_2", attempts=1, credits=40))
        record = await journal.load("k")
        assert record is not None
        assert (record.state, record.task_id, record.attempts, record.credits) == (
            StoreState.COMPLETED,
            "task_2",
            2,
            80,
        )
    assert task_ids(tmp_path / "run.db", "k") == ["task_1", "task_2"]


@pytest.mark.anyio
async def test_failures_record_message_and_class(tmp_path: Path) -> None:
    async with SqliteJobStore(tmp_path / "run.db") as journal:
        await journal.record_intent("f", REQUEST, 1)
        await journal.record_submitted("f", "task_f")
        await journal.record_finished(
            failed("f", "task_f", "Inappropriate content, please try another prompt.")
        )
        # A job that ended before any POST (here: an ambiguous submit) has no row yet.
        error = AmbiguousSubmitError("answer lost", request=REQUEST)
        await journal.record_finished(
            JobResult(
                key="g",
                request=REQUEST,
                task=None,
                error=error,
                failure_class=FailureClass.AMBIGUOUS_SUBMIT,
                attempts=1,
                credits=0,
                polls=0,
                submitted_at=None,
                finished_at=1.0,
            )
        )
        f = await journal.load("f")
        g = await journal.load("g")
    assert f is not None and g is not None
    assert f.state is StoreState.FAILED
    assert f.failure_class is FailureClass.CONTENT_POLICY
    assert f.error is not None and "Inappropriate content" in f.error
    assert f.task_id == "task_f"
    assert g.state is StoreState.FAILED
    assert g.failure_class is FailureClass.AMBIGUOUS_SUBMIT
    assert g.error == "answer lost" and g.task_id is None


@pytest.mark.anyio
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_every_store_keeps_a_failed_tasks_reason_as_its_error(
    tmp_path: Path, backend: str
) -> None:
    # A replay wraps the stored reason in a TaskFailedError again: storing the wrapped text
    # would name the task and its class twice.
    store = MemoryJobStore() if backend == "memory" else SqliteJobStore(tmp_path / "run.db")
    await store.record_intent("f", REQUEST, 1)
    await store.record_submitted("f", "task_f")
    await store.record_finished(failed("f", "task_f", "Inappropriate content."))
    record = await store.load("f")
    await store.aclose()
    assert record is not None and record.error == "Inappropriate content."


@pytest.mark.anyio
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@pytest.mark.parametrize(("consumed", "kept"), [(0, 0), (25, 25), (None, 40), (90, 40)])
async def test_a_task_the_provider_did_not_charge_is_not_counted_in_the_record(
    tmp_path: Path, backend: str, consumed: int | None, kept: int
) -> None:
    # The record's credits are what a later run counts against its budget (and the manifest
    # shows): a task whose status answer reports it cost less than 40 counts what it cost, as
    # the scheduler counts it. Before, its submission's 40 stayed.
    store = MemoryJobStore() if backend == "memory" else SqliteJobStore(tmp_path / "run.db")
    outcome = failed("f", "task_f", "upstream network error")
    task = Task(
        task_id="task_f",
        status=TaskStatus.FAILED,
        raw_status="failed",
        error_message="upstream network error",
        consumed_credits=consumed,
    )
    charged = 40 if consumed is None else min(max(consumed, 0), 40)
    free = dataclasses.replace(outcome, task=task, error=TaskFailedError(task), credits=charged)
    await store.record_intent("f", REQUEST, 1)
    await store.record_submitted("f", "task_f")
    await store.record_finished(free)
    first = await store.load("f")
    await store.record_finished(free)  # the same end written again gives nothing back twice
    again = await store.load("f")
    await store.aclose()
    assert first is not None and again is not None
    assert (first.state, first.credits, again.credits) == (StoreState.FAILED, kept, kept)


@pytest.mark.anyio
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@pytest.mark.parametrize("unbilled", [40, 25, 0])
async def test_a_resubmission_takes_off_what_the_task_it_replaces_was_not_charged(
    tmp_path: Path, backend: str, unbilled: int
) -> None:
    # Task 1 failed and the job is resubmitted: its intent says what task 1 was not charged,
    # which the record stops counting (once, however often the intent is written), as a
    # shared Redis budget gives it back. Before, task 1 stayed 40 in the record for good.
    store = MemoryJobStore() if backend == "memory" else SqliteJobStore(tmp_path / "run.db")
    await store.record_intent("f", REQUEST, 1)
    await store.record_submitted("f", "task_1")
    await store.record_intent("f", REQUEST, 2, unbilled=unbilled)
    await store.record_intent("f", REQUEST, 2, unbilled=unbilled)  # held back, then sent
    intent = await store.load("f")
    await store.record_submitted("f", "task_2")
    await store.record_finished(completed("f", "task_2", attempts=2, credits=80 - unbilled))
    done = await store.load("f")
    await store.aclose()
    assert intent is not None and done is not None
    assert (intent.attempts, intent.credits) == (2, 40 - unbilled)
    assert (done.state, done.attempts, done.credits) == (StoreState.COMPLETED, 2, 80 - unbilled)


@pytest.mark.anyio
async def test_writes_for_unknown_jobs_are_refused(tmp_path: Path) -> None:
    async with SqliteJobStore(tmp_path / "run.db") as journal:
        with pytest.raises(KeyError, match="without record_intent"):
            await journal.record_submitted("nobody", "task_x")
        with pytest.raises(KeyError, match="never saw"):
            await journal.record_files("nobody", [])
        # A failed write in a batch does not take the journal down.
        await journal.record_intent("a", REQUEST, 1)
        assert await journal.load("a") is not None


@pytest.mark.anyio
async def test_unlisted_requests_round_trip(tmp_path: Path) -> None:
    wide = GenerationRequest(
        prompt="wide", ratio="16:9", images=["https://img.test/a.png"], allow_unlisted=True
    )
    async with SqliteJobStore(tmp_path / "run.db") as journal:
        await journal.record_intent("w", wide, 1)
        record = await journal.load("w")
    assert record is not None
    assert record.request == wide


@pytest.mark.anyio
async def test_many_concurrent_writers_all_land(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    jobs = 400

    async def job(i: int) -> None:
        key = f"job-{i:04d}"
        await journal.record_intent(key, REQUEST, 1)
        await journal.record_submitted(key, f"task_{i}")
        if i % 2:
            await journal.record_finished(completed(key, f"task_{i}"))

    async with SqliteJobStore(path) as journal, anyio.create_task_group() as tg:
        for i in range(jobs):
            tg.start_soon(job, i)

    async with SqliteJobStore(path) as journal:
        found = [record async for record in journal.records(page_size=7)]
    assert sorted(record.key for record in found) == [f"job-{i:04d}" for i in range(jobs)]
    states = Counter(record.state for record in found)
    assert states == {StoreState.COMPLETED: jobs // 2, StoreState.SUBMITTED: jobs // 2}


@pytest.mark.anyio
async def test_records_come_in_first_recorded_order(tmp_path: Path) -> None:
    async with SqliteJobStore(tmp_path / "run.db") as journal:
        for key in ["c", "a", "b"]:
            await journal.record_intent(key, REQUEST, 1)
        await journal.record_submitted("c", "task_c")  # an update does not move it
        assert [r.key async for r in journal.records(page_size=2)] == ["c", "a", "b"]
        assert [r.key async for r in journal.records()] == ["c", "a", "b"]


@pytest.mark.anyio
async def test_meta_values_persist(tmp_path: Path) -> None:
    async with SqliteJobStore(tmp_path / "run.db") as journal:
        assert await journal.get_meta("base_url") is None
        await journal.set_meta("base_url", "http://127.0.0.1:1")
        await journal.set_meta("base_url", "http://127.0.0.1:2")
    async with SqliteJobStore(tmp_path / "run.db") as journal:
        assert await journal.get_meta("base_url") == "http://127.0.0.1:2"
        assert await journal.get_meta("schema_version") == "3"


@pytest.mark.anyio
async def test_a_cancelled_intent_writes_nothing_but_a_task_id_always_lands(
    tmp_path: Path,
) -> None:
    async with SqliteJobStore(tmp_path / "run.db") as journal:
        await journal.record_intent("kept", REQUEST, 1)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await journal.record_intent("never-posted", REQUEST, 1)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await journal.record_submitted("kept", "task_kept")
        assert await journal.load("never-posted") is None
        record = await journal.load("kept")
        assert record is not None and record.task_id == "task_kept"


def test_a_killed_process_loses_no_committed_write(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    script = textwrap.dedent(
        f"""
        import os, anyio
        from grok_imagine_async import GenerationRequest
        from grok_imagine_async._journal.sqlite import SqliteJobStore

        async def main():
            journal = SqliteJobStore({str(path)!r})
            request = GenerationRequest(prompt="p")
            for i in range(20):
                await journal.record_intent(f"k{{i}}", request, 1)
                await journal.record_submitted(f"k{{i}}", f"task_{{i}}")
            os._exit(0)  # no close, no checkpoint: as if killed

        anyio.run(main)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert (tmp_path / "run.db-wal").exists()  # the writes live in the WAL only

    async def check() -> None:
        async with SqliteJobStore(path) as journal:
            states = [record.state async for record in journal.records()]
            assert states == [StoreState.SUBMITTED] * 20
            record = await journal.load("k19")
            assert record is not None and record.task_id == "task_19"

    anyio.run(check)


@pytest.mark.anyio
async def test_a_second_process_cannot_open_a_journal_in_use(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    async with SqliteJobStore(path) as journal:
        await journal.record_intent("a", REQUEST, 1)
        with pytest.raises(JournalError, match="in use by another process"):
            await SqliteJobStore(path).open()
    async with SqliteJobStore(path) as again:  # released on close
        assert await again.load("a") is not None


@pytest.mark.anyio
async def test_a_closed_journal_refuses_writes(tmp_path: Path) -> None:
    journal = SqliteJobStore(tmp_path / "run.db")
    await journal.record_intent("a", REQUEST, 1)  # the first use opens it
    await journal.aclose()
    await journal.aclose()
    with pytest.raises(JournalError, match="closed"):
        await journal.load("a")


@pytest.mark.anyio
async def test_a_file_that_is_not_sqlite_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("a cat\na dog\n")
    with pytest.raises(JournalError, match=r"prompts\.txt is not a journal") as caught:
        await SqliteJobStore(path).open()
    assert caught.value.path == path
    assert path.read_text() == "a cat\na dog\n"  # untouched


@pytest.mark.anyio
async def test_a_link_to_nothing_is_refused_and_nothing_is_created_where_it_points(
    tmp_path: Path,
) -> None:
    path, elsewhere = tmp_path / "run.db", tmp_path / "elsewhere.db"
    path.symlink_to(elsewhere)
    with pytest.raises(JournalError, match=r"run\.db is a link to nothing") as caught:
        await SqliteJobStore(path).open()
    assert caught.value.path == path
    assert not elsewhere.exists() and path.is_symlink()


@pytest.mark.anyio
async def test_another_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE things (x)")
    conn.close()
    with pytest.raises(JournalError, match="not a grok-imagine journal"):
        await SqliteJobStore(path).open()


@pytest.mark.anyio
async def test_a_newer_schema_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    async with SqliteJobStore(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match=r"schema version 99.*upgrade"):
        await SqliteJobStore(path).open()


@pytest.mark.anyio
async def test_a_corrupt_journal_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    async with SqliteJobStore(path) as journal:
        for i in range(200):
            await journal.record_intent(f"key-{i}", REQUEST, 1)
    data = bytearray(path.read_bytes())
    data[100:] = b"\xff" * (len(data) - 100)  # keep the header, wreck every page
    path.write_bytes(bytes(data))
    journal = SqliteJobStore(path)
    with pytest.raises(JournalError, match="corrupt"):
        await journal.open()


@pytest.mark.anyio
async def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="does not exist"):
        await SqliteJobStore(tmp_path / "nowhere" / "run.db").open()


@pytest.mark.anyio
async def test_forget_takes_a_job_back_to_never_started(tmp_path: Path) -> None:
    async with SqliteJobStore(tmp_path / "run.db") as journal:
        await journal.record_intent("s", REQUEST, 1)
        await journal.record_submitted("s", "task_s")
        await journal.forget("s")
        assert await journal.load("s") is None
    assert task_ids(tmp_path / "run.db", "s") == ["task_s"]  # the paid task stays on record


@pytest.mark.anyio
async def test_one_process_owns_every_job_of_its_journal(tmp_path: Path) -> None:
    async with SqliteJobStore(tmp_path / "run.db") as journal:
        assert (await journal.claim("new")).status == "unknown"
        assert (await journal.claim("new", create=REQUEST)).status == "created"
        await journal.record_intent("run", REQUEST, 1)
        assert (await journal.claim("run", create=REQUEST)).status == "mine"
        await journal.record_intent("c", REQUEST, 1)
        await journal.record_submitted("c", "task_c")
        await journal.record_finished(completed("c", "task_c"))
        assert (await journal.claim("c", create=REQUEST)).status == "final"
        assert (await journal.claim("c", reopen=True)).owned


@pytest.mark.anyio
async def test_a_huge_prompt_is_kept_as_an_excerpt_and_its_digest(tmp_path: Path) -> None:
    from grok_imagine_async._journal.records import PROMPT_KEPT, request_digest
    from grok_imagine_async._scheduling.resume import same_request

    huge = GenerationRequest.model_construct(prompt="x" * 1_000_000, mode="normal", ratio="1:1")
    edited = GenerationRequest.model_construct(prompt="x" * 999_999, mode="normal", ratio="1:1")
    async with SqliteJobStore(tmp_path / "run.db") as journal:
        await journal.record_intent("h", huge, 1)
    assert (tmp_path / "run.db").stat().st_size < 100_000
    async with SqliteJobStore(tmp_path / "run.db") as journal:
        record = await journal.load("h")
    assert record is not None
    assert len(record.request.prompt) == PROMPT_KEPT
    assert record.request_digest == request_digest(huge)
    assert same_request(record, huge) and not same_request(record, edited)


@pytest.mark.anyio
async def test_the_journal_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    async with SqliteJobStore(tmp_path / "run.db") as journal:
        await journal.record_intent("a", REQUEST, 1)
        for path in tmp_path.iterdir():
            assert path.stat().st_mode & 0o077 == 0, path


def ended(key: str, *, task: Task | None, error: Exception, failure: FailureClass) -> JobResult:
    return JobResult(
        key=key,
        request=REQUEST,
        task=task,
        error=error,  # type: ignore[arg-type]
        failure_class=failure,
        attempts=1,
        credits=0,
        polls=0,
        submitted_at=None,
        finished_at=1.0,
    )


@pytest.mark.anyio
async def test_a_partial_store_is_refused_naming_what_it_lacks() -> None:
    from grok_imagine_async._journal.sqlite import open_journal

    class LoadOnly:
        async def load(self, key: str) -> None:
            return None

    with pytest.raises(TypeError, match=r"LoadOnly lacks aclose, claim"):
        await open_journal(LoadOnly())  # type: ignore[arg-type]
