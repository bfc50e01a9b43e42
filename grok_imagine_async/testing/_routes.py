"""The emulator's HTTP face: Starlette routes speaking the envelope of the real service.

Every ``/v1/*`` request is checked for authentication (401, counted against no quota), then
quota (429), then its body (400, as strict as the service and its resellers), then faults.
"""

from __future__ import annotations

import json
import math
import zlib
from datetime import datetime, timezone
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._faults import MarkerError
from ._mp4 import mp4_bytes
from ._state import CREDITS_PER_TASK, EmulatorState, TaskState
from ._transport import DropResponse

ENDPOINTS = {"/v1/generate": "POST", "/v1/status": "GET"}
MODES = frozenset({"fun", "normal", "spicy"})
RATIOS = frozenset({"2:3", "3:2", "1:1", "16:9", "9:16"})


class InvalidRequest(ValueError):
    """A request body the service answers 400 ``INVALID_REQUEST``; the text is the message."""


def parse_generate_body(raw: bytes) -> dict[str, Any]:
    """A generation body validated, defaults filled in; raises InvalidRequest."""
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
    # Round float noise away first: (now + period) - now may exceed period by 1e-11 s.
    return f"{math.ceil(round(value * 1000, 6)) / 1000:.3f}".rstrip("0").rstrip(".")


def _error(
    code: int, message: str, error: str, headers: dict[str, str] | None = None, status: int = 0
) -> Response:
    body = {"code": code, "message": message, "error": error}
    return JSONResponse(body, status_code=status or code, headers=headers)


class Api:
    """The request handlers, bound to one :class:`EmulatorState`."""

    def __init__(self, state: EmulatorState) -> None:
        self._state = state

    def routes(self) -> list[Route]:
        """Starlette routes: the API, the result videos, and the inspection endpoints."""
        return [
            Route("/v1/{rest:path}", self.api, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            Route("/videos/{task_id}/{index:int}.mp4", self.video, methods=["GET"]),
            Route("/_emulator/stats", self.stats, methods=["GET"]),
            Route("/_emulator/requests", self.requests, methods=["GET"]),
        ]

    async def api(self, request: Request) -> Response:
        """Every ``/v1/*`` request; answers but dropped ones are counted by status."""
        answer = await self._answer(request)
        if not isinstance(answer, DropResponse):
            self._state.count(answer.status_code)
        return answer

    async def _answer(self, request: Request) -> Response:
        state, path, method = self._state, request.url.path, request.method
        now = state.now()
        state.count(f"{method} {path}")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        quota = state.quota(token)
        if quota is None:
            return _error(401, "Unauthorized: invalid API key", "UNAUTHORIZED")
        decision = state.admit(token, now)
        reset = decision.reset_after
        headers = {
            "X-RateLimit-Limit": str(quota),
            "X-RateLimit-Remaining": str(decision.remaining),
            "X-RateLimit-Reset": f"{state.unix(now + reset):.3f}"
            if state.config.reset_format == "unix"
            else _seconds(reset),
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
            faults = state.request_faults(None if body is None else body["prompt"])
        except (InvalidRequest, MarkerError) as exc:
            return _error(400, str(exc), "INVALID_REQUEST", headers)
        if faults.server_error:
            state.count("server_error")
            answer = _error(500, "Internal server error", "SERVER_ERROR", headers)
        elif faults.body_error:
            state.count("body_error")
            answer = _error(500, "Internal server error", "SERVER_ERROR", headers, status=200)
        elif body is not None:
            task = state.create_task(token, body, now)
            answer = _success({"task_id": task.task_id}, headers)
        else:
            answer = self._status(request, token, now, headers)
        if faults.delay > 0:
            state.count("slow")
            await anyio.sleep(faults.delay)  # the loop's clock: virtual time skips it
        if faults.drop:
            state.count("dropped")
            return DropResponse()
        return answer

    def _status(
        self, request: Request, token: str, now: float, headers: dict[str, str]
    ) -> Response:
        task_id = request.query_params.get("task_id", "").strip()
        if not task_id:
            message = "Invalid request: The task_id parameter is required"
            return _error(400, message, "INVALID_REQUEST", headers)
        task = self._state.task(task_id, token)
        if task is None:
            return _error(404, f"Task not found: {task_id}", "NOT_FOUND", headers)
        current = task.state(now)
        urls = None
        if current is TaskState.COMPLETED:
            base = str(request.base_url)
            urls = [f"{base}videos/{task.task_id}/{i}.mp4" for i in range(task.video_count)]
        created = datetime.fromtimestamp(self._state.unix(task.created_at), tz=timezone.utc)
        failed = current is TaskState.FAILED
        data = {
            "consumed_credits": 0 if task.free and failed else CREDITS_PER_TASK,
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "status": getattr(self._state.config.vocabulary, current.value),
            "task_id": task.task_id,
            "error_message": task.error_message if failed else None,
            "request": dict(task.request),
            "response": urls,
        }
        return _success(data, headers)

    async def video(self, request: Request) -> Response:
        state = self._state
        state.count("GET /videos")
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
        shade = zlib.crc32(f"{task_id}/{index}".encode()) % 256
        return Response(mp4_bytes(shade), media_type="video/mp4")

    async def stats(self, request: Request) -> Response:
        return JSONResponse(self._state.statistics().as_dict())

    async def requests(self, request: Request) -> Response:
        token = request.query_params.get("token") or None
        admitted_only = request.query_params.get("admitted_only", "") in {"1", "true", "yes"}
        times = self._state.request_times(token, admitted_only=admitted_only)
        return JSONResponse({"admitted_only": admitted_only, "times": times})


def _success(data: dict[str, Any], headers: dict[str, str]) -> Response:
    return JSONResponse({"code": 200, "message": "success", "data": data}, headers=headers)
