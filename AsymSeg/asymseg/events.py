"""Progress events and cancellation shared by every long-running job.

Library functions take an optional ``on_event`` callback fed :class:`Event` objects and an
optional :class:`CancelToken` they check between steps. The CLI renders events as tqdm bars
for people or as one flushed JSON object per line (``--progress jsonl``) for the Slicer panels.
"""

from __future__ import annotations

import json
import math
import threading
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


class TqdmRenderer:
    """Renders progress/iteration events as tqdm bars on stderr, other events as log lines."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._bar = None
        self._stage: str | None = None

    def __call__(self, event: Event) -> None:
        from tqdm import tqdm

        if event.kind in (C.EVENT_PROGRESS, C.EVENT_ITERATION) and event.total:
            if self._bar is None or self._stage != event.stage:
                self.close()
                self._bar = tqdm(total=event.total, desc=event.stage, file=self.stream,
                                 dynamic_ncols=True, leave=True)
                self._stage = event.stage
            self._bar.n = event.done or 0
            postfix = {k: v for k, v in event.data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if postfix:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in list(postfix.items())[:4]}, refresh=False)
            self._bar.refresh()
        elif event.message:
            if self._bar is not None:
                self._bar.write(event.message, file=self.stream)
            else:
                self.stream.write(event.message + "\n")
                self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._stage = None


class NullRenderer:
    def __call__(self, event: Event) -> None:
        pass

    def close(self) -> None:
        pass


PROGRESS_MODES = ("tqdm", "jsonl", "none")


def make_renderer(mode: str, *, stdout: TextIO, stderr: TextIO) -> JsonlRenderer | TqdmRenderer | NullRenderer:
    """The renderer for ``--progress MODE``: jsonl on stdout, tqdm on stderr, or none."""
    if mode == "jsonl":
        return JsonlRenderer(stdout)
    if mode == "tqdm":
        return TqdmRenderer(stderr)
    if mode == "none":
        return NullRenderer()
    raise ValueError(f"unknown progress mode {mode!r}; expected one of {PROGRESS_MODES}")
