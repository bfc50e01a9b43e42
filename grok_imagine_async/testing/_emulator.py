"""The emulator: a local stand-in for the Grok Imagine API, in process or served by uvicorn.

A task's state is a function of the clock, computed when read. State changes never await and
hold one lock, so a test thread may read statistics while uvicorn serves from another. Faults
on purpose: random rates, outages, prompt markers (listed in the testing guide; an invalid one
is a 400 so that a typo shows), hang-ups (:class:`DropResponse`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import random
import re
import socket
import sys
import threading
import time
import zlib
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import _http
from .._clock import DEFAULT_CLOCK
from .._errors import ConfigurationError
from .._models import CREDITS_PER_GENERATION, KNOWN_MODES, TaskStatus
from .._settings import ENV_API_KEY, ENV_BASE_URL, ENV_PLAN, ENV_TIME_SCALE
from ._config import ERROR_MESSAGES, EmulatorConfig, EmulatorStatistics, Outage
from ._quota import GcraCounter, WindowCounter, WindowDecision, max_in_window

if TYPE_CHECKING:
    import httpx

IN_PROCESS_BASE_URL = "http://emulator.local"
ENDPOINTS = {"/v1/generate": "POST", "/v1/status": "GET"}
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]  # answered (and counted) by _answer
RATIOS = frozenset({"2:3", "3:2", "1:1", "16:9", "9:16"})
STATES = (TaskStatus.PENDING, TaskStatus.PROCESSING, TaskStatus.COMPLETED, TaskStatus.FAILED)
# EmulatorStatistics fields that are counts of an HTTP status, or of an event of the same name
_STATUSES = {"rate_limited": 429, "unauthorized": 401, "invalid_requests": 400, "not_found": 404}
_EVENTS = ("server_errors", "body_errors", "dropped", "slow", "videos_served")


# A request's faults by marker kind, with their rates: rolled in this order, the first one
# rolled or marked is the answer (a 500, else a 200 with an error code, else a hang-up after
# handling, so a dropped POST always has its task).
_REQUEST_FAULTS = {"500": "server_error_rate", "body": "body_error_rate", "drop": "drop_rate"}
_REQUEST_MARKERS = frozenset({*_REQUEST_FAULTS, "slow"})
_TASK_MARKERS = frozenset({*ERROR_MESSAGES, "empty", "duration"})
_FAIL_KINDS = (_REQUEST_MARKERS | _TASK_MARKERS) - {"slow", "duration"}
_MARKER = re.compile(r"\[(fail|slow|duration):([^\]\s:]+)(?::(\d+))?\]")
_SECONDS = r"\d+(\.\d*)?|\.\d+"  # what [slow:S] and [duration:S] take


class InvalidRequest(ValueError):
    """A bad body or prompt marker: answered 400 ``INVALID_REQUEST`` with this message."""


# httpcore's wording, which httpx re-raises, for a connection closed before any answer.
DISCONNECTED = "Server disconnected without sending a response."
_SEND = "grok_imagine_async.emulator.send"  # scope key: the server's send, which Starlette wraps
_SCOPE = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "root_path": ""}


class ConnectionDropped(Exception):
    """Raised when the emulator drops a connection it cannot close itself (under a plain
    ``httpx.ASGITransport``; ``Emulator.transport()`` converts it)."""


class DropResponse(Response):
    """A response never sent: the connection is closed instead."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        owner: Any = getattr(scope.get(_SEND), "__self__", None)  # uvicorn's request cycle
        transport = getattr(owner, "transport", None)
        if not isinstance(transport, asyncio.BaseTransport):
            raise ConnectionDropped("the emulator dropped the connection")
        if hasattr(owner, "disconnected"):
            owner.disconnected = True  # so uvicorn neither logs nor writes a 500
        transport.close()


