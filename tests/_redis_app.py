"""The example app as the multi-worker tests serve it: ``uvicorn _redis_app:app --workers 2``.

It is ``examples/fastapi_app.py`` itself, with the quota, poll timing and lease scaled down
for the emulator (read from ``TEST_*`` variables), and a header naming the worker that
answered, so a test can tell that every worker found every job.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from fastapi_app import create_app

from grok_imagine_async import PollPolicy, RateLimit, Settings
from grok_imagine_async.batch import DurationModel, SchedulerConfig

app = create_app(
    settings=Settings.from_env(
        plan=RateLimit(int(os.environ["TEST_REQUESTS"]), float(os.environ["TEST_PERIOD"]))
    ),
    scheduler_config=SchedulerConfig(
        poll=PollPolicy(wait_initial=0.2, wait_factor=1.5, wait_max=1.0, wait_jitter=0.1),
        duration_model=DurationModel(prior_median=float(os.environ["TEST_MEDIAN"])),
    ),
    redis_lease=float(os.environ["TEST_LEASE"]),
    max_credits=int(os.environ["TEST_MAX_CREDITS"]) if "TEST_MAX_CREDITS" in os.environ else None,
)


@app.middleware("http")
async def name_the_worker(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    response.headers["X-Worker"] = str(os.getpid())
    return response
