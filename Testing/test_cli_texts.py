"""What the command line says is true: help texts, examples, messages and documented file names."""

from __future__ import annotations

import argparse
import re
import shutil
from collections.abc import Iterator

import pytest

from asymseg.cli import build_parser
from asymseg.context import plain_text


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


PARSERS = list(_parsers(build_parser()))


@pytest.mark.parametrize("path, parser", PARSERS, ids=[" ".join(p) or "asymseg" for p, _ in PARSERS])
def test_no_help_text_shows_restructuredtext_markup(path, parser):
    text = parser.format_help()
    assert not re.search(r"``|:[a-z]+:`|::$", text, re.M), f"asymseg {' '.join(path)} --help:\n{text}"


def test_plain_text_removes_roles_and_literals():
    assert plain_text("Use :func:`asymseg.infer.predict_volume` with ``tile=48``::") == \
        "Use asymseg.infer.predict_volume with tile=48:"
    assert plain_text(":class:`~asymseg.train.TrainConfig`") == "asymseg.train.TrainConfig"


def test_top_level_help_names_every_benchmark_topic():
    from asymseg.commands.bench import TOPICS

    help_text = " ".join(build_parser().format_help().split())
    assert f"benchmarks: {', '.join(TOPICS)}" in help_text and len(TOPICS) == 3


def test_models_named_in_help_examples_exist():
    from asymseg.registry import find_model

    texts = "\n".join(parser.format_help() for _, parser in PARSERS)
    named = set(re.findall(r"--(?:base-)?model ([a-z][\w.-]*)(?=\s)", texts))  # names, not NAME|DIR
    assert "asymseg-starter-deepmedic" in named
    for name in named:
        assert find_model(name).is_dir(), name


def test_a_case_without_a_label_file_says_so(tmp_path, cli):
    assert cli("phantom", "--out", tmp_path / "cases", "--cases", 1, "--size", 32).code == 0
    folder = tmp_path / "nolabel"
    folder.mkdir()
    for image in (tmp_path / "cases" / "phantom_000").glob("*_flair.nii.gz"):
        shutil.copy(image, folder)
    result = cli("info", folder)
    assert result.code == 0
    assert f"tumour core unknown: {folder}: no label file found, so the label convention cannot be guessed" \
        in result.out


def test_importing_a_model_name_that_exists_names_the_overwrite_option(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("ASYMSEG_HOME", str(tmp_path / "home"))
    archive = tmp_path / "starter.zip"
    assert cli("models", "export", "asymseg-starter-deepmedic", "--out", archive).code == 0
    assert cli("models", "import", archive, "--name", "copy").code == 0
    again = cli("models", "import", archive, "--name", "copy")
    assert again.code == 3 and "a user model named 'copy' exists already; choose another name (--name) or " \
                               "replace it (--overwrite)" in again.err
    assert cli("models", "import", archive, "--name", "copy", "--overwrite").code == 0
    exported = cli("models", "export", "asymseg-starter-deepmedic", "--out", archive)
    assert exported.code == 2 and "exists already; choose another name or replace it (--overwrite)" in exported.err


def test_the_documents_import_models_under_distinct_names():
    """Following every document in one home folder must not import two models under one name."""
    from test_readme_commands import COMMANDS, asymseg_argv

    names = []
    for command in COMMANDS:
        if command.kind == "asymseg" and asymseg_argv(command)[:2] == ["models", "import"]:
            argv = asymseg_argv(command)
            names.append(argv[argv.index("--name") + 1] if "--name" in argv else None)
    assert len(names) >= 2 and len(names) == len(set(names)), names


def test_default_probability_and_dz_files_replace_seg_in_the_output_name(tmp_path, cli, one_torch_thread):
    assert cli("phantom", "--out", tmp_path / "cases", "--cases", 1, "--size", 32).code == 0
    out = tmp_path / "results" / "phantom_000_seg.nii.gz"
    result = cli("segment", "--model", "asymseg-starter-deepmedic", "--case", tmp_path / "cases" / "phantom_000",
                 "--output", out, "--probabilities", "--logits", "--progress", "none")
    assert result.code == 0, result.err
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "phantom_000_dz.nii.gz", "phantom_000_prob.nii.gz", "phantom_000_seg.nii.gz"]


def test_a_run_paused_before_any_evaluation_says_which_iteration_it_kept(tmp_path, cli, one_torch_thread):
    assert cli("phantom", "--out", tmp_path / "cases", "--cases", 1, "--size", 32).code == 0
    result = cli("finetune", "--base-model", "asymseg-starter-deepmedic", "--train-case", tmp_path / "cases" / "phantom_000",
                 "--iterations", 4, "--batch-size", 2, "--stop-after", 1, "--output-model", tmp_path / "m",
                 "--progress", "plain")
    assert result.code == 0, result.err
    assert "None" not in result.err + result.out
    assert f"stopped: model of iteration 1 (not evaluated yet) in {tmp_path / 'm'}" in result.err
