"""Checks on NIfTI files that ITK does not make.

ITK's NIfTI reader fills the missing part of a truncated file with zeros and turns NaN voxels into
0 without a word, and its writer does not report short writes (disk full, file size limit). So
AsymSeg scans every NIfTI file it reads or writes once: the gzip stream must be complete and
intact, the data as long as the header says, and float data is checked for NaN/Inf.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_CHUNK = 1 << 22
#: NIfTI datatype codes of real float voxels -> numpy type (endianness added per file).
_FLOAT_TYPES = {16: "f4", 64: "f8"}


@dataclass(frozen=True)
class NiftiLayout:
    """Where a single-file NIfTI's voxel data lies: ``offset`` bytes in, ``nbytes`` long."""

    offset: int
    nbytes: int
    float_dtype: np.dtype | None


@dataclass(frozen=True)
class NiftiScan:
    """Result of :func:`scan_nifti`: a problem with the file (or None) and the NaN/Inf voxel count."""

    problem: str | None
    nonfinite: int
    spacing_problem: str | None = None


def nifti_layout(header: bytes) -> NiftiLayout | None:
    """The data layout of a single-file NIfTI-1 or NIfTI-2 header; None when it is not one."""
    if len(header) < 348:
        return None
    for endian in "<>":
        (sizeof_hdr,) = struct.unpack(endian + "i", header[:4])
        if sizeof_hdr == 348:
            if header[344:347] != b"n+1":
                return None  # a .hdr/.img pair or plain Analyze: not checked
            dims = struct.unpack(endian + "8h", header[40:56])
            (datatype, bitpix) = struct.unpack(endian + "2h", header[70:74])
            (vox_offset,) = struct.unpack(endian + "f", header[108:112])
            break
        if sizeof_hdr == 540 and len(header) >= 540:
            if header[4:7] != b"n+2":
                return None
            (datatype, bitpix) = struct.unpack(endian + "2h", header[12:16])
            dims = struct.unpack(endian + "8q", header[16:80])
            (vox_offset,) = struct.unpack(endian + "q", header[168:176])
            break
    else:
        return None
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0 or any(d < 1 for d in dims[1:ndim + 1]):
        return None
    if not math.isfinite(vox_offset) or vox_offset < 0:
        return None
    code = _FLOAT_TYPES.get(datatype)
    float_dtype = np.dtype(endian + code) if code else None
    return NiftiLayout(int(vox_offset), math.prod(dims[1:ndim + 1]) * bitpix // 8, float_dtype)


def nifti_spacing_problem(header: bytes) -> str | None:
    """Why a NIfTI header's voxel size is unusable (a zero, negative or non-finite ``pixdim`` on a
    spatial axis), or None. ITK replaces such a voxel size by 1 mm without a word."""
    for endian in "<>":
        (sizeof_hdr,) = struct.unpack(endian + "i", header[:4]) if len(header) >= 4 else (0,)
        if sizeof_hdr == 348 and len(header) >= 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            pixdim = struct.unpack(endian + "8f", header[76:108])
            break
        if sizeof_hdr == 540 and len(header) >= 540:
            dims = struct.unpack(endian + "8q", header[16:80])
            pixdim = struct.unpack(endian + "8d", header[104:168])
            break
    else:
        return None
    axes = min(max(int(dims[0]), 0), 3)
    bad = [f"{'xyz'[i]}={pixdim[i + 1]:g}" for i in range(axes)
           if not (math.isfinite(pixdim[i + 1]) and pixdim[i + 1] > 0)]
    if not bad:
        return None
    return (f"the header's voxel size (pixdim) is not positive on axis {', '.join(bad)}; the spacing is unknown "
            "(fix the header, e.g. set the spacing in Slicer's Volumes module and save again)")


class _NonFiniteCounter:
    """Counts NaN/Inf values in the data region of a byte stream fed chunk by chunk."""

    def __init__(self, layout: NiftiLayout | None) -> None:
        self.layout = layout
        self.position = 0
        self.carry = b""
        self.count = 0

    def feed(self, chunk: bytes) -> None:
        start, self.position = self.position, self.position + len(chunk)
        layout = self.layout
        if layout is None or layout.float_dtype is None:
            return
        lo = max(layout.offset, start) - start
        hi = min(layout.offset + layout.nbytes, self.position) - start
        if hi <= lo:
            return
        data = self.carry + chunk[lo:hi]
        usable = len(data) - len(data) % layout.float_dtype.itemsize
        values = np.frombuffer(data[:usable], dtype=layout.float_dtype)
        self.count += int(values.size - np.count_nonzero(np.isfinite(values)))
        self.carry = data[usable:]


def scan_nifti(path: str | os.PathLike[str]) -> NiftiScan:
    """Read a .nii or .nii.gz file once and report truncation, gzip corruption and NaN/Inf voxels.

    Raises:
        OSError: the file cannot be opened or read.
    """
    path = Path(path)
    with path.open("rb") as raw:
        is_gzip = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if is_gzip else open
    counter = _NonFiniteCounter(None)
    try:
        with opener(path, "rb") as f:
            header = f.read(540)
            counter.layout = nifti_layout(header)
            spacing_problem = nifti_spacing_problem(header)
            counter.feed(header)
            while chunk := f.read(_CHUNK):
                counter.feed(chunk)
    except EOFError:
        return NiftiScan("the file is truncated (the compressed data ends early)", counter.count)
    except (gzip.BadGzipFile, zlib.error) as err:
        return NiftiScan(f"the compressed data is corrupt ({err})", counter.count)
    layout = counter.layout
    expected = None if layout is None else layout.offset + layout.nbytes
    if expected is not None and counter.position < expected:
        return NiftiScan(f"the file is truncated ({counter.position} of {expected} bytes)", counter.count)
    return NiftiScan(None, counter.count, spacing_problem)


def nifti_problem(path: str | os.PathLike[str]) -> str | None:
    """Why a NIfTI file is incomplete (truncated or corrupt gzip stream), or None when it is whole."""
    return scan_nifti(path).problem
