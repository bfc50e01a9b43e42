"""What goes wrong on the emulated server on purpose: random rates, outages, prompt markers.

The markers (``[fail:content]``, ``[slow:S]``...) are listed in the testing guide; an unknown
kind, or seconds that are not a non-negative number, is a 400 so that a typo shows.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from .._errors import ConfigurationError

ERROR_MESSAGES = {  # by marker kind; the first four are the provider's documented ones
    "content": "Inappropriate content, please try another prompt.",
    "input": "File type not supported",
    "network": "Network error, please try again later.",
    "build": "grok imagine build failed",
    "unknown": "Unexpected error",
}
_REQUEST_MARKERS = frozenset({"500", "body", "drop", "slow"})
_TASK_MARKERS = frozenset({*ERROR_MESSAGES, "empty", "duration"})
_FAIL_KINDS = (_REQUEST_MARKERS | _TASK_MARKERS) - {"slow", "duration"}
_MARKER = re.compile(r"\[(fail|slow|duration):([^\]\s:]+)(?::(\d+))?\]")
_SECONDS = r"\d+(\.\d*)?|\.\d+"  # what [slow:S] and [duration:S] take
_RATES = ("server_error_rate", "body_error_rate", "slow_rate", "drop_rate", "task_failure_rate")


@dataclass(frozen=True, kw_only=True)
class Outage:
    """A time during which every new task fails, as in a provider's outage.

    Attributes:
        start: Seconds after the emulator's first API request when it begins.
        end: Seconds after that request when it ends (None: until switched off with
            :meth:`~grok_imagine_async.testing.Emulator.outage`).
        message: The ``error_message`` every task created meanwhile fails with.
        fails_after: Seconds (not divided by ``time_scale``) from such a task's creation to
            its failure.
        free: Whether those failures report ``consumed_credits`` 0 (otherwise 40).

    Raises:
        ConfigurationError: If ``end`` is before ``start``, or a time is negative.
    """

    start: float = 0.0
    end: float | None = None
    message: str = ERROR_MESSAGES["network"]
    fails_after: float = 2.0
    free: bool = False

    def __post_init__(self) -> None:
        if not self.start >= 0 or (self.end is not None and not self.end >= self.start):
            raise ConfigurationError(
                f"Outage needs 0 <= start <= end, got {self.start!r}, {self.end!r}"
            )
        if not self.fails_after >= 0:  # NaN refused too
            raise ConfigurationError(f"Outage.fails_after must be >= 0, got {self.fails_after!r}")

    def covers(self, elapsed: float) -> bool:
        """Whether a task created ``elapsed`` seconds after the first request falls in it."""
        return self.start <= elapsed and (self.end is None or elapsed < self.end)


@dataclass(frozen=True, kw_only=True)
class FaultConfig:
    """Random faults of the emulated server, each rate a probability per authorised,
    admitted ``/v1/*`` request (POSTs and polls alike), drawn from the emulator's seeded
    generator.

    Attributes:
        server_error_rate: Answer HTTP 500 with the error body (no task is created).
        body_error_rate: Answer HTTP 200 whose body carries ``"code": 500`` (no task).
        slow_rate: Delay the answer by ``slow_seconds`` (a POST's task is created first, so
            a client timing out cannot know).
        slow_seconds: The delay of a slow answer.
        drop_rate: Close the connection without an answer after handling the request (a
            POST's task IS created: the ambiguous case).
        task_failure_rate: Fraction of new tasks that fail with a documented error message.
        markers: Whether prompt markers (``[fail:content]``...) are honoured.
        outages: Times during which every new task fails (see :class:`Outage`).

    Raises:
        ConfigurationError: On a rate outside [0, 1] or a negative ``slow_seconds``.
    """

    server_error_rate: float = 0.0
    body_error_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 30.0
    drop_rate: float = 0.0
    task_failure_rate: float = 0.0
    markers: bool = True
    outages: tuple[Outage, ...] = ()

    def __post_init__(self) -> None:
        for name in _RATES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigurationError(
                    f"FaultConfig.{name} must be between 0 and 1, got {getattr(self, name)!r}"
                )
        if not self.slow_seconds >= 0:  # NaN refused too
            raise ConfigurationError(
                f"FaultConfig.slow_seconds must be >= 0, got {self.slow_seconds!r}"
            )


class InvalidRequest(ValueError):
    """A request the service answers 400 ``INVALID_REQUEST`` (a bad body or prompt marker);
    the text is the message."""


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

    def for_request(
        self, prompt: str | None = None
    ) -> tuple[float, Literal["500", "body", "drop"] | None]:
        """The delay and the fault of one request; ``prompt`` is the POST's (None: a poll)."""
        cfg = self._config
        markers = self._markers(prompt or "", _REQUEST_MARKERS)
        kinds = {kind for family, kind in markers if family == "fail"}
        server_error = self._roll(cfg.server_error_rate) | ("500" in kinds)
        body_error = self._roll(cfg.body_error_rate) | ("body" in kinds)
        drop = self._roll(cfg.drop_rate) | ("drop" in kinds)
        delay = cfg.slow_seconds if self._roll(cfg.slow_rate) else 0.0
        delay += sum(float(kind) for family, kind in markers if family == "slow")
        # One outcome per answer: a 500, else a 200 with an error code, else a hang-up after
        # handling (so a dropped POST always has its task).
        return delay, "500" if server_error else "body" if body_error else "drop" if drop else None

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
