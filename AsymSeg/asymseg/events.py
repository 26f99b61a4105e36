"""Progress events and cancellation shared by every long-running job.

Library functions take an optional ``on_event`` callback fed :class:`Event` objects and an
optional :class:`CancelToken` they check between steps. The CLI renders events as tqdm bars
for people or as one flushed JSON object per line (``--progress jsonl``) for the Slicer panels.
When stderr is not a terminal (a log file, a pipe), the default ``--progress auto`` writes plain
lines instead of bars: no carriage returns, no escape sequences.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from asymseg import constants as C
from asymseg.errors import Cancelled


@dataclass(frozen=True)
class Event:
    """One progress event.

    Args:
        kind: one of ``constants.EVENT_KINDS`` ("start", "progress", "iteration", ...).
        stage: what is running, e.g. "load", "infer", "write", "train", "validate".
        done: units finished in this stage.
        total: units in this stage (None when unknown).
        message: a short human-readable line.
        data: further JSON-serialisable fields (losses, metrics, paths), merged into the JSON line.
    """

    kind: str
    stage: str | None = None
    done: int | None = None
    total: int | None = None
    message: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in C.EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}; expected one of {sorted(C.EVENT_KINDS)}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-lines form: ``{"event": kind, "stage": ..., "done": ..., "total": ..., **data}``."""
        out: dict[str, Any] = {"event": self.kind}
        for key in ("stage", "done", "total", "message"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out.update(json_safe(dict(self.data)))
        return out


EventCallback = Callable[[Event], None]


def emit(on_event: EventCallback | None, kind: str, **fields: Any) -> None:
    """Send an event to ``on_event`` if there is one. Unknown keyword fields go to ``data``."""
    if on_event is None:
        return
    core = {k: fields.pop(k) for k in ("stage", "done", "total", "message") if k in fields}
    on_event(Event(kind, data=fields, **core))


def json_safe(value: Any) -> Any:
    """Convert numpy scalars/arrays and non-finite floats so ``json.dumps`` writes strict JSON.

    NaN and infinities become ``None`` (JSON has no NaN); numpy types become Python types.
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "__fspath__"):
        return str(value)
    return value


class CancelToken:
    """A thread-safe cancel flag checked by long jobs between steps."""

    def __init__(self) -> None:
        self._flag = threading.Event()
        self.reason: str | None = None

    def cancel(self, reason: str = "cancelled") -> None:
        self.reason = reason
        self._flag.set()

    @property
    def cancelled(self) -> bool:
        return self._flag.is_set()

    def check(self) -> None:
        """Raise :class:`~asymseg.errors.Cancelled` if the token was cancelled."""
        if self._flag.is_set():
            raise Cancelled(self.reason or "cancelled")


class JsonlRenderer:
    """Writes each event as one JSON object per line and flushes (for the Slicer panels)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, event: Event) -> None:
        self.stream.write(json.dumps(event.to_dict(), allow_nan=False) + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass

    def echo(self, text: str, stream: TextIO) -> None:
        """Write a result line to ``stream`` (for renderers with bars: above them)."""
        stream.write(text + "\n")
        stream.flush()


class TqdmRenderer:
    """Renders progress as tqdm bars on ``stream`` and other events with a message as log lines.

    Stages nest: a stage that starts while another one's bar is unfinished (a cell's training
    inside an experiment, loading inside a case) gets its own bar below it, which disappears when
    its parent moves on or its stage is done; the outer bar keeps its line, its count and its
    rate, so an interruption never leaves a stale copy of it behind. A stage that starts after a
    bar has completed follows it instead (load, then train). An outermost bar stays as one summary
    line when it closes. Messages are written above the bars that are still running (bars that are
    all complete close first); those of "failed" and "cancelled" events are not written, because
    the command's one error line says the same.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._bars: list[tuple[str | None, Any]] = []  # (stage, bar), outermost first

    def __call__(self, event: Event) -> None:
        if event.kind in (C.EVENT_CANCELLED, C.EVENT_FAILED):
            self._close_from(0)  # the command reports why, in its one error line
            return
        if event.kind == C.EVENT_DONE:
            level = self._level(event.stage)
            if event.total and level is not None:
                self._update(event)
            self._close_from(level)  # the stage and everything inside it ended; then its summary
            if event.message:
                self.echo(event.message, self.stream)
            return
        if event.message:  # what just happened (a case written, a step started), then the count
            self.echo(event.message, self.stream)
        if event.total and event.kind in (C.EVENT_START, C.EVENT_PROGRESS, C.EVENT_ITERATION):
            self._update(event)

    def _level(self, stage: str | None) -> int | None:
        return next((i for i, (name, _) in enumerate(self._bars) if name == stage), None)

    def _update(self, event: Event) -> None:
        from tqdm import tqdm

        level = self._level(event.stage)
        if level is not None:
            bar = self._bars[level][1]
            if bar.total != event.total or (event.done or 0) < bar.n:
                self._close_from(level)  # the stage runs again (next technique, next case): a new bar
                level = None
        if level is None:
            while self._bars and self._bars[-1][1].n >= self._bars[-1][1].total:
                self._close_from(len(self._bars) - 1)  # a finished stage: the new one follows it
            bar = tqdm(total=event.total, initial=event.done or 0, desc=event.stage, file=self.stream,
                       dynamic_ncols=True, position=len(self._bars), leave=not self._bars)
            self._bars.append((event.stage, bar))
            level = len(self._bars) - 1
        else:
            self._close_from(level + 1)  # inner stages ended when their parent moves on
        bar = self._bars[level][1]
        postfix = {k: v for k, v in event.data.items()  # tqdm shows the rate and the time left itself
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and "second" not in k}
        if postfix and event.kind in (C.EVENT_PROGRESS, C.EVENT_ITERATION):  # live numbers, not a summary
            bar.set_postfix({k: f"{v:.4g}" for k, v in list(postfix.items())[:4]}, refresh=False)
        bar.update((event.done or 0) - bar.n)

    def echo(self, text: str, stream: TextIO) -> None:
        """Write a line to ``stream`` (e.g. a result on stdout) above the bars, which carry on below it.

        When every open bar is complete, their work is over: they close first, so the line follows them.
        """
        if self._bars and all(bar.n >= bar.total for _, bar in self._bars):
            self._close_from(0)
        if self._bars:
            from tqdm import tqdm

            tqdm.write(text, file=stream)
        else:
            stream.write(text + "\n")
        stream.flush()

    def _close_from(self, level: int | None) -> None:
        """Close the bar at ``level`` and every bar inside it (innermost first)."""
        if level is None:
            return
        while len(self._bars) > level:
            _, bar = self._bars.pop()
            bar.close()

    def close(self) -> None:
        self._close_from(0)


class NullRenderer:
    """Renders no event (``--progress none``); result lines are still written."""

    def __call__(self, event: Event) -> None:
        pass

    def close(self) -> None:
        pass

    echo = JsonlRenderer.echo


class PlainRenderer:
    """Renders progress as plain lines, for a log file or a pipe (what ``--progress plain`` writes).

    Each message is written once, as a line. A stage's count is written as a line when the stage
    completes (``load: 2/2 in 0.4 s``) and, while it runs, every ``interval`` seconds
    (``train: iteration 120/500, 2.1 s/it, ETA 13m18s``), with the rate and time left measured
    from the events' arrival. A stage that starts while another one is unfinished (loading inside
    a case, a cell's training inside an experiment) is nested: its periodic lines are written, its
    completion line is not (its parent's count says it). No carriage return, no escape sequence.

    Args:
        stream: where the lines go (stderr).
        interval: seconds between two periodic lines of a stage.
        clock: the time source (seconds), for tests.
    """

    def __init__(self, stream: TextIO, *, interval: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.interval = float(interval)
        self.clock = clock
        self._stages: dict[str | None, dict[str, Any]] = {}  # open stages, outermost first

    def __call__(self, event: Event) -> None:
        if event.kind in (C.EVENT_CANCELLED, C.EVENT_FAILED):
            self._stages.clear()  # the command reports why, in its one error line
            return
        if event.kind == C.EVENT_DONE:
            if event.total:
                self._update(event)
            self._stages.pop(event.stage, None)
            if event.message:
                self.echo(event.message, self.stream)
            return
        if event.message:
            self.echo(event.message, self.stream)
        if event.total and event.kind in (C.EVENT_START, C.EVENT_PROGRESS, C.EVENT_ITERATION):
            self._update(event)

    def _update(self, event: Event) -> None:
        now = self.clock()
        done, total = event.done or 0, int(event.total or 0)
        state = self._stages.get(event.stage)
        if state is None or state["total"] != total or done < state["done"]:  # a new run of the stage
            self._stages.pop(event.stage, None)
            nested = any(s["done"] < s["total"] for s in self._stages.values())
            for name in [n for n, s in self._stages.items() if s["done"] >= s["total"]]:
                del self._stages[name]  # finished stages: the new one follows them
            state = {"total": total, "done": done, "first": done, "start": now, "last": now, "nested": nested,
                     "finished": False, "iteration": False}
            self._stages[event.stage] = state
        state["done"] = done
        state["iteration"] = state["iteration"] or event.kind == C.EVENT_ITERATION
        if done >= total:
            if not state["finished"] and not state["nested"]:
                self.echo(f"{event.stage or 'progress'}: {self._count(state)} in {format_duration(now - state['start'])}",
                          self.stream)
            state["finished"] = True
        elif now - state["last"] >= self.interval:
            state["last"] = now
            line = f"{event.stage or 'progress'}: {self._count(state)}"
            rate = (done - state["first"]) / max(now - state["start"], 1e-9)
            if rate > 0:
                per = f"{rate:.2f} it/s" if rate >= 1 else f"{1 / rate:.2f} s/it"
                line += f", {per}, ETA {format_duration((total - done) / rate)}"
            self.echo(line, self.stream)

    @staticmethod
    def _count(state: dict[str, Any]) -> str:
        return ("iteration " if state["iteration"] else "") + f"{state['done']}/{state['total']}"

    def echo(self, text: str, stream: TextIO) -> None:
        """Write a line to ``stream`` (a message on stderr, a result on stdout)."""
        stream.write(text + "\n")
        stream.flush()

    def close(self) -> None:
        self._stages.clear()


def format_duration(seconds: float) -> str:
    """``0.4 s``, ``45 s``, ``13m18s``, ``1h02m``: a duration for a log line."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


#: ``--progress`` values: auto (bars on a terminal, plain lines otherwise), tqdm (bars even in a
#: file), plain, jsonl (one JSON object per line on stdout, for the Slicer panels) and none.
PROGRESS_MODES = ("auto", "tqdm", "plain", "jsonl", "none")


def make_renderer(mode: str, *, stdout: TextIO, stderr: TextIO
                  ) -> JsonlRenderer | TqdmRenderer | PlainRenderer | NullRenderer:
    """The renderer for ``--progress MODE`` (see :data:`PROGRESS_MODES`).

    ``auto`` draws tqdm bars on stderr when stderr is a terminal and writes plain lines otherwise
    (a log file or a pipe gets no carriage returns or escape sequences).
    """
    if mode == "auto":
        mode = "tqdm" if _is_terminal(stderr) else "plain"
    if mode == "jsonl":
        return JsonlRenderer(stdout)
    if mode == "tqdm":
        return TqdmRenderer(stderr)
    if mode == "plain":
        return PlainRenderer(stderr)
    if mode == "none":
        return NullRenderer()
    raise ValueError(f"unknown progress mode {mode!r}; expected one of {PROGRESS_MODES}")


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
