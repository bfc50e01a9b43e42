"""Reading a streamed body with its decompressed size bounded, so a bomb never inflates.

httpx (and httpx2) decodes a whole network chunk at once, so a small gzip chunk can grow into
hundreds of megabytes before any size check sees it. Here each raw chunk is inflated at most up
to the bytes still allowed, through ``zlib``'s ``max_length``.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

ACCEPT_ENCODING = "gzip, deflate"
"""What we ask servers for: the encodings :func:`iter_bounded` can inflate with a bound."""


class BodyTooLarge(Exception):
    """Internal: the body holds more than the allowed bytes (after decompression)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


class BadEncoding(Exception):
    """Internal: the body's Content-Encoding is unknown or its data does not decode."""


class _Inflater:
    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        self._zlib: zlib._Decompress | None = None
        if encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._zlib = None  # decided by the first bytes: zlib-wrapped or raw
        elif encoding not in ("", "identity"):
            raise BadEncoding(f"unsupported Content-Encoding {encoding[:40]!r}")

    def feed(self, data: bytes, room: int) -> bytes:
        """Up to ``room + 1`` decoded bytes from ``data`` (one more than allowed is enough
        to know the bound is passed)."""
        if self._encoding in ("", "identity"):
            return data[: room + 1]
        if self._zlib is None:
            # RFC 1950 header: compression method 8, and the first two bytes a multiple of 31.
            wrapped = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        try:
            return self._zlib.decompress(data, room + 1)
        except zlib.error as exc:
            raise BadEncoding(f"{self._encoding} data does not decode ({exc})") from None


async def iter_bounded(response: httpx.Response, *, limit: int) -> AsyncIterator[bytes]:
    """The decoded body of a streamed ``response``, chunk by chunk, at most ``limit`` bytes.

    Raises:
        BodyTooLarge: Once the decoded body passes ``limit`` bytes (nothing more is read).
        BadEncoding: If the Content-Encoding is unknown or the data does not decode.
        httpx.TransportError: If the connection fails while reading (httpx2's, on an httpx2
            response).
    """
    if response.is_stream_consumed:  # built already read (an in-memory transport): check it
        content = response.content
        if len(content) > limit:
            raise BodyTooLarge(limit)
        if content:
            yield content
        return
    encodings = [
        part.strip().lower()
        for part in response.headers.get("content-encoding", "").split(",")
        if part.strip()
    ]
    if len(encodings) > 1:
        raise BadEncoding("more than one Content-Encoding")
    inflater = _Inflater(encodings[0] if encodings else "")
    total = 0
    async for raw in response.aiter_raw():
        chunk = inflater.feed(raw, limit - total)
        total += len(chunk)
        if total > limit:
            raise BodyTooLarge(limit)
        # Output short of room + 1 bytes means zlib consumed all of ``raw``: nothing is left
        # behind in the decompressor for a later chunk to release.
        if chunk:
            yield chunk


async def read_bounded(response: httpx.Response, *, limit: int) -> bytes:
    """The whole decoded body of a streamed ``response``, refusing more than ``limit`` bytes.

    Raises:
        BodyTooLarge, BadEncoding, httpx.TransportError: As :func:`iter_bounded`.
    """
    return b"".join([chunk async for chunk in iter_bounded(response, limit=limit)])
