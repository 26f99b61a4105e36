#!/usr/bin/env python3
"""Does a model mark the oedema as tumour core on an unlabelled real scan? A look, not a score.

On ``../shared/data/external/BraTS-GLI-00001-000`` (raw intensities, BraTS 2023 names, no label),
segment with the model's operating point and compare the mask with the regions a reader would
check first, inside the brain mask (each channel z-scored in the brain, as the engine does):

- FLAIR-bright: FLAIR z > 1 (oedema and tumour together, the whole-tumour proxy);
- enhancing: T1c z > 1 (the enhancing rim of the core);
- the mask's volume, its share inside FLAIR-bright, and the share of the FLAIR-bright region
  that it covers; ``external.png`` shows the mask and the lesion on three axial slices.

A core mask covers a minority of the FLAIR-bright region and overlaps the enhancing voxels; a mask
that covers most of the FLAIR-bright region is marking oedema, and one outside it is marking
something else (look at the figure).

    recipes/starter/external_check.py --model asymseg-starter-deepmedic --out /tmp/external
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "AsymSeg"))

from asymseg.io import discover_case, load_case  # noqa: E402
from asymseg.operating import components  # noqa: E402


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
    flair_bright = (case.image[0] > 1.0) & brain
    enhancing = (case.image[1] > 1.0) & brain
    voxel_ml = float(np.prod(case.geometry.spacing)) / 1000.0
    bright_main = flair_bright
    if flair_bright.any():  # the largest FLAIR-bright component: the lesion, not scattered bright voxels
        labelled, counts = components(flair_bright)
        bright_main = labelled == 1 + int(np.argmax(counts))
    report = {
        "model": args.model,
        "case": args.case,
        "brain_ml": float(brain.sum()) * voxel_ml,
        "core_ml": float(core.sum()) * voxel_ml,
        "flair_bright_ml": float(bright_main.sum()) * voxel_ml,
        "enhancing_in_flair_bright_ml": float((enhancing & bright_main).sum()) * voxel_ml,
        "core_inside_flair_bright": float((core & bright_main).sum() / max(core.sum(), 1)),
        "flair_bright_covered_by_core": float((core & bright_main).sum() / max(bright_main.sum(), 1)),
        "enhancing_covered_by_core": float((core & enhancing & bright_main).sum()
                                           / max((enhancing & bright_main).sum(), 1)),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    figure(case.image, core, bright_main, out / "external.png", title=Path(args.model).name)
    print(json.dumps(report, indent=2))


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
