"""The scheduler's private job record: each transition keeps the per-state tally in step."""

from __future__ import annotations

import anyio
import pytest

from grok_imagine_async import GenerationRequest, JobResult, JobState, Task, TaskStatus
from grok_imagine_async._scheduling.jobs import JobRecord, Tally


def _tally() -> tuple[Tally, list[int]]:
    changes: list[int] = []
    tally = Tally(lambda: changes.append(1))
    return tally, changes


def _counts(tally: Tally) -> dict[JobState, int]:
    return {state: tally[state] for state in JobState if tally[state]}


def _result(record: JobRecord, *, ok: bool) -> JobResult:
    status = TaskStatus.COMPLETED if ok else TaskStatus.FAILED
    task = Task(task_id="t1", status=status, raw_status=status.value, videos=("u",) if ok else ())
    return JobResult(
        key=record.key, request=record.request, task=task, error=None, failure_class=None,
        attempts=record.attempts, credits=record.credits, polls=record.polls,
        submitted_at=record.submitted_at, finished_at=1.0,
    )  # fmt: skip


def test_a_job_life_moves_one_count_at_a_time() -> None:
    tally, changes = _tally()
    record = JobRecord("k", GenerationRequest(prompt="a"), tally)
    assert _counts(tally) == {JobState.QUEUED: 1}
    record.submitting()
    record.charged(1, 40)
    record.submitted("t1", at=5.0)
    assert _counts(tally) == {JobState.RUNNING: 1}
    assert (record.task_id, record.submitted_at, record.last_look) == ("t1", 5.0, 5.0)
    record.looked(at=9.0)
    assert record.last_look == 9.0
    record.resubmitting()
    assert _counts(tally) == {JobState.SUBMITTING: 1}
    assert record.resubmits == 1
    record.charged(2, 40)
    record.submitted("t2", at=20.0)
    record.finished(_result(record, ok=False))
    assert _counts(tally) == {JobState.FAILED: 1}
    assert (record.attempts, record.credits) == (2, 80)
    assert len(changes) == 6  # queued, submitting, running, submitting, running, failed


def test_a_resumed_job_has_no_known_age() -> None:
    tally, _ = _tally()
    record = JobRecord("k", GenerationRequest(prompt="a"), tally)
    record.adopted(attempts=1, credits=40)
    record.submitting()
    record.resumed("t9")
    assert (record.state, record.task_id, record.submitted_at) == (JobState.RUNNING, "t9", None)
    assert (record.attempts, record.credits) == (1, 40)


def test_the_public_handle_is_read_only_and_shows_the_record() -> None:
    record = JobRecord("k", GenerationRequest(prompt="a"), _tally()[0])
    job = record.handle
    assert (job.key, job.status, job.task_id, job.attempts, job.result) == (
        "k", JobState.QUEUED, None, 0, None,
    )  # fmt: skip
    record.submitting()
    record.submitted("t1", at=0.0)
    assert (job.status, job.task_id) == (JobState.RUNNING, "t1")
    for name in ("key", "request", "status", "task_id", "attempts", "result"):
        with pytest.raises(AttributeError):
            setattr(job, name, None)
    with pytest.raises(AttributeError):
        job._state = JobState.FAILED  # type: ignore[attr-defined]
    assert repr(job) == "Job(key='k', status=running, task_id='t1')"


@pytest.mark.anyio
async def test_wait_returns_when_the_record_finishes() -> None:
    record = JobRecord("k", GenerationRequest(prompt="a"), _tally()[0])
    record.submitting()
    record.submitted("t1", at=0.0)
    got: list[Task] = []

    async def waiter() -> None:
        got.append(await record.handle.wait())

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert got == []
        record.finished(_result(record, ok=True))
    assert [t.task_id for t in got] == ["t1"]
    assert record.handle.status is JobState.COMPLETED
