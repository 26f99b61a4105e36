"""Configuration files: size cap, YAML aliases refused, short error lines."""

from __future__ import annotations

import textwrap

import pytest

from asymseg.errors import InputError
from asymseg.io.mapping_file import MAX_CONFIG_BYTES, MAX_QUOTE, parse_mapping

BOMB = textwrap.dedent("""\
    a: &a ["x","x","x","x","x","x","x","x","x"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
    h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
    i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
""")


def test_a_yaml_alias_bomb_is_refused_at_once_with_a_short_line():
    with pytest.raises(InputError) as info:
        parse_mapping(BOMB, ".yaml", "bomb.yaml")
    message = str(info.value)
    assert "aliases" in message and "bomb.yaml" in message and len(message) < 300 and "\n" not in message


def test_the_train_and_experiment_readers_refuse_the_bomb_under_a_memory_limit(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    from helpers.memory_limit import run_python_limited

    script = textwrap.dedent(f"""
        from asymseg.errors import InputError
        from asymseg.train.config import load_config
        from asymseg.experiment.loading import load_experiment_config
        for read in (lambda: load_config({str(path)!r}), lambda: load_experiment_config({str(path)!r})):
            try:
                read()
            except InputError as err:
                assert "aliases" in str(err), err
            else:
                raise SystemExit(3)
    """)
    proc = run_python_limited(script, 1_500_000_000)
    assert proc.returncode == 0, proc.stderr


def test_plain_yaml_and_json_still_read_and_errors_are_capped():
    pytest.importorskip("yaml")
    assert parse_mapping("a: 1\nb: [x, y]\n", ".yaml", "ok.yaml") == {"a": 1, "b": ["x", "y"]}
    assert parse_mapping('{"a": 1}', ".json", "ok.json") == {"a": 1}
    with pytest.raises(InputError, match="larger than"):
        parse_mapping("a: " + "x" * MAX_CONFIG_BYTES, ".yaml", "big.yaml")
    with pytest.raises(InputError) as info:
        parse_mapping("[" * 100_000, ".json", "deep.json")
    assert len(str(info.value)) < MAX_QUOTE + 100
    with pytest.raises(InputError) as info:
        parse_mapping("a: [" + "b, " * 10_000 + "\n:", ".yaml", "bad.yaml")
    assert "invalid YAML" in str(info.value) and len(str(info.value)) < MAX_QUOTE + 100


@pytest.mark.parametrize("reader", ["finetune", "experiment"])
def test_both_config_readers_name_a_missing_or_undecodable_file(tmp_path, reader):
    from asymseg.experiment.loading import load_experiment_config
    from asymseg.train.config import load_config

    read = load_config if reader == "finetune" else load_experiment_config
    with pytest.raises(InputError, match=r"gone\.json: no such config file"):
        read(tmp_path / "gone.json")
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"name": "caf\xe9"}')  # Latin-1, not UTF-8
    with pytest.raises(InputError, match=r"latin\.json: cannot read the config file: .*utf-8"):
        read(latin)
