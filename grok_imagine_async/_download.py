"""Fetching result videos: safe names, bounded redirects and size, atomic files, and a host
policy: non-public addresses (a hostile URL's ``127.0.0.1``) are refused before sending and
once connected (DNS rebinding), but for the allowed hosts."""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import os
import random
import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from . import _http
from ._errors import APIConnectionError, APIError, ConfigurationError, DownloadError
from ._files import replacing, run_blocking
from ._http import BadEncoding, BodyTooLarge, iter_bounded
from ._models import Task
from ._protocol import is_fetchable_url
from ._settings import Settings

if TYPE_CHECKING:
    import httpx

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Names Windows reserves in every folder, whatever the extension ("CON.mp4" is the console).
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(10)}
)
_EXPIRED_STATUSES = frozenset({403, 404, 410})  # how CDNs answer a stale signed URL
_IDENTITY = {"Accept-Encoding": "identity"}
ANY_HOST = "*"  # in download_hosts: allow every host (e.g. behind a proxy on a private address)


def safe_name(text: str, *, default: str = "video") -> str:
    """A file name from ``text`` that cannot leave its folder, hide itself or be reserved (by
    Windows: ``con`` becomes ``con_``)."""
    cleaned = _UNSAFE.sub("_", text).strip("._-")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)[:120]
    base, dot, rest = cleaned.partition(".")
    if base.upper() in _RESERVED:
        cleaned = f"{base}_{dot}{rest}"
    return cleaned or default


def plan_download(task: Task, *, stem: str | None = None) -> list[tuple[str, str]]:
    """The ``(url, file name)`` pairs to fetch for ``task``: ``<stem>.mp4``, or ``<stem>_<n>.mp4``
    when several (``stem``: the task id by default, sanitised).

    Raises:
        ConfigurationError: If there is nothing to download or a URL is not http(s).
    """
    urls = task.videos
    if not urls:
        raise ConfigurationError("nothing to download: no video URL")
    for url in urls:
        if not is_fetchable_url(url):
            raise ConfigurationError(f"refusing to download a non-http(s) URL: {url[:200]!r}")
    base, one = safe_name(stem or task.task_id, default="task"), len(urls) == 1
    return [(url, f"{base}.mp4" if one else f"{base}_{i}.mp4") for i, url in enumerate(urls, 1)]


def _normalize_host(host: str) -> str:
    return host.strip().lower().strip("[]").rstrip(".")


