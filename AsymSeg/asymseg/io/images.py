"""Reading and writing single 3-D images with SimpleITK: checked on the way in, atomic on the way out.

Every problem with a file becomes one :class:`~asymseg.errors.InputError` line that names the file:
missing, unreadable, truncated (ITK's NIfTI reader silently zero-fills a truncated file and NaN
voxels, so NIfTI files are scanned first, see :mod:`asymseg.io.nifti_check`), not 3-D, several components per voxel, NaN/Inf voxels,
zero spacing. Writing goes to a temporary file in the destination folder that is renamed into place
only once it is complete, so a failure (disk full, file size limit, cancellation) never leaves a
half-written file behind.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import re
import secrets
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from asymseg.errors import InputError, ResourceError
from asymseg.io.geometry import Geometry
from asymseg.io.nifti_check import nifti_problem, scan_nifti
from asymseg.processes import process_alive

try:  # POSIX only; used to recognise a file size limit after a failed write
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: File extensions read as images (case-insensitive); ``.nhdr``/``.mhd`` are headers with a data file.
READ_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: File extensions :func:`write_image` writes (single-file formats only, so the rename is atomic).
WRITE_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha")
_COMPRESSED_WRITE = {".nii.gz": True, ".nii": False, ".nrrd": True, ".mha": True}
_RESOURCE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_SUPPORTED_TEXT = ", ".join(READ_EXTENSIONS)


def image_extension(path: str | os.PathLike[str]) -> str | None:
    """The image extension of ``path`` in lower case (``".nii.gz"``, ``".nrrd"`` ...), or None."""
    name = Path(path).name.lower()
    for ext in READ_EXTENSIONS:  # ".nii.gz" is checked before ".nii"
        if name.endswith(ext) and len(name) > len(ext):
            return ext
    return None


def strip_image_extension(path: str | os.PathLike[str]) -> str:
    """The file name without its image extension: ``"BraTS-GLI-00000-000-t1c"``."""
    name = Path(path).name
    ext = image_extension(path)
    return name[: -len(ext)] if ext else name


@contextlib.contextmanager
def _native_stderr_to_log(path: Path) -> Iterator[list[str]]:
    """Send what ITK's C++ code prints on file descriptor 2 to the debug log instead.

    ITK's MetaImage, NIfTI and NRRD readers print lines such as ``MetaImage: Read: Cannot open data
    file`` straight to fd 2, bypassing Python; SimpleITK raises an exception as well, which becomes
    the one error line the CLI promises. While the block runs, fd 2 points to a temporary file whose
    content is logged at debug level afterwards.

    Yields:
        A list that holds the printed lines once the block has ended (for error messages).
    """
    said: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (a detached process): nothing to redirect
        yield said
        return
    try:
        capture = tempfile.TemporaryFile()
    except OSError:
        os.close(saved)
        yield said
        return
    with capture:
        with contextlib.suppress(ValueError, OSError):
            sys.stderr.flush()
        os.dup2(capture.fileno(), 2)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read(4096).decode("utf-8", "replace")
            said.extend(" ".join(line.split()) for line in text.splitlines() if line.strip())
            if said:
                log.debug("%s: SimpleITK printed: %s", path, " | ".join(said))


def _with_native(reason: str, said: list[str]) -> str:
    """``reason`` plus the first line ITK printed, when the exception text alone is generic."""
    if said and reason.lower().startswith("file cannot be read"):
        detail = re.sub(r"^MetaImage:\s*", "", said[0]).strip(" :.")
        return f"{reason} ({detail[:160]})"
    return reason


# -- reading ----------------------------------------------------------------------------------------
def _itk_reason(err: Exception, path: Path) -> str:
    """The informative part of a SimpleITK exception text, on one line and without the path."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    picked: list[str] = []
    for line in lines:
        if "ERROR:" in line:
            text = line.split("ERROR:", 1)[1]
            text = re.sub(r"^\s*\w+\(0x[0-9a-fA-F]+\):\s*", "", text)
            text = re.sub(r"^\s*ERROR:\s*", "", text)
            if text not in picked:
                picked.append(text)
    if lines and "ERROR:" not in lines[-1] and not lines[-1].startswith("Reason:"):
        picked.append(re.sub(r"^\[\w+\]\s*", "", lines[-1]))
    text = " ".join(picked) or (lines[-1] if lines else type(err).__name__)
    text = text.replace(f'"{path}"', "").replace(str(path), "").replace(" for reading", "").replace("  ", " ")
    text = text.strip(" :.")
    return text[:240]


