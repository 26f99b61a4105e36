"""One fine-tuning run: scene cases -> case folders -> ``asymseg finetune`` -> a new model.

:class:`TrainingJob` exports the scene's training and validation cases beside the run folder
(``<run folder>.cases``; removed after a successful run, kept after a cancelled or failed one so
that Resume continues from the same files), starts
the engine with the command line of :class:`~AsymSegTrainingLib.params.TrainingParameters`,
turns its progress events into live loss and validation curves (plot nodes, updated on the GUI
thread) and reports where the new model was written. Call :meth:`start`, :meth:`poll`,
:meth:`updatePlots` and :meth:`finish` from the GUI thread; :meth:`run` does all in one call.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from AsymSegLib import models, plots
from AsymSegLib.jobs import EngineJob
from AsymSegLib.process import EngineProcess, EngineResult
from AsymSegLib.progress import ProgressEvent

from AsymSegTrainingLib.export import FOREGROUND_LABEL, SceneCase, exportTrainingCase
from AsymSegTrainingLib.params import TrainingParameters, outputFolders, outputState
from AsymSegTrainingLib.series import TrainingProgress

log = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    """How a fine-tuning run ended.

    Attributes:
        engine: the engine process result.
        modelPath: the trained model's folder (None when it is unknown or was not written).
        progress: the collected curves.
    """

    engine: EngineResult
    modelPath: Path | None
    progress: TrainingProgress

    @property
    def succeeded(self) -> bool:
        return self.engine.succeeded


class TrainingJob(EngineJob[TrainingResult]):
    """A fine-tuning run in an engine subprocess.

    :meth:`cancel` asks the engine to stop: it finishes its step and keeps its checkpoint and best
    model.

    Args:
        parameters: the run's :class:`TrainingParameters` (case folders from disk go in
            ``trainCases``/``valCases``; scene cases are added by this job).
        scene: the vtkMRMLScene.
        segmentationsLogic: the Segmentations module logic.
        sceneTrainCases: training cases from the scene.
        sceneValCases: validation cases from the scene.
        processFactory: creates the :class:`~AsymSegLib.process.EngineProcess`.
        workDirectory: parent of the temporary folder for exported cases.
    """

    def __init__(self, parameters: TrainingParameters, scene, segmentationsLogic,
                 sceneTrainCases: Sequence[SceneCase] = (), sceneValCases: Sequence[SceneCase] = (),
                 processFactory: Callable[[], EngineProcess] = EngineProcess,
                 workDirectory: str | Path | None = None) -> None:
        self.parameters = parameters
        self.sceneTrainCases = list(sceneTrainCases)
        self.sceneValCases = list(sceneValCases)
        ids = [c.caseId for c in self.sceneTrainCases + self.sceneValCases]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"case ids must be unique: {', '.join(duplicates)} used twice")
        for case in self.sceneTrainCases + self.sceneValCases:
            case.check()
        super().__init__(scene, segmentationsLogic, processFactory, workDirectory)
        self.progress = TrainingProgress()
        self.lossPlot: plots.PlotNodes | None = None
        self.validationPlot: plots.PlotNodes | None = None
        self.effectiveParameters: TrainingParameters | None = None

    @property
    def device(self) -> str:
        return self.parameters.device

    @property
    def casesFolder(self) -> Path:
        """Where the scene cases are exported: beside the run folder (kept for a Resume until a run succeeds)."""
        _, runFolder = outputFolders(str(self.parameters.outputModel))
        return runFolder.parent / f"{runFolder.name}.cases"

    def prepare(self) -> list[str]:
        """Export the scene cases and build the engine arguments (GUI thread)."""
        p = self.parameters
        if p.resume is not None:  # the run folder names its cases, exported by the first run
            self.effectiveParameters = p
            return p.asArgList()
        state = outputState(str(p.outputModel))
        if not p.overwrite and not state.free:  # before the exports replace the old run's cases
            raise ValueError(state.text())
        if self.sceneTrainCases or self.sceneValCases:
            self.folder = self.casesFolder  # removed by cleanup() once a run succeeded
        trainFolders = [str(exportTrainingCase(c, self.casesFolder / "train", self.segmentationsLogic, self.scene,
                                               overwrite=True)) for c in self.sceneTrainCases]
        valFolders = [str(exportTrainingCase(c, self.casesFolder / "val", self.segmentationsLogic, self.scene,
                                             overwrite=True)) for c in self.sceneValCases]
        foreground = p.foregroundLabels
        onlySceneCases = not p.trainCases and not p.valCases
        if not p.labelConvention and not foreground and onlySceneCases:
            foreground = (FOREGROUND_LABEL,)  # exported label maps hold 1 for the foreground
        self.effectiveParameters = dataclasses.replace(
            p, trainCases=list(p.trainCases) + trainFolders, valCases=list(p.valCases) + valFolders,
            foregroundLabels=foreground)
        return self.effectiveParameters.asArgList()

    def poll(self) -> tuple[list[ProgressEvent], set[str]]:
        """New events and what they changed ({"progress", "losses", "validation"})."""
        events = self.process.poll()
        changed: set[str] = set()
        for event in events:
            changed |= self.progress.update(event)
        return events, changed

    def updatePlots(self, changed: set[str] | None = None) -> None:
        """Refresh the loss and validation plot nodes (GUI thread)."""
        if changed is None or "losses" in changed:
            x, curves = self.progress.lossCurves()
            if curves:
                self.lossPlot = plots.updateLinePlot(
                    self.scene, f"{self._title()} training loss", "iteration", x, curves, nodes=self.lossPlot,
                    yAxisTitle="loss")
        if changed is None or "validation" in changed:
            x, curves = self.progress.validationCurves()
            if x:
                self.validationPlot = plots.updateLinePlot(
                    self.scene, f"{self._title()} validation", "iteration", x, curves, nodes=self.validationPlot,
                    yAxisTitle="mean over validation cases", plotType="Line")

    def _title(self) -> str:
        return Path(str(self.parameters.outputModel)).name

    def finish(self) -> TrainingResult:
        """The outcome once the engine has finished; the exported cases are removed after a success
        and kept otherwise (Resume needs them)."""
        self.updatePlots()
        engineResult = self.process.result()
        if engineResult.succeeded:
            self.cleanup()
        return TrainingResult(engine=engineResult, modelPath=self._modelPath(engineResult), progress=self.progress)

    def _follow(self, event: ProgressEvent) -> None:
        self.progress.update(event)

    def _modelPath(self, engineResult: EngineResult) -> Path | None:
        done = engineResult.doneEvent
        if done is not None:  # finetune's done event names the model it wrote
            value = done.data.get("model_path")
            if isinstance(value, str) and value:
                return Path(value)
        output = str(self.parameters.outputModel)
        candidate = Path(output) if ("/" in output or "\\" in output) else models.userModelsDirectory() / output
        return candidate if candidate.is_dir() else None
