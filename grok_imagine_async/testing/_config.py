"""The emulator's settings, frozen and checked when made (NaN fails every rule); its statistics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import astuple, dataclass, field, fields
from types import MappingProxyType
from typing import Any, Literal

from .._clock import Clock
from .._errors import ConfigurationError
from .._limiting.plans import Plan, RateLimit, resolve_rate_limit


def _check(owner: object, **rules: tuple[bool, str]) -> None:
    """Raise ConfigurationError on the first setting whose rule, (valid, what it must be), fails."""
    for name, (valid, rule) in rules.items():
        if not valid:
            value = getattr(owner, name)
            raise ConfigurationError(f"{type(owner).__name__}.{name} must {rule}, got {value!r}")


ERROR_MESSAGES = {  # by marker kind; the first four are the provider's documented ones
    "content": "Inappropriate content, please try another prompt.",
    "input": "File type not supported",
    "network": "Network error, please try again later.",
    "build": "grok imagine build failed",
    "unknown": "Unexpected error",
}


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """The ``status`` words of the emulated server per task state: ``"default"`` (pending/...),
    ``"reseller"`` (waiting/generating/success/fail) or ``"upper"`` (IN_QUEUE/IN_PROGRESS/...)."""

    pending: str = "pending"
    processing: str = "processing"
    completed: str = "completed"
    failed: str = "failed"

    @classmethod
    def named(cls, name: str | Vocabulary) -> Vocabulary:
        """The vocabulary called ``name`` (or ``name`` itself, a vocabulary).

        Raises:
            ConfigurationError: If the name is unknown.
        """
        vocabulary = name if isinstance(name, Vocabulary) else _NAMED.get(name)
        if vocabulary is None:
            known = ", ".join(_NAMED)
            raise ConfigurationError(f"unknown vocabulary {name!r}: expected one of {known}")
        return vocabulary

    @staticmethod
    def names() -> dict[str, str]:
        """Each named vocabulary's words, as ``{"reseller": "waiting/generating/..."}``."""
        return {name: "/".join(astuple(words)) for name, words in _NAMED.items()}


_NAMED = {
    "default": Vocabulary(),
    "reseller": Vocabulary("waiting", "generating", "success", "fail"),
    "upper": Vocabulary("IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED"),
}


