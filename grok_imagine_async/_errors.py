"""The exception tree, rooted in :class:`GrokImagineError`; no message holds the API token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._models import FailureClass, GenerationRequest, Task
from ._models import GrokImagineError as GrokImagineError
from ._models import InvalidRequestError as InvalidRequestError


class ConfigurationError(GrokImagineError, ValueError):
    """Raised when an argument or setting is bad, before anything is sent (e.g. no API key, or
    ``get_task("")``); an argument of the wrong type raises ``TypeError``."""


class InputError(GrokImagineError, ValueError):
    """Raised when a batch input file cannot be read (nothing submitted), as ``file:line: ...``.

    Attributes:
        line: The 1-based line of the problem, or None for the file as a whole.
        problem: What is wrong, without the location.
        problems: Every problem a check gathered (``JobFile.check(max_problems=...)``), this first.
        problem_count: How many problems the check found in all.
    """

    def __init__(self, path: Path, line: int | None, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}" if line is not None else f"{path}: {problem}")
        self.path, self.line, self.problem = path, line, problem
        self.problems: tuple[InputError, ...] = (self,)
        self.problem_count = 1


class JournalError(GrokImagineError):
    """Raised when a journal cannot be opened, read or written (not a journal, too new,
    corrupt, locked, a full disk); ``path``: its file, if any."""

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class JobTakenOver(JournalError):
    """Raised when a shared job store's ``record_intent`` finds that another process owns the
    job now (this one's lease ran out and the job was adopted): that process sends it, this
    one must not. A scheduler ends the job here unsent and goes on; the batch does not stop."""


class APIError(GrokImagineError):
    """Raised when a request to the API fails; ``path``: its API path (no credentials)."""

    def __init__(self, message: str, *, method: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.message, self.method, self.path = message, method, path


class APIStatusError(APIError):
    """Raised when the server answers with an error: a non-2xx status or a body ``code`` != 200.

    Attributes:
        status_code: The body's ``code`` if it carries one, else the HTTP status.
        http_status: The HTTP status (200 when the error was only in the body).
        error_code: The body's ``error`` field, e.g. ``"INVALID_REQUEST"``, if any.
        body: The decoded JSON body, or the raw text if it was not JSON.
        retry_after: Seconds the server asked us to wait (Retry-After / X-RateLimit-Reset).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        http_status: int | None = None,
        error_code: str | None = None,
        body: Any = None,
        retry_after: float | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message, method=method, path=path)
        self.status_code = status_code
        self.http_status = status_code if http_status is None else http_status
        self.error_code, self.body, self.retry_after = error_code, body, retry_after

    def __str__(self) -> str:
        code = f" {self.error_code}" if self.error_code else ""
        return f"{self.status_code}{code}: {self.message}"


class BadRequestError(APIStatusError):
    """Raised on a 400: the server rejected the request as invalid."""


class AuthenticationError(APIStatusError):
    """Raised on a 401: the API token is missing, wrong or revoked."""


class NotFoundError(APIStatusError):
    """Raised on a 404, e.g. a status request for a task id the server does not know."""


class RateLimitError(APIStatusError):
    """Raised on a 429 after retries ran out; ``retry_after`` says when to try again."""


class ServerError(APIStatusError):
    """Raised on a 5xx answer (or a body ``code`` of 5xx) after retries ran out."""


class APIResponseValidationError(APIError):
    """Raised when a successful answer cannot be read (not JSON, or without a required field);
    ``body`` holds its text (truncated)."""

    def __init__(
        self, message: str, *, body: str = "", method: str | None = None, path: str | None = None
    ) -> None:
        super().__init__(message, method=method, path=path)
        self.body = body


class APIConnectionError(APIError):
    """Raised when no answer arrived: the connection failed, broke, or the request timed out."""


class APITimeoutError(APIConnectionError):
    """Raised when a request timed out."""


class AmbiguousSubmitError(APIError):
    """Raised when a ``POST /v1/generate`` was sent but its answer was lost or unreadable: a
    (paid) task may exist, so it is not resent. ``request``: the request sent."""

    def __init__(
        self, message: str, *, request: GenerationRequest | None = None, path: str | None = None
    ) -> None:
        super().__init__(message, method="POST", path=path)
        self.request = request


class TaskFailedError(GrokImagineError):
    """Raised when a task failed (or completed with no video); holds ``task``, ``failure_class``."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.failure_class: FailureClass = task.failure_class or FailureClass.UNKNOWN
        reason = task.error_message or f"status {task.raw_status!r}"
        super().__init__(f"task {task.task_id} failed ({self.failure_class.value}): {reason}")


class WaitTimeoutError(GrokImagineError, TimeoutError):
    """Raised when a wait's ``timeout=`` passed first; the task goes on (the API cannot cancel
    one), and ``client.wait(task_id)`` (or ``job.wait()``) picks it up later.

    Attributes:
        task_id: The task waited on; None only for a scheduler's job not submitted yet.
        last_status: The last :class:`TaskStatus` (or a job's :class:`JobState`) seen, if any.
        timeout: The deadline that passed, in seconds.
    """

    def __init__(self, task_id: str | None, *, last_status: str | None, timeout: float) -> None:
        self.task_id, self.last_status, self.timeout = task_id, last_status, timeout
        shown = getattr(last_status, "value", last_status)  # a str enum's value, not its repr
        seen = f"last seen {shown}" if last_status is not None else "no status read yet"
        what = f"task {task_id}" if task_id is not None else "the job (not submitted yet)"
        super().__init__(
            f"{what} not finished after {timeout:g} s ({seen}); it was not cancelled: "
            "wait for it again to pick it up"
        )


class BudgetExceededError(GrokImagineError):
    """Raised when another generation could take spending past ``max_credits``, with
    ``committed_credits`` spent or committed."""

    def __init__(self, *, max_credits: int, committed_credits: int) -> None:
        self.max_credits, self.committed_credits = max_credits, committed_credits
        super().__init__(
            f"credit budget reached: {committed_credits} of {max_credits} credits committed, "
            "and one more generation costs 40"
        )


class SchedulerClosedError(GrokImagineError, RuntimeError):
    """Raised when a scheduler is not running, takes no jobs, or stopped while a job was awaited."""


class DownloadError(APIError):
    """Raised when a result video cannot be fetched or saved and retrying would not help.

    Attributes:
        url: The URL that was being fetched, if any.
        local_path: The folder or file that could not be written, for a local failure.
    """

    def __init__(
        self, message: str, *, url: str | None = None, local_path: Path | None = None
    ) -> None:
        super().__init__(message, method="GET")
        self.url, self.local_path = url, local_path


class RedisUnavailableError(GrokImagineError):
    """Raised when Redis is unreachable and ``on_unavailable="raise"`` (cause: its error)."""
