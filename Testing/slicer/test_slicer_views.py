"""Results in Slicer's views on real MRML: layouts, slice layers, table and plot views.

``slicer.app`` cannot exist here (it is the Qt application); the ``slicerApp`` fixture gives the
real application logic and a layout manager stand-in holding a real vtkMRMLLayoutLogic, so the
module files' ``showResults`` and ``showTrainingPlots`` run unchanged against real MRML.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer_core", reason="slicer-core (real MRML) is not installed")

import slicer  # noqa: E402
from slicer import util as sutil  # noqa: E402

from AsymSegLib import jobs, plots, process, tables, views  # noqa: E402
from mrmlhelpers import addVolume  # noqa: E402

pytestmark = pytest.mark.slicer

REPO = Path(__file__).resolve().parents[2]
#: The Slicer-side sources: module files and their Qt-free Lib packages.
SLICER_SOURCES = sorted([REPO / "AsymSeg" / "AsymSeg.py", REPO / "AsymSegTraining" / "AsymSegTraining.py",
                         *(REPO / "AsymSeg" / "AsymSegLib").glob("*.py"),
                         *(REPO / "AsymSegTraining" / "AsymSegTrainingLib").glob("*.py")])


def viewNodes(scene, className):
    return [scene.GetNthNodeByClass(i, className) for i in range(scene.GetNumberOfNodesByClass(className))]


def segmentationResult(mrml, withReference: bool):
    volume = addVolume(mrml.scene, np.zeros((4, 5, 6), np.float32), np.eye(4), "case FLAIR")
    output = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "case tumour core")
    request = jobs.SegmentationRequest(volumes={"flair": volume}, model="m", outputSegmentation=output)
    result = jobs.SegmentationResult(engine=process.EngineResult(returnCode=0))
    if withReference:
        result.metricsTable = mrml.scene.AddNewNodeByClass("vtkMRMLTableNode", "case metrics")
        tables.updateMetricsTable(result.metricsTable, {"dsc": 0.8, "sensitivity": 0.9, "precision": 0.7})
        rng = np.random.default_rng(0)
        reference = rng.random((4, 5, 6)) < 0.3
        histogram = plots.logitHistograms(rng.normal(size=(4, 5, 6)), reference, bins=10)
        result.plotNodes = plots.updateLogitDistributionPlot(mrml.scene, histogram, title="case logits")
    return volume, request, result


def test_results_with_a_reference_show_in_the_plot_table_layout(mrml, slicerApp, moduleFile):
    logic = moduleFile("AsymSeg").AsymSegLogic
    volume, request, result = segmentationResult(mrml, withReference=True)
    logic.showResults(request, result)
    manager = slicerApp.layoutManager()
    assert manager.layout == slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView
    tableViews = viewNodes(mrml.scene, "vtkMRMLTableViewNode")
    plotViews = viewNodes(mrml.scene, "vtkMRMLPlotViewNode")
    assert tableViews and all(v.GetTableNodeID() == result.metricsTable.GetID() for v in tableViews)
    assert plotViews and all(v.GetPlotChartNodeID() == result.plotNodes.chart.GetID() for v in plotViews)
    composites = viewNodes(mrml.scene, "vtkMRMLSliceCompositeNode")
    assert composites and all(c.GetBackgroundVolumeID() == volume.GetID() for c in composites)
    assert manager.resetSliceViewsCalls == 1


def test_results_without_a_reference_keep_the_layout_and_show_the_volume(mrml, slicerApp, moduleFile):
    manager = slicerApp.layoutManager()
    manager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView)
    volume, request, result = segmentationResult(mrml, withReference=False)
    moduleFile("AsymSeg").AsymSegLogic.showResults(request, result)
    assert manager.layout == slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView
    assert all(c.GetBackgroundVolumeID() == volume.GetID()
               for c in viewNodes(mrml.scene, "vtkMRMLSliceCompositeNode"))


def test_an_unknown_layout_is_refused_by_name(mrml, slicerApp):
    layoutNode = slicerApp.layoutManager().layoutLogic().GetLayoutNode()
    with pytest.raises(ValueError, match="layout 987654 is not defined"):
        views.setLayout(layoutNode, 987654)


def test_training_plots_fill_the_two_plot_views_of_the_training_layout(mrml, slicerApp, moduleFile):
    module = moduleFile("AsymSegTraining")
    loss = plots.updateLinePlot(mrml.scene, "run training loss", "iteration", [1.0, 2.0], {"loss clean": [0.9, 0.7]})
    validation = plots.updateLinePlot(mrml.scene, "run validation", "iteration", [2.0], {"DSC": [0.5]})

    class Job:
        lossPlot, validationPlot = loss, None

    module.AsymSegTrainingLogic.showTrainingPlots(Job)  # validation not plotted yet
    assert slicerApp.layoutManager().layout == module.TRAINING_LAYOUT_ID
    byTag = {v.GetSingletonTag(): v for v in viewNodes(mrml.scene, "vtkMRMLPlotViewNode")}
    assert set(byTag) == {"AsymSegLoss", "AsymSegValidation"}
    assert byTag["AsymSegLoss"].GetPlotChartNodeID() == loss.chart.GetID()
    assert not byTag["AsymSegValidation"].GetPlotChartNodeID()
    Job.validationPlot = validation
    module.AsymSegTrainingLogic.showTrainingPlots(Job)
    assert byTag["AsymSegValidation"].GetPlotChartNodeID() == validation.chart.GetID()
    shown = slicerApp.layoutManager().layoutLogic().GetViewNodes()
    assert sorted(shown.GetItemAsObject(i).GetName() for i in range(shown.GetNumberOfItems())) == [
        "AsymSegLoss", "AsymSegValidation", "Red"]


# ------------------------------------------------------------------ names the sources use exist in MRML
_DOTTED = re.compile(r"\bslicer\.(vtk\w+)(?:\.(\w+))?")
_CLASS_STRING = re.compile(r"""["'](vtkMRML\w+|vtkSlicer\w+)["']""")
_UTIL = re.compile(r"\b(?:slicer\.util|sutil)\.(\w+)")
_SCENE = re.compile(r"\bslicer\.mrmlScene\.(\w+)")
_APP_LOGIC = re.compile(r"applicationLogic\(\)\.(\w+)")


def slicerNamesUsed(source: str) -> dict[str, set[str]]:
    """Names a source file takes from slicer-core: classes with their attributes, util functions,
    scene and application-logic methods."""
    names: dict[str, set[str]] = {"classes": set(), "attributes": set(), "util": set(), "scene": set(),
                                  "appLogic": set()}
    code = "\n".join(line.split("#", 1)[0] for line in source.splitlines())  # not in comments
    for cls, attribute in _DOTTED.findall(code):
        names["classes"].add(cls)
        if attribute:
            names["attributes"].add(f"{cls}.{attribute}")
    names["classes"] |= set(_CLASS_STRING.findall(code))
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "slicer":
            names["classes"] |= {a.name for a in node.names if a.name.startswith("vtk")}
    names["util"] |= set(_UTIL.findall(code))
    names["scene"] |= set(_SCENE.findall(code))
    names["appLogic"] |= set(_APP_LOGIC.findall(code))
    return names


def missingSlicerNames(source: str) -> list[str]:
    used = slicerNamesUsed(source)
    missing = [c for c in sorted(used["classes"]) if not hasattr(slicer, c)]
    for dotted in sorted(used["attributes"]):
        cls, attribute = dotted.split(".")
        if hasattr(slicer, cls) and not hasattr(getattr(slicer, cls), attribute):
            missing.append(dotted)
    missing += [f"slicer.util.{n}" for n in sorted(used["util"]) if not hasattr(sutil, n)]
    missing += [f"vtkMRMLScene.{n}" for n in sorted(used["scene"]) if not hasattr(slicer.vtkMRMLScene, n)]
    missing += [f"vtkSlicerApplicationLogic.{n}" for n in sorted(used["appLogic"])
                if not hasattr(slicer.vtkSlicerApplicationLogic, n)]
    return missing


@pytest.mark.parametrize("path", SLICER_SOURCES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_mrml_class_enum_and_method_the_sources_name_exists_in_slicer_core(path):
    assert missingSlicerNames(path.read_text(encoding="utf-8")) == []


def test_the_name_check_reports_a_layout_that_slicer_does_not_have():
    source = ("import slicer\n"
              "layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpQuantitativeView)\n"
              "node = scene.AddNewNodeByClass('vtkMRMLNoSuchNode', 'x')\n"
              "slicer.util.noSuchFunction()\n"
              "slicer.app.applicationLogic().PropagateNothing()\n")
    assert missingSlicerNames(source) == ["vtkMRMLNoSuchNode", "vtkMRMLLayoutNode.SlicerLayoutFourUpQuantitativeView",
                                          "slicer.util.noSuchFunction",
                                          "vtkSlicerApplicationLogic.PropagateNothing"]
    used = slicerNamesUsed((REPO / "AsymSeg" / "AsymSeg.py").read_text(encoding="utf-8"))
    assert {"vtkMRMLSegmentationNode", "vtkMRMLTableNode"} <= used["classes"]
    assert "resetSliceViews" in used["util"]


def test_the_tumour_core_terminology_names_the_list_that_has_neoplasm():
    from AsymSegLib import scene as S

    context, category, kind, _, anatomicContext, region, _ = S.TUMOUR_CORE_TERMINOLOGY.split("~")
    # Neoplasm (SCT 108369006) under Morphologically Altered Structure is in the DICOM master list;
    # the 3D Slicer General Anatomy list, the GenericAnatomyColors subset, lacks it
    assert context == "Segmentation category and type - DICOM master list"
    assert category == "SCT^49755003^Morphologically Altered Structure" and kind == "SCT^108369006^Neoplasm"
    assert anatomicContext == "Anatomic codes - DICOM master list" and region == "SCT^12738006^Brain"
