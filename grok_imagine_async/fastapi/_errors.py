"""What a web handler should answer for each of our exceptions. Pure: no web framework here.

:func:`http_error_for` maps an exception to an :class:`HTTPProblem` (status, stable error code,
a message safe to show a caller). Messages never carry a stack trace, an upstream body or the
API token: the client already strips the token from every exception, and for upstream failures
we say what failed in our own words rather than relaying the provider's text.

The exceptions an app meets (:class:`~grok_imagine_async.fastapi.BacklogFullError`,
:class:`~grok_imagine_async.SchedulerClosedError`) are in the package's one exception tree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .._errors import (
    AmbiguousSubmitError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BacklogFullError,
    BadRequestError,
    BudgetExceededError,
    ConfigurationError,
    InvalidRequestError,
    JournalError,
    ProviderDownError,
    RateLimitError,
    SchedulerClosedError,
    TaskFailedError,
    WaitTimeoutError,
)
from .._models import FailureClass


@dataclass(frozen=True, slots=True)
class HTTPProblem:
    """How to answer an HTTP caller for one exception.

    Attributes:
        status_code: The HTTP status to answer with.
        code: A stable, machine-readable error code (e.g. ``"budget_exceeded"``).
        detail: A message safe to show the caller.
        retry_after: Seconds for a ``Retry-After`` header, if waiting can help.
    """

    status_code: int
    code: str
    detail: str
    retry_after: float | None = None

    @property
    def headers(self) -> dict[str, str]:
        """``Retry-After`` (whole seconds, rounded up) when set, else nothing."""
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


_UPSTREAM = "the video service failed"
STORE_RETRY = 5.0
"""Seconds a caller is told to wait after the job store failed (an outage's usual length)."""
DOWN_RETRY = 30.0
"""Seconds a caller is told to wait while the video service fails, if no probe is due."""
_DOWN = {
    "outage": "the video service is failing right now; new videos are not started until it "
    "works again",
    "unanswered": "the video service is not answering; new videos are not started until it does",
    "unreachable": "the video service cannot be reached; new videos cannot be started",
    "refused": "the video service refused every recent video; new ones are not started",
}
# Advice addressed to the programmer, e.g. "(pass allow_unlisted=True to send it anyway)":
# an HTTP caller can act on none of it.
_PYTHON_ADVICE = re.compile(r"\s*\(pass [^()]*\)")

# Failure classes that are the caller's doing (their prompt or image): 422, as bad input.
_CALLERS_FAULT = {
    FailureClass.CONTENT_POLICY: "the prompt or image was refused by the video service",
    FailureClass.INVALID_INPUT: "the video service cannot use this input",
}


def http_error_for(exc: BaseException) -> HTTPProblem:
    """The HTTP answer for ``exc``: bad input 422, budget 402, backlog 429, upstream 502/503/504.

    ====================================  ======  ============================
    exception                             status  code
    ====================================  ======  ============================
    InvalidRequestError                   422     ``invalid_request``
    BadRequestError (upstream 400)        422     ``rejected_by_upstream``
    TaskFailedError, refused content      422     ``content_policy``
    TaskFailedError, unusable input       422     ``invalid_input``
    TaskFailedError, anything else        502     its failure class
    BudgetExceededError                   402     ``budget_exceeded``
    BacklogFullError                      429     ``too_many_pending`` + Retry-After
    RateLimitError (upstream quota)       503     ``upstream_rate_limited`` + Retry-After
    SchedulerClosedError                  503     ``unavailable``
    ProviderDownError (breaker)           503     ``upstream_down`` + Retry-After
    JournalError (the job store)          503     ``store_unavailable`` + Retry-After
    APITimeoutError                       504     ``upstream_timeout``
    WaitTimeoutError (``job.wait``)       504     ``not_ready``
    AmbiguousSubmitError                  502     ``ambiguous_submit``
    AuthenticationError, other APIError   502     ``upstream_error``
    ConfigurationError, anything else     500     ``internal_error``
    ====================================  ======  ============================

    Args:
        exc: Any exception; those outside our tree are internal errors.

    Returns:
        The answer to give. Its ``detail`` is safe to show: no token, no stack trace, no
        upstream body, no advice meant for the Python programmer (``pass allow_unlisted=True``).

    Example:
        >>> http_error_for(BudgetExceededError(max_credits=80, committed_credits=80)).status_code
        402
    """
    if isinstance(exc, InvalidRequestError):
        return HTTPProblem(422, "invalid_request", _PYTHON_ADVICE.sub("", str(exc)))
    if isinstance(exc, TaskFailedError):
        return _task_failed(exc)
    if isinstance(exc, BudgetExceededError):
        return HTTPProblem(402, "budget_exceeded", "the credit budget for videos is used up")
    if isinstance(exc, BacklogFullError):
        return HTTPProblem(429, "too_many_pending", str(exc), exc.retry_after)
    if isinstance(exc, SchedulerClosedError):
        return HTTPProblem(503, "unavailable", "video generation is not available right now")
    if isinstance(exc, WaitTimeoutError):  # a handler's bounded wait: the job goes on
        return HTTPProblem(504, "not_ready", "the video was not ready in time; ask again later")
    if isinstance(exc, ProviderDownError):
        detail = _DOWN.get(exc.reason, _DOWN["outage"])
        return HTTPProblem(503, "upstream_down", detail, exc.retry_after or DOWN_RETRY)
    if isinstance(exc, JournalError):  # Redis refusing or gone, a full disk: try again later
        return HTTPProblem(
            503, "store_unavailable", "the job store is not available right now", STORE_RETRY
        )
    if isinstance(exc, APIError):
        return _upstream(exc)
    if isinstance(exc, ConfigurationError):
        return HTTPProblem(500, "internal_error", "the server is not configured correctly")
    return HTTPProblem(500, "internal_error", "internal server error")


def _task_failed(exc: TaskFailedError) -> HTTPProblem:
    failure = exc.failure_class
    if failure in _CALLERS_FAULT:
        return HTTPProblem(422, failure.value, _CALLERS_FAULT[failure])
    if failure is FailureClass.TRANSIENT:
        return HTTPProblem(502, failure.value, f"{_UPSTREAM} for now; try again later")
    return HTTPProblem(502, failure.value, f"{_UPSTREAM} to generate this video")


def _upstream(exc: APIError) -> HTTPProblem:
    if isinstance(exc, BadRequestError):
        return HTTPProblem(422, "rejected_by_upstream", "the video service rejected this request")
    if isinstance(exc, RateLimitError):
        return HTTPProblem(
            503, "upstream_rate_limited", "the video service is busy", exc.retry_after or 60.0
        )
    if isinstance(exc, APITimeoutError):
        return HTTPProblem(504, "upstream_timeout", "the video service did not answer in time")
    if isinstance(exc, AmbiguousSubmitError):
        return HTTPProblem(
            502,
            "ambiguous_submit",
            "the video service did not confirm the job; it was not sent again, to avoid "
            "paying twice",
        )
    if isinstance(exc, AuthenticationError):
        # The operator's problem, not the caller's: say nothing about credentials.
        return HTTPProblem(502, "upstream_error", _UPSTREAM)
    if isinstance(exc, APIStatusError):
        return HTTPProblem(502, "upstream_error", f"{_UPSTREAM} (HTTP {exc.status_code})")
    return HTTPProblem(502, "upstream_error", _UPSTREAM)
