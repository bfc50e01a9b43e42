"""What goes wrong on the emulated server, on purpose: random rates and per-prompt markers.

Markers are written in the prompt of ``POST /v1/generate`` (so a test picks the failure of each
job) and are echoed back like the rest of the prompt:

======================  ===================================================================
``[fail:content]``      the task fails with ``Inappropriate content, please try another prompt.``
``[fail:input]``        the task fails with ``File type not supported``
``[fail:network]``      the task fails with ``Network error, please try again later.``
``[fail:build]``        the task fails with ``grok imagine build failed``
``[fail:unknown]``      the task fails with ``Unexpected error`` (an unclassified message)
``[fail:empty]``        the task completes with an empty ``response`` list (no video URL)
``[fail:500]``          the POST is answered HTTP 500; no task is created
``[fail:body]``         the POST is answered HTTP 200 with ``{"code": 500, ...}``; no task
``[fail:drop]``         the task IS created, then the connection closes without an answer
``[slow:S]``            the POST's answer is sent S seconds (emulator clock) after the task is
                        created
``[duration:S]``        the generation takes exactly S seconds (not divided by ``time_scale``)
======================  ===================================================================

A trailing ``:N`` (``[fail:500:2]``, ``[fail:network:1]``, ``[slow:10:1]``) limits a marker to
the first N POSTs (request faults) or the first N tasks (task failures) of that exact prompt, so
a retry or a resubmission then succeeds. An unknown ``[fail:...]`` kind is a 400, to catch
typos, as is a marker whose seconds are not a non-negative number.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass

ERROR_MESSAGES = {
    "content": "Inappropriate content, please try another prompt.",
    "input": "File type not supported",
    "network": "Network error, please try again later.",
    "build": "grok imagine build failed",
    "unknown": "Unexpected error",
}
"""Task failure messages by marker kind (the first four are the provider's documented ones)."""

REQUEST_FAULT_KINDS = frozenset({"500", "body", "drop"})
_MARKER = re.compile(r"\[(fail|slow|duration):([^\]\s:]+)(?::(\d+))?\]")


@dataclass(frozen=True, kw_only=True)
class Outage:
    """A time during which every new task fails, as in a provider's outage.

    Attributes:
        start: Seconds after the emulator's first API request when it begins.
        end: Seconds after that request when it ends (None: it goes on until switched off,
            see :meth:`~grok_imagine_async.testing.Emulator.outage`).
        message: The ``error_message`` every task created meanwhile fails with.
        fails_after: Seconds (emulator clock, not divided by ``time_scale``) from such a task's
            creation to its failure.
        free: Whether those failures report ``consumed_credits`` 0 (the provider did not
            charge them); otherwise 40, like any task.
    """

    start: float = 0.0
    end: float | None = None
    message: str = "Network error, please try again later."
    fails_after: float = 2.0
    free: bool = False

    def __post_init__(self) -> None:
        if self.start < 0 or (self.end is not None and self.end < self.start):
            raise ValueError(f"Outage needs 0 <= start <= end, got {self.start!r}, {self.end!r}")
        if self.fails_after < 0:
            raise ValueError(f"Outage.fails_after must be >= 0, got {self.fails_after!r}")

    def covers(self, elapsed: float) -> bool:
        """Whether a task created ``elapsed`` seconds after the first request falls in it."""
        return self.start <= elapsed and (self.end is None or elapsed < self.end)


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"FaultConfig.{name} must be between 0 and 1, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class FaultConfig:
    """Random faults of the emulated server; each rate is a probability per request.

    Rates apply to every authorised, admitted request to ``/v1/*`` (POSTs and polls alike).
    All draws come from the emulator's seeded random generator.

    Attributes:
        server_error_rate: Answer HTTP 500 with the error body (no task is created).
        body_error_rate: Answer HTTP 200 whose body carries ``"code": 500`` (no task).
        slow_rate: Delay the answer by ``slow_seconds`` on the emulator's clock (a POST's task
            is created before the delay, so a client timing out cannot know).
        slow_seconds: The delay of a slow answer.
        drop_rate: Close the connection without an answer after handling the request (a POST's
            task IS created: the ambiguous case).
        task_failure_rate: Fraction of new tasks that end ``failed`` with one of the
            documented error messages, chosen at random.
        markers: Whether prompt markers (``[fail:content]``...; see the module) are honoured.
        outages: Times during which every new task fails (see :class:`Outage`).
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
        for name in (
            "server_error_rate",
            "body_error_rate",
            "slow_rate",
            "drop_rate",
            "task_failure_rate",
        ):
            _check_rate(name, getattr(self, name))
        if self.slow_seconds < 0:
            raise ValueError(f"FaultConfig.slow_seconds must be >= 0, got {self.slow_seconds!r}")


def _is_seconds(text: str) -> bool:
    try:
        return float(text) >= 0
    except ValueError:
        return False


class MarkerError(ValueError):
    """Raised when a prompt carries a ``[fail:...]`` marker of an unknown kind."""


@dataclass(frozen=True, slots=True)
class RequestFaults:
    """What happens to one request's answer."""

    delay: float = 0.0
    server_error: bool = False
    body_error: bool = False
    drop: bool = False


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """How a new task ends: failure message (None: completes), videos, forced duration."""

    error_message: str | None = None
    video_count: int = 2
    duration: float | None = None
    free: bool = False


class FaultInjector:
    """Decides the faults of each request and task. Not thread-safe: callers hold a lock.

    Args:
        config: The random rates and whether markers count.
        rng: The emulator's one random generator (seeded for reproducible runs).
    """

    def __init__(self, config: FaultConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self._fired: Counter[tuple[str, str]] = Counter()  # (prompt, marker) -> times applied

    def _roll(self, rate: float) -> bool:
        # Draw only for active rates, so enabling one fault does not reshuffle another's sequence.
        return rate > 0.0 and self._rng.random() < rate

    def _markers(self, prompt: str) -> list[tuple[str, str, str, int | None]]:
        if not self._config.markers or "[" not in prompt:
            return []
        found = []
        for match in _MARKER.finditer(prompt):
            family, kind, count = match.group(1), match.group(2), match.group(3)
            if (
                family == "fail"
                and kind not in ERROR_MESSAGES
                and kind
                not in {
                    "empty",
                    *REQUEST_FAULT_KINDS,
                }
            ):
                raise MarkerError(f"unknown emulator marker {match.group(0)}")
            if family != "fail" and not _is_seconds(kind):
                raise MarkerError(f"emulator marker {match.group(0)} needs a number of seconds")
            found.append((match.group(0), family, kind, None if count is None else int(count)))
        return found

    def _fire(self, prompt: str, marker: str, limit: int | None) -> bool:
        key = (prompt, marker)
        if limit is not None and self._fired[key] >= limit:
            return False
        self._fired[key] += 1
        return True

    def check_prompt(self, prompt: str) -> None:
        """Validate the markers of ``prompt``.

        Raises:
            MarkerError: If a ``[fail:...]`` marker has an unknown kind.
        """
        self._markers(prompt)

    def for_request(self, prompt: str | None = None) -> RequestFaults:
        """The faults of one request; ``prompt`` is the POST's prompt (None for a poll)."""
        cfg = self._config
        server_error = self._roll(cfg.server_error_rate)
        body_error = self._roll(cfg.body_error_rate)
        drop = self._roll(cfg.drop_rate)
        delay = cfg.slow_seconds if self._roll(cfg.slow_rate) else 0.0
        text = prompt or ""
        for marker, family, kind, limit in self._markers(text):
            if family == "slow" and self._fire(text, marker, limit):
                delay += float(kind)
            elif (
                family == "fail" and kind in REQUEST_FAULT_KINDS and self._fire(text, marker, limit)
            ):
                server_error |= kind == "500"
                body_error |= kind == "body"
                drop |= kind == "drop"
        # One outcome per answer: a 500, else a 200 with an error code, else a hang-up after
        # handling (so a dropped POST always has its task).
        body_error = body_error and not server_error
        return RequestFaults(
            delay, server_error, body_error, drop and not (server_error or body_error)
        )

    def for_task(self, prompt: str, outage: Outage | None = None) -> TaskOutcome:
        """How the task created for ``prompt`` will end (``outage``: the one under way)."""
        if outage is not None:  # every new task fails, markers or not
            return TaskOutcome(outage.message, 0, outage.fails_after, outage.free)
        error_message: str | None = None
        video_count = 2
        duration: float | None = None
        if self._roll(self._config.task_failure_rate):
            error_message = self._rng.choice(list(ERROR_MESSAGES.values())[:4])
        for marker, family, kind, limit in self._markers(prompt):
            if family == "duration":
                duration = float(kind)
            elif family == "fail" and kind in ERROR_MESSAGES and self._fire(prompt, marker, limit):
                error_message = ERROR_MESSAGES[kind]
            elif family == "fail" and kind == "empty" and self._fire(prompt, marker, limit):
                video_count = 0
        return TaskOutcome(error_message, video_count, duration)
