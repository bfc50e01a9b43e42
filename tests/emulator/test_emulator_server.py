"""The emulator served by uvicorn on 127.0.0.1: real sockets, real clock."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from grok_imagine_async import AsyncGrokImagine, PollPolicy, RateLimit
from grok_imagine_async.testing import Emulator, EmulatorConfig, serve_in_thread

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

QUICK = EmulatorConfig(duration_median=0.3, duration_sigma=0.0, seed=1)


def client(env: Mapping[str, str], token: str = "test-token") -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.AsyncClient(base_url=env["GROK_IMAGINE_BASE_URL"], headers=headers, timeout=10.0)


@pytest.mark.grok_emulator(QUICK)
async def test_generate_poll_and_download_over_a_socket(
    grok_emulator_env: Mapping[str, str],
) -> None:
    async with client(grok_emulator_env) as http:
        created = await http.post("/v1/generate", json={"prompt": "a cat [duration:0]"})
        task_id = created.json()["data"]["task_id"]
        data = (await http.get("/v1/status", params={"task_id": task_id})).json()["data"]
        video = await http.get(data["response"][0])
    assert created.headers["X-RateLimit-Remaining"] == "99"
    assert data["status"] == "completed"
    videos = f"{grok_emulator_env['GROK_IMAGINE_BASE_URL']}/videos/{task_id}/"
    assert data["response"][0].startswith(videos)
    assert video.status_code == 200
    assert video.headers["content-type"] == "video/mp4"
    assert int(video.headers["content-length"]) == len(video.content)


@pytest.mark.grok_emulator(EmulatorConfig())
async def test_dropped_connection_reaches_the_client_as_remote_protocol_error(
    grok_emulator_env: Mapping[str, str], grok_emulator: Emulator
) -> None:
    async with client(grok_emulator_env) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post("/v1/generate", json={"prompt": "x [fail:drop]"})
        after = await http.post("/v1/generate", json={"prompt": "y"})  # a new connection works
    assert after.status_code == 200
    stats = grok_emulator.statistics()
    assert stats.dropped == 1
    assert stats.tasks_per_prompt == {"x [fail:drop]": 1, "y": 1}


@pytest.mark.grok_emulator(EmulatorConfig(tokens={"t": RateLimit(2, 60.0)}))
async def test_429_and_admin_route_over_a_socket(grok_emulator_env: Mapping[str, str]) -> None:
    async with client(grok_emulator_env, "t") as http:
        codes = [(await http.post("/v1/generate", json={"prompt": "p"})).status_code for _ in "abc"]
        stats = (await http.get("/_emulator/stats")).json()
    assert codes == [200, 200, 429]
    assert stats["rate_limited"] == 1
    assert stats["posts_per_prompt"] == {"p": 2}
    assert stats["credits_consumed"] == 80


@pytest.mark.grok_emulator(QUICK)
async def test_the_client_generates_waits_and_downloads_against_uvicorn(
    grok_emulator_env: Mapping[str, str], grok_emulator: Emulator, tmp_path: Path
) -> None:
    poll = PollPolicy(wait_initial=0.05, wait_max=0.1)
    url = grok_emulator_env["GROK_IMAGINE_BASE_URL"]
    async with AsyncGrokImagine(api_key="test-token", base_url=url) as grok:
        task = await grok.generate_and_wait("a paper boat", poll=poll)
        paths = await grok.download(task, tmp_path)
    assert task.succeeded
    assert len(paths) == 2
    assert all(path.read_bytes()[4:8] == b"ftyp" for path in paths)
    assert grok_emulator.statistics().videos_served == 2


def test_serve_in_thread_stops_the_server_on_exit() -> None:
    with serve_in_thread(Emulator()) as url:
        assert httpx.get(f"{url}/_emulator/stats").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/_emulator/stats")
