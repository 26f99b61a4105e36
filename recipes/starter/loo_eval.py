#!/usr/bin/env python3
"""Score the leave-one-out runs of ``loo.py``: every snapshot on its held-out case, with and
without an operating point, beside the two-threshold heuristic.

For each technique, fold and snapshot iteration, the snapshot's dz map on the held-out case gives
DSC, sensitivity and precision at the argmax. Per technique and iteration, two operating points
(threshold, post-processing, and with ``--tta`` mirror TTA) are then reported:

- cross-fold (honest): each fold's case is thresholded with the point chosen on the OTHER fold's
  held-out case, so no case scores a choice made on itself;
- both folds (what the shipped model gets): one point chosen on both held-out cases with
  nnU-Net's rule (:func:`asymseg.operating.choose_operating_point`); optimistic as an estimate.

A model trained on neither case (``--model NAME=DIR``, e.g. the phantom base of
``phantom_base.sh``) is scored the same way on both cases: its "5to6" row is pat0006 with the
point chosen on pat0005, its "6to5" row pat0005 with the point chosen on pat0006. Such a row is
marked ``held_out_both``: one model scored twice, not a leave-one-out pair, and not a candidate of
``final.json``'s rule, which compares networks trained on the real cases.

The heuristic: FLAIR z > 1.0 and T1c z > 0.5 inside the brain mask, largest component (the
z-scores of the case's own brain), as a reference a network must beat.

    recipes/starter/loo_eval.py --work /work/loo/r1 --out /work/loo/r1-eval.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "AsymSeg"))

from asymseg.calibrate import validation_maps  # noqa: E402
from asymseg.io import discover_case, load_case  # noqa: E402
from asymseg.modelfile import LoadedModel, load_model  # noqa: E402
from asymseg.operating import ValidationMaps, _dsc, choose_operating_point, postprocess, rare_mask  # noqa: E402
from asymseg.target import TargetSpec  # noqa: E402

FOLDS = ("5to6", "6to5")
#: The case each fold scores.
HELD_OUT = ("brats_2013_pat0006_1", "brats_2013_pat0005_1")


def heuristic(case_dir: Path) -> dict:
    """The two-threshold rule on one labelled case: DSC, sensitivity, precision."""
    files = discover_case(case_dir)
    case = load_case(files, channels=["flair", "t1c"])
    target = TargetSpec.tumour_core("brats2015")
    reference = target.rare_mask(case.label)
    predicted = (case.image[0] > 1.0) & (case.image[1] > 0.5) & case.mask
    predicted = postprocess(predicted, "largest", case.geometry.spacing)
    dsc, sens, prec = _dsc(predicted, reference)
    swollen = case.label == 2
    return {"case_id": files.case_id, "dsc": dsc, "sensitivity": sens, "precision": prec,
            "oedema_marked": float((predicted & swollen).sum() / max(swollen.sum(), 1))}


def snapshot_model(fold_dir: Path, snapshot: Path) -> LoadedModel:
    from safetensors.torch import load_file

    model = load_model(fold_dir / "model")
    model.net.load_state_dict(load_file(str(snapshot)))
    model.net.eval()
    return model


_OEDEMA: dict[str, np.ndarray] = {}


def oedema(case_dir: Path) -> np.ndarray:
    """The oedema voxels (BRATS 2015 label 2) of a labelled case."""
    key = str(case_dir)
    if key not in _OEDEMA:
        _OEDEMA[key] = load_case(discover_case(case_dir), channels=["flair", "t1c"]).label == 2
    return _OEDEMA[key]


def score(maps: ValidationMaps, threshold: float, method: str, tta: bool, case_dir: Path) -> dict:
    dz = maps.decision_tta if tta else maps.decision
    predicted = postprocess(rare_mask(dz, maps.mask, threshold), method, maps.spacing)
    dsc, sens, prec = _dsc(predicted, maps.reference)
    swollen = oedema(case_dir)
    return {"dsc": dsc, "sensitivity": sens, "precision": prec,
            "volume_ml": float(predicted.sum()) * float(np.prod(maps.spacing)) / 1000.0,
            "oedema_marked": float((predicted & swollen).sum() / max(swollen.sum(), 1)),
            "false_positives_in_oedema": float((predicted & swollen).sum()
                                               / max((predicted & ~maps.reference).sum(), 1))}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def markdown(results: dict) -> str:
    """The scored snapshots as one table (a row per technique, iteration and fold) and the heuristic."""
    lines = ["| technique | iteration | held-out case | argmax DSC / sens / prec % | oedema marked % | "
             "cross-fold point | DSC / sens / prec % | both-fold point | DSC / sens / prec % |",
             "|---|---:|---|---|---:|---|---|---|---|"]
    for key in sorted(results["snapshots"], key=lambda k: (results["snapshots"][k]["technique"],
                                                           results["snapshots"][k]["iteration"], k)):
        row = results["snapshots"][key]
        both = row["both_folds_point"]
        for fold in FOLDS:
            f = row["folds"][fold]
            a, c, b = f["argmax"], f["cross_fold"], f["both_folds"]
            cp = c["point"]
            lines.append(
                f"| {row['technique']}{' +tta' if row.get('tta_considered') else ''} | {row['iteration']} | "
                f"{f['case_id']} | {_pct(a['dsc'])} / {_pct(a['sensitivity'])} / {_pct(a['precision'])} | "
                f"{_pct(a.get('oedema_marked'))} | dz > {cp['threshold']:g}, {cp['postprocess']} | "
                f"{_pct(c['dsc'])} / {_pct(c['sensitivity'])} / {_pct(c['precision'])} | "
                f"dz > {both['threshold']:g}, {both['postprocess']}{', tta' if both['tta'] else ''} | "
                f"{_pct(b['dsc'])} / {_pct(b['sensitivity'])} / {_pct(b['precision'])} |")
    lines += ["", "| two-threshold heuristic | DSC % | sensitivity % | precision % | oedema marked % |",
              "|---|---:|---:|---:|---:|"]
    for h in results.get("heuristic", []):
        lines.append(f"| {h['case_id']} | {_pct(h['dsc'])} | {_pct(h['sensitivity'])} | {_pct(h['precision'])} | "
                     f"{_pct(h.get('oedema_marked'))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="the loo.py output folder")
    parser.add_argument("--out", required=True, help="JSON file for the results")
    parser.add_argument("--techniques", default=None,
                        help="comma-separated (may be empty); default: every technique folder with both folds")
    parser.add_argument("--iterations", default=None, help="snapshot iterations to score (default: all)")
    parser.add_argument("--tta", action="store_true", help="also consider mirror TTA (8x the inference)")
    parser.add_argument("--data", default=str(HERE.parents[2] / "shared" / "data" / "brats2015"))
    parser.add_argument("--export", default=None, metavar="TECHNIQUE@ITERATION",
                        help="instead of scoring, write that snapshot of both folds as model folders "
                             "(--out/<fold>) for 'asymseg operating-point --fold-model'")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=DIR",
                        help="also score a model trained on neither case, under NAME (repeatable)")
    parser.add_argument("--rename", action="append", default=[], metavar="FOLDER=NAME",
                        help="score the runs of a technique folder under another name, e.g. ce=ce-phantoms for "
                             "runs from a --base-model (repeatable)")
    parser.add_argument("--markdown", action="store_true", help="print the scored results as tables and stop")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(Path(args.out).read_text())))
        return
    if args.export:
        technique, _, iteration = args.export.partition("@")
        for fold in FOLDS:
            fold_dir = Path(args.work) / technique / fold
            model = snapshot_model(fold_dir, fold_dir / "snapshots" / f"iter-{int(iteration):05d}.safetensors")
            from asymseg.modelfile import save_model

            settings = json.loads((fold_dir / "settings.json").read_text())
            card = model.card.replace(name=f"loo-{technique}-{fold}-{iteration}", operating_point=None,
                                      description=f"leave-one-out fold {fold}: trained on {settings['train']} "
                                                  f"only, {technique}, iteration {iteration}")
            save_model(Path(args.out) / fold, model.net, card, overwrite=True)
            print(f"wrote {Path(args.out) / fold}")
        return
    import torch

    torch.set_num_threads(1)
    work = Path(args.work)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {"snapshots": {}}
    results["heuristic"] = [heuristic(Path(args.data) / c) for c in HELD_OUT]
    techniques = [t for t in args.techniques.split(",") if t] if args.techniques is not None else sorted(
        p.name for p in work.iterdir() if all((p / f / "snapshots").is_dir() for f in FOLDS))
    wanted = {int(i) for i in args.iterations.split(",")} if args.iterations else None
    names = dict(spec.partition("=")[::2] for spec in args.rename)
    for technique in techniques:
        name = names.get(technique, technique)
        iterations = sorted(set.intersection(*(
            {int(s.stem.split("-")[1]) for s in (work / technique / f / "snapshots").glob("iter-*.safetensors")}
            for f in FOLDS)))
        for iteration in iterations:
            if wanted is not None and iteration not in wanted:
                continue
            key = f"{name}@{iteration}" + ("+tta" if args.tta else "")
            if key in results["snapshots"]:
                continue
            maps, cases = {}, {}
            for fold in FOLDS:
                fold_dir = work / technique / fold
                settings = json.loads((fold_dir / "settings.json").read_text())
                model = snapshot_model(fold_dir, fold_dir / "snapshots" / f"iter-{iteration:05d}.safetensors")
                cases[fold] = Path(args.data) / settings["held_out"]
                maps[fold] = validation_maps(model, cases[fold], tta=args.tta, device="cpu")
            row: dict = {"technique": name, "iteration": iteration, "tta_considered": args.tta, "folds": {}}
            results["snapshots"][key] = score_row(row, maps, cases)
            report(key, results["snapshots"][key])
            out.write_text(json.dumps(results, indent=1) + "\n")
    for name, folder in (spec.partition("=")[::2] for spec in args.model):
        model = load_model(folder)
        key = f"{name}@{model.card.provenance.get('iterations')}" + ("+tta" if args.tta else "")
        if key in results["snapshots"]:
            continue
        # The BRATS 2015 labels of the two cases read as its tumour core (1, 3, 4): a model
        # trained on BraTS 2017-named phantoms calls the same core 1, 4.
        model = dataclasses.replace(model, card=model.card.replace(target=TargetSpec.tumour_core("brats2015")))
        cases = {fold: Path(args.data) / case for fold, case in zip(FOLDS, HELD_OUT)}
        maps = {fold: validation_maps(model, cases[fold], tta=args.tta, device="cpu") for fold in FOLDS}
        row = {"technique": name, "iteration": int(model.card.provenance.get("iterations") or 0),
               "tta_considered": args.tta, "held_out_both": True, "folds": {}}
        results["snapshots"][key] = score_row(row, maps, cases)
        report(key, results["snapshots"][key])
        out.write_text(json.dumps(results, indent=1) + "\n")
    out.write_text(json.dumps(results, indent=1) + "\n")


def report(key: str, row: dict) -> None:
    both = row["both_folds_point"]
    line = "  ".join(f"{f}: {row['folds'][f]['argmax']['dsc']:.3f} -> cross {row['folds'][f]['cross_fold']['dsc']:.3f}"
                     f" / both {row['folds'][f]['both_folds']['dsc']:.3f}" for f in FOLDS)
    print(f"{key}: {line}  [both: dz > {both['threshold']:g}, {both['postprocess']}, tta {both['tta']}]", flush=True)


def score_row(row: dict, maps: dict[str, ValidationMaps], cases: dict[str, Path]) -> dict:
    """Fill ``row`` with each fold's held-out scores (``maps`` and the case folders by fold):
    argmax, the point chosen on the other fold's case (cross-fold) and the one chosen on both."""
    both = choose_operating_point([maps[f] for f in FOLDS])
    for fold, other in zip(FOLDS, reversed(FOLDS)):
        own = maps[fold]
        case_dir = cases[fold]
        cross = choose_operating_point([maps[other]])
        row["folds"][fold] = {
            "case_id": own.case_id,
            "argmax": score(own, 0.0, "none", False, case_dir),
            "cross_fold": {"point": {"threshold": cross.threshold, "postprocess": cross.postprocess, "tta": cross.tta},
                           **score(own, cross.threshold, cross.postprocess, cross.tta, case_dir)},
            "both_folds": score(own, both.threshold, both.postprocess, both.tta, case_dir),
            "dz_fg_mean": float(own.decision[own.reference].mean()),
            "dz_bg_mean": float(own.decision[own.mask & ~own.reference].mean()),
        }
    row["both_folds_point"] = {"threshold": both.threshold, "postprocess": both.postprocess, "tta": both.tta}
    return row


if __name__ == "__main__":
    main()
