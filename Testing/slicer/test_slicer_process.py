"""The engine process runner and the JSON-lines parser, with real child processes."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

from AsymSegLib import process as P
from AsymSegLib import progress

pytestmark = pytest.mark.slicer


def script(body: str) -> list[str]:
    return [sys.executable, "-u", "-c", textwrap.dedent(body)]


def alive(pid: int) -> bool:
    """True while a process exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def waitUntil(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# ------------------------------------------------------------------------------ parsing
def test_json_line_becomes_an_event_with_its_fields():
    event = progress.parseLine('{"event": "progress", "stage": "infer", "done": 3, "total": 12, "x": 1}\n')
    assert (event.kind, event.stage, event.done, event.total, event.data) == ("progress", "infer", 3, 12, {"x": 1})
    assert event.fraction == pytest.approx(0.25)
    assert not event.isTerminal


def test_plain_and_malformed_lines_become_log_events_and_blank_lines_nothing():
    assert progress.parseLine("   \n") is None
    for line in ("Traceback (most recent call last):", '{"event": 3}', "{not json", '["event"]'):
        event = progress.parseLine(line)
        assert event.kind == "log" and event.message == line
    stderrJson = progress.parseLine('{"event": "done"}', stream="stderr")
    assert stderrJson.kind == "log" and stderrJson.stream == "stderr"


def test_done_event_is_terminal_and_keeps_metrics():
    event = progress.parseLine(json.dumps({"event": "done", "metrics": {"dsc": 0.5}, "seconds": 2.0}))
    assert event.isTerminal and event.data["metrics"] == {"dsc": 0.5}


def test_error_line_and_exit_codes_are_described():
    assert progress.errorMessageFromLine("asymseg segment: error: case1/t1.nii.gz: no such file") \
        == "case1/t1.nii.gz: no such file"
    assert progress.errorMessageFromLine("asymseg models import: error: bad archive") == "bad archive"
    assert progress.errorMessageFromLine("WARNING something") is None
    assert progress.describeExitCode(2) == "bad input"
    assert progress.describeExitCode(130) == "cancelled"
    assert progress.describeExitCode(-9) == "stopped by signal 9"
    assert progress.formatDuration(75) == "1 min 15 s"
    assert progress.formatDuration(3725) == "1 h 02 min"
    assert progress.formatDuration(None) == "?"


def test_counts_are_whole_numbers_only():
    assert [progress.asCount(v) for v in (3, 3.0, 0, -2)] == [3, 3, 0, -2]
    assert [progress.asCount(v) for v in (True, 2.5, "3", None, float("nan"), float("inf"))] == [None] * 6


def test_event_kinds_and_exit_codes_mirror_the_engine_constants():
    """The Slicer side repeats the engine's protocol names (it never imports the engine): keep them equal."""
    constants = pytest.importorskip("asymseg.constants")

    def names(module, prefix):  # the single values, not the sets and tables built from them
        return {name: value for name, value in vars(module).items()
                if name.startswith(prefix) and isinstance(value, (int, str))}

    assert names(progress, "EVENT_") == names(constants, "EVENT_")
    assert set(names(progress, "EVENT_").values()) == constants.EVENT_KINDS
    assert names(progress, "EXIT_") == names(constants, "EXIT_")
    assert set(progress.EXIT_CODE_MEANINGS) == set(names(constants, "EXIT_").values())
    assert progress.TERMINAL_EVENTS == {constants.EVENT_DONE, constants.EVENT_CANCELLED, constants.EVENT_FAILED}


def test_a_line_the_engine_renders_parses_back_to_the_same_event_fields():
    """ProgressEvent mirrors the engine's Event field by field; the JSON line carries them across."""
    events = pytest.importorskip("asymseg.events")
    engineFields = [f.name for f in dataclasses.fields(events.Event)]
    assert [f.name for f in dataclasses.fields(progress.ProgressEvent)][:len(engineFields)] == engineFields
    stream = io.StringIO()
    events.JsonlRenderer(stream)(events.Event("iteration", stage="train", done=3, total=10, message="step 3",
                                              data={"loss_clean": 0.5}))
    parsed = progress.parseLine(stream.getvalue())
    assert [getattr(parsed, name) for name in engineFields] == ["iteration", "train", 3, 10, "step 3",
                                                                {"loss_clean": 0.5}]


def test_engine_environment_puts_the_engine_first_and_hides_gpus_when_forced():
    env = P.engineEnvironment(forceCpu=True, base={"PYTHONPATH": "/x"}, extra={"A": "1"})
    paths = env["PYTHONPATH"].split(os.pathsep)
    assert paths[0] == str(P.engineDirectory()) and "/x" in paths
    assert (P.engineDirectory() / "asymseg" / "__init__.py").is_file()
    assert env["CUDA_VISIBLE_DEVICES"] == "-1" and env["A"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in P.engineEnvironment(base={})
    assert P.engineCommand(["segment", 3], "/py") == ["/py", "-m", "asymseg", "segment", "3"]


# ------------------------------------------------------------------------------ running
PROGRESS_SCRIPT = """
    import json, sys
    for i in range(1, 4):
        print(json.dumps({"event": "progress", "stage": "infer", "done": i, "total": 3}), flush=True)
    print("a plain line", flush=True)
    print("asymseg segment: error: case7/t1.nii.gz: spacing has a zero axis", file=sys.stderr, flush=True)
    print(json.dumps({"event": "done", "metrics": {"dsc": 0.75}}), flush=True)
    sys.exit(EXIT)
"""


def test_wait_delivers_events_in_order_and_the_result():
    proc = P.EngineProcess()
    proc.startCommand(script(PROGRESS_SCRIPT.replace("EXIT", "0")))
    seen = []
    result = proc.wait(timeout=60, onEvent=seen.append)
    kinds = [e.kind for e in seen if e.stream == "stdout"]
    assert kinds == ["progress", "progress", "progress", "log", "done"]
    assert [e.done for e in seen if e.kind == "progress"] == [1, 2, 3]
    assert result.succeeded and result.returnCode == 0
    assert result.doneEvent.data["metrics"] == {"dsc": 0.75}
    assert result.errorMessage == "case7/t1.nii.gz: spacing has a zero axis"
    assert "a plain line" in result.logTail


def test_failure_exit_code_raises_with_the_engine_message():
    proc = P.EngineProcess()
    proc.startCommand(script(PROGRESS_SCRIPT.replace("EXIT", "2")))
    result = proc.wait(timeout=60)
    assert not result.succeeded and not result.cancelled
    expected = r"bad input \(exit code 2\): case7/t1.nii.gz: spacing has a zero axis"
    with pytest.raises(P.EngineError, match=expected) as info:
        result.raiseIfFailed()
    assert info.value.returnCode == 2


def test_poll_never_blocks_and_finishes_after_exit():
    proc = P.EngineProcess()
    proc.startCommand(script("import time, json; time.sleep(1.0); print(json.dumps({'event': 'done'}))"))
    started = time.monotonic()
    assert proc.poll() == [] and proc.isRunning
    assert time.monotonic() - started < 0.5
    events = []
    assert waitUntil(lambda: events.extend(proc.poll()) or proc.finished, timeout=30)
    assert [e.kind for e in events] == ["done"]
    assert proc.result().succeeded


def test_wait_timeout_raises_and_leaves_the_process_to_the_caller():
    proc = P.EngineProcess()
    proc.startCommand(script("import time; time.sleep(30)"))
    with pytest.raises(TimeoutError, match="still running"):
        proc.wait(timeout=0.3)
    assert alive(proc.pid)
    proc.kill()
    assert proc.wait(timeout=30).cancelled
    assert not alive(proc.pid)


TREE_SCRIPT = """
    import json, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    print(json.dumps({"event": "start", "child": child.pid}), flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("grace", [0.0, 0.5])
def test_cancel_kills_the_whole_process_tree(grace):
    proc = P.EngineProcess(gracePeriod=grace)
    proc.startCommand(script(TREE_SCRIPT))
    events = []
    assert waitUntil(lambda: events.extend(proc.poll()) or any(e.kind == "start" for e in events), timeout=30)
    child = next(e for e in events if e.kind == "start").data["child"]
    assert alive(proc.pid) and alive(child)
    proc.cancel()
    result = proc.wait(timeout=30)
    assert result.cancelled and not result.succeeded
    assert waitUntil(lambda: not alive(child) and not alive(proc.pid), timeout=15), "a process survived the cancel"


def test_cancel_lets_a_cooperative_process_exit_130_within_the_grace_period():
    """Cancel creates the child's cancel file, on every platform alike; no signal is sent."""
    body = """
        import json, os, signal, sys, time
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(99))  # a signal would show as 99
        cancelFile = os.environ["ASYMSEG_CANCEL_FILE"]
        print(json.dumps({"event": "start"}), flush=True)
        for step in range(600):
            if os.path.exists(cancelFile):
                print(json.dumps({"event": "cancelled", "message": "stopped at step 2"}), flush=True)
                sys.exit(130)
            time.sleep(0.1)
    """
    proc = P.EngineProcess(gracePeriod=20)
    proc.startCommand(script(body))
    assert waitUntil(lambda: any(e.kind == "start" for e in proc.poll()), timeout=30)
    cancelFolder = proc.cancelFile.parent
    assert cancelFolder.is_dir() and not proc.cancelFile.exists()
    proc.cancel()
    result = proc.wait(timeout=30)
    assert result.returnCode == 130 and result.cancelled
    assert result.terminalEvent.kind == "cancelled" and result.terminalEvent.message == "stopped at step 2"
    assert not cancelFolder.exists()  # removed once the process has finished


def test_a_launcher_that_reads_output_itself_is_followed_and_cancelled():
    """The launchConsoleProcess path: merged output read by someone else, fed line by line."""
    def launcher(command, environment, onLine, onExit):
        popen = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)

        def read():
            for line in popen.stdout:
                onLine(line.rstrip("\n"))
            onExit(popen.wait())

        threading.Thread(target=read, daemon=True).start()
        return popen

    proc = P.EngineProcess(gracePeriod=0.5)
    proc.startCommand(script(PROGRESS_SCRIPT.replace("EXIT", "0")), launcher=launcher)
    result = proc.wait(timeout=60)
    assert result.succeeded and result.doneEvent.data["metrics"]["dsc"] == 0.75
    assert result.errorMessage.startswith("case7/t1.nii.gz")  # stderr merged into stdout

    tree = P.EngineProcess(gracePeriod=0.5)
    tree.startCommand(script(TREE_SCRIPT), launcher=launcher)
    events = []
    assert waitUntil(lambda: events.extend(tree.poll()) or any(e.kind == "start" for e in events), timeout=30)
    child = next(e for e in events if e.kind == "start").data["child"]
    tree.cancel()
    assert tree.wait(timeout=30).cancelled
    assert waitUntil(lambda: not alive(child) and not alive(tree.pid), timeout=15)


def test_a_process_object_runs_once_and_checks_its_arguments():
    with pytest.raises(ValueError, match="gracePeriod"):
        P.EngineProcess(gracePeriod=-1)
    proc = P.EngineProcess()
    with pytest.raises(RuntimeError, match="no engine process"):
        proc.wait()
    proc.startCommand(script("pass"))
    with pytest.raises(RuntimeError, match="already ran"):
        proc.startCommand(script("pass"))
    assert proc.wait(timeout=30).succeeded


def test_the_real_engine_reports_phantom_progress_as_json_lines(tmp_path):
    proc = P.EngineProcess()
    proc.start(["phantom", "--out", tmp_path, "--cases", "2", "--size", "24", "--seed", "1", "--progress", "jsonl"])
    events = []
    result = proc.wait(timeout=300, onEvent=events.append)
    assert result.succeeded, result.summary()
    progressEvents = [e for e in events if e.kind == "progress"]
    assert progressEvents and progressEvents[-1].done == progressEvents[-1].total
    assert all(e.kind != "log" or e.stream == "stderr" or not e.message.startswith("{") for e in events)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2
