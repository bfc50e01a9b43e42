"""A pytest plugin (entry point ``pytest11``): an emulator and clients bound to it, as fixtures
(they need the ``emulator`` extra and ``@pytest.mark.anyio``; the testing guide shows them)."""

from __future__ import annotations

import contextlib
import dataclasses
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .. import AsyncGrokImagine
    from ._config import EmulatorConfig
    from ._emulator import Emulator

MARKER = "grok_emulator"
TEST_TIME_SCALE = 1000.0
"""How much faster than the real service the fixtures' emulator runs by default."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**settings): EmulatorConfig settings for the grok_emulator fixture "
        "(time_scale, tokens, faults, seed, ...); the closest marker wins",
    )


@pytest.fixture
def grok_emulator_config(request: pytest.FixtureRequest) -> EmulatorConfig:
    """The :class:`EmulatorConfig` of ``grok_emulator``.

    Defaults: ``time_scale=TEST_TIME_SCALE``, ``period=60 / time_scale``, a ``seed`` from the
    test's id. ``@pytest.mark.grok_emulator(**settings)`` on the test, its class or module
    updates them (the closest marker wins); an ``EmulatorConfig`` as its argument replaces them.
    """
    from ._config import EmulatorConfig

    settings: dict[str, Any] = {}
    base: EmulatorConfig | None = None
    # iter_markers yields the closest first: apply the farthest first, so the closest wins.
    for marker in reversed(list(request.node.iter_markers(MARKER))):
        if marker.args:
            base = marker.args[0]
            if len(marker.args) > 1 or not isinstance(base, EmulatorConfig):
                raise TypeError(f"{MARKER} marker takes one EmulatorConfig, got {marker.args!r}")
            settings = {}
        settings.update(marker.kwargs)
    if base is not None:
        return dataclasses.replace(base, **settings)
    scale = settings.setdefault("time_scale", TEST_TIME_SCALE)
    settings.setdefault("period", 60.0 / scale)
    settings.setdefault("seed", zlib.crc32(request.node.nodeid.encode()))
    return EmulatorConfig(**settings)


@pytest.fixture
def grok_emulator(grok_emulator_config: EmulatorConfig) -> Emulator:
    """A fresh in-process :class:`Emulator` for the test, built from ``grok_emulator_config``."""
    from ._emulator import Emulator

    return Emulator(grok_emulator_config)


@pytest.fixture
async def grok_client_factory(
    grok_emulator: Emulator,
) -> AsyncIterator[Callable[..., AsyncGrokImagine]]:
    """Makes clients like ``grok_client``, each with its own connection and limiter, closed
    after the test: ``grok_client_factory(**options)`` passes ``options`` to the client."""
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
    async with contextlib.AsyncExitStack() as opened:

        def make(**options: Any) -> AsyncGrokImagine:
            if "http_client" not in options:
                options["http_client"] = grok_emulator.client(token=None)
                opened.push_async_callback(options["http_client"].aclose)
            client = AsyncGrokImagine(settings=settings, **options)
            opened.push_async_callback(client.aclose)
            return client

        yield make


@pytest.fixture
def grok_client(grok_client_factory: Callable[..., AsyncGrokImagine]) -> AsyncGrokImagine:
    """An ``AsyncGrokImagine`` talking to ``grok_emulator`` in process, closed after the test,
    with the emulator's first token, its quota and ``time_scale`` (whatever the environment)."""
    return grok_client_factory()


@pytest.fixture
def grok_emulator_env(
    grok_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Mapping[str, str]]:
    """``grok_emulator`` served on 127.0.0.1 (a thread, real clock), with the
    ``GROK_IMAGINE_*`` variables pointing default clients at it set for the test; yields them."""
    from ._emulator import serve_in_thread

    with serve_in_thread(grok_emulator) as url:
        environment = grok_emulator.environment(url)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        yield environment
