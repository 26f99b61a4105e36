"""Run ``python -m asymseg ...`` as a child process with JSON-lines progress.

The engine never runs inside Slicer's GUI process. :class:`EngineProcess` starts it in its own
session (POSIX) or process group (Windows), reads stdout and stderr on two reader threads and
queues the lines. The caller drains the queue on its own thread:

* GUI: a QTimer calls :meth:`EngineProcess.poll` every ~100 ms and updates widgets and MRML
  with the returned events, so the scene is touched only on the GUI thread;
* scripts and tests: :meth:`EngineProcess.wait` blocks until the process ends.

Slicer 5.12+ can read the output itself (``slicer.util.launchConsoleProcess(blocking=False)``):
then :meth:`EngineProcess.attach` takes its ``Popen`` and :meth:`feedLine`/:meth:`feedExit` take
the lines and the exit code from its callbacks; everything else stays the same.

Cancel (:meth:`EngineProcess.cancel`) works the same on Linux, macOS and Windows: it creates the
child's cancel file (``ASYMSEG_CANCEL_FILE``, a fresh path per process), which the engine watches;
the engine stops at its next safe point (a training run finishes its step and keeps its
checkpoint and best model) and exits with code 130. No signal is sent: Windows has none that a
console process can handle. Only when the grace period has passed is the whole process tree
killed. :meth:`EngineProcess.kill` kills it at once. On Windows no console window opens for the
child (``CREATE_NO_WINDOW``; Slicer's ``launchConsoleProcess`` hides it the same way).
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from AsymSegLib import progress as P

log = logging.getLogger(__name__)

IS_WINDOWS = os.name == "nt"

#: Seconds between asking the process tree to stop and killing it.
DEFAULT_GRACE_PERIOD = 10.0
#: Seconds to wait for the output pipes to close after the process exited (a grandchild may
#: still hold them open).
PIPE_DRAIN_SECONDS = 3.0
#: Plain output lines kept for error reports.
LOG_TAIL_LINES = 200
#: The environment variable naming the file whose creation cancels the engine (asymseg.cancelfile).
CANCEL_FILE_VARIABLE = "ASYMSEG_CANCEL_FILE"
#: The environment variable naming this process: the engine cancels itself (gracefully) when
#: this process is gone, e.g. after Slicer crashed during a training run.
PARENT_PID_VARIABLE = "ASYMSEG_PARENT_PID"


def noWindowFlags() -> int:
    """``creationflags`` that keep a console window from opening for a child on Windows (0 elsewhere)."""
    return getattr(subprocess, "CREATE_NO_WINDOW", 0) if IS_WINDOWS else 0


#: ``launcher(command, environment, onLine, onExit) -> Popen`` (see :meth:`EngineProcess.start`).
Launcher = Callable[[list, dict, Callable[[str], None], Callable[[int], None]], subprocess.Popen]


class EngineError(RuntimeError):
    """The engine process failed; ``str(error)`` is one line for the user.

    Attributes:
        returnCode: the process exit code.
        result: the full :class:`EngineResult`.
    """

    def __init__(self, message: str, result: EngineResult) -> None:
        super().__init__(message)
        self.returnCode = result.returnCode
        self.result = result


def engineDirectory() -> Path:
    """The folder holding the ``asymseg`` engine package that ships with the AsymSeg module.

    Returns:
        The AsymSeg module folder (the parent of ``AsymSegLib``); put it on PYTHONPATH so the
        child process finds ``asymseg``.
    """
    return Path(__file__).resolve().parents[1]


def engineCommand(args: Sequence[object], pythonExecutable: str | os.PathLike | None = None) -> list[str]:
    """The command line ``PYTHON -m asymseg ARGS``.

    Args:
        args: engine arguments, e.g. ``["segment", "--model", "starter", ...]``.
        pythonExecutable: the interpreter (Slicer: ``PythonSlicer``); default: ``sys.executable``.
    """
    python = str(pythonExecutable) if pythonExecutable else sys.executable
    return [python, "-m", "asymseg", *(str(a) for a in args)]


def engineEnvironment(forceCpu: bool = False, extra: Mapping[str, str] | None = None,
                      base: Mapping[str, str] | None = None,
                      engineDir: str | os.PathLike | None = None) -> dict[str, str]:
    """The child environment: the engine on PYTHONPATH, unbuffered UTF-8 output, optional CPU.

    Args:
        forceCpu: hide every GPU from the child (``CUDA_VISIBLE_DEVICES=-1``).
        extra: variables to add or override last.
        base: the starting environment (default: a copy of ``os.environ``).
        engineDir: the folder that contains ``asymseg`` (default: :func:`engineDirectory`).
    """
    env = dict(os.environ if base is None else base)
    folder = str(engineDir or engineDirectory())
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if folder not in paths:
        paths.insert(0, folder)
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    if forceCpu:
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    if extra:
        env.update({str(k): str(v) for k, v in extra.items()})
    return env


@dataclass
class EngineResult:
    """How an engine run ended.

    Attributes:
        returnCode: the exit code (negative: killed by that signal on POSIX).
        doneEvent: the final ``done`` event (outputs, metrics, seconds, device), if any.
        terminalEvent: the last done/cancelled/failed event, if any.
        errorMessage: the engine's one-line error, if it printed one.
        cancelled: True when the run was cancelled (by :meth:`EngineProcess.cancel` or exit 130).
        logTail: the last plain output lines (not JSON progress).
        seconds: wall time from start to exit.
    """

    returnCode: int
    doneEvent: P.ProgressEvent | None = None
    terminalEvent: P.ProgressEvent | None = None
    errorMessage: str | None = None
    cancelled: bool = False
    logTail: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.returnCode == P.EXIT_OK and not self.cancelled

    def summary(self) -> str:
        """One line for the user: what happened and, on failure, why."""
        if self.succeeded:
            return f"finished in {P.formatDuration(self.seconds)}"
        if self.cancelled:
            return "cancelled"
        reason = self.errorMessage
        if not reason:
            reason = next((line for line in reversed(self.logTail) if line.strip()), "")
        meaning = P.describeExitCode(self.returnCode)
        text = f"{meaning} (exit code {self.returnCode})"
        return f"{text}: {reason}" if reason else text

    def raiseIfFailed(self) -> None:
        """Raise :class:`EngineError` unless the run succeeded."""
        if not self.succeeded:
            raise EngineError(self.summary(), self)


class EngineProcess:
    """One ``python -m asymseg`` child process, read without blocking.

    Args:
        pythonExecutable: the interpreter to run (Slicer: ``PythonSlicer``); default
            ``sys.executable``.
        engineDir: the folder containing the ``asymseg`` package (default: the module's own).
        gracePeriod: seconds between the polite stop request of :meth:`cancel` and the kill.

    Example::

        proc = EngineProcess()
        proc.start(["phantom", "--out", folder, "--cases", "1", "--progress", "jsonl"])
        result = proc.wait(onEvent=lambda e: print(e.text()))
        result.raiseIfFailed()
    """

    def __init__(self, pythonExecutable: str | os.PathLike | None = None,
                 engineDir: str | os.PathLike | None = None,
                 gracePeriod: float = DEFAULT_GRACE_PERIOD) -> None:
        if gracePeriod < 0:
            raise ValueError(f"gracePeriod must be >= 0 seconds, got {gracePeriod}")
        self.pythonExecutable = pythonExecutable
        self.engineDir = engineDir
        self.gracePeriod = gracePeriod
        self._popen: subprocess.Popen | None = None
        self._ownGroup = False
        self._queue: queue.Queue = queue.Queue()
        self._openStreams: set[str] = set()
        self._returnCode: int | None = None
        self._exitSeenAt: float | None = None
        self._startedAt: float | None = None
        self._endedAt: float | None = None
        self._cancelRequested = False
        self._killDeadline: float | None = None
        self._doneEvent: P.ProgressEvent | None = None
        self._terminalEvent: P.ProgressEvent | None = None
        self._errorMessage: str | None = None
        self._logTail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._finished = False
        self.command: list[str] = []
        #: The file whose creation asks the child to stop (set when the process starts).
        self.cancelFile: Path | None = None

    # ------------------------------------------------------------------ starting
    def start(self, args: Sequence[object], forceCpu: bool = False,
              env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None,
              launcher: Launcher | None = None) -> None:
        """Start ``python -m asymseg ARGS`` in a new session / process group.

        Args:
            args: engine arguments (include ``--progress jsonl`` for progress events).
            forceCpu: run on the CPU only (``CUDA_VISIBLE_DEVICES=-1``).
            env: extra environment variables for the child.
            cwd: the child's working folder.
            launcher: start the process elsewhere instead: called as
                ``launcher(command, environment, onLine, onExit)``, it returns the ``Popen`` and
                later calls ``onLine(line)`` per output line and ``onExit(returnCode)`` once
                (e.g. ``slicer.util.launchConsoleProcess(blocking=False)``).

        Raises:
            RuntimeError: if this object already started a process.
            OSError: if the interpreter cannot be started.
        """
        command = engineCommand(args, self.pythonExecutable)
        environment = engineEnvironment(forceCpu=forceCpu, extra=env, engineDir=self.engineDir)
        self.startCommand(command, environment, cwd=cwd, launcher=launcher)

    def startCommand(self, command: Sequence[str], environment: Mapping[str, str] | None = None,
                     cwd: str | os.PathLike | None = None, launcher: Launcher | None = None) -> None:
        """Start any command the same way as :meth:`start` (own session, reader threads).

        Args:
            command: the full command line.
            environment: the child's whole environment (default: a copy of ``os.environ``).
            cwd: the child's working folder.
            launcher: see :meth:`start`.
        """
        self._checkNotStarted()
        self.command = [str(c) for c in command]
        environment = dict(os.environ if environment is None else environment)
        self.cancelFile = Path(tempfile.mkdtemp(prefix="asymseg-cancel-")) / "cancel"
        environment[CANCEL_FILE_VARIABLE] = str(self.cancelFile)
        environment[PARENT_PID_VARIABLE] = str(os.getpid())  # the engine stops if Slicer is gone
        if launcher is not None:
            log.info("Starting: %s", subprocess.list2cmdline(self.command))
            popen = launcher(list(self.command), environment, self.feedLine, self.feedExit)
            self.attach(popen, self.command)
            return
        kwargs: dict = {}
        if IS_WINDOWS:
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | noWindowFlags()
        else:
            kwargs["start_new_session"] = True
        log.info("Starting: %s", subprocess.list2cmdline(self.command))
        self._popen = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=environment, cwd=None if cwd is None else str(cwd), text=True, encoding="utf-8",
            errors="replace", bufsize=1, **kwargs,
        )
        self._ownGroup = True
        self._startedAt = time.monotonic()
        for name, stream in (("stdout", self._popen.stdout), ("stderr", self._popen.stderr)):
            self._openStreams.add(name)
            thread = threading.Thread(target=self._readStream, args=(name, stream),
                                      name=f"asymseg-{name}-reader", daemon=True)
            thread.start()

    def attach(self, popen: subprocess.Popen, command: Sequence[str] = ()) -> None:
        """Follow a process started elsewhere (``slicer.util.launchConsoleProcess``).

        Its output then comes through :meth:`feedLine` and its end through :meth:`feedExit`.
        Such a process shares Slicer's process group, so cancel signals its tree one by one.
        """
        if self._popen is not None:
            raise RuntimeError("this EngineProcess already ran a process; create a new one")
        self._popen = popen
        self._ownGroup = False
        self.command = list(command)
        self._startedAt = time.monotonic()
        self._openStreams.add("stdout")

    def feedLine(self, line: str, stream: str = "stdout") -> None:
        """Queue one output line (thread-safe; for externally read processes)."""
        self._queue.put(("line", stream, line))

    def feedExit(self, returnCode: int) -> None:
        """Report the end of an externally read process (thread-safe)."""
        self._queue.put(("exit", None, int(returnCode)))

    def _checkNotStarted(self) -> None:
        if self._popen is not None:
            raise RuntimeError("this EngineProcess already ran a process; create a new one")

    def _readStream(self, name: str, stream) -> None:
        try:
            for line in iter(stream.readline, ""):
                self._queue.put(("line", name, line))
        except (OSError, ValueError) as err:  # closed under our feet while killing
            log.debug("reader %s stopped: %s", name, err)
        finally:
            self._queue.put(("eof", name, None))

    # ------------------------------------------------------------------ state
    @property
    def pid(self) -> int | None:
        return None if self._popen is None else self._popen.pid

    @property
    def started(self) -> bool:
        return self._popen is not None

    @property
    def finished(self) -> bool:
        """True once the process exited and its output was read (after :meth:`poll`)."""
        return self._finished

    @property
    def isRunning(self) -> bool:
        return self.started and not self._finished

    @property
    def cancelRequested(self) -> bool:
        return self._cancelRequested

    @property
    def lastDoneEvent(self) -> P.ProgressEvent | None:
        return self._doneEvent

    def elapsedSeconds(self) -> float:
        if self._startedAt is None:
            return 0.0
        return (self._endedAt or time.monotonic()) - self._startedAt

    # ------------------------------------------------------------------ reading
    def poll(self) -> list[P.ProgressEvent]:
        """Drain the queued output without blocking; call it from the GUI thread.

        Returns:
            The new events, in order (progress events and ``log`` events for plain lines).
        """
        events: list[P.ProgressEvent] = []
        while True:
            try:
                kind, stream, payload = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == "line":
                event = P.parseLine(payload, stream)
                if event is not None:
                    self._remember(event)
                    events.append(event)
            elif kind == "eof":
                self._openStreams.discard(stream)
            elif kind == "exit":
                self._openStreams.clear()
                self._returnCode = payload
        self._updateExit()
        if self._cancelRequested and not self._finished and self._killDeadline is not None \
                and time.monotonic() >= self._killDeadline:
            log.warning("The engine did not stop within %.0f s; killing its process tree", self.gracePeriod)
            self.kill()
        return events

    def _remember(self, event: P.ProgressEvent) -> None:
        if event.kind == P.EVENT_LOG:
            self._logTail.append(event.message or "")
            message = P.errorMessageFromLine(event.message or "")
            if message:
                self._errorMessage = message
        elif event.isTerminal:
            self._terminalEvent = event
            if event.kind == P.EVENT_DONE:
                self._doneEvent = event
            elif event.kind == P.EVENT_FAILED and event.message and not self._errorMessage:
                self._errorMessage = event.message

    def _updateExit(self) -> None:
        if self._popen is None or self._finished:
            return
        if self._returnCode is None and self._ownGroup:
            self._returnCode = self._popen.poll()
        if self._returnCode is None:
            return
        now = time.monotonic()
        if self._exitSeenAt is None:
            self._exitSeenAt = now
        if self._openStreams and now - self._exitSeenAt < PIPE_DRAIN_SECONDS:
            return  # the process ended; let the readers deliver its last lines
        if self._openStreams:
            log.warning("Output pipes still open %.0f s after the engine exited; stopping its leftover children",
                        PIPE_DRAIN_SECONDS)
            self._signalTree(kill=True)
        self._finished = True
        self._endedAt = self._endedAt or now
        self._removeCancelFile()

    def _removeCancelFile(self) -> None:
        if self.cancelFile is not None:
            shutil.rmtree(self.cancelFile.parent, ignore_errors=True)

    def wait(self, timeout: float | None = None,
             onEvent: Callable[[P.ProgressEvent], None] | None = None) -> EngineResult:
        """Block until the process ends (scripts, batch use, tests).

        Args:
            timeout: seconds to wait at most (None: no limit).
            onEvent: called with every event, in order, on the calling thread.

        Returns:
            The :class:`EngineResult` (check ``.succeeded`` or call ``.raiseIfFailed()``).

        Raises:
            TimeoutError: if the process is still running after ``timeout`` seconds; it keeps
                running (call :meth:`cancel` or :meth:`kill`).
            RuntimeError: if no process was started.
        """
        if self._popen is None:
            raise RuntimeError("no engine process was started")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            events = self.poll()
            if onEvent is not None:
                for event in events:
                    onEvent(event)
            if self._finished:
                return self.result()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the engine is still running after {timeout} s: "
                                   f"{subprocess.list2cmdline(self.command)}")
            if not events:
                time.sleep(0.02)

    def result(self) -> EngineResult:
        """The outcome; valid once :attr:`finished` is True."""
        if not self._finished or self._returnCode is None:
            raise RuntimeError("the engine process has not finished")
        cancelled = self._returnCode == P.EXIT_CANCELLED or (
            self._cancelRequested and self._returnCode != P.EXIT_OK)
        if self._terminalEvent is not None and self._terminalEvent.kind == P.EVENT_CANCELLED:
            cancelled = True
        return EngineResult(
            returnCode=self._returnCode, doneEvent=self._doneEvent, terminalEvent=self._terminalEvent,
            errorMessage=self._errorMessage, cancelled=cancelled, logTail=list(self._logTail),
            seconds=self.elapsedSeconds(),
        )

    # ------------------------------------------------------------------ stopping
    def cancel(self, gracePeriod: float | None = None) -> None:
        """Ask the engine to stop by creating its cancel file (every platform alike); :meth:`poll`
        kills the process tree once the grace period has passed.

        Args:
            gracePeriod: seconds before the kill (default: the constructor's; 0 kills at once).
        """
        if self._popen is None or self._finished:
            return
        grace = self.gracePeriod if gracePeriod is None else gracePeriod
        self._cancelRequested = True
        self._killDeadline = time.monotonic() + grace
        if grace <= 0:
            self.kill()
            return
        if self.cancelFile is None:  # attached from outside without our environment: ask with a signal
            log.info("Cancelling the process %s (no cancel file)", self._popen.pid)
            self._signalTree(kill=False)
            return
        log.info("Cancelling the engine (pid %s) through %s", self._popen.pid, self.cancelFile)
        try:
            self.cancelFile.touch()
        except OSError as err:  # the folder vanished: only the kill after the grace period remains
            log.warning("Cannot create the cancel file %s (%s); the engine is killed in %.0f s",
                        self.cancelFile, err, grace)

    def kill(self) -> None:
        """Kill the whole process tree now."""
        if self._popen is None:
            return
        self._cancelRequested = True
        self._signalTree(kill=True)

    def close(self) -> None:
        """Kill the process tree if it still runs and reap it (safe to call twice)."""
        if self._popen is None:
            return
        if self._popen.poll() is None:
            self.kill()
            try:
                self._popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.error("Engine process %s did not exit after being killed", self._popen.pid)
        self.poll()
        self._removeCancelFile()

    def _descendants(self) -> list:
        try:
            import psutil
        except ImportError:
            return []
        try:
            return psutil.Process(self._popen.pid).children(recursive=True)
        except psutil.Error:
            return []

    def _signalTree(self, kill: bool) -> None:
        """Signal the child and all its descendants (children first where done one by one)."""
        popen = self._popen
        descendants = self._descendants()
        if not IS_WINDOWS and self._ownGroup:
            try:
                os.killpg(popen.pid, signal.SIGKILL if kill else signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            if kill:  # descendants that left the group (new sessions) as well
                _signalProcesses(descendants, kill=True)
            return
        if descendants or havePsutil():
            _signalProcesses(descendants, kill=kill)
            _signalProcesses(_psutilProcess(popen.pid), kill=kill)
            return
        if IS_WINDOWS:
            subprocess.run(["taskkill", "/PID", str(popen.pid), "/T", "/F"], capture_output=True, check=False)
            return
        try:
            popen.kill() if kill else popen.terminate()
        except ProcessLookupError:
            pass


def havePsutil() -> bool:
    """True when psutil is importable (needed to stop the tree of a process started by someone else)."""
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True


def _psutilProcess(pid: int) -> list:
    try:
        import psutil

        return [psutil.Process(pid)]
    except Exception:  # psutil missing or the process is gone
        return []


def _signalProcesses(processes: Iterable, kill: bool) -> None:
    for process in processes:
        try:
            process.kill() if kill else process.terminate()
        except Exception:  # already gone or not ours
            pass
