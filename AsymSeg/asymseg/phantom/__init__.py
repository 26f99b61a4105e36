"""Synthetic BraTS-like cases: our stand-in for BraTS in tests, the demo and the experiments.

A phantom is a heterogeneous but generic brain (grey and white matter with folded cortex,
deep grey matter, ventricles and sulcal CSF; smooth bias fields; Rician noise) inside a
head-shaped mask with background 0, plus a rare, case-specific tumour: its shape, size
(tumour core 0.5-10% of the brain), location, per-channel contrast, texture and edge sharpness
are drawn per case. Labels follow BraTS 2017-2021: 1 necrosis / non-enhancing core, 2 oedema,
4 enhancing core; the tumour core is {1, 4}. Optionally (``vessels=True``) the healthy brain also
holds what enhances like a tumour rim on T1c: venous sinuses, cortical veins, choroid plexus.

Modules:
    generate: :class:`PhantomCase`, :func:`make_phantom`.
    writer: :func:`write_phantom_cases`, :func:`read_phantom_manifest` (BraTS file names, phantom.json).
    anatomy, tumour, vessels, fields: the healthy brain, the tumour, the vessels, smooth random fields.
"""

from __future__ import annotations

from asymseg.phantom.generate import GENERATOR_VERSION, PhantomCase, check_phantom_options, make_phantom
from asymseg.phantom.tumour import LABEL_ENHANCING, LABEL_NECROSIS, LABEL_OEDEMA, TUMOUR_CORE_FRACTION
from asymseg.phantom.writer import (
    BRATS_SUFFIX,
    MANIFEST_NAME,
    case_id_for,
    case_seed,
    read_phantom_manifest,
    write_phantom_cases,
)

__all__ = [
    "BRATS_SUFFIX", "GENERATOR_VERSION", "LABEL_ENHANCING", "LABEL_NECROSIS", "LABEL_OEDEMA", "MANIFEST_NAME",
    "TUMOUR_CORE_FRACTION", "PhantomCase", "case_id_for", "case_seed", "check_phantom_options", "make_phantom",
    "read_phantom_manifest", "write_phantom_cases",
]
