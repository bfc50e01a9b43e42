"""Asyncio-native client for the Grok Imagine video-generation API.

The client, its requests, tasks and policies, the batch scheduler with its jobs and events, and
the exception tree. Protocols are in :mod:`.abc`, a batch's files and options in :mod:`.batch`,
the integrations in ``fastapi``, ``redis``, ``otel`` and ``testing``. Start with
:class:`AsyncGrokImagine` (its docstring has an example).
"""

from ._backoff import PollPolicy, RetryPolicy
from ._client import AsyncGrokImagine
from ._errors import (
    AmbiguousSubmitError,
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BudgetExceededError,
    ConfigurationError,
    DownloadError,
    GrokImagineError,
    InvalidRequestError,
    JournalError,
    NotFoundError,
    RateLimitError,
    SchedulerClosedError,
    ServerError,
    TaskFailedError,
    WaitTimeoutError,
)
from ._limiting.local import LocalRateLimiter
from ._limiting.plans import Plan, RateLimit
from ._models import FailureClass, GenerationRequest, Task, TaskStatus
from ._public import set_module as _set_module
from ._scheduling.jobs import (
    Job,
    JobEvent,
    JobFinished,
    JobQueued,
    JobResubmitting,
    JobResult,
    JobSpec,
    JobState,
    JobSubmitted,
)
from ._scheduling.scheduler import JobScheduler
from ._settings import Limits, Settings
from ._version import __version__ as __version__

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AmbiguousSubmitError",
    "AsyncGrokImagine",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "ConfigurationError",
    "DownloadError",
    "FailureClass",
    "GenerationRequest",
    "GrokImagineError",
    "InvalidRequestError",
    "Job",
    "JobEvent",
    "JobFinished",
    "JobQueued",
    "JobResubmitting",
    "JobResult",
    "JobScheduler",
    "JobSpec",
    "JobState",
    "JobSubmitted",
    "JournalError",
    "Limits",
    "LocalRateLimiter",
    "NotFoundError",
    "Plan",
    "PollPolicy",
    "RateLimit",
    "RateLimitError",
    "RetryPolicy",
    "SchedulerClosedError",
    "ServerError",
    "Settings",
    "Task",
    "TaskFailedError",
    "TaskStatus",
    "WaitTimeoutError",
]
# __version__ is left out: a star import must not overwrite the importer's own.

_set_module(globals(), __all__)