class DroppingStarlette(Starlette):
    """A Starlette application whose handlers may answer by closing the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_SEND] = send
        await super().__call__(scope, receive, send)


class EmulatorTransport(_http.AnyFamilyTransport):
    """Sends requests to an emulator's app in process (a third cheaper than ``ASGITransport``),
    answering each in its library: a dropped connection raises ``RemoteProtocolError``."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        family = _http.family_of(request, "Request") or _http.lib
        timeouts = request.extensions.get("timeout", {})
        url = request.url
        scope: dict[str, Any] = {
            **_SCOPE,
            "method": request.method,
            "headers": [(name.lower(), value) for name, value in request.headers.raw],
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?")[0],
            "client": ("127.0.0.1", 123),
            "query_string": url.query,
            "server": (url.host, url.port),
        }
        pending_body: list[bytes] = [await request.aread()]
        answered = anyio.Event()
        start: Message = {}
        parts: list[bytes] = []

        async def receive() -> Message:
            if pending_body:
                return {"type": "http.request", "body": pending_body.pop(), "more_body": False}
            await answered.wait()  # like a client that stays until the answer is complete
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
                if not message.get("more_body", False):
                    answered.set()

        try:
            with anyio.fail_after(timeouts.get("read") if isinstance(timeouts, dict) else None):
                await self._app(scope, receive, send)
            if not answered.is_set():
                raise ConnectionDropped
        except ConnectionDropped:
            raise family.RemoteProtocolError(DISCONNECTED, request=request) from None
        except TimeoutError:
            raise family.ReadTimeout("timed out", request=request) from None
        body = b"" if request.method == "HEAD" else b"".join(parts)
        response: httpx.Response = family.Response(
            start["status"], headers=start.get("headers", []), stream=family.ByteStream(body)
        )
        return response


# All before the samples (the same for every shade): ftyp, moov, mdat's header, the sample's
# length, the IDR slice's NAL and slice headers.
_HEADER = bytes.fromhex(
    "000000206674797069736f6d0000020069736f6d69736f32617663316d703431000002586d6f6f760000006c"
    "6d766864000000000000000000000000000003e8000003e80001000001000000000000000000000000010000"
    "0000000000000000000000000001000000000000000000000000000040000000000000000000000000000000"
    "00000000000000000000000000000002000001e47472616b0000005c746b6864000000030000000000000000"
    "0000000100000000000003e80000000000000000000000000000000000010000000000000000000000000000"
    "00010000000000000000000000000000400000000010000000100000000001806d646961000000206d646864"
    "000000000000000000000000000003e8000003e855c400000000002d68646c72000000000000000076696465"
    "000000000000000000000000566964656f48616e646c6572000000012b6d696e6600000014766d6864000000"
    "0100000000000000000000002464696e660000001c6472656600000000000000010000000c75726c20000000"
    "01000000eb7374626c0000008373747364000000000000000100000073617663310000000000000001000000"
    "0000000000000000000000000000100010004800000048000000000000000100000000000000000000000000"
    "000000000000000000000000000000000000000018ffff0000001d617663430142c00affe100066742c00ada"
    "7901000468ce3c800000001873747473000000000000000100000001000003e80000001c7374736300000000"
    "00000001000000010000000100000001000000187374737a0000000000000000000000010000018a00000014"
    "7374636f000000000000000100000280000001926d64617400000186658884a0d0"
)


@functools.lru_cache(maxsize=256)
def mp4_bytes(shade: int = 128) -> bytes:
    """A valid one-frame MP4 of a flat colour picked by ``shade`` (0-255): different shades,
    different bytes, so a test can tell two downloaded videos apart."""
    luma = 16 + shade % 220  # video range; no sample is 0..3, so no emulation-prevention bytes
    return _HEADER + bytes([luma] * 256 + [128] * 64 + [255 - luma] * 64) + b"\x80"  # stop bit


