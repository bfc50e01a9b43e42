"""The emulator's HTTP face: Starlette routes speaking the envelope of the real service.

Order of checks for every ``/v1/*`` request: authentication (401, not counted against any
quota), the token's quota (429), the body (400), then injected faults, then the answer. The
body is checked as the service does, and for the values resellers of the model refuse, so a
client bug shows in tests.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._faults import MarkerError
from ._mp4 import mp4_bytes
from ._quota import WindowDecision
from ._state import CREDITS_PER_TASK, EmulatorState, Task, TaskState
from ._transport import DropResponse

_Handler = Callable[[Request, str, float, dict[str, str]], Awaitable[Response]]
ENDPOINTS = {"/v1/generate": "POST", "/v1/status": "GET"}
MODES = frozenset({"fun", "normal", "spicy"})
RATIOS = frozenset({"2:3", "3:2", "1:1", "16:9", "9:16"})


class InvalidRequest(ValueError):
    """A request body the service answers 400 ``INVALID_REQUEST``; the text is the message."""


def parse_generate_body(raw: bytes) -> dict[str, Any]:
    """A generation body validated and normalised (defaults filled in); raises InvalidRequest."""
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
    if mode not in MODES:
        raise InvalidRequest(f"Invalid request: mode must be one of {', '.join(sorted(MODES))}")
    if ratio not in RATIOS:
        raise InvalidRequest(f"Invalid request: ratio must be one of {', '.join(sorted(RATIOS))}")
    request: dict[str, Any] = {"mode": mode, "prompt": prompt, "ratio": ratio}
    images = body.get("images")
    if images is not None:
        if not isinstance(images, list) or not all(
            isinstance(url, str) and url.strip() for url in images
        ):
            raise InvalidRequest("Invalid request: images must be a list of URL strings")
        if images and mode == "spicy":
            raise InvalidRequest("Invalid request: spicy mode is not available with images")
        request["images"] = list(images)
    return request


def _seconds(value: float) -> str:
    """Seconds rounded up to the millisecond, without trailing zeros (``"3"``, ``"0.517"``)."""
    # Round away float noise first: a reset of exactly one period, computed as
    # (now + period) - now, may come out 1e-11 s long, and must not be announced 1 ms late.
    return f"{math.ceil(round(value * 1000, 6)) / 1000:.3f}".rstrip("0").rstrip(".")


def _error(
    status: int, message: str, error: str, headers: dict[str, str] | None = None
) -> Response:
    body = {"code": status, "message": message, "error": error}
    return JSONResponse(body, status_code=status, headers=headers)


def _success(data: dict[str, Any], headers: dict[str, str]) -> Response:
    return JSONResponse({"code": 200, "message": "success", "data": data}, headers=headers)


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class Api:
    """The request handlers, bound to one :class:`EmulatorState`."""

    def __init__(self, state: EmulatorState) -> None:
        self._state = state

    def routes(self) -> list[Route]:
        """Starlette routes: the API, the result videos, and the inspection endpoints."""
        return [
            Route("/v1/generate", self.generate, methods=["POST"]),
            Route("/v1/status", self.status, methods=["GET"]),
            Route(
                "/v1/{rest:path}", self.unknown, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]
            ),
            Route("/videos/{task_id}/{index:int}.mp4", self.video, methods=["GET"]),
            Route("/_emulator/stats", self.stats, methods=["GET"]),
            Route("/_emulator/requests", self.requests, methods=["GET"]),
        ]

    async def generate(self, request: Request) -> Response:
        return await self._serve(request, "POST /v1/generate", self._generate)

    async def status(self, request: Request) -> Response:
        return await self._serve(request, "GET /v1/status", self._status)

    async def unknown(self, request: Request) -> Response:
        return await self._serve(request, f"{request.method} {request.url.path}", self._unknown)

    async def _serve(self, request: Request, endpoint: str, handle: _Handler) -> Response:
        state = self._state
        now = state.now()
        state.count(endpoint=endpoint)
        token = _bearer(request)
        if token is None or not state.is_known(token):
            return self._sent(_error(401, "Unauthorized: invalid API key", "UNAUTHORIZED"))
        decision = state.admit(token, now)
        headers = self._rate_headers(token, decision, now)
        if not decision.admitted:
            headers["Retry-After"] = _seconds(decision.retry_after)
            message = "Rate limit exceeded, please try again later."
            return self._sent(_error(429, message, "RATE_LIMITED", headers))
        return await handle(request, token, now, headers)

    def _rate_headers(self, token: str, decision: WindowDecision, now: float) -> dict[str, str]:
        reset = decision.reset_after
        unix = self._state.config.reset_format == "unix"
        return {
            "X-RateLimit-Limit": str(self._state.quota(token)),
            "X-RateLimit-Remaining": str(decision.remaining),
            "X-RateLimit-Reset": (
                f"{self._state.unix(now + reset):.3f}" if unix else _seconds(reset)
            ),
        }

    async def _generate(
        self, request: Request, token: str, now: float, headers: dict[str, str]
    ) -> Response:
        state = self._state
        try:
            body = parse_generate_body(await request.body())
            faults = state.request_faults(body["prompt"])
        except (InvalidRequest, MarkerError) as exc:
            return self._sent(_error(400, str(exc), "INVALID_REQUEST", headers))
        answer = self._injected_error(faults.server_error, faults.body_error, headers)
        if answer is None:
            task = state.create_task(token, body, now)
            answer = _success({"task_id": task.task_id}, headers)
        return await self._deliver(answer, faults.delay, faults.drop)

    async def _status(
        self, request: Request, token: str, now: float, headers: dict[str, str]
    ) -> Response:
        state = self._state
        task_id = request.query_params.get("task_id", "").strip()
        faults = state.request_faults(None)
        answer = self._injected_error(faults.server_error, faults.body_error, headers)
        if answer is None:
            if not task_id:
                message = "Invalid request: The task_id parameter is required"
                answer = _error(400, message, "INVALID_REQUEST", headers)
            elif (task := state.task(task_id, token)) is None:
                answer = _error(404, f"Task not found: {task_id}", "NOT_FOUND", headers)
            else:
                answer = _success(self._task_data(task, now, str(request.base_url)), headers)
        return await self._deliver(answer, faults.delay, faults.drop)

    async def _unknown(
        self, request: Request, token: str, now: float, headers: dict[str, str]
    ) -> Response:
        path = request.url.path
        if path in ENDPOINTS:
            message = f"Method {request.method} not allowed on {path}"
            return self._sent(_error(405, message, "INVALID_REQUEST", headers))
        return self._sent(_error(404, f"Not found: {path}", "NOT_FOUND", headers))

    def _injected_error(
        self, server_error: bool, body_error: bool, headers: dict[str, str]
    ) -> Response | None:
        if server_error:
            self._state.count("server_error")
            return _error(500, "Internal server error", "SERVER_ERROR", headers)
        if body_error:
            self._state.count("body_error")
            body = {"code": 500, "message": "Internal server error", "error": "SERVER_ERROR"}
            return JSONResponse(body, status_code=200, headers=headers)
        return None

    async def _deliver(self, answer: Response, delay: float, drop: bool) -> Response:
        if delay > 0:
            self._state.count("slow")
            await anyio.sleep(delay)  # the loop's clock: virtual time skips it
        if drop:
            self._state.count("dropped")
            return DropResponse()
        return self._sent(answer)

    def _sent(self, answer: Response) -> Response:
        self._state.count(status=answer.status_code)
        return answer

    def _task_data(self, task: Task, now: float, base_url: str) -> dict[str, Any]:
        current = task.state(now)
        urls: list[str] | None = None
        if current is TaskState.COMPLETED:
            urls = [f"{base_url}videos/{task.task_id}/{i}.mp4" for i in range(task.video_count)]
        created = datetime.fromtimestamp(self._state.unix(task.created_at), tz=timezone.utc)
        return {
            "consumed_credits": 0
            if task.free and current is TaskState.FAILED
            else CREDITS_PER_TASK,
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "status": getattr(self._state.config.status_words, current.value),
            "task_id": task.task_id,
            "error_message": task.error_message if current is TaskState.FAILED else None,
            "request": dict(task.request),
            "response": urls,
        }

    async def video(self, request: Request) -> Response:
        state = self._state
        state.count(endpoint="GET /videos")
        task_id, index = request.path_params["task_id"], request.path_params["index"]
        task = state.task(task_id)
        if task is None or task.state(state.now()) is not TaskState.COMPLETED:
            return _error(404, f"No video for task {task_id}", "NOT_FOUND")
        if not 0 <= index < task.video_count:
            return _error(404, f"No video {index} for task {task_id}", "NOT_FOUND")
        ttl = state.config.result_ttl
        if ttl is not None and state.now() - task.ends_at > ttl:
            return _error(403, f"The result URL of task {task_id} has expired", "URL_EXPIRED")
        state.count("video")
        return Response(
            mp4_bytes(zlib.crc32(f"{task_id}/{index}".encode()) % 256), media_type="video/mp4"
        )

    async def stats(self, request: Request) -> Response:
        return JSONResponse(self._state.statistics().as_dict())

    async def requests(self, request: Request) -> Response:
        token = request.query_params.get("token") or None
        admitted_only = request.query_params.get("admitted_only", "") in {"1", "true", "yes"}
        times = self._state.request_times(token, admitted_only=admitted_only)
        return JSONResponse({"admitted_only": admitted_only, "times": times})
