"""``grok-imagine emulator``: option parsing, and the real command serving on a free port."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from grok_imagine_async import AsyncGrokImagine, PollPolicy, RateLimit
from grok_imagine_async._cli import emulator as emulator_command
from grok_imagine_async._cli import main


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    emulator_command.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["emulator", *argv])


def test_defaults_describe_the_real_service() -> None:
    config = emulator_command.build_config(parse())
    assert dict(config.tokens) == {"test-token": "free"}
    assert config.rate_limits()["test-token"].requests == 100
    assert config.rate_limits()["test-token"].period == 60.0
    assert config.duration_median == 30.0
    assert config.time_scale == 1.0
    assert config.result_ttl == 86_400.0


def test_time_scale_shrinks_durations_window_and_slow_answers() -> None:
    args = parse("--plan", "pro", "--time-scale", "20", "--slow-rate", "0.5", "--token", "k")
    config = emulator_command.build_config(args)
    assert config.rate_limits()["k"].requests == 1000
    assert config.rate_limits()["k"].period == pytest.approx(3.0)
    assert config.time_scale == 20.0
    assert config.faults.slow_seconds == pytest.approx(1.5)
    assert config.faults.slow_rate == 0.5
    assert config.result_ttl == pytest.approx(86_400 / 20)


def test_fault_options_map_to_fault_config() -> None:
    args = parse("--fail-rate", "0.1", "--error-rate", "0.2", "--drop-rate", "0.3", "--seed", "4")
    config = emulator_command.build_config(args)
    assert config.faults.task_failure_rate == 0.1
    assert config.faults.server_error_rate == 0.2
    assert config.faults.drop_rate == 0.3
    assert config.seed == 4


def test_rates_outside_zero_to_one_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["emulator", "--fail-rate", "1.5"])
    assert "must be between 0 and 1" in capsys.readouterr().err


@pytest.fixture
def command_output() -> Iterator[tuple[str, list[str]]]:
    """Runs ``grok-imagine emulator --port 0`` and yields its base URL and first lines."""
    argv = [sys.executable, "-m", "grok_imagine_async._cli", "emulator", "--port", "0"]
    argv += ["--time-scale", "100", "--seed", "3", "--log-level", "warning"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(8)]
        url = lines[0].rsplit(" ", 1)[-1].strip()
        yield url, lines
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: a clean shutdown, exit status 0
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
    assert process.returncode == 0


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.real_time
async def test_command_serves_the_client_end_to_end(command_output: tuple[str, list[str]]) -> None:
    url, lines = command_output
    assert url.startswith("http://127.0.0.1:")
    assert "token: test-token (plan free: 100 requests per 0.6 s" in lines[1]
    exports = dict(
        line.strip().removeprefix("export ").split("=", 1)
        for line in lines
        if line.strip().startswith("export ")
    )
    assert exports == {
        "GROK_IMAGINE_BASE_URL": url,
        "GROK_IMAGINE_API_KEY": "test-token",
        "GROK_IMAGINE_PLAN": "100/0.6s",
        "GROK_IMAGINE_TIME_SCALE": "100",
    }
    env = {"api_key": "test-token", "base_url": url}
    async with AsyncGrokImagine(**env) as grok:
        task = await grok.generate_and_wait("a paper boat", poll=PollPolicy(wait_initial=0.1))
    assert task.succeeded
    assert len(task.videos) == 2
    assert os.environ.get("GROK_IMAGINE_BASE_URL") != url  # nothing leaked into our env


SCRIPT = """
import anyio
from grok_imagine_async import AsyncGrokImagine

async def main():
    async with AsyncGrokImagine() as grok:
        limit, settings = grok.limiter.limit, grok.settings
        print(limit.requests, limit.period, settings.expected_duration)
        async with grok.generate_many(f"boat {i}" for i in range(5)) as results:
            print(sum([result.ok async for result in results]))

anyio.run(main)
"""


@pytest.mark.integration
def test_an_unmodified_script_follows_the_printed_environment(
    command_output: tuple[str, list[str]],
) -> None:
    _, lines = command_output
    env = {k: v for k, v in os.environ.items() if not k.startswith("GROK_IMAGINE_")}
    for line in lines:
        if line.strip().startswith("export "):
            name, value = line.strip().removeprefix("export ").split("=", 1)
            env[name] = value
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["100", "0.6", "0.3", "5"]  # 30 s / 100


def test_a_quota_text_plan_is_used_as_is() -> None:
    config = emulator_command.build_config(parse("--plan", "250/3s", "--time-scale", "10"))
    assert config.rate_limits()["test-token"] == RateLimit(250, 3.0)


@pytest.mark.parametrize("name", ["default", "reseller", "upper"])
def test_vocabulary_help_names_the_words_the_emulator_writes(name: str) -> None:
    from dataclasses import astuple

    from grok_imagine_async.testing import Vocabulary

    (text,) = [text for option, *_, text in emulator_command._OPTIONS if option == "--vocabulary"]
    assert f"{name} ({'/'.join(astuple(Vocabulary.named(name)))})" in text
