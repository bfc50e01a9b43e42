"""The emulator's connections: in process, or closed without an answer on purpose.

A handler answers :class:`DropResponse` to hang up: under uvicorn the socket is closed, in
process :class:`EmulatorTransport` (a third cheaper than ``ASGITransport``) raises
``RemoteProtocolError``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import _http

if TYPE_CHECKING:
    import httpx

# httpcore's wording, which httpx re-raises, for a connection closed before any answer.
DISCONNECTED = "Server disconnected without sending a response."
_SEND = "grok_imagine_async.emulator.send"  # scope key: the server's send, which Starlette wraps


class ConnectionDropped(Exception):
    """Raised when the emulator drops a connection it cannot close itself (under a plain
    ``httpx.ASGITransport``; ``Emulator.transport()`` converts it)."""


class DropResponse(Response):
    """A response never sent: the connection is closed instead."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        owner: Any = getattr(scope.get(_SEND), "__self__", None)  # uvicorn's request cycle
        transport = getattr(owner, "transport", None)
        if not isinstance(transport, asyncio.BaseTransport):
            raise ConnectionDropped("the emulator dropped the connection")
        if hasattr(owner, "disconnected"):
            owner.disconnected = True  # so uvicorn neither logs nor writes a 500
        transport.close()


class DroppingStarlette(Starlette):
    """A Starlette application whose handlers may answer by closing the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_SEND] = send
        await super().__call__(scope, receive, send)


class EmulatorTransport(_http.AnyFamilyTransport):
    """Sends requests to an emulator's app in process, answering each in its library."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        family = _http.family_of(request, "Request") or _http.lib
        timeouts = request.extensions.get("timeout", {})
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
        start: Message = {}
        parts: list[bytes] = []

        async def receive() -> Message:
            if pending_body:
                return {"type": "http.request", "body": pending_body.pop(), "more_body": False}
            await answered.wait()  # like a client that stays until the answer is complete
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    answered.set()

        try:
            with anyio.fail_after(timeouts.get("read") if isinstance(timeouts, dict) else None):
                await self._app(scope, receive, send)
            if not answered.is_set():
                raise ConnectionDropped
        except ConnectionDropped:
            raise family.RemoteProtocolError(DISCONNECTED, request=request) from None
        except TimeoutError:
            raise family.ReadTimeout("timed out", request=request) from None
        body = b"" if request.method == "HEAD" else b"".join(parts)
        response: httpx.Response = family.Response(
            start["status"], headers=start.get("headers", []), stream=family.ByteStream(body)
        )
        return response
