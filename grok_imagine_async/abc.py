"""The extension seams, as in ``anyio.abc``: the protocols to implement to plug in your own
rate limiter, job store, observer, scheduler hook or clock, and the values they exchange."""

from ._clock import Clock
from ._errors import JobTakenOver
from ._limiting.protocol import LimiterStatistics, Permit, Priority, RateLimiter, RateLimitFeedback
from ._observe import JobScope, Observer, RequestAttempt
from ._public import set_module as _set_module
from ._scheduling.jobs import (
    Claim,
    JobStore,
    Listener,
    SchedulerHook,
    StoredJob,
    StoreRecord,
    StoreState,
)

__all__ = [
    "Claim",
    "Clock",
    "JobScope",
    "JobStore",
    "JobTakenOver",
    "LimiterStatistics",
    "Listener",
    "Observer",
    "Permit",
    "Priority",
    "RateLimitFeedback",
    "RateLimiter",
    "RequestAttempt",
    "SchedulerHook",
    "StoreRecord",
    "StoreState",
    "StoredJob",
]

_set_module(globals(), __all__)
