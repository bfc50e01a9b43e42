"""The emulated server's memory, without HTTP: quotas, tasks, counters, their statistics.

A task's state is a function of the clock, computed when read. Methods never await and hold
one lock, so a test thread may read statistics while uvicorn serves from another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import math
import random
import sys
import threading
from array import array
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from types import MappingProxyType
from typing import Any

from .._clock import DEFAULT_CLOCK, Clock
from ._config import EmulatorConfig
from ._faults import FaultInjector, Outage, RequestFaults
from ._quota import GcraCounter, WindowCounter, WindowDecision

CREDITS_PER_TASK = 40
_SHARED_VALUES = frozenset({"mode", "ratio"})


class TaskState(enum.Enum):
    """Where a task is in its life, whatever words the server uses for it."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Task:
    """One generation: pending for ``queued_for`` seconds, processing until ``duration``, then
    failed with ``error_message`` or completed with ``video_count`` videos (``free``: a failure
    not charged). Times are on the emulator's monotonic clock."""

    task_id: str
    token: str
    request: Mapping[str, Any]
    created_at: float
    queued_for: float
    duration: float
    error_message: str | None
    video_count: int = 2
    free: bool = False

    @property
    def ends_at(self) -> float:
        """Clock time of the final state."""
        return self.created_at + self.duration

    def state(self, now: float) -> TaskState:
        """The state at clock time ``now``."""
        elapsed = now - self.created_at
        if elapsed < self.queued_for:
            return TaskState.PENDING
        if elapsed < self.duration:
            return TaskState.PROCESSING
        return TaskState.COMPLETED if self.error_message is None else TaskState.FAILED


