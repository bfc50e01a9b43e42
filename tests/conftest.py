"""Fixtures shared by the test suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest

if TYPE_CHECKING:
    from _redis_worker import RedisServer

    from grok_imagine_async.testing import Emulator


class ServedEmulator(NamedTuple):
    """An emulator listening on 127.0.0.1, and its base URL."""

    url: str
    emulator: Emulator


@pytest.fixture
def served_emulator(request: pytest.FixtureRequest) -> Iterator[ServedEmulator]:
    """An :class:`Emulator` served by uvicorn on 127.0.0.1 (free port) in a background thread.

    The server runs on the real clock: use it from tests on the normal asyncio loop
    (``anyio_backend`` returning ``"asyncio"``). Parametrize it indirectly with an
    ``EmulatorConfig`` to change its behaviour::

        @pytest.mark.parametrize("served_emulator", [EmulatorConfig(seed=1)], indirect=True)
    """
    from grok_imagine_async.testing import Emulator, serve_in_thread

    emulator = Emulator(getattr(request, "param", None))
    with serve_in_thread(emulator) as url:
        yield ServedEmulator(url, emulator)


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
