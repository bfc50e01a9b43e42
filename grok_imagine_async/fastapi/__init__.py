"""FastAPI integration: one rate-limited client and scheduler per app, handed to handlers as
``Annotated`` dependencies (see the FastAPI guide). Needs the ``fastapi`` extra.

Example:
    >>> from fastapi import FastAPI
    >>> from grok_imagine_async.fastapi import GrokJobs, grok_imagine_lifespan
    >>> app = FastAPI(lifespan=grok_imagine_lifespan)  # reads $GROK_IMAGINE_API_KEY
    >>> @app.post("/videos", status_code=202)
    ... async def start(prompt: str, jobs: GrokJobs) -> dict[str, str]:
    ...     job = await jobs.submit(prompt)
    ...     return {"id": job.key}
"""

from .._public import require_extra as _require_extra
from .._public import set_module as _set_module

_require_extra(__name__, "fastapi", "FastAPI", "fastapi")

from ._errors import (
    DEFAULT_MAX_BODY_BYTES,
    BacklogFullError,
    BodyLimitMiddleware,
    ErrorBody,
    FieldProblem,
    HTTPProblem,
    ProviderDownError,
    error_response,
    error_responses,
    http_error_for,
    install_error_handlers,
)
from ._jobs import (
    DEFAULT_MAX_JOBS,
    DEFAULT_MAX_QUEUED,
    Health,
    JobRegistry,
    event_stream_response,
    sse_event,
)
from ._lifespan import (
    GrokClient,
    GrokImagineResources,
    GrokJobs,
    GrokScheduler,
    grok_imagine_lifespan,
)

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
    "grok_imagine_lifespan",
    "http_error_for",
    "install_error_handlers",
    "sse_event",
]

_set_module(globals(), __all__)
