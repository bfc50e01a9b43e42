"""The scheduler's downloaders: completed jobs' videos to disk before the job counts as done
(a failed download ends only its job; the task stays in the journal for the next run)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import anyio

from .._errors import APIError, DownloadError
from .._models import FailureClass, Task
from .api import SchedulerClient
from .books import Books
from .jobs import JobRecord


class Downloader:
    """Downloads completed jobs' videos into ``folder`` (named ``file_stem(key)``)."""

    def __init__(
        self,
        books: Books,
        client: SchedulerClient,
        folder: Path,
        file_stem: Callable[[str], str] | None = None,
    ) -> None:
        self._books = books
        self._client = client
        self.folder = folder
        self._file_stem = file_stem
        self._send, self._recv = anyio.create_memory_object_stream[tuple[JobRecord, Task]](0)

    async def queue(self, job: JobRecord, task: Task) -> None:
        """Hand ``job``, whose ``task`` completed, to a downloader."""
        job.succeeded(task)
        await self._send.send((job, task))

    async def run(self) -> None:
        async for job, task in self._recv:
            await self._books.for_job(job, self._download(job, task))

    def close(self) -> None:
        self._send.close()
        self._recv.close()

    async def _download(self, job: JobRecord, task: Task) -> None:
        books = self._books
        try:
            stem = job.key if self._file_stem is None else self._file_stem(job.key)
            files = await self._client.download(task, self.folder, stem=stem)
        except APIError as exc:  # a DownloadError too: the client maps every local failure
            await books.finish(job, task=task, error=exc, failure_class=FailureClass.REQUEST_ERROR)
            return
        if books.journal is not None:
            with anyio.CancelScope(shield=True):
                try:
                    await books.journal.record_files(job.key, files)
                except Exception as exc:
                    books.journal_failed(exc, job)
        await books.finish(job, task=task, files=tuple(files))


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` if needed and check it can be written (blocking)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-check-{os.getpid()}.part"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DownloadError(
            f"download_dir {folder} cannot be written: {exc.strerror or exc}", local_path=folder
        ) from None
