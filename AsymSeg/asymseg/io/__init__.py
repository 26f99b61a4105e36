"""Case I/O: reading and writing images, finding a case's files, loading and normalising a case.

SimpleITK arrays are (D, H, W) while spacing, origin and size are (x, y, z); this package is the
only place that handles that flip (see :class:`Geometry`).

Modules:
    geometry: :class:`Geometry`.
    images: :func:`read_image`, :func:`read_label`, :func:`write_image` (atomic).
    discovery: :class:`CaseFiles`, :func:`discover_case` (generic, BraTS 2017-2021, BraTS 2023+ names).
    case: :class:`Case`, :func:`load_case`, :func:`derive_brain_mask`, :func:`zscore`.
    cli_args: the shared ``--case/--channel/--label/--mask`` and target options.
"""

from __future__ import annotations

from asymseg.io.case import Case, background_values, derive_brain_mask, label_values, load_case, zscore
from asymseg.io.cli_args import (
    add_case_arguments,
    add_target_arguments,
    case_files_from_args,
    read_case_list,
    target_from_args,
    target_was_guessed,
)
from asymseg.io.discovery import ROLE_KEYWORDS, CaseFiles, canonical_channel, discover_case, role_of
from asymseg.io.geometry import Geometry
from asymseg.io.images import (
    READ_EXTENSIONS,
    WRITE_EXTENSIONS,
    image_extension,
    read_geometry,
    read_image,
    read_label,
    strip_image_extension,
    write_image,
)

__all__ = [
    "READ_EXTENSIONS", "ROLE_KEYWORDS", "WRITE_EXTENSIONS", "Case", "CaseFiles", "Geometry",
    "add_case_arguments", "add_target_arguments", "background_values", "canonical_channel",
    "case_files_from_args", "derive_brain_mask", "discover_case", "image_extension", "label_values",
    "load_case", "read_case_list", "read_geometry", "read_image", "read_label", "role_of", "strip_image_extension",
    "target_from_args", "target_was_guessed", "write_image", "zscore",
]
