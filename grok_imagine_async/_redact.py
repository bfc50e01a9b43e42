"""Keeping the API token out of everything we show or write: checks and redaction (pure)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ._errors import ConfigurationError

REDACTED = "***"
MIN_REDACTED = 8  # shorter secrets (a test's "t") are not searched for: real tokens are long
MAX_DEPTH = 32  # deepest JSON nesting accepted in an answer (real answers nest 3 deep)

# RFC 6750's b64token: what a bearer token may hold. Nothing else can reach a header, and
# nothing in it is changed by repr() or JSON escaping, so redacting its plain text suffices.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def check_token(token: str) -> str:
    """``token`` stripped, if it is a valid bearer token.

    Raises:
        ConfigurationError: If it holds a character a bearer token cannot hold (the message
            never contains the token).
    """
    token = token.strip()
    if not _TOKEN.fullmatch(token):
        bad = sorted({f"U+{ord(c):04X}" for c in token if not _TOKEN.fullmatch(c) and c != "="})
        raise ConfigurationError(
            "the API key holds characters a bearer token cannot hold "
            f"({', '.join(bad[:5]) or 'misplaced ='}): check how it was copied"
        )
    return token


class Redactor:
    """Replaces a secret (the API token) in text and decoded JSON, before it is cut or shown."""

    def __init__(self, secret: str) -> None:
        self._secret = secret if len(secret) >= MIN_REDACTED else ""

    def text(self, text: str, *, limit: int | None = None) -> str:
        """``text`` with the secret replaced, then cut to ``limit`` characters."""
        if self._secret and self._secret in text:
            text = text.replace(self._secret, REDACTED)
        return text if limit is None else text[:limit]

    def loads(self, text: str) -> Any:
        """The JSON in ``text``, decoded, with the secret replaced (the walk skipped when it
        cannot change anything). Raises ``ValueError`` if not JSON or nested too deep, and
        ``RecursionError`` past what the decoder can follow."""
        if (
            "\\" not in text
            and not (self._secret and self._secret in text)
            and text.count("[") + text.count("{") < MAX_DEPTH
        ):
            return json.loads(text)
        return self.data(json.loads(text))

    def data(self, value: Any, *, depth: int = 0) -> Any:
        """A copy of decoded JSON with the secret replaced (``ValueError`` if nested too deep)."""
        if isinstance(value, str):
            return self.text(value)
        if depth >= MAX_DEPTH and isinstance(value, (Mapping, list)):
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.data(v, depth=depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [self.data(item, depth=depth + 1) for item in value]
        return value


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo replaced (userinfo with no colon: all of it)."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not (sep and at):
        return url
    user, colon, _password = userinfo.partition(":")
    hidden = f"{user}:{REDACTED}" if colon else REDACTED
    return f"{scheme}://{hidden}@{host}{slash}{path}"
