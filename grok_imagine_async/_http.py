"""The HTTP library: httpx2 when it is installed, else httpx; and one family per client.

httpx2 is the maintained line of httpx under a new name (same API, with httpcore2), chosen
the way Starlette's test client chooses: try ``httpx2``, fall back to ``httpx``. ``lib`` is
that module; a client we build is ``lib.AsyncClient``. A client passed in is used as it is,
whichever family it comes from, but not a mix: an ``httpx2.AsyncClient`` sending through an
httpx transport fails deep inside the library, so :func:`check_client` refuses it up front.
The two families' exceptions are distinct classes, so the tuples below hold both, and code that
maps transport failures into our tree catches ``TransportError`` rather than ``httpx.X``.

Nothing here aliases one module to the other (no ``sys.modules`` hook): a process may use both.
Type checkers see httpx (the API is the same).
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import httpx

from ._errors import ConfigurationError

if TYPE_CHECKING:
    import httpx2

    lib = httpx

    HTTPClient: TypeAlias = httpx.AsyncClient | httpx2.AsyncClient
    """What ``http_client=`` takes: an ``AsyncClient`` of either family."""
    Timeout: TypeAlias = float | httpx.Timeout | httpx2.Timeout | None
    """What ``timeout=`` takes: seconds, a ``Timeout`` of either family, or None (none)."""
else:
    try:
        import httpx2 as lib
    except ModuleNotFoundError:
        lib = httpx
    HTTPClient = Timeout = Any

FAMILIES: tuple[ModuleType, ...] = (lib,) if lib is httpx else (lib, httpx)
"""The installed libraries, the default first."""


def _each(name: str) -> tuple[type[Any], ...]:
    return tuple(getattr(family, name) for family in FAMILIES)


# Typed as httpx's classes: ``except`` clauses then give ``exc`` its attributes.
ConnectErrors = cast(
    "tuple[type[httpx.TransportError], ...]",
    _each("ConnectError") + _each("ConnectTimeout") + _each("PoolTimeout"),
)
"""The request provably never reached the server."""
RequestErrors = cast(
    "tuple[type[httpx.TransportError], ...]",
    _each("UnsupportedProtocol") + _each("LocalProtocolError"),
)
"""The request could not be written (nothing was sent)."""
TransportError = cast("tuple[type[httpx.TransportError], ...]", _each("TransportError"))
TimeoutException = cast("tuple[type[httpx.TimeoutException], ...]", _each("TimeoutException"))
DecodingError = cast("tuple[type[httpx.DecodingError], ...]", _each("DecodingError"))
HTTPStatusError = cast("tuple[type[httpx.HTTPStatusError], ...]", _each("HTTPStatusError"))
HTTPError = cast("tuple[type[httpx.HTTPError], ...]", _each("HTTPError"))
InvalidURL = cast("tuple[type[httpx.InvalidURL], ...]", _each("InvalidURL"))
BadURL: tuple[type[Exception], ...] = (*InvalidURL, ValueError, TypeError, AttributeError)
"""What parsing or joining a malformed URL may raise."""

if TYPE_CHECKING:
    AnyFamilyTransport = httpx.AsyncBaseTransport
else:

    class AnyFamilyTransport(*_each("AsyncBaseTransport")):
        """A transport base of every installed family: a client of either accepts it."""


def family_of(obj: object, kind: str = "AsyncClient") -> ModuleType | None:
    """The library whose ``kind`` class ``obj`` is an instance of (None: neither).

    A class of both (:class:`AnyFamilyTransport`) counts as the default's.
    """
    for family in FAMILIES:
        if isinstance(obj, getattr(family, kind)):
            return family
    return None


def check_client(client: object) -> ModuleType:
    """The library of ``client``, checked to send through transports of that library only.

    Raises:
        ConfigurationError: If ``client`` is no ``AsyncClient`` of httpx or httpx2, or a
            transport it sends through (``transport=``, ``mounts=``) is of the other one.
    """
    family = family_of(client)
    if family is None:
        names = " or ".join(f"{f.__name__}.AsyncClient" for f in FAMILIES)
        raise ConfigurationError(f"http_client must be an {names}, got {type(client).__name__}")
    transports = [getattr(client, "_transport", None), *getattr(client, "_mounts", {}).values()]
    for transport in transports:
        if transport is None or isinstance(transport, family.AsyncBaseTransport):
            continue
        other = family_of(transport, "AsyncBaseTransport")
        if other is not None:
            kind = f"{type(transport).__module__.partition('.')[0]}.{type(transport).__name__}"
            raise ConfigurationError(
                f"http_client is a {family.__name__}.AsyncClient but sends through an "
                f"{other.__name__} transport ({kind}): one client cannot mix {family.__name__} "
                f"and {other.__name__}; build the transport from {family.__name__} too (e.g. "
                f"{family.__name__}.{type(transport).__name__}), or the client from "
                f"{other.__name__}"
            )
    return family


def new_client(family: ModuleType, *, timeout: Any, headers: dict[str, str]) -> httpx.AsyncClient:
    """The ``AsyncClient`` of ``family`` a client builds for itself (httpx's default pool).

    The pool stays httpx's (100 connections, 20 kept alive). Keeping every connection alive
    saves reconnecting beyond 20 calls at a time, but httpcore 1 then checks every idle
    connection's socket on each request: twice the CPU per request at 50 calls at a time on
    127.0.0.1 (``benchmarks/README.md``, issue 28). Against the real service a reconnect is a
    TLS handshake, so the trade is the caller's: pass an ``http_client`` with other ``limits``.
    """
    client = family.AsyncClient(timeout=timeout_in(family, timeout), headers=headers)
    return cast("httpx.AsyncClient", client)


def timeout_in(family: ModuleType, timeout: Any) -> Any:
    """``timeout`` for a client of ``family``: a ``Timeout`` of the other family converted."""
    if isinstance(timeout, (int, float)) or timeout is None:
        return timeout
    if isinstance(timeout, family.Timeout):
        return timeout
    if family_of(timeout, "Timeout") is not None:
        return family.Timeout(
            connect=timeout.connect, read=timeout.read, write=timeout.write, pool=timeout.pool
        )
    raise ConfigurationError(
        f"timeout must be seconds or an httpx Timeout, got {type(timeout).__name__}"
    )
