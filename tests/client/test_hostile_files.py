"""Issue #13, continued: journal replays, redirects, temporary files, terminal text, host policy."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from fakes import TOKEN
from hostile import answer, make_client

from grok_imagine_async import (
    GenerationRequest,
    GrokImagineError,
    JobSpec,
    Task,
    TaskStatus,
)
from grok_imagine_async._http import lib as httpx  # httpx2 if installed, else httpx


def done(*urls: str, task_id: str = "t1") -> Task:
    return Task(task_id=task_id, status=TaskStatus.COMPLETED, raw_status="completed", videos=urls)


# -- 7. a journal replays a job only for the same request -----------------------------------


class PromptAPI:
    """POST makes a task named after its prompt; GET says it completed with a matching URL."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            prompt = json.loads(request.content)["prompt"]
            self.prompts.append(prompt)
            return answer({"task_id": f"task-{prompt}"})
        task_id = request.url.params["task_id"]
        return answer(
            {
                "task_id": task_id,
                "status": "completed",
                "response": [f"https://cdn.test/{task_id}.mp4"],
            }
        )


async def _run(api: PromptAPI, prompt: str, journal: Path) -> Any:
    client = make_client(api)
    spec = JobSpec(GenerationRequest(prompt=prompt), key="job1")
    async with client.generate_many([spec], journal=journal) as results:
        results_seen = [result async for result in results]
    assert len(results_seen) == 1
    return results_seen[0]


@pytest.mark.anyio
async def test_a_changed_request_is_not_answered_from_the_journal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api = PromptAPI()
    first = await _run(api, "old", tmp_path / "run.db")
    assert first.task.videos == ("https://cdn.test/task-old.mp4",)
    with caplog.at_level(logging.WARNING, logger="grok_imagine_async"):
        second = await _run(api, "new", tmp_path / "run.db")
    assert api.prompts == ["old", "new"]
    assert second.task.videos == ("https://cdn.test/task-new.mp4",)
    assert any("job1" in r.getMessage() for r in caplog.records)
    again = await _run(api, "new", tmp_path / "run.db")  # the same request: replayed, not paid
    assert again.from_journal and api.prompts == ["old", "new"]


# -- 8. downloads follow redirects, safely ---------------------------------------------------


class RedirectingCDN:
    def __init__(self, location: str, *, hops: int = 1) -> None:
        self.location, self.hops = location, hops
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.startswith("/hop") and len(self.requests) <= self.hops:
            return httpx.Response(302, headers={"location": self.location})
        return httpx.Response(200, content=b"final video")


@pytest.mark.anyio
async def test_a_same_origin_redirect_is_followed_without_the_token(tmp_path: Path) -> None:
    cdn = RedirectingCDN("/files/v.mp4")
    http = httpx.AsyncClient(
        transport=httpx.MockTransport(cdn), headers={"Authorization": f"Bearer {TOKEN}"}
    )
    paths = await make_client(cdn, http=http).download(done("https://cdn.test/hop/v.mp4"), tmp_path)
    assert paths[0].read_bytes() == b"final video"
    assert [r.url.path for r in cdn.requests] == ["/hop/v.mp4", "/files/v.mp4"]
    assert all("authorization" not in r.headers for r in cdn.requests)


@pytest.mark.anyio
async def test_a_redirect_from_https_to_http_is_refused(tmp_path: Path) -> None:
    cdn = RedirectingCDN("http://cdn.test/files/v.mp4")
    with pytest.raises(GrokImagineError, match="https"):
        await make_client(cdn).download(done("https://cdn.test/hop/v.mp4"), tmp_path)
    assert len(cdn.requests) == 1 and list(tmp_path.iterdir()) == []


@pytest.mark.anyio
async def test_redirects_are_bounded(tmp_path: Path) -> None:
    cdn = RedirectingCDN("/hop/again", hops=1000)
    with pytest.raises(GrokImagineError, match="redirect"):
        await make_client(cdn).download(done("https://cdn.test/hop/v.mp4"), tmp_path)
    assert len(cdn.requests) == 6  # the first request and 5 redirects


# -- 9. temporary files cannot be planted ---------------------------------------------------


@pytest.mark.anyio
async def test_the_manifest_temp_file_is_not_opened_through_a_planted_link(tmp_path: Path) -> None:
    from grok_imagine_async._cli.batch import write_manifest
    from grok_imagine_async._journal.sqlite import SqliteJobStore
    from grok_imagine_async._scheduling.inputs import JobFile

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n")
    jobs = JobFile(prompts)
    keys = frozenset(spec.key for spec in jobs)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".manifest.jsonl.part").symlink_to(victim)
    async with SqliteJobStore(tmp_path / "run.db") as journal:
        outcome = await write_manifest(journal, jobs, keys, out)
    assert victim.read_text() == "keep me"
    assert outcome.manifest is not None and "a cat" in outcome.manifest.read_text()


