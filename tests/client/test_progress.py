"""The one progress estimate: pure, on a job handle, in generate_and_wait and generate_many."""

from __future__ import annotations

from collections import defaultdict

import anyio
import pytest

from grok_imagine_async import AsyncGrokImagine, GenerationRequest, JobScheduler, JobState
from grok_imagine_async._progress import Progress
from grok_imagine_async._scheduling.jobs import JobRecord, Tally
from grok_imagine_async.batch import DurationModel, SchedulerConfig

# The plugin's client (for the tests that ask for it) at the real service's times.
pytestmark = pytest.mark.grok_emulator(tokens={"progress-token": "pro"}, seed=5, time_scale=1)


def assert_rises_to_one(values: list[float | None]) -> None:
    assert values, "no progress was reported"
    assert all(v is not None for v in values)
    assert values == sorted(values)  # type: ignore[type-var]
    assert values[-1] == 1.0
    assert all(v is not None and 0.0 <= v < 1.0 for v in values[:-1])  # 1 only at the end
    assert len(set(values)) >= 3  # moved while it ran, not just 0 then 1


def test_the_estimate_is_half_at_the_median_and_below_one_until_the_end() -> None:
    def estimated_progress(elapsed: float, median: float) -> float | None:
        return Progress().running(elapsed, median)

    assert estimated_progress(0.0, 30.0) == 0.0
    assert estimated_progress(30.0, 30.0) == 0.5
    assert estimated_progress(60.0, 30.0) == 0.75
    assert estimated_progress(10_000.0, 30.0) == 0.99
    steps = [estimated_progress(t, 30.0) for t in range(0, 300, 7)]
    assert steps == sorted(steps)


def test_progress_never_goes_back_when_the_median_grows() -> None:
    shown = Progress()
    assert shown.running(30.0, 30.0) == 0.5
    assert shown.running(31.0, 120.0) == 0.5  # the model learnt jobs are longer: no going back
    assert shown.running(None, 30.0) is None  # age unknown
    assert shown.finished() == 1.0


@pytest.mark.anyio
async def test_a_job_handle_reads_the_scheduler_s_model() -> None:
    model = DurationModel(prior_median=20.0)
    record = JobRecord("k", GenerationRequest(prompt="a"), Tally(lambda: None), durations=model)
    job = record.handle
    assert job.progress == 0.0  # queued
    record.submitting()
    record.submitted("t1", at=anyio.current_time())
    await anyio.sleep(20)
    assert job.progress == 0.5
    await anyio.sleep(20)
    assert job.progress == 0.75
    record.resubmitting()  # a new task: still 0.75, not 0
    assert job.status is JobState.SUBMITTING and job.progress == 0.75
    record.resumed("t2")  # its age unknown (picked up from a journal)
    assert job.progress is None
    mirror = JobRecord("m", GenerationRequest(prompt="b"), Tally(lambda: None))  # no model
    mirror.submitted("t3", at=anyio.current_time())
    assert mirror.handle.progress is None


@pytest.mark.anyio
async def test_a_scheduler_s_model_is_its_config_s_else_one_expecting_the_settings_duration(
    grok_client: AsyncGrokImagine,
) -> None:
    model = DurationModel(prior_median=7.0)
    given = JobScheduler(grok_client, SchedulerConfig(duration_model=model))
    assert given.duration_model is model
    default = JobScheduler(grok_client).duration_model
    assert default.median == pytest.approx(grok_client.settings.expected_duration)


@pytest.mark.anyio
async def test_generate_and_wait_reports_progress_rising_to_one(
    grok_client: AsyncGrokImagine,
) -> None:
    seen: list[tuple[str, float | None]] = []
    task = await grok_client.generate_and_wait(
        "a heron [duration:30]", on_progress=lambda task_id, p: seen.append((task_id, p))
    )
    assert {task_id for task_id, _ in seen} == {task.task_id}
    assert_rises_to_one([p for _, p in seen])


@pytest.mark.anyio
async def test_a_failing_progress_hook_does_not_lose_the_wait(
    grok_client: AsyncGrokImagine, caplog: pytest.LogCaptureFixture
) -> None:

    def broken(task_id: str, progress: float | None) -> None:
        raise RuntimeError("a progress bar's bug")

    task = await grok_client.generate_and_wait("a heron [duration:5]", on_progress=broken)
    assert task.succeeded
    assert "on_progress hook raised" in caplog.text


@pytest.mark.anyio
async def test_generate_and_wait_learns_how_long_jobs_take(grok_client: AsyncGrokImagine) -> None:
    await grok_client.generate_and_wait("a short one [duration:4]")
    await grok_client.generate_and_wait("a short one again [duration:4]")
    seen: list[float | None] = []
    await grok_client.generate_and_wait(
        "a third [duration:4]", on_progress=lambda _, p: seen.append(p)
    )
    # The prior says 30 s: at 4 s that is 0.09. Learnt from the first two, about half-way.
    assert seen[-2] is not None and seen[-2] > 0.3


@pytest.mark.anyio
async def test_generate_many_reports_each_job_s_progress(grok_client: AsyncGrokImagine) -> None:
    seen: defaultdict[str, list[float | None]] = defaultdict(list)
    prompts = ["a kite [duration:20]", "an owl [duration:45]"]
    async with grok_client.generate_many(
        prompts, on_progress=lambda key, p: seen[key].append(p)
    ) as results:
        keys = [result.key async for result in results]
    assert sorted(seen) == sorted(keys)
    for key in keys:
        assert seen[key][0] == 0.0  # its task was created
        assert_rises_to_one(seen[key])
