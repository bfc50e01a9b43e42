"""What the scheduler needs of a client: the seam that keeps it from importing ``_client``.

:class:`~grok_imagine_async.AsyncGrokImagine` satisfies :class:`SchedulerClient`
structurally. The client imports the scheduler (for ``generate_many``); the scheduler only
knows this protocol, so the two modules do not import each other.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .._limiting.protocol import Priority, RateLimiter
from .._models import GenerationRequest, Task
from .._observe import Observer

if TYPE_CHECKING:
    from .._settings import Settings


class SchedulerClient(Protocol):
    """The part of :class:`~grok_imagine_async.AsyncGrokImagine` a scheduler uses."""

    @property
    def limiter(self) -> RateLimiter:
        """The rate limiter every request passes (its ``limit`` sizes the scheduler)."""

    @property
    def telemetry(self) -> Observer | None:
        """Where the client and its schedulers report requests and jobs, if anywhere."""

    @property
    def settings(self) -> Settings:
        """The client's settings: the scheduler's default poll, breaker and duration prior."""

    @property
    def on_ambiguous_submit(self) -> str:
        """``"raise"`` or ``"resubmit"``: what to do with a POST whose outcome is unknown."""

    async def _submit(
        self,
        request: GenerationRequest,
        *,
        priority: Priority = ...,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> str:
        """Send one POST /v1/generate, running ``before_send`` right before it leaves."""

    async def get_task(self, task_id: str, *, priority: Priority = ...) -> Task:
        """Read one task's status."""

    async def download(
        self,
        task_or_url: Task | str | Sequence[str],
        dest: str | os.PathLike[str],
        *,
        stem: str | None = None,
    ) -> list[Path]:
        """Write a task's videos into ``dest``."""
