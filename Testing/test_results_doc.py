"""docs/RESULTS.md, the study's report: its commands parse, its figures exist, its tables are whole."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "RESULTS.md"
TEXT = DOC.read_text(encoding="utf-8")


def _commands() -> list[list[str]]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", TEXT, re.S):
        for line in block.splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens and tokens[0] == "asymseg":
                commands.append(tokens[1:])
    return commands


@pytest.mark.parametrize("argv", _commands(), ids=lambda argv: " ".join(argv[:6]))
def test_every_command_parses_with_the_real_parser(argv):
    from asymseg.cli import build_parser

    argv = [arg.replace("$D", "cases") for arg in argv if arg != "&"]
    assert callable(build_parser().parse_args(argv).func)


def test_the_study_commands_are_all_there():
    joined = [" ".join(argv) for argv in _commands()]
    assert any("--config paper-mini" in c and "--seeds 0,1,2" in c and "--report-only" in c for c in joined)
    assert sum("--config brats2015-pair" in c for c in joined) == 2


def test_every_figure_exists_and_is_a_png():
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", TEXT)
    assert len(figures) >= 6
    for figure in figures:
        path = DOC.parent / figure
        assert path.is_file(), figure
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure


def _paper_mini_rows(section: str) -> list[tuple[int, str, int]]:
    rows = re.findall(r"^\| (\d+) \| [\d.]+ \| ([a-z-]+) \| (\d+) \|", section, re.M)
    return [(int(n), t, int(s)) for n, t, s in rows if int(n) in (2, 4, 12)]


@pytest.mark.parametrize("start, end, extra", [
    ("## 1. paper-mini, faithful", "### 1b.", {"combo-authors"}),  # the run with the faithful training
    ("### 1c.", "## 2.", set()),  # the run before it, kept for comparison
])
def test_each_paper_mini_table_has_every_cell_group_with_three_seeds(start, end, extra):
    section = TEXT[TEXT.index(start):TEXT.index(end)]
    phantom = _paper_mini_rows(section)
    techniques = {"ce", "fg-sampling", "dice", "lm", "a-lm", "focal", "a-focal", "at", "a-at", "mixup",
                  "a-mixup", "combo"} | extra
    assert {(n, t) for n, t, _ in phantom} == {(n, t) for n in (2, 4, 12) for t in techniques}
    assert len(phantom) == 3 * len(techniques) and all(s == 3 for _, _, s in phantom)


@pytest.mark.parametrize("eps", [1, 3])
def test_the_eps_recipes_change_only_the_adversarial_cells_of_paper_mini(eps, tmp_path):
    from asymseg.experiment import dry_run, load_experiment_config

    mini = load_experiment_config("paper-mini", seeds=[0, 1, 2])
    recipe = load_experiment_config(REPO / "recipes" / "at-eps" / f"eps{eps}.json")
    assert recipe.phantom == mini.phantom and recipe.model == mini.model and recipe.train == mini.train
    assert set(recipe.techniques) == {"at", "a-at"} and recipe.seeds == (0, 1, 2)
    assert recipe.technique_overrides == {"at": {"eps": float(eps)}, "a-at": {"eps": float(eps)}}
    cases = {p.cell.id: p.train_cases for p in dry_run(mini, tmp_path / "mini")[0]}
    for planned in dry_run(recipe, tmp_path / "eps")[0]:
        assert [Path(c).name for c in planned.train_cases] == [Path(c).name for c in cases[planned.cell.id]]
