"""How long a fine-tuning run takes on this device, measured before Start.

:class:`WarmupJob` runs the planned training for a few iterations (``--stop-after``) on the same
cases, base model, technique and device, into a temporary folder, and times the iteration events
as they arrive. The first iteration (start-up, first batches) is left out; the rest gives the
seconds per iteration, and :class:`RuntimeEstimate` scales it to the planned iterations.
The engine times the same iterations itself (its ``estimate`` log event, training seconds only, not
the delays of the pipe): that measure is used when it comes, the arrival times otherwise.
Validation passes are not included (they add a case's inference every ``--val-every`` iterations).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from AsymSegLib.process import EngineProcess
from AsymSegLib.progress import EVENT_ITERATION, EVENT_LOG, ProgressEvent, asCount, formatDuration

from AsymSegTrainingLib.jobs import TrainingJob
from AsymSegTrainingLib.params import TrainingParameters

#: Iterations of the warm-up run (the first is not timed).
WARMUP_ITERATIONS = 4


@dataclass(frozen=True)
class RuntimeEstimate:
    """The measured speed and what it means for the planned run."""

    secondsPerIteration: float
    measuredIterations: int
    iterations: int
    device: str

    @property
    def seconds(self) -> float:
        return self.secondsPerIteration * self.iterations

    def text(self) -> str:
        """``"About 52 min for 300 iterations (10.4 s per iteration on cpu, measured over 3)"``."""
        return (f"About {formatDuration(self.seconds)} for {self.iterations} iterations "
                f"({self.secondsPerIteration:.2f} s per iteration on {self.device}, measured over "
                f"{self.measuredIterations}; validation comes on top)")


def estimateFromTimes(times: Sequence[tuple[int, float]], iterations: int, device: str) -> RuntimeEstimate:
    """Seconds per iteration from (iteration, arrival time) pairs, the first one left out.

    Raises:
        ValueError: fewer than two timed iterations after the first.
    """
    ordered = sorted(times)
    if len(ordered) < 3:
        raise ValueError(f"the warm-up reported {len(ordered)} iteration(s); at least 3 are needed to time it")
    (firstIteration, firstTime), (lastIteration, lastTime) = ordered[1], ordered[-1]
    if lastIteration <= firstIteration:
        raise ValueError("the warm-up's iterations did not advance")
    perIteration = (lastTime - firstTime) / (lastIteration - firstIteration)
    return RuntimeEstimate(perIteration, lastIteration - firstIteration, int(iterations), device)


def engineMeasure(event: ProgressEvent) -> tuple[float, int] | None:
    """(seconds per iteration, iterations timed) from the engine's estimate event, else None."""
    if event.kind != EVENT_LOG:
        return None
    perIteration, measured = event.data.get("seconds_per_iteration"), asCount(event.data.get("measured_iterations"))
    if isinstance(perIteration, bool) or not isinstance(perIteration, (int, float)):
        return None
    if not math.isfinite(perIteration) or perIteration <= 0 or measured is None or measured < 1:
        return None
    return float(perIteration), measured


class WarmupJob(TrainingJob):
    """A few iterations of the planned run, timed; :meth:`finish` returns a :class:`RuntimeEstimate`.

    Args:
        parameters: the planned run (its output model, validation cases, overwrite and resume
            settings are not used).
        scene, segmentationsLogic, sceneTrainCases, processFactory: as for :class:`TrainingJob`.
        warmupIterations: iterations to run (>= 3).
    """

    def __init__(self, parameters: TrainingParameters, scene, segmentationsLogic, sceneTrainCases=(),
                 processFactory: Callable[[], EngineProcess] = EngineProcess,
                 warmupIterations: int = WARMUP_ITERATIONS) -> None:
        if warmupIterations < 3:
            raise ValueError(f"warmupIterations must be >= 3, got {warmupIterations}")
        self.plannedIterations = parameters.iterations
        self.warmupFolder = Path(tempfile.mkdtemp(prefix="asymseg-warmup-"))
        warmup = dataclasses.replace(
            parameters, outputModel=str(self.warmupFolder / "model"), valCases=[], overwrite=False, resume=None,
            iterations=max(parameters.iterations, warmupIterations),
            extraArguments=[*parameters.extraArguments, "--stop-after", str(warmupIterations)])
        super().__init__(warmup, scene, segmentationsLogic, sceneTrainCases=sceneTrainCases,
                         processFactory=processFactory)
        self.times: list[tuple[int, float]] = []
        self.measured: tuple[float, int] | None = None

    def _record(self, events: Sequence[ProgressEvent]) -> None:
        now = time.monotonic()
        for event in events:
            self.measured = engineMeasure(event) or self.measured
            if event.kind == EVENT_ITERATION:
                iteration = event.done if event.done is not None else asCount(event.data.get("iteration"))
                if iteration is not None:
                    self.times.append((iteration, now))

    def poll(self):
        events, changed = super().poll()
        self._record(events)
        return events, changed

    def _follow(self, event: ProgressEvent) -> None:
        super()._follow(event)
        self._record([event])

    def cleanup(self) -> None:
        """Remove the warm-up's folder (its cases, model and run)."""
        super().cleanup()
        shutil.rmtree(self.warmupFolder, ignore_errors=True)

    def finish(self) -> RuntimeEstimate:  # type: ignore[override]
        """The estimate once the warm-up has finished; removes its temporary folder.

        Raises:
            EngineError: the warm-up failed (the message is the engine's).
            ValueError: it reported too few iterations to time.
        """
        try:
            result = super().finish()
            result.engine.raiseIfFailed()
            done = result.engine.doneEvent
            device = str(done.data.get("device") or self.parameters.device) if done else self.parameters.device
            if self.measured is not None:
                perIteration, measured = self.measured
                return RuntimeEstimate(perIteration, measured, int(self.plannedIterations), device)
            return estimateFromTimes(self.times, self.plannedIterations, device)
        finally:
            self.cleanup()
