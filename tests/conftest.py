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

# Hypothesis explores the library's logic, which is the same on every Python: nox runs each
# property test's full count (``fakes.examples``) on one Python, and a quarter on the others
# (``--hypothesis-profile quick``), where the point is that the code runs there at all.
settings.register_profile("quick", max_examples=25)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the real-clock tests in two xdist groups: with ``--dist loadgroup`` (as nox runs
    the suite) the integration tests (servers and OS processes) run one after another on one
    worker, the other real-clock tests (threads, Redis) on another, while the rest take the
    virtual-time tests, which leave their timing alone."""
    for item in items:
        if item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.xdist_group("integration"))
        elif any(item.get_closest_marker(name) for name in REAL_TIME_MARKERS):
            item.add_marker(pytest.mark.xdist_group("real_clock"))


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """The event loop of every ``anyio`` test: virtual time, so idle waits take no real time.

    A test that talks to another thread or process (a served emulator, uvicorn, Redis,
    SQLite's worker threads) needs the real clock: mark it ``real_time``. Tests marked
    ``integration`` or ``redis`` get it already.
    """
    if any(request.node.get_closest_marker(name) for name in REAL_TIME_MARKERS):
        return "asyncio"
    # One start for every run: by default the virtual clock starts at the machine's monotonic
    # time (its uptime), so where a batch falls against fixed windows, and how float rounding
    # lands near a boundary, changed with the time of day, and a test could pass in one run
    # and fail in the next on the same code.
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
    """Run the ``grok-imagine`` command in this process: ``main(argv)`` in ``cwd``, without
    the ``GROK_IMAGINE_*`` settings of the developer's shell, its output captured.

    No interpreter is started: a test of what the command parses and says takes milliseconds.
    A test of what only a process has (signals, the ``python -m`` entry point) starts one.
    Every run is checked for what no run may print: a traceback (unless ``--log-level
    debug``) or the ``--api-key`` it was given.
    """
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