@dataclass(frozen=True)
class EmulatorStatistics:
    """A snapshot of the emulator's counters (from :meth:`Emulator.statistics`).

    Attributes:
        requests_total: Requests received on ``/v1/*``, whatever their answer.
        requests_by_endpoint: Requests by ``"METHOD /path"`` (``"GET /videos"`` included).
        responses_by_status: Answers sent on ``/v1/*`` by HTTP status (dropped ones excluded).
        rate_limited: HTTP 429 answers sent.
        unauthorized: HTTP 401 answers sent.
        invalid_requests: HTTP 400 answers sent.
        not_found: HTTP 404 answers sent on ``/v1/*``.
        server_errors: Injected HTTP 500 answers.
        body_errors: Injected HTTP 200 answers carrying an error ``code``.
        dropped: Connections closed without an answer.
        slow: Answers delayed on purpose.
        posts_per_prompt: ``POST /v1/generate`` requests per prompt past authentication and
            the rate limit (retries after a 500 count here).
        tasks_per_prompt: Tasks created per prompt, i.e. generations paid for.
        duplicate_submissions: Prompts paid for again while an earlier task of theirs ran or
            after it completed, with how many times in all (a resubmission after a failure is
            not one; a prompt sent twice on purpose is).
        tasks_created: Tasks created.
        credits_consumed: Credits charged (40 per task, charged at creation).
        tasks_by_state: Tasks by state now, keyed ``pending``, ``processing``, ``completed``,
            ``failed`` whatever vocabulary the server speaks.
        videos_served: Result videos downloaded.
    """

    requests_total: int
    requests_by_endpoint: Mapping[str, int]
    responses_by_status: Mapping[int, int]
    rate_limited: int
    unauthorized: int
    invalid_requests: int
    not_found: int
    server_errors: int
    body_errors: int
    dropped: int
    slow: int
    posts_per_prompt: Mapping[str, int]
    tasks_per_prompt: Mapping[str, int]
    duplicate_submissions: Mapping[str, int]
    tasks_created: int
    credits_consumed: int
    tasks_by_state: Mapping[str, int]
    videos_served: int

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as plain JSON-ready data (what ``GET /_emulator/stats`` returns)."""
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return {
            name: {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else value
            for name, value in data.items()
        }


def _frozen(items: Mapping[Any, int]) -> Mapping[Any, int]:
    return MappingProxyType(dict(items))


class EmulatorState:
    """Quotas, tasks and counters of one emulator instance."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.clock: Clock = config.clock if config.clock is not None else DEFAULT_CLOCK
        self.lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self._faults = FaultInjector(config.faults, self._rng)
        refused = config.count_refused
        self._windows = {
            token: GcraCounter(limit, burst=config.burst, count_refused=refused)
            if config.window == "gcra"
            else WindowCounter(limit, config.window, count_refused=refused)
            for token, limit in config.rate_limits().items()
        }
        self.tasks: dict[str, Task] = {}  # by id, in creation order
        # 9 bytes a request (time, admitted): a 100,000-job benchmark keeps 250,000 of them.
        self._timeline: dict[str, tuple[array[float], bytearray]] = {
            t: (array("d"), bytearray()) for t in self._windows
        }
        # events ("slow"), requests by endpoint ("GET /v1/status") and answers by HTTP status
        self._counts: Counter[str | int] = Counter()
        self._posts_per_prompt: Counter[str] = Counter()
        self._last_now = 0.0
        self._first_request: float | None = None  # outages are timed from it
        self.outage: Outage | None = None  # switched on by hand, beside the configured ones

    def now(self) -> float:
        """The clock's time; outside an event loop, the last time seen (never going back)."""
        with contextlib.suppress(RuntimeError):  # a LoopClock read outside any event loop
            self._last_now = max(self._last_now, self.clock.monotonic())
        return self._last_now

    def unix(self, monotonic: float) -> float:
        """The Unix time of a clock reading."""
        return monotonic + (self.clock.unix() - self.clock.monotonic())

    def count(self, key: str | int) -> None:
        """Add one to an event's counter, an endpoint's requests or an HTTP status's answers."""
        with self.lock:
            self._counts[key] += 1

    def quota(self, token: str) -> int | None:
        """Requests per window granted to ``token``; None: not an accepted token."""
        window = self._windows.get(token)
        return None if window is None else window.limit.requests

    def admit(self, token: str, now: float) -> WindowDecision:
        """Count a request of ``token`` at ``now`` against its quota and log it."""
        with self.lock:
            if self._first_request is None:
                self._first_request = now
            decision = self._windows[token].hit(now)
            if not self.config.rate_limit_enabled and not decision.admitted:
                decision = WindowDecision(True, 0, decision.reset_after, 0.0)
            times, admitted = self._timeline[token]
            times.append(now)
            admitted.append(decision.admitted)
            return decision

    def request_faults(self, prompt: str | None) -> RequestFaults:
        """Draw the faults of one admitted request (``prompt`` for a POST).

        Raises:
            MarkerError: If the prompt has an invalid marker (then not counted as a POST).
        """
        with self.lock:
            faults = self._faults.for_request(prompt)
            if prompt is not None:
                self._posts_per_prompt[prompt] += 1
            return faults

    def create_task(self, token: str, request: dict[str, Any], now: float) -> Task:
        """Start a generation for ``token`` at ``now``: charge it and decide how it ends."""
        cfg = self.config
        prompt = str(request["prompt"])
        # Interned, "mode", "normal", "1:1"... are shared by the 100,000 tasks of a simulation.
        request = {
            sys.intern(key): sys.intern(value) if key in _SHARED_VALUES else value
            for key, value in request.items()
        }
        with self.lock:
            outcome = self._faults.for_task(prompt, self._outage_at(now))
            duration = outcome.duration
            if duration is None:  # lognormal around the median
                spread = math.exp(cfg.duration_sigma * self._rng.gauss(0.0, 1.0))
                duration = cfg.duration_median * spread / cfg.time_scale
            task_id = f"task_{self._rng.getrandbits(48):012x}"
            while task_id in self.tasks:
                task_id = f"task_{self._rng.getrandbits(48):012x}"
            queued = duration * cfg.queue_fraction
            task = Task(task_id, token, request, now, queued, duration, *outcome[:3])
            self.tasks[task_id] = task
            return task

    def _outage_at(self, now: float) -> Outage | None:
        if self.outage is not None:
            return self.outage
        elapsed = now - (now if self._first_request is None else self._first_request)
        return next((o for o in self.config.faults.outages if o.covers(elapsed)), None)

    def task(self, task_id: str, token: str | None = None) -> Task | None:
        """The task ``task_id`` if it exists (and belongs to ``token`` when given)."""
        task = self.tasks.get(task_id)
        if task is None or (token is not None and task.token != token):
            return None
        return task

    def statistics(self) -> EmulatorStatistics:
        """A frozen snapshot of every counter."""
        now = self.now()
        with self.lock:
            states = Counter(task.state(now).value for task in self.tasks.values())
            per_prompt = Counter(str(task.request["prompt"]) for task in self.tasks.values())
            c = self._counts
            by_endpoint = {k: n for k, n in c.items() if isinstance(k, str) and " " in k}
            return EmulatorStatistics(
                requests_total=sum(n for k, n in by_endpoint.items() if " /v1" in k),
                requests_by_endpoint=_frozen(by_endpoint),
                responses_by_status=_frozen({k: n for k, n in c.items() if isinstance(k, int)}),
                rate_limited=c[429],
                unauthorized=c[401],
                invalid_requests=c[400],
                not_found=c[404],
                server_errors=c["server_error"],
                body_errors=c["body_error"],
                dropped=c["dropped"],
                slow=c["slow"],
                posts_per_prompt=_frozen(self._posts_per_prompt),
                tasks_per_prompt=_frozen(per_prompt),
                duplicate_submissions=_frozen(self._unasked(per_prompt)),
                tasks_created=len(self.tasks),
                credits_consumed=CREDITS_PER_TASK * sum(not t.free for t in self.tasks.values()),
                tasks_by_state=_frozen({s.value: states[s.value] for s in TaskState}),
                videos_served=c["video"],
            )

    def _unasked(self, per_prompt: Counter[str]) -> dict[str, int]:
        """``duplicate_submissions``, computed under the lock."""
        tasks: dict[str, list[Task]] = {}
        for task in sorted(self.tasks.values(), key=lambda task: task.created_at):
            if per_prompt[prompt := str(task.request["prompt"])] > 1:
                tasks.setdefault(prompt, []).append(task)
        paid = {
            prompt: 1 + sum(a.state(b.created_at) is not TaskState.FAILED for a, b in pairwise(run))
            for prompt, run in tasks.items()
        }
        return {prompt: times for prompt, times in paid.items() if times > 1}

    def request_times(
        self, token: str | None = None, *, admitted_only: bool = False
    ) -> list[float]:
        """Clock times of the requests the limiter saw, sorted (one token or all)."""
        with self.lock:
            return sorted(
                t
                for name, (stamps, admitted) in self._timeline.items()
                if token in (None, name)
                for t, ok in zip(stamps, admitted, strict=True)
                if ok or not admitted_only
            )
