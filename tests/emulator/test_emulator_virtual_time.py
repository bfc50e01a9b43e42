"""The virtual-time loop keeps time moving when a due timer re-arms itself at the same instant."""

from __future__ import annotations

import asyncio

import pytest

from grok_imagine_async.testing import run_virtual


def test_a_timer_that_re_arms_at_the_same_instant_does_not_freeze_time() -> None:
    async def main() -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        target = start + 1.0
        done = loop.create_future()
        fired = 0

        def wake() -> None:
            # Like aiolimiter: "not quite there yet" by less than a float step, so it re-arms at
            # a time that rounds to now. On a frozen clock this loops forever.
            nonlocal fired
            fired += 1
            if loop.time() - target < 5e-10:
                loop.call_at(loop.time(), wake)
            else:
                done.set_result(None)

        loop.call_at(target, wake)
        await asyncio.wait_for(done, timeout=10.0)
        return fired, loop.time() - start

    fired, elapsed = run_virtual(main)
    assert fired > 1
    assert 1.0 <= elapsed < 1.0 + 1e-6


def test_sleep_still_lands_exactly_on_the_timer() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(3600)
        return loop.time() - start

    # No drift from the anti-freeze step: only the float rounding of (start + 3600) - start.
    assert run_virtual(main) == pytest.approx(3600.0, abs=1e-9)
