"""Cancel through a file: one graceful stop on every platform.

Signals do not work the same everywhere: Windows has no SIGTERM for a console process, and
terminating it there kills it at once, so a training run could not finish its step and keep its
checkpoint. A parent (the Slicer panels) therefore names a file in ``ASYMSEG_CANCEL_FILE``; a
daemon thread looks for it every :data:`CHECK_SECONDS` and, once it exists, cancels the job's
token exactly as SIGINT/SIGTERM do: the job stops at its next safe point, keeps its last good
outputs (a training run writes its checkpoint and best model) and the command exits with 130.
A file that exists already when the command starts cancels it at once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path

from asymseg.errors import InputError
from asymseg.events import CancelToken

#: The environment variable naming the cancel file.
ENV_VARIABLE = "ASYMSEG_CANCEL_FILE"
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


class CancelFileWatcher:
    """Cancels ``token`` once ``path`` exists (a daemon thread; :meth:`stop` ends it).

    Args:
        path: the cancel file.
        token: the job's cancel token.
        interval: seconds between two looks.
    """

    def __init__(self, path: str | os.PathLike, token: CancelToken, interval: float = CHECK_SECONDS) -> None:
        self.path = Path(path)
        self.token = token
        self.interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="asymseg-cancel-file", daemon=True)

    def start(self) -> CancelFileWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            if self.path.exists():
                if not self.token.cancelled:
                    self.token.cancel(f"cancelled by {self.path.name}")
                return
            self._stopped.wait(self.interval)


def watch_cancel_file(token: CancelToken, environ: Mapping[str, str] | None = None) -> CancelFileWatcher | None:
    """Start watching the file named by ``ASYMSEG_CANCEL_FILE``, if any.

    Raises:
        InputError: see :func:`cancel_file_from_environment`.
    """
    path = cancel_file_from_environment(environ)
    return None if path is None else CancelFileWatcher(path, token).start()
