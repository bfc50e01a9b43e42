"""The client against the emulator in process, on virtual time: the emulator as a test bed.

These check the two together (the emulator's behaviour is what a client sees) through the
plugin's own fixtures, at the real service's times (virtual time skips them).
"""

from __future__ import annotations

from pathlib import Path

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
from grok_imagine_async.testing import Emulator, Vocabulary

# The real service's times and the free plan's 100 requests a minute.
pytestmark = [pytest.mark.anyio, pytest.mark.grok_emulator(seed=2, time_scale=1, period=60)]

FAST_POLL = PollPolicy(wait_initial=5.0, wait_max=10.0)


@pytest.mark.parametrize(
    "vocabulary",
    [
        pytest.param(words, marks=pytest.mark.grok_emulator(vocabulary=words))
        for words in ("default", "reseller", "upper")
    ],
)
async def test_generate_and_wait_in_every_vocabulary(
    vocabulary: str, grok_client: AsyncGrokImagine, grok_emulator: Emulator
) -> None:
    assert grok_emulator.config.vocabulary == Vocabulary.named(vocabulary)
    task = await grok_client.generate_and_wait("a paper boat", poll=FAST_POLL)
    assert task.succeeded
    assert len(task.videos) == 2
    assert grok_emulator.statistics().credits_consumed == 40


@pytest.mark.grok_emulator(seed=4, tokens={"test-token": RateLimit(100, 60.0)})
async def test_150_generations_at_the_free_plan_pace_stays_within_the_window(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator
) -> None:
    emulator, start = grok_emulator, anyio.current_time()

    async def job(i: int) -> None:
        await grok_client.generate_and_wait(f"job {i}", poll=FAST_POLL)

    async with anyio.create_task_group() as group:
        for i in range(150):
            group.start_soon(job, i)
    stats = emulator.statistics()
    assert stats.tasks_created == 150
    assert stats.duplicate_submissions == {}
    assert stats.tasks_by_state["completed"] == 150
    assert emulator.max_window_count(60.0) <= 100
    assert anyio.current_time() - start > 60  # the quota, not the generations, set the pace


async def test_dropped_submission_is_reported_not_paid_twice(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator
) -> None:
    with pytest.raises(AmbiguousSubmitError):
        await grok_client.generate("a cat [fail:drop]")
    assert grok_emulator.statistics().tasks_per_prompt == {"a cat [fail:drop]": 1}


async def test_server_error_on_submission_is_retried_once(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator
) -> None:
    task_id = await grok_client.generate("a cat [fail:500:1]")
    stats = grok_emulator.statistics()
    assert task_id.startswith("task_")
    assert stats.server_errors == 1
    assert stats.posts_per_prompt == {"a cat [fail:500:1]": 2}
    assert stats.tasks_per_prompt == {"a cat [fail:500:1]": 1}


async def test_failure_marker_surfaces_as_task_failed_with_its_class(
    grok_client: AsyncGrokImagine,
) -> None:
    with pytest.raises(TaskFailedError) as caught:
        await grok_client.generate_and_wait("a cat [fail:content]", poll=FAST_POLL)
    assert caught.value.failure_class is FailureClass.CONTENT_POLICY


@pytest.mark.grok_emulator(result_ttl=3600.0)
async def test_result_urls_expire_after_the_configured_time(
    grok_client: AsyncGrokImagine, tmp_path: Path
) -> None:
    task = await grok_client.generate_and_wait("a paper boat", poll=FAST_POLL)
    fresh = await grok_client.download(task, tmp_path / "fresh")
    await anyio.sleep(3601)
    with pytest.raises(APIError, match=r"HTTP 403 \(result URLs are valid for about 24 h"):
        await grok_client.download(task, tmp_path / "stale")
    assert [path.name for path in fresh] == [f"{task.task_id}_1.mp4", f"{task.task_id}_2.mp4"]
    assert not (tmp_path / "stale").exists() or not any((tmp_path / "stale").iterdir())


async def test_generate_many_results_tell_the_batch_statistics(
    grok_client: AsyncGrokImagine,
) -> None:
    seen: list[tuple[int, int]] = []
    async with grok_client.generate_many(["a kite", "an owl", "a boat"]) as results:
        assert results.statistics().completed == 0
        async for result in results:
            snapshot = results.statistics()
            seen.append((snapshot.completed, snapshot.credits_consumed))
            assert result.ok
    assert [completed for completed, _ in seen] == [1, 2, 3]
    assert {credits for _, credits in seen} == {120}
    with pytest.raises(AttributeError):
        snapshot.completed = 0  # type: ignore[misc]  # a frozen snapshot
