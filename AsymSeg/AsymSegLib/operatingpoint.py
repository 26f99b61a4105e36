"""The interactive operating point: move the decision threshold after a run, without the engine.

The engine writes the decision variable dz (``z_fg - z_bg`` for a binary model; 0 outside the
brain mask) and turns it into the mask with the model card's operating point: tumour where
``dz > threshold`` inside the brain, then the card's post-processing (keep the largest 26-connected
component, or drop components under V ml). :class:`OperatingPointSession` keeps dz, the brain mask
and the reference of one run and redoes exactly that in numpy for any threshold: a slider from
"more sensitive" (a lower threshold) to "more precise" (a higher one) updates the segment and,
with a reference, DSC, sensitivity and precision at once, with no torch and no new run.

The chosen threshold is stored on the segmentation node (attributes saved with the scene) and
can be written into a copy of the model whose card carries it as its operating point.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from AsymSegLib import models, scene as S, tables

#: Segmentation node attributes holding the chosen threshold and the whole operating point (JSON).
THRESHOLD_ATTRIBUTE = "AsymSeg.Threshold"
OPERATING_POINT_ATTRIBUTE = "AsymSeg.OperatingPoint"
#: The slider covers at least this threshold range (the engine's search grid is -4 ... 8).
THRESHOLD_RANGE = (-4.0, 8.0)
#: Slider step (dz units).
THRESHOLD_STEP = 0.05

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def thresholdRange(cardThreshold: float) -> tuple[float, float]:
    """(most sensitive, most precise) thresholds of the slider: the engine's range, widened to
    keep the card's threshold 2 units inside."""
    return min(THRESHOLD_RANGE[0], cardThreshold - 2.0), max(THRESHOLD_RANGE[1], cardThreshold + 2.0)


def probabilityOf(threshold: float) -> float:
    """The foreground probability at a dz threshold of a binary model: sigmoid(threshold)."""
    return 1.0 / (1.0 + math.exp(-threshold)) if threshold > -700 else 0.0


def postprocess(mask: np.ndarray, method: str, spacing: Sequence[float]) -> np.ndarray:
    """The engine's post-processing of a bool mask: "none", "largest" or "min-ml:<V>".

    Components are 26-connected (SimpleITK, as in the engine); ``spacing`` is (x, y, z) in mm.

    Raises:
        ValueError: an unknown method.
    """
    method = str(method or "none").strip().lower()
    mask = np.asarray(mask, dtype=bool)
    if method == "none" or not mask.any():
        return mask.copy()
    if method != "largest" and not method.startswith("min-ml:"):
        raise ValueError(f"post-processing {method!r}: expected none, largest or min-ml:<millilitres>")
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8))
    labelled = sitk.GetArrayFromImage(sitk.ConnectedComponent(image, True)).astype(np.int32, copy=False)
    counts = np.bincount(labelled.ravel())[1:]
    keep = np.zeros(counts.size + 1, dtype=bool)
    if method == "largest":
        keep[1 + int(np.argmax(counts))] = True
    else:
        minimum = float(method.split(":", 1)[1])
        keep[1:] = counts * float(np.prod(spacing)) / 1000.0 >= minimum
    return keep[labelled]


def maskAt(dz: np.ndarray, brain: np.ndarray, threshold: float, method: str, spacing: Sequence[float]) -> np.ndarray:
    """Tumour where ``dz > threshold`` inside the brain, post-processed (bool, shape of dz)."""
    return postprocess((dz > float(threshold)) & brain, method, spacing)


