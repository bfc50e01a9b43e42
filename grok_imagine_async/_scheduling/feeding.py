"""Reading a scheduler's input lazily: each item submitted, an invalid one a result of its own.

An invalid item (a blank or invalid prompt, a key already running, an object of another type)
becomes a failed result with an :class:`InvalidRequestError` naming its 1-based position, and
nothing is sent for it; with ``strict`` it stops the batch instead. An error raised by the
input itself always stops the batch: the jobs already submitted are seen through first.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from typing import Any

import anyio

from .._errors import InvalidRequestError, SchedulerClosedError
from .._models import FailureClass, GenerationRequest
from .books import Books
from .jobs import Job, JobQueued, JobRecord, JobSpec


class Feeder:
    """Submits the items of one input, in order, through ``submit``.

    Args:
        books: The scheduler's shared books.
        submit: The scheduler's :meth:`~JobScheduler.submit`.
    """

    def __init__(self, books: Books, submit: Callable[[Any], Awaitable[Job]]) -> None:
        self._books = books
        self._submit = submit

    async def run(self, items: Iterable[Any] | AsyncIterable[Any], strict: bool) -> None:
        """Submit every item, then close the scheduler's input."""
        position = 0
        try:
            if isinstance(items, AsyncIterable):
                async for item in items:
                    position += 1
                    if not await self._feed_one(item, position, strict):
                        return
            else:
                for item in items:
                    position += 1
                    if not await self._feed_one(item, position, strict):
                        return
        except Exception as exc:  # the input itself failed: what was paid for is seen through
            self._books.stop(exc, drain=True)
            return
        self._books.input_closed = True
        self._books.notify()

    async def _feed_one(self, item: Any, position: int, strict: bool) -> bool:
        """Submit one input item; False once the input must not be read further."""
        try:
            await self._submit(item)
        except SchedulerClosedError:
            return False  # stopped (cancel(), a fatal error): read no further
        except (InvalidRequestError, ValueError, TypeError) as exc:
            problems = exc.problems if isinstance(exc, InvalidRequestError) else (str(exc),)
            error = InvalidRequestError(
                f"input item {position}: {exc}", problems=problems, item=position
            )
            if strict:
                self._books.stop(error, drain=True)
                return False
            self._reject(item, position, error)
        return True

    def _reject(self, item: Any, position: int, error: InvalidRequestError) -> None:
        """An input item that cannot be a job ends as a failed result; nothing is sent."""
        key = f"invalid-{position}"
        if isinstance(item, JobSpec):
            request, key = item.request, item.key or key
        elif isinstance(item, GenerationRequest):
            request = item
        else:  # what was asked for, unvalidated, so the result can say it
            prompt = item if isinstance(item, str) else repr(item)
            request = GenerationRequest.model_construct(prompt=prompt)
        books = self._books
        job = JobRecord(key, request, books.tally)
        books.emit(JobQueued(key=key, at=anyio.current_time()))
        books.conclude(
            job, books.result(job, error=error, failure_class=FailureClass.INVALID_INPUT)
        )
