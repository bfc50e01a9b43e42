"""Server text made safe for a terminal: control characters shown escaped, never obeyed."""

from __future__ import annotations

_ESCAPES = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in (
        *range(0x20),  # C0: ESC starts colour, cursor and title sequences; CR rewrites
        0x7F,
        *range(0x80, 0xA0),  # C1: 0x9B alone is a CSI on some terminals
        *range(0x202A, 0x202F),  # bidirectional overrides: text shown reordered
        *range(0x2066, 0x206A),
    )
}


def printable(text: object) -> str:
    """``str(text)`` with every control character written as an escape (``\\x1b``).

    Example:
        >>> printable("boom\\x1b[2J")
        'boom\\\\x1b[2J'
    """
    return str(text).translate(_ESCAPES)
