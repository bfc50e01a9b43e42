"""Saving result videos: safe file names (pure) and atomic, streamed writes."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

import anyio
import httpx

from ._blocking import run_blocking

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 120
_CHUNK = 1 << 16


def safe_name(text: str, *, default: str = "video") -> str:
    """A file name made from ``text`` that cannot leave its folder or hide itself.

    Keeps letters, digits, ``.``, ``_`` and ``-``; replaces anything else with ``_``; strips
    leading dots (no hidden files, no ``..``); trims to 120 characters.

    Example:
        >>> safe_name("../../etc/passwd")
        'etc_passwd'
    """
    cleaned = _UNSAFE.sub("_", text).strip("._-")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)
    return cleaned[:_MAX_NAME] or default


def name_from_url(url: str, *, default: str = "video.mp4") -> str:
    """A safe file name from the last path segment of ``url`` (``.mp4`` if it has none)."""
    segment = PurePosixPath(unquote(urlsplit(url).path)).name
    name = safe_name(segment, default="")
    if not name:
        return default
    return name if "." in name else f"{name}.mp4"


def resolve_inside(dest: Path, name: str) -> Path:
    """``dest / name``, refusing any result that is not directly inside ``dest``.

    Raises:
        ValueError: If the resolved path escapes ``dest`` (it cannot after :func:`safe_name`,
            so this is a second line of defence).
    """
    root = dest.resolve()
    target = (root / name).resolve()
    if target.parent != root:
        raise ValueError(f"refusing to write {name!r} outside {root}")
    return target


async def stream_to_file(http: httpx.AsyncClient, url: str, target: Path) -> Path:
    """Stream ``url`` into ``target`` through a temporary file renamed into place at the end.

    Never holds the whole video in memory; a failure leaves no partial file behind.

    Raises:
        httpx.HTTPError: On transport errors or a non-2xx answer.
    """
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    try:
        async with http.stream("GET", url) as response:
            response.raise_for_status()
            out = await run_blocking(partial.open, "wb")
            try:
                async for chunk in response.aiter_bytes(_CHUNK):
                    await run_blocking(out.write, chunk)
                await run_blocking(_flush_and_sync, out)
            finally:
                await run_blocking(out.close)
        await run_blocking(os.replace, partial, target)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await run_blocking(partial.unlink, True)
        raise
    return target


def _flush_and_sync(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())
