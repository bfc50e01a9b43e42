"""Resuming a batch from its journal: no job lost, none paid twice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from grok_imagine_async import (
    AsyncGrokImagine,
    AuthenticationError,
    FailureClass,
    GenerationRequest,
    JobResult,
    JobSpec,
)
from grok_imagine_async._journal.sqlite import SqliteJobStore
from grok_imagine_async._scheduling.jobs import request_key
from grok_imagine_async.testing import Emulator

TOKEN = "resume-token"
ClientFactory = Callable[..., AsyncGrokImagine]
PROMPTS = [f"quick {i} [duration:10]" for i in range(3)] + [
    f"slow {i} [duration:900]" for i in range(3)
]


# The plugin's emulator, and a new client for each run (a rerun is another process), at the
# real service's times on the suite's virtual clock.
pytestmark = pytest.mark.grok_emulator(tokens={TOKEN: "pro"}, seed=3, time_scale=1)


async def run(
    client: AsyncGrokImagine, journal: Path, *, stop_after: int | None = None
) -> list[JobResult]:
    got: list[JobResult] = []
    async with client.generate_many(PROMPTS, journal=journal) as results:
        async for result in results:
            got.append(result)
            if stop_after is not None and len(got) == stop_after:
                break
    return got


@pytest.mark.anyio
async def test_rerun_reads_finished_jobs_and_resumes_running_ones(
    grok_client_factory: ClientFactory, grok_emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "run.db"
    first = await run(grok_client_factory(), journal, stop_after=3)
    assert sorted(r.request.prompt for r in first) == sorted(PROMPTS[:3])
    assert grok_emulator.statistics().tasks_created == 6  # the slow ones were submitted too

    second = await run(grok_client_factory(), journal)
    assert len(second) == 6
    assert all(r.ok for r in second)
    replayed = [r for r in second if r.from_journal]
    assert sorted(r.request.prompt for r in replayed) == sorted(PROMPTS[:3])
    stats = grok_emulator.statistics()
    assert stats.tasks_created == 6
    assert all(stats.posts_per_prompt[p] == 1 for p in PROMPTS)

    before = grok_emulator.statistics().requests_total
    # Everything is in the journal now: no request at all.
    third = await run(grok_client_factory(), journal)
    assert all(r.from_journal and r.ok for r in third)
    assert grok_emulator.statistics().requests_total == before


@pytest.mark.anyio
async def test_unknown_post_outcome_is_reported_not_resent(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator, tmp_path: Path
) -> None:
    journal_path = tmp_path / "run.db"
    request = GenerationRequest(prompt="was in flight")
    key = request_key(request)
    async with SqliteJobStore(journal_path) as journal:  # a crash right after the intent
        await journal.record_intent(key, request, 1)
    async with grok_client.generate_many([JobSpec(request)], journal=journal_path) as results:
        [result] = [r async for r in results]
    assert result.failure_class is FailureClass.AMBIGUOUS_SUBMIT
    assert result.attempts == 1
    assert grok_emulator.statistics().requests_total == 0


@pytest.mark.anyio
async def test_resubmit_policy_resends_an_unknown_outcome(
    grok_client_factory: ClientFactory, grok_emulator: Emulator, tmp_path: Path
) -> None:
    journal_path = tmp_path / "run.db"
    request = GenerationRequest(prompt="resend me")
    async with SqliteJobStore(journal_path) as journal:
        await journal.record_intent(request_key(request), request, 1)
    client = grok_client_factory(on_ambiguous_submit="resubmit")
    async with client.generate_many([request], journal=journal_path) as results:
        [result] = [r async for r in results]
    assert result.ok
    assert result.attempts == 2
    assert grok_emulator.statistics().posts_per_prompt["resend me"] == 1


@pytest.mark.anyio
async def test_jobs_refused_by_the_budget_run_next_time(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "run.db"
    prompts = ["budget a", "budget b", "budget c"]
    async with grok_client.generate_many(prompts, journal=journal, max_credits=80) as results:
        first = [r async for r in results]
    assert sum(r.failure_class is FailureClass.BUDGET_EXCEEDED for r in first) == 1
    async with grok_client.generate_many(prompts, journal=journal, max_credits=200) as results:
        second = [r async for r in results]
    assert all(r.ok for r in second)
    assert grok_emulator.statistics().tasks_created == 3  # the two paid ones were not paid again


@pytest.mark.anyio
async def test_a_rejected_token_leaves_no_unknown_outcome(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "run.db"
    wrong = AsyncGrokImagine(api_key="revoked", http_client=grok_emulator.client(token=None))
    with pytest.raises(AuthenticationError):
        async with wrong.generate_many(["token test"], journal=journal) as results:
            [r async for r in results]
    async with grok_client.generate_many(["token test"], journal=journal) as results:
        [result] = [r async for r in results]
    assert result.ok  # submitted now, not reported as an unknown outcome of the 401'd POST
    assert grok_emulator.statistics().tasks_created == 1


@pytest.mark.anyio
async def test_with_a_journal_repeats_are_numbered_in_input_order(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator, tmp_path: Path
) -> None:
    prompts = ["same [duration:5]", "other", "same [duration:5]"]
    async with grok_client.generate_many(prompts, journal=tmp_path / "j.db") as results:
        keys = {(r.request.prompt, r.key) for r in [r async for r in results]}
    base = request_key(GenerationRequest(prompt="same [duration:5]"))
    assert ("same [duration:5]", base) in keys
    assert ("same [duration:5]", f"{base}-1") in keys


@pytest.mark.anyio
async def test_a_limiter_that_fails_before_the_post_is_not_a_possible_charge(
    grok_client_factory: ClientFactory, grok_emulator: Emulator, tmp_path: Path
) -> None:
    from grok_imagine_async import LocalRateLimiter, RateLimit
    from grok_imagine_async.abc import Permit, Priority

    class RefusingLimiter(LocalRateLimiter):
        """Refuses its permits as a Redis out of memory refuses the limiter's script."""

        async def acquire(self, *, priority: Priority = Priority.SUBMIT) -> Permit:
            raise RuntimeError("OOM command not allowed when used memory > 'maxmemory'")

    client = grok_client_factory(limiter=RefusingLimiter(RateLimit(100, 60.0)))
    async with client.generate_many(["never sent"], journal=tmp_path / "run.db") as results:
        [result] = [r async for r in results]
    assert result.failure_class is FailureClass.REQUEST_ERROR  # not "may have been charged"
    assert result.credits == 0
    assert grok_emulator.statistics().requests_total == 0
    async with grok_client_factory().generate_many(
        ["never sent"], journal=tmp_path / "run.db"
    ) as results:
        [again] = [r async for r in results]
    assert again.ok  # never paid: tried again


@pytest.mark.anyio
async def test_a_replayed_failure_keeps_its_task_id(
    grok_client_factory: ClientFactory, grok_emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "run.db"
    prompts = ["refused [fail:content]"]
    async with grok_client_factory().generate_many(prompts, journal=journal) as results:
        [first] = [r async for r in results]
    assert first.failure_class is FailureClass.CONTENT_POLICY and first.task_id
    async with grok_client_factory().generate_many(prompts, journal=journal) as results:
        [again] = [r async for r in results]
    assert again.from_journal
    assert again.task_id == first.task_id  # what a user quotes to support, paid for once
    assert again.failure_class is FailureClass.CONTENT_POLICY
    assert grok_emulator.statistics().tasks_created == 1
