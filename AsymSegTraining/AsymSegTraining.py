"""AsymSegTraining: fine-tune a tumour-core model on your own cases with the asymmetric techniques.

The module file holds the Slicer classes only. Training runs in the ``asymseg`` engine in a
subprocess (``asymseg finetune``); the Qt-free pieces live in AsymSegTrainingLib and AsymSegLib.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional, Union

import qt
import slicer
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from AsymSegLib import channels, install, models, views, widgetsupport
from AsymSegLib.logicsupport import EngineLogicMixin
from AsymSegLib.widgetsupport import PanelWidgetMixin
from AsymSegTrainingLib import estimate, export, jobs, params

#: Channels the panel offers for scene cases.
PANEL_CHANNELS = ("flair", "t1c", "t1", "t2")
#: A layout with the red slice view above two plot views (losses, validation).
TRAINING_LAYOUT_ID = 58101
TRAINING_LAYOUT = """
<layout type="vertical" split="true">
 <item splitSize="400">
  <view class="vtkMRMLSliceNode" singletontag="Red">
   <property name="orientation" action="default">Axial</property>
   <property name="viewlabel" action="default">R</property>
   <property name="viewcolor" action="default">#F34A33</property>
  </view>
 </item>
 <item splitSize="600">
  <layout type="horizontal">
   <item>
    <view class="vtkMRMLPlotViewNode" singletontag="AsymSegLoss">
     <property name="viewlabel" action="default">L</property>
    </view>
   </item>
   <item>
    <view class="vtkMRMLPlotViewNode" singletontag="AsymSegValidation">
     <property name="viewlabel" action="default">V</property>
    </view>
   </item>
  </layout>
 </item>
</layout>
"""
#: Seconds between plot refreshes while training.
PLOT_REFRESH_SECONDS = 1.0


def caseIdFromName(name: str, taken) -> str:
    """A folder-safe, unique case id from a node name (``"pat 5 FLAIR"`` -> ``"pat_5_FLAIR"``)."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-") or "case"
    caseId, index = base, 2
    while caseId in taken:
        caseId, index = f"{base}_{index}", index + 1
    return caseId


#
# AsymSegTraining
#


class AsymSegTraining(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("AsymSeg Training")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["AsymSeg maintainers (SlicerAsymSeg project)"]
        self.parent.helpText = _("""
Fine-tunes a brain-tumour-core model on a few labelled cases from the scene or from case folders,
with the asymmetric large margin, focal loss, adversarial training and mixup techniques that keep
small-data models from under-segmenting. Training losses and validation DSC, sensitivity and
precision are plotted live; the new model then appears in the AsymSeg module.
""")
        self.parent.acknowledgementText = _("""
Techniques from Z. Li, K. Kamnitsas and B. Glocker, "Overfitting of neural nets under class
imbalance: analysis and improvements for segmentation", MICCAI 2019.
""")


#
# AsymSegTrainingParameterNode
#


@parameterNodeWrapper
class AsymSegTrainingParameterNode:
    """The panel's settings, saved with the scene.

    caseFlairVolume ... caseLabels: the scene case being added.
    coreLabels: label values forming the tumour core of a scene case (default: 1,3,4, the core
        in every BraTS convention). coreSegments: names of the core segments (empty: by name or value).
    baseModelName, technique, symmetric, iterations, learningRate, fgFraction, outputModelName,
    labelConvention, seed, forceCpu: the fine-tuning settings.
    crossValidateOperatingPoint: without validation cases, choose the operating point by
        cross-validation over the training cases (one more run per case).
    """

    caseFlairVolume: vtkMRMLScalarVolumeNode
    caseT1cVolume: vtkMRMLScalarVolumeNode
    caseT1Volume: vtkMRMLScalarVolumeNode
    caseT2Volume: vtkMRMLScalarVolumeNode
    caseLabels: Optional[Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]]
    coreLabels: str = ",".join(str(v) for v in export.DEFAULT_CORE_LABELS)
    coreSegments: str = ""
    baseModelName: str = ""
    technique: str = params.DEFAULT_TECHNIQUE
    symmetric: bool = False
    iterations: Annotated[int, WithinRange(1, 1000000)] = params.PANEL_ITERATIONS
    learningRate: Annotated[float, WithinRange(1e-6, 1.0)] = 1e-3
    fgFraction: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    outputModelName: str = "my-finetuned-model"
    labelConvention: str = "auto"
    seed: int = 0
    forceCpu: bool = False
    crossValidateOperatingPoint: bool = False


