"""Model directories: round trip, card validation, SHA256 and pickle refusal."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from asymseg.errors import InputError, ModelError
from asymseg.modelfile import (
    CARD_FILE,
    WEIGHTS_FILE,
    ModelCard,
    create_model,
    load_model,
    read_card,
    save_model,
    sha256_file,
)
from asymseg.target import TargetSpec

SMALL_UNET = {"depth": 2, "base_features": 4, "training_output_size": 8}


@pytest.fixture
def saved(tmp_path: Path):
    net, card = create_model("unet", ["flair", "t1c"], TargetSpec.tumour_core("brats2015"), seed=3, name="tiny",
                             **SMALL_UNET)
    return save_model(tmp_path / "tiny", net, card), net


def _edit_card(directory: Path, **changes) -> None:
    data = json.loads((directory / CARD_FILE).read_text())
    data.update(changes)
    (directory / CARD_FILE).write_text(json.dumps(data))


@pytest.mark.parametrize("arch,hp", [("deepmedic", {}), ("deepmedic-tmi", {"fc_features": [8, 8]}),
                                     ("unet", SMALL_UNET)])
def test_saved_model_loads_with_identical_outputs(tmp_path, arch, hp):
    target = TargetSpec.tumour_core("brats2017")
    net, card = create_model(arch, ["flair", "t1c", "t1", "t2"], target, seed=1, name="m", **hp)
    with torch.no_grad():  # change the batch-norm statistics so they must be saved too
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-1, 1)
    path = save_model(tmp_path / "m", net, card)
    assert sorted(p.name for p in path.iterdir()) == [CARD_FILE, WEIGHTS_FILE]
    loaded = load_model(path)
    assert not loaded.net.training and loaded.path == path
    assert loaded.card.channels == ("flair", "t1c", "t1", "t2") and loaded.card.target == target
    assert loaded.card.weights_sha256 == sha256_file(path / WEIGHTS_FILE)
    n = loaded.net.output_multiple
    x = torch.randn(1, 4, *loaded.net.input_shape((n, n, 2 * n)))
    with torch.no_grad():
        assert torch.equal(loaded.net(x), net.eval()(x))


def test_unknown_card_keys_are_kept_and_provenance_round_trips(tmp_path, saved):
    path, net = saved
    card = read_card(path)
    card = card.replace(provenance={"data": ["case1"], "validation": {"dsc": 0.5}},
                        extra={"x-lab": {"site": "A"}})
    again = save_model(tmp_path / "again", net, card)
    data = json.loads((again / CARD_FILE).read_text())
    assert data["x-lab"] == {"site": "A"} and data["provenance"]["validation"] == {"dsc": 0.5}
    assert read_card(again).extra == {"x-lab": {"site": "A"}}


def test_existing_directory_is_not_overwritten_unless_asked(tmp_path, saved):
    path, net = saved
    card = read_card(path)
    with pytest.raises(ModelError, match="tiny: already exists"):
        save_model(path, net, card)
    save_model(path, net, card.replace(description="second"), overwrite=True)
    assert read_card(path).description == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]  # no temp folders left
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ModelError, match="not a model directory; refusing to replace it"):
        save_model(other, net, card, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"


def test_sha256_mismatch_is_refused_naming_both_digests(saved):
    path, _ = saved
    data = bytearray((path / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (path / WEIGHTS_FILE).write_bytes(bytes(data))
    expected = read_card(path).weights_sha256
    actual = sha256_file(path / WEIGHTS_FILE)
    with pytest.raises(ModelError, match=f"SHA256 mismatch: model.json expects {expected[:16]}.*has {actual[:16]}"):
        load_model(path)


def test_invalid_json_names_the_file_and_position(saved):
    path, _ = saved
    (path / CARD_FILE).write_text('{"format_version": 1,\n  "name": }')
    with pytest.raises(ModelError, match=r"model\.json: invalid JSON at line 2 column 11"):
        load_model(path)


@pytest.mark.parametrize("changes,match", [
    ({"format_version": 2}, r"format_version: 2 is not supported.*newer asymseg"),
    ({"format_version": "1"}, "format_version: expected an integer"),
    ({"architecture": {"name": "resnet", "hparams": {}}}, "architecture.name: unknown architecture 'resnet'"),
    ({"channels": []}, "channels: expected a non-empty list"),
    ({"target": {"classes": [{"name": "background", "rare": False}]}}, "target: .*background class and at least"),
    ({"weights": {"file": "../x.safetensors", "sha256": "0" * 64}}, "weights.file: expected a plain"),
    ({"architecture": {"name": "unet", "hparams": {"depth": 0}}}, "architecture.hparams: depth must be"),
])
def test_invalid_cards_are_refused_naming_the_field(saved, changes, match):
    path, _ = saved
    _edit_card(path, **changes)
    with pytest.raises(ModelError, match=match) as info:
        load_model(path)
    assert str(path / CARD_FILE) in str(info.value)


def test_tensors_that_do_not_fit_the_architecture_are_refused(saved):
    path, _ = saved
    card = json.loads((path / CARD_FILE).read_text())
    card["architecture"]["hparams"]["depth"] = 3
    (path / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"does not fit unet .*missing \d+ tensor"):
        load_model(path)
    card["architecture"]["hparams"] = dict(SMALL_UNET, base_features=8)
    (path / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"tensor encoder.0.0.0.weight has shape \(4, 2, 3, 3, 3\), .*\(8, 2, 3, 3, 3\)"):
        load_model(path)


def test_torch_save_checkpoints_are_refused(tmp_path, saved):
    path, net = saved
    checkpoint = tmp_path / "net.pt"
    torch.save(net.state_dict(), checkpoint)
    with pytest.raises(ModelError, match=r"net\.pt: pickle checkpoints are refused \(they can run code\)"):
        load_model(checkpoint)
    only = tmp_path / "only_pickles"
    only.mkdir()
    torch.save(net.state_dict(), only / "weights.pth")
    with pytest.raises(ModelError, match="weights.pth: pickle checkpoints are refused"):
        load_model(only)
    # torch.save's zip container disguised as model.safetensors, with a matching checksum.
    torch.save(net.state_dict(), path / WEIGHTS_FILE)
    _edit_card(path, weights={"file": WEIGHTS_FILE, "sha256": sha256_file(path / WEIGHTS_FILE)})
    with pytest.raises(ModelError, match="model.safetensors: pickle checkpoints are refused"):
        load_model(path)


class _CreatesFile:
    """Unpickling this object creates a file: proof that a loader ran pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_crafted_pickle_is_refused_without_running_it(tmp_path, saved, protocol):
    path, _ = saved
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_CreatesFile(marker), protocol=protocol)
    pickle.loads(payload)  # the payload really works
    assert marker.exists()
    marker.unlink()
    (path / WEIGHTS_FILE).write_bytes(payload)
    _edit_card(path, weights={"file": WEIGHTS_FILE, "sha256": sha256_file(path / WEIGHTS_FILE)})
    with pytest.raises(ModelError, match="pickle checkpoints are refused"):
        load_model(path)
    (tmp_path / "evil.pkl").write_bytes(payload)
    with pytest.raises(ModelError, match="evil.pkl: pickle checkpoints are refused"):
        load_model(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_missing_card_and_missing_sha_are_refused(tmp_path, saved):
    path, _ = saved
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="empty: not a model directory"):
        load_model(empty)
    _edit_card(path, weights={"file": WEIGHTS_FILE})
    with pytest.raises(ModelError, match="weights.sha256 is missing"):
        load_model(path)


