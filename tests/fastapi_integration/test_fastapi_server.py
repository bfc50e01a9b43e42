"""The example app served by uvicorn on 127.0.0.1, its API being the emulator on another socket.

Real sockets and the real clock: generations of a fraction of a second, an enterprise quota.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from test_fastapi import TOKEN, load_example, wait_until_status

from grok_imagine_async import PollPolicy, Settings
from grok_imagine_async.batch import DurationModel, SchedulerConfig
from grok_imagine_async.testing import Emulator, EmulatorConfig

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

FAST: dict[str, Any] = {
    "scheduler_config": SchedulerConfig(
        duration_model=DurationModel(prior_median=0.3),
        poll=PollPolicy(wait_initial=0.05, wait_max=0.2),
    ),
}


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """``app`` under uvicorn (lifespan on) in a thread; shut down gracefully on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    config = uvicorn.Config(app, log_config=None, lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:  # uvicorn offers no startup event to wait on
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.005)
        host, port = sock.getsockname()[:2]
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not shut down"


async def read_events(lines: AsyncIterator[str]) -> list[tuple[str, dict[str, Any]]]:
    """Events as they arrive, until ``done``; comments (keep-alives) skipped."""
    events: list[tuple[str, dict[str, Any]]] = []
    name = ""
    async for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
            if name == "done":
                break
    return events


@pytest.mark.grok_emulator(EmulatorConfig(seed=3, tokens={TOKEN: "enterprise"}))
async def test_the_example_app_under_uvicorn(
    grok_emulator_env: Any, grok_emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    emulator_url = grok_emulator_env["GROK_IMAGINE_BASE_URL"]
    app = load_example().create_app(
        settings=Settings.from_env(api_key=TOKEN, base_url=emulator_url, plan="enterprise"),
        heartbeat=0.2,
        **FAST,
    )
    with served(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as web:
            posted: list[httpx.Response] = []

            async def post(n: int) -> None:
                body = {"prompt": f"clip {n} [duration:0.5]"}
                posted.append(await web.post("/videos", json=body))

            async with anyio.create_task_group() as users:
                for n in range(10):
                    users.start_soon(post, n)
            ids = [answer.json()["id"] for answer in posted]

            followed = (await web.post("/videos", json={"prompt": "live [duration:1]"})).json()
            async with web.stream("GET", f"/videos/{followed['id']}/events") as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                lines = stream.aiter_lines()
                first = await anext(lines)
                # The first event came while the job still runs: it streams, it is not buffered.
                during = (await web.get(f"/videos/{followed['id']}")).json()
                events = await read_events(lines)

            waited = await web.post(
                "/videos?wait=true&timeout=10", json={"prompt": "quick [duration:0.3]"}
            )
            bad = await web.post("/videos", json={"prompt": "", "ratio": "4:3"})
            done = [await wait_until_status(web, i, "completed", every=0.05) for i in ids]
            slow = [
                (await web.post("/videos", json={"prompt": f"slow {n} [duration:60]"}))
                for n in range(2)
            ]
            slow_ids = [answer.json()["id"] for answer in slow]
            for video_id in slow_ids:
                await wait_until_status(web, video_id, "running", every=0.05)
    # Leaving `served` stopped uvicorn, which ran the app's lifespan shutdown.

    assert [answer.status_code for answer in posted] == [202] * 10
    assert all(len(body["videos"]) == 2 for body in done)
    assert first == "event: status"
    assert during["status"] != "completed"
    assert events[-1][0] == "done" and events[-1][1]["status"] == "completed"
    assert waited.status_code == 200 and len(waited.json()["videos"]) == 2
    assert bad.status_code == 422
    for video_id in slow_ids:
        assert re.search(rf"{video_id}=task_\w+", caplog.text)  # logged with its task id
    assert TOKEN not in caplog.text
    stats = grok_emulator.statistics()
    assert stats.rate_limited == 0
    assert stats.tasks_created == 10 + 1 + 1 + 2
    assert stats.duplicate_submissions == {}
