"""The virtual-time loop: idle waits are skipped, thread work holds the clock."""

from __future__ import annotations

import time

import anyio
import pytest

from grok_imagine_async._clock import DEFAULT_CLOCK
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


def test_the_default_clock_follows_each_loop_the_thread_runs_in_turn() -> None:
    """The clock remembers the running loop (asking costs a system call before Python 3.12): a
    loop run after it, virtual or not, is the one it reads, and outside any loop it says so
    (on trio, where installed: test_local_limiter's test_runs_on_trio_too)."""

    async def read() -> tuple[float, float]:
        return DEFAULT_CLOCK.monotonic(), anyio.current_time()

    first, loop_time = run_virtual(read, start=1000.0)
    assert first == loop_time == 1000.0
    real, loop_time = anyio.run(read)
    assert real <= loop_time < real + 60  # the real loop's clock, read a moment apart
    second, loop_time = run_virtual(read, start=5000.0)
    assert second == loop_time == 5000.0
    with pytest.raises(RuntimeError):
        DEFAULT_CLOCK.monotonic()  # no loop: as anyio.current_time() says outside one
