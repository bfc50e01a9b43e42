"""Saving result videos: safe file names (pure) and atomic, streamed writes."""

from __future__ import annotations

import os
import random
import re
import secrets
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

import anyio
import httpx

from ._backoff import RetryPolicy
from ._blocking import run_blocking
from ._errors import APIConnectionError, APIError
from ._models import Task

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 120
_CHUNK = 1 << 16
_EXPIRED_STATUSES = frozenset({403, 404, 410})  # how CDNs answer a stale signed URL
_EXPIRED_HINT = " (result URLs are valid for about 24 hours after completion)"


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


def plan_download(
    task_or_url: Task | str | Sequence[str], *, stem: str | None = None
) -> list[tuple[str, str]]:
    """The ``(url, file name)`` pairs to fetch for a task or a list of URLs (pure).

    A task's files are named ``<stem>.mp4``, or ``<stem>_<n>.mp4`` when it has several, where
    the stem is ``stem`` if given, else the task id, sanitised. Bare URLs are named after
    their last path segment, made unique.

    Raises:
        ValueError: If there is nothing to download or a URL is not http(s).
    """
    if isinstance(task_or_url, Task):
        urls = list(task_or_url.videos)
        base = safe_name(stem or task_or_url.task_id, default="task")
        names = (
            [f"{base}.mp4"]
            if len(urls) == 1
            else [f"{base}_{i}.mp4" for i in range(1, len(urls) + 1)]
        )
    else:
        urls = [task_or_url] if isinstance(task_or_url, str) else list(task_or_url)
        names = _unique([name_from_url(url) for url in urls])
    if not urls:
        raise ValueError("nothing to download: no video URL")
    for url in urls:
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError(f"refusing to download a non-http(s) URL: {url!r}")
    return list(zip(urls, names, strict=True))


async def download_all(
    http: httpx.AsyncClient,
    files: Sequence[tuple[str, str]],
    dest: Path,
    *,
    retry: RetryPolicy,
    rng: random.Random,
) -> list[Path]:
    """Fetch each ``(url, name)`` into ``dest`` concurrently, each with retries.

    Returns:
        The paths written, in the order of ``files``.

    Raises:
        APIError: The first failure, once every other download has finished.
    """
    await run_blocking(lambda: dest.mkdir(parents=True, exist_ok=True))
    targets = [resolve_inside(dest, name) for _, name in files]
    errors: list[APIError] = []

    async def fetch(url: str, target: Path) -> None:
        try:
            await _fetch_with_retries(http, url, target, retry=retry, rng=rng)
        except APIError as exc:  # reported after the others finish, not as an ExceptionGroup
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for (url, _), target in zip(files, targets, strict=True):
            tg.start_soon(fetch, url, target)
    if errors:
        raise errors[0]
    return targets


async def _fetch_with_retries(
    http: httpx.AsyncClient, url: str, target: Path, *, retry: RetryPolicy, rng: random.Random
) -> None:
    attempt = 0
    while True:
        try:
            await stream_to_file(http, url, target)
            return
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            if status < 500 or attempt >= retry.attempts:
                hint = _EXPIRED_HINT if status in _EXPIRED_STATUSES else ""
                raise APIError(
                    f"download of {target.name} failed: HTTP {status}{hint}", method="GET"
                ) from None
        except httpx.TransportError as exc:
            if attempt >= retry.attempts:
                raise APIConnectionError(
                    f"download of {target.name} failed: {type(exc).__name__}", method="GET"
                ) from None
        await anyio.sleep(retry.delay(attempt, rng=rng))
        attempt += 1


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        if count:
            stem, dot, ext = name.rpartition(".")
            name = f"{stem}_{count + 1}.{ext}" if dot else f"{name}_{count + 1}"
        out.append(name)
    return out
