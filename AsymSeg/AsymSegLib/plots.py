"""Plots as MRML nodes: a table, one plot series per curve, one chart.

Used for the logit distribution of the AsymSeg panel (histograms of dz = z_fg - z_bg over
reference-foreground and reference-background voxels, METHOD.md "The logit diagnostic") and
for the live training curves of AsymSegTraining. Calling :func:`updateLinePlot` again with the
returned :class:`PlotNodes` updates the same nodes, so a plot view showing the chart follows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import slicer
import vtk

#: Colours for successive curves (RGB in [0, 1]).
CURVE_COLORS: tuple[tuple[float, float, float], ...] = (
    (0.86, 0.32, 0.24),  # red: foreground / first loss
    (0.20, 0.45, 0.75),  # blue: background
    (0.25, 0.63, 0.30),
    (0.80, 0.55, 0.10),
    (0.55, 0.35, 0.70),
    (0.40, 0.40, 0.40),
)

FOREGROUND_CURVE = "Reference foreground"
BACKGROUND_CURVE = "Reference background"
DZ_COLUMN = "dz"


@dataclass
class PlotNodes:
    """The nodes of one plot: the table, its chart and a series per curve name."""

    table: object
    chart: object
    series: dict[str, object] = field(default_factory=dict)


def _doubleArray(name: str, values: Sequence[float]) -> vtk.vtkDoubleArray:
    array = vtk.vtkDoubleArray()
    array.SetName(name)
    array.SetNumberOfValues(len(values))
    for index, value in enumerate(values):
        array.SetValue(index, math.nan if value is None else float(value))
    return array


def updateLinePlot(scene, title: str, xName: str, xValues: Sequence[float],
                   curves: Mapping[str, Sequence[float]], nodes: PlotNodes | None = None,
                   xAxisTitle: str | None = None, yAxisTitle: str = "",
                   plotType: str = "Line", colors: Mapping[str, tuple[float, float, float]] | None = None) -> PlotNodes:
    """Create or update a table + plot series + chart showing ``curves`` against ``xValues``.

    Args:
        scene: the vtkMRMLScene.
        title: the chart title (node names derive from it).
        xName: the x column name.
        xValues: x coordinates, length N.
        curves: ``{curve name: N y values}`` (None or NaN leave a gap).
        nodes: nodes returned by an earlier call, to update in place.
        xAxisTitle: the x axis title (default ``xName``).
        yAxisTitle: the y axis title.
        plotType: "Line", "Scatter" or "Bar" (vtkMRMLPlotSeriesNode plot types).
        colors: colours per curve name (default: :data:`CURVE_COLORS` in order).

    Returns:
        The :class:`PlotNodes` (pass them back to update).

    Raises:
        ValueError: a curve whose length differs from ``xValues``, or a curve named like the x column.
    """
    count = len(xValues)
    for name, values in curves.items():
        if len(values) != count:
            raise ValueError(f"{title}: curve {name!r} has {len(values)} values for {count} x values")
        if name == xName:
            raise ValueError(f"{title}: curve name {name!r} equals the x column name")
    if nodes is None:
        table = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{title} table")
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{title} chart")
        nodes = PlotNodes(table=table, chart=chart)

    table = nodes.table.GetTable()
    wasModifying = nodes.table.StartModify()
    table.Initialize()
    table.AddColumn(_doubleArray(xName, xValues))
    for name, values in curves.items():
        table.AddColumn(_doubleArray(name, values))
    table.Modified()
    nodes.table.Modified()
    nodes.table.EndModify(wasModifying)

    chart = nodes.chart
    chart.SetTitle(title)
    chart.SetXAxisTitle(xAxisTitle or xName)
    chart.SetYAxisTitle(yAxisTitle)
    chart.SetLegendVisibility(True)
    plotTypeValue = slicer.vtkMRMLPlotSeriesNode.GetPlotTypeFromString(plotType)
    if plotTypeValue < 0:
        raise ValueError(f"{title}: unknown plot type {plotType!r}; expected Line, Scatter or Bar")
    for index, name in enumerate(curves):
        series = nodes.series.get(name)
        if series is None or scene.GetNodeByID(series.GetID()) is None:
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{title}: {name}")
            nodes.series[name] = series
        series.SetAndObserveTableNodeID(nodes.table.GetID())
        series.SetXColumnName(xName)
        series.SetYColumnName(name)
        series.SetPlotType(plotTypeValue)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone if plotType == "Line"
                              else slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
        color = (colors or {}).get(name, CURVE_COLORS[index % len(CURVE_COLORS)])
        series.SetColor(*color)
        if not chart.HasPlotSeriesNodeID(series.GetID()):
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
    for name in [n for n in nodes.series if n not in curves]:
        series = nodes.series.pop(name)
        chart.RemovePlotSeriesNodeID(series.GetID())
        if scene.GetNodeByID(series.GetID()) is not None:
            scene.RemoveNode(series)
    return nodes


# --------------------------------------------------------------------------------- logit diagnostic
@dataclass(frozen=True)
class LogitHistogram:
    """Densities of dz over reference-foreground and reference-background voxels.

    Attributes:
        binCenters: dz at the bin centres, shape (bins,).
        foregroundDensity / backgroundDensity: normalised histograms (each integrates to 1 over
            the binned range), shape (bins,); zeros when the class has no voxel.
        foregroundCount / backgroundCount: voxels in each class (inside the mask).
        foregroundMean / backgroundMean: mean dz per class (NaN when empty).
        foregroundWrongSide: fraction of foreground voxels with dz < 0 (missed at the boundary).
        backgroundWrongSide: fraction of background voxels with dz > 0 (false positives).
    """

    binCenters: np.ndarray
    foregroundDensity: np.ndarray
    backgroundDensity: np.ndarray
    foregroundCount: int
    backgroundCount: int
    foregroundMean: float
    backgroundMean: float
    foregroundWrongSide: float
    backgroundWrongSide: float


def backgroundMask(volumeArray: np.ndarray) -> np.ndarray:
    """Voxels that differ from the constant background value (the value of all 8 corners).

    Skull-stripped and z-scored images have a constant background (0 or a negative number);
    the diagnostic looks inside the brain only. When the corners differ there is no constant
    background and every voxel counts.

    Returns:
        bool array, True inside the region of interest, same shape as ``volumeArray``.
    """
    a = volumeArray
    corners = {float(a[k, j, i]) for k in (0, -1) for j in (0, -1) for i in (0, -1)}
    if len(corners) != 1:
        return np.ones(a.shape, bool)
    return a != corners.pop()


def logitHistograms(dz: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None,
                    bins: int = 80, valueRange: tuple[float, float] | None = None) -> LogitHistogram:
    """Histograms of the decision variable dz for reference foreground and background voxels.

    Args:
        dz: z_fg - z_bg per voxel (float), any shape.
        reference: the reference mask (non-zero = foreground), the shape of ``dz``.
        mask: voxels to use (e.g. the brain, :func:`backgroundMask`); default all.
        bins: number of bins.
        valueRange: (low, high) dz range; default the 0.1-99.9 percentiles of the used voxels,
            widened to include the boundary 0.

    Returns:
        A :class:`LogitHistogram`.

    Raises:
        ValueError: shapes differ, or bins < 2.
    """
    if dz.shape != reference.shape or (mask is not None and mask.shape != dz.shape):
        raise ValueError(f"dz {dz.shape}, reference {reference.shape}"
                         + (f" and mask {mask.shape}" if mask is not None else "") + " must have the same shape")
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    use = np.isfinite(dz) if mask is None else (mask.astype(bool) & np.isfinite(dz))
    fg = dz[use & (reference != 0)].astype(np.float64)
    bg = dz[use & (reference == 0)].astype(np.float64)
    both = np.concatenate([fg, bg])
    if valueRange is None:
        if both.size:
            low, high = np.percentile(both, [0.1, 99.9])
        else:
            low, high = -1.0, 1.0
        low, high = min(float(low), 0.0), max(float(high), 0.0)
        if high - low < 1e-6:
            low, high = low - 1.0, high + 1.0
    else:
        low, high = valueRange
        if not high > low:
            raise ValueError(f"valueRange must be (low, high) with high > low, got {valueRange}")
    edges = np.linspace(low, high, bins + 1)
    width = edges[1] - edges[0]

    def density(values: np.ndarray) -> np.ndarray:
        counts, _ = np.histogram(np.clip(values, low, high), bins=edges)
        total = counts.sum()
        return counts / (total * width) if total else np.zeros(bins)

    return LogitHistogram(
        binCenters=(edges[:-1] + edges[1:]) / 2,
        foregroundDensity=density(fg),
        backgroundDensity=density(bg),
        foregroundCount=int(fg.size),
        backgroundCount=int(bg.size),
        foregroundMean=float(fg.mean()) if fg.size else math.nan,
        backgroundMean=float(bg.mean()) if bg.size else math.nan,
        foregroundWrongSide=float((fg < 0).mean()) if fg.size else math.nan,
        backgroundWrongSide=float((bg > 0).mean()) if bg.size else math.nan,
    )


def updateLogitDistributionPlot(scene, histogram: LogitHistogram, nodes: PlotNodes | None = None,
                                title: str = "Logit distribution") -> PlotNodes:
    """Show a :class:`LogitHistogram` as two curves (foreground, background) against dz."""
    return updateLinePlot(
        scene, title, DZ_COLUMN, histogram.binCenters.tolist(),
        {FOREGROUND_CURVE: histogram.foregroundDensity.tolist(),
         BACKGROUND_CURVE: histogram.backgroundDensity.tolist()},
        nodes=nodes, xAxisTitle="dz = z_fg - z_bg (boundary at 0)", yAxisTitle="density",
    )
