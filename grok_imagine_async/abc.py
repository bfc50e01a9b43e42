"""The extension seams: the protocols to implement, and the values they exchange.

As in ``anyio.abc``, these are what you need to plug your own parts in, and they live only
here: a rate limiter shared some other way than Redis (:class:`RateLimiter`, handing out
:class:`Permit` s by :class:`Priority`, told :class:`RateLimitFeedback`, reporting
:class:`LimiterStatistics`), a job store other than SQLite or Redis (:class:`JobStore`, storing
:class:`StoreRecord` s in a :class:`StoreState`, answering a :class:`Claim`, telling a
:data:`Listener` of each changed :class:`StoredJob`), an observer of requests and jobs
(:class:`Observer`, given :class:`RequestAttempt` s and :class:`JobScope` s; the OpenTelemetry
one is :class:`grok_imagine_async.otel.Telemetry`), a hook on every scheduler event
(:class:`SchedulerHook`), or a clock (:class:`Clock`).
"""

from ._clock import Clock
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
