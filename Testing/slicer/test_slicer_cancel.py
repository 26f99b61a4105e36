"""Cancel through the cancel file with the real engine: one graceful path on every platform.

The panel's :class:`AsymSegLib.process.EngineProcess` cancels by creating the child's
``ASYMSEG_CANCEL_FILE``; the engine stops at its next safe point. The path has no platform
branch, and no signal is sent: the test fails if any is (``_signalTree`` records its calls).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from AsymSegLib import process as P

pytestmark = [pytest.mark.slicer, pytest.mark.slow]

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def engine(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "asymseg", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env or ENV)


@pytest.fixture(scope="module")
def trainingData(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cancel")
    assert engine("phantom", "--out", folder / "cases", "--cases", "1", "--size", "32", "--seed", "9").returncode == 0
    assert engine("models", "create", "--architecture", "deepmedic", "--channels", "flair,t1c",
                  "--out", folder / "base").returncode == 0
    return folder, next(p for p in (folder / "cases").iterdir() if p.is_dir())


def test_the_engine_constant_and_the_panel_name_the_same_variable():
    from asymseg import cancelfile

    assert P.CANCEL_FILE_VARIABLE == cancelfile.ENV_VARIABLE


def test_cancel_stops_a_real_training_run_at_a_safe_point_and_keeps_its_checkpoint(trainingData, tmp_path,
                                                                                     monkeypatch):
    folder, case = trainingData
    proc = P.EngineProcess(gracePeriod=300)
    signalled = []
    monkeypatch.setattr(proc, "_signalTree", lambda kill: signalled.append(kill))
    output = tmp_path / "model"
    proc.start(["--threads", "1", "finetune", "--train-case", case, "--base-model", folder / "base",
                "--iterations", "100000", "--device", "cpu", "--output-model", output, "--progress", "jsonl"],
               env={"OMP_NUM_THREADS": "1"})
    events = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(e.kind == "iteration" for e in events):
        events += proc.poll()
        assert not proc.finished, proc.result().summary()
        time.sleep(0.05)
    assert any(e.kind == "iteration" for e in events)
    proc.cancel()
    assert proc.cancelFile.exists()
    result = proc.wait(timeout=300)
    assert signalled == []  # the file alone stopped it: no SIGTERM, no kill
    assert result.returnCode == 130 and result.cancelled and not result.succeeded
    assert result.terminalEvent.kind == "cancelled"
    checkpoint = output.parent / f"{output.name}.run" / "checkpoint"
    assert checkpoint.is_dir() and any(checkpoint.iterdir())
    assert not proc.cancelFile.parent.exists()


def test_a_cancel_file_present_at_the_start_cancels_at_once(trainingData, tmp_path):
    folder, case = trainingData
    cancelFile = tmp_path / "cancel"
    cancelFile.touch()
    completed = engine("segment", "--model", folder / "base", "--case", case, "--output", tmp_path / "seg.nii.gz",
                       "--device", "cpu", "--progress", "jsonl", env={**ENV, "ASYMSEG_CANCEL_FILE": str(cancelFile)})
    assert completed.returncode == 130, completed.stderr
    assert not (tmp_path / "seg.nii.gz").exists()
    assert completed.stderr.strip().splitlines()[-1] == "asymseg segment: error: cancelled by cancel"


def test_a_cancel_file_in_a_missing_folder_is_a_usage_error(tmp_path):
    completed = engine("phantom", "--out", tmp_path / "cases", "--cases", "1", "--size", "16",
                       env={**ENV, "ASYMSEG_CANCEL_FILE": str(tmp_path / "nowhere" / "cancel")})
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        f"asymseg phantom: error: ASYMSEG_CANCEL_FILE={tmp_path / 'nowhere' / 'cancel'}: "
        f"the folder {tmp_path / 'nowhere'} does not exist"]
    assert not (tmp_path / "cases").exists()


def test_the_watcher_cancels_the_token_once_the_file_appears(tmp_path):
    from asymseg.cancelfile import CancelFileWatcher
    from asymseg.events import CancelToken

    token = CancelToken()
    watcher = CancelFileWatcher(tmp_path / "cancel", token, interval=0.01).start()
    time.sleep(0.1)
    assert not token.cancelled
    (tmp_path / "cancel").touch()
    deadline = time.monotonic() + 10
    while not token.cancelled and time.monotonic() < deadline:
        time.sleep(0.01)
    assert token.cancelled and token.reason == "cancelled by cancel"
    watcher.stop()


def test_the_panel_names_itself_as_the_engines_parent(tmp_path):
    from asymseg import cancelfile

    assert P.PARENT_PID_VARIABLE == cancelfile.PARENT_VARIABLE
    proc = P.EngineProcess()
    proc.startCommand([sys.executable, "-c", "import os; print(os.environ['ASYMSEG_PARENT_PID'])"])
    lines = []
    result = proc.wait(timeout=60, onEvent=lambda event: lines.append(event.message))
    assert result.returnCode == 0 and lines == [str(os.getpid())]


def test_when_the_parent_is_gone_a_training_run_stops_at_a_safe_point_and_keeps_its_checkpoint(trainingData,
                                                                                                tmp_path):
    folder, case = trainingData
    # The parent: a stand-in for Slicer that goes away while the engine trains.
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    output = tmp_path / "model"
    engineProcess = subprocess.Popen(
        [sys.executable, "-m", "asymseg", "--threads", "1", "finetune", "--train-case", str(case), "--base-model",
         str(folder / "base"), "--iterations", "100000", "--device", "cpu", "--output-model", str(output),
         "--progress", "jsonl"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**ENV, "ASYMSEG_PARENT_PID": str(parent.pid)})
    try:
        for line in engineProcess.stdout:
            if '"event": "iteration"' in line:
                break
        parent.kill()
        parent.wait()
        _, stderr = engineProcess.communicate(timeout=300)
    finally:
        parent.kill()
        engineProcess.kill()
    assert engineProcess.returncode == 130, stderr
    assert f"the parent process {parent.pid} is gone" in stderr.strip().splitlines()[-1]
    checkpoint = output.parent / f"{output.name}.run" / "checkpoint"
    assert checkpoint.is_dir() and any(checkpoint.iterdir())


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5"])
def test_a_parent_pid_that_is_not_a_process_id_is_a_usage_error(tmp_path, value):
    completed = engine("phantom", "--out", tmp_path / "cases", "--cases", "1", "--size", "16",
                       env={**ENV, "ASYMSEG_PARENT_PID": value})
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        f"asymseg phantom: error: ASYMSEG_PARENT_PID={value!r}: expected a process id (a positive whole number)"]
    assert not (tmp_path / "cases").exists()
