"""Closing a connection without an answer, after the request was received and acted on.

A handler returns :class:`DropResponse`; it sends nothing and marks the request. Once the whole
Starlette stack has returned, :class:`DroppingStarlette` (the outermost layer, holding the
server's own ``send``) closes the connection:

* under uvicorn, ``send`` is a bound method of the connection's request-response cycle, which
  holds the asyncio transport (true of its h11, httptools and zttp protocols). The cycle is
  marked disconnected, so uvicorn neither logs "returned without starting response" nor writes
  a 500, and the transport is closed: the client reads EOF where the answer should be;
* in process (or under a server whose transport cannot be reached), :class:`ConnectionDropped`
  is raised instead; :class:`~grok_imagine_async.testing.Emulator`'s transport turns it into
  ``httpx.RemoteProtocolError``, which is what httpx reports for a server that hung up.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

SCOPE_KEY = "grok_imagine_async.emulator.drop"


class ConnectionDropped(Exception):
    """Raised by the emulator app when it drops a connection it cannot close itself.

    Seen only with a plain ``httpx.ASGITransport``; ``Emulator.transport()`` converts it.
    """


class _DropFlag:
    __slots__ = ("dropped",)

    def __init__(self) -> None:
        self.dropped = False


class DropResponse(Response):
    """A response that is never sent: the connection will be closed instead."""

    def __init__(self) -> None:
        super().__init__(status_code=500)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        flag = scope.get(SCOPE_KEY)
        if isinstance(flag, _DropFlag):
            flag.dropped = True
            return
        raise ConnectionDropped("the emulator dropped the connection")


def _server_transport(send: Send) -> tuple[Any, asyncio.BaseTransport] | None:
    owner = getattr(send, "__self__", None)
    transport = getattr(owner, "transport", None)
    if isinstance(transport, asyncio.BaseTransport):
        return owner, transport
    return None


class DroppingStarlette(Starlette):
    """A Starlette application whose handlers may answer by closing the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        flag = _DropFlag()
        scope[SCOPE_KEY] = flag
        await super().__call__(scope, receive, send)
        if not flag.dropped:
            return
        found = _server_transport(send)
        if found is None:
            raise ConnectionDropped("the emulator dropped the connection")
        owner, transport = found
        if hasattr(owner, "disconnected"):
            owner.disconnected = True
        transport.close()
