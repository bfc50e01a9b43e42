"""The emulator's settings: one frozen, keyword-only value object."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import astuple, dataclass, field
from types import MappingProxyType
from typing import Literal

from .._clock import Clock
from .._limiting.plans import Plan, RateLimit, resolve_rate_limit
from ._faults import FaultConfig


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """The words the emulated server writes in ``status`` for each state of a task.

    Named ones: ``"default"`` (pending/processing/completed/failed), ``"reseller"``
    (waiting/generating/success/fail), ``"upper"`` (IN_QUEUE/IN_PROGRESS/COMPLETED/FAILED).
    """

    pending: str = "pending"
    processing: str = "processing"
    completed: str = "completed"
    failed: str = "failed"

    @classmethod
    def named(cls, name: str | Vocabulary) -> Vocabulary:
        """The vocabulary called ``name``, or ``name`` itself if it already is one.

        Raises:
            ValueError: If the name is unknown.
        """
        if isinstance(name, Vocabulary):
            return name
        if name not in _NAMED:
            raise ValueError(f"unknown vocabulary {name!r}: expected one of {', '.join(_NAMED)}")
        return _NAMED[name]

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
class EmulatorConfig:
    """How the emulated Grok Imagine server behaves.

    Attributes:
        tokens: Accepted bearer tokens and the quota of each: a plan name or :class:`Plan`
            (its requests per ``period``), or a :class:`RateLimit` or text such as
            ``"100/6s"`` (used as is).
        period: Window length in seconds for plan quotas (60 like the real service).
        window: A ``"sliding"`` or ``"fixed"`` window of ``period`` seconds, or ``"gcra"``,
            a leaky bucket (nginx ``limit_req``).
        burst: Requests the ``"gcra"`` bucket holds when full.
        reset_format: ``X-RateLimit-Reset`` as seconds until reset or as a Unix time.
        count_refused: Whether 429'd requests also use up quota.
        duration_median: Median generation time in seconds (before ``time_scale``).
        duration_sigma: Spread of the lognormal generation time (0: always the median).
        time_scale: Divides generation times (10 makes a 30 s median take 3 s).
        queue_fraction: Part of a task's duration spent ``pending`` before ``processing``.
        vocabulary: Status words: a :class:`Vocabulary` or its name.
        result_ttl: Seconds after completion (not scaled) until a task's video URLs answer
            403, as expired signed URLs do. None: never.
        faults: Random failure rates (see :class:`FaultConfig`).
        seed: Seed of the one random generator behind durations, ids and faults.
        clock: Time source (None: the running event loop's clock, so virtual time works).

    Raises:
        ValueError: On a setting out of range or an unknown plan, window or vocabulary.
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
        if not self.period > 0:
            raise ValueError(f"period must be positive seconds, got {self.period!r}")
        if self.window not in ("sliding", "fixed", "gcra"):
            raise ValueError(f"window must be 'sliding', 'fixed' or 'gcra', got {self.window!r}")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(f"burst must be an int >= 1, got {self.burst!r}")
        if self.reset_format not in ("seconds", "unix"):
            raise ValueError(f"reset_format must be 'seconds' or 'unix', got {self.reset_format!r}")
        if not self.duration_median > 0 or self.duration_sigma < 0:
            raise ValueError("duration_median must be positive and duration_sigma >= 0")
        if not self.time_scale > 0:
            raise ValueError(f"time_scale must be positive, got {self.time_scale!r}")
        if not 0.0 <= self.queue_fraction <= 1.0:
            raise ValueError(f"queue_fraction must be between 0 and 1, got {self.queue_fraction!r}")
        if self.result_ttl is not None and not self.result_ttl > 0:
            raise ValueError(f"result_ttl must be positive or None, got {self.result_ttl!r}")
        if not self.tokens:
            raise ValueError("tokens must name at least one accepted token")
        object.__setattr__(self, "vocabulary", Vocabulary.named(self.vocabulary))
        self.rate_limits()  # fail now on an unknown plan, not at the first request

    def rate_limits(self) -> Mapping[str, RateLimit]:
        """Each token's quota, plan tiers applied over :attr:`period`."""
        limits = {}
        for token, plan in self.tokens.items():
            if isinstance(plan, RateLimit) or (isinstance(plan, str) and "/" in plan):
                limits[token] = resolve_rate_limit(plan)  # a quota of its own, used as is
            else:
                limits[token] = RateLimit(resolve_rate_limit(plan).requests, self.period)
        return MappingProxyType(limits)
