"""What stops a batch and what only ends one job; nothing paid for is ever lost silently."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import anyio
import httpx
import pytest

from grok_imagine_async import (
    APIResponseValidationError,
    AsyncGrokImagine,
    AuthenticationError,
    DownloadError,
    FailureClass,
    GenerationRequest,
    InvalidRequestError,
    JobEvent,
    JobResult,
    JobScheduler,
    JobSpec,
    JobSubmitted,
    JournalError,
)
from grok_imagine_async._errors import JobTakenOver
from grok_imagine_async._journal.memory import MemoryJobStore
from grok_imagine_async.abc import StoreRecord, StoreState
from grok_imagine_async.batch import SchedulerConfig
from grok_imagine_async.testing import Emulator

TOKEN = "errors-token"
# The plugin's emulator and clients (for the tests that ask for them), at the real service's
# times on the suite's virtual clock.
pytestmark = pytest.mark.grok_emulator(tokens={TOKEN: "pro"}, seed=5, time_scale=1)


class FailingJournal(MemoryJobStore):
    """An in-memory JobStore whose writes start failing (as on a full disk) when told to."""

    def __init__(self, *, fail_after_submitted: int) -> None:
        super().__init__()
        self.saved: dict[str, StoreRecord] = {}
        self.fail_after_submitted = fail_after_submitted
        self.submitted = 0
        self.failing = False

    def _write(self) -> None:
        if self.failing:
            raise OSError(28, "No space left on device")

    async def load(self, key: str) -> StoreRecord | None:
        return self.saved.get(key)

    async def record_intent(
        self, key: str, request: GenerationRequest, attempt: int, *, unbilled: int = 0
    ) -> None:
        self._write()
        self.saved[key] = StoreRecord(key, request, StoreState.INTENT, attempts=attempt)

    async def record_submitted(self, key: str, task_id: str) -> None:
        self.submitted += 1
        self.failing = self.failing or self.submitted > self.fail_after_submitted
        self._write()
        old = self.saved[key]
        self.saved[key] = StoreRecord(
            key, old.request, StoreState.SUBMITTED, task_id=task_id, attempts=old.attempts
        )

    async def record_finished(self, result: JobResult) -> None:
        self._write()
        state = StoreState.COMPLETED if result.ok else StoreState.FAILED
        self.saved[result.key] = StoreRecord(
            result.key, result.request, state, task_id=result.task_id, credits=result.credits
        )

    async def record_files(self, key: str, files: Sequence[Path]) -> None:
        self._write()

    async def aclose(self) -> None:
        pass


@pytest.mark.anyio
async def test_an_invalid_item_is_a_failed_result_of_its_own(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator
) -> None:
    async with grok_client.generate_many(["fine", "   ", 42, "also fine"]) as results:
        by_prompt = {r.request.prompt: r async for r in results}
    assert by_prompt["fine"].ok and by_prompt["also fine"].ok
    for prompt, position in (("   ", 2), ("42", 3)):
        bad = by_prompt[prompt]
        assert isinstance(bad.error, InvalidRequestError)
        assert bad.error.item == position
        assert str(bad.error).startswith(f"input item {position}: ")
        assert bad.failure_class is FailureClass.INVALID_INPUT
        assert (bad.attempts, bad.credits, bad.task) == (0, 0, None)
    assert grok_emulator.statistics().tasks_created == 2
    assert "   " not in grok_emulator.statistics().posts_per_prompt


@pytest.mark.anyio
async def test_strict_stops_at_a_bad_item_and_still_reports_every_paid_task(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator
) -> None:

    async def items() -> AsyncIterator[str]:
        yield "paid [duration:40]"
        await anyio.sleep(5)  # its POST goes out before the bad item is read
        yield "   "
        yield "never read"

    seen: list[JobResult] = []

    async def run() -> None:
        async with grok_client.generate_many(items(), strict=True) as results:
            seen.extend([r async for r in results])

    with pytest.raises(InvalidRequestError) as caught:
        await run()
    assert caught.value.item == 2
    assert [(r.request.prompt, r.ok) for r in seen] == [("paid [duration:40]", True)]
    assert [r.task_id for r in seen] == grok_emulator.task_ids()  # polled to its end, not abandoned
    assert grok_emulator.statistics().posts_per_prompt.keys() == {"paid [duration:40]"}
    assert dict(caught.value.pending_tasks) == {}


@pytest.mark.anyio
async def test_an_error_of_the_input_itself_stops_the_batch_after_the_paid_jobs(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator
) -> None:

    async def items() -> AsyncIterator[str]:
        yield "first [duration:30]"
        await anyio.sleep(5)
        raise OSError("the input file vanished")

    with pytest.raises(OSError, match="vanished"):
        async with grok_client.generate_many(items()) as results:
            seen = [r async for r in results]
    assert [r.ok for r in seen] == [True]
    assert grok_emulator.statistics().tasks_created == 1


@pytest.mark.anyio
async def test_an_unwritable_download_dir_costs_nothing(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    folder = blocker / "videos"
    with pytest.raises(DownloadError) as caught:
        async with grok_client.generate_many(["a", "b"], download_dir=folder) as results:
            [r async for r in results]
    assert caught.value.local_path == folder
    # It names the folder and what is in its way, as the CLI's check of its folders does.
    assert str(caught.value).startswith(f"cannot create the download_dir {folder}: ")
    assert str(caught.value).endswith(f"({blocker} is a file)")
    assert grok_emulator.statistics().credits_consumed == 0
    assert grok_emulator.statistics().requests_total == 0


@pytest.mark.anyio
async def test_the_download_dir_is_created_before_anything_is_sent(
    grok_client: AsyncGrokImagine, tmp_path: Path
) -> None:
    folder = tmp_path / "new" / "videos"
    async with grok_client.generate_many([JobSpec(GenerationRequest(prompt="a"), "a")],
                                    download_dir=folder) as results:  # fmt: skip
        [result] = [r async for r in results]
    assert result.ok
    assert result.files == (folder / "a_1.mp4", folder / "a_2.mp4")


@pytest.mark.anyio
async def test_a_local_download_failure_is_a_failed_result_not_a_crash(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator, tmp_path: Path
) -> None:
    folder = tmp_path / "videos"
    results: list[JobResult] = []
    async with JobScheduler(grok_client, download_dir=folder) as scheduler:
        folder.rmdir()
        folder.write_text("the folder became a file")  # every write in it now fails
        for prompt in ("one", "two"):
            await scheduler.submit(prompt)
        scheduler.close_input()
        results = [r async for r in scheduler.results()]
    assert len(results) == 2
    for result in results:
        assert isinstance(result.error, DownloadError)
        assert str(folder) in str(result.error)  # it names what could not be written
        assert "\n" not in str(result.error)
        assert result.task_id is not None and result.credits == 40  # paid: its task id is kept
    assert grok_emulator.statistics().tasks_created == 2


@pytest.mark.anyio
async def test_a_journal_failing_mid_run_raises_plainly_with_every_known_task_id(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator
) -> None:
    journal = FailingJournal(fail_after_submitted=3)
    prompts = [f"clip {i} [duration:{20 + i}]" for i in range(8)]
    seen: list[JobResult] = []

    async def run() -> None:
        async with grok_client.generate_many(
            prompts, SchedulerConfig(max_in_flight=4), journal=journal
        ) as results:
            seen.extend([r async for r in results])

    with pytest.raises(JournalError) as caught:
        await run()
    error = caught.value
    created = grok_emulator.task_ids()
    assert len(created) >= 4  # the failing write came after the 4th task was created
    paid = {r.key: r.task_id for r in seen if r.task_id is not None}
    assert set(paid.values()) == set(created)  # every paid job was polled to its end
    assert all(r.ok for r in seen if r.task_id is not None)
    assert sum(r.credits for r in seen) == grok_emulator.statistics().credits_consumed
    recorded = {k: r.task_id for k, r in journal.saved.items() if r.task_id is not None}
    # Whatever the journal did not keep is in the error: no task id is lost.
    assert {**recorded, **error.pending_tasks} == paid
    assert set(paid) - set(recorded) <= set(error.pending_tasks)
    assert len(recorded) == 3  # what the journal kept before the disk filled
    ended = {k for k, r in journal.saved.items() if r.state is StoreState.COMPLETED}
    assert set(error.pending_tasks) == set(paid) - ended  # ended, but not recorded as ended
    assert "No space left" in str(error)


@pytest.mark.anyio
async def test_a_failed_download_resumes_on_the_next_run_without_paying(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator, tmp_path: Path
) -> None:
    folder, journal = tmp_path / "videos", tmp_path / "run.db"
    async with JobScheduler(grok_client, download_dir=folder, journal=journal) as scheduler:
        folder.rmdir()
        folder.write_text("the folder became a file")
        await scheduler.submit("kept")
        scheduler.close_input()
        [first] = [r async for r in scheduler.results()]
    assert isinstance(first.error, DownloadError)
    folder.unlink()  # the disk has room again
    async with grok_client.generate_many(["kept"], download_dir=folder, journal=journal) as results:
        [second] = [r async for r in results]
    assert second.ok
    assert second.task_id == first.task_id
    assert [f.exists() for f in second.files] == [True, True]
    assert grok_emulator.statistics().tasks_created == 1  # downloaded again, not paid again


class RevocableTransport(httpx.AsyncBaseTransport):
    """The emulator's transport, answering 401 to everything once ``revoked`` is set."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.revoked = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.revoked:
            body = {"code": 401, "message": "Invalid API key", "error": "UNAUTHORIZED"}
            return httpx.Response(401, json=body)
        return await self.inner.handle_async_request(request)


