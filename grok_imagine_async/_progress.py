"""How far a generation is, estimated (the API reports none): ``1 - 0.5 ** (t / m)`` for a task
created ``t`` seconds ago and a learnt median ``m``, below 1 until it is known to be finished;
the one estimate of ``generate_and_wait``, ``generate_many`` and :attr:`Job.progress`."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

logger = logging.getLogger("grok_imagine_async")

ProgressHook = Callable[[str, float | None], None]
"""``on_progress(id, progress)``: a task id (or a batch's job key) and its estimate, 0 to 1."""

_BELOW_DONE = 0.99  # only a finished task shows 1


def estimated_progress(elapsed: float, median: float) -> float:
    """The share of a generation done after ``elapsed`` seconds, if half take ``median``.

    Example:
        >>> estimated_progress(30.0, 30.0)
        0.5
    """
    share = 1.0 - math.pow(0.5, max(0.0, elapsed) / max(median, 1e-9))
    return round(min(_BELOW_DONE, share), 3)


class Progress:
    """One generation's progress as shown to someone: it never goes back (not when the learnt
    median grows, nor when a resubmitted job's new task starts from nothing)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0
        """The highest estimate given so far."""

    def running(self, elapsed: float | None, median: float) -> float | None:
        """The estimate for a task created ``elapsed`` seconds ago (None: age unknown)."""
        if elapsed is None:
            return None
        self.value = max(self.value, estimated_progress(elapsed, median))
        return self.value

    def finished(self) -> float:
        """The task finished (either way): 1."""
        self.value = 1.0
        return 1.0


def report_progress(hook: ProgressHook | None, key: str, value: float | None) -> None:
    """Call ``hook(key, value)``; a hook that raises is logged: a progress bar's bug must not
    end a wait (and lose its task id) or a batch."""
    if hook is None:
        return
    try:
        hook(key, value)
    except Exception:
        logger.exception("the on_progress hook raised")
