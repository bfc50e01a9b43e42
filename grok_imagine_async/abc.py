"""The extension seams: the protocols to implement, and the values they exchange.

As in ``anyio.abc``, these are what you need to plug your own parts in: a rate limiter shared
some other way than Redis (:class:`RateLimiter`, given :class:`Permit` s and told
:class:`RateLimitFeedback`), a job store other than SQLite (:class:`Journal`, storing
:class:`JournalRecord` s), or a clock (:class:`Clock`). The same names are also importable
from ``grok_imagine_async`` itself, except :class:`Clock`.
"""

from ._clock import Clock
from ._limiting.protocol import LimiterStatistics, Permit, Priority, RateLimiter, RateLimitFeedback
from ._scheduling.jobs import Journal, JournalRecord, JournalState

__all__ = [
    "Clock",
    "Journal",
    "JournalRecord",
    "JournalState",
    "LimiterStatistics",
    "Permit",
    "Priority",
    "RateLimitFeedback",
    "RateLimiter",
]
