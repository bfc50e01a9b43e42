"""Stopping the example app with jobs in flight, resuming them from a journal, a revoked token.

In process through ``httpx.ASGITransport``, on virtual time.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import anyio
import httpx
import pytest
from test_fastapi import (
    EMULATOR,
    TOKEN,
    Served,
    parse_sse,
    running,
    wait_until_status,
)

from grok_imagine_async import PollPolicy
from grok_imagine_async.batch import DurationModel, SchedulerConfig
from grok_imagine_async.testing import Emulator

pytestmark = [pytest.mark.anyio, EMULATOR]


async def start_running(served: Served, prompt: str) -> str:
    answer = await served.web.post("/videos", json={"prompt": prompt})
    assert answer.status_code == 202
    video_id: str = answer.json()["id"]
    await wait_until_status(served.web, video_id, "running", every=0.05)
    return video_id


async def test_shutdown_with_jobs_in_flight_is_prompt_and_logs_each_job(
    grok_emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    answers: dict[str, httpx.Response] = {}
    async with anyio.create_task_group() as clients:
        async with running(grok_emulator, heartbeat=5.0) as served:
            ids = [await start_running(served, f"a long film {n} [duration:600]") for n in range(3)]

            async def follow() -> None:
                answers["events"] = await served.web.get(f"/videos/{ids[0]}/events")

            async def wait_for_one() -> None:
                answers["wait"] = await served.web.post(
                    "/videos?wait=true&timeout=60", json={"prompt": "another [duration:600]"}
                )

            clients.start_soon(follow)
            clients.start_soon(wait_for_one)
            await anyio.wait_all_tasks_blocked()
            followed = [await served.resources.jobs.get(video_id) for video_id in ids]
            task_ids = {job.key: job.task_id for job in followed if job is not None}
            stopping = anyio.current_time()
        shutdown_took = anyio.current_time() - stopping
    assert shutdown_took < 0.5  # cancelled, not waited for
    last = parse_sse(answers["events"].text)[-1]
    assert (last.event, last.data["error"]) == ("error", "unavailable")
    assert answers["wait"].status_code == 503
    assert answers["wait"].json()["error"] == "unavailable"
    assert re.search(r"scheduler left early with [34] paid jobs whose end is not rec", caplog.text)
    assert "resume on the next run" not in caplog.text  # the store in memory dies with it
    for video_id in ids:
        assert f"{video_id}={task_ids[video_id]}" in caplog.text
    assert TOKEN not in caplog.text
    # Every task paid for is in the log (the wait-mode job may or may not have been sent yet).
    reported = re.findall(r"\w+=(task_\w+)", caplog.text)
    stats = grok_emulator.statistics()
    assert stats.tasks_created == len(set(reported)) >= 3
    assert stats.duplicate_submissions == {}


async def test_shutdown_with_nothing_in_flight_logs_nothing(
    grok_emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running(grok_emulator) as served:
        answer = await served.web.post(
            "/videos?wait=true&timeout=60", json={"prompt": "a cat [duration:2]"}
        )
        assert answer.status_code == 200
    assert "unfinished" not in caplog.text


# SQLite runs in worker threads, which a virtual clock would jump over: real time here, with
# generations of a fraction of a second and a quota that paces requests 12 ms apart.
FAST = {
    "plan": "enterprise",
    "scheduler_config": SchedulerConfig(
        duration_model=DurationModel(prior_median=0.3),
        poll=PollPolicy(wait_initial=0.05, wait_max=0.2),
    ),
}


@pytest.mark.real_time
@pytest.mark.grok_emulator(tokens={TOKEN: "enterprise"})
async def test_jobs_in_flight_at_shutdown_resume_from_the_journal_next_run(
    grok_emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    journal = tmp_path / "videos.db"
    async with running(grok_emulator, journal=journal, **FAST) as served:
        finished = await served.web.post(
            "/videos?wait=true&timeout=20", json={"prompt": "a short one [duration:0.2]"}
        )
        assert finished.status_code == 200
        ids = [await start_running(served, f"a long one {n} [duration:1.5]") for n in range(2)]
    assert "2 paid jobs whose end is not recorded (kept in the journal" in caplog.text

    async with running(grok_emulator, journal=journal, **FAST) as served:
        again = await wait_until_status(served.web, finished.json()["id"], "completed", every=0.05)
        assert again["videos"] == finished.json()["videos"]  # answered from the journal
        resumed = [await wait_until_status(served.web, i, "completed", every=0.05) for i in ids]
        unknown = await served.web.get("/videos/" + "0" * 32)
    assert all(len(body["videos"]) == 2 for body in resumed)
    assert unknown.status_code == 404
    stats = grok_emulator.statistics()
    assert stats.tasks_created == 3  # resumed by polling their tasks: nothing paid twice
    assert set(stats.posts_per_prompt.values()) == {1}


@pytest.mark.grok_emulator(tokens={"someone-else": "free"})  # our token is refused: 401
async def test_a_revoked_token_stops_the_scheduler_but_the_app_still_answers(
    grok_emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(grok_emulator) as served:
        first = await served.web.post("/videos", json={"prompt": "a cat"})
        assert first.status_code == 202
        while not served.resources.jobs.closed:  # noqa: ASYNC110 - no event tells of it
            await anyio.sleep(0.5)
        later = await served.web.post("/videos", json={"prompt": "a dog"})
        looked_up = await served.web.get(f"/videos/{first.json()['id']}")
        events = await served.web.get(f"/videos/{first.json()['id']}/events")
    assert later.status_code == 503
    assert later.json() == {
        "detail": "video generation is not available right now",
        "error": "unavailable",
    }
    assert looked_up.status_code == 200
    assert looked_up.json()["status"] == "failed"  # its POST was refused: provably not started
    assert parse_sse(events.text)[-1].event == "done"
    assert "the video scheduler stopped, no more jobs can run: 401" in caplog.text
    assert TOKEN not in caplog.text
    assert grok_emulator.statistics().unauthorized == 1
