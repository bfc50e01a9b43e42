"""A batch's files, options and figures: what ``generate_many`` and ``JobScheduler`` take and
give beyond the everyday names (and what ``grok-imagine batch`` uses).

- :class:`JobFile` reads jobs from a text, JSONL or CSV file (``check()`` returns an
  :class:`InputSummary`, a bad line raises :class:`InputError`);
- :class:`SqliteJobStore` is the journal file that makes a batch resumable (``journal="run.db"``
  opens one), :class:`MemoryJobStore` the same in memory;
- :class:`SchedulerConfig` (``config=``) says how a scheduler runs its jobs, with a
  :class:`DurationModel` and a :class:`BreakerPolicy`; :class:`SchedulerStatistics` is what
  ``statistics()`` returns (of a scheduler, or of ``generate_many``'s :class:`JobResults`),
  with a :class:`BreakerSnapshot` and its :class:`BreakerState`;
- :class:`BreakerEvent` and :class:`JobResumed` are events ``on_event`` receives;
- :data:`CREDITS_PER_GENERATION` is what one generation costs, to size ``max_credits=``.

Example:
    >>> from grok_imagine_async.batch import CREDITS_PER_GENERATION, JobFile
    >>> budget = 100 * CREDITS_PER_GENERATION  # at most 100 generations
"""

from ._errors import InputError
from ._journal.memory import MemoryJobStore
from ._journal.sqlite import SqliteJobStore
from ._models import CREDITS_PER_GENERATION
from ._public import set_module as _set_module
from ._scheduling.breaker import BreakerPolicy, BreakerSnapshot, BreakerState
from ._scheduling.config import SchedulerConfig
from ._scheduling.durations import DurationModel
from ._scheduling.inputs import InputSummary, JobFile
from ._scheduling.jobs import BreakerEvent, JobResumed, SchedulerStatistics
from ._scheduling.scheduler import JobResults

__all__ = [
    "BreakerEvent",
    "BreakerPolicy",
    "BreakerSnapshot",
    "BreakerState",
    "CREDITS_PER_GENERATION",
    "DurationModel",
    "InputError",
    "InputSummary",
    "JobFile",
    "JobResults",
    "JobResumed",
    "MemoryJobStore",
    "SchedulerConfig",
    "SchedulerStatistics",
    "SqliteJobStore",
]

_set_module(globals(), __all__)