#: Lower-case fragments of ITK exception texts that mean an allocation failed, not a bad file.
_ITK_ALLOCATION_TEXTS = ("bad_alloc", "memoryallocationerror", "failed to allocate memory")


def _check_allocation(err: Exception, path: Path, what: str) -> None:
    """Raise ResourceError when ITK's exception is an allocation failure (out of memory)."""
    text = str(err).lower()
    if any(fragment in text for fragment in _ITK_ALLOCATION_TEXTS):
        raise ResourceError(f"{path}: out of memory while {what}; free memory") from err


def _is_zero_spacing(reason: str) -> bool:
    lower = reason.lower()
    return "spacing" in lower and ("zero" in lower or "(0)" in lower)


#: Largest image read, in voxels (a 512 x 512 x 512 volume), unless ``ASYMSEG_MAX_VOXELS`` says more.
DEFAULT_MAX_VOXELS = 512 ** 3
MAX_VOXELS_ENV = "ASYMSEG_MAX_VOXELS"


def max_voxels() -> int:
    """The voxel cap for images: ``ASYMSEG_MAX_VOXELS`` (a positive integer) or the default.

    Raises:
        InputError: the variable is set to something else.
    """
    text = os.environ.get(MAX_VOXELS_ENV)
    if text is None or not text.strip():
        return DEFAULT_MAX_VOXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"{MAX_VOXELS_ENV}={text[:40]!r}: expected a positive whole number of voxels")
    return value


def _scan_nifti_or_raise(path: Path, role: str) -> None:
    """The checks ITK does not make on a NIfTI file (complete, intact, finite), as InputError."""
    try:
        scan = scan_nifti(path)
    except OSError as err:
        raise InputError(f"{path}: cannot read {role} image: {err.strerror or err}") from err
    if scan.problem:
        raise InputError(f"{path}: cannot read {role} image: {scan.problem}")
    if scan.nonfinite:  # ITK would read these as 0
        raise InputError(f"{path}: {role} image has {scan.nonfinite} NaN or infinite voxels")
    if scan.spacing_problem:  # ITK would read 1 mm
        raise InputError(f"{path}: {role} image: {scan.spacing_problem}")


def _read_header(path: Path, role: str) -> tuple[sitk.ImageFileReader, int, tuple[int, ...]]:
    """Open ``path``'s header and make every check it allows before a voxel is read: an existing
    file that SimpleITK reads, one component, 3-D (or 4-D with one volume), within the voxel cap."""
    if not path.exists():
        raise InputError(f"{path}: no such {role} file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected a {role} image file")
    is_nifti = image_extension(path) in (".nii", ".nii.gz")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with _native_stderr_to_log(path) as said:
            reader.ReadImageInformation()
    except RuntimeError as err:
        _check_allocation(err, path, f"reading the {role} image")
        if is_nifti:
            _scan_nifti_or_raise(path, role)  # a damaged file says what is wrong with it
        reason = _with_native(_itk_reason(err, path), said)
        if _is_zero_spacing(reason):
            raise InputError(f"{path}: {role} image spacing has a zero axis") from err
        if "Unable to determine ImageIO reader" in str(err):
            raise InputError(f"{path}: not a readable image (supported: {_SUPPORTED_TEXT})") from err
        raise InputError(f"{path}: cannot read {role} image: {reason}") from err
    dim, size, components = reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents()
    if components != 1:
        raise InputError(f"{path}: {role} image has {components} components per voxel; expected a scalar image")
    if dim == 4 and size[3] != 1:
        raise InputError(f"{path}: {role} image is 4-D with {size[3]} volumes; expected one 3-D volume")
    if dim not in (3, 4):
        raise InputError(f"{path}: {role} image is {dim}-D {tuple(size)}; expected a 3-D volume")
    voxels = math.prod(int(n) for n in size[:3])
    limit = max_voxels()
    if voxels > limit:  # refused from the header, before any voxel is read
        raise InputError(f"{path}: {role} image header claims {' x '.join(str(int(n)) for n in size[:3])} = "
                         f"{voxels:,} voxels, above the limit of {limit:,} (set {MAX_VOXELS_ENV} to allow more)")
    return reader, dim, tuple(int(n) for n in size)


