"""AsymSeg: brain-tumour-core segmentation with models trained for small data.

The module file holds the Slicer classes only (Module, ParameterNode, Widget, Logic, Test). All
computation runs in the ``asymseg`` engine in a subprocess; everything testable without the
Slicer application lives in the Qt-free AsymSegLib package.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import qt
import slicer
from slicer import (vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode,
                    vtkMRMLTableNode)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from AsymSegLib import channels, install, jobs, models, sampledata, scene, views, widgetsupport
from AsymSegLib.logicsupport import EngineLogicMixin
from AsymSegLib.widgetsupport import PanelWidgetMixin

#: The channels the panel offers, in display order (a model uses some of them).
PANEL_CHANNELS = ("flair", "t1c", "t1", "t2")
#: BRATS 2015 tumour-core labels: the default foreground of a labelmap reference.
DEFAULT_REFERENCE_LABELS = "1,3,4"
#: Milliseconds the threshold slider rests before the mask and metrics follow it.
THRESHOLD_SETTLE_MS = 150


def parseLabelValues(text: str) -> list[int] | None:
    """``"1,3,4"`` -> [1, 3, 4]; empty -> None (every non-zero label).

    Raises:
        ValueError: a value that is not an integer.
    """
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    if not parts:
        return None
    try:
        return [int(p) for p in parts]
    except ValueError as err:
        raise ValueError(f"reference labels {text!r}: expected integers separated by commas") from err


#
# AsymSeg
#


class AsymSeg(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("AsymSeg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["AsymSeg maintainers (SlicerAsymSeg project)"]
        self.parent.helpText = _("""
Segments the brain-tumour core from MR volumes (FLAIR, post-contrast T1, ...) with a model
trained for small data. Given a reference segmentation it also shows DSC, sensitivity,
precision, specificity, HD95 and volumes, and the distribution of the model's logits for
reference-foreground and reference-background voxels. Fine-tune models on your own cases with
the AsymSegTraining module.
""")
        self.parent.acknowledgementText = _("""
AsymSeg implements the asymmetric techniques of Z. Li, K. Kamnitsas and B. Glocker,
"Overfitting of neural nets under class imbalance: analysis and improvements for segmentation",
MICCAI 2019. Sample data: BRATS 2015 (Menze et al., IEEE TMI 2015) as redistributed with DeepMedic,
licence CC BY-NC-SA 3.0.
""")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Add the BraTS sample cases to the SampleData module."""
    import SampleData

    iconsPath = os.path.join(os.path.dirname(__file__), "Resources", "Icons")
    sampledata.registerSampleData(SampleData.SampleDataLogic.registerCustomSampleDataSource,
                                  thumbnailFileName=os.path.join(iconsPath, "AsymSeg.png"))


#
# AsymSegParameterNode
#


@parameterNodeWrapper
class AsymSegParameterNode:
    """The panel's settings, saved with the scene.

    flairVolume, t1cVolume, t1Volume, t2Volume: input volume per channel (the model uses some).
    modelName: the selected model's name.
    forceCpu: run on the CPU even when a GPU exists.
    outputSegmentation: receives the "Tumour core" segment.
    writeProbabilities / probabilityVolume: also output the foreground probability.
    referenceNode: a segmentation or labelmap to compare with (metrics, logit plot).
    referenceLabels: foreground label values of a labelmap reference (comma-separated).
    metricsTable: receives the metrics.
    """

    flairVolume: vtkMRMLScalarVolumeNode
    t1cVolume: vtkMRMLScalarVolumeNode
    t1Volume: vtkMRMLScalarVolumeNode
    t2Volume: vtkMRMLScalarVolumeNode
    modelName: str = ""
    forceCpu: bool = False
    outputSegmentation: vtkMRMLSegmentationNode
    writeProbabilities: bool = False
    probabilityVolume: vtkMRMLScalarVolumeNode
    referenceNode: Optional[Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]]
    referenceLabels: str = DEFAULT_REFERENCE_LABELS
    metricsTable: vtkMRMLTableNode


#
# AsymSegWidget
#


