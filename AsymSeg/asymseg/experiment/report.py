"""Tables and figures of an experiment: results.csv, results.md and the paper's Fig. 1 layout."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Columns of results.csv (one row per finished cell).
CSV_COLUMNS: tuple[str, ...] = (
    "cell", "index", "fraction", "n_train", "technique", "seed",
    "dsc", "sensitivity", "precision",
    "shift_rare", "shift_nonrare", "train_rare_mean", "test_rare_mean",
    "train_rare_wrong_side", "test_rare_wrong_side", "test_nonrare_wrong_side",
    "iterations", "updates", "train_seconds", "total_seconds", "hash",
)
#: Metrics plotted against the data fraction (the paper's Fig. 1), with their titles.
FIGURE_METRICS: tuple[tuple[str, str], ...] = (("dsc", "DSC"), ("sensitivity", "Sensitivity"),
                                               ("precision", "Precision"))
#: Colour per technique family; an asymmetric variant shares its family's colour, dashed.
FAMILY_COLOURS: dict[str, str] = {
    "ce": "#000000", "dice": "#7f7f7f", "fg-sampling": "#8c564b", "lm": "#1f77b4", "focal": "#d62728",
    "at": "#2ca02c", "mixup": "#9467bd", "aug": "#17becf", "combo": "#ff7f0e",
}


def cell_row(result: Mapping[str, Any]) -> dict[str, Any]:
    """One CSV row from a cell's result.json content."""
    cell, metrics, analysis = result["cell"], result["metrics"]["mean"], result["analysis"]
    timing, training = result.get("timing", {}), result.get("training", {})
    return {
        "cell": cell["id"], "index": cell["index"], "fraction": cell["fraction"], "n_train": cell["n_train"],
        "technique": cell["technique"], "seed": cell["seed"],
        "dsc": metrics.get("dsc"), "sensitivity": metrics.get("sensitivity"), "precision": metrics.get("precision"),
        "shift_rare": analysis.get("shift_rare"), "shift_nonrare": analysis.get("shift_nonrare"),
        "train_rare_mean": analysis.get("train_rare_mean"), "test_rare_mean": analysis.get("test_rare_mean"),
        "train_rare_wrong_side": analysis.get("train_rare_wrong_side"),
        "test_rare_wrong_side": analysis.get("test_rare_wrong_side"),
        "test_nonrare_wrong_side": analysis.get("test_nonrare_wrong_side"),
        "iterations": training.get("iterations"), "updates": timing.get("updates"),
        "train_seconds": timing.get("train_seconds"), "total_seconds": timing.get("total_seconds"),
        "hash": result.get("hash"),
    }


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def results_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """results.csv text: a header and one row per cell (missing numbers are empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([_csv_value(row.get(k)) for k in CSV_COLUMNS])
    return buffer.getvalue()


def _values(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) is not None and math.isfinite(float(r[key]))]


def mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None when there are fewer than 1 / 2 values)."""
    if not values:
        return None, None
    mean = float(np.mean(values))
    return mean, (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def aggregate(rows: Sequence[Mapping[str, Any]], techniques: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and sd over seeds per (n_train, technique), ordered by size then the config's technique order."""
    order = {t: i for i, t in enumerate(techniques)}
    groups: dict[tuple[int, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((int(row["n_train"]), str(row["technique"])), []).append(row)
    out = []
    for (n_train, technique), members in sorted(groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99))):
        entry: dict[str, Any] = {"n_train": n_train, "fraction": members[0]["fraction"], "technique": technique,
                                 "seeds": len(members)}
        for key in ("dsc", "sensitivity", "precision", "shift_rare", "shift_nonrare", "test_rare_wrong_side"):
            entry[key] = mean_sd(_values(members, key))
        out.append(entry)
    return out


#: Metrics compared seed by seed in :func:`paired_differences`.
PAIRED_METRICS: tuple[str, ...] = ("dsc", "sensitivity", "precision")


def paired_differences(rows: Sequence[Mapping[str, Any]], techniques: Sequence[str], reference: str,
                       *, against: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Seed-matched differences ``technique - reference`` per training-set size.

    Cells of one seed train on the same cases (nested subsets), so the difference within a seed
    removes the variation that comes from which cases were drawn, which dominates with few cases.

    Args:
        rows: cell rows (:func:`cell_row`).
        techniques: the techniques to compare, in output order.
        reference: the technique subtracted (e.g. ``ce``), unless ``against`` names another one.
        against: per technique, the technique to subtract instead (``{"a-focal": "focal"}``).

    Returns:
        One entry per (n_train, technique) with at least one seed where both cells have the metric:
        ``n_train``, ``technique``, ``reference``, ``seeds`` (matched), for each metric of
        :data:`PAIRED_METRICS` a (mean, sd) of the differences, and ``dsc_higher``: the seeds where
        the technique's DSC is higher.
    """
    cells = {(int(r["n_train"]), str(r["technique"]), int(r["seed"])): r for r in rows}
    sizes = sorted({n for n, _, _ in cells})
    out = []
    for n in sizes:
        for technique in techniques:
            base = (against or {}).get(technique, reference)
            if technique == base:
                continue
            matched = sorted(seed for (m, t, seed) in cells
                             if m == n and t == technique and (n, base, seed) in cells
                             and cells[(n, technique, seed)].get("dsc") is not None
                             and cells[(n, base, seed)].get("dsc") is not None)
            if not matched:
                continue
            entry: dict[str, Any] = {"n_train": n, "technique": technique, "reference": base}
            for key in PAIRED_METRICS:
                diffs = [float(cells[(n, technique, seed)][key]) - float(cells[(n, base, seed)][key])
                         for seed in matched if cells[(n, technique, seed)].get(key) is not None
                         and cells[(n, base, seed)].get(key) is not None]
                entry[key] = mean_sd(diffs)
            entry["seeds"] = len(matched)
            entry["dsc_higher"] = sum(float(cells[(n, technique, seed)]["dsc"]) > float(cells[(n, base, seed)]["dsc"])
                                      for seed in matched)
            out.append(entry)
    return out


def _fmt(pair: tuple[float | None, float | None], scale: float, digits: int, signed: bool = False) -> str:
    mean, sd = pair
    if mean is None:
        return "n/a"
    text = f"{mean * scale:{'+' if signed else ''}.{digits}f}"
    return text if sd is None else f"{text} ± {sd * scale:.{digits}f}"


def results_markdown(rows: Sequence[Mapping[str, Any]], techniques: Sequence[str], *, title: str,
                     notes: Sequence[str] = ()) -> str:
    """results.md: one table row per (training size, technique), mean ± sd over seeds, then the
    numbers behind the paper's questions (:func:`findings`)."""
    lines = [f"# {title}", ""]
    lines += [f"{n}" for n in notes]
    if notes:
        lines.append("")
    lines += [
        "| n train | fraction | technique | seeds | DSC % | sensitivity % | precision % | "
        "rare shift | non-rare shift | test rare wrong side % |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in aggregate(rows, techniques):
        lines.append(
            f"| {e['n_train']} | {e['fraction']:.2f} | {e['technique']} | {e['seeds']} | "
            f"{_fmt(e['dsc'], 100, 1)} | {_fmt(e['sensitivity'], 100, 1)} | {_fmt(e['precision'], 100, 1)} | "
            f"{_fmt(e['shift_rare'], 1, 2, True)} | {_fmt(e['shift_nonrare'], 1, 2, True)} | "
            f"{_fmt(e['test_rare_wrong_side'], 100, 1)} |")
    lines += ["", "Shifts are mean_test(dz) - mean_train(dz) of the rare-class decision variable "
              "dz = z_rare - max other logit, for ground-truth rare and non-rare voxels; negative rare "
              "shifts mean unseen rare voxels moved towards the boundary. Means ± sample sd over seeds.", ""]
    reference = techniques[0] if techniques else None
    paired = paired_differences(rows, techniques, reference) if reference is not None else []
    if paired:
        lines += [f"## Seed-matched differences against {reference}", "",
                  f"Technique minus {reference} on the same training cases (same seed), percentage points, "
                  "mean ± sd over seeds; the last column counts the seeds where the technique's DSC is higher.",
                  "",
                  f"| n train | technique | seeds | DSC | sensitivity | precision | DSC higher than {reference} |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        for e in paired:
            lines.append(f"| {e['n_train']} | {e['technique']} | {e['seeds']} | {_fmt(e['dsc'], 100, 1, True)} | "
                         f"{_fmt(e['sensitivity'], 100, 1, True)} | {_fmt(e['precision'], 100, 1, True)} | "
                         f"{e['dsc_higher']}/{e['seeds']} |")
        lines.append("")
    found = findings(rows, techniques)
    if found:
        lines += ["## Numbers behind the paper's questions", "", *found, ""]
    return "\n".join(lines)


def technique_style(technique: str) -> dict[str, Any]:
    """Colour by family (``a-focal`` shares ``focal``'s colour) and a dashed line for asymmetric ones."""
    asymmetric = technique.startswith("a-")
    family = technique[2:] if asymmetric else technique
    colour = FAMILY_COLOURS.get(family, "#bcbd22")
    return {"color": colour, "linestyle": "--" if asymmetric or technique == "combo" else "-",
            "marker": "o" if not asymmetric else "s"}


def _by_technique(entries: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Mapping[str, Any]]]]:
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for e in entries:
        grouped.setdefault(e["technique"], []).append(e)
    return list(grouped.items())


def _line_figure(rows: Sequence[Mapping[str, Any]], techniques: Sequence[str],
                 panels: Sequence[tuple[str, str]], *, scale: float, ylabel: str, title: str,
                 zero_line: bool = False) -> Figure:
    fig = Figure(figsize=(4.6 * len(panels), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    entries = aggregate(rows, techniques)
    for ax, (key, name) in zip(axes, panels):
        for technique, points in _by_technique(entries):
            xs = [p["fraction"] for p in points if p[key][0] is not None]
            ys = [p[key][0] * scale for p in points if p[key][0] is not None]
            err = [(p[key][1] or 0.0) * scale for p in points if p[key][0] is not None]
            if not xs:
                continue
            ax.errorbar(xs, ys, yerr=err if any(err) else None, label=technique, capsize=2, linewidth=1.4,
                        markersize=4, **technique_style(technique))
        if zero_line:
            ax.axhline(0.0, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(name)
        ax.set_xlabel("fraction of the training pool")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if axes[-1].get_legend_handles_labels()[0]:
        axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    return fig


def metrics_figure(rows: Sequence[Mapping[str, Any]], techniques: Sequence[str], *, title: str) -> Figure:
    """DSC, sensitivity and precision (%) against the data fraction, one line per technique (Fig. 1)."""
    return _line_figure(rows, techniques, FIGURE_METRICS, scale=100.0, ylabel="% (mean ± sd over seeds)",
                        title=title)


def shift_figure(rows: Sequence[Mapping[str, Any]], techniques: Sequence[str], *, title: str) -> Figure:
    """Rare and non-rare logit shifts (test - train mean dz) against the data fraction."""
    panels = (("shift_rare", "rare-class shift of mean dz"), ("shift_nonrare", "non-rare shift of mean dz"))
    return _line_figure(rows, techniques, panels, scale=1.0, ylabel="mean_test(dz) - mean_train(dz)",
                        title=title, zero_line=True)


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """A figure's PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


#: (symmetric, asymmetric) technique pairs compared in the findings.
SYMMETRIC_PAIRS: tuple[tuple[str, str], ...] = (("lm", "a-lm"), ("focal", "a-focal"), ("at", "a-at"),
                                                ("mixup", "a-mixup"))


def findings(rows: Sequence[Mapping[str, Any]], techniques: Sequence[str]) -> list[str]:
    """Plain numbers for the paper's three questions, as Markdown bullet lines (no interpretation).

    1. From the largest to the smallest training set: change of test sensitivity vs precision.
    2. The rare-class logit shift (test - train) at the smallest vs the largest training set.
    3. Asymmetric minus symmetric DSC per pair and training-set size.
    """
    entries = {(e["n_train"], e["technique"]): e for e in aggregate(rows, techniques)}
    sizes = sorted({n for n, _ in entries})
    if not sizes:
        return []
    small, large = sizes[0], sizes[-1]
    lines = []
    if small != large:
        lines.append(f"- Test sensitivity and precision from {large} to {small} training case(s) "
                     "(percentage points, mean over seeds):")
        for technique in techniques:
            a, b = entries.get((large, technique)), entries.get((small, technique))
            if not a or not b or None in (a["sensitivity"][0], b["sensitivity"][0], a["precision"][0],
                                          b["precision"][0]):
                continue
            d_sens = 100 * (b["sensitivity"][0] - a["sensitivity"][0])
            d_prec = 100 * (b["precision"][0] - a["precision"][0])
            lines.append(f"  - {technique}: sensitivity {d_sens:+.1f}, precision {d_prec:+.1f} "
                         f"({'sensitivity' if d_sens < d_prec else 'precision'} falls more)")
    lines.append("- Rare-class logit shift mean_test(dz) - mean_train(dz)"
                 + (f" at {small} vs {large} training case(s):" if small != large else ":"))
    for technique in techniques:
        parts = [f"{n}: {entries[(n, technique)]['shift_rare'][0]:+.2f}" for n in sorted({small, large})
                 if (n, technique) in entries and entries[(n, technique)]["shift_rare"][0] is not None]
        if parts:
            lines.append(f"  - {technique}: " + ", ".join(parts))
    pairs = [(s, a) for s, a in SYMMETRIC_PAIRS if s in techniques and a in techniques]
    if pairs:
        paired = {(e["n_train"], e["technique"]): e
                  for e in paired_differences(rows, [a for _, a in pairs], "", against={a: s for s, a in pairs})}
        lines.append("- DSC of the asymmetric minus the symmetric variant, seed-matched (percentage points, "
                     "mean ± sd; seeds where the asymmetric one is higher), per training-set size:")
        for sym, asym in pairs:
            parts = [f"{n}: {_fmt(paired[(n, asym)]['dsc'], 100, 1, True)} "
                     f"({paired[(n, asym)]['dsc_higher']}/{paired[(n, asym)]['seeds']})"
                     for n in sizes if (n, asym) in paired]
            if parts:
                lines.append(f"  - {asym} - {sym}: " + ", ".join(parts))
    return lines
