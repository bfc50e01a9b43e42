"""The HTTP library (httpx2 if installed, else httpx: ``lib``; a given client keeps its own,
unmixed), exception tuples holding both families' classes, and bodies read within a bound.
Type checkers see httpx (the API is the same)."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, cast

import httpx

from ._errors import ConfigurationError
from ._version import __version__

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

DEFAULT_TIMEOUT = lib.Timeout(30.0, connect=10.0)

FAMILIES: tuple[ModuleType, ...] = (lib,) if lib is httpx else (lib, httpx)
"""The installed libraries, the default first."""


_T = TypeVar("_T", bound=type)


def _each(cls: _T) -> tuple[_T, ...]:
    """httpx's class ``cls`` and its twin in every installed family (typed as httpx's)."""
    return tuple(getattr(family, cls.__name__) for family in FAMILIES)


# The request provably never reached the server / could not be written (nothing was sent).
ConnectErrors = _each(httpx.ConnectError) + _each(httpx.ConnectTimeout) + _each(httpx.PoolTimeout)
RequestErrors = _each(httpx.UnsupportedProtocol) + _each(httpx.LocalProtocolError)
TransportError = _each(httpx.TransportError)
TimeoutException = _each(httpx.TimeoutException)
DecodingError = _each(httpx.DecodingError)
HTTPStatusError = _each(httpx.HTTPStatusError)
HTTPError = _each(httpx.HTTPError)
InvalidURL = _each(httpx.InvalidURL)
# What parsing or joining a malformed URL may raise.
BadURL: tuple[type[Exception], ...] = (*InvalidURL, ValueError, TypeError, AttributeError)

if TYPE_CHECKING:
    AnyFamilyTransport = httpx.AsyncBaseTransport
else:

    class AnyFamilyTransport(*_each(httpx.AsyncBaseTransport)):
        """A transport base of every installed family: a client of either accepts it."""


def family_of(obj: object, kind: str = "AsyncClient") -> ModuleType | None:
    """The library whose ``kind`` class ``obj`` is an instance of, or None."""
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
        other = family_of(transport, "AsyncBaseTransport")
        if other is not None and not isinstance(transport, family.AsyncBaseTransport):
            raise ConfigurationError(
                f"http_client is a {family.__name__}.AsyncClient but sends through an "
                f"{other.__name__} transport ({type(transport).__name__}): build the client "
                "and its transports from one library"
            )
    return family


def new_client(family: ModuleType, *, timeout: Any = DEFAULT_TIMEOUT) -> httpx.AsyncClient:
    """The ``AsyncClient`` a client builds for itself, with httpx's default pool (keeping 50
    connections alive costs httpcore twice the CPU: ``benchmarks/README.md``)."""
    headers = {
        "User-Agent": f"grok-imagine-async/{__version__}",
        "Accept-Encoding": ACCEPT_ENCODING,  # what read_bounded can inflate
    }
    client = family.AsyncClient(timeout=timeout_in(family, timeout), headers=headers)
    return cast("httpx.AsyncClient", client)


def timeout_in(family: ModuleType, timeout: Any) -> Any:
    """``timeout`` for a client of ``family``: a ``Timeout`` of the other family converted."""
    if timeout is None or isinstance(timeout, (int, float, family.Timeout)):
        return timeout
    if family_of(timeout, "Timeout") is not None:
        return family.Timeout(
            connect=timeout.connect, read=timeout.read, write=timeout.write, pool=timeout.pool
        )
    raise ConfigurationError(
        f"timeout must be seconds or an httpx Timeout, got {type(timeout).__name__}"
    )


# httpx inflates a whole network chunk at once (a small gzip chunk can grow to hundreds of MB):
# we inflate each raw chunk at most to the room left, for these encodings only.
ACCEPT_ENCODING = "gzip, deflate"


class BodyTooLarge(Exception):
    """Internal: the body holds more than ``limit`` bytes (after decompression)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


class BadEncoding(Exception):
    """Internal: the body's Content-Encoding is unknown or its data does not decode."""


class _Bounded:
    """Decodes a body's raw chunks one by one, as ``content_encoding`` says, each inflated at
    most to the room left: :class:`BodyTooLarge` past ``limit`` bytes, :class:`BadEncoding` if
    it does not decode."""

    __slots__ = ("_encoding", "_inflater", "_room", "limit")

    def __init__(self, content_encoding: str, limit: int) -> None:
        encoding = "identity"
        if content_encoding:  # most answers name none: nothing to split
            encodings = [
                part.strip().lower() for part in content_encoding.split(",") if part.strip()
            ]
            if len(encodings) > 1:
                raise BadEncoding("more than one Content-Encoding")
            encoding = encodings[0] if encodings else "identity"
            if encoding not in ("gzip", "x-gzip", "deflate", "identity"):
                raise BadEncoding(f"unsupported Content-Encoding {encoding[:40]!r}")
        self._encoding = encoding
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if "gzip" in encoding else None
        self._room = self.limit = limit

    def feed(self, data: bytes) -> bytes:
        """The decoded bytes of the next raw chunk ``data``."""
        room = self._room
        if self._encoding == "identity":
            chunk = data[: room + 1]  # one byte past the bound, to see it passed
        else:
            inflater = self._inflater
            if inflater is None:  # deflate: RFC 1950's header (method 8, a multiple of 31)?
                wrapped = (
                    len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
                )
                inflater = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
                self._inflater = inflater
            try:
                # Output short of room + 1 bytes means zlib consumed all of ``data``: nothing
                # is left behind in the decompressor for a later chunk to release.
                chunk = inflater.decompress(data, room + 1)
            except zlib.error as exc:
                raise BadEncoding(f"{self._encoding} data does not decode ({exc})") from None
        self._room = room - len(chunk)
        if self._room < 0:
            raise BodyTooLarge(self.limit)
        return chunk


def _read_already(response: httpx.Response, limit: int) -> bytes:
    """The body of a response built already read (an in-memory transport), within ``limit``."""
    if len(response.content) > limit:
        raise BodyTooLarge(limit)
    return response.content


async def iter_bounded(response: httpx.Response, *, limit: int) -> AsyncIterator[bytes]:
    """The decoded body of a streamed ``response``, chunk by chunk: :class:`BodyTooLarge` past
    ``limit`` bytes, :class:`BadEncoding` if it does not decode, transport errors as they come."""
    if response.is_stream_consumed:
        content = _read_already(response, limit)
        if content:
            yield content
        return
    bounded = _Bounded(response.headers.get("content-encoding", ""), limit)
    async for data in response.aiter_raw():
        chunk = bounded.feed(data)
        if chunk:
            yield chunk


async def read_bounded(response: httpx.Response, *, limit: int, content_encoding: str) -> bytes:
    """The whole decoded body of a streamed ``response``, as :func:`iter_bounded` reads it (a
    plain loop: an async generator per answer costs a frame at every resume, and a hook), its
    ``Content-Encoding`` read by the caller."""
    if response.is_stream_consumed:
        return _read_already(response, limit)
    bounded = _Bounded(content_encoding, limit)
    chunks = []  # a loop, not a comprehension: on Python < 3.12 that is one more frame
    async for data in response.aiter_raw():
        chunks.append(bounded.feed(data))
    return b"".join(chunks)
