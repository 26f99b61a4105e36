"""Technique presets: the paper's techniques and baselines by name, with the authors' settings.

A :class:`Technique` says which loss the clean step uses and which extra steps follow it
(METHOD.md, "Training schedule per iteration": clean -> adversarial -> mixup, separate optimiser
updates), plus the patch-sampling and augmentation settings the data pipeline reads.
``TECHNIQUES`` holds the presets; :func:`get_technique` returns one with overrides.

Defaults are the authors' BraTS tumour-core DeepMedic settings (Li, Kamnitsas & Glocker,
MICCAI 2019 / TMI 2021; their public configs, see docs/research/ml-anchors.md 4.2 and
paper.md 2): large margin m = 0.2, focal gamma = 4 alone and 2 in the combination,
adversarial eps = 10 and xi = 1e-5, mixup alpha = 1 and margin 0.2, 50 % foreground patches.

This module does not import torch until a loss or step is run (the CLI's ``--help`` stays fast).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from asymseg.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from asymseg.regularizers.mixup import MixupParams

#: Losses a clean step can use.
LOSSES: tuple[str, ...] = ("ce", "dice", "focal-dice")

#: Probability that a background-centred sample is augmented in the ``a-aug`` preset. The
#: authors' flag defaults to 1 (= symmetric) and no value of their asymmetric runs was
#: recovered (docs/research/paper.md 1.7), so 0.5 is this project's choice: it halves the
#: augmentation of the background while rare-centred samples are always augmented.
ASYM_AUG_P = 0.5

#: The parts of a technique whose symmetry can be set on its own (``<part>_symmetric``).
SYMMETRY_PARTS: tuple[str, ...] = ("margin", "focal", "adversarial", "mixup")
#: What the mixup step's loss is divided by (see ``Technique.mixup_normalize``).
MIXUP_NORMALIZE: tuple[str, ...] = ("all", "valid")
#: What the adversarial step perturbs (see ``Technique.adversarial_inputs``).
ADVERSARIAL_INPUTS: tuple[str, ...] = ("pathways", "image")


@dataclass(frozen=True)
class Technique:
    """One training technique: the clean-step loss, the extra steps and the sampling settings.

    Attributes:
        name: the preset name (or a user's name for a custom setting).
        loss: ``"ce"`` (:func:`asymseg.losses.asymmetric_ce`, with ``margin`` and ``gamma``),
            ``"dice"`` (:func:`asymseg.losses.soft_dice_loss`; margin and gamma must be 0) or
            ``"focal-dice"`` (asymmetric_ce + :func:`asymseg.losses.focal_dice_loss`, both with
            ``margin`` and ``gamma``, as the authors' U-Net adds CE and Dice).
        margin: large margin m >= 0 on the rare true-class logits (METHOD.md 2). 0 = off.
        gamma: focal gamma >= 0 (METHOD.md 3). 0 = off.
        symmetric: apply margin, focal attenuation, adversarial direction and mixup rule to every
            class (the original techniques) instead of the rare classes only.
        margin_symmetric, focal_symmetric, adversarial_symmetric, mixup_symmetric: the symmetry
            of one part on its own; None (default) = ``symmetric``. The authors' released
            combination, for one, has an asymmetric focal term and mixup but a symmetric
            adversarial direction (``combo-authors``).
        adversarial: run the adversarial step after the clean step (METHOD.md 4).
        eps: adversarial perturbation L2 norm per sample and perturbed input, > 0. Default 10.
            Its size per value depends on the input: see
            :func:`asymseg.regularizers.perturbation_rms`.
        xi: norm of the random start of the adversarial direction, > 0. Default 1e-5.
        adversarial_inputs: what the adversarial step perturbs: "pathways" (each pathway input
            of the network on its own, as the authors' DeepMedic; default) or "image" (the
            full-resolution input, which the network pools for its low-resolution pathways).
        mixup: run the mixup step after the (adversarial) step (METHOD.md 5).
        mixup_alpha: Beta(alpha, alpha) concentration, > 0. Default 1.
        mixup_margin: asymmetric mixup margin in [0, 1) (unused when symmetric). Default 0.2.
        mixup_normalize: what the mixup step's loss is divided by: "all" voxels of the batch,
            the ignored ones included (the authors' DeepMedic cost; default), or the "valid"
            voxels that carry a loss.
        fg_fraction: share of training patches centred on a rare-class voxel, in [0, 1].
            Default 0.5 (authors); the "more weight" baseline uses 0.8.
        augment: augment training patches (flips and intensity, see the data pipeline).
        asym_aug_p: None = augment every patch (when ``augment``); p in [0, 1] = augment
            rare-centred patches always and background-centred ones with probability p
            (asymmetric augmentation, TMI). Needs ``augment``.

    Raises:
        InputError: a value outside its range or an unknown loss (the message names the field,
            the rule and the value).
    """

    name: str
    loss: str = "ce"
    margin: float = 0.0
    gamma: float = 0.0
    symmetric: bool = False
    adversarial: bool = False
    eps: float = 10.0
    xi: float = 1e-5
    mixup: bool = False
    mixup_alpha: float = 1.0
    mixup_margin: float = 0.2
    fg_fraction: float = 0.5
    augment: bool = False
    asym_aug_p: float | None = None
    margin_symmetric: bool | None = None
    focal_symmetric: bool | None = None
    adversarial_symmetric: bool | None = None
    mixup_symmetric: bool | None = None
    mixup_normalize: str = "all"
    adversarial_inputs: str = "pathways"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputError(f"technique name must be a non-empty string, got {self.name!r}")
        if self.loss not in LOSSES:
            raise InputError(f"technique {self.name}: loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        for field_name in ("symmetric", "adversarial", "mixup", "augment"):
            value = getattr(self, field_name)
            if not isinstance(value, bool):
                raise InputError(f"technique {self.name}: {field_name} must be true or false, got {value!r}")
        for field_name in SYMMETRY_PARTS:
            value = getattr(self, f"{field_name}_symmetric")
            if value is not None and not isinstance(value, bool):
                raise InputError(f"technique {self.name}: {field_name}_symmetric must be true, false or null "
                                 f"(= symmetric), got {value!r}")
        if self.adversarial_inputs not in ADVERSARIAL_INPUTS:
            raise InputError(f"technique {self.name}: adversarial_inputs must be one of "
                             f"{', '.join(ADVERSARIAL_INPUTS)}, got {self.adversarial_inputs!r}")
        if self.mixup_normalize not in MIXUP_NORMALIZE:
            raise InputError(f"technique {self.name}: mixup_normalize must be one of {', '.join(MIXUP_NORMALIZE)}, "
                             f"got {self.mixup_normalize!r}")
        self._number("margin", low=0.0)
        self._number("gamma", low=0.0)
        self._number("eps", low=0.0, low_open=True)
        self._number("xi", low=0.0, low_open=True)
        self._number("mixup_alpha", low=0.0, low_open=True)
        self._number("mixup_margin", low=0.0, high=1.0, high_open=True)
        self._number("fg_fraction", low=0.0, high=1.0)
        if self.asym_aug_p is not None:
            self._number("asym_aug_p", low=0.0, high=1.0)
            if not self.augment:
                raise InputError(f"technique {self.name}: asym_aug_p needs augment=true")
        if self.loss == "focal-dice" and self.symmetric_part("margin") != self.symmetric_part("focal"):
            raise InputError(f"technique {self.name}: loss 'focal-dice' takes one symmetry for its margin and "
                             f"focal terms (got margin_symmetric={self.margin_symmetric}, "
                             f"focal_symmetric={self.focal_symmetric})")
        if self.loss == "dice" and (self.margin != 0.0 or self.gamma != 0.0):
            raise InputError(
                f"technique {self.name}: loss 'dice' takes no margin or gamma "
                f"(got margin={self.margin}, gamma={self.gamma}); use loss 'focal-dice' or 'ce'"
            )

    def _number(self, field_name: str, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> None:
        value = getattr(self, field_name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(f"technique {self.name}: {field_name} must be a finite number, got {value!r}")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            interval = (("(" if low_open else "[") + f"{low}, {high}" + (")" if high_open else "]")
                        if high is not None else (f"> {low}" if low_open else f">= {low}"))
            raise InputError(f"technique {self.name}: {field_name} must be {'in ' if high is not None else ''}"
                             f"{interval}, got {value}")
        object.__setattr__(self, field_name, float(value))

    def symmetric_part(self, part: str) -> bool:
        """Whether one part ("margin", "focal", "adversarial" or "mixup") acts on every class."""
        value = getattr(self, f"{part}_symmetric")
        return self.symmetric if value is None else value

    # -- serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Technique:
        """Build from :meth:`to_dict` output; missing fields take the defaults.

        Raises:
            InputError: not a mapping, unknown fields (listed), no name, or invalid values.
        """
        if not isinstance(data, Mapping):
            raise InputError(f"a technique must be a mapping of settings, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown technique setting(s) {unknown}; expected some of {sorted(known)}")
        if "name" not in data:
            raise InputError("a technique needs a name")
        return cls(**dict(data))

    # -- what a training iteration runs ---------------------------------------------------------------
    @property
    def steps(self) -> tuple[str, ...]:
        """The optimiser steps of one iteration, in order: "clean", then "adversarial", "mixup"."""
        return ("clean",) + (("adversarial",) if self.adversarial else ()) + (("mixup",) if self.mixup else ())

    def loss_fn(self, logits: torch.Tensor, target: torch.Tensor, *, rare: Sequence[bool],
                ignore_mask: torch.Tensor | None = None, count_ignored: bool = False) -> torch.Tensor:
        """The training loss of this technique (used by every step, on clean, perturbed or mixed data).

        Args:
            logits: ``(B, C, *spatial)`` raw network outputs.
            target: int class map ``(B, *spatial)`` or soft target ``(B, C, *spatial)``.
            rare: C booleans, True for the rare classes.
            ignore_mask: optional bool ``(B, *spatial)``, True = no loss.
            count_ignored: the CE term divides by every voxel, ignored ones included (the
                mixup step with ``mixup_normalize="all"``).

        Returns:
            Scalar loss (see :mod:`asymseg.losses`).
        """
        from asymseg.losses import asymmetric_ce, focal_dice_loss, soft_dice_loss

        if self.loss == "dice":
            return soft_dice_loss(logits, target, ignore_mask=ignore_mask)
        ce = asymmetric_ce(logits, target, rare=rare, margin=self.margin, gamma=self.gamma,
                           margin_symmetric=self.symmetric_part("margin"),
                           focal_symmetric=self.symmetric_part("focal"), ignore_mask=ignore_mask,
                           count_ignored=count_ignored)
        if self.loss == "ce":
            return ce
        return ce + focal_dice_loss(logits, target, rare=rare, gamma=self.gamma, margin=self.margin,
                                    symmetric=self.symmetric_part("focal"), ignore_mask=ignore_mask)

    def adversarial_perturbation(self, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, *,
                                 rare: Sequence[bool], generator: torch.Generator | None = None,
                                 ignore_mask: torch.Tensor | None = None) -> torch.Tensor:
        """r_adv with this technique's eps, xi and symmetry (:func:`asymseg.regularizers.adversarial_perturbation`)."""
        from asymseg.regularizers import adversarial_perturbation

        return adversarial_perturbation(model, x, target, rare=rare, eps=self.eps, xi=self.xi,
                                        symmetric=self.symmetric_part("adversarial"), generator=generator,
                                        ignore_mask=ignore_mask)

    def adversarial_batch(self, net: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, *,
                          rare: Sequence[bool], generator: torch.Generator | None = None,
                          ignore_mask: torch.Tensor | None = None
                          ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(inputs, perturbations) of the adversarial step, per ``adversarial_inputs``.

        "pathways": :func:`asymseg.regularizers.pathway_perturbations` (one per pathway input);
        "image": ``([x], [adversarial_perturbation(x)])``. The perturbed batch is the list of
        ``input + perturbation``, which the network's ``forward`` accepts (one tensor when the
        list has one entry).
        """
        from asymseg.regularizers import adversarial_perturbation, pathway_perturbations

        if self.adversarial_inputs == "pathways" and hasattr(net, "pathway_inputs"):
            return pathway_perturbations(net, x, target, rare=rare, eps=self.eps, xi=self.xi,
                                         symmetric=self.symmetric_part("adversarial"), generator=generator,
                                         ignore_mask=ignore_mask)
        r = adversarial_perturbation(net, x, target, rare=rare, eps=self.eps, xi=self.xi,
                                     symmetric=self.symmetric_part("adversarial"), generator=generator,
                                     ignore_mask=ignore_mask)
        return [x.detach()], [r]

    def sample_mixup(self, batch_size: int, *, generator: torch.Generator | None = None) -> MixupParams:
        """lam and partners with this technique's alpha, margin and symmetry."""
        from asymseg.regularizers import sample_mixup

        return sample_mixup(batch_size, alpha=self.mixup_alpha, margin=self.mixup_margin,
                            symmetric=self.symmetric_part("mixup"), generator=generator)

    def apply_mixup(self, x: torch.Tensor, target: torch.Tensor, params: MixupParams, *,
                    rare: Sequence[bool], ignore_mask: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_mixed, target_mixed, ignore_mask) with this technique's margin and symmetry."""
        from asymseg.regularizers import apply_mixup

        return apply_mixup(x, target, params, rare=rare, margin=self.mixup_margin,
                           symmetric=self.symmetric_part("mixup"), ignore_mask=ignore_mask)


#: One line per preset, for help texts and the GUI.
DESCRIPTIONS: dict[str, str] = {
    "ce": "cross-entropy baseline",
    "dice": "soft Dice loss baseline",
    "fg-sampling": "cross-entropy with 80% foreground-centred patches (class re-weighting baseline)",
    "lm": "symmetric large margin (m = 0.2 on every class)",
    "a-lm": "asymmetric large margin (m = 0.2 on the rare classes)",
    "focal": "symmetric focal loss (gamma = 4 on every class)",
    "a-focal": "asymmetric focal loss (gamma = 4, rare classes keep plain CE); the authors' first advice",
    "at": "symmetric adversarial training step (eps = 10)",
    "a-at": "asymmetric adversarial training step (direction from the rare voxels, eps = 10)",
    "mixup": "mixup step with soft labels (alpha = 1)",
    "a-mixup": "asymmetric mixup step (alpha = 1, margin 0.2, hard labels)",
    "a-aug": "asymmetric augmentation (background patches augmented with probability 0.5)",
    "combo": "a-lm + a-focal (gamma = 2) in one loss, plus the a-at and a-mixup steps",
    "combo-authors": "the authors' released combination: a-focal (gamma = 2), no margin, a symmetric "
                     "adversarial step (eps = 10) and the a-mixup step",
}

#: The presets (authors' BraTS settings; see the module docstring and METHOD.md).
TECHNIQUES: dict[str, Technique] = {
    "ce": Technique("ce"),
    "dice": Technique("dice", loss="dice"),
    "fg-sampling": Technique("fg-sampling", fg_fraction=0.8),
    # Margin 0.2: the authors' current BraTS config (marginm = 0.2); earlier configs used 1.
    "lm": Technique("lm", margin=0.2, symmetric=True),
    "a-lm": Technique("a-lm", margin=0.2),
    # gamma 4: the authors' BraTS focal runs ("focalonesidegama = -4", "focal_gama4").
    "focal": Technique("focal", gamma=4.0, symmetric=True),
    "a-focal": Technique("a-focal", gamma=4.0),
    "at": Technique("at", adversarial=True, eps=10.0, xi=1e-5, symmetric=True),
    "a-at": Technique("a-at", adversarial=True, eps=10.0, xi=1e-5),
    # alpha 1 and margin 0.2: the authors' DeepMedic configs (mixuprate = 1, mixupbiasmargin = 0.2).
    "mixup": Technique("mixup", mixup=True, mixup_alpha=1.0, symmetric=True),
    "a-mixup": Technique("a-mixup", mixup=True, mixup_alpha=1.0, mixup_margin=0.2),
    "a-aug": Technique("a-aug", augment=True, asym_aug_p=ASYM_AUG_P),
    # METHOD.md 7. The paper's description: every part asymmetric, margin and focal in one loss.
    "combo": Technique("combo", margin=0.2, gamma=2.0, adversarial=True, eps=10.0, xi=1e-5,
                       mixup=True, mixup_alpha=1.0, mixup_margin=0.2),
    # The authors' released BraTS combination config (trainConfig_bratscore_10percent_basicsetting_
    # combination.cfg): focalonesidegama -2 (asymmetric, gamma 2), marginm 0, Nepsilon 10 with
    # Nside 2 (a SYMMETRIC adversarial direction), mixuprate 1, mixupbiasmargin 0.2.
    "combo-authors": Technique("combo-authors", margin=0.0, gamma=2.0, adversarial=True, eps=10.0, xi=1e-5,
                               adversarial_symmetric=True, mixup=True, mixup_alpha=1.0, mixup_margin=0.2),
}


def get_technique(name: str, **overrides: Any) -> Technique:
    """A preset by name, with fields replaced by ``overrides`` (validated again).

    Example:
        >>> get_technique("a-focal", gamma=2.0).gamma
        2.0

    Raises:
        InputError: an unknown name (the message lists the presets), an unknown override
            (the message lists the fields), or an invalid value.
    """
    if name not in TECHNIQUES:
        raise InputError(f"unknown technique {name!r}; expected one of: {', '.join(TECHNIQUES)}")
    known = {f.name for f in dataclasses.fields(Technique)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputError(f"unknown technique setting(s) {unknown}; expected some of {sorted(known)}")
    if not overrides:
        return TECHNIQUES[name]
    return dataclasses.replace(TECHNIQUES[name], **overrides)
