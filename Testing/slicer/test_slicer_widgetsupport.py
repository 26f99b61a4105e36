"""What the module widgets share (AsymSegLib.widgetsupport), driven without the Slicer application.

The widgets the code is given are small stand-ins for Qt objects; the parameter node is a real MRML
node, the observers are Slicer's VTKObservationMixin and the job runs the real engine.
"""

from __future__ import annotations

import sys
import time
import types

import pytest

pytest.importorskip("slicer_core", reason="slicer-core (real MRML) is not installed")

from slicer import util as sutil  # noqa: E402
from AsymSegLib import jobs, process, widgetsupport  # noqa: E402
from AsymSegLib.models import ModelInfo  # noqa: E402

pytestmark = pytest.mark.slicer

TOOLTIP_ROLE = 3  # qt.Qt.ToolTipRole


class ComboBox:
    """The QComboBox calls the code makes; records the index changes it would signal."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.itemData: dict[tuple[int, int], str] = {}
        self.currentIndex = -1
        self.signalled: list[int] = []
        self._blocked = False

    @property
    def count(self) -> int:
        return len(self.items)

    def blockSignals(self, block: bool) -> bool:
        wasBlocked, self._blocked = self._blocked, block
        return wasBlocked

    def clear(self) -> None:
        self.items, self.itemData = [], {}
        self.setCurrentIndex(-1)

    def addItem(self, text: str) -> None:
        self.items.append(text)
        if self.currentIndex < 0:
            self.setCurrentIndex(0)

    def setItemData(self, index: int, value: str, role: int) -> None:
        self.itemData[(index, role)] = value

    def setCurrentIndex(self, index: int) -> None:
        if index != self.currentIndex:
            self.currentIndex = index
            if not self._blocked:
                self.signalled.append(index)


MODELS = [ModelInfo("starter", channels=("flair", "t1c"), source="bundled", description="DeepMedic"),
          ModelInfo("mine", channels=("flair",), source="user")]


def test_model_selector_is_refilled_silently_and_keeps_the_wanted_model():
    selector = ComboBox()
    widgetsupport.fillModelSelector(selector, MODELS, "mine", TOOLTIP_ROLE)
    assert selector.items == ["starter (bundled)", "mine (user)"]
    assert selector.itemData == {(0, TOOLTIP_ROLE): "DeepMedic\nChannels: flair, t1c",
                                 (1, TOOLTIP_ROLE): "Channels: flair"}
    assert selector.currentIndex == 1 and widgetsupport.selectedModel(selector, MODELS) is MODELS[1]
    widgetsupport.fillModelSelector(selector, MODELS, "gone", TOOLTIP_ROLE)
    assert selector.currentIndex == 0 and selector.count == 2  # refilled, not appended
    widgetsupport.fillModelSelector(selector, [], "mine", TOOLTIP_ROLE)
    assert selector.currentIndex == -1 and widgetsupport.selectedModel(selector, []) is None
    assert selector.signalled == [] and selector.blockSignals(False) is False  # blocked only while filling


class BoundParameterNode:
    """A parameter node as parameterNodeWrapper makes it: a real MRML node plus connectGui/disconnectGui."""

    def __init__(self, node) -> None:
        self.node = node
        self.events: list[tuple[str, object]] = []

    def connectGui(self, ui):
        self.events.append(("connect", ui))
        return f"tag{len(self.events)}"

    def disconnectGui(self, tag) -> None:
        self.events.append(("disconnect", tag))

    def AddObserver(self, event, method, priority=0.0):
        return self.node.AddObserver(event, method, priority)

    def RemoveObserver(self, tag) -> None:
        self.node.RemoveObserver(tag)


class Timer:
    def __init__(self) -> None:
        self.active = False
        self.stops = 0

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False
        self.stops += 1


class Panel(widgetsupport.PanelWidgetMixin, sutil.VTKObservationMixin):
    """A module widget reduced to what the mixin asks for; records the calls it gets."""

    def __init__(self) -> None:
        sutil.VTKObservationMixin.__init__(self)
        self.ui = types.SimpleNamespace(name="ui")
        self.parent = types.SimpleNamespace(isEntered=True)
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._timer = Timer()
        self.calls: list = []

    def initializeParameterNode(self) -> None:
        self.calls.append("initialize")

    def _checkCanRun(self, caller=None, event=None) -> None:
        self.calls.append("check")

    def _showProgress(self, job) -> None:
        job.process.poll()
        self.calls.append("progress")

    def _showOutcome(self, job) -> None:
        self.calls.append(("outcome", job.finish()))

    def _setRunning(self, running: bool) -> None:
        self.calls.append(("running", running))


def test_panel_binds_the_parameter_node_follows_its_changes_and_lets_it_go(mrml):
    panel = Panel()
    first = BoundParameterNode(mrml.scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "first"))
    panel.setParameterNode(first)
    assert first.events == [("connect", panel.ui)] and panel.calls == ["check"]
    first.node.Modified()
    assert panel.calls == ["check", "check"]
    second = BoundParameterNode(mrml.scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "second"))
    panel.setParameterNode(second)
    assert first.events[-1] == ("disconnect", "tag1") and second.events == [("connect", panel.ui)]
    first.node.Modified()
    second.node.Modified()
    assert panel.calls == ["check"] * 4  # the new node's connect and change only
    panel.setParameterNode(None)
    second.node.Modified()
    assert second.events[-1] == ("disconnect", "tag1") and panel._parameterNode is None
    assert panel.calls == ["check"] * 4
    panel.setParameterNode(first)
    panel.exit()
    assert first.events[-2:] == [("connect", panel.ui), ("disconnect", "tag3")]
    assert panel._parameterNodeGuiTag is None
    first.node.Modified()
    assert panel.calls == ["check"] * 5
    panel.onSceneEndClose(None, None)
    panel.parent.isEntered = False
    panel.onSceneEndClose(None, None)
    assert panel.calls[-1] == "initialize" and panel.calls.count("initialize") == 1


def test_cleanup_kills_the_running_engine_and_stops_observing(mrml):
    panel = Panel()
    bound = BoundParameterNode(mrml.scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "p"))
    panel.setParameterNode(bound)
    proc = process.EngineProcess()
    proc.startCommand([sys.executable, "-c", "import time; time.sleep(60)"])
    panel._job = types.SimpleNamespace(process=proc)
    panel.cleanup()
    assert proc.wait(timeout=30).cancelled
    bound.node.Modified()
    assert panel.calls == ["check"] and panel.Observations == []


class VersionJob(jobs.EngineJob):
    """The smallest engine job: ``asymseg --version``; its result is the engine result."""

    device = "cpu"

    def prepare(self) -> list[str]:
        (self._makeFolder("asymseg-version-") / "input.txt").write_text("x")
        return ["--version"]

    def finish(self) -> process.EngineResult:
        try:
            return self.process.result()
        finally:
            self.cleanup()


def test_timer_polls_a_real_engine_job_to_its_outcome_then_goes_idle(mrml, tmp_path):
    panel = Panel()
    job = VersionJob(mrml.scene, mrml.segmentations, workDirectory=tmp_path)
    job.start()
    assert job.folder.is_dir()
    panel._job = job
    panel._timer.start()
    deadline = time.monotonic() + 120
    while panel._job is not None and time.monotonic() < deadline:
        panel._onTimer()
        time.sleep(0.05)
    assert panel._job is None and not panel._timer.active and panel._timer.stops == 1
    outcomes = [c for c in panel.calls if isinstance(c, tuple) and c[0] == "outcome"]
    assert len(outcomes) == 1 and outcomes[0][1].succeeded
    assert panel.calls[0] == "progress" and panel.calls[-2:] == [outcomes[0], ("running", False)]
    assert list(tmp_path.iterdir()) == []  # the job's folder is gone
    panel._onTimer()  # a stray tick while idle stops the timer and does nothing else
    assert panel._timer.stops == 2 and panel.calls[-1] == ("running", False)
