"""Fetching result videos: host policy, bounded redirects and size, atomic files, retries."""

from __future__ import annotations

import os
import random
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import anyio

from . import _http
from ._backoff import RetryPolicy
from ._blocking import run_blocking
from ._bounded import BadEncoding, BodyTooLarge, iter_bounded
from ._download import distinct_stem, plan_download, resolve_inside
from ._errors import APIConnectionError, APIError, DownloadError
from ._files import create_temp
from ._hosts import HostPolicy
from ._limits import Limits
from ._models import Task

if TYPE_CHECKING:
    import httpx

_EXPIRED_STATUSES = frozenset({403, 404, 410})  # how CDNs answer a stale signed URL
_EXPIRED_HINT = " (result URLs are valid for about 24 hours after completion)"


class Downloader:
    """Streams result videos into folders, for one client.

    Args:
        http: Where requests go (the client's, of httpx2 or httpx; no Authorization header
            is ever sent).
        hosts: Which hosts may be fetched from.
        limits: ``max_video_bytes`` and ``max_redirects``.
        retry: Retries after a transport error or a 5xx.
        rng: Jitter for the retries.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        hosts: HostPolicy,
        limits: Limits,
        retry: RetryPolicy,
        rng: random.Random,
    ) -> None:
        self._http = http
        self._url = _http.check_client(http).URL  # URLs of the client's own library
        self._hosts = hosts
        self._limits = limits
        self._retry = retry
        self._rng = rng
        # Which job (stem or URL) each file name was given to, per folder: a second job whose
        # name sanitises alike (keys "a/b" and "a?b") gets a digest-suffixed name instead of
        # overwriting the first one's paid video.
        self._owners: dict[tuple[Path, str], str] = {}

    def __repr__(self) -> str:
        return f"Downloader(hosts={sorted(self._hosts.allowed)!r})"

    async def download(
        self, task_or_url: Task | str | Sequence[str], dest: Path, *, stem: str | None
    ) -> list[Path]:
        """Plan names for ``task_or_url`` (see :func:`plan_download`) and fetch each file.

        Raises:
            ValueError: If there is nothing to download or a URL is not http(s).
            DownloadError: If a file was refused, too large, or could not be saved.
            APIError: If a download failed after retries.
        """
        files = plan_download(task_or_url, stem=stem)
        root = await run_blocking(_make_folder, dest)
        if isinstance(task_or_url, Task):
            owner = stem or task_or_url.task_id
            if not self._claim(root, [owner] * len(files), [name for _, name in files]):
                files = plan_download(task_or_url, stem=distinct_stem(owner))
                self._claim(root, [owner] * len(files), [name for _, name in files], force=True)
        else:
            renamed = []
            for url, name in files:
                if not self._claim(root, [url], [name]):
                    name = f"{distinct_stem(url)}.mp4"
                    self._claim(root, [url], [name], force=True)
                renamed.append((url, name))
            files = renamed
        return await self.download_all(files, root)

    def _claim(
        self, root: Path, owners: list[str], names: list[str], *, force: bool = False
    ) -> bool:
        keys = [(root, name.lower()) for name in names]  # case-insensitive disks too
        pairs = list(zip(keys, owners, strict=True))
        if not force and any(self._owners.get(k, o) != o for k, o in pairs):
            return False
        self._owners.update(pairs)
        return True

    async def download_all(self, files: Sequence[tuple[str, str]], dest: Path) -> list[Path]:
        """Fetch each ``(url, name)`` into ``dest`` concurrently, each with retries.

        Returns:
            The paths written, in the order of ``files``.

        Raises:
            APIError: The first failure, once every other download has finished.
        """
        root = await run_blocking(_make_folder, dest)
        targets = [resolve_inside(root, name) for _, name in files]
        errors: list[APIError] = []

        async def fetch(url: str, target: Path) -> None:
            try:
                await self._fetch_with_retries(url, target)
            except APIError as exc:  # reported after the others finish, not as a group
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for (url, _), target in zip(files, targets, strict=True):
                tg.start_soon(fetch, url, target)
        if errors:
            raise errors[0]
        return targets

    async def _fetch_with_retries(self, url: str, target: Path) -> None:
        attempt = 0
        while True:
            failure: APIError | None = None
            try:
                await self._fetch(url, target)
                return
            except _http.HTTPStatusError as exc:
                status = exc.response.status_code
                if status < 500 or attempt >= self._retry.attempts:
                    hint = _EXPIRED_HINT if status in _EXPIRED_STATUSES else ""
                    failure = DownloadError(
                        f"download of {target.name} failed: HTTP {status}{hint}", url=url
                    )
            except _http.TransportError as exc:
                if attempt >= self._retry.attempts:
                    failure = APIConnectionError(
                        f"download of {target.name} failed: {type(exc).__name__}", method="GET"
                    )
            except _http.HTTPError + _http.InvalidURL as exc:  # e.g. a body that does not decode
                failure = DownloadError(
                    f"download of {target.name} failed: {type(exc).__name__}", url=url
                )
            if failure is not None:
                raise failure  # outside the except block: no httpx(2) request in its context
            await anyio.sleep(self._retry.delay(attempt, rng=self._rng))
            attempt += 1

    async def _fetch(self, url: str, target: Path) -> None:
        """One try: follow redirects within the policy, then stream the body to ``target``."""
        current: httpx.URL = self._url(url)
        for _ in range(self._limits.max_redirects + 1):
            refusal = self._hosts.refusal(current)
            if refusal is not None:
                raise _refused(target, url, refusal)
            request = self._http.build_request(
                "GET", current, headers={"Accept-Encoding": "identity"}
            )
            request.headers.pop("Authorization", None)  # even if the http client sets one
            response = await self._http.send(request, stream=True, follow_redirects=False)
            try:
                refusal = self._hosts.refusal_after_connect(current, response)
                if refusal is not None:
                    raise _refused(target, url, refusal)
                if not response.has_redirect_location:
                    response.raise_for_status()
                    await self._save(response, url, target)
                    return
                current = _redirect_target(current, response, target, url)
            finally:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
        raise DownloadError(
            f"download of {target.name} refused: more than {self._limits.max_redirects} "
            "redirects (Limits.max_redirects)",
            url=url,
        )

    async def _save(self, response: httpx.Response, url: str, target: Path) -> None:
        """Stream the body into a fresh temporary file, then rename it onto ``target``."""
        limit = self._limits.max_video_bytes
        partial, out = await run_blocking(_open_partial, target)
        failure: DownloadError | None = None
        try:
            try:
                async for chunk in iter_bounded(response, limit=limit):
                    await run_blocking(out.write, chunk)
                await run_blocking(_flush_and_sync, out)
            finally:
                await run_blocking(out.close)
            await run_blocking(os.replace, partial, target)
        except BodyTooLarge:
            failure = DownloadError(
                f"download of {target.name} stopped: more than {limit} bytes "
                "(Limits.max_video_bytes)",
                url=url,
            )
        except BadEncoding as exc:
            failure = DownloadError(f"download of {target.name} failed: {exc}", url=url)
        except OSError as exc:
            failure = DownloadError(
                f"cannot save {target.name}: {exc.strerror or type(exc).__name__}", url=url
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await run_blocking(partial.unlink, True)
            raise
        if failure is not None:
            with anyio.CancelScope(shield=True):
                await run_blocking(partial.unlink, True)
            raise failure


def _refused(target: Path, url: str, reason: str) -> DownloadError:
    return DownloadError(
        f"download of {target.name} refused: {reason} (allow it with download_hosts=[...])",
        url=url,
    )


def _redirect_target(
    current: httpx.URL, response: httpx.Response, target: Path, url: str
) -> httpx.URL:
    """Where a redirect points, if the policy lets it go there."""
    location = response.headers["location"]
    try:
        following = current.join(location)
    except _http.BadURL:
        following = None
    if following is None or following.scheme not in ("http", "https") or not following.host:
        raise DownloadError(
            f"download of {target.name} refused: a redirect to {location[:100]!r}", url=url
        )
    if current.scheme == "https" and following.scheme != "https":
        raise DownloadError(
            f"download of {target.name} refused: a redirect from https to http", url=url
        )
    return following


def _make_folder(dest: Path) -> Path:
    try:
        dest.mkdir(parents=True, exist_ok=True)
        return dest.resolve()
    except OSError as exc:
        raise DownloadError(f"cannot create {dest}: {exc.strerror or exc}") from None


def _open_partial(target: Path) -> tuple[Path, BinaryIO]:
    """Refuse a folder or a link at ``target``; open a fresh temporary file beside it."""
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        kind = "folder" if stat.S_ISDIR(mode) else "link" if stat.S_ISLNK(mode) else "non-file"
        raise DownloadError(f"cannot save {target.name}: a {kind} is in the way")
    try:
        return create_temp(target)
    except OSError as exc:
        raise DownloadError(f"cannot save {target.name}: {exc.strerror or exc}") from None


def _flush_and_sync(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())
