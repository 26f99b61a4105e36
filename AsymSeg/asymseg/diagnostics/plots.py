"""Figures of the logit diagnostic, drawn from the numbers in an analysis (the paper's Fig. 2 / Fig. 4).

One column per rare class; the top row shows the dz densities of ground-truth rare voxels, the
bottom row those of non-rare voxels, train and test overlaid, the decision boundary dz = 0 marked
and the shift of the means in each panel's title. The figures use matplotlib's object API with the
Agg canvas (no pyplot, no global state) and are drawn only from the stored histograms, so a plot
shows exactly what ``analysis.json`` holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Line style per group: colour and dash (colour-blind-safe pair, distinct dashes for greyscale).
GROUP_STYLES: dict[str, dict[str, Any]] = {
    "train": {"color": "#0072B2", "linestyle": "-"},
    "test": {"color": "#D55E00", "linestyle": "--"},
}
_FALLBACK_COLOURS = ("#009E73", "#CC79A7", "#E69F00", "#56B4E9")
SIDE_TITLES = {"rare": "ground truth {name} voxels", "nonrare": "non-rare voxels"}


def _style(group: str, index: int) -> dict[str, Any]:
    return GROUP_STYLES.get(group, {"color": _FALLBACK_COLOURS[index % len(_FALLBACK_COLOURS)],
                                    "linestyle": ":"})


def _fmt(value: float | None, spec: str = "+.2f") -> str:
    return "n/a" if value is None else format(value, spec)


def draw_class_column(axes: tuple[Any, Any], name: str, numbers: Mapping[str, Any],
                      header: str | None = None) -> None:
    """Draw one rare class into two axes (rare on top, non-rare below).

    Args:
        axes: the (top, bottom) axes.
        name: the rare class's name.
        numbers: that class's numbers (``AnalysisResult.classes[name]``).
        header: what the column shows (default: the class name), e.g. a technique.
    """
    hist = numbers["histogram"]
    edges = hist["edges"]
    groups = [g for g in hist if g != "edges"]
    for ax, side in zip(axes, ("rare", "nonrare")):
        for index, group in enumerate(groups):
            stats = numbers["groups"][group][side]
            if not stats["count"]:
                continue
            wrong = stats["wrong_side"]
            label = (f"{group} (n={stats['count']:,}, mean {_fmt(stats['mean'])}, "
                     f"wrong side {100 * wrong:.1f}%)")
            ax.stairs(hist[group][side]["density"], edges, label=label, linewidth=1.6, **_style(group, index))
        ax.axvline(0.0, color="black", linestyle=":", linewidth=1.0, label="boundary dz = 0")
        shift = numbers["shift"].get(side)
        ax.set_title(f"{header or name}: {SIDE_TITLES[side].format(name=name)}\n"
                     f"shift of the mean, test - train: {_fmt(shift)}", fontsize=10)
        ax.set_ylabel("density")
        ax.legend(fontsize=7, loc="best", frameon=False)
    axes[1].set_xlabel(f"dz = z_{name} - max other logit")


def logit_figure(columns: Mapping[str, Mapping[str, Any]], *, title: str | None = None,
                 class_names: Mapping[str, str] | None = None, max_columns: int = 4) -> Figure:
    """A figure with one column per rare class (rows: rare voxels, non-rare voxels).

    Args:
        columns: column key -> numbers of one rare class; the key is the class name
            (``AnalysisResult.classes``) or, with ``class_names``, any header (e.g. a technique).
        title: optional suptitle.
        class_names: column key -> class name, when the keys are not class names.
        max_columns: columns per row of panels; more classes wrap onto further row pairs.

    Returns:
        A matplotlib Figure attached to an Agg canvas; ``len(fig.axes) == 2 * len(columns)``.
    """
    count = max(1, len(columns))
    ncols = min(count, max(1, max_columns))
    nrows = -(-count // ncols)
    fig = Figure(figsize=(5.2 * ncols, 6.4 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    for position, (key, numbers) in enumerate(columns.items()):
        row, col = divmod(position, ncols)
        top = fig.add_subplot(2 * nrows, ncols, 2 * row * ncols + col + 1)
        bottom = fig.add_subplot(2 * nrows, ncols, (2 * row + 1) * ncols + col + 1, sharex=top)
        name = (class_names or {}).get(key, key)
        draw_class_column((top, bottom), name, numbers, header=None if class_names is None else key)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
