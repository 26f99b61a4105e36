"""One training run per output: a lock file beside the output model.

``<output>.lock`` is created exclusively (``O_CREAT | O_EXCL``) and holds the owner's pid, host and
start time. A second run into the same output finds it and stops with a clear error, instead of
both runs writing one model. A lock whose owner is gone (same host, pid not running, or an
unreadable lock file older than a minute) is stale: it is replaced, with a warning. The lock is
removed when the run ends, however it ends (a SIGKILL leaves it behind; the next run finds it
stale).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from asymseg.errors import InputError
from asymseg.processes import process_alive

log = logging.getLogger(__name__)

#: Seconds after which an unreadable lock file counts as stale (a writer needs far less).
UNREADABLE_STALE_SECONDS = 60.0


def lock_path(output: Path) -> Path:
    """The lock file of an output model folder: ``<output>.lock`` beside it."""
    return output.with_name(output.name + ".lock")


def _owner(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None
    except (OSError, ValueError):
        return None


def _stale(path: Path, owner: dict | None) -> bool:
    if owner is None:
        try:
            return time.time() - path.stat().st_mtime > UNREADABLE_STALE_SECONDS
        except OSError:
            return True
    if owner.get("host") != socket.gethostname():
        return False  # another machine's run: cannot tell, so it is not stale
    return not process_alive(int(owner["pid"]))


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[Path]:
    """Hold the lock of ``output`` for the block (see the module docstring).

    Raises:
        InputError: another live run holds the lock (its pid, host and start are named).
    """
    path = lock_path(Path(output))
    path.parent.mkdir(parents=True, exist_ok=True)
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                         "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(path)
            if not _stale(path, owner):
                who = (f"pid {owner['pid']} on {owner.get('host')}, since {owner.get('started')}" if owner
                       else "a run that is still writing its lock")
                raise InputError(f"{output}: another training run writes this model ({who}); wait for it to end, "
                                 f"or stop it, or choose another --output-model (lock file {path})") from None
            log.warning("%s: removing the stale lock of a run that is gone (%s)", path, owner)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(record)
        break
    else:
        raise InputError(f"{output}: could not take the lock {path}; another run keeps creating it")
    try:
        yield path
    finally:
        if _owner(path) and _owner(path).get("pid") == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
