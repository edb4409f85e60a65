"""Small text helpers the fact parsers share."""

from __future__ import annotations

import re


def ascii_int(text: str) -> int | None:
    """A whole number made of ASCII digits (str.isdigit also accepts '²' and '٩', which int() refuses)."""
    text = text.strip()
    return int(text) if re.fullmatch(r"-?[0-9]{1,30}", text) else None
