"""The model registry, seen from Slicer: model cards and ``asymseg models list --json``.

The panels list models by reading the cards of the bundled and user model folders
(:func:`listModelsFromCards`): plain JSON, no engine process, no torch, so opening a module never
waits. The engine checks a model fully (SHA256, tensors) when it runs it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from AsymSegLib import process as engineProcess
from AsymSegLib.progress import errorMessageFromLine

log = logging.getLogger(__name__)

#: File name of the model card inside a model folder.
MODEL_CARD_NAMES = ("model.json", "card.json")
#: Environment variable naming the engine's home folder (models under ``$ASYMSEG_HOME/models``).
HOME_VARIABLE = "ASYMSEG_HOME"
#: Seconds allowed for ``asymseg models list``.
LIST_TIMEOUT = 120.0


class ModelRegistryError(RuntimeError):
    """The model list could not be read; the message is one line for the user."""


@dataclass(frozen=True)
class ModelInfo:
    """One model the engine can run.

    Attributes:
        name: the registry name (``--model NAME``).
        path: the model folder, when known.
        channels: input channel names, in model order.
        source: where it lives ("bundled", "user", or a folder given by hand).
        description: a short text for tooltips.
        classes: class names by label value (0 = background), when known.
        target: the target definition (classes, rare classes, label convention).
        provenance: training data, technique, iterations, validation metrics.
        card: the full JSON entry.
    """

    name: str
    path: Path | None = None
    channels: tuple[str, ...] = ()
    source: str = ""
    description: str = ""
    classes: tuple[str, ...] = ()
    target: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    card: Mapping[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """A label for the model selector."""
        return f"{self.name} ({self.source})" if self.source else self.name

    def modelArgument(self) -> str:
        """What to pass as ``--model``: the folder when known (unambiguous), else the name."""
        return str(self.path) if self.path is not None else self.name

    def tooltip(self) -> str:
        lines = [self.description] if self.description else []
        if self.channels:
            lines.append("Channels: " + ", ".join(self.channels))
        technique = self.provenance.get("technique") if isinstance(self.provenance, Mapping) else None
        if isinstance(technique, Mapping):  # cards record the resolved preset
            technique = technique.get("name")
        if technique:
            lines.append(f"Technique: {technique}")
        if self.path is not None:
            lines.append(str(self.path))
        return "\n".join(lines)


def _channelNames(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split(",") if p.strip())
    names = []
    for item in value or ():
        if isinstance(item, Mapping):
            item = item.get("name")
        if isinstance(item, str) and item:
            names.append(item)
    return tuple(names)


def modelInfoFromDict(entry: Mapping[str, Any], path: Path | None = None, source: str = "") -> ModelInfo:
    """Build a :class:`ModelInfo` from a registry entry or a model card.

    Raises:
        ValueError: the entry has no name.
    """
    name = entry.get("name") or (path.name if path is not None else None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"model entry without a name: {dict(entry)!r}"[:200])
    rawPath = entry.get("path") or entry.get("directory")
    folder = Path(rawPath) if isinstance(rawPath, str) and rawPath else path
    target = entry.get("target") if isinstance(entry.get("target"), Mapping) else {}
    provenance = entry.get("provenance") if isinstance(entry.get("provenance"), Mapping) else {}
    if isinstance(entry.get("technique"), str) and "technique" not in provenance:  # `models list --json`
        provenance = {**provenance, "technique": entry["technique"]}
    classes = entry.get("classes")
    if not classes and isinstance(target.get("names"), list):
        classes = target["names"]
    return ModelInfo(
        name=name, path=folder, channels=_channelNames(entry.get("channels")),
        classes=tuple(str(c) for c in classes) if isinstance(classes, list) else (),
        source=str(entry.get("source") or entry.get("origin") or source or ""),
        description=str(entry.get("description") or ""), target=target, provenance=provenance, card=dict(entry),
    )


def parseModelList(text: str) -> list[ModelInfo]:
    """Parse the output of ``asymseg models list --json`` (a list, or ``{"models": [...]}``).

    Entries the engine marks with an ``error`` (an unreadable card) are left out.

    Raises:
        ModelRegistryError: the text is not such JSON.
    """
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ModelRegistryError(f"asymseg models list: output is not JSON ({err})") from err
    if isinstance(data, Mapping):
        data = data.get("models", [])
    if not isinstance(data, list):
        raise ModelRegistryError("asymseg models list: expected a JSON list of models")
    models = []
    for entry in data:
        if isinstance(entry, Mapping):
            if entry.get("error"):
                log.warning("Skipping model %s: %s", entry.get("name"), entry["error"])
                continue
            try:
                models.append(modelInfoFromDict(entry))
            except ValueError as err:
                log.warning("Skipping a model entry: %s", err)
    return models


Runner = Callable[..., subprocess.CompletedProcess]


def runEngineCommand(args: Sequence[object], pythonExecutable: str | None = None, timeout: float = LIST_TIMEOUT,
                     runner: Runner = subprocess.run, env: Mapping[str, str] | None = None) -> str:
    """Run a short engine command and return its stdout.

    Raises:
        ModelRegistryError: the command failed or timed out; the message is the engine's error line.
    """
    command = engineProcess.engineCommand(args, pythonExecutable)
    try:
        completed = runner(command, capture_output=True, text=True, timeout=timeout,
                           env=engineProcess.engineEnvironment(extra=env), stdin=subprocess.DEVNULL,
                           creationflags=engineProcess.noWindowFlags())
    except subprocess.TimeoutExpired as err:
        raise ModelRegistryError(f"asymseg {args[0]}: no answer within {timeout:.0f} s") from err
    except OSError as err:
        raise ModelRegistryError(f"{command[0]}: cannot start Python ({err.strerror or err})") from err
    if completed.returncode != 0:
        lines = [line for line in (completed.stderr or "").splitlines() if line.strip()]
        message = next((errorMessageFromLine(line) for line in reversed(lines) if errorMessageFromLine(line)), None)
        fallback = lines[-1] if lines else f"asymseg {args[0]} exited with {completed.returncode}"
        raise ModelRegistryError(message or fallback)
    return completed.stdout


def listModels(pythonExecutable: str | None = None, runner: Runner = subprocess.run,
               timeout: float = LIST_TIMEOUT) -> list[ModelInfo]:
    """The bundled and user models, as the engine lists them.

    Raises:
        ModelRegistryError: the engine could not list them.
    """
    return parseModelList(runEngineCommand(["models", "list", "--json"], pythonExecutable, timeout, runner))


def importModel(source: str | os.PathLike, pythonExecutable: str | None = None, runner: Runner = subprocess.run,
                timeout: float = 600.0) -> str:
    """Import a model archive or folder into the user models folder (the engine checks it).

    Returns:
        The engine's output (a summary of the imported model).

    Raises:
        ModelRegistryError: the engine refused it (bad archive, checksum mismatch, ...).
    """
    return runEngineCommand(["models", "import", str(source)], pythonExecutable, timeout, runner)


def asymsegHome(environ: Mapping[str, str] | None = None) -> Path:
    """The engine's home folder: ``$ASYMSEG_HOME`` or ``~/.asymseg``."""
    environ = os.environ if environ is None else environ
    value = environ.get(HOME_VARIABLE)
    return Path(value).expanduser() if value else Path.home() / ".asymseg"


