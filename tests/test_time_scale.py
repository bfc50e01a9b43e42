"""A client told the server's time scale keeps pace with it (quota, polls, expected durations)."""

from __future__ import annotations

import pytest

from grok_imagine_async import AsyncGrokImagine, ConfigurationError, PollPolicy, RateLimit
from grok_imagine_async._errors import GrokImagineError
from grok_imagine_async.testing import Emulator, EmulatorConfig, run_virtual

TOKEN = "test-token"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GROK_IMAGINE_PLAN", "GROK_IMAGINE_TIME_SCALE", "GROK_IMAGINE_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_plan_and_time_scale_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROK_IMAGINE_PLAN", "100/6s")
    monkeypatch.setenv("GROK_IMAGINE_TIME_SCALE", "10")
    client = AsyncGrokImagine(api_key=TOKEN)
    assert client.rate_limit == RateLimit(100, 6.0)
    assert client.time_scale == 10.0


def test_a_named_plan_follows_the_time_scale() -> None:
    client = AsyncGrokImagine(api_key=TOKEN, plan="pro", time_scale=4)
    assert client.rate_limit == RateLimit(1000, 15.0)
    assert AsyncGrokImagine(api_key=TOKEN, plan="pro").rate_limit == RateLimit(1000, 60.0)


@pytest.mark.parametrize("value", ["fast", "0", "-2", "inf"])
def test_a_bad_time_scale_is_named(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("GROK_IMAGINE_TIME_SCALE", value)
    with pytest.raises(ConfigurationError, match=r"TIME_SCALE|time_scale"):
        AsyncGrokImagine(api_key=TOKEN)


def test_a_bad_quota_text_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROK_IMAGINE_PLAN", "100/6 parsecs")
    with pytest.raises(ConfigurationError, match="not a quota"):
        AsyncGrokImagine(api_key=TOKEN)
    assert issubclass(ConfigurationError, GrokImagineError)


def _first_poll_gap(time_scale: float) -> float:
    """Seconds between the POST and the first poll of ``generate_and_wait`` (virtual time)."""
    emulator = Emulator(EmulatorConfig(time_scale=10, period=6.0, seed=1))

    async def main() -> float:
        async with (
            emulator.client() as http,
            AsyncGrokImagine(
                api_key=TOKEN, http_client=http, plan="100/6s", time_scale=time_scale
            ) as client,
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
    ("argv", "env_scale", "limit", "scale"),
    [
        (["--plan", "100/6s", "--time-scale", "10"], None, RateLimit(100, 6.0), 10.0),
        (["--plan", "pro"], "10", RateLimit(1000, 6.0), 10.0),
        (["--plan", "pro", "--time-scale", "4"], "10", RateLimit(1000, 15.0), 4.0),
        ([], None, RateLimit(100, 60.0), 1.0),
    ],
)
def test_the_command_line_follows_the_same_rules(
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    env_scale: str | None,
    limit: RateLimit,
    scale: float,
) -> None:
    import anyio

    from grok_imagine_async._cli import build_parser
    from grok_imagine_async._cli.common import connect

    if env_scale is not None:
        monkeypatch.setenv("GROK_IMAGINE_TIME_SCALE", env_scale)
    base = ["status", "task_1", "--api-key", TOKEN, "--base-url", "http://127.0.0.1:9"]
    args = build_parser().parse_args([*base, *argv])

    async def main() -> tuple[RateLimit, float]:
        async with connect(args) as connection:  # sends nothing
            return connection.rate_limit, connection.client.time_scale

    assert anyio.run(main) == (limit, scale)
