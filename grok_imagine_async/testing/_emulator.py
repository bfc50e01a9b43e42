"""The emulator: a local stand-in for the Grok Imagine API, in process or on a socket."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _http
from ._config import EmulatorConfig, client_environment
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
    or :meth:`client`. State lives in the object: one emulator is one fresh server.

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
        self._config = config if config is not None else EmulatorConfig()
        self._state = EmulatorState(self._config)
        self.app: DroppingStarlette = DroppingStarlette(routes=Api(self._state).routes())
        """The ASGI application (a Starlette app)."""

    @property
    def config(self) -> EmulatorConfig:
        """The settings this emulator runs with."""
        return self._config

    def transport(self) -> httpx.AsyncBaseTransport:
        """A transport reaching this emulator in process, for httpx2 and httpx clients alike.

        Unlike a bare ``ASGITransport``, a dropped connection raises ``RemoteProtocolError``
        and a slow answer beyond the request's read timeout raises ``ReadTimeout`` (of the
        client's library), as over a socket.
        """
        return EmulatorTransport(self.app)

    def client(self, token: str | None = "test-token", **kwargs: Any) -> httpx.AsyncClient:
        """An ``AsyncClient`` on :meth:`transport`, base URL ``http://emulator.local``.

        Of httpx2 if it is installed, else of httpx (like a default ``AsyncGrokImagine``'s).

        Args:
            token: Sent as ``Authorization: Bearer <token>`` on every request (None: no header).
            **kwargs: Passed to ``AsyncClient`` (``base_url``, ``timeout``...).
        """
        headers = _http.lib.Headers(kwargs.pop("headers", None))
        if token is not None:
            headers.setdefault("Authorization", f"Bearer {token}")
        kwargs.setdefault("base_url", IN_PROCESS_BASE_URL)
        return _http.lib.AsyncClient(transport=self.transport(), headers=headers, **kwargs)

    def environment(self, url: str, *, token: str | None = None) -> Mapping[str, str]:
        """The ``GROK_IMAGINE_*`` variables under which an unmodified client talks to this
        emulator served at ``url`` (see :func:`serve_in_thread`) and keeps its pace; ``token``:
        which accepted token (default: the first). See :func:`client_environment`."""
        return client_environment(self._config, url, token=token)

    def outage(self, outage: Outage | None = None, *, on: bool = True) -> None:
        """Switch an outage on (every task created from now on fails as ``outage`` says,
        by default with the provider's network error within 2 s) or, with ``on=False``, off.
        Timed outages are :attr:`FaultConfig.outages`."""
        self._state.outage = (outage or Outage()) if on else None

    def statistics(self) -> EmulatorStatistics:
        """A frozen snapshot of what the emulator saw and did so far."""
        return self._state.statistics()

    def request_times(
        self, token: str | None = None, *, admitted_only: bool = False
    ) -> list[float]:
        """Clock times at which ``/v1/*`` requests of known tokens arrived, sorted.

        Every request the rate limiter counted is here, 429'd ones included unless
        ``admitted_only``; answers refused with 401 are not.

        Args:
            token: One token's requests, or everyone's (None).
            admitted_only: Keep only the requests within the quota.
        """
        return self._state.request_times(token, admitted_only=admitted_only)

    def max_window_count(
        self, period: float, token: str | None = None, *, admitted_only: bool = False
    ) -> int:
        """The most requests in any interval of ``period`` seconds (see :meth:`request_times`).

        A client that respects a quota of N per ``period`` keeps this at N or below.
        """
        return max_in_window(self.request_times(token, admitted_only=admitted_only), period)

    def task_ids(self) -> list[str]:
        """The id of every task created so far, in the order they were created."""
        with self._state.lock:
            return list(self._state.tasks)

    def save_tasks(self, path: str | os.PathLike[str]) -> None:
        """Write every task to ``path`` (JSON, replaced atomically), for :meth:`load_tasks`.

        With it a demo or a test can stop the process and start another whose emulator still
        has the tasks in flight: they go on generating in the meantime, on the wall clock.
        Rate-limit windows and counters are not kept.
        """
        state = self._state
        with state.lock:
            tasks = list(state.tasks.values())
        # Creation times as Unix times: the other process's monotonic clock is another one.
        saved = [{**dataclasses.asdict(t), "created_at": state.unix(t.created_at)} for t in tasks]
        target = Path(path)
        temporary = target.with_name(f".{target.name}.tmp")
        temporary.write_text(json.dumps({"tasks": saved}), encoding="utf-8")
        os.replace(temporary, target)

    def load_tasks(self, path: str | os.PathLike[str]) -> int:
        """Take up the tasks :meth:`save_tasks` wrote to ``path``; return how many were new here
        (a task id already known keeps its task). Their clocks go on.

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

    def task_times(self, task_id: str) -> tuple[float, float] | None:
        """When task ``task_id`` was created and when it reaches its final state, or None.

        Both are clock times, like :meth:`request_times`. A benchmark compares the second with
        the moment a client learned the outcome (its detection latency).
        """
        task = self._state.task(task_id)
        return None if task is None else (task.created_at, task.created_at + task.duration)

    def __repr__(self) -> str:
        tokens = len(self._config.tokens)
        return f"Emulator(tokens={tokens}, window={self._config.window!r})"
