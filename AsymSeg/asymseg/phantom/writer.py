"""Writing phantom cases in BraTS 2017-2021 naming, with a ``phantom.json`` manifest.

Layout::

    OUT/phantom.json
    OUT/phantom_000/phantom_000_flair.nii.gz  _t1ce  _t1  _t2  _seg
    OUT/phantom_001/...

Case ``i`` of a folder made with seed ``S`` is ``make_phantom(case_seed(S, i))``, so a folder can
be extended later (``first_index``) and gives the same cases as writing them all at once.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asymseg import __version__
from asymseg import constants as C
from asymseg.errors import InputError
from asymseg.events import CancelToken, EventCallback, emit, json_safe
from asymseg.phantom.generate import GENERATOR_VERSION, PhantomCase, check_phantom_options, make_phantom

log = logging.getLogger(__name__)

MANIFEST_NAME = "phantom.json"
GENERATOR_NAME = "asymseg.phantom"
#: File name suffix per channel (BraTS 2017-2021).
BRATS_SUFFIX: dict[str, str] = {"flair": "flair", "t1c": "t1ce", "t1": "t1", "t2": "t2"}
LABEL_SUFFIX = "seg"
#: Largest number of cases one call writes.
MAX_CASES = 100_000


def case_id_for(index: int) -> str:
    """``phantom_000`` style id for case ``index``."""
    return f"phantom_{index:03d}"


def case_seed(seed: int, index: int) -> int:
    """The seed of case ``index`` in a folder generated with ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def case_summary(case: PhantomCase) -> dict[str, Any]:
    """The manifest entry of a case: ids, seeds, sizes and the drawn tumour parameters."""
    p = case.params
    tumour = p.get("tumour") or {}
    return json_safe({
        "case_id": case.case_id,
        "case_seed": p["seed"],
        "size_xyz": p["size_xyz"],
        "spacing_xyz": p["spacing_xyz"],
        "channels": p["channels"],
        "brain_voxels": p["brain_voxels"],
        "core_voxels": p["core_voxels"],
        "core_fraction": p["core_fraction"],
        "necrosis_voxels": tumour.get("necrosis_voxels", 0),
        "enhancing_voxels": tumour.get("enhancing_voxels", 0),
        "oedema_voxels": tumour.get("oedema_voxels", 0),
        "tumour": tumour or None,
        "anatomy": p["anatomy"],
        "contrasts": p["contrasts"],
        **({"vessels": p["vessels"]} if "vessels" in p else {}),
    })


def read_phantom_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``phantom.json`` of a phantom folder.

    Raises:
        InputError: the file is missing or not a phantom manifest.
    """
    path = Path(out_dir) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise InputError(f"{path}: no phantom manifest (write cases with `asymseg phantom` first)") from err
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read the phantom manifest: {err}") from err
    if not isinstance(data, dict) or data.get("generator") != GENERATOR_NAME or not isinstance(data.get("cases"), list):
        raise InputError(f"{path}: not a phantom manifest (expected generator {GENERATOR_NAME!r} and a case list)")
    return data


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        tmp.write_text(json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_case(case: PhantomCase, folder: Path) -> None:
    """Write a case's channels and label into ``folder`` (which must exist) in BraTS naming."""
    from asymseg.io import Geometry, write_image

    geometry = Geometry.default(case.label.shape, case.spacing)
    for name, image in case.images.items():
        write_image(image, geometry, folder / f"{case.case_id}_{BRATS_SUFFIX[name]}.nii.gz", dtype=np.float32)
    write_image(case.label, geometry, folder / f"{case.case_id}_{LABEL_SUFFIX}.nii.gz", dtype=np.uint8)


