"""The virtual-time loop: idle waits are skipped, thread work holds the clock."""

from __future__ import annotations

import time

import anyio
import pytest

from grok_imagine_async._files import run_blocking
from grok_imagine_async.testing import run_virtual


def test_an_hour_of_sleep_takes_no_real_time() -> None:
    async def main() -> float:
        start = anyio.current_time()
        await anyio.sleep(3600)
        return anyio.current_time() - start

    began = time.perf_counter()
    assert run_virtual(main) == pytest.approx(3600)
    assert time.perf_counter() - began < 5


def test_a_given_start_makes_a_run_repeat_exactly() -> None:
    async def main() -> tuple[float, float]:
        first = anyio.current_time()
        await anyio.sleep(0.1)
        await anyio.sleep(2.7)
        return first, anyio.current_time()

    assert run_virtual(main, start=1000.0) == run_virtual(main, start=1000.0)
    first, last = run_virtual(main, start=1000.0)
    assert first == 1000.0 and last == pytest.approx(1002.8)


@pytest.mark.anyio
async def test_thread_work_holds_the_clock() -> None:
    fired_at: list[float] = []

    async def far_timer() -> None:
        await anyio.sleep(1000)
        fired_at.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        tg.start_soon(far_timer)
        start = anyio.current_time()
        await run_blocking(time.sleep, 0.2)  # real work in a thread, with a timer pending
        assert anyio.current_time() - start < 1.0  # the clock did not race to the timer
        assert fired_at == []
    assert fired_at[0] - start == pytest.approx(1000, abs=1)


@pytest.mark.anyio
async def test_without_holding_the_loop_skips_to_the_next_timer() -> None:
    async def far_timer() -> None:
        await anyio.sleep(1000)

    async with anyio.create_task_group() as tg:
        tg.start_soon(far_timer)
        start = anyio.current_time()
        await anyio.to_thread.run_sync(time.sleep, 0.2)
        # The clock raced ahead to the timer (to within float rounding of
        # start + 1000): this is why run_blocking exists.
        assert anyio.current_time() - start > 999