@pytest.mark.anyio
async def test_a_token_revoked_mid_run_stops_at_once_naming_every_paid_task(
    grok_client_factory: Callable[..., AsyncGrokImagine],
    grok_emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = RevocableTransport(grok_emulator.transport())
    http = httpx.AsyncClient(transport=transport, base_url="http://emulator.local")
    client = grok_client_factory(http_client=http)
    submitted: dict[str, str] = {}

    def on_event(event: JobEvent) -> None:
        if isinstance(event, JobSubmitted):
            submitted[event.key] = event.task_id
            if len(submitted) == 3:
                transport.revoked = True  # the token is revoked while all three generate

    prompts = [f"long {i} [duration:600]" for i in range(3)]

    async def run() -> None:
        async with client.generate_many(prompts, on_event=on_event) as results:
            [r async for r in results]

    with pytest.raises(AuthenticationError) as caught:
        await run()
    assert dict(caught.value.pending_tasks) == submitted
    assert set(submitted.values()) == set(grok_emulator.task_ids())
    assert all(task_id in caplog.text for task_id in submitted.values())


class BrokenTransport(httpx.AsyncBaseTransport):
    """The emulator's transport, raising an exception of no known kind on one path."""

    def __init__(self, inner: httpx.AsyncBaseTransport, path: str) -> None:
        self.inner = inner
        self.path = path

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == self.path:
            raise OverflowError("a number too large for anything")
        return await self.inner.handle_async_request(request)


def broken_http(emulator: Emulator, path: str) -> httpx.AsyncClient:
    transport = BrokenTransport(emulator.transport(), path)
    return httpx.AsyncClient(transport=transport, base_url="http://emulator.local")


@pytest.mark.anyio
async def test_an_unexpected_error_in_a_post_is_a_possibly_paid_result(
    grok_client_factory: Callable[..., AsyncGrokImagine], grok_emulator: Emulator
) -> None:
    client = grok_client_factory(http_client=broken_http(grok_emulator, "/v1/generate"))
    async with client.generate_many(["a", "b"]) as results:
        got = [r async for r in results]
    assert [r.failure_class for r in got] == [FailureClass.AMBIGUOUS_SUBMIT] * 2
    assert all("OverflowError" in str(r.error) for r in got)
    assert [r.credits for r in got] == [40, 40]  # it may have been paid: counted so


@pytest.mark.anyio
async def test_an_unexpected_error_in_a_poll_ends_only_that_job(
    grok_client_factory: Callable[..., AsyncGrokImagine], grok_emulator: Emulator
) -> None:
    client = grok_client_factory(http_client=broken_http(grok_emulator, "/v1/status"))
    async with client.generate_many(["a"]) as results:
        [result] = [r async for r in results]
    assert result.failure_class is FailureClass.REQUEST_ERROR
    assert "unexpected OverflowError" in str(result.error)
    assert grok_emulator.statistics().tasks_created == 1  # paid once; the batch went on to its end


@pytest.mark.anyio
async def test_a_hook_that_raises_is_logged_and_ends_nothing(
    grok_client: AsyncGrokImagine,
    caplog: pytest.LogCaptureFixture,
) -> None:

    def on_event(event: JobEvent) -> None:
        raise RuntimeError("a progress display's bug")

    async with grok_client.generate_many(["a", "b"], on_event=on_event) as results:
        got = [r async for r in results]
    assert [r.ok for r in got] == [True, True]
    assert "the on_event hook raised" in caplog.text


@pytest.mark.anyio
async def test_a_status_that_never_reads_ends_its_job_instead_of_polling_forever() -> None:
    # A broken or hostile server: the POST works, every status answer is unreadable. The job
    # must end as a failed result with the typed error (paid once), not be polled forever.
    posts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        if request.method == "POST":
            posts += 1
            body = {"code": 200, "message": "success", "data": {"task_id": "task_x"}}
            return httpx.Response(200, json=body)
        return httpx.Response(200, json={"code": "inf", "message": "success", "data": {}})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://emu.test")
    async with AsyncGrokImagine(api_key=TOKEN, http_client=http, plan="pro") as client:
        with anyio.fail_after(3600):  # virtual time: the bound, not a wait
            async with client.generate_many(["an unreadable status"]) as stream:
                results = [r async for r in stream]
    [result] = results
    assert not result.ok
    assert result.failure_class is FailureClass.REQUEST_ERROR
    assert isinstance(result.error, APIResponseValidationError)
    assert posts == 1
    assert result.task is None and result.task_id == "task_x"  # paid for: its id is kept


class TakenOverJournal(FailingJournal):
    """A shared store whose lease on ``taken`` ran out: another process adopted that job."""

    def __init__(self, taken: str) -> None:
        super().__init__(fail_after_submitted=10**6)
        self.taken = taken

    async def record_intent(
        self, key: str, request: GenerationRequest, attempt: int, *, unbilled: int = 0
    ) -> None:
        if key == self.taken:
            raise JobTakenOver(f"job {key} is owned by another process now; not sending it")
        await super().record_intent(key, request, attempt, unbilled=unbilled)


@pytest.mark.anyio
async def test_a_job_another_process_took_over_is_not_sent_and_the_batch_goes_on(
    grok_client: AsyncGrokImagine, grok_emulator: Emulator
) -> None:
    journal = TakenOverJournal("b")
    async with grok_client.generate_many(
        [JobSpec(GenerationRequest(prompt=f"clip {key}"), key) for key in "abc"], journal=journal
    ) as results:
        seen = {r.key: r async for r in results}
        submissions = results.statistics().submissions
    assert {key for key, r in seen.items() if r.ok} == {"a", "c"}, seen  # the batch went on
    assert submissions == 2  # the POST refused before it left is not counted as sent
    taken = seen["b"]
    assert isinstance(taken.error, JobTakenOver)
    assert taken.failure_class is FailureClass.NOT_SUBMITTED and taken.credits == 0
    assert "b" not in journal.saved  # the other process records its end, not this one
    assert grok_emulator.statistics().tasks_created == 2  # never paid here
