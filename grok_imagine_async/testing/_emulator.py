"""The emulator: a local stand-in for the Grok Imagine API, in process or on a socket."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _http
from .._settings import ENV_API_KEY, ENV_BASE_URL, ENV_PLAN, ENV_TIME_SCALE
from ._config import EmulatorConfig
from ._faults import Outage
from ._quota import max_in_window
from ._routes import Api
from ._state import EmulatorState, EmulatorStatistics, Task
from ._transport import DroppingStarlette, EmulatorTransport

if TYPE_CHECKING:
    import httpx

IN_PROCESS_BASE_URL = "http://emulator.local"


class Emulator:
    """An emulated Grok Imagine service: rate limits, task lifecycle, faults, inspection.

    Serve :attr:`app` with any ASGI server, or talk to it in process with :meth:`transport`
    or :meth:`client`. One emulator is one fresh server.

    Args:
        config: How the server behaves (default: token ``"test-token"`` on the free plan,
            100 requests per 60 s sliding window, generations of about 30 s).

    Example:
        >>> import anyio
        >>> async def main() -> str:
        ...     emulator = Emulator()
        ...     async with emulator.client() as http:
        ...         answer = await http.post("/v1/generate", json={"prompt": "a cat"})
        ...     return answer.json()["message"]
        >>> anyio.run(main)
        'success'
    """

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self._state = EmulatorState(config if config is not None else EmulatorConfig())
        self.app: DroppingStarlette = DroppingStarlette(routes=Api(self._state).routes())
        """The ASGI application (a Starlette app)."""

    @property
    def config(self) -> EmulatorConfig:
        """The settings this emulator runs with."""
        return self._state.config

    def transport(self) -> httpx.AsyncBaseTransport:
        """A transport reaching this emulator in process, for httpx2 and httpx clients alike.

        Unlike a bare ``ASGITransport``, a dropped connection raises ``RemoteProtocolError``
        and an answer later than the read timeout raises ``ReadTimeout``, as over a socket.
        """
        return EmulatorTransport(self.app)

    def client(self, token: str | None = "test-token", **kwargs: Any) -> httpx.AsyncClient:
        """An ``AsyncClient`` (httpx2's if installed, else httpx's) on :meth:`transport`.

        Args:
            token: Sent as ``Authorization: Bearer <token>`` (None: no header).
            **kwargs: Passed to ``AsyncClient`` (default ``base_url``:
                ``http://emulator.local``).
        """
        headers = _http.lib.Headers(kwargs.pop("headers", None))
        if token is not None:
            headers.setdefault("Authorization", f"Bearer {token}")
        kwargs.setdefault("base_url", IN_PROCESS_BASE_URL)
        return _http.lib.AsyncClient(transport=self.transport(), headers=headers, **kwargs)

    def environment(self, url: str, *, token: str | None = None) -> Mapping[str, str]:
        """The ``GROK_IMAGINE_*`` variables under which a default client talks to this
        emulator served at ``url`` and keeps its pace (quota as text, time scale).

        Args:
            url: Where the emulator listens (see :func:`serve_in_thread`).
            token: Which of its tokens to use (default: the first).

        Raises:
            KeyError: If ``token`` is not one of the emulator's.
        """
        chosen = token if token is not None else next(iter(self.config.tokens))
        return {
            ENV_BASE_URL: url,
            ENV_API_KEY: chosen,
            ENV_PLAN: self.config.rate_limits()[chosen].text,
            ENV_TIME_SCALE: f"{self.config.time_scale:g}",
        }

    def outage(self, outage: Outage | None = None, *, on: bool = True) -> None:
        """Switch an outage on (every task created from now on fails as ``outage`` says,
        by default :class:`Outage`'s) or, with ``on=False``, off. Timed outages are
        :attr:`FaultConfig.outages`."""
        self._state.outage = (outage or Outage()) if on else None

    def statistics(self) -> EmulatorStatistics:
        """A frozen snapshot of what the emulator saw and did so far."""
        return self._state.statistics()

    def request_times(
        self, token: str | None = None, *, admitted_only: bool = False
    ) -> list[float]:
        """Clock times of the ``/v1/*`` requests the rate limiter counted (not 401s), sorted.

        Args:
            token: One token's requests, or everyone's (None).
            admitted_only: Leave out the 429'd ones.
        """
        return self._state.request_times(token, admitted_only=admitted_only)

    def max_window_count(
        self, period: float, token: str | None = None, *, admitted_only: bool = False
    ) -> int:
        """The most :meth:`request_times` in any interval of ``period`` seconds: a client
        that respects a quota of N per ``period`` keeps it at N or below."""
        return max_in_window(self.request_times(token, admitted_only=admitted_only), period)

    def task_ids(self) -> list[str]:
        """The id of every task created so far, in the order they were created."""
        with self._state.lock:
            return list(self._state.tasks)

    def task_times(self, task_id: str) -> tuple[float, float] | None:
        """When task ``task_id`` was created and when it reaches its final state (clock
        times, like :meth:`request_times`), or None if there is no such task."""
        task = self._state.task(task_id)
        return None if task is None else (task.created_at, task.ends_at)

    def save_tasks(self, path: str | os.PathLike[str]) -> None:
        """Write every task to ``path`` (JSON, replaced atomically) for :meth:`load_tasks` in
        another process, where they go on generating. Rate-limit windows and counters are
        not kept."""
        state = self._state
        with state.lock:
            tasks = list(state.tasks.values())
        # Unix times: the other process's monotonic clock is another one.
        saved = [{**dataclasses.asdict(t), "created_at": state.unix(t.created_at)} for t in tasks]
        target = Path(path)
        temporary = target.with_name(f".{target.name}.tmp")
        temporary.write_text(json.dumps({"tasks": saved}), encoding="utf-8")
        os.replace(temporary, target)

    def load_tasks(self, path: str | os.PathLike[str]) -> int:
        """Take up the tasks :meth:`save_tasks` wrote to ``path``; return how many were new
        (a known task id keeps its task).

        Raises:
            OSError: If the file cannot be read.
            ValueError: If it does not hold saved tasks.
        """
        state = self._state
        offset = state.clock.unix() - state.now()
        try:
            saved = json.loads(Path(path).read_text(encoding="utf-8"))["tasks"]
            tasks = [Task(**{**t, "created_at": float(t["created_at"]) - offset}) for t in saved]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path} does not hold an emulator's tasks ({exc!r})") from None
        with state.lock:
            before = len(state.tasks)
            for task in tasks:
                state.tasks.setdefault(task.task_id, task)
            return len(state.tasks) - before

    def __repr__(self) -> str:
        return f"Emulator(tokens={len(self.config.tokens)}, window={self.config.window!r})"
