"""The environment that points an unmodified client at an emulator, and makes it keep pace."""

from __future__ import annotations

from collections.abc import Mapping

from .._settings import ENV_API_KEY, ENV_BASE_URL, ENV_PLAN, ENV_TIME_SCALE
from ._config import EmulatorConfig


def client_environment(
    config: EmulatorConfig, url: str, *, token: str | None = None
) -> Mapping[str, str]:
    """The ``GROK_IMAGINE_*`` variables under which a default client matches an emulator.

    The quota goes as text (``"100/6s"``), so the client paces itself to exactly what the
    emulator enforces, whatever its ``period`` and ``time_scale``; the time scale tells the
    client to expect generations, polls and retries that much sooner.

    Args:
        config: The emulator's settings.
        url: Where the emulator listens (``http://127.0.0.1:8000``).
        token: Which of its tokens to use (default: the first).

    Raises:
        KeyError: If ``token`` is not one of the emulator's.

    Example:
        >>> env = client_environment(EmulatorConfig(time_scale=10, period=6), "http://h:1")
        >>> env["GROK_IMAGINE_PLAN"], env["GROK_IMAGINE_TIME_SCALE"]
        ('100/6s', '10')
    """
    chosen = token if token is not None else next(iter(config.tokens))
    limit = config.rate_limits()[chosen]
    return {
        ENV_BASE_URL: url,
        ENV_API_KEY: chosen,
        ENV_PLAN: limit.text,
        ENV_TIME_SCALE: f"{config.time_scale:g}",
    }