def check_image_header(path: str | os.PathLike[str], *, role: str = "channel") -> None:
    """The checks :func:`read_image` makes from the header alone (no voxel read), for refusing a bad
    input before any expensive work starts (e.g. loading a model).

    Raises:
        InputError: as :func:`read_image` for a missing, unreadable, not 3-D, multi-component or
            over-the-voxel-cap image.
    """
    _read_header(Path(path), role)


def read_geometry(path: str | os.PathLike[str], *, role: str = "channel") -> Geometry:
    """The physical grid of an image from its header alone (no voxel read).

    Raises:
        InputError: as :func:`check_image_header`, or a zero, negative or invalid spacing.
    """
    path = Path(path)
    reader, dim, size = _read_header(path, role)
    spacing, origin = reader.GetSpacing()[:3], reader.GetOrigin()[:3]
    matrix = reader.GetDirection()
    direction = [matrix[row * dim + col] for row in range(3) for col in range(3)]
    try:
        return Geometry(size[:3], spacing, origin, direction)
    except ValueError as err:
        raise InputError(f"{path}: {role} image has an invalid geometry: {err}") from err


def _read_sitk(path: str | os.PathLike[str], role: str) -> tuple[sitk.Image, Geometry]:
    """Read one scalar 3-D image (a singleton 4th axis is dropped) and check it. See :func:`read_image`."""
    path = Path(path)
    is_nifti = image_extension(path) in (".nii", ".nii.gz")
    reader, dim, size = _read_header(path, role)
    if is_nifti:
        _scan_nifti_or_raise(path, role)
    try:
        with _native_stderr_to_log(path) as said:
            image = reader.Execute()
    except RuntimeError as err:
        _check_allocation(err, path, f"reading the {role} image")
        if _is_zero_spacing(_itk_reason(err, path)):
            raise InputError(f"{path}: {role} image spacing has a zero axis") from err
        raise InputError(f"{path}: cannot read {role} image: {_with_native(_itk_reason(err, path), said)}") from err
    if dim == 4:
        image = sitk.Extract(image, (*size[:3], 0), (0, 0, 0, 0))
    if image.GetNumberOfComponentsPerPixel() != 1:  # e.g. a one-component vector image
        image = sitk.VectorIndexSelectionCast(image, 0)
    spacing = image.GetSpacing()
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"{path}: {role} image spacing {tuple(spacing)} has a zero, negative or invalid axis")
    try:
        geometry = Geometry.from_image(image)
    except ValueError as err:
        raise InputError(f"{path}: {role} image has an invalid geometry: {err}") from err
    return image, geometry


def _check_finite(array: np.ndarray, path: Path, role: str) -> None:
    if array.dtype.kind in "fc":
        finite = np.isfinite(array)
        if not finite.all():
            bad = int(array.size - np.count_nonzero(finite))
            raise InputError(f"{path}: {role} image has {bad} NaN or infinite voxels")