#
# AsymSegTrainingWidget
#


class AsymSegTrainingWidget(PanelWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: cases, settings, Start/Cancel, progress and live plots.

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
        self._trainingCases: list = []  # SceneCase or folder path (str)
        self._validationCases: list = []
        self._pendingChanges: set[str] = set()
        self._corePreviews: dict[str, export.CorePreview] = {}  # scene case id -> its core
        self._lastPlotRefresh = 0.0
        self._timer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/AsymSegTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = AsymSegTrainingLogic()
        self._caseWidgets = {
            "flair": (self.ui.caseFlairLabel, self.ui.caseFlairSelector),
            "t1c": (self.ui.caseT1cLabel, self.ui.caseT1cSelector),
            "t1": (self.ui.caseT1Label, self.ui.caseT1Selector),
            "t2": (self.ui.caseT2Label, self.ui.caseT2Selector),
        }
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.connect("timeout()", self._onTimer)

        for name, description in params.TECHNIQUE_PRESETS.items():
            self.ui.techniqueSelector.addItem(name)
            self.ui.techniqueSelector.setItemData(self.ui.techniqueSelector.count - 1, description, qt.Qt.ToolTipRole)
        for convention in ("auto",) + params.LABEL_CONVENTIONS:
            self.ui.labelConventionSelector.addItem(convention)
        self.ui.coreConventionSelector.addItem(_("BraTS convention..."))
        for name, values in export.BRATS_CORE_LABELS.items():
            self.ui.coreConventionSelector.addItem(name)
            self.ui.coreConventionSelector.setItemData(self.ui.coreConventionSelector.count - 1,
                                                       ",".join(map(str, values)), qt.Qt.ToolTipRole)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.startButton.connect("clicked(bool)", self.onStartButton)
        self.ui.overwriteButton.connect("clicked(bool)", lambda checked: self._start(mode="overwrite"))
        self.ui.resumeButton.connect("clicked(bool)", lambda checked: self._start(mode="resume"))
        self.ui.estimateButton.connect("clicked(bool)", lambda checked: self._start(mode="estimate"))
        self.ui.baseModelSelector.connect("currentIndexChanged(int)", self.onBaseModelSelected)
        self.ui.techniqueSelector.connect("currentIndexChanged(int)", self.onTechniqueSelected)
        self.ui.labelConventionSelector.connect("currentIndexChanged(int)", self.onLabelConventionSelected)
        self.ui.coreConventionSelector.connect("currentIndexChanged(int)", self.onCoreConventionSelected)
        self.ui.addTrainingCaseButton.connect("clicked(bool)", lambda checked: self.addSceneCase(validation=False))
        self.ui.addValidationCaseButton.connect("clicked(bool)", lambda checked: self.addSceneCase(validation=True))
        self.ui.addTrainingFolderButton.connect("clicked(bool)", lambda checked: self.addFolderCase(validation=False))
        self.ui.addValidationFolderButton.connect("clicked(bool)", lambda checked: self.addFolderCase(validation=True))
        self.ui.removeTrainingCaseButton.connect("clicked(bool)",
                                                 lambda checked: self.removeSelectedCase(validation=False))
        self.ui.removeValidationCaseButton.connect("clicked(bool)",
                                                   lambda checked: self.removeSelectedCase(validation=True))
        self.ui.trainingProgressBar.setVisible(False)

        self.initializeParameterNode()
        self.refreshModels()

    def enter(self) -> None:
        self.initializeParameterNode()

    def onSceneStartClose(self, caller, event) -> None:
        if self._job is not None:
            self._job.cancel()
        self._trainingCases = [c for c in self._trainingCases if isinstance(c, str)]
        self._validationCases = [c for c in self._validationCases if isinstance(c, str)]
        self._refreshCaseLists()
        self.setParameterNode(None)

    # ------------------------------------------------------------------ parameter node
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode) -> None:
        super().setParameterNode(inputParameterNode)
        if self._parameterNode:  # the combo boxes filled in setup are not bound: show the node's choice
            self._selectText(self.ui.techniqueSelector, self._parameterNode.technique)
            self._selectText(self.ui.labelConventionSelector, self._parameterNode.labelConvention)

    @staticmethod
    def _selectText(comboBox, text: str) -> None:
        index = comboBox.findText(text)
        if index >= 0:
            comboBox.setCurrentIndex(index)

    def _outputState(self) -> params.OutputState | None:
        name = self._parameterNode.outputModelName.strip() if self._parameterNode else ""
        try:
            return params.outputState(name) if name else None
        except (OSError, ValueError):
            return None

    def _checkCanRun(self, caller=None, event=None) -> None:
        if self._job is not None:
            self.ui.startButton.enabled = True  # it is the Cancel button now
            for button in (self.ui.overwriteButton, self.ui.resumeButton, self.ui.estimateButton):
                button.enabled = False
            return
        reason = None
        if self._selectedModel() is None:
            reason = _("Select a base model")
        elif not self._trainingCases:
            reason = _("Add at least one training case")
        elif self._parameterNode is None or not self._parameterNode.outputModelName.strip():
            reason = _("Enter a name for the new model")
        state = self._outputState()
        taken = state is not None and not state.free
        self.ui.startButton.enabled = reason is None and not taken
        self.ui.startButton.toolTip = reason or (state.text() if taken else _("Start fine-tuning"))
        self.ui.overwriteButton.enabled = reason is None and taken
        self.ui.resumeButton.enabled = state is not None and state.canResume
        self.ui.estimateButton.enabled = reason is None
        if taken:
            self.ui.statusLabel.text = state.text()

    # ------------------------------------------------------------------ models and settings
    def _selectedModel(self) -> models.ModelInfo | None:
        return widgetsupport.selectedModel(self.ui.baseModelSelector, self._models)

    def refreshModels(self) -> None:
        wanted = self._parameterNode.baseModelName if self._parameterNode else ""
        with slicer.util.tryWithErrorDisplay(_("Failed to list the models."), waitCursor=False):
            self._models = self.logic.listModels()  # read from the model cards: no engine process
        widgetsupport.fillModelSelector(self.ui.baseModelSelector, self._models, wanted, qt.Qt.ToolTipRole)
        self.onBaseModelSelected(self.ui.baseModelSelector.currentIndex)

    def onBaseModelSelected(self, index: int) -> None:
        model = self._selectedModel()
        needed = {channels.canonicalChannel(c) for c in model.channels} if model else set(PANEL_CHANNELS)
        for channel, (label, selector) in self._caseWidgets.items():
            label.setVisible(channel in needed)
            selector.setVisible(channel in needed)
        if model is not None and self._parameterNode is not None:
            self._parameterNode.baseModelName = model.name
        self._checkCanRun()

    def onTechniqueSelected(self, index: int) -> None:
        technique = self.ui.techniqueSelector.currentText
        if self._parameterNode is None or not technique:
            return
        if self._parameterNode.technique != technique:
            # A new preset brings its own sampling default; re-selecting the stored preset (e.g. when
            # a saved scene is loaded) keeps the fraction the user chose.
            self._parameterNode.technique = technique
            self._parameterNode.fgFraction = params.defaultFgFraction(technique)
        self.ui.techniqueSelector.toolTip = params.TECHNIQUE_PRESETS.get(technique, "")

    def onLabelConventionSelected(self, index: int) -> None:
        if self._parameterNode is not None:
            self._parameterNode.labelConvention = self.ui.labelConventionSelector.currentText

    def onCoreConventionSelected(self, index: int) -> None:
        values = export.BRATS_CORE_LABELS.get(self.ui.coreConventionSelector.currentText)
        if values is not None and self._parameterNode is not None:
            self._parameterNode.coreLabels = ",".join(map(str, values))
        self.ui.coreConventionSelector.setCurrentIndex(0)

    # ------------------------------------------------------------------ cases
    def addSceneCase(self, validation: bool) -> None:
        with slicer.util.tryWithErrorDisplay(_("Cannot add the case."), waitCursor=False):
            model = self._selectedModel()
            needed = [channels.canonicalChannel(c) for c in model.channels] if model else list(PANEL_CHANNELS)
            p = self._parameterNode
            selected = {"flair": p.caseFlairVolume, "t1c": p.caseT1cVolume, "t1": p.caseT1Volume, "t2": p.caseT2Volume}
            volumes = {channel: selected[channel] for channel in needed if selected[channel] is not None}
            missing = [channels.channelTitle(c) for c in needed if selected[c] is None]
            if missing:
                raise ValueError(_("Select the {names} volume(s) of the case").format(names=", ".join(missing)))
            taken = {c.caseId for c in self._trainingCases + self._validationCases if isinstance(c, export.SceneCase)}
            firstVolume = next(iter(volumes.values()))
            case = export.SceneCase(caseId=caseIdFromName(firstVolume.GetName(), taken), volumes=volumes,
                                    labels=p.caseLabels, labelValues=export.parseLabelValues(p.coreLabels),
                                    segmentNames=export.parseSegmentNames(p.coreSegments))
            self._corePreviews[case.caseId] = self.logic.checkSceneCases([case], needed)[0]
            (self._validationCases if validation else self._trainingCases).append(case)
            self._refreshCaseLists()

    def addFolderCase(self, validation: bool) -> None:
        folder = qt.QFileDialog.getExistingDirectory(self.parent, _("Select a case folder"))
        if folder:
            (self._validationCases if validation else self._trainingCases).append(folder)
            self._refreshCaseLists()

    def removeSelectedCase(self, validation: bool) -> None:
        listWidget = self.ui.validationCasesList if validation else self.ui.trainingCasesList
        cases = self._validationCases if validation else self._trainingCases
        row = listWidget.currentRow
        if 0 <= row < len(cases):
            del cases[row]
            self._refreshCaseLists()

    def _refreshCaseLists(self) -> None:
        for listWidget, cases in ((self.ui.trainingCasesList, self._trainingCases),
                                  (self.ui.validationCasesList, self._validationCases)):
            listWidget.clear()
            for case in cases:
                if isinstance(case, str):
                    listWidget.addItem(_("folder: {path}").format(path=case))
                else:
                    names = ", ".join(f"{c}={n.GetName()}" for c, n in case.volumes.items())
                    preview = self._corePreviews.get(case.caseId)
                    listWidget.addItem(_("scene: {id} ({names}; {labels}) - {core}").format(
                        id=case.caseId, names=names, labels=case.labels.GetName(),
                        core=preview.text() if preview else ""))
        self._checkCanRun()

    # ------------------------------------------------------------------ running
    def onStartButton(self, checked=False) -> None:
        if self._job is not None:
            self._job.cancel()
            self.ui.startButton.text = _("Cancelling...")
            self.ui.startButton.enabled = False
            self._appendLog(_("Cancelling: the engine finishes its step and keeps its checkpoint and best model..."))
            return
        self._start(mode="start")

    def _start(self, mode: str) -> None:
        """Start a run: "start" (a new model), "overwrite", "resume", or "estimate" (a timed warm-up)."""
        if self._job is not None:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start training."), waitCursor=True):
            self.ui.trainingLogTextEdit.clear()
            self.logic.ensureDependencies(confirm=lambda text: slicer.util.confirmOkCancelDisplay(text),
                                          onStatus=self._showInstallStatus, keepAlive=slicer.app.processEvents)
            p = self._parameterNode
            model = self._selectedModel()
            sceneCases = [c for c in self._trainingCases + self._validationCases if isinstance(c, export.SceneCase)]
            needed = [channels.canonicalChannel(c) for c in model.channels] if model else []
            if mode != "resume":
                for preview in self.logic.checkSceneCases(sceneCases, needed):  # refuses cases that do not fit
                    self._corePreviews[preview.caseId] = preview
            state = self._outputState()
            parameters = params.TrainingParameters(
                trainCases=[c for c in self._trainingCases if isinstance(c, str)],
                valCases=[c for c in self._validationCases if isinstance(c, str)],
                outputModel=p.outputModelName.strip(), baseModel=model.modelArgument() if model else None,
                technique=p.technique, symmetric=p.symmetric, iterations=p.iterations,
                learningRate=p.learningRate, fgFraction=p.fgFraction,
                labelConvention=None if p.labelConvention == "auto" else p.labelConvention,
                seed=p.seed, device="cpu" if p.forceCpu else "auto", overwrite=mode == "overwrite",
                operatingPoint=params.operatingPointChoice(p.crossValidateOperatingPoint, self._validationCases),
                resume=str(state.runFolder) if mode == "resume" and state is not None else None)
            trainScene = [c for c in self._trainingCases if isinstance(c, export.SceneCase)]
            if mode == "estimate":
                self._appendLog(_("Timing {n} iterations of this run on this device...").format(
                    n=estimate.WARMUP_ITERATIONS))
                self._job = self.logic.startEstimate(parameters, sceneTrainCases=trainScene,
                                                     launcher=self.logic.consoleLauncher())
            else:
                if mode != "resume":
                    for case in sceneCases:
                        self._appendLog(_("Tumour core of {text}").format(
                            text=self._corePreviews[case.caseId].text()))
                self._job = self.logic.startTraining(
                    parameters, sceneTrainCases=[] if mode == "resume" else trainScene,
                    sceneValCases=[] if mode == "resume" else
                    [c for c in self._validationCases if isinstance(c, export.SceneCase)],
                    launcher=self.logic.consoleLauncher())
            self._appendLog(" ".join(self._job.process.command))
            self._setRunning(True)
            self._timer.start()
        if self._job is None:  # a failed install or start: back to idle, the buttons try again
            self._setRunning(False)

    def _showInstallStatus(self, text: str) -> None:
        """First-run installation: the current step in the status line, every line in the log."""
        self._appendLog(text)
        self.ui.statusLabel.text = text
        self.ui.trainingProgressBar.setVisible(True)
        self.ui.trainingProgressBar.setRange(0, 0)  # busy: the installers report no fraction
        slicer.app.processEvents()

    def _setRunning(self, running: bool) -> None:
        self.ui.trainingProgressBar.setRange(0, 1000)
        self.ui.startButton.text = _("Cancel") if running else _("Start training")
        self.ui.startButton.enabled = True
        self.ui.trainingProgressBar.setVisible(running)
        self.ui.trainingProgressBar.value = 0
        for widget in (self.ui.casesCollapsibleButton, self.ui.trainingCollapsibleButton,
                       self.ui.advancedCollapsibleButton):
            widget.enabled = not running
        if not running:
            self.refreshModels()  # a finished run adds its model; this also updates the Start button

    def _appendLog(self, text: str) -> None:
        if text:
            self.ui.trainingLogTextEdit.appendPlainText(text)

    def _showProgress(self, job: jobs.TrainingJob) -> None:
        import time

        events, changed = job.poll()
        for event in events:
            if event.kind not in ("iteration", "progress"):
                self._appendLog(event.text())
        self._pendingChanges |= changed
        fraction = job.progress.fraction
        if fraction is not None:
            self.ui.trainingProgressBar.value = int(1000 * fraction)
        self.ui.statusLabel.text = job.progress.statusText()
        now = time.monotonic()
        if isinstance(job, estimate.WarmupJob):
            return  # its curves are not the run's
        if self._pendingChanges and (now - self._lastPlotRefresh >= PLOT_REFRESH_SECONDS or job.finished):
            job.updatePlots(self._pendingChanges)
            self.logic.showTrainingPlots(job)
            self._pendingChanges = set()
            self._lastPlotRefresh = now

    def _showOutcome(self, job: jobs.TrainingJob) -> None:
        if isinstance(job, estimate.WarmupJob):
            with slicer.util.tryWithErrorDisplay(_("Timing the run failed."), waitCursor=True):
                if job.process.result().cancelled:
                    job.cleanup()
                    self.ui.statusLabel.text = _("Cancelled.")
                    return
                self.ui.statusLabel.text = job.finish().text()
                self._appendLog(self.ui.statusLabel.text)
            return
        with slicer.util.tryWithErrorDisplay(_("Training failed."), waitCursor=True):
            result = job.finish()
            self.logic.showTrainingPlots(job)
            if result.succeeded:
                self.ui.statusLabel.text = _("Model saved: {path}. It is listed in the AsymSeg module.").format(
                    path=result.modelPath or self._parameterNode.outputModelName)
            elif result.engine.cancelled:
                self.ui.statusLabel.text = _("Cancelled. The best model so far: {path}. Resume continues the run.").format(
                    path=result.modelPath or _("none written"))
            else:
                result.engine.raiseIfFailed()


