"""Downloads: streamed, atomic, never outside the destination, never carrying the token."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from fakes import TOKEN, RecordingLimiter
from hypothesis import given
from hypothesis import strategies as st

from grok_imagine_async import (
    APIError,
    AsyncGrokImagine,
    ConfigurationError,
    DownloadError,
    RetryPolicy,
    Task,
    TaskStatus,
)
from grok_imagine_async._download import plan_download, safe_name
from grok_imagine_async._http import lib as httpx  # httpx2 if installed, else httpx

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 1000
URL = "https://cdn.test/v.mp4"


class CDN:
    def __init__(self, *, fail_first: int = 0, status: int = 200) -> None:
        self.fail_first = fail_first
        self.status = status
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.fail_first:
            self.fail_first -= 1
            raise httpx.ReadError("reset")
        if self.status != 200:
            return httpx.Response(self.status)
        return httpx.Response(200, content=VIDEO, headers={"content-type": "video/mp4"})


def client_for(cdn: CDN) -> AsyncGrokImagine:
    return AsyncGrokImagine(
        api_key=TOKEN,
        base_url="http://api.test",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(cdn)),
        limiter=RecordingLimiter(),
        retry=RetryPolicy(attempts=2, wait_initial=0.1),
    )


def task(task_id: str, *urls: str) -> Task:
    return Task(task_id=task_id, status=TaskStatus.COMPLETED, raw_status="completed", videos=urls)


@pytest.mark.anyio
async def test_downloads_every_video_of_a_task(tmp_path: Path) -> None:
    cdn = CDN()
    paths = await client_for(cdn).download(
        task("task_1", "https://cdn.test/a.mp4", "https://cdn.test/b.mp4"), tmp_path / "out"
    )
    assert [p.name for p in paths] == ["task_1_1.mp4", "task_1_2.mp4"]
    assert all(p.read_bytes() == VIDEO for p in paths)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["task_1_1.mp4", "task_1_2.mp4"]
    assert all("authorization" not in r.headers for r in cdn.requests)


@pytest.mark.anyio
async def test_a_hostile_task_id_stays_inside_dest(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    [path] = await client_for(CDN()).download(task("../../../etc/passwd", URL), dest)
    assert path.parent == dest.resolve()
    assert path.read_bytes() == VIDEO
    assert not (tmp_path / "etc").exists()


@pytest.mark.anyio
async def test_transient_failures_are_retried(tmp_path: Path) -> None:
    cdn = CDN(fail_first=2)
    [path] = await client_for(cdn).download(task("t", URL), tmp_path)
    assert path.read_bytes() == VIDEO
    assert len(cdn.requests) == 3


@pytest.mark.anyio
async def test_failure_leaves_no_partial_file(tmp_path: Path) -> None:
    with pytest.raises(APIError, match="HTTP 403"):
        await client_for(CDN(status=403)).download(task("t", URL), tmp_path)
    with pytest.raises(APIError):
        await client_for(CDN(fail_first=10)).download(task("t", URL), tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.anyio
async def test_a_local_failure_names_the_path_it_could_not_write(tmp_path: Path) -> None:
    (tmp_path / "t1.mp4").mkdir()  # a folder where the video would go
    with pytest.raises(DownloadError, match="a folder is in the way") as caught:
        await client_for(CDN()).download(task("t1", "https://cdn.test/a.mp4"), tmp_path)
    assert caught.value.local_path == tmp_path.resolve() / "t1.mp4"
    (tmp_path / "file").write_bytes(b"")  # a file where the folder would go
    with pytest.raises(DownloadError, match="cannot create") as caught:
        await client_for(CDN()).download(task("t2", "https://cdn.test/a.mp4"), tmp_path / "file")
    assert caught.value.local_path == tmp_path / "file"


@pytest.mark.anyio
async def test_a_target_that_cannot_be_inspected_is_a_download_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a folder the user may not search gives (the suite runs as root, so it is staged).
    real_lstat = os.lstat

    def lstat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if str(path).endswith("t.mp4"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)
    with pytest.raises(DownloadError, match=r"cannot save t\.mp4: Permission denied") as caught:
        await client_for(CDN()).download(task("t", URL), tmp_path)
    assert caught.value.local_path == tmp_path.resolve() / "t.mp4"


@pytest.mark.anyio
async def test_refuses_non_http_and_empty(tmp_path: Path) -> None:
    client = client_for(CDN())
    with pytest.raises(ConfigurationError, match="non-http"):
        await client.download(task("t", "file:///etc/passwd"), tmp_path)
    with pytest.raises(ConfigurationError, match="nothing to download"):
        await client.download(task("t"), tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("../../etc/passwd", "etc_passwd"),
        ("..", "video"),
        (".hidden", "hidden"),
        ("a b/c", "a_b_c"),
        ("con", "con_"),
        ("LPT1.mp4", "LPT1_.mp4"),
    ],
)
def test_safe_name(text: str, expected: str) -> None:
    assert safe_name(text) == expected


@given(st.text())
def test_any_name_stays_inside_its_folder(text: str) -> None:
    name = safe_name(text)
    assert name not in ("", ".", "..") and not set(name) & {"/", "\\", "\x00"}
    assert (Path("/tmp/grok-dest-check") / name).parent == Path("/tmp/grok-dest-check")


def test_plan_download_names_a_tasks_files_after_its_stem() -> None:
    one = task("t/1", "https://cdn.example/a.mp4")
    two = task("t2", "https://cdn.example/a.mp4", "https://cdn.example/b.mp4")
    assert plan_download(one) == [("https://cdn.example/a.mp4", "t_1.mp4")]
    assert [name for _, name in plan_download(two, stem="my job")] == [
        "my_job_1.mp4",
        "my_job_2.mp4",
    ]


def test_plan_download_rejects_bad_urls() -> None:
    with pytest.raises(ConfigurationError, match="non-http"):
        plan_download(task("t", "ftp://a.example/v.mp4"))
    with pytest.raises(ConfigurationError, match="nothing to download"):
        plan_download(task("t"))
