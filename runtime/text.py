"""Text that came from elsewhere (model output, server messages), made safe to show.

``one_line`` is for error fields: one line, no escape codes, bounded length. ``terminal_safe``
is for the terminal only: it removes ANSI/OSC escape sequences, other control characters and
bidirectional overrides, keeping newlines and tabs. JSON results keep the exact text.

    >>> one_line("Traceback ...\\n  boom\\x1b[31m red")
    'Traceback ... boom red'
"""

from __future__ import annotations

import re

from chainray.errors import ChainrayError

__all__ = ["one_line", "terminal_safe", "error_text", "ERROR_LIMIT"]

ERROR_LIMIT = 300  # characters in an error field; the full detail goes to the debug log

# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ST), other two-byte ESC sequences, and C1 CSI.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
                      r"|\x1b[@-Z\\-_]|\x9b[0-?]*[ -/]*[@-~]|\x9d[^\x07\x9c]*[\x07\x9c]?")
# C0 and C1 controls except tab and newline, DEL, and bidi embeddings/overrides/isolates.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str) -> str:
    """``text`` without escape sequences or control characters (tab and newline stay)."""
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


def one_line(text: str, limit: int = ERROR_LIMIT) -> str:
    """``text`` as one safe line of at most ``limit`` characters (cut with an ellipsis)."""
    flat = " ".join(terminal_safe(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def error_text(exc: BaseException) -> str:
    """One line for a step's ``error``: chainray's own message, else the exception's type and
    text. A Ray task error carries its cause; its own text is a whole traceback."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    text = str(exc) if isinstance(exc, ChainrayError) else f"{type(exc).__name__}: {exc}"
    return one_line(text)
