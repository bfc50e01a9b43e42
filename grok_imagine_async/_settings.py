"""Where the client's settings come from: arguments first, then documented environment variables.

Each is read once, when the client is built, and checked with an error that names it (and
never shows the token).
"""

from __future__ import annotations

import math
import os

from ._errors import ConfigurationError
from ._http import HTTPClient
from ._observe import Observer
from ._redact import check_token

DEFAULT_BASE_URL = "https://grokimagineapi.com"
ENV_API_KEY = "GROK_IMAGINE_API_KEY"
ENV_BASE_URL = "GROK_IMAGINE_BASE_URL"
ENV_PLAN = "GROK_IMAGINE_PLAN"
ENV_TIME_SCALE = "GROK_IMAGINE_TIME_SCALE"
ENV_REDIS_PASSWORD = "GROK_IMAGINE_REDIS_PASSWORD"
"""The Redis password, for a ``redis://`` URL (``--redis-url``, ``--journal``) that names none."""


def api_key_from(api_key: str | None) -> str:
    """The token: ``api_key``, else ``$GROK_IMAGINE_API_KEY``, checked (never shown)."""
    key = api_key if api_key is not None else os.environ.get(ENV_API_KEY)
    if key is None or not key.strip():
        raise ConfigurationError(
            "no API key: pass api_key=... to AsyncGrokImagine or set the "
            f"{ENV_API_KEY} environment variable"
        )
    return check_token(key)


def base_url_from(base_url: str | None, http_client: HTTPClient | None) -> str:
    """The API root: ``base_url``, else ``$GROK_IMAGINE_BASE_URL``, else the given client's."""
    if base_url is None:
        base_url = os.environ.get(ENV_BASE_URL)
    if base_url is None and http_client is not None and str(http_client.base_url):
        base_url = str(http_client.base_url)
    url = (base_url or DEFAULT_BASE_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"base_url must be an http(s) URL, got {url!r}")
    return url


def user_agent() -> str:
    """The ``User-Agent`` the client's own HTTP client sends."""
    from ._version import __version__

    return f"grok-imagine-async/{__version__}"


def observer_for(telemetry: bool | Observer | None) -> Observer | None:
    """What ``telemetry=`` asks for: nothing, the OpenTelemetry observer, or the one given."""
    if telemetry is None or telemetry is False:
        return None
    if telemetry is True:
        try:
            from .otel import Telemetry
        except ImportError as exc:
            raise ConfigurationError(str(exc)) from None
        return Telemetry()
    return telemetry


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
