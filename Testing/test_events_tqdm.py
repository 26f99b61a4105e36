"""The tqdm renderer as a terminal shows it: nested stages, no stale bars, messages above the bars."""

from __future__ import annotations

import io

from asymseg import constants as C
from asymseg.events import Event, NullRenderer, TqdmRenderer
from helpers.terminal import screen


def _render(events) -> list[str]:
    out = io.StringIO()
    renderer = TqdmRenderer(out)
    for item in events:
        if isinstance(item, str):
            renderer.echo(item, out)
        else:
            renderer(item)
    renderer.close()
    return screen(out.getvalue())


def _ev(kind, stage, done=None, total=None, message=None, **data):
    return Event(kind=kind, stage=stage, done=done, total=total, message=message, data=data)


def _finetune(iterations=20, every=10, cases=2):
    """The events of ``asymseg finetune``: load the cases, then train with validation messages."""
    yield _ev(C.EVENT_LOG, "load", message="loading 2 case(s)")
    for k in range(cases + 1):
        yield _ev(C.EVENT_PROGRESS, "load", k, cases)
    yield _ev(C.EVENT_START, "train", 0, iterations, "training 20 iterations")
    for i in range(1, iterations + 1):
        yield _ev(C.EVENT_ITERATION, "train", i, iterations, loss=0.25, iterations_per_second=3.0, eta_seconds=1.0)
        if i % every == 0:
            yield _ev(C.EVENT_VALIDATION, "validate", i, iterations, f"validation at {i}: DSC 0.5")
    yield _ev(C.EVENT_DONE, "train", iterations, iterations, "training done")


def test_training_after_loading_and_its_validations_leave_one_bar_each():
    lines = _render(_finetune())
    assert lines[0] == "loading 2 case(s)" and lines[1].startswith("load: 100%") and "2/2" in lines[1]
    assert lines[2:4] == ["training 20 iterations", "validation at 10: DSC 0.5"]
    assert lines[4].startswith("train: 100%") and "20/20" in lines[4] and "loss=0.25" in lines[4]
    assert "second" not in lines[4]  # tqdm's own rate and time left, not the event's
    assert lines[5:] == ["validation at 20: DSC 0.5", "training done"]  # the bar closes when its work is over


def test_a_nested_stage_disappears_and_its_parent_keeps_its_bar_count_and_rate():
    out = io.StringIO()
    renderer = TqdmRenderer(out)
    renderer(_ev(C.EVENT_START, "experiment", 0, 3, "experiment: 3 cells"))
    outer = renderer._bars[0][1]
    for cell in range(3):
        renderer(_ev(C.EVENT_LOG, "experiment", message=f"cell {cell}: training"))
        for i in range(1, 6):
            renderer(_ev(C.EVENT_ITERATION, "train", i, 5))
        assert [name for name, _ in renderer._bars] == ["experiment", "train"]
        renderer(_ev(C.EVENT_PROGRESS, "experiment", cell + 1, 3))
        assert renderer._bars == [("experiment", outer)] and outer.n == cell + 1
    renderer(_ev(C.EVENT_DONE, "experiment", 3, 3, "experiment: ran 3"))
    renderer.close()
    lines = screen(out.getvalue())
    assert lines[:4] == ["experiment: 3 cells", "cell 0: training", "cell 1: training", "cell 2: training"]
    assert lines[4].startswith("experiment: 100%") and "3/3" in lines[4]
    assert lines[5:] == ["experiment: ran 3"]


def test_sequential_stages_inside_a_case_loop_disappear_and_results_print_above_the_bar():
    events = []
    for index, case in enumerate(("a", "b")):
        events.append(_ev(C.EVENT_START, "case", index, 2, f"case {index + 1}/2: {case}"))
        for stage in ("load", "infer", "write"):
            events += [_ev(C.EVENT_PROGRESS, stage, 0, 1), _ev(C.EVENT_PROGRESS, stage, 1, 1)]
        events.append(_ev(C.EVENT_PROGRESS, "case", index + 1, 2))
        events.append(f"{case}: 12 foreground voxels")
    lines = _render(events)
    assert lines[:3] == ["case 1/2: a", "a: 12 foreground voxels", "case 2/2: b"]
    assert lines[3].startswith("case: 100%") and "2/2" in lines[3]
    assert lines[4:] == ["b: 12 foreground voxels"]


def test_a_stage_that_runs_again_gets_a_new_bar():
    events = []
    for technique in ("ce", "combo"):
        events.append(_ev(C.EVENT_LOG, "demo", message=f"training {technique}"))
        events += [_ev(C.EVENT_ITERATION, "train", i, 5) for i in range(1, 6)]
    lines = _render(events)
    assert lines[0] == "training ce" and lines[1].startswith("train: 100%")
    assert lines[2] == "training combo" and lines[3].startswith("train: 100%") and len(lines) == 4


def test_a_failed_stage_closes_its_bars_and_leaves_the_error_to_the_command():
    lines = _render([_ev(C.EVENT_ITERATION, "train", 3, 10),
                     _ev(C.EVENT_PROGRESS, "validate", 1, 4),
                     _ev(C.EVENT_FAILED, "train", message="out of memory")])
    assert len(lines) == 1 and lines[0].startswith("train:  30%") and "3/10" in lines[0]


def test_without_bars_messages_and_results_are_plain_lines():
    out = io.StringIO()
    renderer = TqdmRenderer(out)
    renderer(_ev(C.EVENT_LOG, "load", message="reading"))
    renderer.echo("result", out)
    assert out.getvalue() == "reading\nresult\n"
    quiet = NullRenderer()
    quiet(_ev(C.EVENT_LOG, "load", message="reading"))
    quiet.echo("result", out)
    assert out.getvalue().endswith("result\nresult\n")


def test_a_message_on_a_progress_event_comes_before_the_count_it_completes():
    lines = _render([_ev(C.EVENT_START, "phantom", 0, 2, "writing 2 case(s)"),
                     _ev(C.EVENT_PROGRESS, "phantom", 1, 2, "a: written"),
                     _ev(C.EVENT_PROGRESS, "phantom", 2, 2, "b: written"),
                     _ev(C.EVENT_DONE, "phantom", 2, 2, "wrote 2 case(s)")])
    assert lines[:3] == ["writing 2 case(s)", "a: written", "b: written"]
    assert lines[3].startswith("phantom: 100%") and lines[4:] == ["wrote 2 case(s)"]
