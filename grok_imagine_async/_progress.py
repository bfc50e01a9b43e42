"""How far a generation is, estimated (the API reports none): ``1 - 0.5 ** (t / median)``,
below 1 until it is known to be finished; the one estimate of the client and the schedulers."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("grok_imagine_async")

ProgressHook = Callable[[str, float | None], None]  # (task id or job key, estimate 0 to 1)


@dataclass(slots=True)
class Progress:
    """One generation's shown progress: it never goes back (when the median grows, or when a
    resubmitted job's new task starts from nothing)."""

    value: float = 0.0  # the highest estimate given so far

    def running(self, elapsed: float | None, median: float) -> float | None:
        """The estimate for a task created ``elapsed`` seconds ago (None: age unknown), if half
        take ``median``: at most 0.99 (only a finished task shows 1)."""
        if elapsed is None:
            return None
        share = 1.0 - math.pow(0.5, max(0.0, elapsed) / max(median, 1e-9))
        self.value = max(self.value, round(min(0.99, share), 3))
        return self.value

    def finished(self) -> float:
        """The task finished (either way): 1."""
        self.value = 1.0
        return 1.0


def report_progress(hook: ProgressHook | None, key: str, value: float | None) -> None:
    """Call ``hook(key, value)``, logging what it raises: a progress bar's bug must not end a
    wait (and lose its task id) or a batch."""
    if hook is not None:
        try:
            hook(key, value)
        except Exception:
            logger.exception("the on_progress hook raised")
