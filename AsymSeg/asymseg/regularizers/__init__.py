"""The extra training steps of the asymmetric techniques (METHOD.md 4-5).

- :func:`adversarial_perturbation`: the (asymmetric) adversarial direction r_adv, norm eps per sample.
- :func:`mixup` = :func:`apply_mixup` (pure) after :func:`sample_mixup` (random): (asymmetric) mixup.

Each feeds a separate optimiser step after the clean step (METHOD.md, "Training schedule").
"""

from __future__ import annotations

from asymseg.regularizers.adversarial import DEFAULT_EPS, DEFAULT_XI, adversarial_perturbation
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
    "apply_mixup",
    "mixup",
    "sample_mixup",
]
