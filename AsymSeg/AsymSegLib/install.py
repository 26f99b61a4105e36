"""First-use dependency checks, without Qt.

The engine needs torch and a few small packages in Slicer's Python. Torch comes only through
the PyTorch extension (it picks a CUDA build that fits the driver); the others through pip.
Nothing is installed without the user's confirmation, and pip never replaces the packages
Slicer ships (SimpleITK has Slicer's own IO; numpy is pinned to the installed version).

The functions take callbacks, so the module decides how to ask (a dialog), how to install
(``PyTorchUtils``; pip in a child process whose lines reach the panel) and where the status text
goes; tests pass plain functions. The PyTorch extension is looked for before anything is asked.
Nothing is remembered between calls: after a failure, the next Apply checks and asks again, and
packages installed meanwhile are found without restarting Slicer.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

#: torch, installed through the PyTorch extension.
TORCH_REQUIREMENT = "torch>=2.1"
#: The engine's other runtime requirements (pyproject.toml ``dependencies`` without torch and SimpleITK).
ENGINE_REQUIREMENTS: tuple[str, ...] = (
    "numpy>=1.23",
    "safetensors>=0.4",
    "tqdm>=4.60",
    "matplotlib>=3.6",
)
#: Requirements Slicer itself provides; never installed or upgraded from here.
PROVIDED_BY_SLICER: tuple[str, ...] = ("SimpleITK>=2.2",)
#: Installed packages pip must keep at their current version (passed as constraints).
PINNED_PACKAGES: tuple[str, ...] = ("numpy", "SimpleITK", "torch", "requests")

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$")


class DependencyError(RuntimeError):
    """A requirement is missing and was not installed (declined or failed)."""


#: What the panel says when torch is missing and so is the PyTorch extension that installs it.
PYTORCH_EXTENSION_MISSING = ("AsymSeg needs the PyTorch extension to install PyTorch: install \"PyTorch\" with "
                             "View > Extensions Manager, restart Slicer, then Apply again")


def requirementName(requirement: str) -> str:
    """``"safetensors>=0.4"`` -> ``"safetensors"``."""
    match = _REQUIREMENT.match(requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return match.group(1)


def installedVersion(name: str) -> str | None:
    """The installed distribution version, or None (reads metadata; imports nothing)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _satisfied(requirement: str, version: str) -> bool:
    try:
        from packaging.requirements import Requirement
        from packaging.version import InvalidVersion, Version
    except ImportError:  # no 'packaging': presence is all we can check
        return True
    try:
        return Requirement(requirement).specifier.contains(Version(version), prereleases=True)
    except (InvalidVersion, ValueError):
        return True


def missingRequirements(requirements: Iterable[str],
                        versionOf: Callable[[str], str | None] = installedVersion) -> list[str]:
    """The requirements that are absent or too old.

    Args:
        requirements: PEP 508 strings such as ``"tqdm>=4.60"``.
        versionOf: returns the installed version of a distribution, or None.
    """
    missing = []
    for requirement in requirements:
        version = versionOf(requirementName(requirement))
        if version is None or not _satisfied(requirement, version):
            missing.append(requirement)
    return missing


def pinnedConstraints(versionOf: Callable[[str], str | None] = installedVersion,
                      packages: Sequence[str] = PINNED_PACKAGES) -> list[str]:
    """``name==version`` for each installed package pip must not change (a constraints file)."""
    constraints = []
    for name in packages:
        version = versionOf(name)
        if version is not None:
            constraints.append(f"{name}=={version}")
    return constraints


@dataclass
class DependencyReport:
    """What :func:`ensureDependencies` found and did."""

    torchMissing: bool = False
    missing: list[str] = field(default_factory=list)
    installed: list[str] = field(default_factory=list)


