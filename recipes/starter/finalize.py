"""Write the starter model's card from the stages of ``train.sh``, then verify it.

The final model folder already holds the weights, a card written by ``asymseg finetune`` and the
operating point written by ``asymseg operating-point``; this script gives it its registry name and
a card a user can read without the work folder: the data (case ids and source), the technique and
iterations, the leave-one-out numbers behind every choice, the compute used, the licence note and
what to cite. Absolute paths of the work folder are left out.

    python recipes/starter/finalize.py --name asymseg-starter-deepmedic --final WORK/final \
        --final-result WORK/final-result.json --loo-eval WORK/loo-eval.json --out WORK/asymseg-starter-deepmedic

A ``compare`` entry named ``<technique>-phantoms`` is that technique from the phantom base
(``phantom_base.sh``) instead of from scratch; the card records the entry (``provenance.entry``)
and, for such an entry, the base (``provenance.base_model``).

When techniques are added to ``final.json``'s ``compare`` after the model was made (and the rule
still picks the shipped technique), ``--refresh MODEL_DIR --loo-eval ALL.json`` rewrites only the
card's ``settings`` and ``leave_one_out`` record (table and ranking) from the scores of every
technique; the weights, the operating point and the rest of the card are left as they are.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

LICENSE_NOTE = (
    "Trained on BRATS 2015 data (licence CC BY-NC-SA 3.0 Switzerland): non-commercial use only; "
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
FOLDS = ("5to6", "6to5")
METRICS = ("dsc", "sensitivity", "precision")
#: A compare entry with this suffix is its technique fine-tuned from the phantom base.
PHANTOM_SUFFIX = "-phantoms"


def entry_name(technique: str, base_model: str | None) -> str:
    """The compare entry of a leave-one-out run: its technique, with ``PHANTOM_SUFFIX`` when the run
    started from a base model."""
    return technique + (PHANTOM_SUFFIX if base_model else "")


def phantom_base_record(base_dir: Path) -> dict[str, Any]:
    """What the card says of the phantom base (``phantom_base.sh``'s ``DIR/base``, its phantoms in
    ``DIR/phantoms``): its recipe, phantoms and training, without paths."""
    from asymseg.modelfile import read_card

    base = read_card(base_dir)
    manifest_path = base_dir.parent / "phantoms" / "phantom.json"
    if not manifest_path.exists():
        raise SystemExit(f"finalize.py: {manifest_path}: missing (the phantoms of the base {base_dir})")
    manifest = _read_json(manifest_path)
    return {
        "name": "phantom base",
        "weights_sha256": base.weights_sha256,
        "recipe": "recipes/starter/phantom_base.sh",
        "phantoms": {**{k: manifest.get(k) for k in ("generator_version", "seed", "size_xyz", "spacing_xyz", "channels")},
                     "vessels": bool(manifest.get("vessels", False)), "cases": len(manifest.get("cases", []))},
        "technique": (base.provenance.get("technique") or {}).get("name"),
        "iterations": base.provenance.get("iterations"),
        "label_convention": "brats2017",
    }


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(float(row[k]), 4) if row.get(k) is not None else None)
            for k in (*METRICS, "volume_ml", "oedema_marked") if k in row}


def leave_one_out_table(loo: dict[str, Any], stop_at: int) -> dict[str, Any]:
    """Per technique scored at ``stop_at``: each fold's held-out numbers at the argmax, with the
    operating point chosen on the other fold (cross_fold) and on both folds (both_folds)."""
    table = {}
    for key, row in sorted(loo["snapshots"].items()):
        if row["iteration"] != stop_at or key.endswith("+tta"):
            continue
        table[row["technique"]] = {
            fold: {"case_id": row["folds"][fold]["case_id"],
                   "argmax": _rounded(row["folds"][fold]["argmax"]),
                   "cross_fold": _rounded(row["folds"][fold]["cross_fold"]),
                   "both_folds": _rounded(row["folds"][fold]["both_folds"])}
            for fold in FOLDS}
    return table


def ranking(loo: dict[str, Any], techniques: list[str], score_at: list[int]) -> list[dict[str, Any]]:
    """The selection rule of final.json: each technique's mean cross-fold DSC (operating point
    from the other fold) over both folds and the ``score_at`` snapshots, best first."""
    rows = []
    for technique in techniques:
        values = [row["folds"][f]["cross_fold"]["dsc"] for row in loo["snapshots"].values()
                  if row["technique"] == technique and row["iteration"] in score_at and not row.get("tta_considered")
                  for f in FOLDS]
        if len(values) == 2 * len(score_at):
            rows.append({"technique": technique, "mean_cross_fold_dsc": round(sum(values) / len(values), 4),
                         "snapshots": list(score_at)})
    return sorted(rows, key=lambda r: -r["mean_cross_fold_dsc"])


def _mean(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: round(sum(float(r[k]) for r in rows) / len(rows), 4) if all(r.get(k) is not None for r in rows)
            else None for k in METRICS}


def refresh(model_dir: Path, loo: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a finished card's ``settings`` and ``leave_one_out`` record from ``final.json`` and the
    scores of every compared technique; refuses when the rule would now pick another technique."""
    from asymseg.modelfile import load_model, read_card, write_card

    settings = _read_json(HERE / "final.json")
    card = read_card(model_dir)
    provenance = dict(card.provenance)
    stop_at = int(provenance["iterations"])
    ranked = ranking(loo, list(settings["compare"]), list(settings["score_at"]))
    missing = sorted(set(settings["compare"]) - {r["technique"] for r in ranked})
    if missing:
        raise SystemExit(f"finalize.py: the scores lack {', '.join(missing)} at every snapshot of {settings['score_at']}")
    shipped = provenance.get("entry") or provenance["technique"]["name"]
    if ranked[0]["technique"] != shipped:
        raise SystemExit(f"finalize.py: the rule now picks {ranked[0]['technique']}, not the shipped "
                         f"{shipped}: train the model again (train.sh)")
    record = dict(provenance["leave_one_out"])
    record.update(techniques=leave_one_out_table(loo, stop_at), ranking=ranked)
    provenance.update(settings=settings, leave_one_out=record)
    write_card(model_dir, card.replace(provenance=provenance))
    load_model(model_dir)  # the weights still match the card
    return record


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if "--refresh" in argv:
        parser = argparse.ArgumentParser(description="Refresh a finished card's leave-one-out record.")
        parser.add_argument("--refresh", type=Path, required=True, help="the model folder whose card is rewritten")
        parser.add_argument("--loo-eval", type=Path, required=True, help="the scores of every compared technique")
        args = parser.parse_args(argv)
        record = refresh(args.refresh, _read_json(args.loo_eval))
        print(f"rewrote {args.refresh}: ranking {json.dumps(record['ranking'])}")
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--final", type=Path, required=True)
    parser.add_argument("--final-result", type=Path, required=True)
    parser.add_argument("--loo-eval", type=Path, required=True)
    parser.add_argument("--loo-work", type=Path, action="append", default=[],
                        help="a loo.py folder, for the training times (repeatable)")
    parser.add_argument("--base", type=Path, default=None,
                        help="the phantom base the final model started from (for a -phantoms entry)")
    parser.add_argument("--seconds", default="", help="stage=seconds,... wall times measured by train.sh")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--note", default=None, help="a note on the compute (e.g. other load on the machine)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    import torch

    from asymseg.modelfile import CARD_FILE, WEIGHTS_FILE, load_model, now_iso, read_card, write_card

    settings = _read_json(HERE / "final.json")
    final = read_card(args.final)
    result = _read_json(args.final_result)
    loo = _read_json(args.loo_eval)
    stop_at = int(result.get("iterations") or settings["stop_at"])
    table = leave_one_out_table(loo, stop_at)
    technique = dict(final.provenance.get("technique") or {})
    entry = settings["technique"]
    if entry_name(str(technique.get("name")), str(args.base) if args.base else None) != entry:
        raise SystemExit(f"finalize.py: {args.final} was trained with {technique.get('name')}"
                         f"{' from ' + str(args.base) if args.base else ' from scratch'}, final.json says {entry}")
    chosen = table.get(entry, {})
    validation = _mean([chosen[f]["cross_fold"] for f in FOLDS]) if chosen else None
    point = final.operating_point
    if point is not None and point.validation.get("models"):
        # The fold models by their card names (loo-<technique>-<fold>-<iteration>), not work-folder paths.
        models = [read_card(m).name if Path(m).is_dir() else Path(m).name for m in point.validation["models"]]
        point = dataclasses.replace(point, validation={**point.validation, "models": models})
        final = final.replace(operating_point=point)
    device = "cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu"
    seconds = {k: int(v) for k, _, v in (p.partition("=") for p in args.seconds.split(",") if p)}
    # Wall times of this invocation skip the stages that were already done; the training time
    # of each run comes from its own checkpoint.
    train_seconds = {"final": round(float(result.get("train_seconds") or 0.0))}
    for loo_work in args.loo_work:
        for state in sorted(loo_work.glob("*/*/model.run/checkpoint/state.json")):
            loop = _read_json(state).get("loop") or {}
            fold_settings = _read_json(state.parents[2] / "settings.json")
            name = entry_name(fold_settings["technique"], fold_settings.get("base_model"))
            if name in settings["compare"]:
                train_seconds[f"loo/{name}/{state.parents[2].name}"] = round(float(loop.get("train_seconds") or 0.0))
    per_fold = ", ".join(f"{chosen[f]['case_id']} {chosen[f]['cross_fold']['dsc']}" for f in FOLDS) if chosen else "-"
    base = phantom_base_record(args.base) if args.base else None
    origin = (f"pre-trained on {base['phantoms']['cases']} phantoms ({base['technique']}, {base['iterations']} "
              f"iterations), then trained" if base else "trained from scratch")
    description = (
        f"Original DeepMedic (Kamnitsas et al. 2017), FLAIR + T1c, binary tumour core, {origin} on "
        f"the 2 BRATS 2015 cases with {technique.get('name')} ({stop_at} iterations). Leave-one-out (trained on "
        f"one case, scored on the other, operating point from the other fold): DSC {per_fold}. "
        + (f"Operating point: tumour where dz > {point.threshold:g}, post-processing {point.postprocess}. "
           if point is not None else "")
        + "A starting point for fine-tuning on your own cases, not a clinical model.")
    if args.smoke:
        description = "SMOKE RUN (toy scale, not a usable model). " + description
    provenance = {
        "recipe": "recipes/starter/train.sh" + (" --smoke" if args.smoke else ""),
        "settings": settings,
        "data": {"train": list((final.provenance.get("data") or {}).get("train") or []), "val": [],
                 "source": DATA_SOURCE, "label_convention": "brats2015"},
        "entry": entry,
        "technique": technique,
        "iterations": stop_at,
        "schedule_iterations": settings["iterations"],
        "validation": validation,
        "validation_note": (
            "leave-one-out on the two training cases: the same network, technique and iterations trained on one "
            "case and scored on the other, both ways, with the operating point chosen on the other fold's case; "
            "the mean of the two folds. The shipped model (trained on both) has no unseen labelled case here. "
            "Two cases: an indication, not an estimate of performance on other sites."),
        "leave_one_out": {"iteration": stop_at, "techniques": table,
                          "ranking": ranking(loo, list(settings["compare"]), list(settings["score_at"])),
                          "heuristic": [_rounded(r) | {"case_id": r["case_id"]} for r in loo.get("heuristic", [])]},
        "base_model": base,
        "init_seed": settings["seed"],
        "compute": {"seconds": seconds, "train_seconds": train_seconds, "threads": args.threads, "torch": torch.__version__,
                    "python": platform.python_version(), "device": device,
                    "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s) visible",
                    **({"note": args.note} if args.note else {})},
        "license_note": LICENSE_NOTE,
        "cite": CITATIONS,
    }
    card = final.replace(name=args.name, description=description, provenance=provenance, created="")

    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copyfile(args.final / WEIGHTS_FILE, out / WEIGHTS_FILE)
    write_card(out, card.replace(created=now_iso()))
    loaded = load_model(out)  # checks the SHA256, the tensors and the architecture
    print(f"wrote {out / CARD_FILE}: {loaded.card.architecture}, channels {','.join(loaded.card.channels)}, "
          f"leave-one-out {json.dumps(validation)}, operating point "
          f"{loaded.card.operating_point.describe() if loaded.card.operating_point else 'argmax'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[1] / "AsymSeg"))
    sys.exit(main())
