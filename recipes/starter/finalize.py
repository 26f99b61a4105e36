"""Write the starter model's card from the two training stages of ``train.sh``, then verify it.

The fine-tuned model folder already holds the weights and a card written by ``asymseg finetune``;
this script gives it its registry name and a card that a user can read without the run folders:
the data of both stages (case ids), the technique, the iterations, the validation numbers, the
compute used, the licence note and what to cite. Absolute paths of the work folder are left out.

    python recipes/starter/finalize.py --name asymseg-starter-deepmedic --pretrained WORK/pretrained \
        --finetuned WORK/finetuned --pretrain-result WORK/pretrain-result.json \
        --finetune-result WORK/finetune-result.json --out WORK/asymseg-starter-deepmedic
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

LICENSE_NOTE = (
    "Trained partly on BRATS 2015 data (licence CC BY-NC-SA 3.0 Switzerland): non-commercial use only; "
    "derived works share alike; cite Menze et al., IEEE TMI 2015 and the DeepMedic repository as the source "
    "of the cases. Research use only, not for clinical decisions.")
CITATIONS = [
    "Z. Li, K. Kamnitsas, B. Glocker. Overfitting of neural nets under class imbalance: analysis and "
    "improvements for segmentation. MICCAI 2019. arXiv:1907.10982",
    "K. Kamnitsas et al. Efficient multi-scale 3D CNN with fully connected CRF for accurate brain lesion "
    "segmentation. Medical Image Analysis 36, 2017 (DeepMedic)",
    "B. H. Menze et al. The Multimodal Brain Tumor Image Segmentation Benchmark (BRATS). IEEE TMI 34(10), 2015",
]
DATA_SOURCE = (
    "BRATS 2015 training cases brats_2013_pat0005_1 and brats_2013_pat0006_1 (FLAIR, T1c, expert labels), "
    "as redistributed in the examples of the DeepMedic repository (github.com/deepmedic/deepmedic, "
    "examples/dataForExamples/brats2015TrainingData/train)")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _metrics(validation: dict[str, Any] | None) -> dict[str, Any] | None:
    if not validation:
        return None
    keep = ("dsc", "sensitivity", "precision", "specificity", "hd95")
    return {k: (round(float(v), 4) if v is not None else None) for k, v in validation.items() if k in keep}


def _stage(card: Any, result: dict[str, Any], config_file: str) -> dict[str, Any]:
    prov = dict(card.provenance)
    return {
        "config": f"recipes/starter/{config_file}",
        "settings": _read_json(HERE / config_file),
        "data": prov.get("data"),
        "technique": prov.get("technique"),
        "iterations": result.get("iterations"),
        "selected_iteration": result.get("best_iteration"),
        "validation": _metrics(result.get("best_metrics")),
        "validation_per_case": [dict(case_id=c.get("case_id"), **_metrics(c))
                                for c in (result.get("last_validation") or {}).get("cases", [])],
        "train_seconds": round(float(result.get("train_seconds") or 0.0), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--phantoms", type=Path, required=True)
    parser.add_argument("--pretrained", type=Path, required=True)
    parser.add_argument("--finetuned", type=Path, required=True)
    parser.add_argument("--pretrain-result", type=Path, required=True)
    parser.add_argument("--finetune-result", type=Path, required=True)
    parser.add_argument("--seconds", default="", help="stage=seconds,... wall times measured by train.sh")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--note", default=None, help="a note on the compute (e.g. other load on the machine)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    import torch

    from asymseg.modelfile import CARD_FILE, WEIGHTS_FILE, load_model, read_card, write_card

    pretrained, finetuned = read_card(args.pretrained), read_card(args.finetuned)
    pre_result, fine_result = _read_json(args.pretrain_result), _read_json(args.finetune_result)
    pre_stage = _stage(pretrained, pre_result, "pretrain.json")
    fine_stage = _stage(finetuned, fine_result, "finetune.json")
    pre_stage["data"] = dict(pre_stage["data"] or {}, generator="asymseg.phantom", seed=2015,
                             size_xyz=_read_json(args.phantoms / "phantom.json")["cases"][0]["size_xyz"])
    fine_stage["data"] = dict(fine_stage["data"] or {}, source=DATA_SOURCE, label_convention="brats2015")
    device = "cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu"
    seconds = {k: int(v) for k, _, v in (p.partition("=") for p in args.seconds.split(",") if p)}
    validation = fine_stage["validation"]
    val_ids = (fine_stage["data"] or {}).get("val", [])
    description = (
        f"Original DeepMedic (Kamnitsas et al. 2017), FLAIR + T1c, binary tumour core. Pre-trained on "
        f"{len(pre_stage['data'].get('train', []))} phantom cases (ce, {pre_stage['iterations']} iterations), "
        f"fine-tuned on 1 BRATS 2015 case with the asymmetric combination (combo, "
        f"{fine_stage['iterations']} iterations). Unseen-case DSC "
        f"{validation['dsc'] if validation else 'n/a'} on {', '.join(val_ids) or '-'}. "
        "A starting point for fine-tuning on your own cases, not a clinical model.")
    if args.smoke:
        description = "SMOKE RUN (toy scale, not a usable model). " + description
    provenance = {
        "recipe": "recipes/starter/train.sh" + (" --smoke" if args.smoke else ""),
        "data": {"train": fine_stage["data"].get("train"), "val": val_ids,
                 "pretrain_train": pre_stage["data"].get("train"), "pretrain_val": pre_stage["data"].get("val")},
        "technique": fine_stage["technique"],
        "iterations": {"pretrain": pre_stage["iterations"], "finetune": fine_stage["iterations"]},
        "validation": validation,
        "validation_note": (
            f"measured once, after the last fine-tuning iteration, on {', '.join(val_ids) or '-'}, a case the "
            "model never saw; it was not used to select the model. One case: an indication, not an estimate "
            "of performance on other sites."),
        "stages": {"pretrain": pre_stage, "finetune": fine_stage},
        "base_model": None,
        "init_seed": 2015,
        "compute": {"seconds": seconds, "threads": args.threads, "torch": torch.__version__,
                    "python": platform.python_version(), "device": device,
                    "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s) visible",
                    **({"note": args.note} if args.note else {})},
        "license_note": LICENSE_NOTE,
        "cite": CITATIONS,
    }
    card = finetuned.replace(name=args.name, description=description, provenance=provenance, created="")

    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copyfile(args.finetuned / WEIGHTS_FILE, out / WEIGHTS_FILE)
    from asymseg.modelfile import now_iso

    write_card(out, card.replace(created=now_iso()))
    loaded = load_model(out)  # checks the SHA256, the tensors and the architecture
    print(f"wrote {out / CARD_FILE}: {loaded.card.architecture}, channels {','.join(loaded.card.channels)}, "
          f"validation {json.dumps(validation)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[1] / "AsymSeg"))
    sys.exit(main())