class AsymSegWidget(PanelWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: wires the .ui to the parameter node and runs jobs through the Logic.

    Parameter-node wiring, cleanup and job polling come from
    :class:`AsymSegLib.widgetsupport.PanelWidgetMixin`.
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._models: list[models.ModelInfo] = []
        self._modelsFolderStamp = None
        self._timer = None
        self._session = None  # the last run's operating point (AsymSegLib.operatingpoint)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/AsymSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = AsymSegLogic()

        self._channelWidgets = {
            "flair": (self.ui.flairLabel, self.ui.flairVolumeSelector),
            "t1c": (self.ui.t1cLabel, self.ui.t1cVolumeSelector),
            "t1": (self.ui.t1Label, self.ui.t1VolumeSelector),
            "t2": (self.ui.t2Label, self.ui.t2VolumeSelector),
        }
        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.connect("timeout()", self._onTimer)
        # The slider tracks while dragged; the mask follows once it rests for a moment, so a drag
        # recomputes the mask (threshold and cleaning of a whole volume) a few times, not per pixel.
        self._thresholdTimer = qt.QTimer()
        self._thresholdTimer.setSingleShot(True)
        self._thresholdTimer.setInterval(THRESHOLD_SETTLE_MS)
        self._thresholdTimer.connect("timeout()", self._applyThreshold)
        self._pendingThreshold: float | None = None

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.modelSelector.connect("currentIndexChanged(int)", self.onModelSelected)
        self.ui.refreshModelsButton.connect("clicked(bool)", lambda checked: self.refreshModels())
        self.ui.importModelArchiveButton.connect("clicked(bool)", self.onImportModelArchive)
        self.ui.importModelFolderButton.connect("clicked(bool)", self.onImportModelFolder)
        self.ui.openModelsFolderButton.connect("clicked(bool)", self.onOpenModelsFolder)
        self.ui.autoAssignButton.connect("clicked(bool)", lambda checked: self.autoAssignChannels(overwrite=True))
        self.ui.thresholdSlider.connect("valueChanged(double)", self.onThresholdChanged)
        self.ui.resetThresholdButton.connect("clicked(bool)", self.onResetThreshold)
        self.ui.saveModelCopyButton.connect("clicked(bool)", self.onSaveModelCopy)
        self.ui.progressBar.setVisible(False)
        self.ui.logCollapsibleButton.collapsed = True
        self._showSession(None)

        self.initializeParameterNode()
        self.refreshModels()

    def enter(self) -> None:
        self.initializeParameterNode()
        if self._modelsFolderChanged():
            self.refreshModels()  # e.g. a model fine-tuned in AsymSegTraining

    def onSceneStartClose(self, caller, event) -> None:
        if self._job is not None:
            self._job.process.kill()
        self._showSession(None)
        self.setParameterNode(None)

    # ------------------------------------------------------------------ parameter node
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        self.autoAssignChannels(overwrite=False)

    def _selectedModel(self) -> models.ModelInfo | None:
        return widgetsupport.selectedModel(self.ui.modelSelector, self._models)

    def _checkCanRun(self, caller=None, event=None) -> None:
        if self._job is not None:
            self.ui.applyButton.enabled = True
            return
        reason = self._missingInput()
        self.ui.applyButton.enabled = reason is None
        self.ui.applyButton.toolTip = reason or _("Segment the tumour core")

    def _missingInput(self) -> str | None:
        model = self._selectedModel()
        if model is None:
            return _("Select a model")
        unsupported = [c for c in model.channels if channels.canonicalChannel(c) not in PANEL_CHANNELS]
        if unsupported:
            return _("The model needs channels this panel does not offer: {names}").format(names=", ".join(unsupported))
        for channel in model.channels:
            if self._volumeFor(channel) is None:
                return _("Select the {channel} volume").format(channel=channels.channelTitle(channel))
        return None

    def _volumeFor(self, channel: str):
        if self._parameterNode is None:
            return None
        return getattr(self._parameterNode, f"{channels.canonicalChannel(channel)}Volume")

    # ------------------------------------------------------------------ models
    def _modelsFolderChanged(self) -> bool:
        folder = models.userModelsDirectory()
        stamp = folder.stat().st_mtime if folder.is_dir() else None
        changed = stamp != self._modelsFolderStamp
        self._modelsFolderStamp = stamp
        return changed

    def refreshModels(self) -> None:
        """Read the model cards and refill the selector (no engine process: the panel never waits)."""
        wanted = self._parameterNode.modelName if self._parameterNode else ""
        with slicer.util.tryWithErrorDisplay(_("Failed to list the models."), waitCursor=False):
            self._models = self.logic.listModels()
        self._modelsFolderChanged()
        widgetsupport.fillModelSelector(self.ui.modelSelector, self._models, wanted, qt.Qt.ToolTipRole)
        self.onModelSelected(self.ui.modelSelector.currentIndex)

    def onModelSelected(self, index: int) -> None:
        model = self._selectedModel()
        needed = {channels.canonicalChannel(c) for c in model.channels} if model else set()
        for channel, (label, selector) in self._channelWidgets.items():
            visible = channel in needed
            label.setVisible(visible)
            selector.setVisible(visible)
        if model is not None and self._parameterNode is not None:
            self._parameterNode.modelName = model.name
            self.ui.modelSelector.toolTip = model.tooltip()
        self.autoAssignChannels(overwrite=False)
        self._checkCanRun()

    def autoAssignChannels(self, overwrite: bool) -> None:
        """Fill the channel selectors from volume names (only empty ones unless ``overwrite``)."""
        model = self._selectedModel()
        if model is None or self._parameterNode is None:
            return
        volumes = [n for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                   if not n.IsA("vtkMRMLLabelMapVolumeNode")]
        assignment = self.logic.assignVolumes(model.channels, volumes)
        for channel, node in assignment.items():
            attribute = f"{channels.canonicalChannel(channel)}Volume"
            if node is not None and (overwrite or getattr(self._parameterNode, attribute) is None):
                setattr(self._parameterNode, attribute, node)

    def onImportModelArchive(self, checked=False) -> None:
        path = qt.QFileDialog.getOpenFileName(self.parent, _("Import a model archive"), "",
                                              _("Model archives (*.zip *.tar *.tar.gz *.tgz)"))
        if path:
            self._importModel(path)

    def onImportModelFolder(self, checked=False) -> None:
        path = qt.QFileDialog.getExistingDirectory(self.parent, _("Import a model folder"))
        if path:
            self._importModel(path)

    def _importModel(self, path: str) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to import the model."), waitCursor=True):
            summary = self.logic.importModel(path)
            self._appendLog(summary.strip())
        self.refreshModels()

    def onOpenModelsFolder(self, checked=False) -> None:
        folder = models.userModelsDirectory()
        folder.mkdir(parents=True, exist_ok=True)
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(folder)))

    # ------------------------------------------------------------------ running
    def onApplyButton(self, checked=False) -> None:
        if self._job is not None:
            self._job.cancel()
            self.ui.applyButton.text = _("Cancelling...")
            self.ui.applyButton.enabled = False
            self._appendLog(_("Cancelling..."))
            return
        self.ui.logTextEdit.clear()
        with slicer.util.tryWithErrorDisplay(_("Failed to start the segmentation."), waitCursor=True):
            self.logic.ensureDependencies(confirm=lambda text: slicer.util.confirmOkCancelDisplay(text),
                                          onStatus=self._showInstallStatus, keepAlive=slicer.app.processEvents)
            request = self._buildRequest()
            model = self._selectedModel()
            note = sampledata.trainedOnNote(model.name, model.card, [v.GetName() for v in request.volumes.values()])
            if note:
                self._appendLog(_("Note: {note}.").format(note=note))
            self._job = self.logic.startSegmentation(request, launcher=self.logic.consoleLauncher())
            self._setRunning(True)
            self._timer.start()
        if self._job is None:  # a failed install or start: back to idle, Apply tries again
            self._setRunning(False)

    def _buildRequest(self) -> jobs.SegmentationRequest:
        p = self._parameterNode
        model = self._selectedModel()
        if model is None:
            raise ValueError(_("Select a model"))
        volumes = {channel: self._volumeFor(channel) for channel in model.channels}
        firstVolume = next(iter(volumes.values()))
        if p.outputSegmentation is None:
            p.outputSegmentation = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", f"{firstVolume.GetName() if firstVolume else 'AsymSeg'} tumour core")
        if p.writeProbabilities and p.probabilityVolume is None:
            p.probabilityVolume = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLScalarVolumeNode", f"{p.outputSegmentation.GetName()} probability")
        if p.referenceNode is not None and p.metricsTable is None:
            p.metricsTable = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLTableNode", f"{p.outputSegmentation.GetName()} metrics")
        return jobs.SegmentationRequest(
            volumes=volumes, model=model.modelArgument(), outputSegmentation=p.outputSegmentation,
            segments=scene.segmentSpecsForClasses(model.classes) if model.classes else (scene.TUMOUR_CORE_SEGMENT,),
            probabilityVolume=p.probabilityVolume if p.writeProbabilities else None,
            reference=p.referenceNode, referenceLabelValues=parseLabelValues(p.referenceLabels),
            metricsTable=p.metricsTable, device="cpu" if p.forceCpu else "auto",
        )

    def _showInstallStatus(self, text: str) -> None:
        """First-run installation: a busy bar with the current step, every line in the log."""
        self.ui.logCollapsibleButton.collapsed = False
        self._appendLog(text)
        self.ui.progressBar.setVisible(True)
        self.ui.progressBar.setRange(0, 0)  # busy: the installers report no fraction
        self.ui.progressBar.setFormat(text[:100])
        slicer.app.processEvents()

    def _setRunning(self, running: bool) -> None:
        self.ui.progressBar.setRange(0, 1000)
        self.ui.applyButton.text = _("Cancel") if running else _("Apply")
        self.ui.applyButton.enabled = True
        self.ui.progressBar.setVisible(running)
        self.ui.progressBar.value = 0
        self.ui.progressBar.setFormat(_("Starting..."))
        for widget in (self.ui.inputsCollapsibleButton, self.ui.modelCollapsibleButton,
                       self.ui.outputsCollapsibleButton, self.ui.evaluationCollapsibleButton):
            widget.enabled = not running
        if not running:
            self._checkCanRun()

    def _appendLog(self, text: str) -> None:
        if text:
            self.ui.logTextEdit.appendPlainText(text)

    def _showProgress(self, job: jobs.SegmentationJob) -> None:
        for event in job.poll():
            if event.kind == "log" or event.message or event.isTerminal:
                self._appendLog(event.text())
            if event.fraction is not None:
                self.ui.progressBar.value = int(1000 * event.fraction)
                self.ui.progressBar.setFormat(f"{event.stage or ''} %p%".strip())

    def _showOutcome(self, job: jobs.SegmentationJob) -> None:
        if job.process.result().cancelled:
            job.cleanup()
            self._appendLog(_("Cancelled."))
            return
        with slicer.util.tryWithErrorDisplay(_("Segmentation failed."), waitCursor=True):
            result = job.finish()
            self._appendLog(_("Finished in {seconds:.1f} s on {device}.").format(
                seconds=result.engine.seconds, device=result.device or "?"))
            self.logic.showResults(job.request, result)
            self._showSession(result.session)

    # ------------------------------------------------------------------ operating point
    def _showSession(self, session) -> None:
        """Point the threshold slider at a run's operating point (None: no run to adjust)."""
        self._thresholdTimer.stop()  # a value still pending belongs to the previous run
        self._pendingThreshold = None
        self._session = session
        self.ui.operatingPointCollapsibleButton.enabled = session is not None
        if session is None:
            self.ui.operatingPointLabel.text = _("Run a segmentation first (binary tumour-core models).")
            return
        low, high = session.range
        wasBlocked = self.ui.thresholdSlider.blockSignals(True)
        self.ui.thresholdSlider.minimum = low
        self.ui.thresholdSlider.maximum = high
        self.ui.thresholdSlider.value = session.threshold
        self.ui.thresholdSlider.blockSignals(wasBlocked)
        self.ui.operatingPointLabel.text = session.summary()

    def onThresholdChanged(self, value: float) -> None:
        if self._session is None:
            return
        self._pendingThreshold = float(value)
        self._thresholdTimer.start()  # restarts while the slider keeps moving

    def _applyThreshold(self) -> None:
        value, self._pendingThreshold = self._pendingThreshold, None
        if self._session is None or value is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to apply the threshold."), waitCursor=True):
            self._session.setThreshold(value)
            self.ui.operatingPointLabel.text = self._session.summary()

    def onResetThreshold(self, checked=False) -> None:
        if self._session is not None:
            self.ui.thresholdSlider.value = self._session.runThreshold  # valueChanged applies it

    def onSaveModelCopy(self, checked=False) -> None:
        if self._session is None:
            return
        model = self._selectedModel()
        suggestion = f"{model.name if model else 'model'}-t{self._session.threshold:g}".replace(".", "_")
        name = qt.QInputDialog.getText(self.parent, _("Save as a new model"),
                                       _("Name of the copy with threshold {t:g}:").format(t=self._session.threshold),
                                       qt.QLineEdit.Normal, suggestion)
        if not name:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to save the model copy."), waitCursor=True):
            folder = self._session.saveModelCopy(name)
            self._appendLog(_("Saved {folder}: the model with threshold {t:g} on its card.").format(
                folder=folder, t=self._session.threshold))
            self.refreshModels()