@dataclass(frozen=True, kw_only=True)
class Outage:
    """A time during which every new task fails, as in a provider's outage.

    Attributes:
        start: Seconds after the emulator's first API request when it begins.
        end: Seconds after that request when it ends (None: until
            :meth:`~grok_imagine_async.testing.Emulator.outage` ends it).
        message: The ``error_message`` of every task created meanwhile.
        fails_after: Seconds (not scaled) from such a task's creation to its failure.
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
        _check(
            self,
            start=(self.start >= 0, "be >= 0"),
            end=(self.end is None or self.end >= self.start, "be None or >= start"),
            fails_after=(self.fails_after >= 0, "be >= 0"),
        )

    def covers(self, elapsed: float) -> bool:
        """Whether a task created ``elapsed`` seconds after the first request falls in it."""
        return self.start <= elapsed and (self.end is None or elapsed < self.end)


@dataclass(frozen=True, kw_only=True)
class FaultConfig:
    """Random faults of the emulated server, each rate a probability per admitted ``/v1/*``
    request (POSTs and polls alike), drawn from the emulator's seeded generator.

    Attributes:
        server_error_rate: Answer HTTP 500 with the error body (no task is created).
        body_error_rate: Answer HTTP 200 whose body carries ``"code": 500`` (no task).
        slow_rate: Delay the answer by ``slow_seconds`` (a POST's task is created first).
        slow_seconds: The delay of a slow answer.
        drop_rate: Hang up unanswered after handling it (a POST's task exists: the ambiguous case).
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
        rates = (f.name for f in fields(self) if f.name.endswith("_rate"))
        rules = {name: (0 <= getattr(self, name) <= 1, "be between 0 and 1") for name in rates}
        _check(self, **rules, slow_seconds=(self.slow_seconds >= 0, "be >= 0"))


@dataclass(frozen=True, kw_only=True)
class EmulatorConfig:
    """How the emulated Grok Imagine server behaves.

    Attributes:
        tokens: Accepted bearer tokens and the quota of each: a plan name or :class:`Plan`
            (its requests per ``period``), or a :class:`RateLimit` or text (``"100/6s"``).
        period: Window length in seconds for plan quotas (60 like the real service).
        window: A ``"sliding"`` or ``"fixed"`` window, or ``"gcra"`` (nginx ``limit_req``).
        burst: Requests the ``"gcra"`` bucket holds when full.
        reset_format: ``X-RateLimit-Reset`` as seconds until reset or as a Unix time.
        count_refused: Whether 429'd requests also use up quota.
        duration_median: Median generation time in seconds (before ``time_scale``).
        duration_sigma: Spread of the lognormal generation time (0: always the median).
        time_scale: Divides generation times (10 makes a 30 s median take 3 s).
        queue_fraction: Part of a task's duration spent ``pending`` before ``processing``.
        vocabulary: Status words: a :class:`Vocabulary` or its name.
        result_ttl: Seconds (not scaled) after completion until video URLs answer 403 (None: never).
        faults: Random failure rates (see :class:`FaultConfig`).
        seed: Seed of the random generator behind durations, ids and faults.
        clock: Time source (None: the running event loop's, so virtual time works).

    Raises:
        ConfigurationError: On a setting out of range or an unknown plan, window or vocabulary.
    """

    tokens: Mapping[str, str | Plan | RateLimit] = field(
        default_factory=lambda: {"test-token": "free"}
    )
    period: float = 60.0
    window: Literal["sliding", "fixed", "gcra"] = "sliding"
    burst: int = 1
    reset_format: Literal["seconds", "unix"] = "seconds"
    count_refused: bool = False
    duration_median: float = 30.0
    duration_sigma: float = 0.5
    time_scale: float = 1.0
    queue_fraction: float = 0.2
    vocabulary: str | Vocabulary = "default"
    result_ttl: float | None = 86_400.0
    faults: FaultConfig = field(default_factory=FaultConfig)
    seed: int | None = None
    clock: Clock | None = None

    def __post_init__(self) -> None:
        burst_ok = isinstance(self.burst, int) and not isinstance(self.burst, bool)
        _check(
            self,
            period=(self.period > 0, "be positive seconds"),
            window=(self.window in ("sliding", "fixed", "gcra"), "be 'sliding', 'fixed' or 'gcra'"),
            burst=(burst_ok and self.burst >= 1, "be an int >= 1"),
            reset_format=(self.reset_format in ("seconds", "unix"), "be 'seconds' or 'unix'"),
            duration_median=(self.duration_median > 0, "be positive"),
            duration_sigma=(self.duration_sigma >= 0, "be >= 0"),
            time_scale=(self.time_scale > 0, "be positive"),
            queue_fraction=(0.0 <= self.queue_fraction <= 1.0, "be between 0 and 1"),
            result_ttl=(self.result_ttl is None or self.result_ttl > 0, "be positive or None"),
            tokens=(bool(self.tokens), "name at least one accepted token"),
        )
        object.__setattr__(self, "vocabulary", Vocabulary.named(self.vocabulary))
        self.rate_limits()  # fail now on an unknown plan, not at the first request

    def rate_limits(self) -> Mapping[str, RateLimit]:
        """Each token's quota, plan tiers applied over :attr:`period`."""
        limits = {
            token: resolve_rate_limit(plan, period=self.period)
            for token, plan in self.tokens.items()
        }
        return MappingProxyType(limits)


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
        posts_per_prompt: ``POST /v1/generate`` requests per prompt, past auth and quota.
        tasks_per_prompt: Tasks created per prompt, i.e. generations paid for.
        duplicate_submissions: Prompts paid for again while an earlier task of theirs had
            not failed, with the times paid in all.
        tasks_created: Tasks created.
        credits_consumed: Credits charged (40 per task, at creation).
        tasks_by_state: Tasks by state now (pending, processing, completed, failed).
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
        data = {field.name: getattr(self, field.name) for field in fields(self)}
        return {
            name: {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else value
            for name, value in data.items()
        }
