"""The module files (AsymSeg.py, AsymSegTraining.py) imported with qt/ctk stand-ins, for their Logic."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("slicer_core", reason="slicer-core (real MRML) is not installed")

from AsymSegLib import logicsupport, widgetsupport  # noqa: E402
from mrmlhelpers import addVolume  # noqa: E402

pytestmark = pytest.mark.slicer

VOXELS = np.zeros((2, 2, 2), np.float32)


def test_asymseg_logic_assigns_scene_volumes_to_model_channels(mrml, moduleFile):
    module = moduleFile("AsymSeg")
    flair = addVolume(mrml.scene, VOXELS, np.eye(4), "Flair_subtrMeanDivStd")
    t1c = addVolume(mrml.scene, VOXELS, np.eye(4), "T1c_subtrMeanDivStd")
    addVolume(mrml.scene, VOXELS, np.eye(4), "brainmask")
    volumes = [mrml.scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode") for i in range(3)]
    assignment = module.AsymSegLogic.assignVolumes(["flair", "t1c", "t2"], volumes)
    assert assignment == {"flair": flair, "t1c": t1c, "t2": None}


def test_reference_label_text_is_parsed(moduleFile):
    module = moduleFile("AsymSeg")
    assert module.parseLabelValues("1,3,4") == [1, 3, 4]
    assert module.parseLabelValues(" 1; 4 ") == [1, 4]
    assert module.parseLabelValues("") is None
    with pytest.raises(ValueError, match="reference labels 'core': expected integers"):
        module.parseLabelValues("core")
    assert module.DEFAULT_REFERENCE_LABELS == "1,3,4"
    assert module.PANEL_CHANNELS == ("flair", "t1c", "t1", "t2")


@pytest.mark.parametrize("moduleName", ["AsymSeg", "AsymSegTraining"])
def test_logic_uses_the_given_interpreter_and_its_processes(moduleFile, moduleName):
    logicClass = getattr(moduleFile(moduleName), f"{moduleName}Logic")
    logic = logicClass(pythonExecutable=sys.executable)
    proc = logic.newEngineProcess()
    assert proc.pythonExecutable == sys.executable
    assert logicsupport.pythonSlicerExecutable()  # PythonSlicer inside Slicer, this Python here
    assert logicClass().pythonExecutable == logicsupport.pythonSlicerExecutable()
    assert logic.moduleName == moduleName  # ScriptedLoadableModuleLogic.__init__ ran too
    result = logic.runEngine(["--version"], timeout=120)
    assert result.succeeded


@pytest.mark.parametrize("moduleName", ["AsymSeg", "AsymSegTraining"])
def test_the_slicer_5_12_console_launcher_is_offered_when_available(moduleFile, moduleName):
    launcher = getattr(moduleFile(moduleName), f"{moduleName}Logic").consoleLauncher()
    # slicer-core ships Slicer's util.py, whose launchConsoleProcess has blocking=False (5.12+)
    assert callable(launcher)


@pytest.mark.parametrize("moduleName", ["AsymSeg", "AsymSegTraining"])
def test_widgets_use_the_shared_panel_methods_and_provide_what_they_call(moduleFile, moduleName):
    widget = getattr(moduleFile(moduleName), f"{moduleName}Widget")
    for name in ("cleanup", "exit", "onSceneEndClose", "_onTimer"):
        assert getattr(widget, name) is getattr(widgetsupport.PanelWidgetMixin, name), name
    for name in ("setup", "enter", "initializeParameterNode", "onSceneStartClose", "refreshModels",
                 "_checkCanRun", "_showProgress", "_showOutcome", "_setRunning", "_appendLog"):
        assert name in vars(widget), f"{moduleName}Widget lacks {name}"


def test_training_case_ids_are_folder_safe_and_unique(moduleFile):
    module = moduleFile("AsymSegTraining")
    assert module.caseIdFromName("pat 5 FLAIR (1)", set()) == "pat_5_FLAIR_1"
    assert module.caseIdFromName("pat/5", {"pat_5"}) == "pat_5_2"
    assert module.caseIdFromName("***", set()) == "case"
    assert module.TRAINING_LAYOUT_ID > 1000


def test_training_layout_has_a_slice_view_and_two_plot_views(moduleFile):
    import xml.etree.ElementTree as ET

    layout = ET.fromstring(moduleFile("AsymSegTraining").TRAINING_LAYOUT)
    views = [(v.get("class"), v.get("singletontag")) for v in layout.iter("view")]
    assert views == [("vtkMRMLSliceNode", "Red"), ("vtkMRMLPlotViewNode", "AsymSegLoss"),
                     ("vtkMRMLPlotViewNode", "AsymSegValidation")]