def overlapMetrics(mask: np.ndarray, reference: np.ndarray, voxelMl: float) -> dict[str, float | None]:
    """DSC, sensitivity, precision, specificity and volumes of a mask against a reference.

    Undefined ratios (an empty reference or prediction) are None, as in the engine's metrics.
    """
    mask = np.asarray(mask, dtype=bool)
    reference = np.asarray(reference, dtype=bool)
    tp = int(np.count_nonzero(mask & reference))
    fp = int(np.count_nonzero(mask)) - tp
    fn = int(np.count_nonzero(reference)) - tp
    tn = int(mask.size) - tp - fp - fn

    def ratio(num: int, den: int) -> float | None:
        return num / den if den else None

    return {"dsc": ratio(2 * tp, 2 * tp + fp + fn), "sensitivity": ratio(tp, tp + fn),
            "precision": ratio(tp, tp + fp), "specificity": ratio(tn, tn + fp),
            "volume_prediction_ml": (tp + fp) * voxelMl, "volume_reference_ml": (tp + fn) * voxelMl,
            "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def brainMask(dz: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """The engine's brain mask, recovered from its outputs: outside it dz and the probability are
    both exactly 0; inside, dz = 0 means probability 0.5."""
    return (np.asarray(dz) != 0) | (np.asarray(probability) != 0)


class OperatingPointSession:
    """One run's dz, brain mask and reference, and the segment they drive.

    Args:
        dz: the engine's decision variable on the input grid (K, J, I).
        brain: the brain mask (bool, same shape).
        scene: the vtkMRMLScene.
        segmentationsLogic: the Segmentations module logic.
        segmentationNode: the output segmentation.
        segmentId: the tumour-core segment to update.
        gridVolume: the input volume whose grid dz is on.
        operatingPoint: the run's operating point (the engine's ``done`` event: threshold,
            postprocess, tta, chosen_on); its threshold is where the slider starts.
        reference: the reference as a 0/1 array on the grid, or None.
        metrics: the engine's metrics of the run (kept where a threshold cannot change them).
        metricsTable: the table node to update, or None.
        modelPath: the model folder, for :meth:`saveModelCopy`.
    """

    def __init__(self, dz: np.ndarray, brain: np.ndarray, scene, segmentationsLogic, segmentationNode,
                 segmentId: str, gridVolume, operatingPoint: Mapping[str, Any], reference: np.ndarray | None = None,
                 metrics: Mapping[str, Any] | None = None, metricsTable=None,
                 modelPath: str | os.PathLike | None = None) -> None:
        if dz.shape != brain.shape or (reference is not None and reference.shape != dz.shape):
            raise ValueError(f"dz {dz.shape}, brain mask {brain.shape} and reference "
                             f"{None if reference is None else reference.shape} must have the same shape")
        self.dz = np.asarray(dz, dtype=np.float32)
        self.brain = np.asarray(brain, dtype=bool)
        self.scene = scene
        self.segmentationsLogic = segmentationsLogic
        self.segmentationNode = segmentationNode
        self.segmentId = segmentId
        self.gridVolume = gridVolume
        self.operatingPoint = dict(operatingPoint)
        self.runThreshold = float(self.operatingPoint.get("threshold", 0.0))
        self.postprocessMethod = str(self.operatingPoint.get("postprocess", "none"))
        self.reference = None if reference is None else np.asarray(reference, dtype=bool)
        self.runMetrics = dict(metrics or {})
        self.metricsTable = metricsTable
        self.modelPath = Path(modelPath) if modelPath is not None else None
        self.spacing = tuple(gridVolume.GetSpacing())
        self.voxelMl = float(np.prod(self.spacing)) / 1000.0
        self.threshold = self.runThreshold
        self.metrics: dict[str, Any] = {}

    @property
    def range(self) -> tuple[float, float]:
        return thresholdRange(self.runThreshold)

    def maskAt(self, threshold: float) -> np.ndarray:
        return maskAt(self.dz, self.brain, threshold, self.postprocessMethod, self.spacing)

    def describe(self, threshold: float | None = None) -> str:
        """``"dz > -1.25 (probability > 0.223), largest component; the model's: -1.25"``."""
        t = self.threshold if threshold is None else threshold
        text = f"dz > {t:g} (probability > {probabilityOf(t):.3f})"
        if self.postprocessMethod != "none":
            text += f", {'largest component' if self.postprocessMethod == 'largest' else self.postprocessMethod}"
        return f"{text}; the model's: {self.runThreshold:g}"

    def summary(self) -> str:
        """The threshold and what it gives, for the panel: ``"dz > -1.25 (...); DSC 0.738, ..."``."""
        text = self.describe()
        m = self.metrics
        if self.reference is not None and m:
            parts = [f"{title} {m[key]:.3f}" if m.get(key) is not None else f"{title} -"
                     for key, title in (("dsc", "DSC"), ("sensitivity", "sensitivity"), ("precision", "precision"))]
            text += "\n" + ", ".join(parts)
        if "volume_prediction_ml" in m:
            text += ("\n" if self.reference is None else ", ") + f"{m['volume_prediction_ml']:.1f} ml"
        return text

    def setThreshold(self, threshold: float) -> dict[str, Any]:
        """Move the threshold: update the segment, the stored threshold and, with a reference, the
        metrics and their table.

        Returns:
            The metrics at this threshold (with a reference) or ``{"volume_prediction_ml": ...}``.

        Raises:
            ValueError: a threshold that is not a finite number.
        """
        threshold = float(threshold)
        if not math.isfinite(threshold):
            raise ValueError(f"the threshold must be a finite number, got {threshold!r}")
        mask = self.maskAt(threshold)
        self._replaceSegment(mask)
        self.threshold = threshold
        point = {**self.operatingPoint, "threshold": threshold,
                 "chosen_on": self.operatingPoint.get("chosen_on", "default") if threshold == self.runThreshold
                 else "user"}
        self.segmentationNode.SetAttribute(THRESHOLD_ATTRIBUTE, repr(threshold))
        self.segmentationNode.SetAttribute(OPERATING_POINT_ATTRIBUTE, json.dumps(point, sort_keys=True))
        if self.reference is None:
            self.metrics = {"volume_prediction_ml": int(np.count_nonzero(mask)) * self.voxelMl}
            return self.metrics
        metrics = overlapMetrics(mask, self.reference, self.voxelMl)
        # HD95 is the engine's; it holds only at the run's own threshold
        metrics["hd95"] = self.runMetrics.get("hd95") if threshold == self.runThreshold else None
        metrics["threshold"] = threshold
        self.metrics = metrics
        if self.metricsTable is not None:
            tables.updateMetricsTable(self.metricsTable, metrics)
        return metrics

    def reset(self) -> dict[str, Any]:
        """Back to the run's (the model card's) threshold."""
        return self.setThreshold(self.runThreshold)

    def _replaceSegment(self, mask: np.ndarray) -> None:
        temp = S.newVolumeLike(self.gridVolume, self.scene, mask.astype(np.uint8), "__asymseg_temp_threshold__",
                               labelmap=True)
        try:
            ids = S._stringArray([self.segmentId])
            if not self.segmentationsLogic.ImportLabelmapToSegmentationNode(temp, self.segmentationNode, ids):
                raise RuntimeError(f"{self.segmentationNode.GetName()}: updating segment {self.segmentId} failed")
        finally:
            S.removeNodes(self.scene, [temp])

    def saveModelCopy(self, name: str, modelsFolder: str | os.PathLike | None = None) -> Path:
        """Write a copy of the model whose card has the chosen threshold as its operating point.

        The weights are copied unchanged (their SHA256 on the card stays valid); the card gets the
        new name and ``operating_point`` with this threshold, ``chosen_on: "user"`` and the
        previous threshold in ``validation``. The folder appears complete or not at all.

        Args:
            name: the new model's name (letters, digits, ``._-``).
            modelsFolder: where to put it (default: the user models folder, listed by the panels).

        Returns:
            The new model folder.

        Raises:
            ValueError: no model folder known, a bad or taken name, or a card without weights.
        """
        if self.modelPath is None or models.findModelCard(self.modelPath) is None:
            raise ValueError("the model folder of this run is not known: cannot copy its card")
        if not _MODEL_NAME.match(name or ""):
            raise ValueError(f"model name {name!r}: use letters, digits, '.', '_' or '-'")
        folder = Path(modelsFolder) if modelsFolder is not None else models.userModelsDirectory()
        target = folder / name
        if target.exists():
            raise ValueError(f"{target}: a model with this name exists already; choose another name")
        cardPath = models.findModelCard(self.modelPath)
        card = json.loads(cardPath.read_text(encoding="utf-8"))
        weights = card.get("weights") if isinstance(card.get("weights"), Mapping) else {}
        weightsFile = weights.get("file")
        if not isinstance(weightsFile, str) or not (self.modelPath / weightsFile).is_file():
            raise ValueError(f"{cardPath}: names no weights file that exists")
        previous = card.get("operating_point") if isinstance(card.get("operating_point"), Mapping) else {}
        card["name"] = name
        card["operating_point"] = {
            "threshold": self.threshold, "postprocess": previous.get("postprocess", self.postprocessMethod),
            "tta": bool(previous.get("tta", self.operatingPoint.get("tta", False))), "chosen_on": "user",
            "validation": {"previous_threshold": previous.get("threshold", self.runThreshold),
                           "previous_chosen_on": previous.get("chosen_on", "default"),
                           "chosen_in": "the AsymSeg panel's operating-point slider"},
        }
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{name}.{uuid.uuid4().hex[:8]}.partial"
        partial.mkdir()
        try:
            shutil.copy2(self.modelPath / weightsFile, partial / weightsFile)
            (partial / cardPath.name).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
            os.replace(partial, target)
        finally:
            if partial.exists():
                shutil.rmtree(partial, ignore_errors=True)
        return target