def read_image(path: str | os.PathLike[str], *, role: str = "channel") -> tuple[np.ndarray, Geometry]:
    """Read a 3-D scalar image as float32.

    Args:
        path: a .nii, .nii.gz, .nrrd, .nhdr, .mha or .mhd file (anything SimpleITK reads).
        role: what the image is ("channel", "mask", "prediction" ...), used in error messages.

    Returns:
        ``(array, geometry)``; array is float32 of shape (D, H, W).

    Raises:
        InputError: one line naming the file: missing, unreadable, corrupt or truncated, not 3-D
            (a 4-D image with a single volume is accepted), several components per voxel, NaN or
            infinite voxels, or a zero spacing.
    """
    path = Path(path)
    image, geometry = _read_sitk(path, role)
    array = sitk.GetArrayFromImage(image)
    _check_finite(array, path, role)
    if array.dtype != np.float32:
        if array.dtype.kind == "f" and array.size:
            largest = float(np.max(np.abs(array)))
            if largest > float(np.finfo(np.float32).max):
                raise InputError(f"{path}: {role} image has values beyond the float32 range (largest magnitude "
                                 f"{largest:.3g}); rescale the image")
        array = array.astype(np.float32)
    return array, geometry


def read_label(path: str | os.PathLike[str], *, role: str = "label") -> tuple[np.ndarray, Geometry]:
    """Read an integer label map (float files are accepted when every value is a whole number).

    Returns:
        ``(array, geometry)``; array is int16 when the values fit, else int32; shape (D, H, W).

    Raises:
        InputError: as :func:`read_image`, plus non-integer values or values beyond the int32 range.
    """
    path = Path(path)
    image, geometry = _read_sitk(path, role)
    array = sitk.GetArrayFromImage(image)
    _check_finite(array, path, role)
    if array.dtype.kind == "f":
        fractional = array != np.round(array)
        if fractional.any():
            example = float(array[fractional].flat[0])
            raise InputError(f"{path}: {role} has non-integer values (e.g. {example:g}); expected a label map")
    elif array.dtype.kind not in "iub":
        raise InputError(f"{path}: {role} has voxel type {array.dtype}; expected integer labels")
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    for dtype in (np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return array.astype(dtype, copy=False), geometry
    raise InputError(f"{path}: {role} values {low:g}..{high:g} are beyond the int32 range")


# -- writing ----------------------------------------------------------------------------------------
def _out_of_space(tmp: Path) -> bool:
    """Whether writing next to ``tmp`` fails for lack of disk space or a file size limit.

    ITK does not report errno, so after a failed write we append to the temporary file ourselves
    (it is deleted anyway) and look at the error we get.
    """
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0] if resource is not None else None
    try:
        if soft is not None and soft != resource.RLIM_INFINITY and tmp.exists() and tmp.stat().st_size >= soft:
            return True
        with tmp.open("ab") as f:
            f.write(b"\0" * (1 << 20))
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        return err.errno in _RESOURCE_ERRNOS
    return False


def _to_writable(array: np.ndarray, dtype: np.dtype | type | str | None) -> np.ndarray:
    if dtype is not None:
        return np.ascontiguousarray(array, dtype=np.dtype(dtype) if np.dtype(dtype) != np.bool_ else np.uint8)
    if array.dtype == np.bool_:
        return np.ascontiguousarray(array, dtype=np.uint8)
    if array.dtype == np.float16:  # no ITK pixel type
        return np.ascontiguousarray(array, dtype=np.float32)
    if array.dtype.kind in "iu" and array.dtype.itemsize == 8 and array.size:
        low, high = int(array.min()), int(array.max())
        if np.iinfo(np.int32).min <= low and high <= np.iinfo(np.int32).max:
            return np.ascontiguousarray(array, dtype=np.int32)
    return np.ascontiguousarray(array)


