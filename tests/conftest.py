"""Fixtures shared by the test suite."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import pytest
from hypothesis import settings

from grok_imagine_async.testing import VirtualTimeEventLoop

if TYPE_CHECKING:
    from _redis_worker import RedisServer


# Markers of tests that talk to another thread or process, which keeps the real clock.
REAL_TIME_MARKERS = ("real_time", "integration", "redis")
VIRTUAL_START = 10_000.0  # the virtual clock's first reading in every virtual-time test

# nox runs the property tests' full count on one Python, a quarter of it on the others.
settings.register_profile("quick", max_examples=25)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup`` (nox), integration tests run one after another on one
    worker and the other real-clock tests on another, away from the virtual-time tests."""
    for item in items:
        if item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.xdist_group("integration"))
        elif any(item.get_closest_marker(name) for name in REAL_TIME_MARKERS):
            item.add_marker(pytest.mark.xdist_group("real_clock"))


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Virtual time for every ``anyio`` test, but those marked ``real_time``, ``integration``
    or ``redis`` (another thread or process is involved: a served emulator, Redis, SQLite)."""
    if any(request.node.get_closest_marker(name) for name in REAL_TIME_MARKERS):
        return "asyncio"
    # A fixed start: at the machine's uptime, fixed windows and float rounding near a boundary
    # would change with the time of day, and a test pass in one run and fail in the next.
    return (
        "asyncio",
        {"loop_factory": functools.partial(VirtualTimeEventLoop, start=VIRTUAL_START)},
    )


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A throwaway ``redis-server`` on 127.0.0.1 (skips the test if the binary is missing)."""
    from _redis_worker import REDIS_MISSING, RedisServer, redis_server_binary

    binary = redis_server_binary()
    if binary is None:
        pytest.skip(REDIS_MISSING)
    server = RedisServer(binary, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


class CliResult(NamedTuple):
    """What a ``grok-imagine`` run ended with: its exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str


class RunCli(Protocol):
    """The ``run_cli`` fixture: ``run_cli("batch", "prompts.txt", cwd=tmp_path)``."""

    def __call__(self, *argv: str, cwd: Path) -> CliResult: ...


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> RunCli:
    """Run ``grok-imagine`` in this process (``main(argv)`` in ``cwd``, output captured),
    without the developer's ``GROK_IMAGINE_*`` settings. No run may print a traceback (unless
    ``--log-level debug``) or the ``--api-key`` it was given."""
    from grok_imagine_async._cli import main

    for name in [name for name in os.environ if name.startswith("GROK_IMAGINE_")]:
        monkeypatch.delenv(name)

    def run(*argv: str, cwd: Path) -> CliResult:
        monkeypatch.chdir(cwd)
        capsys.readouterr()  # only this run's output
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: --help, --version or a usage error
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        out, err = capsys.readouterr()
        if "debug" not in argv:
            assert "Traceback" not in err, err
        tokens = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--api-key"]
        assert not any(token in out + err for token in tokens), "the token was printed"
        return CliResult(code, out, err)

    return run
