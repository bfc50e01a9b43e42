"""A user's test file: the plugin's fixtures with no conftest.py and no anyio_backend override.

``nox -s plugin`` copies this file alone into an empty folder of a fresh venv with only
``pip install ".[emulator]" pytest``, and runs it there. It also runs with the suite, on
anyio's default loop as there (``conftest.py`` beside it undoes the suite's virtual time).
"""

from __future__ import annotations

import asyncio

import pytest

from grok_imagine_async import AsyncGrokImagine, FailureClass, TaskFailedError
from grok_imagine_async.testing import Emulator, VirtualTimeEventLoop


@pytest.mark.anyio
async def test_a_default_generation_completes(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator
) -> None:
    task = await grok_client.generate_and_wait("a paper boat on a river")
    assert task.succeeded
    assert len(task.videos) == 2
    assert grok_emulator.statistics().credits_consumed == 40


@pytest.mark.anyio
@pytest.mark.grok_emulator(tokens={"my-token": "pro"})
async def test_the_marker_configures_the_emulator(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator
) -> None:
    with pytest.raises(TaskFailedError) as caught:
        await grok_client.generate_and_wait("a paper boat [fail:content]")
    assert caught.value.failure_class is FailureClass.CONTENT_POLICY
    assert grok_client.limiter.limit.requests == 1000
    assert grok_emulator.statistics().tasks_created == 1


@pytest.mark.anyio
async def test_other_tests_keep_their_event_loop() -> None:
    assert not isinstance(asyncio.get_running_loop(), VirtualTimeEventLoop)
