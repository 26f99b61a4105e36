"""The common options: every command and action takes them, before or after its name, with one meaning."""

from __future__ import annotations

import argparse
import json

import pytest

from asymseg.cli import COMMON_OPTIONS, build_parser


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaves(sub, (*path, name))


LEAVES = list(_leaves(build_parser()))


@pytest.mark.parametrize("path, parser", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_every_command_and_action_takes_the_common_options_and_json(path, parser):
    options = {o for action in parser._actions for o in action.option_strings}
    assert set(COMMON_OPTIONS) | {"--json"} <= options, " ".join(path)


def test_a_common_option_before_the_command_is_kept_and_one_after_it_wins():
    parser = build_parser()
    assert parser.parse_args(["info", "case"]).threads is None
    assert parser.parse_args(["info", "case"]).progress == "auto"
    before = parser.parse_args(["--threads", "3", "--progress", "jsonl", "--debug", "info", "case"])
    assert (before.threads, before.progress, before.debug) == (3, "jsonl", True)
    after = parser.parse_args(["--threads", "3", "models", "list", "--threads", "2", "--progress", "none"])
    assert (after.threads, after.progress, after.debug) == (2, "none", False)
    assert parser.parse_args(["bench", "losses", "--debug"]).debug is True


def test_threads_after_a_command_that_shows_no_progress_is_applied(tmp_path, cli):
    import torch

    threads = torch.get_num_threads()
    try:
        result = cli("models", "path", "--threads", "1", "--progress", "jsonl", "--json")
        assert result.code == 0 and torch.get_num_threads() == 1
        assert set(json.loads(result.out)) == {"path"}
        bad = cli("models", "list", "--threads", "0")
        assert bad.code == 2 and "--threads must be >= 1, got 0" in bad.err
    finally:
        torch.set_num_threads(threads)


def test_info_and_evaluate_take_progress_and_threads_after_their_name(tmp_path, cli):
    assert cli("phantom", "--out", tmp_path / "cases", "--cases", 1, "--size", 32, "--progress", "none").code == 0
    case = tmp_path / "cases" / "phantom_000"
    label = case / "phantom_000_seg.nii.gz"
    info = cli("info", case, "--progress", "jsonl", "--threads", "1", "--json")
    assert info.code == 0 and json.loads(info.out)["case_id"] == "phantom_000"
    evaluated = cli("evaluate", "--prediction", label, "--reference", label, "--progress", "none", "--debug")
    assert evaluated.code == 0 and "DSC" in evaluated.out


def test_network_param_is_one_name_and_the_former_hparam_still_works(tmp_path, cli):
    args = ["models", "create", "--architecture", "unet", "--channels", "flair"]
    new = cli(*args, "--network-param", "depth=2", "--network-param", "training_output_size=8",
              "--out", tmp_path / "new", "--json")
    old = cli(*args, "--hparam", "depth=2", "--hparam", "training_output_size=8", "--out", tmp_path / "old", "--json")
    assert new.code == 0 and old.code == 0, new.err + old.err
    new_hp, old_hp = (json.loads(r.out)["card"]["architecture"]["hparams"] for r in (new, old))
    assert new_hp == old_hp and new_hp["depth"] == 2
    bad = cli(*args, "--network-param", "depth", "--out", tmp_path / "bad")
    assert bad.code == 2 and "--network-param 'depth': expected KEY=VALUE" in bad.err
    bad = cli(*args, "--network-param", "depth=[2,", "--out", tmp_path / "bad")
    assert bad.code == 2 and "--network-param 'depth=[2,': the value is not JSON" in bad.err
    assert not (tmp_path / "bad").exists()
    for path, parser in LEAVES:
        text = parser.format_help()
        assert "--hparam" not in text, " ".join(path)
        if path in (("models", "create"), ("finetune",), ("bench", "inference"), ("bench", "training")):
            assert "--network-param KEY=VALUE" in text, " ".join(path)


def test_the_cli_document_lists_the_common_options():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "CLI.md").read_text(encoding="utf-8")
    for option in COMMON_OPTIONS:
        assert f"| `{option}" in text, option