#
# AsymSegTrainingLogic
#


class AsymSegTrainingLogic(EngineLogicMixin, ScriptedLoadableModuleLogic):
    """Fine-tuning without the GUI: usable from the Python console and scripts.

    The interpreter, engine processes, model list, first-use installs and ``runEngine`` come
    from :class:`AsymSegLib.logicsupport.EngineLogicMixin`.
    """

    def getParameterNode(self):
        return AsymSegTrainingParameterNode(super().getParameterNode())

    @staticmethod
    def checkSceneCases(cases, modelChannels) -> list[export.CorePreview]:
        """Check that scene cases fit a model (channels, grids, core labels); their core previews.

        Raises:
            ValueError: the first case that does not fit, with the reason.
        """
        return [export.checkCaseFits(case, modelChannels, slicer.modules.segmentations.logic(), slicer.mrmlScene)
                for case in cases]

    def createTrainingJob(self, parameters: params.TrainingParameters, sceneTrainCases=(),
                          sceneValCases=()) -> jobs.TrainingJob:
        return jobs.TrainingJob(parameters, slicer.mrmlScene, slicer.modules.segmentations.logic(),
                                sceneTrainCases=sceneTrainCases, sceneValCases=sceneValCases,
                                processFactory=self.newEngineProcess)

    def startTraining(self, parameters: params.TrainingParameters, sceneTrainCases=(), sceneValCases=(),
                      launcher=None) -> jobs.TrainingJob:
        """Start fine-tuning and return at once; poll the job from a QTimer, then ``job.finish()``."""
        job = self.createTrainingJob(parameters, sceneTrainCases, sceneValCases)
        job.start(launcher=launcher)
        return job

    def startEstimate(self, parameters: params.TrainingParameters, sceneTrainCases=(),
                      launcher=None) -> estimate.WarmupJob:
        """Start a timed warm-up of the planned run; ``job.finish()`` gives the :class:`RuntimeEstimate`."""
        job = estimate.WarmupJob(parameters, slicer.mrmlScene, slicer.modules.segmentations.logic(),
                                 sceneTrainCases=sceneTrainCases, processFactory=self.newEngineProcess)
        job.start(launcher=launcher)
        return job

    def estimateRunTime(self, parameters: params.TrainingParameters, sceneTrainCases=(),
                        timeout: float | None = None) -> estimate.RuntimeEstimate:
        """Time a short warm-up of the planned run and wait (scripts, tests)."""
        job = estimate.WarmupJob(parameters, slicer.mrmlScene, slicer.modules.segmentations.logic(),
                                 sceneTrainCases=sceneTrainCases, processFactory=self.newEngineProcess)
        return job.run(timeout=timeout)

    def train(self, parameters: params.TrainingParameters, sceneTrainCases=(), sceneValCases=(),
              timeout: float | None = None, onEvent=None) -> jobs.TrainingResult:
        """Fine-tune and wait (scripts, tests). Check ``result.succeeded``."""
        return self.createTrainingJob(parameters, sceneTrainCases, sceneValCases).run(timeout=timeout, onEvent=onEvent)

    @staticmethod
    def showTrainingPlots(job: jobs.TrainingJob) -> None:
        """Show the loss and validation charts in two plot views below the red slice view (GUI)."""
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:
            return
        charts = {"AsymSegLoss": job.lossPlot.chart if job.lossPlot else None,
                  "AsymSegValidation": job.validationPlot.chart if job.validationPlot else None}
        views.showChartsInLayout(slicer.mrmlScene, layoutManager.layoutLogic().GetLayoutNode(), TRAINING_LAYOUT_ID,
                                 TRAINING_LAYOUT, charts)


