"""The example app's ``GET /metrics``: the client's metrics in Prometheus' text format."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest

pytest.importorskip("opentelemetry.exporter.prometheus", reason="needs otel-prometheus")
pytest.importorskip("fastapi", reason="needs the fastapi extra")

from grok_imagine_async import Settings
from grok_imagine_async.testing import Emulator, EmulatorConfig

TOKEN = "sk-metrics-SECRET-77"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app.py"
PROMPT = "a paper boat on a river"


def example() -> ModuleType:
    """examples/fastapi_app.py, loaded once under the name the FastAPI tests use."""
    if "fastapi_app" in sys.modules:
        return sys.modules["fastapi_app"]
    spec = importlib.util.spec_from_file_location("fastapi_app", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fastapi_app"] = module
    spec.loader.exec_module(module)
    return module


def samples(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name)]


@pytest.mark.anyio
async def test_metrics_show_requests_credits_jobs_and_quota() -> None:
    emulator = Emulator(EmulatorConfig(tokens={TOKEN: "pro"}, seed=5))
    async with emulator.client(token=None) as upstream:
        settings = Settings.from_env(api_key=TOKEN, base_url=str(upstream.base_url))
        app = example().create_app(settings=settings, http_client=upstream)
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://videos.test") as web,
            app.router.lifespan_context(app),
        ):
            before = await web.get("/metrics")
            assert before.status_code == 200
            assert not samples(before.text, "grok_imagine_jobs_finished")
            made = await web.post(
                "/videos", params={"wait": "true", "timeout": 60}, json={"prompt": PROMPT}
            )
            assert made.status_code == 200, made.text
            refused = await web.post(
                "/videos",
                params={"wait": "true", "timeout": 60},
                json={"prompt": "a boat [fail:content]"},
            )
            assert refused.status_code == 422
            scraped = await web.get("/metrics")
    text = scraped.text
    assert scraped.headers["content-type"].startswith("text/plain")
    finished = samples(text, "grok_imagine_jobs_finished")
    assert any('outcome="completed"' in line and line.endswith(" 1.0") for line in finished)
    assert any('failure_class="content_policy"' in line for line in finished)
    assert samples(text, "http_client_request_duration_seconds_bucket")
    credits = samples(text, "grok_imagine_credits_consumed")
    assert credits
    assert credits[0].endswith(f" {emulator.statistics().credits_consumed}.0")
    assert samples(text, "grok_imagine_rate_limit_remaining")
    assert samples(text, "grok_imagine_rate_limit_limit")
    jobs = samples(text, "grok_imagine_jobs{")
    assert any('state="running"' in line and line.endswith(" 0.0") for line in jobs)
    assert TOKEN not in text
    assert PROMPT not in text


def test_without_metrics_there_is_no_endpoint() -> None:
    app = example().create_app(metrics=False)
    assert "/metrics" not in {getattr(route, "path", None) for route in app.routes}
