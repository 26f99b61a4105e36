"""Whether a process still exists: on POSIX by signal 0, on Windows by reading its exit code (there,
``os.kill(pid, 0)`` would terminate it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from asymseg import processes


def test_this_process_is_alive_and_a_finished_child_is_not():
    assert processes.process_alive(__import__("os").getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not processes.process_alive(child.pid)


@pytest.mark.parametrize("pid", [0, -1, True, 2 ** 80, "123"])
def test_values_that_cannot_be_a_process_id_are_not_alive(pid):
    assert not processes.process_alive(pid)


class FakeCtypes:
    """Just what ``_windows_alive`` uses of ctypes, with the last Win32 error settable."""

    def __init__(self) -> None:
        self.last_error = 0

    class c_ulong:  # noqa: N801 - ctypes' name
        def __init__(self) -> None:
            self.value = 0

    @staticmethod
    def byref(value):
        return value

    def get_last_error(self) -> int:
        return self.last_error


class FakeKernel32:
    """OpenProcess / GetExitCodeProcess / CloseHandle over a table of pid -> exit code (259 running);
    it has no TerminateProcess, so a call to one fails the test."""

    def __init__(self, ctypes: FakeCtypes, table: dict[int, int], denied=(), unreadable=()) -> None:
        self.ctypes, self.table, self.denied, self.unreadable = ctypes, table, set(denied), set(unreadable)
        self.open_handles: set[int] = set()

    def OpenProcess(self, access, inherit, pid):  # noqa: N802 - the Win32 name
        assert access == 0x1000 and inherit is False
        if pid in self.denied:
            self.ctypes.last_error = 5
            return 0
        if pid not in self.table:
            self.ctypes.last_error = 87  # ERROR_INVALID_PARAMETER: no such process
            return 0
        self.open_handles.add(pid)
        return pid

    def GetExitCodeProcess(self, handle, code):  # noqa: N802
        if handle in self.unreadable:
            return 0
        code.value = self.table[handle]
        return 1

    def CloseHandle(self, handle):  # noqa: N802
        self.open_handles.remove(handle)
        return 1


def test_the_windows_path_reads_the_exit_code_and_never_terminates():
    ctypes = FakeCtypes()
    kernel32 = FakeKernel32(ctypes, {10: 259, 11: 0, 12: 259}, denied={13}, unreadable={12})
    assert processes._windows_alive(10, kernel32, ctypes)  # running
    assert not processes._windows_alive(11, kernel32, ctypes)  # exited (a handle keeps its record)
    assert processes._windows_alive(12, kernel32, ctypes)  # exists, state unreadable: kept
    assert processes._windows_alive(13, kernel32, ctypes)  # another user's: exists
    assert not processes._windows_alive(14, kernel32, ctypes)  # no such process
    assert kernel32.open_handles == set()  # every handle closed
