"""Losses of the cross-entropy baseline and the asymmetric techniques (METHOD.md 1-3, 7).

- :func:`asymmetric_ce`: cross-entropy with the asymmetric (or symmetric) large margin and focal
  attenuation, one loss for CE, LM, focal and their combination.
- :func:`soft_dice_loss`, :func:`focal_dice_loss`: the Dice baseline and its asymmetric focal form.

All take raw logits ``(B, C, *spatial)`` and an int class map ``(B, *spatial)`` or a soft target
``(B, C, *spatial)``, an optional bool ``ignore_mask`` and ``rare`` (one boolean per class).
"""

from __future__ import annotations

from asymseg.losses._masking import FOCAL_BASE_MIN
from asymseg.losses.asymmetric_ce import asymmetric_ce, asymmetric_ce_map, focal_factor
from asymseg.losses.dice import DICE_SMOOTH, focal_dice_loss, soft_dice_loss

__all__ = [
    "DICE_SMOOTH",
    "FOCAL_BASE_MIN",
    "asymmetric_ce",
    "asymmetric_ce_map",
    "focal_dice_loss",
    "focal_factor",
    "soft_dice_loss",
]
