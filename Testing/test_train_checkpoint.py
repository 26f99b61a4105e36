"""Resume checkpoints: exact round trip without pickle, atomic replacement, recovery after a kill."""

from __future__ import annotations

import json
import os

import pytest
import torch

from asymseg.errors import InputError
from asymseg.train.checkpoint import (
    CHECKPOINT_DIR,
    CHECKPOINT_OLD,
    atomic_write_text,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from asymseg.train.optim import make_optimizer


def tiny_net(seed=0):
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3), torch.nn.BatchNorm3d(4), torch.nn.Conv3d(4, 2, 1))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return net


def train_steps(net, opt, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(2, 2, 5, 5, 5, generator=g)
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()


@pytest.mark.parametrize("kind", ["rmsprop", "torch-rmsprop", "adam"])
def test_round_trip_continues_training_bit_for_bit(tmp_path, kind):
    def make(params):
        return make_optimizer(kind, params, lr=1e-3)
    net = tiny_net()
    opt = make(net.parameters())
    train_steps(net, opt, 3)
    gen = torch.Generator().manual_seed(5)
    torch.randn(3, generator=gen)
    save_checkpoint(tmp_path, weights=net.state_dict(), optimizer=opt.state_dict(),
                    rng={"gen": gen.get_state()}, state={"iteration": 3, "note": [1, 2]})
    train_steps(net, opt, 2, seed=9)
    expected = [p.detach().clone() for p in net.parameters()]
    expected_draw = torch.randn(4, generator=gen)

    ck = load_checkpoint(tmp_path)
    assert ck.iteration == 3 and ck.state["note"] == [1, 2] and ck.best is None
    net2 = tiny_net(seed=42)
    net2.load_state_dict(ck.weights)
    opt2 = make(net2.parameters())
    opt2.load_state_dict(ck.optimizer)
    train_steps(net2, opt2, 2, seed=9)
    for a, b in zip(expected, net2.parameters()):
        assert torch.equal(a, b)
    gen2 = torch.Generator()
    gen2.set_state(ck.rng["gen"])
    assert torch.equal(torch.randn(4, generator=gen2), expected_draw)


def test_files_are_safetensors_and_json_never_pickle(tmp_path):
    net = tiny_net()
    opt = torch.optim.RMSprop(net.parameters(), momentum=0.6)
    train_steps(net, opt, 1)
    path = save_checkpoint(tmp_path, weights=net.state_dict(), optimizer=opt.state_dict(), rng={},
                           state={"iteration": 1}, best=net.state_dict())
    names = sorted(os.listdir(path))
    assert names == ["best.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json",
                     "weights.safetensors"]
    for name in names:
        head = (path / name).read_bytes()[:2]
        assert head != b"\x80\x04" and head[:1] != b"\x80"  # no pickle protocol header
    assert json.loads((path / "state.json").read_text())["format"] == "asymseg-train-checkpoint"


def test_a_new_checkpoint_replaces_the_old_one_and_leaves_no_temporaries(tmp_path):
    net = tiny_net()
    opt = torch.optim.Adam(net.parameters())
    for it in (1, 2):
        save_checkpoint(tmp_path, weights=net.state_dict(), optimizer=opt.state_dict(), rng={},
                        state={"iteration": it})
    assert load_checkpoint(tmp_path).iteration == 2
    assert sorted(os.listdir(tmp_path)) == [CHECKPOINT_DIR]


def test_a_kill_between_the_renames_falls_back_to_the_previous_checkpoint(tmp_path):
    net = tiny_net()
    opt = torch.optim.Adam(net.parameters())
    save_checkpoint(tmp_path, weights=net.state_dict(), optimizer=opt.state_dict(), rng={}, state={"iteration": 4})
    os.replace(tmp_path / CHECKPOINT_DIR, tmp_path / CHECKPOINT_OLD)  # first rename done, second not
    (tmp_path / ".checkpoint.half.tmp").mkdir()                         # the unfinished new one
    assert find_checkpoint(tmp_path) == tmp_path / CHECKPOINT_OLD
    assert load_checkpoint(tmp_path).iteration == 4
    save_checkpoint(tmp_path, weights=net.state_dict(), optimizer=opt.state_dict(), rng={}, state={"iteration": 5})
    assert load_checkpoint(tmp_path).iteration == 5 and not (tmp_path / CHECKPOINT_OLD).exists()


def test_missing_or_damaged_checkpoints_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no training checkpoint found"):
        load_checkpoint(tmp_path)
    net = tiny_net()
    path = save_checkpoint(tmp_path, weights=net.state_dict(), optimizer=torch.optim.Adam(net.parameters()).state_dict(),
                           rng={}, state={"iteration": 0})
    (path / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="damaged checkpoint"):
        load_checkpoint(tmp_path)
    (path / "state.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InputError, match="not an asymseg training checkpoint"):
        load_checkpoint(tmp_path)


def test_atomic_write_text_replaces_whole_files(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two" and os.listdir(target.parent) == ["a.txt"]


@pytest.mark.parametrize("change, pattern", [
    (lambda s: s.pop("optimizer"), "'optimizer' is missing"),
    (lambda s: s.update(iteration="abc"), "iteration 'abc'"),
    (lambda s: s.update(version=[1]), "version"),
])
def test_a_damaged_state_file_is_an_input_error_naming_the_problem(tmp_path, change, pattern):
    net = tiny_net()
    opt = make_optimizer("rmsprop", net.parameters(), lr=1e-3)
    train_steps(net, opt, 1)
    path = save_checkpoint(tmp_path, weights=net.state_dict(), optimizer=opt.state_dict(), rng={}, state={"iteration": 1})
    state = json.loads((path / "state.json").read_text())
    change(state)
    (path / "state.json").write_text(json.dumps(state))
    with pytest.raises(InputError, match=pattern):
        load_checkpoint(tmp_path)


@pytest.mark.skipif(os.name != "posix", reason="RLIMIT_FSIZE")
def test_a_full_disk_names_the_checkpoint_not_its_temporary_folder_and_keeps_the_previous(tmp_path):
    import resource

    from asymseg.errors import ResourceError

    net = tiny_net()
    opt = make_optimizer("adam", net.parameters(), lr=1e-3)
    train_steps(net, opt, 1)
    save_checkpoint(tmp_path, weights=net.state_dict(), optimizer=opt.state_dict(), rng={}, state={"iteration": 1})
    big = {"w": torch.zeros(1 << 16)}  # 256 KiB, above the limit below
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))  # Python ignores SIGXFSZ: writes fail with EFBIG
    try:
        with pytest.raises(ResourceError) as caught:
            save_checkpoint(tmp_path, weights=big, optimizer=opt.state_dict(), rng={}, state={"iteration": 2})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'checkpoint'}: cannot write the checkpoint: out of disk space"), message
    assert ".tmp" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert load_checkpoint(tmp_path).iteration == 1
