"""Show results in Slicer's views: layouts, slice layers, table and plot views, through MRML only.

Slicer's layout manager (Qt) only draws what the layout node says: setting the layout node's view
arrangement is what ``layoutManager.setLayout`` does, and the layout logic then creates the view
nodes of that layout. Everything here works on the layout node, the selection node and the view
nodes, so it runs under plain MRML (slicer-core) and is tested there. The module files fetch
the layout node from ``slicer.app.layoutManager().layoutLogic()`` and fit the slice views.
"""

from __future__ import annotations

from collections.abc import Mapping

import slicer

#: The layout for a run with a reference: four views with a plot view and a table view.
RESULTS_LAYOUT = slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView


def _nodesByClass(scene, className: str) -> list:
    return [scene.GetNthNodeByClass(i, className) for i in range(scene.GetNumberOfNodesByClass(className))]


def setLayout(layoutNode, layoutId: int) -> None:
    """Switch to a layout that the layout node knows.

    Raises:
        ValueError: the layout is unknown (Slicer would show nothing new).
    """
    if not layoutNode.IsLayoutDescription(int(layoutId)):
        raise ValueError(f"layout {layoutId} is not defined in this Slicer")
    if layoutNode.GetViewArrangement() != int(layoutId):
        layoutNode.SetViewArrangement(int(layoutId))


def addLayout(layoutNode, layoutId: int, description: str) -> None:
    """Define a custom layout once (a later call with the same id keeps the first description)."""
    if not layoutNode.IsLayoutDescription(int(layoutId)):
        layoutNode.AddLayoutDescription(int(layoutId), description)


def showVolumeInSliceViews(scene, volumeNode) -> None:
    """Make ``volumeNode`` the background of every slice view (as ``slicer.util.setSliceViewerLayers``)."""
    for composite in _nodesByClass(scene, "vtkMRMLSliceCompositeNode"):
        composite.SetBackgroundVolumeID(volumeNode.GetID() if volumeNode is not None else None)


def showResults(scene, appLogic, layoutNode, volumeNode, tableNode=None, chartNode=None) -> None:
    """Show the input volume and, when given, the metrics table and a chart in the plot/table layout.

    Args:
        scene: the vtkMRMLScene.
        appLogic: the application logic (``slicer.app.applicationLogic()``): its selection node
            and propagation put the table and chart into the table and plot views.
        layoutNode: the layout node (``layoutManager.layoutLogic().GetLayoutNode()``).
        volumeNode: the background of the slice views.
        tableNode: a vtkMRMLTableNode to show, or None.
        chartNode: a vtkMRMLPlotChartNode to show, or None.
    """
    showVolumeInSliceViews(scene, volumeNode)
    if tableNode is None and chartNode is None:
        return
    setLayout(layoutNode, RESULTS_LAYOUT)
    selection = appLogic.GetSelectionNode()
    if tableNode is not None:
        selection.SetActiveTableID(tableNode.GetID())
        appLogic.PropagateTableSelection()
    if chartNode is not None:
        selection.SetActivePlotChartID(chartNode.GetID())
        appLogic.PropagatePlotChartSelection()


def showChartsInLayout(scene, layoutNode, layoutId: int, description: str, charts: Mapping[str, object]) -> list:
    """Switch to a custom layout and put a chart into each plot view named by its singleton tag.

    Args:
        scene: the vtkMRMLScene.
        layoutNode: the layout node.
        layoutId: the custom layout's id.
        description: its XML description (plot views carry ``singletontag``).
        charts: plot-view singleton tag -> vtkMRMLPlotChartNode (None: leave that view alone).

    Returns:
        The plot view nodes that received a chart.
    """
    addLayout(layoutNode, layoutId, description)
    setLayout(layoutNode, layoutId)
    shown = []
    for viewNode in _nodesByClass(scene, "vtkMRMLPlotViewNode"):
        chart = charts.get(viewNode.GetSingletonTag())
        if chart is not None:
            viewNode.SetPlotChartNodeID(chart.GetID())
            shown.append(viewNode)
    return shown
