"""Fixtures for the Slicer modules' tests: a fresh headless MRML scene per test (slicer-core).

The Lib packages (AsymSegLib, AsymSegTrainingLib) are imported from the module folders, as
Slicer does. The module files themselves (AsymSeg.py, AsymSegTraining.py) need qt, ctk and
slicer.ScriptedLoadableModule, which slicer-core lacks: the ``moduleFile`` fixture imports them
with small stand-ins that live only here and only for the duration of one test.
"""

from __future__ import annotations

import importlib.util
import sys
import types
import typing
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIRS = {"AsymSeg": REPO / "AsymSeg", "AsymSegTraining": REPO / "AsymSegTraining"}
for _folder in MODULE_DIRS.values():
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

try:  # slicer-core provides the real MRML; the tests that need it skip without it
    import slicer_core  # noqa: F401
    import slicer
except ImportError:
    slicer = None
HAVE_MRML = slicer is not None and hasattr(slicer, "vtkMRMLScene")
MRML_REASON = "slicer-core (real MRML) is not installed"


class MrmlEnvironment(types.SimpleNamespace):
    """scene, appLogic and the module logics (colors, volumes, segmentations, ...)."""


def makeEnvironment() -> MrmlEnvironment:
    """A headless Slicer application logic with its module logics, wired in the order MRML needs."""
    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    app.GetColorLogic().SetMRMLScene(scene)
    app.GetColorLogic().AddDefaultColorNodes()

    def register(logic, name):
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(app)
        app.SetModuleLogic(name, logic)
        return logic

    logics = {
        "colors": register(slicer.vtkMRMLColorLogic(), "Colors"),
        "volumes": register(slicer.vtkSlicerVolumesLogic(), "Volumes"),
        "segmentations": register(slicer.vtkSlicerSegmentationsModuleLogic(), "Segmentations"),
        "subjecthierarchy": register(slicer.vtkSlicerSubjectHierarchyModuleLogic(), "SubjectHierarchy"),
        "tables": register(slicer.vtkSlicerTablesLogic(), "Tables"),
        "plots": register(slicer.vtkSlicerPlotsLogic(), "Plots"),
    }
    return MrmlEnvironment(scene=scene, app=app, **logics)


@pytest.fixture
def mrml():
    """A fresh MRML scene with module logics; ``slicer.mrmlScene``/``slicer.modules`` set for the test."""
    if not HAVE_MRML:
        pytest.skip(MRML_REASON)
    env = makeEnvironment()
    saved = {name: getattr(slicer, name) for name in ("mrmlScene", "modules") if hasattr(slicer, name)}
    slicer.mrmlScene = env.scene
    def getter(logic):
        return lambda: logic

    slicer.modules = types.SimpleNamespace(**{
        name: types.SimpleNamespace(logic=getter(getattr(env, name)))
        for name in ("colors", "volumes", "segmentations", "subjecthierarchy", "tables", "plots")
    })
    try:
        yield env
    finally:
        env.scene.Clear(1)
        for name in ("mrmlScene", "modules"):
            if name in saved:
                setattr(slicer, name, saved[name])
            elif hasattr(slicer, name):
                delattr(slicer, name)


# ------------------------------------------------------------------ module files with stand-ins
def _standIns() -> dict[str, types.ModuleType]:
    """qt, ctk and slicer.ScriptedLoadableModule stand-ins: enough to import a module file."""
    qt = types.ModuleType("qt")
    ctk = types.ModuleType("ctk")
    slm = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent=None):
            self.parent = parent if parent is not None else types.SimpleNamespace()
            self.moduleName = type(self).__name__

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            super().__init__()  # cooperative, as Slicer's is
            name = type(self).__name__
            self.moduleName = name[: -len("Logic")] if name.endswith("Logic") else name

        def getParameterNode(self):
            scene = slicer.mrmlScene
            node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node is None:
                node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
                node.UnRegister(None)
                node.SetSingletonTag(self.moduleName)
                node.SetAttribute("ModuleName", self.moduleName)
                node = scene.AddNode(node)
            return node

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            raise RuntimeError("module widgets need the Slicer application")

        def setup(self):  # Slicer's adds the developer section
            pass

        def cleanup(self):  # Slicer's does nothing: a widget's own cleanup must come first
            pass

    class ScriptedLoadableModuleTest:
        pass

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleWidget,
                ScriptedLoadableModuleTest):
        setattr(slm, cls.__name__, cls)

    pnw = types.ModuleType("slicer.parameterNodeWrapper")

    def parameterNodeWrapper(cls):
        # Like the real decorator, resolve every annotation now (a typo fails at import).
        typing.get_type_hints(cls, include_extras=True)
        return cls

    def _annotation(*args, **kwargs):
        return None

    pnw.parameterNodeWrapper = parameterNodeWrapper
    pnw.parameterPack = parameterNodeWrapper
    pnw.WithinRange = pnw.Choice = pnw.Minimum = pnw.Maximum = _annotation

    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text

    return {"qt": qt, "ctk": ctk, "slicer.ScriptedLoadableModule": slm,
            "slicer.parameterNodeWrapper": pnw, "slicer.i18n": i18n}


