"""Building a :class:`GenerationRequest` from loose options, every problem named at once."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from ._errors import InvalidRequestError
from ._models import GenerationRequest


def build_request(
    prompt: str,
    *,
    mode: str = "normal",
    ratio: str = "1:1",
    images: Sequence[str] | str | None = None,
    allow_unlisted: bool = False,
) -> GenerationRequest:
    """Validate generation options into a :class:`GenerationRequest`.

    Raises:
        InvalidRequestError: Naming every invalid option; nothing is sent.
    """
    try:
        return GenerationRequest(
            prompt=prompt, mode=mode, ratio=ratio, images=images, allow_unlisted=allow_unlisted
        )
    except ValidationError as exc:
        problems = tuple(
            f"{'.'.join(str(p) for p in err['loc']) or 'request'}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise InvalidRequestError(
            "invalid generation request: " + "; ".join(problems), problems=problems
        ) from None
