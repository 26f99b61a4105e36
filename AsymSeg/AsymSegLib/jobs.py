"""Engine runs from the scene; here the segmentation run: scene -> files -> ``asymseg segment`` -> scene.

:class:`EngineJob` is what every run shares (a temporary folder, the engine subprocess, cancel,
the blocking :meth:`EngineJob.run`); AsymSegTrainingLib's fine-tuning job builds on it too.
:class:`SegmentationJob` writes the channel volumes (and a reference, if any) to a temporary
folder with exact geometry, starts the engine, and, once it has finished, imports the label map
as a named, coloured segment, the optional probability map, the metrics table and the logit
distribution plot, and keeps the run's dz map for the interactive operating point
(:class:`AsymSegLib.operatingpoint.OperatingPointSession`). MRML is touched only in :meth:`SegmentationJob.start` and
:meth:`SegmentationJob.finish`; call them (and :meth:`SegmentationJob.poll`) from the GUI thread.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
from slicer import util as sutil

from AsymSegLib import models, operatingpoint, plots, scene as S, tables
from AsymSegLib.process import EngineProcess, EngineResult, Launcher
from AsymSegLib.progress import ProgressEvent

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


@dataclass
class SegmentationRequest:
    """What to segment and where the results go.

    Attributes:
        volumes: channel name (as the model names it) -> scalar volume node, in model order.
            The first volume is the reference geometry of the output.
        model: the ``--model`` argument (a registry name or a model folder).
        outputSegmentation: the vtkMRMLSegmentationNode to fill.
        segments: label values of the engine's output and the segments they become.
        probabilityVolume: a scalar volume node for the foreground probability, or None.
        reference: a segmentation or labelmap to compare with, or None.
        referenceLabelValues: foreground label values of the reference (None: see
            :func:`AsymSegLib.scene.referenceToArray`).
        metricsTable: the table node for the metrics (created when None and a reference is given).
        logitPlot: compute the logit distribution plot (needs a reference).
        device: "auto", "cpu" or "cuda".
        extraArguments: further engine arguments.
    """

    volumes: Mapping[str, object]
    model: str
    outputSegmentation: object
    segments: Sequence[S.SegmentSpec] = (S.TUMOUR_CORE_SEGMENT,)
    probabilityVolume: object | None = None
    reference: object | None = None
    referenceLabelValues: Sequence[int] | None = None
    metricsTable: object | None = None
    logitPlot: bool = True
    device: str = "auto"
    extraArguments: Sequence[str] = ()

    def check(self) -> None:
        """Raise ValueError naming the first problem (a missing input, a bad device)."""
        if not self.volumes:
            raise ValueError("no input volume: select a volume for each of the model's channels")
        for channel, node in self.volumes.items():
            if node is None:
                raise ValueError(f"no volume selected for the {channel} channel")
            if node.GetImageData() is None:
                raise ValueError(f"{node.GetName()} ({channel}): the volume has no voxels")
        if not self.model:
            raise ValueError("no model selected")
        if self.outputSegmentation is None:
            raise ValueError("no output segmentation selected")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if not self.segments:
            raise ValueError("no output segment defined")


@dataclass
class SegmentationResult:
    """What a finished run produced."""

    engine: EngineResult
    segmentIds: list[str] = field(default_factory=list)
    metrics: dict[str, object] = field(default_factory=dict)
    metricsTable: object | None = None
    histogram: plots.LogitHistogram | None = None
    plotNodes: plots.PlotNodes | None = None
    device: str | None = None
    #: The operating point the engine applied (threshold, postprocess, tta, chosen_on).
    operatingPoint: dict[str, object] | None = None
    #: Moves the threshold after the run (binary models); None for multi-class models.
    session: operatingpoint.OperatingPointSession | None = None


ResultT = TypeVar("ResultT")


class EngineJob(Generic[ResultT]):
    """An engine run from the scene: inputs in a temporary folder, the engine in a subprocess.

    Subclasses write their inputs and return the engine arguments in :meth:`prepare`, name the
    device in :attr:`device` and build their result in :meth:`finish` (which ends with
    :meth:`cleanup`). Call :meth:`start`, :meth:`finish` and the subclass's ``poll`` from the GUI
    thread; :meth:`run` does all in one call.

    Args:
        scene: the vtkMRMLScene.
        segmentationsLogic: the Segmentations module logic.
        processFactory: creates the :class:`~AsymSegLib.process.EngineProcess` (tests and the
            modules pass one configured with the right interpreter).
        workDirectory: parent of the temporary folder (default: the system's).
        keepFiles: keep the temporary folder (for debugging).
    """

    def __init__(self, scene, segmentationsLogic, processFactory: Callable[[], EngineProcess] = EngineProcess,
                 workDirectory: str | Path | None = None, keepFiles: bool = False) -> None:
        self.scene = scene
        self.segmentationsLogic = segmentationsLogic
        self.process = processFactory()
        self.workDirectory = workDirectory
        self.keepFiles = keepFiles
        self.folder: Path | None = None

    @property
    def device(self) -> str:
        """The device: "auto", "cpu" or "cuda" ("cpu" hides every GPU from the engine)."""
        raise NotImplementedError

    def prepare(self) -> list[str]:
        """Write the inputs to a temporary folder; returns the engine arguments (GUI thread)."""
        raise NotImplementedError

    def finish(self) -> ResultT:
        """The run's result once the engine has finished (GUI thread); removes the temporary folder."""
        raise NotImplementedError

    def _makeFolder(self, prefix: str) -> Path:
        self.folder = Path(tempfile.mkdtemp(prefix=prefix, dir=self.workDirectory))
        return self.folder

    def start(self, launcher: Launcher | None = None) -> None:
        """Write the inputs and start the engine (GUI thread); returns at once.

        Raises:
            ValueError, OSError: the inputs could not be written or the engine could not start;
                the temporary folder is removed first.
        """
        try:
            args = self.prepare()
            self.process.start(args, forceCpu=self.device == "cpu", launcher=launcher)
        except Exception:
            self.cleanup()
            raise

    @property
    def finished(self) -> bool:
        return self.process.finished

    def cancel(self) -> None:
        """Ask the engine to stop (it is killed after the grace period)."""
        self.process.cancel()

    def run(self, timeout: float | None = None,
            onEvent: Callable[[ProgressEvent], None] | None = None) -> ResultT:
        """Start, wait and finish in one call (scripts, batch use, tests)."""
        self.start()

        def handle(event: ProgressEvent) -> None:
            self._follow(event)
            if onEvent is not None:
                onEvent(event)

        try:
            self.process.wait(timeout=timeout, onEvent=handle)
        except BaseException:
            self.process.kill()
            self.process.close()
            self.cleanup()
            raise
        return self.finish()

    def _follow(self, event: ProgressEvent) -> None:
        """Called by :meth:`run` with each event before ``onEvent`` (a subclass may keep track)."""

    def cleanup(self) -> None:
        """Remove the temporary folder (unless ``keepFiles``)."""
        if self.folder is not None and not self.keepFiles:
            shutil.rmtree(self.folder, ignore_errors=True)


class SegmentationJob(EngineJob[SegmentationResult]):
    """A segmentation run in an engine subprocess.

    Args:
        request: the :class:`SegmentationRequest`.
        scene, segmentationsLogic, processFactory, workDirectory, keepFiles: see :class:`EngineJob`.

    Example (blocking, e.g. from the Python console)::

        job = SegmentationJob(request, slicer.mrmlScene, slicer.modules.segmentations.logic())
        result = job.run()
    """

    def __init__(self, request: SegmentationRequest, scene, segmentationsLogic,
                 processFactory: Callable[[], EngineProcess] = EngineProcess,
                 workDirectory: str | Path | None = None, keepFiles: bool = False) -> None:
        request.check()
        super().__init__(scene, segmentationsLogic, processFactory, workDirectory, keepFiles)
        self.request = request
        self.paths: dict[str, Path] = {}
        self._referenceArray: np.ndarray | None = None
        self.lastProgress: ProgressEvent | None = None

    # ------------------------------------------------------------------ steps
    @property
    def referenceVolume(self):
        return next(iter(self.request.volumes.values()))

    @property
    def device(self) -> str:
        return self.request.device

    def prepare(self) -> list[str]:
        """Write the inputs to a temporary folder; returns the engine arguments (GUI thread)."""
        request = self.request
        self._makeFolder("asymseg-segment-")
        args = ["segment", "--model", request.model]
        for channel, node in request.volumes.items():
            path = S.writeVolume(node, self.folder / f"input_{channel}{S.EXCHANGE_EXTENSION}")
            self.paths[f"input_{channel}"] = path
            args += ["--channel", f"{channel}={path}"]
        self.paths["output"] = self.folder / f"labels{S.EXCHANGE_EXTENSION}"
        args += ["--output", str(self.paths["output"])]
        # dz and the probability of a binary model: the operating-point slider works on them after the run
        slider = len(request.segments) == 1
        if slider or request.probabilityVolume is not None:
            self.paths["probabilities"] = self.folder / f"probabilities{S.EXCHANGE_EXTENSION}"
            args += ["--probabilities", str(self.paths["probabilities"])]
        if slider or (request.reference is not None and request.logitPlot):
            self.paths["logits"] = self.folder / f"logits{S.EXCHANGE_EXTENSION}"
            args += ["--logits", str(self.paths["logits"])]
        if request.reference is not None:
            self._referenceArray = S.referenceToArray(
                request.reference, self.referenceVolume, self.segmentationsLogic, self.scene,
                labelValues=request.referenceLabelValues)
            self.paths["reference"] = S.writeArrayOnGrid(
                self._referenceArray, self.referenceVolume, self.folder / f"reference{S.EXCHANGE_EXTENSION}",
                self.scene)
            args += ["--reference", str(self.paths["reference"])]
        args += ["--device", request.device, "--progress", "jsonl", *request.extraArguments]
        return args

    def poll(self) -> list[ProgressEvent]:
        """New events since the last call (no blocking)."""
        events = self.process.poll()
        for event in events:
            if event.fraction is not None:
                self.lastProgress = event
        return events

    def finish(self) -> SegmentationResult:
        """Import the results into the scene once the engine has finished (GUI thread).

        Raises:
            EngineError: the engine failed or was cancelled (nothing is imported).
            OSError: an output file is missing or unreadable.
        """
        try:
            engineResult = self.process.result()
            engineResult.raiseIfFailed()
            return self._importResults(engineResult)
        finally:
            self.cleanup()

    # ------------------------------------------------------------------ results
    def _importResults(self, engineResult: EngineResult) -> SegmentationResult:
        request = self.request
        done = engineResult.doneEvent
        result = SegmentationResult(engine=engineResult, device=(done.data.get("device") if done else None))
        result.segmentIds = S.importLabelmapFile(
            self.paths["output"], request.outputSegmentation, request.segments, self.segmentationsLogic,
            self.scene, referenceVolume=self.referenceVolume)
        S.placeBeside(request.outputSegmentation, self.referenceVolume, self.scene)
        if request.probabilityVolume is not None:
            S.readVolumeInto(self.paths["probabilities"], request.probabilityVolume)
            S.placeBeside(request.probabilityVolume, self.referenceVolume, self.scene)
        metrics = done.data.get("metrics") if done is not None else None
        if request.reference is not None and isinstance(metrics, Mapping):
            result.metrics = dict(metrics)
            table = request.metricsTable
            if table is None:
                name = f"{request.outputSegmentation.GetName()} metrics"
                table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", name)
            tables.updateMetricsTable(table, result.metrics)
            result.metricsTable = table
        dz = self._readArray("logits") if "logits" in self.paths else None
        if request.reference is not None and request.logitPlot and self._referenceArray is not None:
            result.histogram = self._logitHistogram(dz)
            result.plotNodes = plots.updateLogitDistributionPlot(
                self.scene, result.histogram, title=f"{request.outputSegmentation.GetName()} logit distribution")
        result.operatingPoint = dict(done.data["operating_point"]) if done is not None and isinstance(
            done.data.get("operating_point"), Mapping) else None
        if result.operatingPoint is not None and len(request.segments) == 1 and dz is not None:
            result.session = operatingpoint.OperatingPointSession(
                dz, operatingpoint.brainMask(dz, self._readArray("probabilities")), self.scene,
                self.segmentationsLogic, request.outputSegmentation, request.segments[0].segmentId,
                self.referenceVolume, result.operatingPoint, reference=self._referenceArray,
                metrics=result.metrics, metricsTable=result.metricsTable, modelPath=modelFolder(request.model))
            result.session.setThreshold(result.session.runThreshold)  # stores the threshold with the segmentation
        return result

    def _readArray(self, key: str) -> np.ndarray:
        """An output volume of the run as a float32 array on the input grid."""
        node = S.readVolume(self.paths[key], self.scene, name=f"__asymseg_temp_{key}__")
        try:
            return sutil.arrayFromVolume(node).astype(np.float32, copy=True)
        finally:
            S.removeNodes(self.scene, [node])

    def _logitHistogram(self, dz: np.ndarray) -> plots.LogitHistogram:
        mask = plots.backgroundMask(sutil.arrayFromVolume(self.referenceVolume))
        return plots.logitHistograms(dz, self._referenceArray, mask=mask)


def modelFolder(model: str) -> Path | None:
    """The folder of a ``--model`` argument: the path itself, or the bundled or user model of that name."""
    path = Path(model)
    if models.findModelCard(path) is not None:
        return path
    for folder in (models.bundledModelsDirectory(), models.userModelsDirectory()):
        if models.findModelCard(folder / model) is not None:
            return folder / model
    return None
