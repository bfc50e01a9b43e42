"""An in-process transport to the emulator that fails like a network would, for either library.

It calls the ASGI app directly, as ``ASGITransport`` does, and adds two things a socket would
do: a server that hangs up (the emulator raises :class:`ConnectionDropped` there) becomes
``RemoteProtocolError``, and an answer slower than the request's read timeout becomes
``ReadTimeout`` (the libraries' timeouts otherwise only act on sockets). Client code under test
therefore cannot tell it from a connection. It is a transport of httpx2 and of httpx at once:
it answers each request with the Response (and the errors) of the request's own library, so
``httpx2.AsyncClient(transport=...)`` and ``httpx.AsyncClient(transport=...)`` both take it. It
is also about a third cheaper per request than ``ASGITransport`` (which looks for trio on every
request), which matters to benchmarks sending hundreds of thousands of requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
from starlette.types import ASGIApp, Message

from .. import _http
from ._drop import ConnectionDropped

if TYPE_CHECKING:
    import httpx

# httpcore's wording, which httpx re-raises, for a connection closed before any answer.
DISCONNECTED = "Server disconnected without sending a response."


class EmulatorTransport(_http.AnyFamilyTransport):
    """Sends requests to an emulator app in process.

    Args:
        app: The emulator's ASGI application.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        family = _http.family_of(request, "Request") or _http.lib
        timeouts = request.extensions.get("timeout", {})
        read_timeout = timeouts.get("read") if isinstance(timeouts, dict) else None
        try:
            with anyio.fail_after(read_timeout):
                return await self._exchange(request, family)
        except ConnectionDropped:
            raise family.RemoteProtocolError(DISCONNECTED, request=request) from None
        except TimeoutError:
            raise family.ReadTimeout("timed out", request=request) from None

    async def _exchange(self, request: httpx.Request, family: Any) -> httpx.Response:
        url = request.url
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(name.lower(), value) for name, value in request.headers.raw],
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?")[0],
            "query_string": url.query,
            "server": (url.host, url.port),
            "client": ("127.0.0.1", 123),
            "root_path": "",
        }
        pending_body: list[bytes] = [await request.aread()]
        answered = anyio.Event()
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        parts: list[bytes] = []

        async def receive() -> Message:
            if pending_body:
                return {"type": "http.request", "body": pending_body.pop(), "more_body": False}
            await answered.wait()  # like a client that stays until the answer is complete
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status, headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    answered.set()

        await self._app(scope, receive, send)
        if not answered.is_set():
            raise family.RemoteProtocolError(DISCONNECTED, request=request)
        body = b"" if request.method == "HEAD" else b"".join(parts)
        response: httpx.Response = family.Response(
            status, headers=headers, stream=family.ByteStream(body)
        )
        return response
