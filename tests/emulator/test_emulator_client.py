"""The client against the emulator in process, on virtual time: the emulator as a test bed.

These check the two together (the emulator's behaviour is what a client sees), so they show
the emulator is usable for the client's component tests and benchmarks.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from grok_imagine_async import (
    AmbiguousSubmitError,
    APIError,
    AsyncGrokImagine,
    FailureClass,
    PollPolicy,
    RateLimit,
    TaskFailedError,
)
from grok_imagine_async.testing import Emulator, EmulatorConfig

pytestmark = pytest.mark.anyio

FAST_POLL = PollPolicy(wait_initial=5.0, wait_max=10.0)


def grok_for(emulator: Emulator, **kwargs: Any) -> AsyncGrokImagine:
    return AsyncGrokImagine(api_key="test-token", http_client=emulator.client(), **kwargs)


@pytest.fixture
def emulator() -> Emulator:
    return Emulator(EmulatorConfig(seed=2))


@pytest.mark.parametrize("vocabulary", ["default", "reseller", "upper"])
async def test_generate_and_wait_in_every_vocabulary(vocabulary: str) -> None:
    emulator = Emulator(EmulatorConfig(seed=2, vocabulary=vocabulary))
    async with grok_for(emulator) as grok:
        task = await grok.generate_and_wait("a paper boat", poll=FAST_POLL)
    assert task.succeeded
    assert len(task.videos) == 2
    assert emulator.statistics().credits_consumed == 40


async def test_150_generations_at_the_free_plan_pace_stays_within_the_window() -> None:
    emulator = Emulator(EmulatorConfig(seed=4, tokens={"test-token": RateLimit(100, 60.0)}))
    start = anyio.current_time()
    async with grok_for(emulator) as grok:

        async def job(i: int) -> None:
            await grok.generate_and_wait(f"job {i}", poll=FAST_POLL)

        async with anyio.create_task_group() as group:
            for i in range(150):
                group.start_soon(job, i)
    stats = emulator.statistics()
    assert stats.tasks_created == 150
    assert stats.duplicate_submissions == {}
    assert stats.tasks_by_state["completed"] == 150
    assert emulator.max_window_count(60.0) <= 100
    assert anyio.current_time() - start > 60  # the quota, not the generations, set the pace


async def test_dropped_submission_is_reported_not_paid_twice(emulator: Emulator) -> None:
    async with grok_for(emulator) as grok:
        with pytest.raises(AmbiguousSubmitError):
            await grok.generate("a cat [fail:drop]")
    assert emulator.statistics().tasks_per_prompt == {"a cat [fail:drop]": 1}


async def test_server_error_on_submission_is_retried_once(emulator: Emulator) -> None:
    async with grok_for(emulator) as grok:
        task_id = await grok.generate("a cat [fail:500:1]")
    stats = emulator.statistics()
    assert task_id.startswith("task_")
    assert stats.server_errors == 1
    assert stats.posts_per_prompt == {"a cat [fail:500:1]": 2}
    assert stats.tasks_per_prompt == {"a cat [fail:500:1]": 1}


async def test_failure_marker_surfaces_as_task_failed_with_its_class(emulator: Emulator) -> None:
    async with grok_for(emulator) as grok:
        with pytest.raises(TaskFailedError) as caught:
            await grok.generate_and_wait("a cat [fail:content]", poll=FAST_POLL)
    assert caught.value.failure_class is FailureClass.CONTENT_POLICY


async def test_result_urls_expire_after_the_configured_time(tmp_path: Any) -> None:
    emulator = Emulator(EmulatorConfig(seed=2, result_ttl=3600.0))
    async with grok_for(emulator) as grok:
        task = await grok.generate_and_wait("a paper boat", poll=FAST_POLL)
        fresh = await grok.download(task, tmp_path / "fresh")
        await anyio.sleep(3601)
        with pytest.raises(APIError, match=r"HTTP 403 \(result URLs are valid for about 24 h"):
            await grok.download(task, tmp_path / "stale")
    assert [path.name for path in fresh] == [f"{task.task_id}_1.mp4", f"{task.task_id}_2.mp4"]
    assert not (tmp_path / "stale").exists() or not any((tmp_path / "stale").iterdir())


async def test_generate_many_results_tell_the_batch_statistics(emulator: Emulator) -> None:
    seen: list[tuple[int, int]] = []
    async with (
        grok_for(emulator) as grok,
        grok.generate_many(["a kite", "an owl", "a boat"]) as results,
    ):
        assert results.statistics().completed == 0
        async for result in results:
            snapshot = results.statistics()
            seen.append((snapshot.completed, snapshot.credits_consumed))
            assert result.ok
    assert [completed for completed, _ in seen] == [1, 2, 3]
    assert {credits for _, credits in seen} == {120}
    with pytest.raises(AttributeError):
        snapshot.completed = 0  # type: ignore[misc]  # a frozen snapshot