def test_card_dict_round_trip_and_channel_checks():
    net, card = create_model("deepmedic", ["flair", "t1c"], TargetSpec.foreground([1, 2]), normalization="none")
    again = ModelCard.from_dict(card.to_dict())
    assert again == card and again.normalization == ("none", "none")
    assert (card.in_channels, card.num_classes) == (2, 2)
    with pytest.raises(InputError, match="distinct non-empty names"):
        create_model("deepmedic", ["flair", "flair"], TargetSpec.foreground([1]))
    with pytest.raises(InputError, match="unknown hyper-parameters"):
        create_model("deepmedic", ["flair"], TargetSpec.foreground([1]), depth=2)
    data = card.to_dict()
    data["channels"] = [{"name": "flair"}, {"name": "flair"}]
    with pytest.raises(ModelError, match="channels: channel names repeat"):
        ModelCard.from_dict(data, source="x/model.json")


def test_card_that_does_not_fit_the_network_is_refused(tmp_path):
    net, card = create_model("unet", ["flair"], TargetSpec.foreground([1]), **SMALL_UNET)
    other, _ = create_model("unet", ["flair", "t1c"], TargetSpec.foreground([1]), **SMALL_UNET)
    with pytest.raises(ModelError, match="the card has 1 channel\\(s\\) and 2 classes, the network 2 and 2"):
        save_model(tmp_path / "m", other, card)
    assert not (tmp_path / "m").exists()


def test_seed_reproduces_the_initial_weights():
    target = TargetSpec.foreground([1])
    a, _ = create_model("deepmedic", ["flair"], target, seed=7)
    b, _ = create_model("deepmedic", ["flair"], target, seed=7)
    c, _ = create_model("deepmedic", ["flair"], target, seed=8)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)



