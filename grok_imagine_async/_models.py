"""Typed values exchanged with the API: requests, tasks, statuses, failure classes (rule 6);
the bottom of the package, so the exception tree's root and InvalidRequestError live here."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CREDITS_PER_GENERATION = 40  # about 0.40 USD, as the provider documents
KNOWN_MODES = frozenset({"fun", "normal", "spicy"})  # others need allow_unlisted=True
KNOWN_RATIOS = frozenset({"2:3", "3:2", "1:1"})

_RATIO_SHAPE = re.compile(r"^[1-9][0-9]{0,3}:[1-9][0-9]{0,3}$")
_MODE_SHAPE = re.compile(r"^[a-z0-9_-]{1,32}$")


class GrokImagineError(Exception):
    """Raised when anything in this library fails; the root of the tree.

    Attributes:
        pending_tasks: If it stopped a scheduler: the paid jobs whose end was not recorded, as
            ``{key: task_id}`` (also logged; a journal resumes them).
    """

    pending_tasks: Mapping[str, str] = MappingProxyType({})


class InvalidRequestError(GrokImagineError, ValueError):
    """Raised when a generation request is invalid; nothing was sent and no credit spent.

    Attributes:
        problems: One human-readable line per problem found.
        item: For an item of a scheduler's input, its 1-based position in the input.
    """

    def __init__(
        self, message: str, *, problems: tuple[str, ...] = (), item: int | None = None
    ) -> None:
        super().__init__(message)
        self.problems, self.item = problems, item


def http_url_problem(url: str) -> str | None:
    """Why ``url`` is not an absolute http(s) URL naming a host, or None if it is: the one check
    of the URLs we are given (an image's, the API's root), made before anything is sent."""
    if any(char.isspace() or not char.isprintable() for char in url):
        return "must not hold spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (a port out of range or not a number raises here)
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an absolute http(s) URL with a host"
    return None


def _problem(error: Any) -> str:
    """One validation error as text: a field's named after it, the whole request's bare."""
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


class GenerationRequest(BaseModel):
    """One video generation, validated before anything is sent (so no credit is spent on it).

    Attributes:
        prompt: What to generate. Must contain non-whitespace text.
        mode: ``"fun"``, ``"normal"`` (default) or ``"spicy"``.
        ratio: ``"1:1"`` (default), ``"2:3"`` or ``"3:2"``.
        images: Optional http(s) URLs of source images (image-to-video; a string is one URL).
            Not allowed with ``mode="spicy"``.
        allow_unlisted: Send well-formed modes and ratios the provider does not document
            (resellers of the same model accept ``16:9`` and ``9:16``).

    Raises:
        InvalidRequestError: (a ``ValueError``) naming every invalid field in ``problems``.

    Example:
        >>> GenerationRequest(prompt="a red fox in snow", ratio="2:3").payload()
        {'prompt': 'a red fox in snow', 'mode': 'normal', 'ratio': '2:3'}
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    prompt: str
    mode: str = "normal"
    ratio: str = "1:1"
    images: tuple[str, ...] | None = None
    allow_unlisted: bool = Field(default=False, exclude=True)

    if not TYPE_CHECKING:  # type checkers keep the pydantic plugin's signature

        def __init__(self, /, **fields: Any) -> None:
            try:
                super().__init__(**fields)
            except ValidationError as exc:
                problems = tuple(map(_problem, exc.errors()))
                message = "invalid generation request: " + "; ".join(problems)
                raise InvalidRequestError(message, problems=problems) from None

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("prompt must not be empty")
        return value

    @field_validator("images", mode="before")
    @classmethod
    def _images_as_tuple(cls, value: Any) -> Any:
        if isinstance(value, str):
            return (value,)
        if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
            return tuple(value)
        return value

    @field_validator("images")
    @classmethod
    def _images_are_http_urls(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for url in value or ():  # stripped already (str_strip_whitespace)
            if (problem := http_url_problem(url)) is not None:
                raise ValueError(f"image URL {problem}, got {url!r}")
        return value or None

    @model_validator(mode="after")
    def _mode_and_ratio(self) -> GenerationRequest:
        mode, ratio = self.mode.lower(), self.ratio
        if mode not in KNOWN_MODES:
            if not self.allow_unlisted:
                raise ValueError(
                    f"unknown mode {self.mode!r}: expected one of {sorted(KNOWN_MODES)} "
                    "(pass allow_unlisted=True to send it anyway)"
                )
            if not _MODE_SHAPE.match(mode):
                raise ValueError(f"mode {self.mode!r} is not a plausible mode name")
        if ratio not in KNOWN_RATIOS:
            if not self.allow_unlisted:
                raise ValueError(
                    f"unknown ratio {ratio!r}: expected one of {sorted(KNOWN_RATIOS)} "
                    "(pass allow_unlisted=True for e.g. '16:9' or '9:16')"
                )
            if not _RATIO_SHAPE.match(ratio):
                raise ValueError(f"ratio {ratio!r} must look like 'W:H', e.g. '16:9'")
        if mode == "spicy" and self.images:
            raise ValueError("mode 'spicy' cannot be used with images")
        object.__setattr__(self, "mode", mode)
        return self

    def payload(self) -> dict[str, Any]:
        """The JSON body for ``POST /v1/generate`` (``images`` a list, only when given)."""
        return self.model_dump(mode="json", exclude_none=True)


class TaskStatus(str, enum.Enum):
    """A task's status, normalised from the many spellings servers use (case-insensitive)."""

    PENDING = "pending"
    """Accepted, waiting to start (pending, queued, waiting, submitted, in_queue...)."""
    PROCESSING = "processing"
    """Being generated (processing, running, generating, in_progress...)."""
    COMPLETED = "completed"
    """Finished successfully (completed, success, succeeded, done)."""
    FAILED = "failed"
    """Finished unsuccessfully (failed, fail, error, expired, cancelled, canceled)."""
    UNKNOWN = "unknown"
    """A value we do not know; treated as not finished."""

    @property
    def is_terminal(self) -> bool:
        """True for COMPLETED and FAILED: polling can stop."""
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED)


