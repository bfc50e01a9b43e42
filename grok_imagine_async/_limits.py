"""Size and time bounds on what a server can make the client do: one frozen value object."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_PROMPT_CHARS = 5_000
"""Resellers of the same model accept 5,000 characters: a longer prompt is most likely a mistake."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Bounds that keep a misbehaving (or hostile) server from exhausting memory, disk or time.

    Args:
        max_answer_bytes: The most an API answer may hold once decompressed (default 1 MiB;
            real answers are well under 10 KB). A longer answer is refused unread.
        max_video_bytes: The most one downloaded video may hold (default 1 GiB). A longer
            download is stopped and its partial file deleted.
        max_prompt_chars: The longest prompt sent (default 5,000 characters). A longer one
            raises :class:`InvalidRequestError` before anything is sent or paid.
        max_request_time: The most one API request may take, from sending it to the last
            byte of its answer (default 120 s), even from a server trickling its bytes. A
            submission that reaches it is ambiguous (its task may exist).
        max_redirects: Redirects a download follows (default 5; 0 refuses every redirect).

    Raises:
        ValueError: If a bound is not positive (``max_redirects`` may be 0).

    Example:
        >>> Limits(max_video_bytes=200 * 2**20).max_video_bytes
        209715200
    """

    max_answer_bytes: int = 1 << 20
    max_video_bytes: int = 1 << 30
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS
    max_request_time: float = 120.0
    max_redirects: int = 5

    def __post_init__(self) -> None:
        for name in ("max_answer_bytes", "max_video_bytes", "max_prompt_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if not self.max_request_time > 0:  # also refuses NaN
            raise ValueError(f"max_request_time must be > 0, got {self.max_request_time!r}")
        if isinstance(self.max_redirects, bool) or self.max_redirects < 0:
            raise ValueError(f"max_redirects must be >= 0, got {self.max_redirects!r}")


def prompt_problem(prompt: str, limits: Limits) -> str | None:
    """Why ``limits`` refuse ``prompt``, or None: one rule for the client and the input check."""
    longest = limits.max_prompt_chars
    if len(prompt) > longest:
        many = f"the prompt has {len(prompt)} characters, more than {longest}"
        return f"{many} (Limits.max_prompt_chars)"
    return None