def remove_stale_image_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files of earlier writes of ``path`` whose writer is gone.

    :func:`write_image` writes ``.<name>.<pid>-<hex>.tmp<ext>`` beside ``path`` and renames it into
    place; a writer killed mid-write (SIGKILL, power loss) leaves it behind. Such a file is removed
    when its process no longer exists on this machine. Returns the files removed.
    """
    path = Path(path)
    ext = image_extension(path)
    pattern = re.compile(rf"^\.{re.escape(strip_image_extension(path))}\.(\d+)-[0-9a-f]{{8}}\.tmp{re.escape(ext)}$")
    removed = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match and int(match.group(1)) != os.getpid() and not process_alive(int(match.group(1))):
            try:
                entry.unlink()
                removed.append(entry)
            except OSError:
                pass
    if removed:
        log.info("removed %d temporary file(s) of an interrupted write of %s", len(removed), path)
    return removed


def write_image(array: np.ndarray, geometry: Geometry, path: str | os.PathLike[str], *,
                dtype: np.dtype | type | str | None = None) -> Path:
    """Write a (D, H, W) array with exactly ``geometry``, atomically.

    The format follows the extension (.nii.gz, .nii, .nrrd, .mha; .nii.gz, .nrrd and .mha are
    compressed). The data goes to a hidden temporary file in the destination folder, which is
    renamed over ``path`` only when complete; on any failure it is removed and ``path`` is untouched.

    Args:
        array: shape (D, H, W) == ``geometry.shape_zyx``.
        geometry: size, spacing, origin and direction to write.
        path: destination; its folder must exist.
        dtype: voxel type to store; default keeps the array's type, except bool -> uint8,
            float16 -> float32 and 64-bit integers -> int32 when the values fit.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: the array's shape does not match the geometry.
        InputError: unsupported extension, missing destination folder, or the file cannot be written.
        ResourceError: the disk is full or the file would exceed the process's file size limit.
    """
    path = Path(path)
    array = np.asarray(array)
    if array.ndim != 3 or tuple(array.shape) != geometry.shape_zyx:
        raise ValueError(f"array shape {tuple(array.shape)} does not match the geometry's (D, H, W) "
                         f"{geometry.shape_zyx}")
    ext = image_extension(path)
    if ext not in WRITE_EXTENSIONS:
        raise InputError(f"{path}: cannot write this file type; use one of {', '.join(WRITE_EXTENSIONS)}")
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"{path}: the folder {parent} does not exist")
    if path.is_dir():
        raise InputError(f"{path}: is a folder")
    image = geometry.apply_to(sitk.GetImageFromArray(_to_writable(array, dtype)))
    remove_stale_image_temporaries(path)
    tmp = parent / f".{strip_image_extension(path)}.{os.getpid()}-{secrets.token_hex(4)}.tmp{ext}"
    try:
        with tmp.open("xb"):  # fails here, with a real errno, when the folder is not writable
            pass
        try:
            with _native_stderr_to_log(path):
                sitk.WriteImage(image, str(tmp), _COMPRESSED_WRITE[ext])
            problem = nifti_problem(tmp) if ext in (".nii", ".nii.gz") else None
        except RuntimeError as err:
            _check_allocation(err, path, "writing the image")
            problem = _itk_reason(err, tmp)
        if problem is not None:
            if _out_of_space(tmp):
                raise ResourceError(f"{path}: cannot write: out of disk space or over the file size limit")
            if not os.access(parent, os.W_OK):
                raise InputError(f"{path}: cannot write: permission denied in {parent}")
            raise InputError(f"{path}: cannot write image: {problem}")
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in _RESOURCE_ERRNOS:
            raise ResourceError(f"{path}: cannot write: {err.strerror}") from err
        raise InputError(f"{path}: cannot write: {err.strerror or err}") from err
    finally:
        if tmp.exists():
            try:
                tmp.unlink()
            except OSError:
                log.warning("could not remove the temporary file %s", tmp)
    log.debug("wrote %s", path)
    return path
