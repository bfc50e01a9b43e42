"""What goes wrong on the emulated server on purpose: random rates, outages, prompt markers
(listed in the testing guide; an invalid one is a 400 so that a typo shows)."""

from __future__ import annotations

import random
import re
from collections import Counter

from ._config import ERROR_MESSAGES, FaultConfig, Outage

# A request's faults by marker kind, with their rates: rolled in this order, the first one
# rolled or marked is the answer (a 500, else a 200 with an error code, else a hang-up after
# handling, so a dropped POST always has its task).
_REQUEST_FAULTS = {"500": "server_error_rate", "body": "body_error_rate", "drop": "drop_rate"}
_REQUEST_MARKERS = frozenset({*_REQUEST_FAULTS, "slow"})
_TASK_MARKERS = frozenset({*ERROR_MESSAGES, "empty", "duration"})
_FAIL_KINDS = (_REQUEST_MARKERS | _TASK_MARKERS) - {"slow", "duration"}
_MARKER = re.compile(r"\[(fail|slow|duration):([^\]\s:]+)(?::(\d+))?\]")
_SECONDS = r"\d+(\.\d*)?|\.\d+"  # what [slow:S] and [duration:S] take


class InvalidRequest(ValueError):
    """A bad body or prompt marker: answered 400 ``INVALID_REQUEST`` with this message."""


class FaultInjector:
    """Decides the faults of each request and task. Not thread-safe: callers hold a lock."""

    def __init__(self, config: FaultConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self._fired: Counter[tuple[str, str]] = Counter()  # (prompt, marker) -> times applied

    def _roll(self, rate: float) -> bool:
        # Draw only for active rates, so enabling one fault does not reshuffle another's sequence.
        return rate > 0.0 and self._rng.random() < rate

    def _markers(self, prompt: str, wanted: frozenset[str]) -> list[tuple[str, str]]:
        """The (family, kind) of the ``wanted`` markers of ``prompt`` to apply now, counting
        each use against a marker's ``:N``; InvalidRequest on any invalid marker."""
        matches = list(_MARKER.finditer(prompt)) if self._config.markers else []
        for match in matches:
            family, kind = match.group(1, 2)
            if family == "fail" and kind not in _FAIL_KINDS:
                raise InvalidRequest(f"unknown emulator marker {match.group(0)}")
            if family != "fail" and not re.fullmatch(_SECONDS, kind):
                raise InvalidRequest(f"emulator marker {match.group(0)} needs a number of seconds")
        applied = []
        for match in matches:
            marker, family, kind, limit = match.group(0, 1, 2, 3)
            if (kind if family == "fail" else family) not in wanted:
                continue
            if family != "duration":  # a duration applies to every task of the prompt
                if limit is not None and self._fired[prompt, marker] >= int(limit):
                    continue
                self._fired[prompt, marker] += 1
            applied.append((family, kind))
        return applied

    def for_request(self, prompt: str | None = None) -> tuple[float, str | None]:
        """The delay and the fault (a key of ``_REQUEST_FAULTS``) of one request; ``prompt``
        is the POST's (None: a poll)."""
        cfg = self._config
        markers = self._markers(prompt or "", _REQUEST_MARKERS)
        rolled = {k for k, rate in _REQUEST_FAULTS.items() if self._roll(getattr(cfg, rate))}
        chosen = rolled | {kind for family, kind in markers if family == "fail"}
        delay = cfg.slow_seconds if self._roll(cfg.slow_rate) else 0.0
        delay += sum(float(kind) for family, kind in markers if family == "slow")
        return delay, next((k for k in _REQUEST_FAULTS if k in chosen), None)

    def for_task(
        self, prompt: str, outage: Outage | None = None
    ) -> tuple[str | None, int, bool, float | None]:
        """How the task created for ``prompt`` ends (``outage``: the one under way): its error
        message (None: completes), videos, whether it is free, and its forced duration."""
        if outage is not None:  # every new task fails, markers or not
            return outage.message, 0, outage.free, outage.fails_after
        error_message, video_count, duration = None, 2, None
        if self._roll(self._config.task_failure_rate):
            error_message = self._rng.choice(list(ERROR_MESSAGES.values())[:4])
        for family, kind in self._markers(prompt, _TASK_MARKERS):
            if family == "duration":
                duration = float(kind)
            elif kind == "empty":
                video_count = 0
            else:
                error_message = ERROR_MESSAGES[kind]
        return error_message, video_count, False, duration
