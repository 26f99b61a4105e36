"""Training data: cases cropped to the brain, and the patch sampler.

Cases are loaded once (z-scored inside the brain mask, 0 outside), mapped to class indices,
and cropped to the bounding box of the brain (and the rare voxels) plus a context margin.

The sampler follows DeepMedic (METHOD.md): a fraction ``fg_fraction`` of the patches is centred
on a rare-class voxel, the rest on a non-rare brain voxel (default 0.5/0.5). A patch is the
network's input for the training output size, centred on the chosen voxel and zero-padded where
it leaves the volume; its label is the output-size region around the same centre.

Randomness is split in two, so a batch can be replayed and split across processes:
:meth:`PatchSampler.draw` uses a numpy ``Generator`` to pick the case, centre and augmentation
of every patch of a GLOBAL batch (a :class:`PatchDraw`), and :meth:`PatchSampler.extract` turns
any subset of a draw into arrays deterministically. Every process draws the same global batch
from the same generator state and extracts only its own slice.

Augmentation (optional): random flips along each axis (probability 0.5 each) and a per-channel
intensity jitter ``x * s + t`` inside the brain, ``s ~ U(1 - scale, 1 + scale)``,
``t ~ N(0, shift)``. Asymmetric augmentation (METHOD.md §6, TMI): patches centred on a rare voxel
are always augmented, background-centred patches only with probability ``background_augment_p``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from asymseg.errors import InputError
from asymseg.target import TargetSpec

log = logging.getLogger(__name__)

#: Default intensity jitter: scale ~ U(1 - 0.1, 1 + 0.1), shift ~ N(0, 0.1) (z-scored units).
INTENSITY_SCALE = 0.1
INTENSITY_SHIFT = 0.1


@dataclass
class TrainingCase:
    """One case prepared for patch sampling.

    Attributes:
        case_id: the case's id.
        image: float32 (C, d, h, w), the z-scored channels cropped to the brain box + margin.
        classes: uint8 (d, h, w) class indices (``TargetSpec.class_map``) on the same crop.
        mask: bool (d, h, w) brain mask on the same crop.
        rare_voxels: flat indices (into the crop) of rare-class voxels.
        other_voxels: flat indices of non-rare brain voxels.
        offset: (z, y, x) voxel origin of the crop in the full (D, H, W) volume.
    """

    case_id: str
    image: np.ndarray
    classes: np.ndarray
    mask: np.ndarray
    rare_voxels: np.ndarray
    other_voxels: np.ndarray
    offset: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.classes.shape)  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.image, self.classes, self.mask, self.rare_voxels, self.other_voxels))


def brain_box(mask: np.ndarray, margin: int | Sequence[int]) -> tuple[slice, slice, slice]:
    """Bounding box of ``mask`` grown by ``margin`` voxels per side, clipped to the volume.

    Args:
        mask: bool (D, H, W), not empty.
        margin: voxels added on each side (one value or one per axis).
    """
    margins = [int(margin)] * 3 if np.isscalar(margin) else [int(m) for m in margin]
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        low = max(int(hits[0]) - margins[axis], 0)
        high = min(int(hits[-1]) + 1 + margins[axis], mask.shape[axis])
        box.append(slice(low, high))
    return tuple(box)  # type: ignore[return-value]


def prepare_case(case_id: str, image: np.ndarray, label: np.ndarray, mask: np.ndarray, target: TargetSpec,
                 *, margin: int | Sequence[int]) -> TrainingCase:
    """Map labels to classes and crop a loaded case to its brain (and rare voxels) plus ``margin``.

    Args:
        case_id: the case's id (for messages).
        image: float32 (C, D, H, W), normalised.
        label: int (D, H, W) source label values.
        mask: bool (D, H, W) brain mask.
        target: maps label values to classes and says which are rare.
        margin: voxels kept around the box on each side (the network's context, so patches
            centred near the brain's edge see real voxels rather than padding).

    Returns:
        The :class:`TrainingCase` (arrays are copies; the inputs can be freed).
    """
    if image.ndim != 4 or label.shape != image.shape[1:] or mask.shape != image.shape[1:]:
        raise ValueError(f"{case_id}: expected image (C, D, H, W) with label and mask (D, H, W); "
                         f"got {image.shape}, {label.shape}, {mask.shape}")
    if target.num_classes > 255:
        raise ValueError(f"{case_id}: at most 255 classes are supported, got {target.num_classes}")
    rare = target.rare_mask(label)
    box = brain_box(mask | rare, margin)
    classes = target.class_map(label[box]).astype(np.uint8)
    crop_mask = np.ascontiguousarray(mask[box])
    crop_rare = rare[box]
    return TrainingCase(
        case_id=case_id,
        image=np.ascontiguousarray(image[(slice(None), *box)], dtype=np.float32),
        classes=classes,
        mask=crop_mask,
        rare_voxels=np.flatnonzero(crop_rare),
        other_voxels=np.flatnonzero(crop_mask & ~crop_rare),
        offset=tuple(s.start for s in box),  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class SamplerSettings:
    """How patches are drawn.

    Args:
        input_size: network input patch (D, H, W).
        output_size: label patch (D, H, W) = the network's output for ``input_size``.
        fg_fraction: fraction of patches centred on a rare-class voxel (paper: 0.5; "more weight" 0.8).
        augment: apply flips and intensity jitter.
        background_augment_p: probability that a background-centred patch is augmented (1 =
            every patch, the symmetric case; < 1 = asymmetric augmentation). Rare-centred patches
            are always augmented when ``augment`` is set.
        intensity_scale: half-width of the multiplicative jitter.
        intensity_shift: standard deviation of the additive jitter.
    """

    input_size: tuple[int, int, int]
    output_size: tuple[int, int, int]
    fg_fraction: float = 0.5
    augment: bool = False
    background_augment_p: float = 1.0
    intensity_scale: float = INTENSITY_SCALE
    intensity_shift: float = INTENSITY_SHIFT

    def __post_init__(self) -> None:
        for name in ("input_size", "output_size"):
            size = tuple(int(s) for s in getattr(self, name))
            if len(size) != 3 or min(size) < 1:
                raise ValueError(f"{name} must be 3 positive integers, got {getattr(self, name)!r}")
            object.__setattr__(self, name, size)
        for i, o in zip(self.input_size, self.output_size):
            if i < o or (i - o) % 2:
                raise ValueError(f"the input patch {self.input_size} must exceed the output patch "
                                 f"{self.output_size} by an even number of voxels per axis")
        if not 0.0 <= self.fg_fraction <= 1.0:
            raise ValueError(f"fg_fraction must be in [0, 1], got {self.fg_fraction}")
        if not 0.0 <= self.background_augment_p <= 1.0:
            raise ValueError(f"background_augment_p must be in [0, 1], got {self.background_augment_p}")
        if self.intensity_scale < 0 or self.intensity_shift < 0:
            raise ValueError("intensity_scale and intensity_shift must be >= 0")


@dataclass(frozen=True)
class PatchDraw:
    """The random choices of a batch of patches (replayable; sliceable across processes).

    Attributes (B = batch size, C = channels):
        case: (B,) index of the case.
        centre: (B, 3) centre voxel (z, y, x) in the case's crop.
        foreground: (B,) True where the centre is a rare-class voxel.
        augmented: (B,) True where the patch is augmented.
        flips: (B, 3) flip along each axis (only where augmented).
        scale: (B, C) intensity factors (only where augmented).
        shift: (B, C) intensity offsets (only where augmented).
    """

    case: np.ndarray
    centre: np.ndarray
    foreground: np.ndarray
    augmented: np.ndarray
    flips: np.ndarray
    scale: np.ndarray
    shift: np.ndarray

    def __len__(self) -> int:
        return int(self.case.shape[0])

    def subset(self, index: slice | np.ndarray) -> PatchDraw:
        """The draws of some patches, e.g. ``draw.subset(slice(rank * b, (rank + 1) * b))``."""
        return PatchDraw(*(getattr(self, f)[index] for f in self.__dataclass_fields__))


@dataclass
class PatchSampler:
    """Draws and extracts training patches from prepared cases (see the module docstring).

    Args:
        cases: the prepared training cases (same channel count).
        settings: patch geometry, foreground fraction and augmentation.

    Raises:
        InputError: no case has a rare-class voxel while ``fg_fraction > 0``, or no case has a
            non-rare brain voxel while ``fg_fraction < 1``.
    """

    cases: Sequence[TrainingCase]
    settings: SamplerSettings
    _fg_cases: np.ndarray = field(init=False, repr=False)
    _bg_cases: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.cases:
            raise InputError("no training cases")
        channels = {c.image.shape[0] for c in self.cases}
        if len(channels) != 1:
            raise ValueError(f"training cases have different channel counts: {sorted(channels)}")
        self._fg_cases = np.array([i for i, c in enumerate(self.cases) if c.rare_voxels.size], dtype=np.int64)
        self._bg_cases = np.array([i for i, c in enumerate(self.cases) if c.other_voxels.size], dtype=np.int64)
        if self.settings.fg_fraction > 0 and not self._fg_cases.size:
            ids = ", ".join(c.case_id for c in self.cases)
            raise InputError(f"no rare-class (tumour) voxels in any training case ({ids}); "
                             "check the label convention or --foreground-labels")
        if self.settings.fg_fraction < 1 and not self._bg_cases.size:
            raise InputError("no non-rare brain voxels in any training case")

    @property
    def channels(self) -> int:
        return int(self.cases[0].image.shape[0])

    def foreground_count(self, batch_size: int) -> int:
        """Patches of a batch centred on a rare voxel: ``round(batch_size * fg_fraction)``."""
        return int(round(batch_size * self.settings.fg_fraction))

    def draw(self, batch_size: int, rng: np.random.Generator) -> PatchDraw:
        """Draw the random choices of ``batch_size`` patches.

        Exactly ``round(batch_size * fg_fraction)`` patches are rare-centred; their order is
        shuffled so every slice of the batch mixes both kinds. A rare-centred patch picks a case
        uniformly among the cases with rare voxels, then one of its rare voxels uniformly; a
        background patch does the same over non-rare brain voxels. The number of values drawn
        from ``rng`` depends only on ``batch_size``, so streams stay aligned.
        """
        s = self.settings
        n_fg = self.foreground_count(batch_size)
        foreground = rng.permutation(np.arange(batch_size) < n_fg)
        pick_case = rng.random(batch_size)
        pick_voxel = rng.random(batch_size)
        case = np.empty(batch_size, dtype=np.int64)
        centre = np.empty((batch_size, 3), dtype=np.int64)
        for b in range(batch_size):
            pool = self._fg_cases if foreground[b] else self._bg_cases
            index = int(pool[min(int(pick_case[b] * pool.size), pool.size - 1)])
            tc = self.cases[index]
            voxels = tc.rare_voxels if foreground[b] else tc.other_voxels
            flat = int(voxels[min(int(pick_voxel[b] * voxels.size), voxels.size - 1)])
            case[b] = index
            centre[b] = np.unravel_index(flat, tc.shape)
        coin = rng.random(batch_size)
        flips = rng.random((batch_size, 3)) < 0.5
        scale = rng.uniform(1.0 - s.intensity_scale, 1.0 + s.intensity_scale, (batch_size, self.channels))
        shift = rng.normal(0.0, 1.0, (batch_size, self.channels)) * s.intensity_shift
        augmented = np.zeros(batch_size, dtype=bool)
        if s.augment:
            augmented = foreground | (coin < s.background_augment_p)
        return PatchDraw(case=case, centre=centre, foreground=foreground, augmented=augmented, flips=flips,
                         scale=scale.astype(np.float32), shift=shift.astype(np.float32))

    def extract(self, draw: PatchDraw) -> tuple[np.ndarray, np.ndarray]:
        """Cut the patches of ``draw`` (deterministic).

        Returns:
            ``x``: float32 (B, C, *input_size) zero-padded input patches;
            ``y``: int64 (B, *output_size) class indices (0 where the patch leaves the volume).
        """
        s = self.settings
        batch = len(draw)
        x = np.zeros((batch, self.channels, *s.input_size), dtype=np.float32)
        y = np.zeros((batch, *s.output_size), dtype=np.int64)
        half_out = [o // 2 for o in s.output_size]
        context = [(i - o) // 2 for i, o in zip(s.input_size, s.output_size)]
        for b in range(batch):
            tc = self.cases[int(draw.case[b])]
            out_start = [int(c) - h for c, h in zip(draw.centre[b], half_out)]
            in_start = [o - c for o, c in zip(out_start, context)]
            _copy_window(tc.image, in_start, x[b])
            _copy_window(tc.classes[None], out_start, y[b][None])
            if draw.augmented[b]:
                brain = np.zeros((1, *s.input_size), dtype=bool)
                _copy_window(tc.mask[None], in_start, brain)
                for c in range(self.channels):
                    channel = x[b, c]
                    channel[brain[0]] = channel[brain[0]] * draw.scale[b, c] + draw.shift[b, c]
                axes = tuple(a for a in range(3) if draw.flips[b, a])
                if axes:
                    x[b] = np.flip(x[b], axis=tuple(a + 1 for a in axes)).copy()
                    y[b] = np.flip(y[b], axis=axes).copy()
        return x, y


def _copy_window(volume: np.ndarray, start: Sequence[int], out: np.ndarray) -> None:
    """Copy ``volume[:, start:start+size]`` into ``out`` (C, *size); parts outside stay as they are."""
    size = out.shape[1:]
    src, dst = [slice(None)], [slice(None)]
    for axis in range(3):
        lo = max(int(start[axis]), 0)
        hi = min(int(start[axis]) + size[axis], volume.shape[axis + 1])
        if hi <= lo:
            return
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(start[axis]), hi - int(start[axis])))
    out[tuple(dst)] = volume[tuple(src)]


def hold_out(case_ids: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split case indices into (train, validation) for an automatic hold-out.

    ``round(fraction * n)`` cases (at least 1 when ``fraction > 0``) are held out, chosen by a
    generator seeded with ``seed``; at least one case is kept for training.

    Raises:
        InputError: a hold-out was asked for with a single case.
    """
    n = len(case_ids)
    if fraction <= 0:
        return list(range(n)), []
    if n < 2:
        raise InputError(f"--val-fraction {fraction}: needs at least 2 training cases to hold one out, got {n}")
    k = min(max(1, int(round(fraction * n))), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    val = sorted(int(i) for i in order[:k])
    return [i for i in range(n) if i not in val], val
