"""The scheduler's keyword options as types, so ``**options`` stays checked by mypy and IDEs.

``generate_many(items, **options)`` and ``grok_imagine_lifespan(app, **options)`` pass their
keywords on to :class:`~grok_imagine_async.JobScheduler`; typing them with these TypedDicts
(``Unpack[SchedulerOptions]``) lets a type checker reject a misspelt or mistyped option at the
call site, while the keyword names stay what they always were. A test keeps them in step with
``JobScheduler.__init__``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable
from typing import Literal, TypedDict

from .._backoff import PollPolicy
from .._limiting.protocol import Priority
from .._models import FailureClass
from .breaker import BreakerPolicy
from .jobs import JobStore, SchedulerHook
from .polling import DurationModel

Favor = Literal["throughput", "latency"]
"""What gets the quota first when it is the bottleneck (see ``JobScheduler(favor=...)``)."""

# When the quota is the bottleneck, every job needs its POST and about one poll whatever the
# order. Sending submissions first starts each generation's clock as early as the quota allows,
# which is what shortens a batch (and polls made later are likelier to find the job done);
# sending polls first tells each caller sooner that their job is done. Measured on the emulator
# (benchmarks/bench_scheduler.py, pro plan, 2,000 jobs): throughput 1.02x the lower bound with
# 2.0 requests per job and a 92 s median detection latency; latency 1.62x, 2.4 and 17 s.
PRIORITIES: dict[str, tuple[Priority, Priority]] = {  # (submissions, polls)
    "throughput": (Priority.HIGH, Priority.LOW),
    "latency": (Priority.LOW, Priority.HIGH),
}


class TuningOptions(TypedDict, total=False):
    """How a scheduler runs its jobs: every ``JobScheduler`` keyword but the budget, the
    journal, the event hook and ``stream_results`` (which the FastAPI lifespan sets itself)."""

    max_in_flight: int | None
    poll: PollPolicy | None
    resubmit: int
    resubmit_on: Iterable[FailureClass]
    download_dir: str | os.PathLike[str] | None
    file_stem: Callable[[str], str] | None
    max_downloads: int
    results_buffer: int
    duration_model: DurationModel | None
    rng: random.Random | None
    favor: Favor
    breaker: BreakerPolicy | None


class SchedulerOptions(TuningOptions, total=False):
    """Every keyword option of :class:`~grok_imagine_async.JobScheduler` that
    ``generate_many`` passes on (all but ``stream_results``, which it sets)."""

    max_credits: int | None
    journal: JobStore | str | os.PathLike[str] | None
    on_event: SchedulerHook | None