#
# AsymSegLogic
#


class AsymSegLogic(EngineLogicMixin, ScriptedLoadableModuleLogic):
    """Segmentation without the GUI: usable from the Python console and scripts.

    The interpreter, engine processes, model list, first-use installs and ``runEngine`` come
    from :class:`AsymSegLib.logicsupport.EngineLogicMixin` (``AsymSegLogic(pythonExecutable=...)``).

    Example::

        logic = slicer.modules.asymseg.widgetRepresentation().self().logic  # or AsymSegLogic()
        result = logic.segment({"flair": flairNode, "t1c": t1cNode}, model="asymseg-starter-deepmedic")
    """

    def getParameterNode(self):
        return AsymSegParameterNode(super().getParameterNode())

    # ------------------------------------------------------------------ models and inputs
    def importModel(self, path: str) -> str:
        return models.importModel(path, self.pythonExecutable)

    @staticmethod
    def assignVolumes(channelNames, volumeNodes) -> dict:
        """Map each channel to the volume node whose name denotes it (None if there is none)."""
        byName = {}
        for node in volumeNodes:
            byName.setdefault(node.GetName(), node)
        assignment = channels.assignChannels(list(channelNames), list(byName))
        return {channel: (byName[name] if name is not None else None) for channel, name in assignment.items()}

    # ------------------------------------------------------------------ segmentation
    def createSegmentationJob(self, request: jobs.SegmentationRequest) -> jobs.SegmentationJob:
        return jobs.SegmentationJob(request, slicer.mrmlScene, slicer.modules.segmentations.logic(),
                                    processFactory=self.newEngineProcess)

    def startSegmentation(self, request: jobs.SegmentationRequest, launcher=None) -> jobs.SegmentationJob:
        """Start a run and return at once; poll the job from a QTimer, then call ``job.finish()``."""
        job = self.createSegmentationJob(request)
        job.start(launcher=launcher)
        return job

    def segment(self, volumes: dict, model: str, outputSegmentation=None, reference=None,
                probabilityVolume=None, referenceLabelValues=None, metricsTable=None, device: str = "auto",
                timeout: float | None = None, onEvent=None) -> jobs.SegmentationResult:
        """Segment and wait (scripts, batch processing, tests).

        Args:
            volumes: channel name -> volume node, in the model's channel order.
            model: a registry name or a model folder.
            outputSegmentation: the segmentation node to fill (created when None).
            reference: a segmentation or labelmap node for metrics and the logit plot.
            probabilityVolume: a scalar volume node for the foreground probability.
            referenceLabelValues: foreground labels of a labelmap reference.
            metricsTable: the metrics table node (created when None and a reference is given).
            device: "auto", "cpu" or "cuda".
            timeout: seconds to wait at most.
            onEvent: called with each progress event.

        Raises:
            ValueError: a missing input.
            AsymSegLib.process.EngineError: the engine failed.
        """
        if outputSegmentation is None:
            outputSegmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "AsymSeg tumour core")
        request = jobs.SegmentationRequest(
            volumes=volumes, model=model, outputSegmentation=outputSegmentation, reference=reference,
            probabilityVolume=probabilityVolume, referenceLabelValues=referenceLabelValues,
            metricsTable=metricsTable, device=device)
        return self.createSegmentationJob(request).run(timeout=timeout, onEvent=onEvent)

    @staticmethod
    def showResults(request: jobs.SegmentationRequest, result: jobs.SegmentationResult) -> None:
        """Show the input with the segmentation and, with a reference, the metrics table and logit
        plot in the four-up plot/table layout (GUI)."""
        firstVolume = next(iter(request.volumes.values()))
        layoutManager = slicer.app.layoutManager()
        views.showResults(slicer.mrmlScene, slicer.app.applicationLogic(), layoutManager.layoutLogic().GetLayoutNode(),
                          firstVolume, tableNode=result.metricsTable,
                          chartNode=result.plotNodes.chart if result.plotNodes is not None else None)
        slicer.util.resetSliceViews()