def userModelsDirectory(environ: Mapping[str, str] | None = None) -> Path:
    """Where user and fine-tuned models live: ``<home>/models``."""
    return asymsegHome(environ) / "models"


def findModelCard(folder: str | os.PathLike) -> Path | None:
    """The card file of a model folder, or None."""
    for name in MODEL_CARD_NAMES:
        candidate = Path(folder) / name
        if candidate.is_file():
            return candidate
    return None


def readModelCard(folder: str | os.PathLike, source: str = "folder") -> ModelInfo:
    """Read a model folder's card with plain JSON (no engine, no torch).

    Raises:
        ModelRegistryError: no card, or not valid JSON.
    """
    card = findModelCard(folder)
    if card is None:
        raise ModelRegistryError(f"{folder}: not a model folder (no {' or '.join(MODEL_CARD_NAMES)})")
    try:
        data = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelRegistryError(f"{card}: cannot read the model card ({err})") from err
    if not isinstance(data, Mapping):
        raise ModelRegistryError(f"{card}: the model card is not a JSON object")
    return modelInfoFromDict(data, path=Path(folder), source=source)


def bundledModelsDirectory() -> Path:
    """The models shipped with the engine (``asymseg/models`` inside the AsymSeg module)."""
    return engineProcess.engineDirectory() / "asymseg" / "models"


def scanModels(folders: Sequence[tuple[Path, str]]) -> list[ModelInfo]:
    """Models found by reading the cards in ``[(folder, source), ...]`` (no engine, no torch).

    Folders whose card cannot be read are skipped (logged).
    """
    found = []
    for folder, source in folders:
        if not Path(folder).is_dir():
            continue
        for entry in sorted(Path(folder).iterdir()):
            if entry.name.startswith(".") or not entry.is_dir() or findModelCard(entry) is None:
                continue
            try:
                found.append(readModelCard(entry, source=source))
            except ModelRegistryError as err:
                log.warning("Skipping model %s: %s", entry, err)
    return found


def _weightsPresent(model: ModelInfo) -> bool:
    weights = model.card.get("weights")
    fileName = weights.get("file") if isinstance(weights, Mapping) else None
    if not isinstance(fileName, str) or not fileName or model.path is None:
        log.warning("Skipping model %s: its card names no weights file", model.name)
        return False
    if not (model.path / fileName).is_file():
        log.warning("Skipping model %s: %s is missing", model.name, model.path / fileName)
        return False
    return True


def listModelsFromCards() -> list[ModelInfo]:
    """The bundled and user models, read from their cards (no engine process, no torch).

    Folders whose card cannot be read, or names no weights file that exists, are left out
    (logged). Sorted by name, bundled first for equal names, as ``asymseg models list``.
    """
    folders = [(bundledModelsDirectory(), "bundled"), (userModelsDirectory(), "user")]
    found = [m for m in scanModels(folders) if _weightsPresent(m)]
    return sorted(found, key=lambda m: (m.name, m.source != "bundled"))


def listModelsOrScan(pythonExecutable: str | None = None, runner: Runner = subprocess.run,
                     timeout: float = LIST_TIMEOUT) -> tuple[list[ModelInfo], str | None]:
    """The engine's model list or, when the engine cannot run yet (first use, before its
    requirements are installed), the cards of the bundled and user model folders.

    Returns:
        (models, problem): ``problem`` is None when the engine answered, else its error line.
    """
    try:
        return listModels(pythonExecutable, runner, timeout), None
    except ModelRegistryError as err:
        folders = [(bundledModelsDirectory(), "bundled"), (userModelsDirectory(), "user")]
        return scanModels(folders), str(err)
