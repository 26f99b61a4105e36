"""mixup / sample_mixup / apply_mixup: the label rule on every voxel pair, lambda range, replay."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from asymseg.errors import InputError
from asymseg.losses import asymmetric_ce
from asymseg.regularizers import MixupParams, apply_mixup, mixup, sample_mixup

IGNORED = -1


def _reference_label(a: int, b: int, lam: float, margin: float, rare: list[bool]) -> int:
    """The authors' rule, written out independently: floor(lam onehot(yA~) + (1 - lam) onehot(yB~)).

    comb = the rare class of the pair when exactly one is rare; otherwise (equal classes, two
    rare or two non-rare classes) every voxel keeps its own class ("no middle results").
    yA~ = comb if lam < 1 - m else a;  yB~ = comb if 1 - lam < 1 - m else b.
    """
    if rare[a] and not rare[b]:
        comb = a
    elif rare[b] and not rare[a]:
        comb = b
    else:
        comb = None
    y_a = comb if comb is not None and lam < 1 - margin else a
    y_b = comb if comb is not None and (1 - lam) < 1 - margin else b
    mixed = [0.0] * len(rare)
    mixed[y_a] += lam
    mixed[y_b] += 1 - lam
    hits = [c for c, value in enumerate(mixed) if math.floor(value) >= 1]
    return hits[0] if hits else IGNORED


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("margin", [0.0, 0.2, 0.5])
def test_the_asymmetric_label_rule_on_every_voxel_pair(classes, margin):
    pairs = list(itertools.product(range(classes), repeat=2))
    # Sample 0 holds the a's and sample 1 the b's; they are each other's partner.
    labels = torch.tensor([[a for a, _ in pairs], [b for _, b in pairs]]).view(2, 1, 1, len(pairs))
    x = torch.zeros((2, 1, 1, 1, len(pairs)))
    lams = [0.0, 0.1, margin, 0.35, 0.5, 0.79, 1 - margin, 0.9, 1.0]
    for rare in itertools.product([False, True], repeat=classes):
        for lam in lams:
            _, mixed, ignore = apply_mixup(x, labels, MixupParams(lam, (1, 0)), rare=list(rare), margin=margin)
            # x'[0] = lam x[0] + (1 - lam) x[1] and x'[1] = lam x[1] + (1 - lam) x[0]
            for sample, (first, second) in enumerate([(0, 1), (1, 0)]):
                for v, pair in enumerate(pairs):
                    expected = _reference_label(pair[first], pair[second], lam, margin, list(rare))
                    got = IGNORED if ignore[sample, 0, 0, v] else int(mixed[sample, 0, 0, v])
                    assert got == expected, (rare, lam, sample, pair)


def test_the_rule_in_words_for_three_classes_with_two_rare():
    rare = [False, True, True]
    labels = torch.tensor([[0, 1, 1, 0, 2, 0], [0, 1, 2, 1, 0, 2]]).view(2, 1, 1, 6)
    x = torch.zeros((2, 1, 1, 1, 6))
    _, mixed, ignore = apply_mixup(x, labels, MixupParams(0.3, (1, 0)), rare=rare, margin=0.2)
    # sample 0 (weight 0.3): bg+bg -> bg; 1+1 -> 1; 1+2 -> ignored; bg+1 (1 has 0.7) -> 1;
    # 2 (weight 0.3 > 0.2) + bg -> 2; bg + 2 (0.7) -> 2
    assert mixed[0].flatten().tolist() == [0, 1, 0, 1, 2, 2]
    assert ignore[0].flatten().tolist() == [False, False, True, False, False, False]
    _, mixed, ignore = apply_mixup(x, labels, MixupParams(0.1, (1, 0)), rare=rare, margin=0.2)
    # a rare class with weight 0.1 <= 0.2 next to background -> ignored
    assert ignore[0].flatten().tolist() == [False, False, True, False, True, False]
    _, mixed, ignore = apply_mixup(x, labels, MixupParams(0.5, (1, 0)), rare=[False, True, False], margin=0.2)
    # rare = [F, T, F]: background mixed with non-rare class 2 -> ignored; 1 + 2 -> 1
    assert mixed[0].flatten().tolist()[2] == 1 and ignore[0].flatten().tolist() == [False, False, False, False, True, True]


@pytest.mark.parametrize("alpha", [0.2, 1.0, 5.0])
@pytest.mark.parametrize("margin", [0.0, 0.2, 0.6])
def test_asymmetric_lambda_lies_in_zero_to_one_minus_margin(alpha, margin):
    generator = torch.Generator().manual_seed(0)
    lams = [sample_mixup(4, alpha=alpha, margin=margin, generator=generator).lam for _ in range(400)]
    assert min(lams) >= 0.0 and max(lams) <= 1.0 - margin
    assert max(lams) > 0.5 * (1.0 - margin)            # the range is used, not a constant
    assert sum(lams) / len(lams) == pytest.approx(0.5 * (1.0 - margin), abs=0.06)   # Beta(a, a) mean 1/2


def test_symmetric_lambda_is_beta_distributed_on_zero_one():
    generator = torch.Generator().manual_seed(1)
    lams = [sample_mixup(4, alpha=0.2, margin=0.2, symmetric=True, generator=generator).lam for _ in range(500)]
    assert min(lams) >= 0.0 and max(lams) <= 1.0 and max(lams) > 0.9
    assert sum(1 for lam in lams if 0.1 < lam < 0.9) < 0.5 * len(lams)   # Beta(0.2, 0.2) is U-shaped


def test_a_permutation_of_the_batch_is_drawn():
    generator = torch.Generator().manual_seed(2)
    perms = {sample_mixup(5, generator=generator).perm for _ in range(50)}
    assert all(sorted(p) == list(range(5)) for p in perms) and len(perms) > 10


def test_no_sample_is_its_own_partner():
    generator = torch.Generator().manual_seed(11)
    for batch in (2, 3, 6, 10):
        perms = {sample_mixup(batch, generator=generator).perm for _ in range(200)}
        assert all(all(p != i for i, p in enumerate(perm)) for perm in perms)
    # Batch 2 has one derangement; batch 4 has 9, all of them drawn.
    assert {sample_mixup(2, generator=generator).perm for _ in range(20)} == {(1, 0)}
    assert len({sample_mixup(4, generator=generator).perm for _ in range(400)}) == 9
    assert sample_mixup(1, generator=generator).perm == (0,)


def test_a_fixed_generator_gives_the_same_mix_and_replay_gives_the_same_tensors():
    g = torch.Generator().manual_seed(3)
    x = torch.randn((4, 2, 9, 9, 9), generator=g)
    labels = torch.randint(0, 3, (4, 5, 5, 5), generator=g)
    rare = [False, True, True]
    first = mixup(x, labels, rare=rare, generator=torch.Generator().manual_seed(11))
    second = mixup(x, labels, rare=rare, generator=torch.Generator().manual_seed(11))
    params = sample_mixup(4, generator=torch.Generator().manual_seed(11))
    replay = apply_mixup(x, labels, MixupParams.from_dict(params.to_dict()), rare=rare)
    for a, b, c in zip(first, second, replay):
        assert torch.equal(a, b) and torch.equal(a, c)
    other = sample_mixup(4, generator=torch.Generator().manual_seed(12))
    assert other != params


def test_inputs_are_mixed_with_the_same_lambda_and_partners_as_the_labels():
    g = torch.Generator().manual_seed(4)
    x = torch.randn((3, 2, 9, 9, 9), generator=g)
    labels = torch.randint(0, 2, (3, 5, 5, 5), generator=g)
    params = MixupParams(0.3, (2, 0, 1))
    x_mixed, mixed, ignore = apply_mixup(x, labels, params, rare=[False, True])
    torch.testing.assert_close(x_mixed, 0.3 * x + 0.7 * x[[2, 0, 1]])
    both_bg = (labels == 0) & (labels[[2, 0, 1]] == 0)
    assert bool((mixed[both_bg] == 0).all()) and not bool(ignore[both_bg].any())
    partner_fg = labels[[2, 0, 1]] == 1                                  # weight 0.7 > 0.2
    assert bool((mixed[partner_fg] == 1).all()) and not bool(ignore[partner_fg].any())
    assert mixed.dtype == torch.int64 and ignore.dtype == torch.bool


def test_symmetric_mixup_gives_soft_targets_and_ignores_nothing():
    g = torch.Generator().manual_seed(5)
    x = torch.randn((3, 1, 4, 4, 4), generator=g)
    labels = torch.randint(0, 3, (3, 4, 4, 4), generator=g)
    params = MixupParams(0.25, (1, 2, 0))
    _, soft, ignore = apply_mixup(x, labels, params, rare=[False, True, True], symmetric=True)
    one_hot = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float()
    torch.testing.assert_close(soft, 0.25 * one_hot + 0.75 * one_hot[[1, 2, 0]])
    torch.testing.assert_close(soft.sum(1), torch.ones((3, 4, 4, 4)))
    assert not bool(ignore.any())
    assert torch.isfinite(asymmetric_ce(torch.randn((3, 3, 4, 4, 4)), soft, rare=[False, True, True], symmetric=True,
                                        margin=0.2, ignore_mask=ignore))


def test_voxels_ignored_in_either_source_stay_ignored():
    labels = torch.tensor([[0, 1, 1, 0], [0, 1, 0, 1]]).view(2, 1, 1, 4)
    ignore = torch.tensor([[False, True, False, False], [False, False, False, True]]).view(2, 1, 1, 4)
    x = torch.zeros((2, 1, 1, 1, 4))
    for symmetric in (False, True):
        _, _, out = apply_mixup(x, labels, MixupParams(0.5, (1, 0)), rare=[False, True], symmetric=symmetric,
                                ignore_mask=ignore)
        assert out[0].flatten().tolist() == [False, True, False, True]


def test_mixed_batches_train_with_the_asymmetric_loss():
    g = torch.Generator().manual_seed(6)
    x = torch.randn((4, 2, 9, 9, 9), generator=g)
    labels = torch.randint(0, 2, (4, 5, 5, 5), generator=g)
    _, mixed, ignore = mixup(x, labels, rare=[False, True], generator=g)
    logits = torch.randn((4, 2, 5, 5, 5), requires_grad=True)
    loss = asymmetric_ce(logits, mixed, rare=[False, True], margin=0.2, gamma=2.0, ignore_mask=ignore)
    loss.backward()
    assert torch.isfinite(loss) and bool((logits.grad.movedim(1, -1)[ignore] == 0).all())


def test_mixup_errors():
    x = torch.zeros((2, 1, 3, 3, 3))
    labels = torch.zeros((2, 3, 3, 3), dtype=torch.int64)
    with pytest.raises(InputError, match=r"mixup margin must lie in \[0, 1\)"):
        sample_mixup(2, margin=1.0)
    with pytest.raises(InputError, match="mixup alpha must be a finite number > 0"):
        sample_mixup(2, alpha=0.0)
    with pytest.raises(InputError, match="batch_size must be an integer >= 1"):
        sample_mixup(0)
    with pytest.raises(InputError, match="integer class map"):
        apply_mixup(x, labels.float(), MixupParams(0.5, (1, 0)), rare=[False, True])
    with pytest.raises(InputError, match="batch sizes differ"):
        apply_mixup(x, labels[:1], MixupParams(0.5, (1, 0)), rare=[False, True])
    with pytest.raises(InputError, match=r"class values \[2\] outside \[0, 1\]"):
        apply_mixup(x, labels + 2, MixupParams(0.5, (1, 0)), rare=[False, True])
    with pytest.raises(InputError, match="perm must be a permutation"):
        MixupParams(0.5, (0, 0))
    with pytest.raises(InputError, match=r"lam must lie in \[0, 1\]"):
        MixupParams(1.5, (1, 0))
