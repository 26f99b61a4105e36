"""The extra training steps of the asymmetric techniques (METHOD.md 4-5).

- :func:`pathway_perturbations` (the authors' DeepMedic: one perturbation per pathway input) and
  :func:`adversarial_perturbation` (one perturbation of the image): the (asymmetric) adversarial
  direction, norm eps per sample and perturbed input.
- :func:`mixup` = :func:`apply_mixup` (pure) after :func:`sample_mixup` (random): (asymmetric) mixup.

Each feeds a separate optimiser step after the clean step (METHOD.md, "Training schedule").
"""

from __future__ import annotations

from asymseg.regularizers.adversarial import (
    DEFAULT_EPS,
    DEFAULT_XI,
    adversarial_perturbation,
    pathway_perturbations,
    perturbation_rms,
)
from asymseg.regularizers.mixup import (
    DEFAULT_ALPHA,
    DEFAULT_MARGIN,
    MixupParams,
    apply_mixup,
    mixup,
    sample_mixup,
)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_EPS",
    "DEFAULT_MARGIN",
    "DEFAULT_XI",
    "MixupParams",
    "adversarial_perturbation",
    "pathway_perturbations",
    "perturbation_rms",
    "apply_mixup",
    "mixup",
    "sample_mixup",
]