@pytest.mark.anyio
async def test_a_failed_manifest_write_keeps_the_old_manifest_and_no_partial(
    tmp_path: Path,
) -> None:
    from grok_imagine_async._cli.batch import write_manifest
    from grok_imagine_async._journal.sqlite import SqliteJobStore
    from grok_imagine_async._scheduling.inputs import JobFile

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n")
    jobs = JobFile(prompts)
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.jsonl").write_text("old\n")

    async def broken() -> Any:
        raise OSError("disk gone")
        yield

    async with SqliteJobStore(tmp_path / "run.db") as journal:
        journal.records = broken  # type: ignore[method-assign]
        with pytest.raises(OSError, match="disk gone"):
            await write_manifest(journal, jobs, frozenset(spec.key for spec in jobs), out)
    assert [p.name for p in out.iterdir()] == ["manifest.jsonl"]
    assert (out / "manifest.jsonl").read_text() == "old\n"


def test_temporary_files_are_created_exclusively(tmp_path: Path) -> None:
    from grok_imagine_async._files import create_exclusive

    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (tmp_path / "link").symlink_to(victim)
    for taken in ("link", "victim"):
        with pytest.raises(FileExistsError):
            create_exclusive(tmp_path / taken)
    assert victim.read_text() == "keep me"


# -- 10. server text is escaped before it reaches the terminal ----------------------------


def test_server_text_in_the_summary_is_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    from grok_imagine_async._cli.batch import BatchOutcome, print_summary

    outcome = BatchOutcome()
    outcome.samples.append(("job\x1b[1m", "failed", "boom\x1b[2J\x1b]0;pwned\x07\r"))
    print_summary(outcome)
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "\x07" not in printed and "\r" not in printed
    assert "boom" in printed


def test_server_text_in_a_task_description_is_escaped() -> None:
    from grok_imagine_async._cli.task import describe

    task = Task(
        task_id="t\x1b[31m",
        status=TaskStatus.FAILED,
        raw_status="fail\x9b2J",
        error_message="bad\x1b[2J",
        videos=("https://cdn.test/\x1b[0m",),
    )
    text = describe(task)
    assert "\x1b" not in text and "\x9b" not in text and "bad" in text


# -- 11. result URLs pass a host policy ----------------------------------------------------


class CDN:
    def __init__(self) -> None:
        self.hosts: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.hosts.append(request.url.host)
        return httpx.Response(200, content=b"video")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/v.mp4",
        "http://10.1.2.3/v.mp4",
        "http://192.168.0.1/v.mp4",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/v.mp4",
        "http://[::ffff:127.0.0.1]/v.mp4",
        "http://localhost/v.mp4",
        "http://0.0.0.0/v.mp4",
    ],
)
async def test_local_addresses_are_refused_by_default(tmp_path: Path, url: str) -> None:
    cdn = CDN()
    with pytest.raises(GrokImagineError, match="download_hosts"):
        await make_client(cdn).download(done(url), tmp_path)
    assert cdn.hosts == []


@pytest.mark.anyio
async def test_the_api_host_and_allowed_hosts_may_serve_videos(tmp_path: Path) -> None:
    cdn = CDN()
    local_api = make_client(cdn, base_url="http://127.0.0.1:8000")
    await local_api.download(done("http://127.0.0.1:8000/videos/v.mp4"), tmp_path / "a")
    allowing = make_client(cdn, download_hosts=["10.1.2.3", "LocalHost"])
    await allowing.download(done("http://10.1.2.3/v.mp4", "http://localhost/w.mp4"), tmp_path / "b")
    assert cdn.hosts == ["127.0.0.1", "10.1.2.3", "localhost"]


# -- 12. minor ---------------------------------------------------------------------------


def test_unknown_statuses_are_remembered_within_a_bound(caplog: pytest.LogCaptureFixture) -> None:
    from grok_imagine_async import _protocol

    with caplog.at_level(logging.WARNING, logger="grok_imagine_async"):
        for i in range(5000):
            _protocol.normalize_status(f"hostile-status-{i}")
        _protocol.normalize_status("hostile-status-4999")  # recent: still remembered
    assert _protocol._warn_unknown.cache_info().currsize <= _protocol.MAX_UNKNOWN_REMEMBERED
    assert len(caplog.records) == 5000  # each new one logged, the repeat not


@pytest.mark.parametrize("name", ["CON", "con", "Lpt1", "NUL", "com9", "aux"])
def test_safe_name_avoids_windows_reserved_names(name: str) -> None:
    from grok_imagine_async._download import safe_name

    stem = safe_name(name).split(".")[0]
    assert stem.upper() not in {"CON", "PRN", "AUX", "NUL"} | {f"COM{i}" for i in range(10)} | {
        f"LPT{i}" for i in range(10)
    }
