"""Technique presets: authors' settings, validation, overrides, serialisation, and the steps they run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from asymseg.errors import InputError
from asymseg.losses import asymmetric_ce, focal_dice_loss, soft_dice_loss
from asymseg.techniques import DESCRIPTIONS, TECHNIQUES, Technique, get_technique

NAMES = ["ce", "dice", "fg-sampling", "lm", "a-lm", "focal", "a-focal", "at", "a-at", "mixup", "a-mixup", "a-aug",
         "combo", "combo-authors"]
RARE = [False, True]


def test_the_presets_are_the_papers_techniques_and_baselines():
    assert list(TECHNIQUES) == NAMES
    assert set(DESCRIPTIONS) == set(NAMES)
    assert all(TECHNIQUES[name].name == name for name in NAMES)


def test_the_presets_carry_the_authors_settings():
    t = TECHNIQUES
    assert (t["ce"].loss, t["ce"].margin, t["ce"].gamma, t["ce"].steps) == ("ce", 0.0, 0.0, ("clean",))
    assert t["dice"].loss == "dice"
    assert t["fg-sampling"].fg_fraction == 0.8 and all(t[n].fg_fraction == 0.5 for n in NAMES if n != "fg-sampling")
    assert (t["a-lm"].margin, t["a-lm"].symmetric) == (0.2, False)
    assert (t["lm"].margin, t["lm"].symmetric) == (0.2, True)
    assert (t["a-focal"].gamma, t["a-focal"].symmetric, t["a-focal"].margin) == (4.0, False, 0.0)
    assert (t["focal"].gamma, t["focal"].symmetric) == (4.0, True)
    for name, symmetric in (("at", True), ("a-at", False)):
        assert (t[name].adversarial, t[name].eps, t[name].xi, t[name].symmetric) == (True, 10.0, 1e-5, symmetric)
        assert t[name].steps == ("clean", "adversarial")
    for name, symmetric in (("mixup", True), ("a-mixup", False)):
        assert (t[name].mixup, t[name].mixup_alpha, t[name].symmetric) == (True, 1.0, symmetric)
        assert t[name].steps == ("clean", "mixup")
    assert t["a-mixup"].mixup_margin == 0.2
    assert t["a-aug"].augment and 0.0 <= t["a-aug"].asym_aug_p < 1.0
    combo = t["combo"]
    assert (combo.margin, combo.gamma, combo.symmetric, combo.eps, combo.mixup_alpha, combo.mixup_margin) == \
        (0.2, 2.0, False, 10.0, 1.0, 0.2)
    assert combo.steps == ("clean", "adversarial", "mixup")
    assert not any(t[n].augment for n in NAMES if n != "a-aug")
    # The authors' released combination config: focalonesidegama -2, marginm 0, Nepsilon 10 with
    # Nside 2 (symmetric direction), mixuprate 1, mixupbiasmargin 0.2.
    authors = t["combo-authors"]
    assert (authors.margin, authors.gamma, authors.eps, authors.xi, authors.mixup_alpha, authors.mixup_margin) == \
        (0.0, 2.0, 10.0, 1e-5, 1.0, 0.2)
    assert [authors.symmetric_part(p) for p in ("margin", "focal", "adversarial", "mixup")] == \
        [False, False, True, False]
    assert authors.steps == ("clean", "adversarial", "mixup")
    assert all(t[n].mixup_normalize == "all" for n in NAMES)


def test_each_part_takes_its_own_symmetry():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn((2, 2, 4, 4, 4), generator=g, dtype=torch.float64)
    labels = torch.randint(0, 2, (2, 4, 4, 4), generator=g)
    mixed = get_technique("a-focal", gamma=2.0, margin=0.5, focal_symmetric=True)
    assert mixed.symmetric_part("focal") and not mixed.symmetric_part("margin")
    expected = asymmetric_ce(logits, labels, rare=RARE, margin=0.5, gamma=2.0, margin_symmetric=False,
                             focal_symmetric=True)
    assert mixed.loss_fn(logits, labels, rare=RARE) == expected
    # Different from both the all-asymmetric and the all-symmetric loss.
    assert expected != asymmetric_ce(logits, labels, rare=RARE, margin=0.5, gamma=2.0)
    assert expected != asymmetric_ce(logits, labels, rare=RARE, margin=0.5, gamma=2.0, symmetric=True)
    # None follows ``symmetric``; an explicit value wins over it.
    assert get_technique("at").symmetric_part("adversarial") is True
    assert get_technique("at", adversarial_symmetric=False).symmetric_part("adversarial") is False
    assert json.loads(json.dumps(TECHNIQUES["combo-authors"].to_dict()))["adversarial_symmetric"] is True
    assert Technique.from_dict(TECHNIQUES["combo-authors"].to_dict()) == TECHNIQUES["combo-authors"]


@pytest.mark.parametrize("overrides, match", [
    ({"focal_symmetric": "yes"}, "focal_symmetric"),
    ({"mixup_normalize": "some"}, "mixup_normalize"),
    ({"loss": "focal-dice", "gamma": 2.0, "margin": 0.2, "focal_symmetric": True}, "one symmetry"),
])
def test_bad_part_settings_are_refused(overrides, match):
    with pytest.raises(InputError, match=match):
        get_technique("a-focal", **overrides)


def test_mixup_loss_can_divide_by_every_voxel_as_the_authors_do():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn((2, 2, 4, 4, 4), generator=g, dtype=torch.float64)
    labels = torch.randint(0, 2, (2, 4, 4, 4), generator=g)
    ignore = torch.zeros((2, 4, 4, 4), dtype=torch.bool)
    ignore[0] = True                                                  # half of the voxels
    technique = TECHNIQUES["combo-authors"]
    valid_mean = technique.loss_fn(logits, labels, rare=RARE, ignore_mask=ignore)
    all_mean = technique.loss_fn(logits, labels, rare=RARE, ignore_mask=ignore, count_ignored=True)
    torch.testing.assert_close(all_mean, valid_mean / 2)
    soft = torch.nn.functional.one_hot(labels, 2).movedim(-1, 1).to(torch.float64)
    torch.testing.assert_close(technique.loss_fn(logits, soft, rare=RARE, ignore_mask=ignore, count_ignored=True),
                               all_mean)


@pytest.mark.parametrize("name", NAMES)
def test_every_preset_loss_runs_on_random_data(name):
    technique = TECHNIQUES[name]
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn((2, 2, 5, 5, 5), generator=g) * 3).requires_grad_(True)
    labels = torch.randint(0, 2, (2, 5, 5, 5), generator=g)
    ignore = torch.rand((2, 5, 5, 5), generator=g) < 0.2
    loss = technique.loss_fn(logits, labels, rare=RARE, ignore_mask=ignore)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0 and bool(torch.isfinite(logits.grad).all())
    soft = torch.softmax(torch.randn((2, 2, 5, 5, 5), generator=g), dim=1)
    assert torch.isfinite(technique.loss_fn(logits, soft, rare=RARE))


def test_loss_fn_is_the_documented_loss():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn((2, 3, 4, 4, 4), generator=g)
    labels = torch.randint(0, 3, (2, 4, 4, 4), generator=g)
    rare = [False, True, True]
    assert TECHNIQUES["a-focal"].loss_fn(logits, labels, rare=rare) == asymmetric_ce(logits, labels, rare=rare, gamma=4.0)
    assert TECHNIQUES["lm"].loss_fn(logits, labels, rare=rare) == \
        asymmetric_ce(logits, labels, rare=rare, margin=0.2, symmetric=True)
    assert TECHNIQUES["dice"].loss_fn(logits, labels, rare=rare) == soft_dice_loss(logits, labels)
    focal_dice = get_technique("a-focal", loss="focal-dice", gamma=2.0, margin=0.2)
    expected = asymmetric_ce(logits, labels, rare=rare, margin=0.2, gamma=2.0) + \
        focal_dice_loss(logits, labels, rare=rare, gamma=2.0, margin=0.2)
    torch.testing.assert_close(focal_dice.loss_fn(logits, labels, rare=rare), expected)


def test_the_step_helpers_use_the_technique_settings():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3))
    x = torch.randn((2, 1, 7, 7, 7))
    labels = torch.ones((2, 5, 5, 5), dtype=torch.int64)
    r = get_technique("a-at", eps=3.0).adversarial_perturbation(net, x, labels, rare=RARE,
                                                               generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(r.flatten(1).norm(dim=1), torch.full((2,), 3.0), rtol=1e-5, atol=0)
    technique = get_technique("a-mixup", mixup_margin=0.4)
    lams = [technique.sample_mixup(2, generator=torch.Generator().manual_seed(s)).lam for s in range(50)]
    assert max(lams) <= 0.6
    params = technique.sample_mixup(2, generator=torch.Generator().manual_seed(0))
    _, mixed, ignore = technique.apply_mixup(x, labels, params, rare=RARE)
    assert mixed.dtype == torch.int64 and not bool(ignore.any())        # fg + fg -> fg everywhere
    _, soft, _ = TECHNIQUES["mixup"].apply_mixup(x, labels, params, rare=RARE)
    assert soft.shape == (2, 2, 5, 5, 5)


def test_overrides_replace_fields_and_are_validated():
    technique = get_technique("a-focal", gamma=2.0, margin=0.5)
    assert (technique.gamma, technique.margin, technique.name) == (2.0, 0.5, "a-focal")
    assert TECHNIQUES["a-focal"].gamma == 4.0                           # the preset is untouched
    assert get_technique("combo") is TECHNIQUES["combo"]
    assert isinstance(get_technique("ce", margin=1).margin, float)
    with pytest.raises(InputError, match="unknown technique 'a-dice'; expected one of: ce, dice, fg-sampling"):
        get_technique("a-dice")
    with pytest.raises(InputError, match=r"unknown technique setting\(s\) \['gama'\]; expected some of"):
        get_technique("a-focal", gama=2.0)
    with pytest.raises(InputError, match="technique a-focal: gamma must be >= 0.0, got -1"):
        get_technique("a-focal", gamma=-1.0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"loss": "tversky"}, "loss must be one of ce, dice, focal-dice, got 'tversky'"),
        ({"margin": float("nan")}, "margin must be a finite number"),
        ({"eps": 0.0}, r"eps must be > 0.0, got 0"),
        ({"xi": -1e-5}, r"xi must be > 0.0"),
        ({"mixup_alpha": 0}, r"mixup_alpha must be > 0.0"),
        ({"mixup_margin": 1.0}, r"mixup_margin must be in \[0.0, 1.0\), got 1.0"),
        ({"fg_fraction": 1.5}, r"fg_fraction must be in \[0.0, 1.0\], got 1.5"),
        ({"asym_aug_p": 0.5}, "asym_aug_p needs augment=true"),
        ({"augment": True, "asym_aug_p": 2.0}, r"asym_aug_p must be in \[0.0, 1.0\]"),
        ({"loss": "dice", "gamma": 2.0}, "loss 'dice' takes no margin or gamma"),
        ({"symmetric": "yes"}, "symmetric must be true or false, got 'yes'"),
        ({"gamma": True}, "gamma must be a finite number, got True"),
        ({"name": " "}, "technique name must be a non-empty string"),
    ],
)
def test_invalid_settings_are_refused_with_the_field_and_value(fields, message):
    with pytest.raises(InputError, match=message):
        Technique(**{"name": "custom", **fields})


def test_techniques_round_trip_through_json():
    for technique in TECHNIQUES.values():
        data = json.loads(json.dumps(technique.to_dict()))
        assert Technique.from_dict(data) == technique
    assert Technique.from_dict({"name": "mine", "gamma": 3}).gamma == 3.0
    with pytest.raises(InputError, match=r"unknown technique setting\(s\) \['weight'\]"):
        Technique.from_dict({"name": "mine", "weight": 2})
    with pytest.raises(InputError, match="a technique needs a name"):
        Technique.from_dict({"gamma": 2})
    with pytest.raises(InputError, match="a technique must be a mapping"):
        Technique.from_dict(["ce"])


def test_importing_the_presets_does_not_import_torch():
    code = "import sys, asymseg.techniques as t; t.get_technique('combo'); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
