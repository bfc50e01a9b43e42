"""The documented recipe for testing a FastAPI app built on the integration, as a test.

The app is written as in production (``FastAPI(lifespan=grok_imagine_lifespan)``, settings
from the environment); the plugin's ``grok_emulator_env`` serves the emulator and sets the
environment, and the test runs the app's own lifespan around an in-process HTTP client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import anyio
import httpx
import pytest

fastapi = pytest.importorskip("fastapi")

from grok_imagine_async.fastapi import GrokJobs, grok_imagine_lifespan  # noqa: E402
from grok_imagine_async.testing import Emulator  # noqa: E402

pytestmark = pytest.mark.real_time  # the served emulator and uvicorn run in threads


def create_app() -> fastapi.FastAPI:
    app = fastapi.FastAPI(lifespan=grok_imagine_lifespan)

    @app.post("/videos", status_code=202)
    async def start(prompt: str, jobs: GrokJobs) -> dict[str, str]:
        return {"id": (await jobs.submit(prompt)).key}

    @app.get("/videos/{key}")
    async def read(key: str, jobs: GrokJobs, wait: float = 0.0) -> dict[str, str]:
        job = await jobs.get(key)
        if job is None:
            raise fastapi.HTTPException(404)
        with anyio.move_on_after(wait):
            await jobs.wait_finished(job)
        return {"status": job.status.value}

    return app


@pytest.fixture
async def app_http(grok_emulator_env: Mapping[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app()  # after the environment is set: the lifespan reads it at startup
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as http,
    ):
        yield http


@pytest.mark.anyio
async def test_a_video_goes_through_the_app(
    app_http: httpx.AsyncClient, grok_emulator: Emulator
) -> None:
    answer = await app_http.post("/videos", params={"prompt": "a lighthouse"})
    assert answer.status_code == 202
    key = answer.json()["id"]
    # A bound, not a timing: the job takes about 30 ms of real time.
    answer = await app_http.get(f"/videos/{key}", params={"wait": 10})
    assert answer.json() == {"status": "completed"}
    assert grok_emulator.statistics().credits_consumed == 40
    assert grok_emulator.statistics().rate_limited == 0