def test_write_safetensors_writes_readable_tensors_with_metadata(tmp_path):
    from safetensors import safe_open

    from asymseg.modelfile import write_safetensors

    t = torch.arange(24.0).view(1, 2, 3, 4, 1)
    write_safetensors({"a": t, "b": torch.tensor([1, 2])}, tmp_path / "x.safetensors", metadata={"k": "v"})
    with safe_open(str(tmp_path / "x.safetensors"), "pt") as f:
        assert f.metadata()["k"] == "v"
        assert torch.equal(f.get_tensor("a"), t) and torch.equal(f.get_tensor("b"), torch.tensor([1, 2]))


def test_crafted_cards_are_refused_before_anything_large_is_allocated(tmp_path, monkeypatch):
    import json as _json
    import textwrap

    from asymseg.errors import ModelError
    from asymseg.modelfile import MAX_CARD_BYTES, build_from_card, create_model, read_card, save_model
    from asymseg.target import TargetSpec

    net, card = create_model("deepmedic", ["flair", "t1c"], TargetSpec.tumour_core("brats2017"), seed=0, name="m",
                             normal_features=[4] * 4, lowres_features=[4] * 4, fc_features=[8], dropout=[0.0, 0.0])
    folder = save_model(tmp_path / "m", net, card)
    data = _json.loads((folder / "model.json").read_text())
    # A network of 450 million parameters in a card of a few hundred bytes: refused from the
    # shapes alone, in a process that could not even hold it.
    data["architecture"]["hparams"]["normal_features"] = [2048] * 4
    data["architecture"]["hparams"]["lowres_features"] = [2048] * 4
    (folder / "model.json").write_text(_json.dumps(data))
    from helpers.memory_limit import run_python_limited

    script = textwrap.dedent(f"""
        from asymseg.errors import ModelError
        from asymseg.modelfile import load_model
        try:
            load_model({str(folder)!r})
        except ModelError as err:
            assert "parameters, above the limit" in str(err), err
        else:
            raise SystemExit(3)
    """)
    proc = run_python_limited(script, 2_000_000_000)
    assert proc.returncode == 0, proc.stderr
    monkeypatch.setenv("ASYMSEG_MAX_PARAMETERS", "1000")
    data["architecture"]["hparams"]["normal_features"] = [4] * 4
    data["architecture"]["hparams"]["lowres_features"] = [4] * 4
    (folder / "model.json").write_text(_json.dumps(data))
    with pytest.raises(ModelError, match="above the limit of 1,000"):
        build_from_card(read_card(folder))
    monkeypatch.delenv("ASYMSEG_MAX_PARAMETERS")
    for bad in ([10 ** 12], [4] * 1000, [20000, 20000]):
        data["architecture"]["hparams"]["normal_features"] = bad
        (folder / "model.json").write_text(_json.dumps(data))
        with pytest.raises(ModelError, match="normal_features"):
            build_from_card(read_card(folder))
    (folder / "model.json").write_text(" " * (MAX_CARD_BYTES + 1))
    with pytest.raises(ModelError, match="above the limit"):
        read_card(folder)


def test_spacing_and_orientation_round_trip_and_older_cards_have_none():
    _, card = create_model("deepmedic", ["flair", "t1c"], TargetSpec.foreground([1]))
    assert card.spacing is None and card.orientation is None
    assert "spacing" not in card.to_dict() and "orientation" not in card.to_dict()
    trained = card.replace(spacing=(1.0, 1.0, 1.0), orientation="LPS")
    data = trained.to_dict()
    assert data["spacing"] == [1.0, 1.0, 1.0] and data["orientation"] == "LPS"
    assert ModelCard.from_dict(data) == trained
    data["orientation"] = "ras"
    assert ModelCard.from_dict(data).orientation == "RAS"


@pytest.mark.parametrize("changes,match", [
    ({"spacing": [1.0, 1.0]}, r"spacing: expected three positive numbers \(mm, x y z\), got \[1.0, 1.0\]"),
    ({"spacing": [1.0, 0.0, 1.0]}, "spacing: expected three positive numbers"),
    ({"spacing": "1mm"}, "spacing: expected three positive numbers"),
    ({"orientation": "LPX"}, "orientation: orientation 'LPX': expected 3 letters, one of each pair L/R, P/A, S/I"),
    ({"orientation": 3}, "orientation: expected a 3-letter code"),
])
def test_invalid_spacing_or_orientation_is_refused_naming_the_field(saved, changes, match):
    path, _ = saved
    _edit_card(path, **changes)
    with pytest.raises(ModelError, match=match):
        load_model(path)
