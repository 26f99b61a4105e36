"""Fine-tuning parameters and their ``asymseg finetune`` command line (:meth:`asArgList`)."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from AsymSegLib import models

#: Technique presets offered by the panel, in menu order, with a one-line description. The default
#: comes first: cross-entropy, the technique the leave-one-out runs on the two shared real cases
#: support (recipes/starter, docs/RESULTS.md section 3); then the asymmetric techniques, the two
#: combinations, and the other baselines and original (symmetric) techniques. Names are the
#: engine's (asymseg.techniques).
TECHNIQUE_PRESETS: dict[str, str] = {
    "ce": "Cross-entropy (recommended: best on the real-data leave-one-out runs)",
    "a-focal": "Asymmetric focal loss (the authors' first advice)",
    "a-lm": "Asymmetric large margin",
    "a-at": "Asymmetric adversarial training",
    "a-mixup": "Asymmetric mixup",
    "a-aug": "Asymmetric augmentation",
    "combo": "Combination: asymmetric large margin + focal loss, adversarial and mixup steps",
    "combo-authors": "The authors' released combination: asymmetric focal, symmetric adversarial, asymmetric mixup",
    "dice": "Soft Dice (baseline)",
    "fg-sampling": "Cross-entropy with 80% foreground patches (baseline)",
    "lm": "Large margin (symmetric)",
    "focal": "Focal loss (symmetric)",
    "at": "Adversarial training (symmetric)",
    "mixup": "Mixup (symmetric)",
}
DEFAULT_TECHNIQUE = "ce"
#: The symmetric twin of each asymmetric preset (the panel's "symmetric" switch).
SYMMETRIC_TWIN: dict[str, str] = {"a-lm": "lm", "a-focal": "focal", "a-at": "at", "a-mixup": "mixup"}
#: Foreground-patch fraction of each preset (the engine's defaults: 0.5, and 0.8 for fg-sampling).
FG_FRACTION_DEFAULT = 0.5
FG_FRACTION_BY_TECHNIQUE: dict[str, float] = {"fg-sampling": 0.8}
LABEL_CONVENTIONS = ("brats2015", "brats2017", "brats2023")
#: The panel's default iterations: fine-tuning the starter model on a CPU in well under an hour
#: for ce (the estimate before Start measures it on the actual device).
PANEL_ITERATIONS = 300
#: Settings a resumed run may change (the engine's ``--resume`` keeps the rest from the run folder).
RESUME_SETTINGS = ("iterations", "device")
#: The run folder's saved configuration (asymseg.train.api.CONFIG_NAME).
RUN_CONFIG_NAME = "train_config.json"
DEVICES = ("auto", "cpu", "cuda")
#: How the engine chooses the new model's operating point (``finetune --operating-point``); None: its
#: default (on the validation cases when there are some, else the argmax).
OPERATING_POINTS = ("validation", "cross-validation", "none")

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def defaultFgFraction(technique: str) -> float:
    """The foreground-patch fraction a preset uses by default."""
    return FG_FRACTION_BY_TECHNIQUE.get(technique, FG_FRACTION_DEFAULT)


@dataclass
class TrainingParameters:
    """Everything the panel sends to ``asymseg finetune``.

    Attributes:
        trainCases: training case folders.
        outputModel: the new model: a bare name (saved in the user models folder) or a folder path.
        valCases: validation case folders (none: the best model is chosen by the training loss).
        baseModel: the model to start from (name or folder); None trains from scratch.
        technique: a preset of :data:`TECHNIQUE_PRESETS` (default: cross-entropy).
        symmetric: use the symmetric (original) form: the twin preset for single techniques,
            the ``--symmetric`` switch for the combinations.
        iterations: training iterations (> 0).
        learningRate: initial learning rate (> 0).
        fgFraction: share of foreground-centred patches in [0, 1]; None: the technique's.
        batchSize: patches per step; None: the engine's default.
        validateEvery: validate every N iterations; None: the engine's default.
        labelConvention: BraTS convention of the label maps; None: decided by :attr:`foregroundLabels`.
        foregroundLabels: label values forming the foreground (scene exports write 1).
        seed: random seed; None: the engine's default.
        device: "auto", "cpu" or "cuda".
        extraArguments: further engine arguments, appended as given.
        overwrite: replace an existing output model and start its run anew (``--overwrite``).
        resume: continue the run in this run folder (``--resume``): only ``iterations`` and
            ``device`` apply, the rest comes from the run.
        operatingPoint: one of :data:`OPERATING_POINTS` or None (the engine's default).
            "cross-validation" needs 2 or more training cases and no validation cases.
    """

    trainCases: list[str]
    outputModel: str
    valCases: list[str] = field(default_factory=list)
    baseModel: str | None = None
    technique: str = DEFAULT_TECHNIQUE
    symmetric: bool = False
    iterations: int = 1000
    learningRate: float = 1e-3
    fgFraction: float | None = None
    batchSize: int | None = None
    validateEvery: int | None = None
    labelConvention: str | None = None
    foregroundLabels: Sequence[int] = ()
    seed: int | None = 0
    device: str = "auto"
    extraArguments: Sequence[str] = ()
    overwrite: bool = False
    resume: str | None = None
    operatingPoint: str | None = None

    def check(self) -> None:
        """Raise ValueError naming the first invalid setting and the value received."""
        if self.resume is not None:
            if self.overwrite:
                raise ValueError("resume continues a run and overwrite starts it anew: choose one")
            if not isinstance(self.iterations, int) or self.iterations < 1:
                raise ValueError(f"iterations must be a positive integer, got {self.iterations!r}")
            if self.device not in DEVICES:
                raise ValueError(f"device {self.device!r}: expected one of {', '.join(DEVICES)}")
            return
        if not self.trainCases:
            raise ValueError("no training case: add at least one case from the scene or a case folder")
        if not self.outputModel or not self.outputModel.strip():
            raise ValueError("no output model name")
        if ("/" not in self.outputModel and "\\" not in self.outputModel
                and not _MODEL_NAME.match(self.outputModel)):
            raise ValueError(f"output model name {self.outputModel!r}: use letters, digits, '.', '_' or '-'")
        if self.technique not in TECHNIQUE_PRESETS:
            raise ValueError(f"technique {self.technique!r}: expected one of {', '.join(TECHNIQUE_PRESETS)}")
        if not isinstance(self.iterations, int) or self.iterations < 1:
            raise ValueError(f"iterations must be a positive integer, got {self.iterations!r}")
        if not (isinstance(self.learningRate, (int, float)) and math.isfinite(self.learningRate)
                and self.learningRate > 0):
            raise ValueError(f"learning rate must be > 0, got {self.learningRate!r}")
        if self.fgFraction is not None and not 0.0 <= self.fgFraction <= 1.0:
            raise ValueError(f"foreground fraction must be in [0, 1], got {self.fgFraction!r}")
        if self.batchSize is not None and self.batchSize < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batchSize!r}")
        if self.validateEvery is not None and self.validateEvery < 1:
            raise ValueError(f"validation interval must be >= 1, got {self.validateEvery!r}")
        if self.labelConvention is not None and self.labelConvention not in LABEL_CONVENTIONS:
            raise ValueError(f"label convention {self.labelConvention!r}: "
                             f"expected one of {', '.join(LABEL_CONVENTIONS)}")
        if self.device not in DEVICES:
            raise ValueError(f"device {self.device!r}: expected one of {', '.join(DEVICES)}")
        if self.operatingPoint is not None and self.operatingPoint not in OPERATING_POINTS:
            raise ValueError(f"operating point {self.operatingPoint!r}: expected one of {', '.join(OPERATING_POINTS)}")
        if self.operatingPoint == "cross-validation":
            if self.valCases:
                raise ValueError("cross-validation chooses the operating point without validation cases; "
                                 "remove the validation cases or leave cross-validation off")
            if len(self.trainCases) < 2:
                raise ValueError("cross-validation needs at least 2 training cases (one is left out per run)")

    def resolvedTechnique(self) -> tuple[str, bool]:
        """(preset name, whether to pass ``--symmetric``) after applying :attr:`symmetric`."""
        if not self.symmetric:
            return self.technique, False
        if self.technique in SYMMETRIC_TWIN:
            return SYMMETRIC_TWIN[self.technique], False
        if self.technique in ("combo", "combo-authors"):
            return self.technique, True
        return self.technique, False  # baselines and symmetric presets are symmetric already

    def asArgList(self) -> list[str]:
        """The engine arguments: ``finetune --train-case ... --progress jsonl``.

        Raises:
            ValueError: see :meth:`check`.
        """
        self.check()
        if self.resume is not None:
            return ["finetune", "--resume", str(self.resume), "--iterations", str(self.iterations),
                    "--device", self.device, *[str(a) for a in self.extraArguments], "--progress", "jsonl"]
        technique, symmetricSwitch = self.resolvedTechnique()
        args = ["finetune"]
        for case in self.trainCases:
            args += ["--train-case", str(case)]
        for case in self.valCases:
            args += ["--val-case", str(case)]
        if self.baseModel:
            args += ["--base-model", str(self.baseModel)]
        args += ["--technique", technique]
        if symmetricSwitch:
            args.append("--symmetric")
        args += ["--iterations", str(self.iterations), "--lr", repr(float(self.learningRate))]
        if self.fgFraction is not None:
            args += ["--fg-fraction", repr(float(self.fgFraction))]
        if self.batchSize is not None:
            args += ["--batch-size", str(self.batchSize)]
        if self.validateEvery is not None:
            args += ["--val-every", str(self.validateEvery)]
        if self.labelConvention:
            args += ["--label-convention", self.labelConvention]
        elif self.foregroundLabels:
            args += ["--foreground-labels", ",".join(str(int(v)) for v in self.foregroundLabels)]
        if self.seed is not None:
            args += ["--seed", str(self.seed)]
        args += ["--device", self.device, "--output-model", str(self.outputModel)]
        if self.overwrite:
            args.append("--overwrite")
        if self.operatingPoint is not None:
            args += ["--operating-point", self.operatingPoint]
        args += [str(a) for a in self.extraArguments]
        args += ["--progress", "jsonl"]
        return args


def isBareName(outputModel: str) -> bool:
    """A model name (saved in the user models folder) rather than a folder path, as the engine decides."""
    text = str(outputModel)
    return bool(text) and "/" not in text and os.sep not in text and (os.altsep or "/") not in text \
        and text not in (".", "..") and not text.startswith("~")


def outputFolders(outputModel: str) -> tuple[Path, Path]:
    """(model folder, run folder) of an output model, as the engine places them: a bare name goes to
    ``<home>/models/NAME`` with its run in ``<home>/runs/NAME``; a folder has ``<folder>.run``."""
    if isBareName(outputModel):
        modelsFolder = models.userModelsDirectory()
        return modelsFolder / outputModel, modelsFolder.parent / "runs" / outputModel
    output = Path(outputModel).expanduser().absolute()
    return output, output.parent / f"{output.name}.run"


@dataclass(frozen=True)
class OutputState:
    """What exists already for an output model name: the panel's Start, Overwrite and Resume.

    Attributes:
        modelFolder, runFolder: where the model and its run go.
        modelExists: a model folder is there (Start would be refused).
        runExists: a run folder with its configuration is there.
        canResume: that run has a checkpoint to continue from.
    """

    modelFolder: Path
    runFolder: Path
    modelExists: bool
    runExists: bool
    canResume: bool

    @property
    def free(self) -> bool:
        """Nothing there: Start can begin a new run."""
        return not self.modelExists and not self.runExists

    def text(self) -> str:
        """Why Start cannot begin, and what Overwrite and Resume would do ("" when free)."""
        if self.free:
            return ""
        what = "a model" if self.modelExists else "a training run"
        text = f"{what} named {self.modelFolder.name} exists already ({self.modelFolder if self.modelExists else self.runFolder}). "
        text += "Overwrite replaces it and starts anew"
        if self.canResume:
            text += "; Resume continues its run where its checkpoint left off"
        return text + "; or enter another name."


def outputState(outputModel: str) -> OutputState:
    """Look at the output model's folders (no engine)."""
    modelFolder, runFolder = outputFolders(outputModel)
    runExists = (runFolder / RUN_CONFIG_NAME).is_file()
    canResume = runExists and any((runFolder / name / "state.json").is_file() for name in ("checkpoint", "checkpoint.old"))
    if canResume:  # the run's cases must still be there (scene cases go once a run succeeded)
        try:
            config = json.loads((runFolder / RUN_CONFIG_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = {}
        cases = [c for key in ("train_cases", "val_cases") for c in (config.get(key) or []) if isinstance(c, str)]
        canResume = all(Path(c).exists() for c in cases)
    return OutputState(modelFolder, runFolder, modelFolder.exists(), runExists, canResume)


def operatingPointChoice(crossValidate: bool, validationCases: Sequence[object]) -> str | None:
    """The panel's operating-point setting: cross-validation when asked for and there are no
    validation cases (with validation cases the engine always chooses on them); else the default."""
    return "cross-validation" if crossValidate and not validationCases else None
