"""Start, Overwrite and Resume with the real engine, from scene cases on real MRML."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

pytest.importorskip("slicer_core", reason="slicer-core (real MRML) is not installed")

from AsymSegLib import progress  # noqa: E402
from AsymSegLib import scene as S  # noqa: E402
from AsymSegTrainingLib import export, jobs, params  # noqa: E402

pytestmark = [pytest.mark.slicer, pytest.mark.slow]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    for args in (["phantom", "--out", folder / "cases", "--cases", "1", "--size", "32", "--seed", "21"],
                 ["models", "create", "--architecture", "deepmedic", "--channels", "flair,t1c", "--out",
                  folder / "base"]):
        completed = subprocess.run([sys.executable, "-m", "asymseg", *map(str, args)], capture_output=True,
                                   text=True, timeout=600)
        assert completed.returncode == 0, completed.stderr
    return folder, next(p for p in (folder / "cases").iterdir() if p.is_dir())


def sceneCase(mrml, caseFolder):
    caseId = caseFolder.name
    flair = S.readVolume(caseFolder / f"{caseId}_flair.nii.gz", mrml.scene, name="FLAIR")
    t1c = S.readVolume(caseFolder / f"{caseId}_t1ce.nii.gz", mrml.scene, name="T1c")
    labels = S.readVolume(caseFolder / f"{caseId}_seg.nii.gz", mrml.scene, name="labels", labelmap=True)
    return export.SceneCase("scene", {"flair": flair, "t1c": t1c}, labels)


def train(mrml, parameters, case=None):
    job = jobs.TrainingJob(parameters, mrml.scene, mrml.segmentations, sceneTrainCases=[case] if case else [])
    return job, job.run(timeout=900)


def test_a_taken_name_offers_overwrite_and_resume_and_both_work(mrml, phantom, tmp_path):
    folder, caseFolder = phantom
    case = sceneCase(mrml, caseFolder)
    output = str(tmp_path / "mine")
    first = params.TrainingParameters(trainCases=[], outputModel=output, baseModel=str(folder / "base"),
                                      iterations=50, batchSize=2, device="cpu", extraArguments=["--stop-after", "2"])
    assert params.outputState(output).free
    job, result = train(mrml, first, case)
    assert result.succeeded, result.engine.summary()
    state = params.outputState(output)
    assert state.modelExists and state.runExists and not state.free
    assert state.modelFolder == tmp_path / "mine" and state.runFolder == tmp_path / "mine.run"
    # the first run succeeded: its exported scene cases are removed (so the panel offers no Resume)
    assert not job.casesFolder.exists() and not state.canResume
    # Start with the same name: refused before anything is written, saying what the buttons do
    with pytest.raises(ValueError, match=r"a model named mine exists already .* Overwrite replaces it"):
        train(mrml, first, case)
    # Overwrite: a new run, which the user cancels: the cases stay, and the run can be resumed
    overwrite = params.TrainingParameters(trainCases=[], outputModel=output, baseModel=str(folder / "base"),
                                          iterations=100000, batchSize=2, device="cpu", overwrite=True)
    job = jobs.TrainingJob(overwrite, mrml.scene, mrml.segmentations, sceneTrainCases=[case])
    job.start()
    assert job.effectiveParameters.asArgList().count("--overwrite") == 1
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and job.progress.done < 3:
        job.poll()
        assert not job.finished, job.process.result().summary()
        time.sleep(0.05)
    job.cancel()
    job.process.wait(timeout=600)
    result = job.finish()
    assert result.engine.cancelled and result.engine.returnCode == 130
    assert job.casesFolder.is_dir()
    state = params.outputState(output)
    assert state.canResume and "Resume continues its run" in state.text()
    stoppedAt = result.progress.done
    # Resume: only iterations and device change; the run goes on from its checkpoint
    total = stoppedAt + 3
    resume = params.TrainingParameters(trainCases=[], outputModel=output, resume=str(state.runFolder),
                                       iterations=total, device="cpu")
    assert resume.asArgList() == ["finetune", "--resume", str(state.runFolder), "--iterations", str(total),
                                  "--device", "cpu", "--progress", "jsonl"]
    _, result = train(mrml, resume)
    assert result.succeeded, result.engine.summary()
    assert result.progress.iterations and min(result.progress.iterations) > stoppedAt - 1  # continued, not anew
    assert max(result.progress.iterations) == total
    with pytest.raises(ValueError, match="choose one"):
        params.TrainingParameters(trainCases=[], outputModel=output, resume="x", overwrite=True).check()


def test_bare_names_go_to_the_user_models_and_runs_folders(monkeypatch, tmp_path):
    monkeypatch.setenv("ASYMSEG_HOME", str(tmp_path))
    assert params.outputFolders("site-model") == (tmp_path / "models" / "site-model", tmp_path / "runs" / "site-model")
    from asymseg.train import api

    assert api.resolve_output("site-model") == tmp_path / "models" / "site-model"
    assert api.default_run_dir("site-model") == tmp_path / "runs" / "site-model"
    assert params.outputFolders(str(tmp_path / "x"))[1] == api.default_run_dir(str(tmp_path / "x"))


def test_the_estimate_before_start_times_a_short_warm_up_on_this_device(mrml, phantom, tmp_path):
    from AsymSegTrainingLib import estimate

    folder, caseFolder = phantom
    planned = params.TrainingParameters(trainCases=[], valCases=[str(caseFolder)], outputModel=str(tmp_path / "planned"),
                                        baseModel=str(folder / "base"), iterations=300, batchSize=2, device="cpu")
    job = estimate.WarmupJob(planned, mrml.scene, mrml.segmentations, sceneTrainCases=[sceneCase(mrml, caseFolder)])
    warmupFolder = job.warmupFolder
    args = job.prepare()
    assert args[args.index("--stop-after") + 1] == "4" and "--val-case" not in args
    assert args[args.index("--output-model") + 1].startswith(str(warmupFolder))
    job.cleanup()
    job = estimate.WarmupJob(planned, mrml.scene, mrml.segmentations, sceneTrainCases=[sceneCase(mrml, caseFolder)])
    events = []
    result = job.run(timeout=900, onEvent=events.append)
    # The engine's own measure of iterations 2-4 (training seconds only), not the pipe's arrival times.
    engine = [e for e in events if e.kind == "log" and "seconds_per_iteration" in e.data]
    assert len(engine) == 1 and engine[0].data["measured_iterations"] == 3
    assert result.iterations == 300 and result.measuredIterations == 3
    assert result.secondsPerIteration == engine[0].data["seconds_per_iteration"] > 0
    # Every iteration of the warm-up reached the panel's side, the last one included, however fast.
    assert [e.done for e in events if e.kind == "iteration"][-1] == 4
    assert result.seconds == pytest.approx(300 * result.secondsPerIteration)
    assert result.text().startswith("About ") and "for 300 iterations" in result.text()
    assert not (tmp_path / "planned").exists() and not job.warmupFolder.exists() and not warmupFolder.exists()
    print(f"warm-up on the 32^3 phantom: {result.text()}")


def test_the_estimate_leaves_out_the_first_iteration():
    from AsymSegTrainingLib import estimate

    times = [(1, 100.0), (2, 130.0), (3, 132.0), (4, 134.0)]  # the first iteration includes the start-up
    result = estimate.estimateFromTimes(times, 1000, "cpu")
    assert result.secondsPerIteration == pytest.approx(2.0) and result.measuredIterations == 2
    assert result.text() == ("About 33 min 20 s for 1000 iterations (2.00 s per iteration on cpu, measured over 2; "
                             "validation comes on top)")
    with pytest.raises(ValueError, match="at least 3"):
        estimate.estimateFromTimes(times[:2], 10, "cpu")


def test_the_engine_measure_is_read_only_from_a_well_formed_estimate_event():
    from AsymSegTrainingLib import estimate

    def log(**data):
        return progress.ProgressEvent(kind="log", data=data)

    assert estimate.engineMeasure(log(seconds_per_iteration=2.5, measured_iterations=3)) == (2.5, 3)
    for bad in (log(message="x"), log(seconds_per_iteration="2", measured_iterations=3),
                log(seconds_per_iteration=True, measured_iterations=3), log(seconds_per_iteration=2.0),
                log(seconds_per_iteration=float("nan"), measured_iterations=3),
                log(seconds_per_iteration=-1.0, measured_iterations=3),
                log(seconds_per_iteration=2.0, measured_iterations=0)):
        assert estimate.engineMeasure(bad) is None, bad.data
    assert estimate.engineMeasure(progress.ProgressEvent(kind="iteration", data={"seconds_per_iteration": 2.0,
                                                                              "measured_iterations": 3})) is None
