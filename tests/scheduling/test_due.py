"""The due-time heap behind the scheduler's polls: order, timing, one timer for many items."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from grok_imagine_async._scheduling.due import DueQueue

pytestmark = pytest.mark.anyio


async def drain(due: DueQueue[Any], count: int, start: float) -> list[tuple[Any, float]]:
    return [(await due.next_due(), anyio.current_time() - start) for _ in range(count)]


async def test_items_come_out_in_due_order_at_their_time() -> None:
    due: DueQueue[str] = DueQueue()
    start = anyio.current_time()
    for name, at in [("c", 30.0), ("a", 10.0), ("b", 20.0), ("now", 0.0)]:
        due.schedule(name, start + at)
    out = await drain(due, 4, start)
    assert [name for name, _ in out] == ["now", "a", "b", "c"]
    assert [at for _, at in out] == pytest.approx([0.0, 10.0, 20.0, 30.0], abs=1e-6)
    assert due.items() == []


async def test_ties_keep_the_order_of_scheduling() -> None:
    due: DueQueue[str] = DueQueue()
    when = anyio.current_time() + 5
    for name in ["first", "second", "third"]:
        due.schedule(name, when)
    assert [name for name, _ in await drain(due, 3, 0.0)] == ["first", "second", "third"]


async def test_an_earlier_item_scheduled_while_waiting_is_not_held_up() -> None:
    due: DueQueue[str] = DueQueue()
    start = anyio.current_time()
    due.schedule("late", start + 100)
    got: list[tuple[str, float]] = []

    async def consume() -> None:
        got.extend(await drain(due, 2, start))

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await anyio.sleep(1)  # virtual time: the consumer is now waiting on the 100 s timer
        due.schedule("early", start + 5)
    assert got == [("early", pytest.approx(5, abs=1e-6)), ("late", pytest.approx(100, abs=1e-6))]


async def test_waits_for_the_first_item_when_empty() -> None:
    due: DueQueue[int] = DueQueue()
    start = anyio.current_time()
    got: list[tuple[int, float]] = []

    async def consume() -> None:
        got.append((await due.next_due(), anyio.current_time() - start))

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await anyio.sleep(3)
        assert got == []
        due.schedule(7, anyio.current_time())
    assert got == [(7, pytest.approx(3, abs=1e-6))]


async def test_thousands_of_items_come_out_in_time_order() -> None:
    due: DueQueue[int] = DueQueue()
    start = anyio.current_time()
    for n in range(5000):
        due.schedule(n, start + (n * 7919) % 5000 / 100)
    times = [at for _, at in await drain(due, 5000, start)]
    assert times == sorted(times)
    assert times[-1] == pytest.approx(49.99, abs=1e-6)