class FailureClass(str, enum.Enum):
    """Why a job failed, from the provider's error message: whether resubmitting can help."""

    CONTENT_POLICY = "content_policy"
    """The prompt or image was refused; never resubmitted."""
    INVALID_INPUT = "invalid_input"
    """The input cannot be processed (e.g. file type); never resubmitted."""
    TRANSIENT = "transient"
    """A passing fault on the provider's side; resubmitting may succeed."""
    GENERATION_FAILED = "generation_failed"
    """The model failed to build the video; resubmitted only if asked."""
    NO_RESULT = "no_result"
    """The task said completed but carried no video URL."""
    UNKNOWN = "unknown"
    """Any other failure message."""
    AMBIGUOUS_SUBMIT = "ambiguous_submit"
    """The submission's outcome is unknown; not resent to avoid paying twice."""
    REQUEST_ERROR = "request_error"
    """The API refused or could not be reached (after retries)."""
    BUDGET_EXCEEDED = "budget_exceeded"
    """Not started: it could have taken spending past the credit budget."""
    NOT_SUBMITTED = "not_submitted"
    """Not started: the batch stopped on systematic refusals or an unreachable server."""


class Task(BaseModel):
    """A generation task as reported by ``GET /v1/status`` (fields it lacks are None).

    Attributes:
        raw_status: The status string exactly as the server sent it.
        request: The generation parameters the server echoed back, if any.
        videos: The result video URLs (the ``response`` field); may hold several.
    """

    model_config = ConfigDict(frozen=True)

    task_id: str
    status: TaskStatus
    raw_status: str
    consumed_credits: int | None = None
    created_at: datetime | None = None
    error_message: str | None = None
    request: dict[str, Any] | None = None
    videos: tuple[str, ...] = ()

    @property
    def is_terminal(self) -> bool:
        """True once the task finished, successfully or not."""
        return self.status.is_terminal

    @property
    def succeeded(self) -> bool:
        """True when completed with at least one video URL."""
        return self.status is TaskStatus.COMPLETED and bool(self.videos)

    @property
    def failure_class(self) -> FailureClass | None:
        """Why the task failed (``NO_RESULT``: "completed" with no video), or None if it did not."""
        if self.status is TaskStatus.COMPLETED:
            return None if self.videos else FailureClass.NO_RESULT
        if self.status is TaskStatus.FAILED:
            return classify_error_message(self.error_message)
        return None


def uncharged_credits(task: Task) -> int:
    """Credits of ``task``'s POST the provider says it did not charge: 40 less its
    ``consumed_credits`` (within 0..40, never more than it cost); 0 if it does not say."""
    if task.consumed_credits is None:
        return 0
    return CREDITS_PER_GENERATION - min(max(task.consumed_credits, 0), CREDITS_PER_GENERATION)


_FAILURE_MARKERS: tuple[tuple[FailureClass, tuple[str, ...]], ...] = (
    (FailureClass.CONTENT_POLICY, ("inappropriate", "content policy", "nsfw", "moderation")),
    (FailureClass.INVALID_INPUT, ("file type not supported", "not supported", "invalid image")),
    (FailureClass.TRANSIENT, ("network error", "try again later", "timeout", "temporar")),
    (FailureClass.GENERATION_FAILED, ("build failed", "generation failed")),
)


def classify_error_message(message: str | None) -> FailureClass:
    """The failure class a task's ``error_message`` indicates (rule 6)."""
    text = (message or "").lower()
    found = (kind for kind, markers in _FAILURE_MARKERS if any(m in text for m in markers))
    return next(found, FailureClass.UNKNOWN)