#
# AsymSegTrainingTest
#


class AsymSegTrainingTest(ScriptedLoadableModuleTest):
    """Fine-tunes an untrained model for a few iterations on two phantom cases (needs torch)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_FinetuneOnPhantomCases()

    def test_FinetuneOnPhantomCases(self):
        if install.missingRequirements([install.TORCH_REQUIREMENT]):
            self.delayDisplay("PyTorch is not installed: skipping the training test")
            return
        logic = AsymSegTrainingLogic()
        folder = Path(slicer.util.tempDirectory("AsymSegTrainingTest"))
        logic.runEngine(["phantom", "--out", folder / "cases", "--cases", "2", "--size", "32", "--seed", "5"],
                        timeout=600)
        logic.runEngine(["models", "create", "--architecture", "deepmedic", "--channels", "flair,t1c",
                         "--out", folder / "base"], timeout=600)
        trainFolder, valFolder = sorted(p for p in (folder / "cases").iterdir() if p.is_dir())
        caseId = trainFolder.name
        flair = slicer.util.loadVolume(str(trainFolder / f"{caseId}_flair.nii.gz"))
        t1c = slicer.util.loadVolume(str(trainFolder / f"{caseId}_t1ce.nii.gz"))
        labels = slicer.util.loadLabelVolume(str(trainFolder / f"{caseId}_seg.nii.gz"))
        sceneCase = export.SceneCase(caseId="scene_case", volumes={"flair": flair, "t1c": t1c}, labels=labels,
                                     labelValues=[1, 4])
        parameters = params.TrainingParameters(
            trainCases=[], valCases=[str(valFolder)], outputModel=str(folder / "finetuned"),
            baseModel=str(folder / "base"), iterations=4, labelConvention="brats2017", device="cpu")
        self.delayDisplay("Fine-tuning for 4 iterations")
        result = logic.train(parameters, sceneTrainCases=[sceneCase], timeout=900)
        self.assertTrue(result.succeeded, result.engine.summary())
        self.assertTrue((folder / "finetuned").is_dir())
        self.assertTrue(result.progress.iterations)
        self.delayDisplay("Test passed")
