"""Building a :class:`GenerationRequest` from a prompt and loosely typed options."""

from __future__ import annotations

from collections.abc import Sequence

from ._models import GenerationRequest


def build_request(
    prompt: str,
    *,
    mode: str = "normal",
    ratio: str = "1:1",
    images: Sequence[str] | str | None = None,
    allow_unlisted: bool = False,
) -> GenerationRequest:
    """``GenerationRequest(prompt=prompt, ...)``, for the callers that take options one by one.

    Raises:
        InvalidRequestError: Naming every invalid option; nothing is sent.
    """
    return GenerationRequest(
        prompt=prompt, mode=mode, ratio=ratio, images=images, allow_unlisted=allow_unlisted
    )
