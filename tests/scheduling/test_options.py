"""The typed option sets stay in step with the scheduler's keywords."""

from __future__ import annotations

import inspect

from grok_imagine_async import JobScheduler
from grok_imagine_async._scheduling.options import TuningOptions
from grok_imagine_async.batch import SchedulerOptions


def _scheduler_keywords() -> set[str]:
    parameters = inspect.signature(JobScheduler.__init__).parameters.values()
    return {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def test_scheduler_options_name_every_keyword_generate_many_passes_on() -> None:
    assert set(SchedulerOptions.__annotations__) | {"stream_results"} == _scheduler_keywords()
    assert SchedulerOptions.__total__ is False


def test_tuning_options_leave_out_what_the_lifespan_sets_itself() -> None:
    from grok_imagine_async.fastapi import grok_imagine_lifespan

    own = set(TuningOptions.__annotations__)
    assert own == set(SchedulerOptions.__annotations__) - {"journal", "max_credits", "on_event"}
    lifespan = inspect.signature(grok_imagine_lifespan).parameters
    assert {"journal", "max_credits", "on_event"} <= set(lifespan)
    assert not own & set(lifespan)  # no keyword both explicit and in **scheduler_options
