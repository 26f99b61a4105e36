"""Parse the engine's JSON-lines progress (``--progress jsonl``) into events.

The engine prints one JSON object per line on stdout, for example::

    {"event": "progress", "stage": "infer", "done": 3, "total": 12}
    {"event": "done", "outputs": {...}, "metrics": {...}, "seconds": 4.2, "device": "cpu"}

Every other line (warnings, tracebacks, the one-line error on stderr) becomes a ``log`` event,
so nothing the process says is lost. The parser never raises on bad input.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

# Event kinds of the engine's JSON-lines protocol (the engine's constants.EVENT_*; repeated here
# because the Slicer side never imports the engine; a test checks that both lists agree).
EVENT_START = "start"
EVENT_PROGRESS = "progress"
EVENT_ITERATION = "iteration"
EVENT_VALIDATION = "validation"
EVENT_CHECKPOINT = "checkpoint"
EVENT_LOG = "log"
EVENT_DONE = "done"
EVENT_CANCELLED = "cancelled"
EVENT_FAILED = "failed"
TERMINAL_EVENTS = frozenset({EVENT_DONE, EVENT_CANCELLED, EVENT_FAILED})

# Exit codes of ``python -m asymseg`` (the engine's constants.EXIT_*, checked by the same test).
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_MODEL = 3
EXIT_RESOURCES = 4
EXIT_CANCELLED = 130

EXIT_CODE_MEANINGS: dict[int, str] = {
    EXIT_OK: "finished",
    EXIT_INTERNAL: "internal error",
    EXIT_USAGE: "bad input",
    EXIT_MODEL: "model problem",
    EXIT_RESOURCES: "not enough memory or disk space",
    EXIT_CANCELLED: "cancelled",
}

#: The engine's one-line error on stderr: ``asymseg segment: error: case1/t1.nii.gz: ...``.
ERROR_LINE = re.compile(r"^asymseg(?: [\w-]+)*: (?:internal )?error: (?P<message>.+)$")


@dataclass(frozen=True)
class ProgressEvent:
    """One event from the engine process.

    Args:
        kind: the ``event`` field ("progress", "iteration", "done", ...) or "log" for plain lines.
        stage: what is running ("load", "infer", "train", "validate", ...), when given.
        done: units finished in the stage, when given.
        total: units in the stage, when given.
        message: a human-readable line (the whole line for plain output).
        data: every other field of the JSON object (losses, metrics, outputs, ...).
        stream: "stdout" or "stderr".
    """

    kind: str
    stage: str | None = None
    done: int | None = None
    total: int | None = None
    message: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    stream: str = "stdout"

    @property
    def fraction(self) -> float | None:
        """done / total in [0, 1], or None when the event carries no count."""
        if self.done is None or not self.total:
            return None
        return min(max(self.done / self.total, 0.0), 1.0)

    @property
    def isTerminal(self) -> bool:
        """True for done, cancelled and failed events."""
        return self.kind in TERMINAL_EVENTS

    def text(self) -> str:
        """A one-line description for the log."""
        if self.kind == EVENT_LOG:
            return self.message or ""
        parts = [self.kind]
        if self.stage:
            parts.append(self.stage)
        if self.done is not None and self.total:
            parts.append(f"{self.done}/{self.total}")
        if self.message:
            parts.append(self.message)
        return " ".join(parts)


def asCount(value: Any) -> int | None:
    """A whole number from a JSON value (``3`` or ``3.0``), else None (booleans, fractions, text, NaN)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    return None


def parseLine(line: str, stream: str = "stdout") -> ProgressEvent | None:
    """Turn one output line into an event.

    Args:
        line: a line of the process output (trailing newline allowed).
        stream: "stdout" or "stderr"; only stdout lines are read as JSON.

    Returns:
        The event, or None for a blank line. Lines that are not a JSON object with an
        ``event`` field become ``log`` events carrying the line as ``message``.
    """
    text = line.rstrip("\r\n")
    if not text.strip():
        return None
    stripped = text.strip()
    if stream == "stdout" and stripped.startswith("{"):
        try:
            obj = json.loads(stripped)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("event"), str):
            kind = obj.pop("event")
            stage = obj.pop("stage", None)
            message = obj.pop("message", None)
            return ProgressEvent(
                kind=kind,
                stage=stage if isinstance(stage, str) else None,
                done=asCount(obj.pop("done", None)),
                total=asCount(obj.pop("total", None)),
                message=message if isinstance(message, str) else None,
                data=obj,
                stream=stream,
            )
    return ProgressEvent(kind=EVENT_LOG, message=text, stream=stream)


def errorMessageFromLine(line: str) -> str | None:
    """The message of the engine's one-line error (``asymseg CMD: error: MESSAGE``), else None."""
    match = ERROR_LINE.match(line.strip())
    return match.group("message") if match else None


def describeExitCode(code: int | None) -> str:
    """A short description of an engine exit code (negative codes: killed by that signal)."""
    if code is None:
        return "still running"
    if code < 0:
        return f"stopped by signal {-code}"
    return EXIT_CODE_MEANINGS.get(code, f"exit code {code}")


def formatDuration(seconds: float | None) -> str:
    """``75`` -> ``"1 min 15 s"``; ``3725`` -> ``"1 h 02 min"``; None or negative -> ``"?"``."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
