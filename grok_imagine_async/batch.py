"""A batch's files, options and figures: what ``generate_many`` and ``JobScheduler`` take and
give beyond the everyday names of :mod:`grok_imagine_async`.

- :class:`JobFile` reads jobs from a text, JSONL or CSV file (``check()`` returns an
  :class:`InputSummary`, a bad line raises :class:`InputError`);
- :class:`SqliteJobStore` is the journal file that makes a batch resumable (``journal="run.db"``
  opens one for you), :class:`MemoryJobStore` the same store in memory (it lasts as long as
  the process);
- :class:`SchedulerConfig` says how a scheduler runs its jobs (``config=`` of
  ``generate_many`` and ``JobScheduler``): concurrency, polling, resubmissions, the breaker;
- :class:`DurationModel` is the scheduler's estimate of how long a generation takes
  (``SchedulerConfig(duration_model=...)``), and :class:`SchedulerStatistics` what
  ``statistics()`` returns (of a scheduler, or of the :class:`JobResults` of
  ``generate_many``);
- :data:`CREDITS_PER_GENERATION` is what one generation costs, to size ``max_credits=``;
- :class:`BreakerPolicy` (``SchedulerConfig(breaker=...)``) says when a batch pauses on an
  outage or stops on systematic refusals; :class:`BreakerSnapshot` (``statistics().breaker``,
  with its :class:`BreakerState`) and :class:`BreakerEvent` (to ``on_event``) show what it
  decided;
- :class:`JobResumed` (to ``on_event``) says a job was taken up from the journal of an
  earlier run.

These are what the ``grok-imagine batch`` command uses, for the same from Python.

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
from ._scheduling.inputs import InputSummary, JobFile
from ._scheduling.jobs import BreakerEvent, JobResumed, SchedulerStatistics
from ._scheduling.many import JobResults
from ._scheduling.options import SchedulerConfig
from ._scheduling.polling import DurationModel

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
