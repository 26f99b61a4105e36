"""One training run per output model: the lock file, live and stale owners."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from asymseg.errors import InputError
from asymseg.train.lock import lock_path, output_lock


def test_the_lock_is_exclusive_and_removed_at_the_end(tmp_path):
    output = tmp_path / "model"
    with output_lock(output) as path:
        assert path == lock_path(output) == tmp_path / "model.lock"
        owner = json.loads(path.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(InputError, match=r"another training run writes this model \(pid \d+"):
            with output_lock(output):
                pass
    assert not lock_path(output).exists()


def test_a_lock_left_by_a_dead_process_is_replaced(tmp_path):
    output = tmp_path / "model"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    lock_path(output).write_text(json.dumps({"pid": int(dead), "host": socket.gethostname(), "started": "x"}))
    with output_lock(output):
        assert json.loads(lock_path(output).read_text())["pid"] == os.getpid()


def test_a_live_process_on_this_host_keeps_its_lock_and_another_hosts_lock_is_respected(tmp_path):
    output = tmp_path / "model"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock_path(output).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(), "started": "x"}))
        with pytest.raises(InputError, match=f"pid {sleeper.pid}"):
            with output_lock(output):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    lock_path(output).write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started": "x"}))
    with pytest.raises(InputError, match="elsewhere.example"):
        with output_lock(output):
            pass


def test_two_finetune_runs_into_one_output_the_second_is_refused(tmp_path):
    from asymseg.phantom import write_phantom_cases
    from asymseg.train import TrainConfig, finetune
    from helpers.nets import TINY

    cases = [str(p) for p in write_phantom_cases(tmp_path / "cases", 2, size=(32, 32, 32), seed=2)]
    cfg = TrainConfig(train_cases=cases[:1], val_cases=cases[1:], output_model=str(tmp_path / "model"), network=TINY,
                      iterations=1, batch_size=2, val_every=1, device="cpu")
    with output_lock(tmp_path / "model"):
        with pytest.raises(InputError, match="another training run writes this model"):
            finetune(cfg)
    assert not (tmp_path / "model").exists()
    assert finetune(cfg).iterations == 1 and not lock_path(tmp_path / "model").exists()
