"""A minimal terminal: what a user sees after a program wrote progress bars and lines to a tty.

Understands what tqdm writes: printable text, ``\\r`` (column 0), ``\\n`` (next line, column 0,
as a tty with ``onlcr`` shows it) and ``ESC[A`` (cursor up). Enough to tell stale bars from
clean output; not a general VT100.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\x1b\[(\d*)A|\r|\n|[^\r\n\x1b]+")


def screen(text: str) -> list[str]:
    """The visible lines (right-stripped, blank lines dropped) after ``text`` was written."""
    lines: list[list[str]] = [[]]
    row = col = 0
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
            while len(lines) <= row:
                lines.append([])
        elif token.startswith("\x1b"):
            row = max(0, row - int(match.group(1) or 1))
        else:
            line = lines[row]
            line.extend(" " * (col + len(token) - len(line)))
            line[col:col + len(token)] = token
            col += len(token)
    return [s for s in ("".join(line).rstrip() for line in lines) if s]
