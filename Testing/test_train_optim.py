"""The optimisers: the authors' RMSProp against a hand-computed float64 trace, and the choices."""

from __future__ import annotations

import math

import pytest
import torch

from asymseg.train.config import OPTIMIZERS, TrainConfig
from asymseg.train.optim import DeepMedicRMSprop, make_optimizer
from asymseg.errors import InputError


def _trace(opt_factory, grads):
    """Parameter values after each step, for a scalar parameter fed the given gradients."""
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = opt_factory([p])
    values = []
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        values.append(float(p.detach()))
    return values


def test_authors_rmsprop_three_step_trace_by_hand():
    # DeepMedic's RmsPropOptimizer, rho 0.9, eps 1e-4 inside the root, Nesterov mu 0.6, not normalised:
    # acc = 0.9 acc + 0.1 g^2; s = lr g / sqrt(acc + 1e-4); v = 0.6 v - s; p += 0.6 v - s.
    lr, grads = 1e-3, [0.5, -0.2, 0.05]
    acc1 = 0.1 * 0.25                                   # 0.025
    s1 = lr * 0.5 / math.sqrt(acc1 + 1e-4)              # 0.0031559...
    v1 = -s1
    p1 = 0.6 * v1 - s1
    acc2 = 0.9 * acc1 + 0.1 * 0.04                      # 0.0265
    s2 = lr * -0.2 / math.sqrt(acc2 + 1e-4)
    v2 = 0.6 * v1 - s2
    p2 = p1 + 0.6 * v2 - s2
    acc3 = 0.9 * acc2 + 0.1 * 0.0025                    # 0.0241
    s3 = lr * 0.05 / math.sqrt(acc3 + 1e-4)
    v3 = 0.6 * v2 - s3
    p3 = p2 + 0.6 * v3 - s3
    got = _trace(lambda ps: make_optimizer("rmsprop", ps, lr=lr), grads)
    assert got == pytest.approx([p1, p2, p3], rel=1e-12, abs=0)
    # The first step in closed form: -(1 + mu) lr g / sqrt(0.1 g^2 + 1e-4).
    assert p1 == pytest.approx(-1.6 * 1e-3 * 0.5 / math.sqrt(0.025 + 1e-4), rel=1e-14)


def test_classic_and_normalised_momentum_variants():
    lr, grads = 1e-2, [1.0, 1.0]
    s1 = lr * 1.0 / math.sqrt(0.1 + 1e-4)
    s2 = lr * 1.0 / math.sqrt(0.19 + 1e-4)
    classic = _trace(lambda ps: DeepMedicRMSprop(ps, lr=lr, nesterov=False), grads)
    assert classic == pytest.approx([-s1, -s1 + (0.6 * -s1 - s2)], rel=1e-12)
    normalised = _trace(lambda ps: DeepMedicRMSprop(ps, lr=lr, nesterov=False, normalized_momentum=True), grads)
    assert normalised[0] == pytest.approx(-0.4 * s1, rel=1e-12)


def test_eps_inside_the_root_takes_smaller_steps_than_torch_for_small_gradients():
    # g = 1e-3: ours divides by sqrt(1e-7 + 1e-4) ~ 0.01, torch's by sqrt(1e-7) + 1e-4 ~ 4.2e-4.
    ours = _trace(lambda ps: make_optimizer("rmsprop", ps, lr=1e-3), [1e-3])[0]
    theirs = _trace(lambda ps: make_optimizer("torch-rmsprop", ps, lr=1e-3), [1e-3])[0]
    assert abs(ours) < abs(theirs) / 10


def test_weight_decay_adds_to_the_gradient():
    p = torch.ones(1, dtype=torch.float64, requires_grad=True)
    opt = DeepMedicRMSprop([p], lr=1e-3, weight_decay=0.5)
    p.grad = torch.zeros(1, dtype=torch.float64)
    opt.step()
    g = 0.5
    assert float(p.detach()) == pytest.approx(1.0 - 1.6 * 1e-3 * g / math.sqrt(0.1 * g * g + 1e-4), rel=1e-12)


def test_state_round_trips_through_state_dict():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = make_optimizer("rmsprop", net.parameters(), lr=1e-3)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = opt.state_dict()
    assert set(state["state"][0]) == {"accumulator", "velocity"}
    clone = make_optimizer("rmsprop", net.parameters(), lr=1e-3)
    clone.load_state_dict(state)
    assert torch.equal(clone.state_dict()["state"][0]["velocity"], state["state"][0]["velocity"])


@pytest.mark.parametrize("kwargs, match", [
    ({"lr": -1.0}, "lr"), ({"rho": 1.0}, "rho"), ({"eps": 0.0}, "eps"), ({"momentum": 1.0}, "momentum"),
    ({"weight_decay": -1.0}, "weight_decay"),
])
def test_invalid_settings_are_refused(kwargs, match):
    p = torch.zeros(1, requires_grad=True)
    with pytest.raises(ValueError, match=match):
        DeepMedicRMSprop([p], **kwargs)


def test_every_configurable_name_builds_and_unknown_names_are_refused():
    p = torch.zeros(1, requires_grad=True)
    assert isinstance(make_optimizer("rmsprop", [p], lr=1e-3), DeepMedicRMSprop)
    assert isinstance(make_optimizer("torch-rmsprop", [p], lr=1e-3), torch.optim.RMSprop)
    assert isinstance(make_optimizer("adam", [p], lr=1e-3), torch.optim.Adam)
    for name in OPTIMIZERS:
        make_optimizer(name, [p], lr=1e-3)
    with pytest.raises(ValueError, match="rmsprop"):
        make_optimizer("sgd", [p], lr=1e-3)
    with pytest.raises(InputError, match="torch-rmsprop"):
        TrainConfig(train_cases=("a",), output_model="m", optimizer="sgd")
