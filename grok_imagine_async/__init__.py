"""Asyncio-native client for the Grok Imagine video-generation API.

Example:
    >>> import anyio
    >>> from grok_imagine_async import AsyncGrokImagine
    >>> async def main() -> None:
    ...     async with AsyncGrokImagine() as client:  # reads $GROK_IMAGINE_API_KEY
    ...         task = await client.generate_and_wait("a paper boat on a river")
    ...         print(task.videos)
"""

from . import _backoff, _clock
from ._backoff import PollPolicy, RetryPolicy
from ._client import AsyncGrokImagine
from ._deprecated import module_getattr as _module_getattr
from ._errors import (
    AmbiguousSubmitError,
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BacklogFullError,
    BadRequestError,
    BudgetExceededError,
    ConfigurationError,
    DownloadError,
    GrokImagineError,
    InputError,
    InvalidRequestError,
    JournalError,
    NotFoundError,
    RateLimitError,
    RedisUnavailableError,
    SchedulerClosedError,
    ServerError,
    TaskFailedError,
    WaitTimeoutError,
)
from ._journal.sqlite import SqliteJournal
from ._limiting.local import LocalRateLimiter
from ._limiting.plans import Plan, RateLimit
from ._limiting.protocol import LimiterStatistics, Permit, Priority, RateLimiter, RateLimitFeedback
from ._limits import Limits
from ._models import (
    CREDITS_PER_GENERATION,
    FailureClass,
    GenerationRequest,
    Task,
    TaskStatus,
)
from ._observe import JobScope, Observer, RequestAttempt
from ._requests import build_request
from ._scheduling import jobs as _jobs
from ._scheduling.inputs import InputSummary, JobFile
from ._scheduling.jobs import (
    Job,
    JobEvent,
    JobFinished,
    JobQueued,
    JobResubmitting,
    JobResult,
    JobResumed,
    JobSpec,
    JobState,
    JobSubmitted,
    Journal,
    JournalRecord,
    JournalState,
    SchedulerHook,
    SchedulerStatistics,
)
from ._scheduling.options import SchedulerOptions
from ._scheduling.polling import DurationModel
from ._scheduling.scheduler import JobScheduler
from ._settings import DEFAULT_BASE_URL
from ._version import __version__

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AmbiguousSubmitError",
    "AsyncGrokImagine",
    "AuthenticationError",
    "BacklogFullError",
    "BadRequestError",
    "BudgetExceededError",
    "CREDITS_PER_GENERATION",
    "ConfigurationError",
    "DEFAULT_BASE_URL",
    "DownloadError",
    "DurationModel",
    "FailureClass",
    "GenerationRequest",
    "GrokImagineError",
    "InputError",
    "InputSummary",
    "InvalidRequestError",
    "Job",
    "JobEvent",
    "JobFile",
    "JobFinished",
    "JobQueued",
    "JobResubmitting",
    "JobResult",
    "JobResumed",
    "JobScheduler",
    "JobScope",
    "JobSpec",
    "JobState",
    "JobSubmitted",
    "Journal",
    "JournalError",
    "JournalRecord",
    "JournalState",
    "LimiterStatistics",
    "Limits",
    "LocalRateLimiter",
    "NotFoundError",
    "Observer",
    "Permit",
    "Plan",
    "PollPolicy",
    "Priority",
    "RateLimit",
    "RateLimitError",
    "RateLimitFeedback",
    "RateLimiter",
    "RedisUnavailableError",
    "RequestAttempt",
    "RetryPolicy",
    "SchedulerClosedError",
    "SchedulerHook",
    "SchedulerOptions",
    "SchedulerStatistics",
    "ServerError",
    "SqliteJournal",
    "Task",
    "TaskFailedError",
    "TaskStatus",
    "WaitTimeoutError",
    "__version__",
    "build_request",
]

# Plumbing that was exported by accident: still served for one release, with a warning.
__getattr__ = _module_getattr(
    __name__,
    {
        "backoff_delay": (
            _backoff.backoff_delay,
            "RetryPolicy and PollPolicy compute their delays (it stays in a private module)",
        ),
        "request_key": (
            _jobs.request_key,
            "read JobResult.key, or choose a key with JobSpec(request, key=...)",
        ),
        "Clock": (_clock.Clock, "use grok_imagine_async.abc.Clock"),
        "LoopClock": (_clock.LoopClock, "it is the default clock: pass no clock"),
        "ManualClock": (_clock.ManualClock, "use grok_imagine_async.testing.ManualClock"),
        "SchedulerEvent": (_jobs.SchedulerEvent, "use JobEvent, the base class of every event"),
    },
)