def _private(host: str) -> bool:
    """True if ``host`` is a literal address that is not public."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


class HostPolicy:
    """Hosts downloads may reach beyond the public internet: the host of ``api_url`` and those
    in ``extra`` (``"*"``: every host); a :class:`ConfigurationError` if ``api_url`` is invalid."""

    def __init__(self, *, api_url: str, extra: Iterable[str] = ()) -> None:
        extra = [extra] if isinstance(extra, str) else extra  # a lone host, not its characters
        try:
            hosts = (_http.lib.URL(api_url).host, *extra)
        except _http.BadURL as exc:
            raise ConfigurationError(f"base_url or download_hosts is invalid ({exc})") from None
        self.allowed = frozenset(_normalize_host(host) for host in hosts if host.strip())

    def refusal(self, url: httpx.URL, response: httpx.Response | None = None) -> str | None:
        """Why ``url`` may not be fetched, judged by its host before connecting, or by the
        address ``response`` came from once connected (none in memory); None if it may."""
        host = _normalize_host(url.host)
        if host in self.allowed or ANY_HOST in self.allowed:
            return None
        if response is not None:
            stream = response.extensions.get("network_stream")
            peer = None if stream is None else stream.get_extra_info("server_addr")
            if isinstance(peer, tuple) and peer and isinstance(peer[0], str) and _private(peer[0]):
                return f"{url.host} resolved to {peer[0]}, not a public address"
            return None
        if host == "localhost" or host.endswith(".localhost"):
            return f"{host} is this machine"
        return f"{host} is not a public address" if _private(host) else None


class Downloader:
    """Streams result videos into folders for one client, never with its Authorization."""

    def __init__(
        self, http: httpx.AsyncClient, hosts: HostPolicy, settings: Settings, rng: random.Random
    ) -> None:
        self._http, self._hosts, self._rng = http, hosts, rng
        self._url = _http.check_client(http).URL  # URLs of the client's own library
        self._limits, self._retry = settings.limits, settings.retry
        # The stem owning each (folder, name): one sanitised alike ("a/b", "a?b") gets a digest.
        self._owners: dict[tuple[Path, str], str] = {}

    async def download(self, task: Task, dest: Path, *, stem: str | None) -> list[Path]:
        """Fetch the files of ``task`` at once; raise the first failure once all end."""
        files = plan_download(task, stem=stem)
        root = await run_blocking(_make_folder, dest)
        owner = stem or task.task_id
        if any(self._owners.get((root, name.lower()), owner) != owner for _, name in files):
            digest = hashlib.sha256(owner.encode("utf-8", "surrogatepass")).hexdigest()[:8]
            files = plan_download(task, stem=f"{safe_name(owner, default='task')}-{digest}")
        self._owners.update({(root, name.lower()): owner for _, name in files})  # any case
        errors: list[APIError] = []  # reported after the others finish, not as a group
        async with anyio.create_task_group() as tg:
            for url, name in files:  # safe names: no separator, no ".."
                tg.start_soon(self._fetch_with_retries, url, root / name, errors)
        if errors:
            raise errors[0]
        return [root / name for _, name in files]

    async def _fetch_with_retries(self, url: str, target: Path, errors: list[APIError]) -> None:
        for attempt in itertools.count():
            transient = False  # failures are kept, not raised here: no httpx(2) request in context
            try:
                await self._fetch(url, target)
                return
            except APIError as exc:  # refused or not savable: trying again would not help
                failure = exc
            except _http.HTTPStatusError as exc:
                status = exc.response.status_code
                transient = status >= 500
                hint = " (result URLs are valid for about 24 hours after completion)"
                detail = f"HTTP {status}{hint if status in _EXPIRED_STATUSES else ''}"
                failure = _failed(target, url, f"failed: {detail}")
            except _http.TransportError as exc:
                what = f"download of {target.name} failed: {type(exc).__name__}"
                failure, transient = APIConnectionError(what, method="GET"), True
            except _http.HTTPError + _http.InvalidURL as exc:  # e.g. a body that does not decode
                failure = _failed(target, url, f"failed: {type(exc).__name__}")
            if not transient or attempt >= self._retry.attempts:
                errors.append(failure)
                break
            await anyio.sleep(self._retry.delay(attempt, rng=self._rng))

    async def _fetch(self, url: str, target: Path) -> None:
        """One try: follow redirects within the policy, then stream the body to ``target``."""
        current: httpx.URL = self._url(url)
        for _ in range(self._limits.max_redirects + 1):
            if refusal := self._hosts.refusal(current):
                raise _refused(target, url, refusal)
            request = self._http.build_request("GET", current, headers=_IDENTITY)
            request.headers.pop("Authorization", None)  # even if the http client sets one
            response = await self._http.send(request, stream=True, follow_redirects=False)
            try:
                if refusal := self._hosts.refusal(current, response):
                    raise _refused(target, url, refusal)
                if not response.has_redirect_location:
                    response.raise_for_status()
                    return await self._save(response, url, target)
                current = _redirect_target(current, response.headers["location"], target, url)
            finally:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
        limit = self._limits.max_redirects
        raise _failed(target, url, f"refused: more than {limit} redirects (Limits.max_redirects)")

    async def _save(self, response: httpx.Response, url: str, target: Path) -> None:
        """Stream the body into a fresh temporary file, then rename it onto ``target``."""
        limit = self._limits.max_video_bytes
        try:
            await run_blocking(_refuse_non_file, target)
            async with replacing(target) as out:
                async for chunk in iter_bounded(response, limit=limit):
                    await run_blocking(out.write, chunk)
            return
        except BodyTooLarge:
            too_large = f"stopped: more than {limit} bytes (Limits.max_video_bytes)"
            failure = _failed(target, url, too_large)
        except BadEncoding as exc:
            failure = _failed(target, url, f"failed: {exc}")
        except OSError as exc:
            what = f"cannot save {target.name}: {exc.strerror or str(exc) or type(exc).__name__}"
            failure = DownloadError(what, url=url, local_path=target)
        raise failure  # outside the except blocks: no httpx(2) request in its context


def _failed(target: Path, url: str, what: str) -> DownloadError:
    return DownloadError(f"download of {target.name} {what}", url=url)


def _refused(target: Path, url: str, reason: str) -> DownloadError:
    return _failed(target, url, f"refused: {reason} (allow it with download_hosts=[...])")


def _redirect_target(current: httpx.URL, location: str, target: Path, url: str) -> httpx.URL:
    """Where a redirect points, if the policy lets it go there."""
    try:
        following = current.join(location)
    except _http.BadURL:
        following = None
    if following is None or following.scheme not in ("http", "https") or not following.host:
        raise _failed(target, url, f"refused: a redirect to {location[:100]!r}")
    if current.scheme == "https" and following.scheme != "https":
        raise _failed(target, url, "refused: a redirect from https to http")
    return following


def _make_folder(dest: Path) -> Path:
    try:
        dest.mkdir(parents=True, exist_ok=True)
        return dest.resolve()
    except OSError as exc:
        failure = DownloadError(f"cannot create {dest}: {exc.strerror or exc}", local_path=dest)
    raise failure


def _refuse_non_file(target: Path) -> None:
    """Anything but a file at ``target`` (a folder, a link) stays: the download is refused."""
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        kind = "folder" if stat.S_ISDIR(mode) else "link" if stat.S_ISLNK(mode) else "non-file"
        raise DownloadError(f"cannot save {target.name}: a {kind} is in the way", local_path=target)
