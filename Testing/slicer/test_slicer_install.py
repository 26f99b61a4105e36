"""First-run installation: the PyTorch extension checked first, status lines for the panel, retry, pip's output."""

from __future__ import annotations

import sys

import pytest

from AsymSegLib import install

pytestmark = pytest.mark.slicer

VERSIONS = {"torch": "2.13.0", "numpy": "2.1.0", "safetensors": "0.4.5", "tqdm": "4.66.0",
            "matplotlib": "3.9.0", "SimpleITK": "2.5.0"}


def test_without_the_pytorch_extension_nothing_is_asked_and_the_message_says_what_to_do():
    versions = {k: v for k, v in VERSIONS.items() if k != "torch"}
    with pytest.raises(install.DependencyError, match=r"needs the PyTorch extension .* Extensions Manager"):
        install.ensureDependencies(lambda text: pytest.fail("asked before checking the extension"),
                                   lambda r: pytest.fail("torch"), lambda r, c: pytest.fail("pip"), versions.get,
                                   torchInstallerAvailable=lambda: False)
    # torch present: the extension does not matter
    report = install.ensureDependencies(lambda text: pytest.fail("asked"), lambda r: None, lambda r, c: None,
                                        VERSIONS.get, torchInstallerAvailable=lambda: False)
    assert report.installed == []


def test_status_lines_follow_each_step_and_a_failure_can_be_retried():
    installed = {k: v for k, v in VERSIONS.items() if k not in ("torch", "safetensors")}
    status, questions = [], []
    attempts = {"pip": 0}

    def pip(requirements, constraints):
        attempts["pip"] += 1
        if attempts["pip"] == 1:
            raise RuntimeError("pip exited with 1: no network")
        installed.update({install.requirementName(r): "0.4.5" for r in requirements})

    def torch(requirement):
        installed["torch"] = "2.13.0"

    def ask(text):
        questions.append(text)
        return True

    with pytest.raises(install.DependencyError, match="failed: pip exited with 1: no network"):
        install.ensureDependencies(ask, torch, pip, installed.get, onStatus=status.append)
    assert status[0].startswith("Installing PyTorch (torch>=2.1) through the PyTorch extension")
    assert status[1:] == ["PyTorch installed.", "Installing safetensors>=0.4 with pip...",
                          "Installation failed: pip exited with 1: no network. Apply tries again."]
    status.clear()
    report = install.ensureDependencies(ask, torch, pip, installed.get, onStatus=status.append)  # Apply again
    assert report.installed == ["safetensors>=0.4"] and len(questions) == 2
    assert status == ["Installing safetensors>=0.4 with pip...", "Installed safetensors>=0.4."]
    assert install.pyTorchExtensionAvailable() is False  # no Slicer here


def test_pip_runs_in_a_child_process_and_its_lines_reach_the_panel():
    import numpy

    lines, ticks = [], []
    install.runPip([f"numpy=={numpy.__version__}"], [f"numpy=={numpy.__version__}"], lines.append,
                   pythonExecutable=sys.executable, keepAlive=lambda: ticks.append(1), options=["--no-index"])
    assert any("already satisfied" in line for line in lines) and ticks
    lines.clear()
    with pytest.raises(RuntimeError, match="pip exited with 1: .*asymseg-no-such-package"):
        install.runPip(["asymseg-no-such-package==0.0"], [], lines.append, pythonExecutable=sys.executable,
                       options=["--no-index"])
    assert lines
    assert install.pipInstallCommand(["a>=1"], "c.txt", "py") == [
        "py", "-m", "pip", "install", "--upgrade-strategy", "only-if-needed", "a>=1", "-c", "c.txt"]
