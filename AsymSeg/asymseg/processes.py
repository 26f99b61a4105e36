"""Whether a process still exists on this machine (for stale locks, stale temporary files and a
parent that is gone)."""

from __future__ import annotations

import os
from typing import Any

#: Windows: OpenProcess access right enough to read an exit code; GetExitCodeProcess's "running";
#: the errors of a process that exists but is not ours, and of one that does not exist.
_QUERY_LIMITED_INFORMATION = 0x1000
_STILL_ACTIVE = 259
_ERROR_ACCESS_DENIED = 5


def process_alive(pid: int) -> bool:
    """True while process ``pid`` exists here (also when it belongs to another user); False when it
    is gone or ``pid`` cannot be a process id.

    On Windows ``os.kill(pid, 0)`` would TERMINATE the process, so there the process is opened
    for a query and its exit code read instead.
    """
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    if os.name == "nt":  # pragma: no cover - exercised through _windows_alive on every platform
        import ctypes

        return _windows_alive(pid, ctypes.WinDLL("kernel32", use_last_error=True), ctypes)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


def _windows_alive(pid: int, kernel32: Any, ctypes: Any) -> bool:
    """:func:`process_alive` through the Win32 API (``kernel32`` and ``ctypes`` passed in)."""
    handle = kernel32.OpenProcess(_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        return ctypes.get_last_error() == _ERROR_ACCESS_DENIED  # exists, but not ours to open
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True  # it exists (we hold a handle) but its state cannot be read: keep it
        return code.value == _STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


__all__ = ["process_alive"]
