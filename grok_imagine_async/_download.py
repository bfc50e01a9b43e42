"""Naming result videos: safe file names and download plans (pure; fetching is in ``_fetch``)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from ._models import Task
from ._protocol import is_fetchable_url

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 120
# Names Windows reserves in every folder, whatever the extension ("CON.mp4" is the console).
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(10)}
)


def safe_name(text: str, *, default: str = "video") -> str:
    """A file name made from ``text`` that cannot leave its folder or hide itself.

    Keeps letters, digits, ``.``, ``_`` and ``-``; replaces anything else with ``_``; strips
    leading dots (no hidden files, no ``..``); trims to 120 characters; adds ``_`` to names
    Windows reserves (``CON``, ``NUL``, ``LPT1``...).

    Example:
        >>> safe_name("../../etc/passwd")
        'etc_passwd'
        >>> safe_name("con")
        'con_'
    """
    cleaned = _UNSAFE.sub("_", text).strip("._-")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)[:_MAX_NAME]
    base, dot, rest = cleaned.partition(".")
    if base.upper() in _RESERVED:
        cleaned = f"{base}_{dot}{rest}"
    return cleaned or default


def distinct_stem(stem: str) -> str:
    """A file stem for ``stem`` that no other stem can share: :func:`safe_name`, with a short
    digest of ``stem`` itself appended (``a/b`` -> ``a_b-<8 hex digits>``)."""
    digest = hashlib.sha256(stem.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{safe_name(stem, default='task')}-{digest}"


def name_from_url(url: str, *, default: str = "video.mp4") -> str:
    """A safe file name from the last path segment of ``url`` (``.mp4`` if it has none)."""
    segment = PurePosixPath(unquote(urlsplit(url).path)).name
    name = safe_name(segment, default="")
    if not name:
        return default
    return name if "." in name else f"{name}.mp4"


def resolve_inside(dest: Path, name: str) -> Path:
    """``dest / name`` (``dest`` resolved), refusing a ``name`` that is not a plain file name.

    The name itself is not resolved: a link sitting at it is the writer's to refuse, not
    something to follow out of ``dest``.

    Raises:
        ValueError: If ``name`` holds a separator or is ``.``/``..`` (it cannot after
            :func:`safe_name`, so this is a second line of defence).
    """
    root = dest.resolve()
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ValueError(f"refusing to write {name!r} outside {root}")
    return root / name


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
        if not url.lower().startswith(("http://", "https://")) or not is_fetchable_url(url):
            raise ValueError(f"refusing to download a non-http(s) URL: {url[:200]!r}")
    return list(zip(urls, names, strict=True))


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
