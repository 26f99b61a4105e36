"""Build broken inputs from good ones: damaged image files, mismatched grids, bad models.

Every function writes real files (SimpleITK, safetensors, JSON) into a folder the test owns; the
good originals are copied first and never modified.
"""

from __future__ import annotations

import gzip
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk

#: The BraTS 2017-2021 suffixes of the phantom files, by role.
FLAIR, T1C, SEG, MASK = "flair", "t1ce", "seg", "brainmask"


def role_file(case: Path, role: str) -> Path:
    """The file of ``role`` (flair, t1ce, seg, brainmask) in a phantom case folder."""
    return Path(case) / f"{Path(case).name}_{role}.nii.gz"


def copy_case(case: Path, dest: Path) -> Path:
    """Copy a case folder to ``dest`` keeping the file names (the case id stays the folder's name)."""
    dest = Path(dest)
    dest.mkdir(parents=True)
    for path in Path(case).iterdir():
        if path.is_file():
            shutil.copyfile(path, dest / path.name.replace(Path(case).name, dest.name))
    return dest


def read(path: Path) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


def write(path: Path, array: np.ndarray, like: sitk.Image | None = None, *, spacing=None, origin=None,
          direction=None, vector: bool = False) -> Path:
    """Write ``array`` with the geometry of ``like`` (when given), then the explicit overrides;
    ``vector=True`` reads the last axis as the components of a vector image."""
    image = sitk.GetImageFromArray(array, isVector=vector)
    if like is not None and like.GetDimension() == image.GetDimension() and like.GetSize() == image.GetSize():
        image.CopyInformation(like)
    elif like is not None and image.GetDimension() == 3:
        image.SetSpacing(like.GetSpacing())
        image.SetOrigin(like.GetOrigin())
        image.SetDirection(like.GetDirection())
    if spacing is not None:
        image.SetSpacing(spacing)
    if origin is not None:
        image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return Path(path)


def rewrite(path: Path, change) -> Path:
    """Read ``path``, apply ``change(array) -> array`` and write it back with the same geometry."""
    array, image = read(path)
    return write(path, change(array), image)


# -- damaged files ------------------------------------------------------------------------------------
def truncate(path: Path, fraction: float = 0.5) -> Path:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * fraction)])
    return Path(path)


def corrupt_gzip(path: Path) -> Path:
    """Flip bytes in the middle of the compressed stream (the length stays the same)."""
    data = bytearray(Path(path).read_bytes())
    middle = len(data) // 2
    for i in range(middle, min(middle + 64, len(data) - 8)):
        data[i] ^= 0xA5
    Path(path).write_bytes(bytes(data))
    return Path(path)


def empty_file(path: Path) -> Path:
    Path(path).write_bytes(b"")
    return Path(path)


def not_an_image(path: Path) -> Path:
    """A gzip-compressed text file wearing the image's name."""
    Path(path).write_bytes(gzip.compress(b"patient notes, not an image\n" * 50))
    return Path(path)


