"""First-use dependency checks, without Qt.

The engine needs torch and a few small packages in Slicer's Python. Torch comes only through
the PyTorch extension (it picks a CUDA build that fits the driver); the others through pip.
Nothing is installed without the user's confirmation, and pip never replaces the packages
Slicer ships (SimpleITK has Slicer's own IO; numpy is pinned to the installed version).

The functions take callbacks, so the module decides how to ask (a dialog) and how to install
(``PyTorchUtils``, ``slicer.packaging.pip_ensure`` or ``slicer.util.pip_install``); tests pass
plain functions.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
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
                       torchRequirement: str = TORCH_REQUIREMENT) -> DependencyReport:
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

    Returns:
        A :class:`DependencyReport` (nothing to do when both lists are empty).

    Raises:
        DependencyError: the user declined, or an installer failed.
    """
    report = DependencyReport()
    report.torchMissing = bool(missingRequirements([torchRequirement], versionOf))
    report.missing = missingRequirements(requirements, versionOf)
    if not report.torchMissing and not report.missing:
        return report
    items = ([f"PyTorch ({torchRequirement}, through the PyTorch extension)"] if report.torchMissing else []) \
        + report.missing
    question = ("AsymSeg needs these Python packages, which are not installed yet:\n  "
                + "\n  ".join(items) + "\n\nInstall them now? This may take several minutes.")
    if not confirm(question):
        raise DependencyError("AsymSeg cannot run without: " + ", ".join(items))
    try:
        if report.torchMissing:
            log.info("Installing %s through the PyTorch extension", torchRequirement)
            installTorch(torchRequirement)
            report.installed.append(torchRequirement)
        if report.missing:
            constraints = [c for c in pinnedConstraints(versionOf)
                           if requirementName(c).lower() not in {requirementName(r).lower() for r in report.missing}]
            log.info("Installing %s (keeping %s)", ", ".join(report.missing),
                     ", ".join(constraints) or "nothing pinned")
            pipInstall(list(report.missing), constraints)
            report.installed.extend(report.missing)
    except DependencyError:
        raise
    except Exception as err:
        raise DependencyError(f"installing {', '.join(items)} failed: {err}") from err
    return report


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


def pipInstallWithSlicer(requirements: list[str], constraints: list[str]) -> None:
    """Install requirements with Slicer's pip, keeping ``constraints``; for :func:`ensureDependencies`.

    Only works inside Slicer; imports nothing until called.
    """
    import tempfile

    import slicer.util

    args = list(requirements)
    constraintsFile = None
    if constraints:
        handle = tempfile.NamedTemporaryFile("w", suffix="-asymseg-constraints.txt", delete=False, encoding="utf-8")
        with handle:
            handle.write("\n".join(constraints) + "\n")
        constraintsFile = handle.name
        args += ["-c", constraintsFile]
    try:
        slicer.util.pip_install(args)
    finally:
        if constraintsFile:
            import os

            os.remove(constraintsFile)
