"""The diagnostic's figures: valid PNGs in the paper's layout, one column per rare class."""

from __future__ import annotations

import numpy as np
from matplotlib.image import imread

from asymseg.diagnostics import analyze_classes, analyze_logits
from asymseg.diagnostics.plots import logit_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _groups(seed: int, test_shift: float):
    rng = np.random.default_rng(seed)

    def case(mu_rare: float, n: int = 3000):
        dz = np.r_[rng.normal(mu_rare, 1.0, 200), rng.normal(-5.0, 1.5, n)]
        return dz, np.r_[np.ones(200, bool), np.zeros(n, bool)]

    return {"train": [case(3.0), case(3.0)], "test": [case(3.0 + test_shift)]}


def test_save_writes_a_valid_nontrivial_png_and_the_json(tmp_path):
    result = analyze_logits(_groups(0, -2.5), class_name="tumour_core", max_nonrare=2000)
    written = result.save(tmp_path, title="untrained")
    assert set(written) == {"json", "figure"}
    png = (tmp_path / "logits.png").read_bytes()
    assert png[:8] == PNG_SIGNATURE
    assert len(png) > 20_000
    pixels = imread(tmp_path / "logits.png")
    assert pixels.ndim == 3 and pixels.shape[0] > 300 and pixels.shape[1] > 300
    assert float(pixels[..., :3].std()) > 0.05       # something was drawn, not a blank canvas
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_single_class_figure_has_rare_and_nonrare_rows_with_the_boundary_and_shift():
    result = analyze_logits(_groups(1, -2.0), class_name="tumour_core")
    fig = logit_figure(result.classes)
    assert len(fig.axes) == 2
    rare_ax, nonrare_ax = fig.axes
    assert "tumour_core voxels" in rare_ax.get_title()
    assert "non-rare" in nonrare_ax.get_title()
    labels = [line.get_label() for line in rare_ax.get_lines()]
    assert "boundary dz = 0" in labels
    shift = result.shift("rare")
    assert f"test - train: {shift:+.2f}" in rare_ax.get_title()
    legend = [t.get_text() for t in rare_ax.get_legend().get_texts()]
    assert any(t.startswith("train") for t in legend) and any(t.startswith("test") for t in legend)


def test_multiclass_gives_one_panel_column_per_rare_class(tmp_path):
    a, b = _groups(2, -1.0), _groups(3, -3.0)
    result = analyze_classes({"kidney": a, "tumour": b}, class_indices={"kidney": 1, "tumour": 2})
    fig = logit_figure(result.classes)
    assert len(fig.axes) == 4
    titles = [ax.get_title() for ax in fig.axes]
    assert sum("kidney" in t for t in titles) == 2 and sum("tumour" in t for t in titles) == 2
    written = result.save(tmp_path)
    assert set(written) == {"json", "figure", "figure_kidney", "figure_tumour"}
    for key in ("figure", "figure_kidney", "figure_tumour"):
        assert written[key].read_bytes()[:8] == PNG_SIGNATURE
    assert imread(written["figure"]).shape[1] > imread(written["figure_kidney"]).shape[1]