def parse_generate_body(raw: bytes) -> dict[str, Any]:
    """A generation body validated as strictly as the service does, defaults filled in."""
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("Invalid request: the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("Invalid request: the body must be a JSON object")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("Invalid request: The prompt parameter is required")
    mode, ratio = body.get("mode", "normal"), body.get("ratio", "1:1")
    for name, value, known in (("mode", mode, KNOWN_MODES), ("ratio", ratio, RATIOS)):
        if value not in known:
            allowed = ", ".join(sorted(known))
            raise InvalidRequest(f"Invalid request: {name} must be one of {allowed}")
    request: dict[str, Any] = {"mode": mode, "prompt": prompt, "ratio": ratio}
    images = body.get("images")
    if images is not None:
        valid = isinstance(images, list) and all(isinstance(u, str) and u.strip() for u in images)
        if not valid:
            raise InvalidRequest("Invalid request: images must be a list of URL strings")
        if images and mode == "spicy":
            raise InvalidRequest("Invalid request: spicy mode is not available with images")
        request["images"] = list(images)
    return request


def _seconds(value: float) -> str:
    """Seconds rounded up to the millisecond, without trailing zeros (``"3"``, ``"0.517"``)."""
    # Round float noise away first: (now + period) - now may exceed period by 1e-11 s.
    return f"{math.ceil(round(value * 1000, 6)) / 1000:.3f}".rstrip("0").rstrip(".")


def _error(
    code: int, message: str, error: str, headers: dict[str, str] | None = None, status: int = 0
) -> Response:
    body = {"code": code, "message": message, "error": error}
    return JSONResponse(body, status_code=status or code, headers=headers)


def _success(data: dict[str, Any], headers: dict[str, str]) -> Response:
    return JSONResponse({"code": 200, "message": "success", "data": data}, headers=headers)


@dataclass(frozen=True, slots=True)
class Task:
    """One generation on the emulator's clock: pending for ``queued_for`` seconds, processing until
    ``duration``, then failed with ``error_message`` (``free``: not charged) or completed."""

    task_id: str
    token: str
    request: Mapping[str, Any]
    created_at: float
    queued_for: float
    duration: float
    error_message: str | None
    video_count: int = 2
    free: bool = False

    @property
    def ends_at(self) -> float:
        """Clock time of the final state."""
        return self.created_at + self.duration

    def state(self, now: float) -> TaskStatus:
        """The state at clock time ``now``, one of :data:`STATES`."""
        elapsed = now - self.created_at
        if elapsed < self.queued_for:
            return TaskStatus.PENDING
        if elapsed < self.duration:
            return TaskStatus.PROCESSING
        return TaskStatus.COMPLETED if self.error_message is None else TaskStatus.FAILED


def _frozen(items: Mapping[Any, int]) -> Mapping[Any, int]:
    return MappingProxyType(dict(items))


class Emulator:
    """An emulated Grok Imagine service: rate limits, task lifecycle, faults, inspection.

    Serve :attr:`app` with any ASGI server, or talk to it in process with :meth:`transport`
    or :meth:`client`. One emulator is one fresh server.

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
        self.config = config = config if config is not None else EmulatorConfig()
        """The settings this emulator runs with."""
        self._clock = config.clock if config.clock is not None else DEFAULT_CLOCK
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self._fired: Counter[tuple[str, str]] = Counter()  # (prompt, marker) -> times applied
        refused = config.count_refused
        self._windows = {
            token: GcraCounter(limit, burst=config.burst, count_refused=refused)
            if config.window == "gcra"
            else WindowCounter(limit, config.window, count_refused=refused)
            for token, limit in config.rate_limits().items()
        }
        self._tasks: dict[str, Task] = {}  # by id, in creation order
        # 9 bytes a request (time, admitted): a 100,000-job benchmark keeps 250,000 of them.
        self._timeline: dict[str, tuple[array[float], bytearray]] = {
            t: (array("d"), bytearray()) for t in self._windows
        }
        # events ("slow"), requests by endpoint ("GET /v1/status") and answers by HTTP status
        self._counts: Counter[str | int] = Counter()
        self._posts_per_prompt: Counter[str] = Counter()
        self._last_now = 0.0
        self._outage: Outage | None = None  # switched on by hand, beside the configured ones
        self.app: DroppingStarlette = DroppingStarlette(
            routes=[
                Route("/v1/{rest:path}", self._api, methods=_METHODS),
                Route("/videos/{task_id}/{index:int}.mp4", self._video, methods=["GET"]),
                Route("/_emulator/stats", self._stats, methods=["GET"]),
            ]
        )
        """The ASGI application (a Starlette app)."""

    def transport(self) -> httpx.AsyncBaseTransport:
        """A transport to this emulator in process, for httpx2 and httpx alike, raising as over a
        socket: ``RemoteProtocolError`` on a dropped connection, ``ReadTimeout`` on a late one."""
        return EmulatorTransport(self.app)

    def client(self, token: str | None = "test-token", **kwargs: Any) -> httpx.AsyncClient:
        """An ``AsyncClient`` (httpx2's if installed) on :meth:`transport`, sending ``token``
        as a bearer token (None: none); ``kwargs`` go to ``AsyncClient``."""
        headers = _http.lib.Headers(kwargs.pop("headers", None))
        if token is not None:
            headers.setdefault("Authorization", f"Bearer {token}")
        kwargs.setdefault("base_url", IN_PROCESS_BASE_URL)
        return _http.lib.AsyncClient(transport=self.transport(), headers=headers, **kwargs)

    def environment(self, url: str, *, token: str | None = None) -> Mapping[str, str]:
        """The ``GROK_IMAGINE_*`` variables under which a default client talks to this
        emulator served at ``url`` with ``token`` (default: the first) and keeps its pace.

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
        """Switch an outage on (every task created from now on fails as ``outage``, by default
        :class:`Outage`, says) or off (``on=False``); timed ones are :attr:`FaultConfig.outages`."""
        self._outage = (outage or Outage()) if on else None

    def statistics(self) -> EmulatorStatistics:
        """A frozen snapshot of what the emulator saw and did so far."""
        now = self._now()
        with self._lock:
            tasks = self._tasks.values()
            states = Counter(task.state(now).value for task in tasks)
            per_prompt = Counter(str(task.request["prompt"]) for task in tasks)
            c = self._counts
            by_endpoint = {k: n for k, n in c.items() if isinstance(k, str) and " " in k}
            return EmulatorStatistics(
                requests_total=sum(n for k, n in by_endpoint.items() if " /v1" in k),
                requests_by_endpoint=_frozen(by_endpoint),
                responses_by_status=_frozen({k: n for k, n in c.items() if isinstance(k, int)}),
                posts_per_prompt=_frozen(self._posts_per_prompt),
                tasks_per_prompt=_frozen(per_prompt),
                duplicate_submissions=_frozen(self._unasked()),
                tasks_created=len(self._tasks),
                credits_consumed=CREDITS_PER_GENERATION * sum(not t.free for t in tasks),
                tasks_by_state=_frozen({s.value: states[s.value] for s in STATES}),
                **{name: c[status] for name, status in _STATUSES.items()},
                **{event: c[event] for event in _EVENTS},
            )

    def request_times(
        self, token: str | None = None, *, admitted_only: bool = False
    ) -> list[float]:
        """Clock times of the ``/v1/*`` requests the rate limiter counted (not 401s), sorted:
        of one ``token`` or everyone's (None), with or without the 429'd ones."""
        with self._lock:
            return sorted(
                t
                for name, (stamps, admitted) in self._timeline.items()
                if token in (None, name)
                for t, ok in zip(stamps, admitted, strict=True)
                if ok or not admitted_only
            )

    def max_window_count(
        self, period: float, token: str | None = None, *, admitted_only: bool = False
    ) -> int:
        """The most :meth:`request_times` in any interval of ``period`` seconds: a client
        that respects a quota of N per ``period`` keeps it at N or below."""
        return max_in_window(self.request_times(token, admitted_only=admitted_only), period)

    def task_ids(self) -> list[str]:
        """The id of every task created so far, in the order they were created."""
        with self._lock:
            return list(self._tasks)

    def task_times(self, task_id: str) -> tuple[float, float] | None:
        """When task ``task_id`` was created and when it ends (clock times), or None."""
        task = self._tasks.get(task_id)
        return None if task is None else (task.created_at, task.ends_at)

    def save_tasks(self, path: str | os.PathLike[str]) -> None:
        """Write every task to ``path`` (JSON, replaced atomically) for :meth:`load_tasks` in
        another process, where they go on generating (quota windows and counters are not)."""
        with self._lock:
            tasks = list(self._tasks.values())
        # Unix times: the other process's monotonic clock is another one.
        saved = [{**asdict(t), "created_at": self._unix(t.created_at)} for t in tasks]
        target = Path(path)
        temporary = target.with_name(f".{target.name}.tmp")
        temporary.write_text(json.dumps({"tasks": saved}), encoding="utf-8")
        os.replace(temporary, target)

    def load_tasks(self, path: str | os.PathLike[str]) -> int:
        """Take up the tasks :meth:`save_tasks` wrote to ``path``; return how many were new.

        Raises:
            OSError: If the file cannot be read.
            ConfigurationError: If it does not hold saved tasks.
        """
        offset = self._clock.unix() - self._now()
        try:
            saved = json.loads(Path(path).read_text(encoding="utf-8"))["tasks"]
            tasks = [Task(**{**t, "created_at": float(t["created_at"]) - offset}) for t in saved]
        except (KeyError, TypeError, ValueError) as exc:  # ValueError: not JSON, not UTF-8
            message = f"{path} does not hold an emulator's tasks ({exc!r})"
            raise ConfigurationError(message) from None
        with self._lock:
            before = len(self._tasks)
            for task in tasks:
                self._tasks.setdefault(task.task_id, task)
            return len(self._tasks) - before

    def __repr__(self) -> str:
        return f"Emulator(tokens={len(self.config.tokens)}, window={self.config.window!r})"

    def _now(self) -> float:
        """The clock's time; outside an event loop, the last time seen."""
        with contextlib.suppress(RuntimeError):  # a LoopClock read outside any event loop
            self._last_now = max(self._last_now, self._clock.monotonic())
        return self._last_now

    def _unix(self, monotonic: float) -> float:
        return monotonic + (self._clock.unix() - self._clock.monotonic())

    def _count(self, key: str | int) -> None:
        with self._lock:
            self._counts[key] += 1

    def _admit(self, token: str, now: float) -> WindowDecision:
        with self._lock:
            decision = self._windows[token].hit(now)
            times, admitted = self._timeline[token]
            times.append(now)
            admitted.append(decision.admitted)
            return decision

    def _create_task(self, token: str, request: dict[str, Any], now: float) -> Task:
        cfg = self.config
        prompt = str(request["prompt"])
        # Interned, "mode", "normal", "1:1"... are shared by the 100,000 tasks of a simulation.
        request = {
            sys.intern(key): sys.intern(value) if key in ("mode", "ratio") else value
            for key, value in request.items()
        }
        with self._lock:
            outage = self._outage
            if outage is None:  # timed outages count from the first request the quota saw
                first = min((t[0] for t, _ in self._timeline.values() if t), default=now)
                outage = next((o for o in cfg.faults.outages if o.covers(now - first)), None)
            error, videos, free, duration = None, 2, False, None
            if outage is not None:  # every new task fails, markers or not
                error, videos, free, duration = outage.message, 0, outage.free, outage.fails_after
            elif self._roll(cfg.faults.task_failure_rate):
                error = self._rng.choice(list(ERROR_MESSAGES.values())[:4])
            for family, kind in self._markers(prompt, _TASK_MARKERS) if outage is None else []:
                if family == "duration":
                    duration = float(kind)
                elif kind == "empty":
                    videos = 0
                else:
                    error = ERROR_MESSAGES[kind]
            if duration is None:  # lognormal around the median
                spread = math.exp(cfg.duration_sigma * self._rng.gauss(0.0, 1.0))
                duration = cfg.duration_median * spread / cfg.time_scale
            task_id = f"task_{self._rng.getrandbits(48):012x}"
            while task_id in self._tasks:
                task_id = f"task_{self._rng.getrandbits(48):012x}"
            queued = duration * cfg.queue_fraction
            task = Task(task_id, token, request, now, queued, duration, error, videos, free)
            self._tasks[task_id] = task
            return task

    def _unasked(self) -> dict[str, int]:
        """``duplicate_submissions``, computed under the lock."""
        runs: dict[str, list[Task]] = {}
        for task in sorted(self._tasks.values(), key=lambda task: task.created_at):
            runs.setdefault(str(task.request["prompt"]), []).append(task)
        paid = {
            p: sum(a.state(b.created_at) is not TaskStatus.FAILED for a, b in pairwise(run))
            for p, run in runs.items()
        }
        return {prompt: 1 + times for prompt, times in paid.items() if times}

    def _roll(self, rate: float) -> bool:
        # Draw only for active rates, so enabling one fault does not reshuffle another's sequence.
        return rate > 0.0 and self._rng.random() < rate

    def _markers(self, prompt: str, wanted: frozenset[str]) -> list[tuple[str, str]]:
        """The (family, kind) of the ``wanted`` markers of ``prompt`` to apply now (each use
        counts against a marker's ``:N``). Raises InvalidRequest on an invalid marker."""
        matches = list(_MARKER.finditer(prompt)) if self.config.faults.markers else []
        for match in matches:
            family, kind = match.group(1, 2)
            if family == "fail" and kind not in _FAIL_KINDS:
                raise InvalidRequest(f"unknown emulator marker {match.group(0)}")
            if family != "fail" and not re.fullmatch(_SECONDS, kind):
                raise InvalidRequest(f"emulator marker {match.group(0)} needs a number of seconds")
        applied = []
        for match in matches:
            marker, family, kind, limit = match.group(0, 1, 2, 3)
            if (kind if family == "fail" else family) not in wanted:
                continue
            if family != "duration":  # a duration applies to every task of the prompt
                if limit is not None and self._fired[prompt, marker] >= int(limit):
                    continue
                self._fired[prompt, marker] += 1
            applied.append((family, kind))
        return applied

    def _request_faults(self, prompt: str | None = None) -> tuple[float, str | None]:
        """The delay and fault (of ``_REQUEST_FAULTS``) of a POST of ``prompt`` or a poll."""
        cfg = self.config.faults
        markers = self._markers(prompt or "", _REQUEST_MARKERS)
        rolled = {k for k, rate in _REQUEST_FAULTS.items() if self._roll(getattr(cfg, rate))}
        chosen = rolled | {kind for family, kind in markers if family == "fail"}
        delay = cfg.slow_seconds if self._roll(cfg.slow_rate) else 0.0
        delay += sum(float(kind) for family, kind in markers if family == "slow")
        return delay, next((k for k in _REQUEST_FAULTS if k in chosen), None)

    async def _api(self, request: Request) -> Response:
        answer = await self._answer(request)
        if not isinstance(answer, DropResponse):
            self._count(answer.status_code)
        return answer

    async def _answer(self, request: Request) -> Response:
        """Authentication (401, counted against no quota), quota (429), body (400), faults."""
        path, method, now = request.url.path, request.method, self._now()
        self._count(f"{method} {path}")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        if token not in self._windows:
            return _error(401, "Unauthorized: invalid API key", "UNAUTHORIZED")
        decision = self._admit(token, now)
        reset, unix = decision.reset_after, self.config.reset_format == "unix"
        headers = {
            "X-RateLimit-Limit": str(self._windows[token].limit.requests),
            "X-RateLimit-Remaining": str(decision.remaining),
            "X-RateLimit-Reset": f"{self._unix(now + reset):.3f}" if unix else _seconds(reset),
        }
        if not decision.admitted:
            headers["Retry-After"] = _seconds(decision.retry_after)
            message = "Rate limit exceeded, please try again later."
            return _error(429, message, "RATE_LIMITED", headers)
        if path not in ENDPOINTS:
            return _error(404, f"Not found: {path}", "NOT_FOUND", headers)
        if ENDPOINTS[path] != ("GET" if method == "HEAD" else method):
            message = f"Method {method} not allowed on {path}"
            return _error(405, message, "INVALID_REQUEST", headers)
        try:
            body = parse_generate_body(await request.body()) if method == "POST" else None
            with self._lock:  # a prompt with an invalid marker is not counted as a POST
                delay, fault = self._request_faults(None if body is None else body["prompt"])
                if body is not None:
                    self._posts_per_prompt[body["prompt"]] += 1
        except InvalidRequest as exc:
            return _error(400, str(exc), "INVALID_REQUEST", headers)
        if fault in ("500", "body"):  # the error body, under HTTP 500 or 200
            self._count("server_errors" if fault == "500" else "body_errors")
            status = 500 if fault == "500" else 200
            answer = _error(500, "Internal server error", "SERVER_ERROR", headers, status=status)
        elif body is not None:
            task = self._create_task(token, body, now)
            answer = _success({"task_id": task.task_id}, headers)
        else:
            answer = self._status(request, token, now, headers)
        if delay > 0:
            self._count("slow")
            await anyio.sleep(delay)  # the loop's clock: virtual time skips it
        if fault == "drop":
            self._count("dropped")
            return DropResponse()
        return answer

    def _status(
        self, request: Request, token: str, now: float, headers: dict[str, str]
    ) -> Response:
        task_id = request.query_params.get("task_id", "").strip()
        if not task_id:
            message = "Invalid request: The task_id parameter is required"
            return _error(400, message, "INVALID_REQUEST", headers)
        task = self._tasks.get(task_id)
        if task is None or task.token != token:
            return _error(404, f"Task not found: {task_id}", "NOT_FOUND", headers)
        current = task.state(now)
        urls = None
        if current is TaskStatus.COMPLETED:
            base = str(request.base_url)
            urls = [f"{base}videos/{task.task_id}/{i}.mp4" for i in range(task.video_count)]
        created = datetime.fromtimestamp(self._unix(task.created_at), tz=timezone.utc)
        failed = current is TaskStatus.FAILED
        data = {
            "consumed_credits": 0 if task.free and failed else CREDITS_PER_GENERATION,
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "status": getattr(self.config.vocabulary, current.value),
            "task_id": task.task_id,
            "error_message": task.error_message if failed else None,
            "request": dict(task.request),
            "response": urls,
        }
        return _success(data, headers)

    async def _video(self, request: Request) -> Response:
        self._count("GET /videos")
        task_id, index = request.path_params["task_id"], request.path_params["index"]
        task = self._tasks.get(task_id)
        if task is None or task.state(self._now()) is not TaskStatus.COMPLETED:
            return _error(404, f"No video for task {task_id}", "NOT_FOUND")
        if not 0 <= index < task.video_count:
            return _error(404, f"No video {index} for task {task_id}", "NOT_FOUND")
        ttl = self.config.result_ttl
        if ttl is not None and self._now() - task.ends_at > ttl:
            return _error(403, f"The result URL of task {task_id} has expired", "URL_EXPIRED")
        self._count("videos_served")
        shade = zlib.crc32(f"{task_id}/{index}".encode()) % 256
        return Response(mp4_bytes(shade), media_type="video/mp4")

    async def _stats(self, request: Request) -> Response:
        return JSONResponse(self.statistics().as_dict())


STARTUP_TIMEOUT = 10.0


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP; without it
    # uvicorn's body write waits for the client's delayed ACK, 40 ms per request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def base_url(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(emulator: Emulator, log_level: str, *, own_logging: bool) -> uvicorn.Server:
    config = uvicorn.Config(
        emulator.app,
        # In a host process (tests), leave its logging configuration alone.
        log_config=uvicorn.config.LOGGING_CONFIG if own_logging else None,
        log_level=log_level,
        access_log=own_logging and log_level == "debug",
        lifespan="off",
    )
    return uvicorn.Server(config)


@contextlib.contextmanager
def serve_in_thread(
    emulator: Emulator, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
) -> Iterator[str]:
    """Serve ``emulator`` with uvicorn in a background thread (on the real clock) while the
    block runs, on ``host:port`` (port 0: a free one) at uvicorn's ``log_level``.

    Yields:
        The base URL, such as ``http://127.0.0.1:49731``.

    Raises:
        RuntimeError: If the server did not start within 10 seconds.
    """
    server = _server(emulator, log_level, own_logging=False)
    with bind(host, port) as sock:
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="grok-imagine-emulator", daemon=True
        )
        thread.start()
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while not server.started:  # uvicorn offers no startup event to wait on
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("the emulator's uvicorn server did not start")
                time.sleep(0.005)
            yield base_url(sock)
        finally:
            server.should_exit = True
            thread.join(STARTUP_TIMEOUT)


def serve_forever(
    emulator: Emulator,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    on_ready: Callable[[str], None] = print,
) -> None:
    """Serve ``emulator`` in this thread until Ctrl-C; ``on_ready`` gets its URL once bound."""
    with bind(host, port) as sock:
        on_ready(base_url(sock))
        _server(emulator, log_level, own_logging=True).run(sockets=[sock])