@pytest.fixture
def moduleFile(mrml, monkeypatch):
    """Import a module file (``moduleFile("AsymSeg")``) with qt/ctk stand-ins, for its Logic."""
    standIns = _standIns()
    for name, module in standIns.items():
        if name in sys.modules and name in ("qt", "ctk"):
            continue  # a real Qt is present: keep it
        monkeypatch.setitem(sys.modules, name, module)
        if name.startswith("slicer."):
            monkeypatch.setattr(slicer, name.split(".", 1)[1], module, raising=False)

    def load(name: str):
        path = MODULE_DIRS[name] / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"_asymseg_test_module_{name}", path)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, module)  # as Slicer does; annotations resolve in it
        spec.loader.exec_module(module)
        return module

    return load


# ------------------------------------------------------------------ the Slicer application's views
class LayoutManagerStandIn:
    """What the modules call on ``slicer.app.layoutManager()`` (qSlicerLayoutManager is Qt).

    It holds a real vtkMRMLLayoutLogic and, as Slicer's slice widgets do, a real vtkMRMLSliceLogic
    per slice view (they create the slice composite nodes). ``setLayout`` sets the layout node's
    view arrangement, as in Slicer; the layout logic then creates that layout's view nodes.
    Slicer starts in the conventional layout.
    """

    def __init__(self, scene, appLogic) -> None:
        self._scene = scene
        self._appLogic = appLogic
        self._layoutLogic = slicer.vtkMRMLLayoutLogic()
        self._layoutLogic.SetMRMLScene(scene)
        self._sliceLogics: dict[str, object] = {}
        self.resetSliceViewsCalls = 0
        self.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView)

    def layoutLogic(self):
        return self._layoutLogic

    @property
    def layout(self) -> int:
        return self._layoutLogic.GetLayoutNode().GetViewArrangement()

    def setLayout(self, layoutId: int) -> None:
        self._layoutLogic.GetLayoutNode().SetViewArrangement(layoutId)
        for i in range(self._scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
            sliceNode = self._scene.GetNthNodeByClass(i, "vtkMRMLSliceNode")
            if sliceNode.GetLayoutName() not in self._sliceLogics:
                logic = slicer.vtkMRMLSliceLogic()
                logic.SetMRMLApplicationLogic(self._appLogic)
                logic.SetMRMLScene(self._scene)
                logic.SetSliceNode(sliceNode)
                self._sliceLogics[sliceNode.GetLayoutName()] = logic

    def resetSliceViews(self) -> None:
        self.resetSliceViewsCalls += 1

    def close(self) -> None:
        for logic in self._sliceLogics.values():
            logic.SetMRMLScene(None)
        self._layoutLogic.SetMRMLScene(None)


@pytest.fixture
def slicerApp(mrml, monkeypatch):
    """``slicer.app`` for the module files' GUI helpers: the real application logic, a layout manager stand-in."""
    manager = LayoutManagerStandIn(mrml.scene, mrml.app)
    app = types.SimpleNamespace(layoutManager=lambda: manager, applicationLogic=lambda: mrml.app)
    monkeypatch.setattr(slicer, "app", app, raising=False)
    yield app
    manager.close()  # before the scene is cleared
