"""Segmenting cases from files: load a model once, infer each case, write outputs, score them.

Output files, all in the input's exact geometry (size, spacing, origin, direction):

- the label map (uint8): the class index of each voxel, which is the output value of the
  model card's target (0 background; 1 the tumour core of a binary model);
- optionally the probability map (float32): the summed softmax probability of the rare classes
  (for a binary model, of the foreground);
- optionally the decision variable ``dz`` (float32): ``max(z over rare classes) - max(z over the
  other classes)``, for a binary model ``z_fg - z_bg`` (the quantity of the logit diagnostic,
  METHOD.md; the boundary is at 0). For a model with more than two classes, one float32 file of
  logits per class is written beside it, named ``<dz stem>_<class name><ext>``.

The label map follows the operating point (threshold on dz, post-processing, mirror TTA;
:mod:`asymseg.operating`): the model card's, or the caller's. The probability and dz maps are
those of the network (averaged over the mirrorings with TTA), before any threshold, so another
threshold can be tried on them without running the network again.

Voxels outside the brain mask are background, with probability 0, dz 0 and logits 0.
Outputs are written only once a case's inference has finished, each atomically, and a failure
while writing removes the case's files written before it, so a cancelled or failed case leaves no
output file behind.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asymseg import constants as C
from asymseg.errors import InputError, ModelError
from asymseg.events import CancelToken, EventCallback, emit
from asymseg.io import CaseFiles, Geometry, load_case, read_label, strip_image_extension, write_image
from asymseg.io.images import image_extension
from asymseg.operating import OperatingPoint

log = logging.getLogger(__name__)

#: Normalisations the engine can apply, by model-card name -> ``load_case(normalize=...)``.
NORMALIZATIONS = {"zscore-brain": True, "none": False}
#: File name suffixes of the outputs of a case in a batch (``<case_id><suffix>``).
SUFFIXES = {"labels": "_seg.nii.gz", "probabilities": "_prob.nii.gz", "logits": "_dz.nii.gz"}


@dataclass(frozen=True)
class OutputPaths:
    """Where one case's outputs go.

    Args:
        labels: the label map.
        probabilities: the rare-class probability map, or None.
        logits: the decision variable dz (and, for multi-class models, the per-class logits
            beside it), or None.
    """

    labels: Path
    probabilities: Path | None = None
    logits: Path | None = None

    @classmethod
    def in_folder(cls, folder: str | os.PathLike[str], case_id: str, *, probabilities: bool = False,
                  logits: bool = False, probabilities_folder: str | os.PathLike[str] | None = None,
                  logits_folder: str | os.PathLike[str] | None = None) -> OutputPaths:
        """``<folder>/<case_id>_seg.nii.gz`` (+ ``_prob``, ``_dz``), for batches."""
        folder = Path(folder)
        return cls(
            folder / f"{case_id}{SUFFIXES['labels']}",
            Path(probabilities_folder or folder) / f"{case_id}{SUFFIXES['probabilities']}" if probabilities else None,
            Path(logits_folder or folder) / f"{case_id}{SUFFIXES['logits']}" if logits else None,
        )

    def to_dict(self) -> dict[str, str | None]:
        return {k: (str(v) if v is not None else None) for k, v in
                (("labels", self.labels), ("probabilities", self.probabilities), ("logits", self.logits))}


def class_logit_path(logits_path: Path, class_name: str) -> Path:
    """The per-class logit file beside the dz file: ``<stem>_<class_name><ext>``."""
    ext = image_extension(logits_path) or ".nii.gz"
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in class_name)
    return logits_path.with_name(f"{strip_image_extension(logits_path)}_{safe}{ext}")


def _normalize_flag(card: Any) -> bool:
    norms = set(card.normalization)
    unknown = norms - set(NORMALIZATIONS)
    if unknown or len(norms) != 1:
        raise ModelError(f"model {card.name}: unsupported channel normalisation {sorted(norms)}; this engine "
                         f"applies one of {sorted(NORMALIZATIONS)} to every channel")
    return NORMALIZATIONS[norms.pop()]


def check_case_channels(files: CaseFiles, channels: Sequence[str]) -> None:
    """Refuse explicitly given channels the model does not take (found ones are just not used).

    Raises:
        InputError: a ``--channel`` file names a channel outside the model's channels.
    """
    from asymseg.io import canonical_channel

    wanted = {canonical_channel(c) for c in channels}
    given = [name for name in files.channels if files.origin.get(name) == "given" and name not in wanted]
    if given:
        raise InputError(f"{files.where}: the model takes {len(wanted)} channel(s) ({', '.join(channels)}); "
                         f"the channel(s) {', '.join(given)} given with --channel are not among them")


def _reference_classes(path: Path, geometry: Geometry, target: Any) -> np.ndarray:
    label, ref_geometry = read_label(path, role="reference")
    problems = geometry.differences(ref_geometry)
    if problems:
        raise InputError(f"{path}: the reference is on a different grid from the case: {'; '.join(problems)}")
    target.check_label_values(np.unique(label), source=str(path))
    return target.class_map(label)


def score(labels: np.ndarray, reference_classes: np.ndarray, target: Any, spacing: Sequence[float]) -> dict[str, Any]:
    """Metrics of predicted class indices against reference class indices.

    The headline metrics compare the union of the rare classes (the tumour core of a binary
    model); models with more than two classes also get ``per_class`` metrics for every class
    but the background.
    """
    from asymseg.metrics import case_metrics

    rare = [i for i, r in enumerate(target.rare) if r and i > 0] or list(range(1, target.num_classes))
    metrics: dict[str, Any] = dict(case_metrics(np.isin(labels, rare), np.isin(reference_classes, rare), spacing))
    if target.num_classes > 2:
        metrics["per_class"] = {target.names[i]: case_metrics(labels == i, reference_classes == i, spacing)
                                for i in range(1, target.num_classes)}
    return metrics


def _to_reference_grid(prediction: Any, working: Geometry, original: Geometry, num_classes: int) -> Any:
    """A prediction on the working grid moved onto the reference channel's original grid.

    Labels go class by class (each indicator linearly, then the arg-max); probabilities, dz and
    logits linearly; voxels outside the working grid get background, probability 0, dz 0.
    """
    import dataclasses

    from asymseg.io.resample import LINEAR, labels_to_grid, resample_array

    def move(array: np.ndarray | None) -> np.ndarray | None:
        return None if array is None else resample_array(array, working, original, kind=LINEAR)

    logits = prediction.logits
    if logits is not None:
        logits = np.stack([move(channel) for channel in logits])
    return dataclasses.replace(
        prediction, labels=labels_to_grid(prediction.labels, working, original, num_classes),
        probabilities=move(prediction.probabilities), decision=move(prediction.decision), logits=logits)


def _reference_path(files: CaseFiles, reference: str | os.PathLike[str] | None, evaluate: bool) -> Path | None:
    """The label map to score against: ``reference``, or with ``evaluate`` the case's own label."""
    if reference is not None:
        return Path(reference)
    if not evaluate:
        return None
    if files.label is None:
        raise InputError(f"{files.where}: --evaluate needs a label file in the case (none found)")
    return files.label


