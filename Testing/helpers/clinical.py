"""Clinical-geometry variants of a real case, made with SimpleITK, and the DSC of their segmentation
against the reference run on the original case (docs/DATA.md quotes the figures).

Variants (every file of the case keeps its physical position; only the grids change):

- ``aniso``: every file on a 0.9 x 0.9 x 5.5 mm grid (images B-spline, label and mask nearest),
  as a clinical 2-D FLAIR would be.
- ``tilted``: every file on a 1 mm grid rotated by 15 degrees about z and 10 about x.
- ``flipped``: every file with its x and y axes reversed (exact: arrays flipped, direction -1).
- ``t1c-own-grid``: the T1c alone on a 1.2 mm grid rotated by 15 degrees whose origin is shifted
  by (12.5, -8.5, 3.5) mm (and which is larger, so it still covers the case), as if acquired
  separately in the same session.
- ``clinical``: ``aniso`` for every file but the T1c, which gets ``t1c-own-grid``'s grid.

Run ``python Testing/helpers/clinical.py [--variants a,b] CASE_DIR [CASE_DIR ...]`` (with the
engine importable) to print the table of docs/DATA.md.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

VARIANTS = ("aniso", "tilted", "flipped", "t1c-own-grid", "clinical")
STARTER = "asymseg-starter-deepmedic"


def _files(case: Path) -> dict[str, Path]:
    from asymseg.io import discover_case

    files = discover_case(case)
    out = dict(files.channels)
    if files.label is not None:
        out["label"] = files.label
    if files.mask is not None:
        out["mask"] = files.mask
    return out


def crop_case(case: Path, dest: Path, *, margin: int = 12) -> Path:
    """Copy ``case`` cropped to the box of its tumour core (label 1, 3 or 4) plus ``margin`` voxels."""
    files = _files(case)
    label = sitk.ReadImage(str(files["label"]))
    core = np.isin(sitk.GetArrayFromImage(label), (1, 3, 4))
    lo = [max(0, int(np.nonzero(core)[a].min()) - margin) for a in range(3)]
    hi = [min(core.shape[a], int(np.nonzero(core)[a].max()) + margin + 1) for a in range(3)]
    index = [lo[2], lo[1], lo[0]]
    size = [hi[2] - lo[2], hi[1] - lo[1], hi[0] - lo[0]]
    dest.mkdir(parents=True, exist_ok=True)
    for path in files.values():
        sitk.WriteImage(sitk.RegionOfInterest(sitk.ReadImage(str(path)), size, index), str(dest / path.name))
    return dest


def _rotation(z_degrees: float, x_degrees: float = 0.0) -> np.ndarray:
    c, s = math.cos(math.radians(z_degrees)), math.sin(math.radians(z_degrees))
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    c, s = math.cos(math.radians(x_degrees)), math.sin(math.radians(x_degrees))
    rx = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return rz @ rx


def _grid_around(image: sitk.Image, spacing, direction: np.ndarray, shift=(0.0, 0.0, 0.0)) -> dict:
    """A grid with ``spacing`` and ``direction`` covering the image's physical box, centred on it,
    then moved by ``shift`` mm and enlarged by as much, so that it still covers the whole box."""
    size = np.asarray(image.GetSize())
    old_spacing = np.asarray(image.GetSpacing())
    old_direction = np.asarray(image.GetDirection()).reshape(3, 3)
    centre = np.asarray(image.GetOrigin()) + old_direction @ (old_spacing * (size - 1) / 2)
    extent = np.abs(old_direction @ (old_spacing * size))  # the box, in physical axes
    extent = extent + 2 * np.abs(np.asarray(shift))
    new_size = np.maximum(1, np.ceil(np.abs(direction.T) @ extent / np.asarray(spacing))).astype(int)
    origin = centre - direction @ (np.asarray(spacing) * (new_size - 1) / 2) + np.asarray(shift)
    return {"size": [int(v) for v in new_size], "spacing": tuple(float(v) for v in spacing),
            "origin": tuple(float(v) for v in origin), "direction": tuple(float(v) for v in direction.ravel())}


def _resample(image: sitk.Image, grid: dict, *, label: bool) -> sitk.Image:
    default = 0.0 if label else _border_mode(image)
    return sitk.Resample(image, grid["size"], sitk.Transform(), sitk.sitkNearestNeighbor if label else sitk.sitkBSpline,
                         grid["origin"], grid["spacing"], grid["direction"], default,
                         image.GetPixelID() if label else sitk.sitkFloat32)


def _border_mode(image: sitk.Image) -> float:
    """The value filling most of the image's border (the background)."""
    array = sitk.GetArrayFromImage(image)
    border = np.concatenate([array[0].ravel(), array[-1].ravel(), array[:, 0].ravel(), array[:, -1].ravel(),
                             array[:, :, 0].ravel(), array[:, :, -1].ravel()])
    values, counts = np.unique(border, return_counts=True)
    return float(values[np.argmax(counts)])


