"""An in-process httpx transport to the emulator that fails like a network would.

``httpx.ASGITransport`` calls the app directly, so two things a socket would do are missing:
a server that hangs up (the emulator raises :class:`ConnectionDropped` there) and a read timeout
(httpx timeouts only act on sockets). This transport adds both, raising the exceptions httpx
raises over a real connection, so client code under test cannot tell the difference.
"""

from __future__ import annotations

import anyio
import httpx

from ._drop import ConnectionDropped, DroppingStarlette

# httpcore's wording, which httpx re-raises, for a connection closed before any answer.
DISCONNECTED = "Server disconnected without sending a response."


class EmulatorTransport(httpx.AsyncBaseTransport):
    """Sends requests to an emulator app in process.

    Args:
        app: The emulator's ASGI application.
    """

    def __init__(self, app: DroppingStarlette) -> None:
        self._inner = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        read_timeout = timeouts.get("read") if isinstance(timeouts, dict) else None
        try:
            with anyio.fail_after(read_timeout):
                return await self._inner.handle_async_request(request)
        except ConnectionDropped:
            raise httpx.RemoteProtocolError(DISCONNECTED, request=request) from None
        except TimeoutError:
            raise httpx.ReadTimeout("timed out", request=request) from None

    async def aclose(self) -> None:
        await self._inner.aclose()
