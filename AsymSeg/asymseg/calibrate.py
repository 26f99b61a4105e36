"""Choose a model's operating point on labelled validation cases and record it on its card.

:func:`calibrate` runs the model (or, per case, a model that did not train on it) on each
validation case, keeps dz (and, with ``tta``, dz averaged over the 8 mirrorings), picks the
threshold, post-processing and TTA with :func:`asymseg.operating.choose_operating_point`, and,
with ``write``, stores the result in the model's ``model.json`` (the weights are untouched).

Leave-one-out. A model trained on all of its cases has no unseen case to calibrate on. Give,
for each case, the model of the fold that left that case out (``fold_models``): each case is
then scored by a model that never saw it, and the operating point those folds agree on is the
one recorded on the final model, as nnU-Net chooses its post-processing on cross-validation
folds and applies it to the final ensemble.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asymseg import constants as C
from asymseg.errors import InputError
from asymseg.events import CancelToken, EventCallback, emit
from asymseg.operating import OperatingPoint, ValidationMaps, choose_operating_point

log = logging.getLogger(__name__)


def validation_maps(model: Any, case: Any, *, tta: bool = False, device: str = "auto",
                    on_event: EventCallback | None = None, cancel: CancelToken | None = None) -> ValidationMaps:
    """dz (and mirrored dz with ``tta``) of a loaded model on one labelled case (folder or
    :class:`~asymseg.io.CaseFiles`).

    Raises:
        InputError: the case has no label file, misses a channel, or its labels do not fit the
            model's target.
    """
    from asymseg.infer.cases import _normalize_flag, check_case_channels
    from asymseg.infer.tta import predict_with_operating_point
    from asymseg.io import discover_case, load_case

    card = model.card
    files = case if hasattr(case, "channels") and hasattr(case, "label") else discover_case(case)
    if files.label is None:
        raise InputError(f"{files.where}: a validation case needs a label file (none found)")
    check_case_channels(files, card.channels)
    loaded = load_case(files, channels=card.channels, normalize=_normalize_flag(card), spacing=card.spacing,
                       orientation=card.orientation)
    card.target.check_label_values(np.unique(loaded.label), source=str(files.label))
    classes = card.target.class_map(loaded.label)  # the label on the working grid (nearest neighbour)
    rare = np.asarray(card.target.rare, dtype=bool)
    reference = rare[classes.astype(np.int64)]
    spacing = loaded.geometry.spacing
    maps = {}
    for mirrored in ((False, True) if tta else (False,)):
        point = OperatingPoint(tta=mirrored)
        prediction = predict_with_operating_point(model.net, loaded.image, loaded.mask, point, spacing=spacing,
                                                  rare=card.target.rare, device=device, on_event=on_event,
                                                  cancel=cancel)
        maps[mirrored] = prediction.decision
    return ValidationMaps(files.case_id, maps[False], reference, loaded.mask, tuple(spacing),  # type: ignore[arg-type]
                          maps.get(True))


def calibrate(model: str | os.PathLike[str], cases: Sequence[Any], *,
              fold_models: Sequence[str | os.PathLike[str]] | None = None, tta: bool = False,
              write: bool = False, device: str = "auto", on_event: EventCallback | None = None,
              cancel: CancelToken | None = None) -> dict[str, Any]:
    """Choose (and optionally record) a model's operating point on validation cases.

    Args:
        model: the model folder (or registry name; ``write`` needs a folder of one's own).
        cases: labelled case folders the model (or its fold models) did not train on.
        fold_models: one model per case, the one that did not train on it (leave-one-out); None:
            every case is scored by ``model`` itself.
        tta: also consider mirror TTA (8 inference passes per case).
        write: store the chosen operating point in the model's card.
        device, on_event, cancel: as for inference.

    Returns:
        ``{"model", "operating_point" (dict), "cases", "written"}``.

    Raises:
        InputError: no cases, a fold-model count that differs from the case count, a bad case.
        ModelError: a model cannot be loaded, or ``write`` on a bundled model.
    """
    from asymseg.infer.engine import resolve_device
    from asymseg.registry import load_model
    from asymseg.registry import find_model

    if not cases:
        raise InputError("calibration needs at least one labelled validation case")
    if fold_models is not None and len(fold_models) != len(cases):
        raise InputError(f"{len(fold_models)} fold model(s) given for {len(cases)} case(s): give one per case, "
                         "in the same order (the model that did not train on that case)")
    load_device = "cpu" if resolve_device(device).type == "cpu" else device
    main = load_model(model, device=load_device)
    per_case = []
    for index, case in enumerate(cases):
        if cancel is not None:
            cancel.check()
        scorer = load_model(fold_models[index], device=load_device) if fold_models is not None else main
        if scorer.card.target.to_dict() != main.card.target.to_dict() or scorer.card.channels != main.card.channels:
            raise InputError(f"{scorer.path}: the fold model's channels or target differ from {main.path}'s")
        emit(on_event, C.EVENT_START, stage="case", done=index, total=len(cases),
             message=f"validation case {index + 1}/{len(cases)}: {getattr(case, 'case_id', None) or Path(case).name} "
                     f"(model {scorer.card.name})")
        per_case.append(validation_maps(scorer, case, tta=tta, device=device, on_event=on_event, cancel=cancel))
    point = choose_operating_point(per_case)
    record = dict(point.validation)
    record["models"] = ([str(find_model(m)) for m in fold_models] if fold_models is not None
                        else [str(main.path)])
    point = OperatingPoint(threshold=point.threshold, postprocess=point.postprocess, tta=point.tta,
                           chosen_on="validation", validation=record)
    written = False
    if write:
        _write_operating_point(main.path, point)
        written = True
    return {"model": str(main.path), "operating_point": point.to_dict(), "cases": record["final"],
            "written": written}


def _write_operating_point(directory: Path, point: OperatingPoint) -> None:
    from asymseg.errors import ModelError
    from asymseg.modelfile import read_card, write_card
    from asymseg.registry import bundled_models_dir

    directory = Path(directory)
    if bundled_models_dir() in directory.resolve().parents:
        raise ModelError(f"{directory}: a bundled model is read-only; copy it first (asymseg models import "
                         f"{directory} --name my-copy) and calibrate the copy")
    write_card(directory, read_card(directory).replace(operating_point=point))
