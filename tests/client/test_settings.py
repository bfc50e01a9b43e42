"""Settings are resolved once, the same way for the client, the command line and an app.

``Settings.from_env`` is the one reader of ``GROK_IMAGINE_*`` and the one place that scales
for a faster server: what it returns is what the limiter, the waiter and the scheduler use.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import RunCli

from grok_imagine_async import (
    AsyncGrokImagine,
    ConfigurationError,
    JobScheduler,
    Limits,
    PollPolicy,
    RateLimit,
    RetryPolicy,
    Settings,
)
from grok_imagine_async.batch import BreakerPolicy
from grok_imagine_async.testing import Emulator, EmulatorConfig, run_virtual

TOKEN = "test-token"
ENVIRONMENT = {
    "GROK_IMAGINE_API_KEY": TOKEN,
    "GROK_IMAGINE_BASE_URL": "http://127.0.0.1:9/",
    "GROK_IMAGINE_PLAN": "pro",
    "GROK_IMAGINE_TIME_SCALE": "10",
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*ENVIRONMENT, "GROK_IMAGINE_REDIS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


def test_the_environment_fills_in_what_the_arguments_leave_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert (settings.api_key, settings.base_url) == (TOKEN, "http://127.0.0.1:9")
    assert settings.rate_limit == RateLimit(1000, 6.0)  # a plan's minute, ten times faster
    assert settings.poll.wait_initial == PollPolicy().wait_initial / 10
    assert settings.retry.wait_max == RetryPolicy().wait_max / 10
    assert settings.breaker == BreakerPolicy(
        give_up_unreachable=4.5,
        warmup_age=0.4,
        probe_wait_initial=0.5,
        probe_wait_max=60.0,
    )
    assert settings.expected_duration == 3.0
    given = Settings.from_env(api_key="other", base_url="https://b", plan="free", time_scale=1)
    assert (given.api_key, given.base_url, given.rate_limit) == (
        "other",
        "https://b",
        RateLimit(100, 60.0),
    )
    assert given == Settings(api_key="other", base_url="https://b")  # the service's defaults


def test_what_is_given_explicitly_is_not_scaled() -> None:
    retry = RetryPolicy(wait_initial=2.0)
    settings = Settings.from_env(api_key=TOKEN, plan="100/6s", retry=retry, time_scale=10)
    assert settings.rate_limit == RateLimit(100, 6.0)  # a quota is what the server counts
    assert settings.retry is retry
    assert Settings.from_env(api_key=TOKEN, plan=RateLimit(5, 1.0), time_scale=4).rate_limit == (
        RateLimit(5, 1.0)
    )


def test_the_token_is_never_shown() -> None:
    settings = Settings.from_env(api_key="sk-secret-123")
    assert "sk-secret" not in repr(settings) and "sk-secret" not in str(settings)
    with pytest.raises(ConfigurationError) as caught:
        Settings(api_key="sk-secret 123")
    assert "sk-secret" not in str(caught.value)


@pytest.mark.parametrize("value", ["fast", "0", "-2", "inf"])
def test_a_bad_time_scale_is_named(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("GROK_IMAGINE_TIME_SCALE", value)
    with pytest.raises(ConfigurationError, match=r"TIME_SCALE|time_scale"):
        AsyncGrokImagine(api_key=TOKEN)


def test_a_bad_setting_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROK_IMAGINE_PLAN", "100/6 parsecs")
    with pytest.raises(ConfigurationError, match="not a quota"):
        AsyncGrokImagine(api_key=TOKEN)
    with pytest.raises(ConfigurationError, match="no API key"):
        Settings.from_env()
    with pytest.raises(ConfigurationError, match="limits must be a Limits"):
        Settings(api_key=TOKEN, limits=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_redirects"):
        Limits(max_redirects=-1)
    with pytest.raises(ConfigurationError, match="max_redirects must be a whole number"):
        Limits(max_redirects=2.5)  # type: ignore[arg-type]
    assert Limits(max_redirects=0).max_redirects == 0
    with pytest.raises(ConfigurationError, match="either settings or"):
        AsyncGrokImagine(settings=Settings(api_key=TOKEN), plan="pro")


def _settings_of_the_command_line(argv: list[str]) -> Settings:
    from grok_imagine_async._cli import build_parser
    from grok_imagine_async._cli.common import connect

    args = build_parser().parse_args(["status", "task_1", *argv])

    async def main() -> Settings:
        async with connect(args) as connection:  # sends nothing
            return connection.client.settings

    return anyio.run(main)


def _settings_of_an_app(**options: Any) -> Settings:
    from fastapi import FastAPI

    from grok_imagine_async.fastapi import grok_imagine_lifespan

    async def main() -> Settings:
        app = FastAPI()
        async with grok_imagine_lifespan(app, **options):  # sends nothing
            settings: Settings = app.state.grok_imagine.client.settings
            return settings

    return anyio.run(main)


def test_client_command_line_and_app_resolve_the_same_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    expected = Settings.from_env()
    assert expected.rate_limit == RateLimit(1000, 6.0)
    assert AsyncGrokImagine().settings == expected
    assert _settings_of_the_command_line([]) == expected
    assert _settings_of_an_app() == expected


def test_an_app_takes_settings_whole() -> None:
    given = Settings(api_key=TOKEN, base_url="http://127.0.0.1:9", expected_duration=1.0)
    assert _settings_of_an_app(settings=given) is given


@pytest.mark.parametrize(
    ("argv", "env_scale", "limit", "median"),
    [
        (["--plan", "100/6s", "--time-scale", "10"], None, RateLimit(100, 6.0), 3.0),
        (["--plan", "pro"], "10", RateLimit(1000, 6.0), 3.0),
        (["--plan", "pro", "--time-scale", "4"], "10", RateLimit(1000, 15.0), 7.5),
        ([], None, RateLimit(100, 60.0), 30.0),
    ],
)
def test_the_command_line_options_beat_the_environment(
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    env_scale: str | None,
    limit: RateLimit,
    median: float,
) -> None:
    if env_scale is not None:
        monkeypatch.setenv("GROK_IMAGINE_TIME_SCALE", env_scale)
    settings = _settings_of_the_command_line(
        ["--api-key", TOKEN, "--base-url", "http://127.0.0.1:9", *argv]
    )
    assert (settings.rate_limit, settings.expected_duration) == (limit, median)


def test_a_scheduler_uses_the_clients_settings_as_they_are() -> None:
    # Scaling happens once, in Settings.from_env: a scheduler must not divide again.
    settings = Settings.from_env(api_key=TOKEN, plan="free", time_scale=10)

    async def main() -> tuple[float, float]:
        async with AsyncGrokImagine(settings=settings) as client:
            scheduler = JobScheduler(client)
            stats = scheduler.statistics()
            return stats.limit_per_minute, stats.predicted_duration

    per_minute, predicted = anyio.run(main)
    assert per_minute == pytest.approx(1000)  # 100 per 6 s, not per 0.6 s
    assert predicted == pytest.approx(3.0)  # 30 s / 10, not / 100


def test_a_batch_at_time_scale_ten_keeps_to_the_plans_quota_scaled_once(
    run_cli: RunCli, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"[duration:0.05] clip {i}\n" for i in range(3)))
    done = run_cli(
        "batch", str(prompts), "--emulate", "--plan", "free", "--time-scale", "10",
        "--out", str(tmp_path / "out"), "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # 100 requests per 6 s of the emulator's: the free plan's minute, once divided by 10.
    assert "plan free: 100 requests per 60 s, 10x real time" in done.stdout


def _first_poll_gap(time_scale: float) -> float:
    """Seconds between the POST and the first poll of ``generate_and_wait`` (virtual time)."""
    emulator = Emulator(EmulatorConfig(time_scale=10, period=6.0, seed=1))
    settings = Settings.from_env(api_key=TOKEN, plan="100/6s", time_scale=time_scale)

    async def main() -> float:
        async with (
            emulator.client() as http,
            AsyncGrokImagine(settings=settings, http_client=http) as client,
        ):
            await client.generate_and_wait("a boat")
        post, first_poll, *_ = emulator.request_times()
        return first_poll - post

    return run_virtual(main)


def test_wait_polls_sooner_on_a_faster_server() -> None:
    first = PollPolicy().wait_initial  # jittered by 10 %
    assert _first_poll_gap(1.0) == pytest.approx(first, rel=0.11)
    assert _first_poll_gap(10.0) == pytest.approx(first / 10, rel=0.11)


@pytest.mark.parametrize(
    ("base_url", "problem"),
    [
        ("ftp://api.test", "must be an absolute http(s) URL with a host"),
        ("http://", "must be an absolute http(s) URL with a host"),
        ("http:///v1", "must be an absolute http(s) URL with a host"),
        ("https://:443", "must be an absolute http(s) URL with a host"),
        ("http://[bad", "is not a valid URL"),
        ("http://api.test:99999", "is not a valid URL"),
        ("http://api.test:port", "is not a valid URL"),
        ("http://exa mple.com", "must not hold spaces or control characters"),
        ("http://api\x00.test", "must not hold spaces or control characters"),
        ("http://api.test/v?x=1", "must not carry a query or a fragment"),
        ("http://api.test/#top", "must not carry a query or a fragment"),
        ("http://api.test?", "must not carry a query or a fragment"),
        # The API's own prefix: every request would 404 at .../v1/v1/generate.
        ("http://127.0.0.1:8000/v1", "must be the API's root, without /v1"),
        ("https://api.test/proxy/V1/", "must be the API's root, without /v1"),
    ],
)
def test_a_base_url_the_api_paths_cannot_follow_is_refused_at_once(
    base_url: str, problem: str
) -> None:
    # Refused when the settings are made, not at the first request (a connection error,
    # retried, that costs nothing but time and says nothing about the URL).
    with pytest.raises(ConfigurationError, match=re.escape(problem)):
        Settings(api_key=TOKEN, base_url=base_url)


@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1:9",
        "https://api.test/prefix/",
        "https://api.test/v1beta",
        "http://[::1]:8000",
        "https://bücher.test",
    ],
)
def test_api_roots_with_ports_paths_ipv6_and_idn_hosts_are_kept(base_url: str) -> None:
    assert Settings(api_key=TOKEN, base_url=base_url).base_url == base_url.rstrip("/")
