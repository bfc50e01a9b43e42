"""FastAPI integration: one rate-limited client and scheduler per app, handed to handlers.

A web app whose handlers each built their own client would have no shared rate limit, no
connection reuse, and would meet 429s under load. Instead, :func:`grok_imagine_lifespan` opens
one :class:`~grok_imagine_async.AsyncGrokImagine` and one :class:`~grok_imagine_async.JobScheduler`
when the app starts and closes them when it stops; handlers get them, and a :class:`JobRegistry`
to find jobs by id, through ``Annotated`` dependencies. Handlers never poll: the scheduler
does, for every job at once, within the plan's quota. The registry reads every job from the
app's one job store (in memory, a SQLite ``journal=``, or Redis): with ``redis_url=``, any
number of workers share the quota, the budget and the jobs.

Needs the ``fastapi`` extra: ``pip install "grok-imagine-async[fastapi]"``.

Example:
    >>> from fastapi import FastAPI
    >>> from grok_imagine_async.fastapi import GrokJobs, grok_imagine_lifespan
    >>> app = FastAPI(lifespan=grok_imagine_lifespan)  # reads $GROK_IMAGINE_API_KEY
    >>> @app.post("/videos", status_code=202)
    ... async def start(prompt: str, jobs: GrokJobs) -> dict[str, str]:
    ...     job = await jobs.submit(prompt)
    ...     return {"id": job.key}
"""

try:
    import fastapi as _fastapi  # noqa: F401  (the extra this integration needs)
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'grok_imagine_async.fastapi needs FastAPI: pip install "grok-imagine-async[fastapi]" '
        f"({exc})"
    ) from exc

from .._errors import BacklogFullError, ProviderDownError
from .._public import set_module as _set_module
from ._errors import (
    DEFAULT_MAX_BODY_BYTES,
    BodyLimitMiddleware,
    ErrorBody,
    FieldProblem,
    HTTPProblem,
    error_response,
    error_responses,
    http_error_for,
    install_error_handlers,
)
from ._jobs import DEFAULT_MAX_JOBS, DEFAULT_MAX_QUEUED, Health, JobRegistry
from ._lifespan import (
    GrokClient,
    GrokImagineResources,
    GrokJobs,
    GrokScheduler,
    get_client,
    get_jobs,
    get_resources,
    get_scheduler,
    grok_imagine_lifespan,
)
from ._sse import event_stream_response, sse_event

__all__ = [
    "BacklogFullError",
    "BodyLimitMiddleware",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_JOBS",
    "DEFAULT_MAX_QUEUED",
    "ErrorBody",
    "FieldProblem",
    "GrokClient",
    "GrokImagineResources",
    "GrokJobs",
    "GrokScheduler",
    "HTTPProblem",
    "Health",
    "JobRegistry",
    "ProviderDownError",
    "error_response",
    "error_responses",
    "event_stream_response",
    "get_client",
    "get_jobs",
    "get_resources",
    "get_scheduler",
    "grok_imagine_lifespan",
    "http_error_for",
    "install_error_handlers",
    "sse_event",
]

_set_module(globals(), __all__)
