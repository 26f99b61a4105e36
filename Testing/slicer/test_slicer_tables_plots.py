"""Metrics table, plot series/chart nodes and the logit histogram, against real MRML."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("slicer_core", reason="slicer-core (real MRML) is not installed")

import slicer  # noqa: E402
from AsymSegLib import plots, tables  # noqa: E402

pytestmark = pytest.mark.slicer


def test_metrics_table_has_one_row_per_metric_in_order_with_units(mrml):
    table = mrml.scene.AddNewNodeByClass("vtkMRMLTableNode", "metrics")
    metrics = {"hd95": 4.25, "dsc": 0.8125, "sensitivity": None, "precision": 0.75, "specificity": 0.999,
               "volume_prediction_ml": 12.5, "volume_reference_ml": 10.0, "voxels": 7, "outputs": {"a": 1}}
    tables.updateMetricsTable(table, metrics)
    assert table.GetNumberOfRows() == 8  # 7 known + 'voxels'; the nested object is skipped
    assert table.GetNumberOfColumns() == 4
    titles = [table.GetCellText(r, 0) for r in range(table.GetNumberOfRows())]
    assert titles == ["Dice similarity coefficient (DSC)", "Sensitivity", "Precision", "Specificity",
                      "Hausdorff distance 95% (HD95)", "Volume, prediction", "Volume, reference", "voxels"]
    assert [table.GetCellText(r, 2) for r in range(8)] == ["", "", "", "", "mm", "mL", "mL", ""]
    assert table.GetTable().GetColumnByName("Value").GetValue(0) == 0.8125
    assert math.isnan(table.GetTable().GetColumnByName("Value").GetValue(1))  # undefined sensitivity
    assert tables.readMetricsTable(table) == {
        "dsc": 0.8125, "sensitivity": None, "precision": 0.75, "specificity": 0.999, "hd95": 4.25,
        "volume_prediction_ml": 12.5, "volume_reference_ml": 10.0, "voxels": 7.0}


def test_metrics_table_is_replaced_not_appended(mrml):
    table = mrml.scene.AddNewNodeByClass("vtkMRMLTableNode", "metrics")
    tables.updateMetricsTable(table, {"dsc": 0.1, "precision": 0.2})
    tables.updateMetricsTable(table, {"dsc": 0.9})
    assert tables.readMetricsTable(table) == {"dsc": 0.9}
    other = mrml.scene.AddNewNodeByClass("vtkMRMLTableNode", "plain")
    with pytest.raises(ValueError, match="plain: not a metrics table"):
        tables.readMetricsTable(other)


def test_line_plot_creates_table_series_and_chart_and_updates_them_in_place(mrml):
    scene = mrml.scene
    nodes = plots.updateLinePlot(scene, "Losses", "iteration", [1, 2, 3],
                                 {"clean": [3.0, 2.0, 1.5], "mixup": [None, 2.5, 2.0]}, yAxisTitle="loss")
    assert nodes.chart.GetTitle() == "Losses" and nodes.chart.GetYAxisTitle() == "loss"
    assert nodes.chart.GetNumberOfPlotSeriesNodes() == 2
    clean = nodes.series["clean"]
    assert clean.GetXColumnName() == "iteration" and clean.GetYColumnName() == "clean"
    assert clean.GetTableNode() is nodes.table
    assert clean.GetPlotType() == slicer.vtkMRMLPlotSeriesNode.PlotTypeLine
    table = nodes.table.GetTable()
    assert table.GetNumberOfRows() == 3
    assert math.isnan(table.GetColumnByName("mixup").GetValue(0))
    assert nodes.series["clean"].GetColor() != nodes.series["mixup"].GetColor()

    again = plots.updateLinePlot(scene, "Losses", "iteration", [1, 2, 3, 4], {"clean": [3, 2, 1.5, 1.2]}, nodes=nodes)
    assert again is nodes and nodes.table.GetTable().GetNumberOfRows() == 4
    assert nodes.chart.GetNumberOfPlotSeriesNodes() == 1  # the dropped curve is removed
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotSeriesNode") == 1
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode") == 1
    with pytest.raises(ValueError, match="curve 'clean' has 2 values for 3 x values"):
        plots.updateLinePlot(scene, "Bad", "x", [1, 2, 3], {"clean": [1, 2]})
    with pytest.raises(ValueError, match="unknown plot type 'Pie'"):
        plots.updateLinePlot(scene, "Bad", "x", [1], {"y": [1]}, plotType="Pie")


def test_logit_histograms_separate_reference_foreground_and_background():
    dz = np.array([-3.0, -1.0, 0.5, 2.0, 4.0, -2.0, -0.5, 1.0]).reshape(2, 2, 2)
    reference = np.array([0, 0, 1, 1, 1, 0, 1, 0]).reshape(2, 2, 2)
    h = plots.logitHistograms(dz, reference, bins=8, valueRange=(-4.0, 4.0))
    assert h.foregroundCount == 4 and h.backgroundCount == 4
    assert h.foregroundMean == pytest.approx((0.5 + 2 + 4 - 0.5) / 4)
    assert h.backgroundMean == pytest.approx((-3 - 1 - 2 + 1) / 4)
    assert h.foregroundWrongSide == pytest.approx(0.25)  # -0.5 is on the background side
    assert h.backgroundWrongSide == pytest.approx(0.25)  # 1.0 is on the foreground side
    width = 1.0
    assert h.binCenters.tolist() == [-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5]
    assert (h.foregroundDensity * width).sum() == pytest.approx(1.0)
    assert (h.backgroundDensity * width).sum() == pytest.approx(1.0)
    assert h.foregroundDensity[3] == pytest.approx(0.25) and h.foregroundDensity[7] == pytest.approx(0.25)


def test_logit_histograms_respect_the_mask_and_empty_classes():
    dz = np.linspace(-2, 2, 27).reshape(3, 3, 3)
    reference = np.zeros((3, 3, 3), np.uint8)
    mask = np.zeros((3, 3, 3), bool)
    mask[1] = True
    h = plots.logitHistograms(dz, reference, mask=mask, bins=4)
    assert h.backgroundCount == 9 and h.foregroundCount == 0
    assert math.isnan(h.foregroundMean) and not h.foregroundDensity.any()
    assert h.binCenters[0] < 0 < h.binCenters[-1]  # the boundary is always in range
    with pytest.raises(ValueError, match="must have the same shape"):
        plots.logitHistograms(dz, reference[:2])
    with pytest.raises(ValueError, match="bins must be >= 2"):
        plots.logitHistograms(dz, reference, bins=1)


def test_background_mask_finds_the_constant_background():
    volume = np.full((4, 5, 6), -1.7, np.float32)
    volume[1:3, 1:4, 1:5] = 0.3
    mask = plots.backgroundMask(volume)
    assert mask.sum() == 2 * 3 * 4
    volume[0, 0, 0] = 5.0  # corners disagree: no constant background
    assert plots.backgroundMask(volume).all()


def test_logit_distribution_plot_has_two_density_curves(mrml):
    rng = np.random.default_rng(0)
    reference = rng.random((10, 10, 10)) < 0.2
    dz = np.where(reference, rng.normal(2, 1, reference.shape), rng.normal(-2, 1, reference.shape))
    histogram = plots.logitHistograms(dz, reference, bins=30)
    nodes = plots.updateLogitDistributionPlot(mrml.scene, histogram, title="case logit distribution")
    assert nodes.chart.GetNumberOfPlotSeriesNodes() == 2
    assert set(nodes.series) == {plots.FOREGROUND_CURVE, plots.BACKGROUND_CURVE}
    table = nodes.table.GetTable()
    assert table.GetNumberOfRows() == 30
    assert [table.GetColumnName(i) for i in range(3)] == ["dz", plots.FOREGROUND_CURVE, plots.BACKGROUND_CURVE]
    assert nodes.chart.GetXAxisTitle().startswith("dz")
    fgPeak = histogram.binCenters[int(np.argmax(histogram.foregroundDensity))]
    bgPeak = histogram.binCenters[int(np.argmax(histogram.backgroundDensity))]
    assert fgPeak > 0 > bgPeak
