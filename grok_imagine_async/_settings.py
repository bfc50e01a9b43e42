"""The client's settings: arguments first, then ``GROK_IMAGINE_*``, scaled for a faster server
(:meth:`Settings.from_env`), for the client, the CLI and the FastAPI app."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

from ._backoff import PollPolicy, RetryPolicy
from ._errors import ConfigurationError
from ._limiting.plans import Plan, RateLimit, resolve_rate_limit
from ._models import http_url_problem
from ._redact import check_token
from ._scheduling.breaker import BreakerPolicy

DEFAULT_BASE_URL = "https://grokimagineapi.com"
ENV_API_KEY = "GROK_IMAGINE_API_KEY"
ENV_BASE_URL = "GROK_IMAGINE_BASE_URL"
ENV_PLAN = "GROK_IMAGINE_PLAN"
ENV_TIME_SCALE = "GROK_IMAGINE_TIME_SCALE"
ENV_REDIS_PASSWORD = "GROK_IMAGINE_REDIS_PASSWORD"  # for a redis:// URL that names none
DEFAULT_EXPECTED_DURATION = 30.0  # the real service's typical generation time (10 to 60 s)
DEFAULT_MAX_PROMPT_CHARS = 5_000  # what resellers of the model accept: longer is a mistake


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Bounds that keep a misbehaving (or hostile) server from exhausting memory, disk or time.

    Args:
        max_answer_bytes: The most an API answer may hold, decompressed (default 1 MiB).
        max_video_bytes: The most one downloaded video may hold (default 1 GiB); a longer
            download is stopped and its partial file deleted.
        max_prompt_chars: The longest prompt sent (default 5,000); a longer one raises
            :class:`InvalidRequestError` before anything is paid.
        max_request_time: The most one API request may take to its answer's last byte
            (default 120 s); a submission that reaches it is ambiguous.
        max_redirects: Redirects a download follows (default 5; 0: none).

    Raises:
        ConfigurationError: If a bound is not positive (``max_redirects`` may be 0).
    """

    max_answer_bytes: int = 1 << 20
    max_video_bytes: int = 1 << 30
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS
    max_request_time: float = 120.0
    max_redirects: int = 5

    def __post_init__(self) -> None:
        for name in ("max_answer_bytes", "max_video_bytes", "max_prompt_chars", "max_redirects"):
            value, low = getattr(self, name), 0 if name == "max_redirects" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigurationError(f"{name} must be a whole number >= {low}, got {value!r}")
        if not self.max_request_time > 0:  # also refuses NaN
            raise ConfigurationError(f"max_request_time must be > 0, got {self.max_request_time!r}")


def prompt_problem(prompt: str, limits: Limits) -> str | None:
    """Why ``limits`` refuse ``prompt``, or None: one rule for the client and the input check."""
    if len(prompt) <= limits.max_prompt_chars:
        return None
    return (
        f"the prompt has {len(prompt)} characters, more than {limits.max_prompt_chars} "
        "(Limits.max_prompt_chars)"
    )