def _install(tmp: Path, final: Path) -> None:
    """Move a finished case folder into place, replacing an older one only after it is complete."""
    if final.exists():
        old = final.parent / f".{final.name}.{secrets.token_hex(6)}.old"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def write_phantom_cases(out_dir: str | os.PathLike[str], n_cases: int, *, size: Sequence[int] = (48, 48, 48),
                        seed: int = 0, channels: Sequence[str] = ("flair", "t1c"),
                        spacing: Sequence[float] = (1.0, 1.0, 1.0), vessels: bool = False, first_index: int = 0,
                        overwrite: bool = False, on_event: EventCallback | None = None,
                        cancel: CancelToken | None = None) -> list[Path]:
    """Generate ``n_cases`` phantom cases and write them in BraTS 2017-2021 naming.

    Each case folder is written under a temporary name and renamed when complete, so a failure
    or cancel leaves no half-written case. ``phantom.json`` lists every case in the folder.

    Args:
        out_dir: output folder (created if missing).
        n_cases: number of cases, >= 1.
        size: volume size (x, y, z) in voxels.
        seed: folder seed; case ``i`` uses ``case_seed(seed, i)``.
        channels: channel names from ``constants.CHANNEL_NAMES``.
        spacing: voxel spacing (x, y, z) in mm.
        vessels: also draw the vessels that enhance like a tumour rim (``make_phantom(vessels=True)``).
        first_index: index of the first case (ids ``phantom_<index>``), to extend a folder.
        overwrite: replace existing case folders of the same ids.
        on_event: progress callback (start, one progress event per case, done).
        cancel: checked before each case.

    Returns:
        The case folders written, in order.

    Raises:
        InputError: bad options, an existing case folder without ``overwrite``, or a folder whose
            manifest was written with other settings.
        Cancelled: ``cancel`` was set; finished cases are kept and listed in the manifest.
    """
    if isinstance(n_cases, bool) or not isinstance(n_cases, (int, np.integer)) or not 1 <= n_cases <= MAX_CASES:
        raise InputError(f"number of phantom cases must be 1..{MAX_CASES}, got {n_cases!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"phantom seed must be a non-negative integer, got {seed!r}")
    if isinstance(first_index, bool) or not isinstance(first_index, (int, np.integer)) or first_index < 0:
        raise InputError(f"first case index must be a non-negative integer, got {first_index!r}")
    channels = tuple(channels)
    check_phantom_options(size, channels, spacing)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)

    settings = {"seed": int(seed), "size_xyz": [int(n) for n in size],
                "spacing_xyz": [float(s) for s in spacing], "channels": list(channels), "vessels": bool(vessels)}
    ids = [case_id_for(first_index + i) for i in range(n_cases)]
    entries: dict[str, dict[str, Any]] = {}
    if (out / MANIFEST_NAME).exists():
        manifest = read_phantom_manifest(out)
        previous = {k: manifest.get(k, False if k == "vessels" else None) for k in settings}  # no key: none
        if previous != settings:
            if not overwrite:
                changed = ", ".join(f"{k} {previous[k]} (asked {settings[k]})" for k in settings
                                    if previous[k] != settings[k])
                raise InputError(f"{out / MANIFEST_NAME}: the folder holds phantoms written with {changed}; "
                                 "use another --out or --overwrite")
            log.warning("%s: replacing a manifest written with other settings; its cases are no longer listed",
                        out / MANIFEST_NAME)
        else:
            entries = {c["case_id"]: c for c in manifest["cases"]}
    if not overwrite:
        existing = [i for i in ids if (out / i).exists()]
        if existing:
            raise InputError(f"{out / existing[0]}: case folder exists ({len(existing)} of the {n_cases} cases do); "
                             "use --overwrite to replace them or --first-index to add new ones")

    def save_manifest() -> None:
        ordered = sorted(entries.values(), key=lambda c: c["case_id"])
        _write_json_atomic(out / MANIFEST_NAME, {
            "generator": GENERATOR_NAME, "generator_version": GENERATOR_VERSION, "asymseg_version": __version__,
            **settings, "label_convention": "brats2017",
            "label_values": {"0": "background", "1": "necrosis / non-enhancing core", "2": "oedema",
                             "4": "enhancing core"},
            "tumour_core_labels": list(C.TUMOUR_CORE_LABELS["brats2017"]),
            "case_seed_rule": "case i is make_phantom(case_seed) with case_seed from SeedSequence([seed, i])",
            "cases": ordered,
        })

    emit(on_event, C.EVENT_START, stage="phantom", total=n_cases,
         message=f"writing {n_cases} phantom case(s) of {'x'.join(map(str, size))} voxels to {out}")
    written: list[Path] = []
    try:
        for i, case_id in enumerate(ids):
            if cancel is not None:
                cancel.check()
            case = make_phantom(case_seed(seed, first_index + i), size=size, channels=channels, spacing=spacing,
                                vessels=vessels, case_id=case_id)
            tmp = out / f".{case_id}.{secrets.token_hex(6)}.tmp"
            tmp.mkdir()
            try:
                write_case(case, tmp)
                _install(tmp, out / case_id)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
            entries[case_id] = dict(case_summary(case), index=first_index + i)
            written.append(out / case_id)
            emit(on_event, C.EVENT_PROGRESS, stage="phantom", done=i + 1, total=n_cases,  # results say the rest
                 case_id=case_id, core_fraction=case.params["core_fraction"])
    finally:
        if written:
            save_manifest()
    emit(on_event, C.EVENT_DONE, stage="phantom", done=n_cases, total=n_cases,
         message=f"wrote {n_cases} phantom case(s) to {out}", out_dir=str(out))
    return written
