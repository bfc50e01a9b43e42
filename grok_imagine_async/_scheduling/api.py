"""What the scheduler needs of a client: a protocol, so ``_client`` and it import no cycle."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from .._errors import APIConnectionError
from .._limiting.protocol import Priority, RateLimiter
from .._models import GenerationRequest, Task
from .._observe import Observer
from .._settings import Settings


class SchedulerClient(Protocol):
    """The part of :class:`~grok_imagine_async.AsyncGrokImagine` a scheduler uses."""

    @property
    def limiter(self) -> RateLimiter: ...
    @property
    def telemetry(self) -> Observer | None: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def on_ambiguous_submit(self) -> str: ...

    async def _submit(
        self,
        request: GenerationRequest,
        *,
        priority: Priority = ...,
        before_send: Callable[[], Awaitable[None]] | None = None,
        on_unsent: Callable[[APIConnectionError], None] | None = None,
    ) -> str:
        """Send one POST /v1/generate, running ``before_send`` right before it leaves (and
        ``on_unsent`` after an attempt that never left: a refused connection)."""

    async def get_task(self, task_id: str, *, priority: Priority = ...) -> Task: ...

    async def download(
        self, task: Task, dest: str | os.PathLike[str], *, stem: str | None = None
    ) -> list[Path]: ...
