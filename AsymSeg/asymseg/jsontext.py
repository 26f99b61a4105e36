"""Strict JSON for files a user (or an attacker) hands us: cards, configs, checkpoint states.

``json.loads`` accepts what none of these files ever needs and turns it into crashes far from the
file: ``1e999`` and ``NaN`` become non-finite floats, a 5,000-digit integer raises a bare
``ValueError`` (Python's digit limit), and ten thousand nested brackets exhaust the recursion limit.
:func:`loads` refuses all of them with a :class:`ValueError` whose message says what was wrong, so
readers can name the file in one line.
"""

from __future__ import annotations

import json
import math
from typing import Any

#: Longest integer literal accepted (digits and sign); 20 digits hold any 64-bit integer.
MAX_INT_DIGITS = 20


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _int_parser(max_digits: int):
    def parse(text: str) -> int:
        if len(text) > max_digits:
            raise ValueError(f"an integer of {len(text):,} digits is out of range")
        return int(text)
    return parse


def _parse_constant(text: str) -> float:
    raise ValueError(f"{text} is not a number JSON allows")


def loads(text: str, *, allow_nan: bool = False, max_int_digits: int = MAX_INT_DIGITS) -> Any:
    """Parse JSON text; finite numbers only, integers up to :data:`MAX_INT_DIGITS` digits.

    ``allow_nan`` accepts the ``NaN``/``Infinity`` literals that ``json.dumps(allow_nan=True)``
    writes (our own checkpoint states); numbers that overflow to infinity stay refused.
    ``max_int_digits``: a checkpoint state holds 128-bit random generator states (39 digits).

    Raises:
        json.JSONDecodeError: invalid JSON (with line and column).
        ValueError: a non-finite or out-of-range number, or nesting deeper than Python can parse.
    """
    try:
        return json.loads(text, parse_float=_parse_float, parse_int=_int_parser(max_int_digits),
                          parse_constant=float if allow_nan else _parse_constant)
    except RecursionError as err:
        raise ValueError("nested too deeply") from err


__all__ = ["MAX_INT_DIGITS", "loads"]
