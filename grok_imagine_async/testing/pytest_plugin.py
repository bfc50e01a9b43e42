"""A pytest plugin: an emulator and a client bound to it, as fixtures, with no conftest.py.

Installed with the package and registered through the ``pytest11`` entry point, so pytest
loads it by itself; the fixtures need the ``emulator`` extra
(``pip install "grok-imagine-async[emulator]"``) and an async test runner (the anyio plugin's
``@pytest.mark.anyio``, which anyio installs).

Fixtures:

- ``grok_emulator_config``: the :class:`EmulatorConfig` of ``grok_emulator``. By default a
  server :data:`TEST_TIME_SCALE` times faster than the real one (a 30 s generation takes
  30 ms), its quota window shrunk to match, a seed taken from the test's id. The
  ``grok_emulator`` marker changes any setting; overriding the fixture replaces it.
- ``grok_emulator``: a fresh :class:`Emulator` per test, in process.
- ``grok_client``: an :class:`~grok_imagine_async.AsyncGrokImagine` bound to it, pacing
  itself to the emulator's quota and expecting its shorter generations (``time_scale``).
- ``grok_emulator_env``: the emulator served on 127.0.0.1 and the ``GROK_IMAGINE_*``
  variables set for the test, so code that builds its own client (an app, a script) talks to
  it unmodified.

Nothing here touches the event loop: the fixtures run on whatever ``anyio_backend`` the test
uses, and tests that do not ask for them are not affected.

Example:
    >>> import pytest
    >>> @pytest.mark.anyio
    ... @pytest.mark.grok_emulator(seed=1)
    ... async def test_one_video(grok_client, grok_emulator):
    ...     task = await grok_client.generate_and_wait("a paper boat")
    ...     assert task.succeeded
    ...     assert grok_emulator.statistics().credits_consumed == 40
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .. import AsyncGrokImagine
    from ._config import EmulatorConfig
    from ._emulator import Emulator

MARKER = "grok_emulator"
"""``@pytest.mark.grok_emulator(**settings)``: :class:`EmulatorConfig` settings for a test."""

TEST_TIME_SCALE = 1000.0
"""How much faster than the real service the fixtures' emulator runs by default.

A default generation (median 30 s) takes about 30 ms, and the plan's 60 s window 60 ms. The
client is told the same scale, so its polls, retries and pacing shrink with it.
"""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**settings): EmulatorConfig settings for the grok_emulator fixture "
        "(time_scale, tokens, faults, seed, ...); the closest marker wins",
    )


@pytest.fixture
def grok_emulator_config(request: pytest.FixtureRequest) -> EmulatorConfig:
    """The settings of the ``grok_emulator`` fixture.

    Defaults: ``time_scale=TEST_TIME_SCALE``, ``period=60 / time_scale`` (the plans' minute,
    scaled), and a ``seed`` derived from the test's id (reproducible, different per test).
    ``@pytest.mark.grok_emulator(**settings)`` on the test, its class or module updates them
    (the marker closest to the test wins); an ``EmulatorConfig`` passed as the marker's
    argument replaces them. Override this fixture for a configuration of your own.
    """
    from ._config import EmulatorConfig

    settings: dict[str, Any] = {}
    # iter_markers yields the closest first: apply the farthest first, so the closest wins.
    for marker in reversed(list(request.node.iter_markers(MARKER))):
        if marker.args:
            (given,) = marker.args
            if not isinstance(given, EmulatorConfig):
                raise TypeError(f"{MARKER} marker takes an EmulatorConfig, got {given!r}")
            settings = {"config": given}
        settings.update(marker.kwargs)
    base = settings.pop("config", None)
    if base is not None:
        return _replace(base, settings)
    scale = settings.setdefault("time_scale", TEST_TIME_SCALE)
    settings.setdefault("period", 60.0 / scale)
    settings.setdefault("seed", zlib.crc32(request.node.nodeid.encode()))
    return EmulatorConfig(**settings)


def _replace(config: EmulatorConfig, settings: Mapping[str, Any]) -> EmulatorConfig:
    import dataclasses

    return dataclasses.replace(config, **settings) if settings else config


@pytest.fixture
def grok_emulator(grok_emulator_config: EmulatorConfig) -> Emulator:
    """A fresh in-process :class:`Emulator` for the test, built from ``grok_emulator_config``."""
    from ._emulator import Emulator

    return Emulator(grok_emulator_config)


@pytest.fixture
async def grok_client(grok_emulator: Emulator) -> AsyncIterator[AsyncGrokImagine]:
    """An ``AsyncGrokImagine`` talking to ``grok_emulator`` in process, at its pace.

    It uses the emulator's first token, paces itself to that token's quota and takes the
    emulator's ``time_scale``, whatever ``GROK_IMAGINE_*`` variables are set. Closed after
    the test.
    """
    from .. import AsyncGrokImagine, Settings
    from ._emulator import IN_PROCESS_BASE_URL

    config = grok_emulator.config
    token = next(iter(config.tokens))
    settings = Settings.from_env(
        api_key=token,
        base_url=IN_PROCESS_BASE_URL,
        plan=config.rate_limits()[token],
        time_scale=config.time_scale,
    )
    async with (
        grok_emulator.client(token=None) as http,
        AsyncGrokImagine(settings=settings, http_client=http) as client,
    ):
        yield client


@pytest.fixture
def grok_emulator_env(
    grok_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Mapping[str, str]]:
    """``grok_emulator`` served on 127.0.0.1, and the environment pointing clients at it.

    Sets ``GROK_IMAGINE_BASE_URL``, ``_API_KEY``, ``_PLAN`` (the quota as text) and
    ``_TIME_SCALE`` for the test (restored after it), so code that opens its own client, such
    as a FastAPI app on ``grok_imagine_lifespan``, reaches the emulator unmodified. The server
    runs in a thread on the real clock. Yields the variables set.
    """
    from ._server import serve_in_thread

    with serve_in_thread(grok_emulator) as url:
        environment = grok_emulator.environment(url)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        yield environment