def _emit_findings(findings: Sequence[Any], case_id: str, on_event: EventCallback | None) -> None:
    for finding in findings:
        # Already logged on stderr (which the Slicer panels show); the JSON line carries it too, with
        # the text under "warning" rather than "message" so the terminal does not print it twice.
        emit(on_event, C.EVENT_LOG, stage="checks", case_id=case_id, level="warning", check=finding.check,
             file=finding.file, warning=finding.message, value=finding.value)


def _write_outputs(prediction: Any, outputs: OutputPaths, geometry: Any, target: Any,
                   on_event: EventCallback | None, case_id: str) -> dict[str, Any]:
    """Write a case's outputs on ``geometry``, all or none; returns their paths by kind."""
    written: dict[str, Any] = {"labels": None, "probabilities": None, "logits": None, "class_logits": None}
    pending: list[tuple[np.ndarray, Path, str]] = [(prediction.labels, outputs.labels, "uint8")]
    if outputs.probabilities is not None:
        pending.append((prediction.probabilities, outputs.probabilities, "float32"))
    class_paths: dict[str, Path] = {}
    if outputs.logits is not None:
        pending.append((prediction.decision, outputs.logits, "float32"))
        if target.num_classes > 2:
            for index, name in enumerate(target.names):
                class_paths[name] = class_logit_path(outputs.logits, name)
                pending.append((prediction.logits[index], class_paths[name], "float32"))
    emit(on_event, C.EVENT_PROGRESS, stage="write", done=0, total=len(pending), case_id=case_id)
    done: list[Path] = []
    try:
        for index, (array, path, dtype) in enumerate(pending):
            write_image(array, geometry, path, dtype=dtype)
            done.append(Path(path))
            emit(on_event, C.EVENT_PROGRESS, stage="write", done=index + 1, total=len(pending), case_id=case_id)
    except BaseException:
        for path in done:  # a case's outputs are written all or none (e.g. the disk filled up half-way)
            path.unlink(missing_ok=True)
        raise
    written["labels"] = str(outputs.labels)
    written["probabilities"] = str(outputs.probabilities) if outputs.probabilities is not None else None
    written["logits"] = str(outputs.logits) if outputs.logits is not None else None
    written["class_logits"] = {k: str(v) for k, v in class_paths.items()} or None
    return written