# The real service's defaults (frozen values: one instance serves every Settings).
_FREE, _RETRY, _POLL = RateLimit(100, 60.0), RetryPolicy(), PollPolicy()
_LIMITS, _BREAKER = Limits(), BreakerPolicy()
_BREAKER_WAITS = "give_up_unreachable warmup_age warmup_max_wait probe_wait_initial probe_wait_max"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """What a client keeps to, resolved once: token, server, quota, policies, expectations.

    Build it with :meth:`from_env` (arguments, then ``GROK_IMAGINE_*``) or directly.

    Args:
        api_key: The bearer token (never shown in the repr).
        rate_limit: The quota of the client's default limiter.
        poll: The poll schedule of ``wait()``, and of a scheduler while the quota is idle.
        breaker: When a scheduler pauses on an outage or stops on refusals (None: never).
        expected_duration: The median generation time assumed before any was seen, seconds.

    Raises:
        ConfigurationError: If the token or URL is invalid, or a value has the wrong type.

    Example:
        >>> settings = Settings.from_env(api_key="sk-test", plan="pro", time_scale=10)
        >>> settings.rate_limit, settings.expected_duration
        (RateLimit(requests=1000, period=6.0), 3.0)
    """

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    rate_limit: RateLimit = _FREE
    retry: RetryPolicy = _RETRY
    poll: PollPolicy = _POLL
    limits: Limits = _LIMITS
    breaker: BreakerPolicy | None = _BREAKER
    expected_duration: float = DEFAULT_EXPECTED_DURATION

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_key", check_token(self.api_key))
        object.__setattr__(self, "base_url", _checked_base_url(self.base_url))
        kinds = {"rate_limit": RateLimit, "retry": RetryPolicy, "poll": PollPolicy}
        for name, kind in {**kinds, "limits": Limits, "breaker": BreakerPolicy}.items():
            value = getattr(self, name)
            if not isinstance(value, kind) and not (name == "breaker" and value is None):
                got = type(value).__name__
                raise ConfigurationError(f"{name} must be a {kind.__name__}, got {got}")
        if not (duration := self.expected_duration) > 0:
            raise ConfigurationError(f"expected_duration must be positive, got {duration!r}")

    @classmethod
    def from_env(
        cls,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        plan: str | Plan | RateLimit | None = None,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
        limits: Limits | None = None,
        time_scale: float | None = None,
    ) -> Settings:
        """The settings the arguments give, the environment filling in what they leave out.

        Args:
            api_key: The token; else ``$GROK_IMAGINE_API_KEY``.
            base_url: The API root; else ``$GROK_IMAGINE_BASE_URL``; else the real service.
            plan: As ``AsyncGrokImagine(plan=)``; else ``$GROK_IMAGINE_PLAN``; else ``"free"``.
            time_scale: How many times faster than real time the server runs (an emulator's);
                else ``$GROK_IMAGINE_TIME_SCALE``; else 1. It divides the defaults' durations
                (a plan's window, retry, poll and breaker waits), not given values.

        Raises:
            ConfigurationError: If no token is found, or a value is invalid.
        """
        key = api_key if api_key is not None else os.environ.get(ENV_API_KEY)
        if key is None or not key.strip():
            raise ConfigurationError(
                f"no API key: pass api_key=... or set the {ENV_API_KEY} environment variable"
            )
        scale = time_scale_from(time_scale)
        plan = plan or os.environ.get(ENV_PLAN) or "free"
        quota = resolve_rate_limit(plan, period=60.0 / scale)  # a plan's minute, scaled
        return cls(
            api_key=key,
            base_url=base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL,
            rate_limit=quota,
            retry=retry or _scaled(_RETRY, scale, "wait_initial", "wait_max"),
            poll=poll or _scaled(_POLL, scale, "wait_initial", "wait_max"),
            limits=_LIMITS if limits is None else limits,
            breaker=_scaled(_BREAKER, scale, *_BREAKER_WAITS.split()),
            expected_duration=DEFAULT_EXPECTED_DURATION / scale,
        )


_Policy = TypeVar("_Policy", PollPolicy, RetryPolicy, BreakerPolicy)


def _checked_base_url(url: str) -> str:
    """``url`` without trailing slashes, if the API's paths can follow it; else a
    :class:`ConfigurationError` naming what is wrong (before anything is sent)."""
    url = url.rstrip("/")
    problem = http_url_problem(url)
    if problem is None and ("?" in url or "#" in url):
        problem = "must not carry a query or a fragment (the API's paths follow it)"
    elif problem is None and url.lower().endswith("/v1"):  # would send to .../v1/v1/generate
        problem = "must be the API's root, without /v1 (the client adds /v1/generate)"
    if problem is not None:
        raise ConfigurationError(f"base_url {problem}, got {url!r}")
    return url


def _scaled(policy: _Policy, scale: float, *durations: str) -> _Policy:
    """``policy`` with its ``durations`` divided by ``scale`` (None stays None)."""
    values: dict[str, Any] = {name: getattr(policy, name) for name in durations}
    return dataclasses.replace(policy, **{k: v and v / scale for k, v in values.items()})


def time_scale_from(value: float | None) -> float:
    """How much faster the server runs: ``value``, else ``$GROK_IMAGINE_TIME_SCALE``, else 1."""
    if value is None:
        text = os.environ.get(ENV_TIME_SCALE, "").strip()
        if not text:
            return 1.0
        try:
            value = float(text)
        except ValueError:
            raise ConfigurationError(f"${ENV_TIME_SCALE} must be a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ConfigurationError(f"time_scale must be a positive number, got {value!r}")
    return value


def with_redis_password(url: str) -> str:
    """``url`` with ``$GROK_IMAGINE_REDIS_PASSWORD`` as its password if it names none (not argv)."""
    password = os.environ.get(ENV_REDIS_PASSWORD)
    scheme, sep, rest = url.partition("://")
    if not password or not sep or "@" in rest.partition("/")[0]:
        return url
    return f"{scheme}://:{quote(password, safe='')}@{rest}"
