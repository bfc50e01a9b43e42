"""The workers' own rules, on a hand-made state (no client is called)."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import cast

import anyio
import pytest

from grok_imagine_async import GenerationRequest, PollPolicy, RateLimit
from grok_imagine_async._scheduling.api import SchedulerClient
from grok_imagine_async._scheduling.books import Books, CreditBudget
from grok_imagine_async._scheduling.breaker import Breaker
from grok_imagine_async._scheduling.jobs import JobRecord
from grok_imagine_async._scheduling.polling import PollPlanner
from grok_imagine_async._scheduling.workers import Workers
from grok_imagine_async.batch import BreakerPolicy, DurationModel, SchedulerConfig


@pytest.mark.anyio
@pytest.mark.parametrize("sent_at", [0.0, 2.0])
async def test_a_pause_rechecks_a_job_sent_at_time_zero_too(sent_at: float) -> None:
    """``submitted_at`` 0.0 is a time, not "unsent": it once read as false, and was skipped."""
    books = Books(budget=CreditBudget(None), breaker=Breaker(BreakerPolicy()), on_event=None)
    policy = PollPolicy(wait_initial=1.0, wait_factor=1.05, wait_max=30.0, wait_jitter=0.0)
    planner = PollPlanner(RateLimit(200, 6.0), policy, DurationModel(), random.Random(0))
    client = cast(SchedulerClient, SimpleNamespace(on_ambiguous_submit="fail"))
    workers = Workers(
        books,
        client,
        planner,
        SchedulerConfig(),
        has_slot=lambda: True,
        folder=None,
        file_stem=None,
        owner=None,
    )
    job = JobRecord("sent", GenerationRequest(prompt="a kite"), books.tally)
    job.submitted("task-1", at=sent_at)
    workers._due.schedule(job, 100.0)  # its routine look, long after
    books.breaker.failing_since = sent_at  # it may have failed as the others did
    try:
        async with anyio.create_task_group() as tg:
            books.tg = tg
            workers.recheck_suspects(now=sent_at + 0.5)
            assert "sent" in planner.canaries  # looked at on its own, urgently
            assert list(workers._due.items()) == []
            # Once old enough to show a failure: counted from its POST, not from now.
            assert planner._booked == [sent_at + planner.canary_age]
            tg.cancel_scope.cancel()
    finally:
        workers.close()