def _case_summary(case_id: str, written: dict[str, Any], prediction: Any, target: Any, spacing: Sequence[float],
                  resampled: bool, working: Any, findings: Sequence[Any]) -> dict[str, Any]:
    """What :func:`segment_case` reports about a case it wrote (without metrics and timing)."""
    rare = [i for i, r in enumerate(target.rare) if r and i > 0] or list(range(1, target.num_classes))
    foreground = int(np.isin(prediction.labels, rare).sum())
    return {
        "case_id": case_id,
        "outputs": written,
        "foreground_voxels": foreground,
        "foreground_ml": foreground * float(np.prod(spacing)) / 1000.0,
        "device": prediction.info.get("device"),
        "tile": prediction.info.get("tile"),
        "tiles": prediction.info.get("tiles"),
        "retries": prediction.info.get("retries", []),
        "inference_seconds": prediction.info.get("seconds"),
        "operating_point": prediction.info.get("operating_point"),
        "working_grid": {"resampled": resampled, "spacing": list(working.spacing), "size": list(working.size)},
        "warnings": [f.to_dict() for f in findings],
    }


def segment_case(model: Any, files: CaseFiles, outputs: OutputPaths, *, reference: str | os.PathLike[str] | None = None,
                 evaluate: bool = False, device: str = "auto", tile: int | Sequence[int] | None = None,
                 batch_size: int | None = None, amp: str = "auto", on_event: EventCallback | None = None,
                 cancel: CancelToken | None = None, operating_point: OperatingPoint | None = None,
                 strict: bool = False) -> dict[str, Any]:
    """Segment one case with a loaded model and write its outputs.

    The case is brought onto the model's working grid (the card's ``spacing`` in the reference
    channel's space, :func:`~asymseg.io.load_case`) and every output goes back onto the
    reference channel's original grid (:func:`_to_reference_grid`).

    Args:
        model: a :class:`~asymseg.modelfile.LoadedModel`.
        files: the case's files (:func:`~asymseg.io.discover_case`).
        outputs: where to write.
        reference: a label map to score the prediction against (through the card's target).
        evaluate: score against the case's own label file when no ``reference`` is given.
        device, tile, batch_size, amp: passed to :func:`~asymseg.infer.predict_volume`.
        on_event: progress events (stages "load", "infer", "tta", "write").
        cancel: checked between tiles; a cancelled case writes nothing.
        operating_point: threshold, post-processing and TTA; None = the model card's (the
            plain argmax when the card has none).
        strict: refuse the case when a plausibility check fails (:mod:`asymseg.io.checks`).

    Returns:
        ``{"case_id", "outputs": {labels, probabilities, logits, class_logits}, "metrics" (when
        scored), "seconds", "device", "tile", "tiles", "retries", "foreground_voxels",
        "foreground_ml", "operating_point", "working_grid" (resampled, spacing, size),
        "warnings" (plausibility findings)}``.

    Raises:
        InputError: missing or extra channels, unreadable files, a reference on another grid,
            ``evaluate`` without a label.
        ModelError: the model's normalisation is not supported.
        Cancelled: ``cancel`` was set.
    """
    from asymseg.infer.tta import predict_with_operating_point

    started = time.perf_counter()
    card, net = model.card, model.net
    point = operating_point or card.operating_point or OperatingPoint()
    target = card.target
    check_case_channels(files, card.channels)
    ref_path = _reference_path(files, reference, evaluate)
    emit(on_event, C.EVENT_PROGRESS, stage="load", done=0, total=1, case_id=files.case_id)
    case = load_case(files, channels=card.channels, normalize=_normalize_flag(card), spacing=card.spacing,
                     orientation=card.orientation,
                     strict=strict)
    emit(on_event, C.EVENT_PROGRESS, stage="load", done=1, total=1, case_id=files.case_id)
    _emit_findings(case.findings, files.case_id, on_event)
    reference_classes = (_reference_classes(ref_path, case.reference_geometry, target)
                         if ref_path is not None else None)
    if cancel is not None:
        cancel.check()
    prediction = predict_with_operating_point(
        net, case.image, case.mask, point, spacing=case.geometry.spacing, rare=target.rare, tile=tile,
        batch_size=batch_size, device=device, amp=amp, on_event=on_event, cancel=cancel,
        return_logits=outputs.logits is not None and target.num_classes > 2,
        return_decision=outputs.logits is not None)
    geometry, spacing = case.reference_geometry, case.reference_geometry.spacing
    findings, resampled, working = case.findings, case.resampled, case.geometry
    del case
    if resampled:  # results go back onto the reference channel's original grid
        prediction = _to_reference_grid(prediction, working, geometry, target.num_classes)
    written = _write_outputs(prediction, outputs, geometry, target, on_event, files.case_id)
    result = _case_summary(files.case_id, written, prediction, target, spacing, resampled, working, findings)
    if reference_classes is not None:
        result["reference"] = str(ref_path)
        result["metrics"] = score(prediction.labels, reference_classes, target, spacing)
    result["seconds"] = time.perf_counter() - started
    return result