def ensureDependencies(confirm: Callable[[str], bool], installTorch: Callable[[str], None],
                       pipInstall: Callable[[list[str], list[str]], None],
                       versionOf: Callable[[str], str | None] = installedVersion,
                       requirements: Sequence[str] = ENGINE_REQUIREMENTS,
                       torchRequirement: str = TORCH_REQUIREMENT,
                       torchInstallerAvailable: Callable[[], bool] = lambda: True,
                       onStatus: Callable[[str], None] | None = None) -> DependencyReport:
    """Make sure torch and the engine requirements are installed, asking first.

    Args:
        confirm: shows a question, returns True to go ahead.
        installTorch: installs torch through the PyTorch extension, given a requirement such as
            ``"torch>=2.1"``; raises on failure.
        pipInstall: installs ``requirements`` with pip under ``constraints`` (``name==version``
            pins); raises on failure.
        versionOf: installed version lookup (tests pass their own).
        requirements: the pip requirements to check.
        torchRequirement: the torch requirement.
        torchInstallerAvailable: True when the PyTorch extension is there; checked before asking.
        onStatus: receives one line per step ("Installing PyTorch ...", "Installed ...").

    Returns:
        A :class:`DependencyReport` (nothing to do when both lists are empty).

    Raises:
        DependencyError: the user declined, the PyTorch extension is missing, or an installer failed.
    """
    status = onStatus or (lambda text: None)
    importlib.invalidate_caches()  # packages installed since the last check (e.g. a retry)
    report = DependencyReport()
    report.torchMissing = bool(missingRequirements([torchRequirement], versionOf))
    report.missing = missingRequirements(requirements, versionOf)
    if not report.torchMissing and not report.missing:
        return report
    if report.torchMissing and not torchInstallerAvailable():
        raise DependencyError(PYTORCH_EXTENSION_MISSING)
    items = ([f"PyTorch ({torchRequirement}, through the PyTorch extension)"] if report.torchMissing else []) \
        + report.missing
    question = ("AsymSeg needs these Python packages, which are not installed yet:\n  "
                + "\n  ".join(items) + "\n\nInstall them now? This may take several minutes.")
    if not confirm(question):
        raise DependencyError("AsymSeg cannot run without: " + ", ".join(items))
    try:
        if report.torchMissing:
            log.info("Installing %s through the PyTorch extension", torchRequirement)
            status(f"Installing PyTorch ({torchRequirement}) through the PyTorch extension: a download of up to "
                   "a few GB, which may take several minutes...")
            installTorch(torchRequirement)
            report.installed.append(torchRequirement)
            status("PyTorch installed.")
        if report.missing:
            constraints = [c for c in pinnedConstraints(versionOf)
                           if requirementName(c).lower() not in {requirementName(r).lower() for r in report.missing}]
            log.info("Installing %s (keeping %s)", ", ".join(report.missing),
                     ", ".join(constraints) or "nothing pinned")
            status(f"Installing {', '.join(report.missing)} with pip...")
            pipInstall(list(report.missing), constraints)
            report.installed.extend(report.missing)
            status(f"Installed {', '.join(report.missing)}.")
    except DependencyError as err:
        status(f"Installation failed: {err}. Apply tries again.")
        raise
    except Exception as err:
        status(f"Installation failed: {err}. Apply tries again.")
        raise DependencyError(f"installing {', '.join(items)} failed: {err}") from err
    finally:
        importlib.invalidate_caches()
    return report


def pyTorchExtensionAvailable() -> bool:
    """True when the PyTorch extension's ``PyTorchUtils`` module can be imported (inside Slicer)."""
    try:
        return importlib.util.find_spec("PyTorchUtils") is not None
    except (ImportError, ValueError):
        return False


def pipInstallCommand(requirements: Sequence[str], constraintsFile: str | None = None,
                      pythonExecutable: str | None = None, options: Sequence[str] = ()) -> list[str]:
    """``PYTHON -m pip install --upgrade-strategy only-if-needed [OPTIONS] REQ ... [-c FILE]``."""
    command = [pythonExecutable or sys.executable, "-m", "pip", "install", "--upgrade-strategy", "only-if-needed",
               *options, *requirements]
    return command + (["-c", constraintsFile] if constraintsFile else [])


def runPip(requirements: Sequence[str], constraints: Sequence[str], onLine: Callable[[str], None],
           pythonExecutable: str | None = None, keepAlive: Callable[[], None] | None = None,
           timeout: float = 3600.0, options: Sequence[str] = ()) -> None:
    """Install with pip in a child process, passing each output line to ``onLine`` as it comes.

    Args:
        requirements: what to install.
        constraints: ``name==version`` pins pip must keep.
        onLine: receives pip's output, line by line (the panel's log).
        pythonExecutable: the interpreter whose pip runs (default: this one).
        keepAlive: called between reads (the panel passes ``slicer.app.processEvents``).
        timeout: seconds before pip is stopped.
        options: further pip options (e.g. ``--no-index`` with ``--find-links`` offline).

    Raises:
        RuntimeError: pip failed (its last line) or took too long.
    """
    from AsymSegLib.process import EngineProcess

    constraintsFile = None
    if constraints:
        handle = tempfile.NamedTemporaryFile("w", suffix="-asymseg-constraints.txt", delete=False, encoding="utf-8")
        with handle:
            handle.write("\n".join(constraints) + "\n")
        constraintsFile = handle.name
    process = EngineProcess(gracePeriod=5.0)
    try:
        process.startCommand(pipInstallCommand(requirements, constraintsFile, pythonExecutable, options))
        deadline = time.monotonic() + timeout
        while not process.finished:
            for event in process.poll():
                if event.message:
                    onLine(event.message)
            if keepAlive is not None:
                keepAlive()
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"pip did not finish within {timeout:.0f} s")
            time.sleep(0.05)
        result = process.result()
        if not result.succeeded:
            last = next((line for line in reversed(result.logTail) if line.strip()), "")
            raise RuntimeError(f"pip exited with {result.returnCode}" + (f": {last}" if last else ""))
    finally:
        process.close()
        if constraintsFile:
            import os

            os.remove(constraintsFile)


# ----------------------------------------------------------------------------- inside Slicer
def installTorchWithPyTorchExtension(requirement: str) -> None:
    """Install torch through the PyTorch extension (``PyTorchUtils``); for :func:`ensureDependencies`.

    Only works inside Slicer; imports nothing until called.

    Raises:
        DependencyError: the PyTorch extension is missing or installed nothing.
    """
    try:
        import PyTorchUtils
    except ImportError as err:
        raise DependencyError("AsymSeg needs the PyTorch extension: install it with the Extensions Manager "
                              "and restart Slicer") from err
    versionSpec = requirement[len(requirementName(requirement)):].strip()
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                          torchVersionRequirement=versionSpec or None)
    if torch is None:
        raise DependencyError("PyTorch was not installed")
