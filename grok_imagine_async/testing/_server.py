"""Serving an emulator over a real socket with uvicorn: in a background thread, or in front."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import uvicorn

from ._emulator import Emulator

STARTUP_TIMEOUT = 10.0


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP; without it
    # uvicorn's body write waits for the client's delayed ACK, 40 ms per request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def base_url(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(emulator: Emulator, log_level: str, *, own_logging: bool) -> uvicorn.Server:
    config = uvicorn.Config(
        emulator.app,
        # In a host process (tests), leave its logging configuration alone.
        log_config=uvicorn.config.LOGGING_CONFIG if own_logging else None,
        log_level=log_level,
        access_log=own_logging and log_level == "debug",
        lifespan="off",
    )
    return uvicorn.Server(config)


@contextlib.contextmanager
def serve_in_thread(
    emulator: Emulator, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
) -> Iterator[str]:
    """Serve ``emulator`` with uvicorn in a background thread (on the real clock) while the
    block runs, on ``host:port`` (port 0: a free one) at uvicorn's ``log_level``.

    Yields:
        The base URL, such as ``http://127.0.0.1:49731``.

    Raises:
        RuntimeError: If the server did not start within 10 seconds.
    """
    server = _server(emulator, log_level, own_logging=False)
    with bind(host, port) as sock:
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="grok-imagine-emulator", daemon=True
        )
        thread.start()
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while not server.started:  # uvicorn offers no startup event to wait on
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("the emulator's uvicorn server did not start")
                time.sleep(0.005)
            yield base_url(sock)
        finally:
            server.should_exit = True
            thread.join(STARTUP_TIMEOUT)


def serve_forever(
    emulator: Emulator,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    on_ready: Callable[[str], None] = print,
) -> None:
    """Serve ``emulator`` in this thread until Ctrl-C; ``on_ready`` gets its URL once bound."""
    with bind(host, port) as sock:
        on_ready(base_url(sock))
        _server(emulator, log_level, own_logging=True).run(sockets=[sock])