def segment_cases(model: Any, case_files: Sequence[CaseFiles], outputs: Sequence[OutputPaths] | str | os.PathLike[str],
                  *, probabilities: bool = False, logits: bool = False,
                  references: Sequence[str | os.PathLike[str] | None] | None = None, evaluate: bool = False,
                  device: str = "auto",
                  tile: int | Sequence[int] | None = None, batch_size: int | None = None, amp: str = "auto",
                  on_event: EventCallback | None = None, cancel: CancelToken | None = None,
                  on_case: Callable[[dict[str, Any]], None] | None = None,
                  operating_point: OperatingPoint | None = None, strict: bool = False) -> list[dict[str, Any]]:
    """Segment several cases with one model, loaded once.

    Args:
        model: a :class:`~asymseg.modelfile.LoadedModel`, or a model directory or registry name.
        case_files: the cases.
        outputs: one :class:`OutputPaths` per case, or a folder (created if missing) that gets
            ``<case_id>_seg.nii.gz`` (+ ``_prob``, ``_dz`` when ``probabilities``/``logits``).
        references: one reference label map (or None) per case to score against.
        evaluate: score each case without a reference against its own label file.
        device, tile, batch_size, amp, on_event, cancel, operating_point, strict: as for
            :func:`segment_case`.
        on_case: called with each case's result as soon as it is written.

    Returns:
        One result per case (see :func:`segment_case`), in order.

    Raises:
        InputError: duplicate case ids in one output folder, or a case's problem.
        ModelError: the model cannot be loaded.
        Cancelled: ``cancel`` was set (cases finished before it keep their outputs).
    """
    if not hasattr(model, "net"):
        from asymseg.infer.engine import resolve_device
        from asymseg.registry import load_model

        model = load_model(model, device="cpu" if resolve_device(device).type == "cpu" else device)
    if isinstance(outputs, (str, os.PathLike)):
        folder = Path(outputs)
        ids = [f.case_id for f in case_files]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise InputError(f"{folder}: several cases share the id {', '.join(duplicates)}; their outputs would "
                             "overwrite each other")
        folder.mkdir(parents=True, exist_ok=True)
        paths = [OutputPaths.in_folder(folder, i, probabilities=probabilities, logits=logits) for i in ids]
    else:
        paths = list(outputs)
        if len(paths) != len(case_files):
            raise InputError(f"{len(paths)} output sets given for {len(case_files)} cases")
    refs = list(references) if references is not None else [None] * len(case_files)
    if len(refs) != len(case_files):
        raise InputError(f"{len(refs)} references given for {len(case_files)} cases")
    results = []
    for index, (files, out, ref) in enumerate(zip(case_files, paths, refs)):
        if cancel is not None:
            cancel.check()
        emit(on_event, C.EVENT_START, stage="case", done=index, total=len(case_files), case_id=files.case_id,
             message=f"case {index + 1}/{len(case_files)}: {files.case_id}")
        result = segment_case(model, files, out, reference=ref, evaluate=evaluate, device=device, tile=tile,
                              batch_size=batch_size, amp=amp, on_event=on_event, cancel=cancel,
                              operating_point=operating_point, strict=strict)
        results.append(result)
        emit(on_event, C.EVENT_PROGRESS, stage="case", done=index + 1, total=len(case_files), case_id=files.case_id)
        if on_case is not None:
            on_case(result)
    return results