def two_d(path: Path) -> Path:
    array, image = read(path)
    slice2d = sitk.GetImageFromArray(array[array.shape[0] // 2])
    slice2d.SetSpacing(image.GetSpacing()[:2])
    sitk.WriteImage(slice2d, str(path))
    return Path(path)


def four_d(path: Path, volumes: int = 3) -> Path:
    _, image = read(path)
    sitk.WriteImage(sitk.JoinSeries([image] * volumes), str(path))
    return Path(path)


def put_nonfinite(path: Path, value: float) -> Path:
    """Set a few brain voxels to NaN or Inf (as float32)."""
    def change(array):
        array = array.astype(np.float32)
        inside = np.argwhere(array != array.flat[0])[:5]
        array[tuple(inside.T)] = value
        return array
    return rewrite(path, change)


def put_beyond_float32(path: Path) -> Path:
    """Store the image as float64 with one brain voxel at 1e300 (beyond the float32 range)."""
    def change(array):
        array = array.astype(np.float64)
        array[tuple(np.argwhere(array != array.flat[0])[0])] = 1e300
        return array
    return rewrite(path, change)


def zero_pixdim(path: Path, axis: int = 2) -> Path:
    """Set the NIfTI header's voxel size on ``axis`` (0 = x) to 0, as some converters write it."""
    import gzip
    import struct

    raw = Path(path).read_bytes()
    packed = raw[:2] == b"\x1f\x8b"
    data = bytearray(gzip.decompress(raw) if packed else raw)
    data[80 + 4 * axis:84 + 4 * axis] = struct.pack("<f", 0.0)
    Path(path).write_bytes(gzip.compress(bytes(data)) if packed else bytes(data))
    return Path(path)


def make_constant(path: Path, value: float = 7.0) -> Path:
    return rewrite(path, lambda a: np.full_like(a, value))


# -- grids --------------------------------------------------------------------------------------------
def change_grid(path: Path, what: str) -> Path:
    """Rewrite ``path`` on another grid: "size" (crop one slice), "spacing", "origin", "direction", or
    "far" (shifted so that it barely overlaps its original extent)."""
    array, image = read(path)
    if what == "size":
        out = sitk.GetImageFromArray(array[:-1])
        out.SetSpacing(image.GetSpacing())
        out.SetOrigin(image.GetOrigin())
        out.SetDirection(image.GetDirection())
        sitk.WriteImage(out, str(path))
        return Path(path)
    if what == "spacing":
        return write(path, array, image, spacing=(1.0, 1.0, 1.5))
    if what == "origin":
        return write(path, array, image, origin=(3.0, 0.0, 0.0))
    if what == "direction":
        return write(path, array, image, direction=(0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    if what == "far":  # shifted by 80% of its x extent: another visit, not the same scanner space
        shift = 0.8 * image.GetSize()[0] * image.GetSpacing()[0]
        origin = image.GetOrigin()
        return write(path, array, image, origin=(origin[0] + shift, origin[1], origin[2]))
    raise ValueError(what)


def brain_mask_file(case: Path, *, empty: bool = False, grid: str | None = None) -> Path:
    """Add a brainmask file: the voxels that are not background in the flair image, or none at all."""
    flair, image = read(role_file(case, FLAIR))
    mask = np.zeros(flair.shape, np.uint8) if empty else (flair != flair.flat[0]).astype(np.uint8)
    path = write(role_file(case, MASK), mask, image)
    return change_grid(path, grid) if grid else path


# -- models -------------------------------------------------------------------------------------------
class CreatesFile:
    """Unpickling this object creates ``marker``: proof that a loader ran pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted_pickle(marker: Path, protocol: int = 4) -> bytes:
    return pickle.dumps(CreatesFile(marker), protocol=protocol)


def copy_model(model: Path, dest: Path) -> Path:
    shutil.copytree(model, dest)
    return Path(dest)


def edit_card(model: Path, **changes) -> Path:
    card = json.loads((Path(model) / "model.json").read_text())
    card.update(changes)
    (Path(model) / "model.json").write_text(json.dumps(card))
    return Path(model)


def listing(folder: Path) -> list[str]:
    """Every path under ``folder`` (relative, sorted), hidden ones included; [] when it is missing."""
    folder = Path(folder)
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def write_head_case(folder: Path, seed: int = 1) -> Path:
    """A labelled case whose "brain" is a whole 140 x 140 x 120 mm head (2,352 ml: the skull still in):
    FLAIR and T1c of uniform noise with no constant border, so the derived brain mask is everything,
    and a 10 mm tumour-core cube (label 1)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (120, 140, 140)
    label = np.zeros(shape, np.uint8)
    label[50:60, 60:70, 60:70] = 1
    for name, array in (("flair", rng.uniform(10, 400, shape).astype(np.float32)),
                        ("t1c", rng.uniform(10, 400, shape).astype(np.float32)), ("seg", label)):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(folder / f"{folder.name}_{name}.nii.gz"))
    return folder

