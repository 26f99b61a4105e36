"""What the Logic classes of AsymSeg and AsymSegTraining share: the engine interpreter and processes.

:class:`EngineLogicMixin` goes before ``ScriptedLoadableModuleLogic`` in a module Logic's bases
(``class AsymSegLogic(EngineLogicMixin, ScriptedLoadableModuleLogic)``); it gives the Logic its
interpreter, engine processes, the Slicer 5.12 console launcher, the model list, first-use
installs and a blocking engine call. The model list comes from the model cards (no subprocess). Qt-free: it imports under slicer-core.
"""

from __future__ import annotations

import inspect
import os
import shutil
import sys
from collections.abc import Callable, Sequence

from slicer import util as sutil

from AsymSegLib import install, models, process


def pythonSlicerExecutable() -> str:
    """The interpreter for engine subprocesses: PythonSlicer inside Slicer, else this Python."""
    return shutil.which("PythonSlicer") or sys.executable


class EngineLogicMixin:
    """The engine side of a module Logic (see the module docstring for where it goes).

    Args:
        pythonExecutable: the interpreter for engine subprocesses (default:
            :func:`pythonSlicerExecutable`).
    """

    def __init__(self, pythonExecutable: str | None = None) -> None:
        self.pythonExecutable = pythonExecutable or pythonSlicerExecutable()
        super().__init__()

    def newEngineProcess(self) -> process.EngineProcess:
        return process.EngineProcess(pythonExecutable=self.pythonExecutable)

    @staticmethod
    def consoleLauncher() -> process.Launcher | None:
        """``slicer.util.launchConsoleProcess(blocking=False)`` as a launcher (Slicer 5.12+), else None.

        Without it (or without psutil) the Lib runner starts the process in its own session and
        reads it on a thread; the widget polls both the same way from a QTimer.
        """
        launch = getattr(sutil, "launchConsoleProcess", None)
        if launch is None or "blocking" not in inspect.signature(launch).parameters:
            return None
        if not process.havePsutil():
            return None  # its process shares Slicer's group: only psutil can stop its whole tree

        def launcher(command, environment, onLine, onExit):
            changed = {k: v for k, v in environment.items() if os.environ.get(k) != v}
            return launch(command, updateEnvironment=changed, blocking=False,
                          logCallback=onLine, completedCallback=onExit)

        return launcher

    @staticmethod
    def listModels() -> list[models.ModelInfo]:
        """The bundled and user models, read from their cards: no engine process, the GUI never waits."""
        return models.listModelsFromCards()

    def ensureDependencies(self, confirm: Callable[[str], bool], onStatus: Callable[[str], None] | None = None,
                           keepAlive: Callable[[], None] | None = None) -> install.DependencyReport:
        """Install torch (PyTorch extension) and the engine's requirements if missing, after ``confirm``.

        The PyTorch extension is looked for before asking. ``onStatus`` receives a line per step
        and pip's output; ``keepAlive`` runs while pip works (the panel passes
        ``slicer.app.processEvents``). A failure can simply be retried.
        """
        status = onStatus or (lambda text: None)

        def pipInstall(requirements, constraints):
            install.runPip(requirements, constraints, status, pythonExecutable=self.pythonExecutable,
                           keepAlive=keepAlive)

        return install.ensureDependencies(confirm, install.installTorchWithPyTorchExtension, pipInstall,
                                          torchInstallerAvailable=install.pyTorchExtensionAvailable, onStatus=status)

    def runEngine(self, args: Sequence[object], timeout: float | None = None) -> process.EngineResult:
        """Run any ``asymseg`` command and wait; raises EngineError on failure."""
        proc = self.newEngineProcess()
        proc.start(args)
        try:
            result = proc.wait(timeout=timeout)
        finally:
            proc.close()
        result.raiseIfFailed()
        return result
