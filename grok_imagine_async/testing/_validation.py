"""Checking a ``POST /v1/generate`` body the way the service does. Pure, no I/O."""

from __future__ import annotations

import json
from typing import Any

MODES = frozenset({"fun", "normal", "spicy"})
RATIOS = frozenset({"2:3", "3:2", "1:1", "16:9", "9:16"})
DEFAULT_MODE = "normal"
DEFAULT_RATIO = "1:1"
PROMPT_REQUIRED = "Invalid request: The prompt parameter is required"


class InvalidRequest(ValueError):
    """Raised when a request body would get a 400 ``INVALID_REQUEST``; the text is the message."""


def parse_generate_body(raw: bytes) -> dict[str, Any]:
    """Validate a generation body and return it normalised (defaults filled in).

    The service's documented rule is "a missing prompt is a 400"; the emulator also refuses the
    values resellers of the same model refuse, so a client bug shows up in tests.

    Raises:
        InvalidRequest: With the message of the 400 answer.
    """
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("Invalid request: the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("Invalid request: the body must be a JSON object")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest(PROMPT_REQUIRED)
    mode = body.get("mode", DEFAULT_MODE)
    if mode not in MODES:
        raise InvalidRequest(f"Invalid request: mode must be one of {', '.join(sorted(MODES))}")
    ratio = body.get("ratio", DEFAULT_RATIO)
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