def make_variant(case: Path, dest: Path, kind: str) -> Path:
    """Write the ``kind`` variant of ``case`` into ``dest`` (same file names)."""
    if kind not in VARIANTS:
        raise ValueError(f"unknown variant {kind!r}; expected one of {VARIANTS}")
    files = _files(case)
    dest.mkdir(parents=True, exist_ok=True)
    for role, path in files.items():
        image = sitk.ReadImage(str(path))
        is_label = role in ("label", "mask")
        if kind == "aniso":
            image = _resample(image, _grid_around(image, (0.9, 0.9, 5.5), np.eye(3)), label=is_label)
        elif kind == "tilted":
            image = _resample(image, _grid_around(image, (1.0, 1.0, 1.0), _rotation(15, 10)), label=is_label)
        elif kind == "flipped":  # new index (i, j, k) is old (nx-1-i, ny-1-j, k): the same physical point
            flipped = sitk.GetImageFromArray(sitk.GetArrayFromImage(image)[:, ::-1, ::-1].copy())
            flipped.SetSpacing(image.GetSpacing())
            flipped.SetOrigin(image.TransformIndexToPhysicalPoint([image.GetSize()[0] - 1, image.GetSize()[1] - 1, 0]))
            direction = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag([-1.0, -1.0, 1.0])
            flipped.SetDirection(tuple(float(v) for v in direction.ravel()))
            image = flipped
        elif kind == "clinical" and role != "t1c":
            image = _resample(image, _grid_around(image, (0.9, 0.9, 5.5), np.eye(3)), label=is_label)
        elif kind in ("t1c-own-grid", "clinical") and role == "t1c":
            image = _resample(image, _grid_around(image, (1.2, 1.2, 1.2), _rotation(15), shift=(12.5, -8.5, 3.5)),
                              label=False)
        sitk.WriteImage(image, str(dest / path.name))
    return dest


def labels_on(prediction: Path, original: sitk.Image) -> np.ndarray:
    """A predicted label map brought onto ``original``'s grid (class by class, linear then arg-max)."""
    from asymseg.io import Geometry
    from asymseg.io.resample import labels_to_grid

    image = sitk.ReadImage(str(prediction))
    return labels_to_grid(sitk.GetArrayFromImage(image), Geometry.from_image(image), Geometry.from_image(original), 2)


def dsc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 1.0 if total == 0 else 2.0 * np.count_nonzero(a & b) / total


def segment(case: Path, output: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "asymseg", "segment", "--model", STARTER, "--case", str(case),
                           "--output", str(output), "--json", "--progress", "none", "--device", "cpu"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout)["cases"][0]


def main(argv: list[str]) -> int:
    kinds = VARIANTS
    if argv[:1] == ["--variants"]:
        kinds, argv = tuple(argv[1].split(",")), argv[2:]
    for folder in map(Path, argv):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            crop = crop_case(folder, root / "crop")
            files = _files(crop)
            original = sitk.ReadImage(str(files["flair"]))
            truth = np.isin(sitk.GetArrayFromImage(sitk.ReadImage(str(files["label"]))), (1, 3, 4))
            segment(crop, root / "ref.nii.gz")
            reference = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "ref.nii.gz"))) > 0
            print(f"{folder.name} crop {original.GetSize()}: reference run DSC vs label {dsc(reference, truth):.3f}")
            for kind in kinds:
                variant = make_variant(crop, root / kind, kind)
                result = segment(variant, root / f"{kind}.nii.gz")
                back = labels_on(root / f"{kind}.nii.gz", original) > 0
                print(f"  {kind:13s} DSC vs reference run {dsc(back, reference):.3f}, vs label {dsc(back, truth):.3f}"
                      f"  warnings {[w['check'] for w in result['warnings']]}")
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
