"""Whether a process still exists on this machine (for stale locks and stale temporary files)."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """True while process ``pid`` exists here (also when it belongs to another user); False when it
    is gone or ``pid`` cannot be a process id."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


__all__ = ["process_alive"]