#
# AsymSegTest
#


class AsymSegTest(ScriptedLoadableModuleTest):
    """Runs a tiny phantom through the Logic and the engine (needs torch in Slicer's Python)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SegmentPhantomWithUntrainedModel()

    def test_SegmentPhantomWithUntrainedModel(self):
        if install.missingRequirements([install.TORCH_REQUIREMENT]):
            self.delayDisplay("PyTorch is not installed: skipping the engine test")
            return
        logic = AsymSegLogic()
        folder = Path(slicer.util.tempDirectory("AsymSegTest"))
        self.delayDisplay("Writing a phantom case and an untrained model")
        logic.runEngine(["phantom", "--out", folder / "cases", "--cases", "1", "--size", "32", "--seed", "3"])
        logic.runEngine(["models", "create", "--architecture", "deepmedic", "--channels", "flair,t1c",
                         "--out", folder / "model"])
        caseFolder = next(p for p in (folder / "cases").iterdir() if p.is_dir())
        caseId = caseFolder.name
        flair = slicer.util.loadVolume(str(caseFolder / f"{caseId}_flair.nii.gz"))
        t1c = slicer.util.loadVolume(str(caseFolder / f"{caseId}_t1ce.nii.gz"))
        labels = slicer.util.loadLabelVolume(str(caseFolder / f"{caseId}_seg.nii.gz"))

        self.delayDisplay("Segmenting")
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "phantom tumour core")
        result = logic.segment({"flair": flair, "t1c": t1c}, model=str(folder / "model"),
                               outputSegmentation=segmentation, reference=labels, referenceLabelValues=[1, 4],
                               device="cpu", timeout=600)
        self.assertEqual(result.segmentIds, ["TumourCore"])
        self.assertEqual(segmentation.GetSegmentation().GetSegment("TumourCore").GetName(), "Tumour core")
        self.assertIn("dsc", result.metrics)
        self.assertGreater(result.metricsTable.GetNumberOfRows(), 0)
        self.assertEqual(result.plotNodes.chart.GetNumberOfPlotSeriesNodes(), 2)

        self.delayDisplay("Showing the results and moving the operating point")
        logic.showResults(jobs.SegmentationRequest(volumes={"flair": flair, "t1c": t1c}, model=str(folder / "model"),
                                                   outputSegmentation=segmentation), result)
        self.assertEqual(slicer.app.layoutManager().layout, slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView)
        metrics = result.session.setThreshold(result.session.runThreshold - 1.0)
        self.assertIn("dsc", metrics)
        self.assertEqual(float(segmentation.GetAttribute("AsymSeg.Threshold")), result.session.runThreshold - 1.0)
        self.delayDisplay("Test passed")
