#!/usr/bin/env python3
"""Does a model mark the oedema as tumour core on an unlabelled real scan? A look, not a score.

On ``../shared/data/external/BraTS-GLI-00001-000`` (raw intensities, BraTS 2023 names, no label),
segment with the model's operating point and compare the mask with the regions a reader would
check first, inside the brain mask (each channel z-scored in the brain, as the engine does):

- the lesion (the whole-tumour proxy): FLAIR z > 1 at least ``EDGE_MM`` inside the brain's edge
  (the cortical rim of a raw scan is FLAIR-bright too), opened by one voxel, its largest component;
- its neighbourhood: the lesion grown by ``NEAR_MM``, where the enhancing rim and the necrosis
  of the core lie when they are not FLAIR-bright themselves;
- enhancing: T1c z > 1 in that neighbourhood (the enhancing rim of the core);
- the mask's volume, its share inside the neighbourhood (a mask elsewhere marks something else:
  vessels, cortex), the share of the lesion it covers (most of it: the oedema is marked) and the
  share of the enhancing voxels it covers; ``external.png`` shows the mask and the lesion on
  three axial slices.

A core mask lies in the neighbourhood, covers a minority of the lesion and most of the enhancing
voxels. A look, not a score: the scan has no label.

    recipes/starter/external_check.py --model asymseg-starter-deepmedic --out /tmp/external
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "AsymSeg"))

from asymseg.io import discover_case, load_case  # noqa: E402
from asymseg.operating import components  # noqa: E402

#: The lesion is looked for this far inside the brain mask's edge (mm).
EDGE_MM = 5.0
#: The lesion's neighbourhood reaches this far beyond it (mm).
NEAR_MM = 10.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True, help="folder for the mask and the report")
    parser.add_argument("--case", default=str(REPO.parent / "shared" / "data" / "external" / "BraTS-GLI-00001-000"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("extra", nargs="*", help="further segment options, after --")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mask_path = out / "core.nii.gz"
    python = REPO / ".venv" / "bin" / "python"
    subprocess.run([str(python if python.exists() else sys.executable), "-m", "asymseg", "--threads",
                    str(args.threads), "segment", "--model", args.model, "--case", args.case, "--output",
                    str(mask_path), "--progress", "none", *args.extra], check=True)
    import SimpleITK as sitk

    case = load_case(discover_case(args.case), channels=["flair", "t1c"])
    core = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path))) > 0
    brain = case.mask
    spacing = tuple(float(v) for v in case.geometry.spacing)
    lesion, near = lesion_regions(case.image[0], brain, spacing)
    enhancing = (case.image[1] > 1.0) & near
    voxel_ml = float(np.prod(spacing)) / 1000.0
    report = {
        "model": args.model,
        "case": args.case,
        "brain_ml": float(brain.sum()) * voxel_ml,
        "core_ml": float(core.sum()) * voxel_ml,
        "flair_bright_ml": float(lesion.sum()) * voxel_ml,
        "enhancing_near_lesion_ml": float(enhancing.sum()) * voxel_ml,
        "core_near_lesion": float((core & near).sum() / max(core.sum(), 1)),
        "flair_bright_covered_by_core": float((core & lesion).sum() / max(lesion.sum(), 1)),
        "enhancing_covered_by_core": float((core & enhancing).sum() / max(enhancing.sum(), 1)),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    figure(case.image, core, lesion, out / "external.png", title=Path(args.model).name)
    print(json.dumps(report, indent=2))


def lesion_regions(flair: np.ndarray, brain: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The FLAIR-bright lesion and its neighbourhood (bool arrays like ``brain``).

    Args:
        flair: FLAIR z-scored in the brain, (D, H, W).
        brain: bool brain mask.
        spacing: voxel size (x, y, z) in mm.
    """
    import SimpleITK as sitk

    def image(mask: np.ndarray) -> sitk.Image:
        out = sitk.GetImageFromArray(mask.astype(np.uint8))
        out.SetSpacing(tuple(float(v) for v in spacing))
        return out

    depth = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(image(brain), insideIsPositive=True,
                                                                  squaredDistance=False, useImageSpacing=True))
    bright = (flair > 1.0) & brain & (depth > EDGE_MM)
    bright = sitk.GetArrayFromImage(sitk.BinaryMorphologicalOpening(image(bright), [1, 1, 1])) > 0
    if not bright.any():
        return bright, bright.copy()
    labelled, counts = components(bright)
    lesion = labelled == 1 + int(np.argmax(counts))
    distance = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(image(lesion), insideIsPositive=False,
                                                                     squaredDistance=False, useImageSpacing=True))
    return lesion, (distance <= NEAR_MM) & brain


def figure(image: np.ndarray, core: np.ndarray, lesion: np.ndarray, path: Path, *, title: str) -> None:
    """T1c and FLAIR on three axial slices (the lesion's largest, the mask's largest, and the
    mask's where they differ most), the mask outlined in red and the FLAIR-bright lesion in yellow."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def largest(mask: np.ndarray) -> int:
        return int(np.argmax(mask.sum(axis=(1, 2)))) if mask.any() else image.shape[1] // 2

    away = core & ~lesion
    slices = sorted({largest(lesion), largest(core), largest(away)})
    fig = Figure(figsize=(3.2 * len(slices), 6.4))
    FigureCanvasAgg(fig)
    for column, z in enumerate(slices):
        for row, (channel, name, top) in enumerate(((1, "T1c", 5.0), (0, "FLAIR", 4.0))):
            ax = fig.add_subplot(2, len(slices), row * len(slices) + column + 1)
            ax.imshow(image[channel, z], cmap="gray", vmin=-2.0, vmax=top)
            for mask, colour in ((lesion, "yellow"), (core, "red")):
                if mask[z].any():
                    ax.contour(mask[z], [0.5], colors=colour, linewidths=0.7)
            ax.set_title(f"{name}, axial slice {z}", fontsize=9)
            ax.set_axis_off()
    fig.suptitle(f"{title}: core mask (red), FLAIR-bright lesion (yellow)", fontsize=10)
    fig.tight_layout()
    fig.savefig(str(path), dpi=90)


if __name__ == "__main__":
    main()
