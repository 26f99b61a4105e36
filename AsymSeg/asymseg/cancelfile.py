"""Cancel through a file: one graceful stop on every platform.

Signals do not work the same everywhere: Windows has no SIGTERM for a console process, and
terminating it there kills it at once, so a training run could not finish its step and keep its
checkpoint. A parent (the Slicer panels) therefore names a file in ``ASYMSEG_CANCEL_FILE``; a
daemon thread looks for it every :data:`CHECK_SECONDS` and, once it exists, cancels the job's
token exactly as SIGINT/SIGTERM do: the job stops at its next safe point, keeps its last good
outputs (a training run writes its checkpoint and best model) and the command exits with 130.
A file that exists already when the command starts cancels it at once.

A parent may also name its own process id in ``ASYMSEG_PARENT_PID``: when that process is gone
(Slicer closed or crashed while a training run went on), the same thread cancels the job the
same graceful way, so no engine keeps a core busy for hours with nobody to read its output.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path

from asymseg.errors import InputError
from asymseg.events import CancelToken
from asymseg.processes import process_alive

#: The environment variable naming the cancel file.
ENV_VARIABLE = "ASYMSEG_CANCEL_FILE"
#: The environment variable naming the parent process whose end cancels the job.
PARENT_VARIABLE = "ASYMSEG_PARENT_PID"
#: Seconds between two looks for the file.
CHECK_SECONDS = 0.2


def cancel_file_from_environment(environ: Mapping[str, str] | None = None) -> Path | None:
    """The cancel file named by ``ASYMSEG_CANCEL_FILE`` (None when unset or empty).

    Raises:
        InputError: its folder does not exist (the file could never be created there).
    """
    environ = os.environ if environ is None else environ
    text = environ.get(ENV_VARIABLE, "").strip()
    if not text:
        return None
    path = Path(text).expanduser()
    if not path.parent.is_dir():
        raise InputError(f"{ENV_VARIABLE}={text[:200]}: the folder {path.parent} does not exist")
    return path


def parent_from_environment(environ: Mapping[str, str] | None = None) -> int | None:
    """The parent process id named by ``ASYMSEG_PARENT_PID`` (None when unset or empty).

    Raises:
        InputError: not a positive whole number.
    """
    environ = os.environ if environ is None else environ
    text = environ.get(PARENT_VARIABLE, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) <= 0:
        raise InputError(f"{PARENT_VARIABLE}={text[:40]!r}: expected a process id (a positive whole number)")
    return int(text)


class CancelFileWatcher:
    """Cancels ``token`` once ``path`` exists, or once process ``parent`` is gone (a daemon
    thread; :meth:`stop` ends it).

    Args:
        path: the cancel file (None: watch the parent only).
        token: the job's cancel token.
        interval: seconds between two looks.
        parent: a process id whose end cancels the job (None: none).
    """

    def __init__(self, path: str | os.PathLike | None, token: CancelToken, interval: float = CHECK_SECONDS,
                 parent: int | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.parent = parent
        self.token = token
        self.interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="asymseg-cancel-file", daemon=True)

    def start(self) -> CancelFileWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()

    def _reason(self) -> str | None:
        if self.path is not None and self.path.exists():
            return f"cancelled by {self.path.name}"
        if self.parent is not None and not process_alive(self.parent):
            return f"cancelled: the parent process {self.parent} is gone"
        return None

    def _run(self) -> None:
        while not self._stopped.is_set():
            reason = self._reason()
            if reason is not None:
                if not self.token.cancelled:
                    self.token.cancel(reason)
                return
            self._stopped.wait(self.interval)


def watch_cancel_file(token: CancelToken, environ: Mapping[str, str] | None = None) -> CancelFileWatcher | None:
    """Start watching the file named by ``ASYMSEG_CANCEL_FILE`` and the process named by
    ``ASYMSEG_PARENT_PID``, if either is set.

    Raises:
        InputError: see :func:`cancel_file_from_environment` and :func:`parent_from_environment`.
    """
    path = cancel_file_from_environment(environ)
    parent = parent_from_environment(environ)
    if path is None and parent is None:
        return None
    return CancelFileWatcher(path, token, parent=parent).start()
