"""The inference engine: exact tiling, cropping, masking, out-of-memory retries, events, cancel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asymseg.errors import Cancelled, InputError, ResourceError
from asymseg.events import CancelToken
from asymseg.infer import predict_volume
from asymseg.infer.engine import ActivationModel, default_tile, is_out_of_memory, run_with_oom_retry
from asymseg.infer.memory import cheapest_exact_tile, tile_cost
from asymseg.infer.tiling import round_up
from asymseg.nets import build_network

#: DeepMedic geometry (8 layers per pathway, the x3 / x3+x5 pathways, the FC kernels) with few
#: feature maps, so tests run fast; tiling depends on the geometry, not the widths.
NARROW = {"normal_features": [6] * 8, "lowres_features": [6] * 8}
NARROW_FC = {"deepmedic": {"fc_features": [12, 12]}, "deepmedic-tmi": {"fc_features": [12, 12]}}


def make_net(architecture: str = "deepmedic", channels: int = 2, classes: int = 2, narrow: bool = True,
             seed: int = 0, **hparams):
    extra = {**NARROW, **NARROW_FC.get(architecture, {})} if narrow and architecture != "unet" else {}
    extra.update(hparams)
    return build_network(architecture, channels, classes, generator=torch.Generator().manual_seed(seed), **extra)


def volume(shape=(30, 33, 28), channels=2, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((channels, *shape)).astype(np.float32)
    zz, yy, xx = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    mask = zz ** 2 + yy ** 2 + xx ** 2 < 0.8
    image[:, ~mask] = 0.0
    return image, mask


def direct_logits(net, image):
    """One forward pass over the whole volume, zero-padded by the context (and up to the multiple)."""
    c, m = net.context, net.output_multiple
    pads = []
    for n in reversed(image.shape[1:]):
        pads += [c, c + round_up(n, m) - n]
    x = F.pad(torch.from_numpy(image)[None], pads)
    net.eval()
    with torch.inference_mode():
        out = net(x)[0].numpy()
    return out[(slice(None), *(slice(0, n) for n in image.shape[1:]))]


@pytest.mark.parametrize("architecture,narrow,shape,tiles", [
    ("deepmedic", False, (18, 20, 19), (12, (9, 21, 12), None)),
    ("deepmedic", True, (24, 27, 25), (9, (6, 15, 30), None)),
    ("deepmedic-tmi", True, (24, 27, 25), (15, (30, 15, 30), None)),
])
def test_results_do_not_depend_on_the_tile_size(architecture, narrow, shape, tiles):
    net = make_net(architecture, narrow=narrow)
    image, mask = volume(shape)
    results = [predict_volume(net, image, mask, tile=t, device="cpu", return_logits=True) for t in tiles]
    shapes = {tuple(r.info["tile"]) for r in results}
    assert len(shapes) == len(tiles), "the tile sizes should differ"
    first = results[0]
    assert first.labels[mask].any() and not first.labels[mask].all(), "a random net should give both classes"
    for other in results[1:]:
        np.testing.assert_array_equal(other.labels, first.labels)
        np.testing.assert_allclose(other.logits, first.logits, rtol=0, atol=1e-5)
        np.testing.assert_allclose(other.probabilities, first.probabilities, rtol=0, atol=1e-5)


def test_contiguous_and_channels_last_give_the_same_labels():
    net = make_net("deepmedic")
    image, mask = volume((20, 22, 21))
    a = predict_volume(net, image, mask, tile=21, device="cpu", memory_format="contiguous", return_logits=True)
    b = predict_volume(net, image, mask, tile=21, device="cpu", memory_format="channels_last", return_logits=True)
    assert (a.info["memory_format"], b.info["memory_format"]) == ("contiguous", "channels_last_3d")
    np.testing.assert_allclose(a.logits, b.logits, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(a.labels, b.labels)


@pytest.mark.parametrize("architecture", ["deepmedic", "deepmedic-tmi"])
def test_cropped_prediction_equals_a_forward_pass_over_the_padded_volume(architecture):
    net = make_net(architecture)
    image, _ = volume((31, 29, 34), seed=1)
    mask = np.zeros(image.shape[1:], dtype=bool)
    mask[4:13, 17:29, 20:31] = True     # an off-centre box touching one edge
    mask[25, 2, 3] = True               # and a lone voxel far away
    expected = direct_logits(net, image)
    result = predict_volume(net, image, mask, tile=12, device="cpu", return_logits=True)
    np.testing.assert_allclose(result.logits[:, mask], expected[:, mask], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(result.labels[mask], expected.argmax(axis=0)[mask])
    p = np.exp(expected - expected.max(axis=0))
    np.testing.assert_allclose(result.probabilities[mask], (p[1] / p.sum(axis=0))[mask], atol=1e-5)
    np.testing.assert_allclose(result.decision[mask], (expected[1] - expected[0])[mask], atol=1e-5)


@pytest.mark.parametrize("architecture, tile", [("deepmedic", 9), ("unet", 16)])
def test_tiles_without_a_brain_voxel_are_skipped_and_the_result_inside_the_mask_is_unchanged(architecture, tile):
    """Two blobs at opposite corners of a box: most tiles of the box hold no voxel of the mask and
    do not run; every voxel of the mask gets exactly the value it gets when every tile of the same
    plan runs (the mask filled to its bounding box)."""
    net = make_net(architecture)
    image, _ = volume((40, 40, 40), seed=2)
    sparse = np.zeros(image.shape[1:], dtype=bool)
    sparse[2:10, 3:11, 1:9] = True
    sparse[30:38, 29:37, 31:39] = True
    full = np.zeros_like(sparse)
    full[2:38, 3:37, 1:39] = True  # the same bounding box, so the same tile plan
    skipped = predict_volume(net, image, sparse, tile=tile, device="cpu", return_logits=True)
    every = predict_volume(net, image, full, tile=tile, device="cpu", return_logits=True)
    assert skipped.info["tile"] == every.info["tile"]
    assert every.info["skipped_tiles"] == 0 and skipped.info["skipped_tiles"] > 0
    assert skipped.info["tiles"] + skipped.info["skipped_tiles"] == every.info["tiles"]
    assert skipped.info["computed_voxels"] < every.info["computed_voxels"]
    np.testing.assert_array_equal(skipped.logits[:, sparse], every.logits[:, sparse])
    np.testing.assert_array_equal(skipped.probabilities[sparse], every.probabilities[sparse])
    np.testing.assert_array_equal(skipped.labels[sparse], every.labels[sparse])
    assert not skipped.labels[~sparse].any() and not skipped.logits[:, ~sparse].any()
    assert np.isfinite(skipped.probabilities).all()


def test_voxels_outside_the_mask_are_background():
    net = make_net("deepmedic")
    with torch.no_grad():  # push every voxel towards the foreground
        net.classifier.bias[:] = torch.tensor([-50.0, 50.0])
    image, mask = volume((21, 24, 22))
    result = predict_volume(net, image, mask, tile=24, device="cpu", return_logits=True)
    assert (result.labels[mask] == 1).all()
    assert (result.labels[~mask] == 0).all()
    assert (result.probabilities[~mask] == 0).all() and (result.probabilities[mask] > 0.99).all()
    assert (result.logits[:, ~mask] == 0).all() and (result.decision[~mask] == 0).all()
    assert result.labels.dtype == np.uint8 and result.probabilities.dtype == np.float32


def test_an_empty_mask_gives_background_without_running_the_net():
    def explode(*args):
        raise AssertionError("the net must not run")

    net = make_net("deepmedic")
    net.register_forward_pre_hook(explode)
    image, _ = volume((12, 12, 12))
    result = predict_volume(net, image, np.zeros((12, 12, 12), bool), tile=9, device="cpu", return_logits=True)
    assert not result.labels.any() and not result.probabilities.any() and result.info["tiles"] == 0


def test_multiclass_probabilities_sum_the_rare_classes():
    net = make_net("deepmedic", classes=3)
    image, mask = volume((15, 15, 15))
    result = predict_volume(net, image, mask, tile=9, device="cpu", return_logits=True, rare=(False, False, True))
    z = result.logits[:, mask]
    p = np.exp(z - z.max(axis=0))
    p /= p.sum(axis=0)
    np.testing.assert_allclose(result.probabilities[mask], p[2], atol=1e-5)
    np.testing.assert_allclose(result.decision[mask], z[2] - z[:2].max(axis=0), atol=1e-5)
    assert set(np.unique(result.labels[mask])) <= {0, 1, 2}


def test_unet_whole_box_pass_equals_a_forward_pass_over_the_box():
    net = make_net("unet", base_features=4, max_features=16, depth=3)
    image, mask = volume((20, 18, 22))
    result = predict_volume(net, image, mask, device="cpu", return_logits=True)
    assert result.info["tiles"] == 1 and result.info["blended"]
    from asymseg.infer.tiling import mask_box
    start, stop = mask_box(mask)
    size = [round_up(b - a, net.output_multiple) for a, b in zip(start, stop)]
    box = np.zeros((2, *size), np.float32)
    crop = image[:, start[0]:start[0] + size[0], start[1]:start[1] + size[1], start[2]:start[2] + size[2]]
    box[(slice(None), *(slice(0, n) for n in crop.shape[1:]))] = crop
    net.eval()
    with torch.inference_mode():
        expected = net(torch.from_numpy(box)[None])[0].numpy()
    got = result.logits[(slice(None), *(slice(a, b) for a, b in zip(start, stop)))]
    inside = mask[tuple(slice(a, b) for a, b in zip(start, stop))]
    ref = expected[(slice(None), *(slice(0, b - a) for a, b in zip(start, stop)))]
    np.testing.assert_allclose(got[:, inside], ref[:, inside], rtol=0, atol=1e-4)


def test_unet_blends_overlapping_tiles_over_the_whole_box():
    net = make_net("unet", base_features=4, max_features=16, depth=3)
    image, mask = volume((26, 24, 28))
    result = predict_volume(net, image, mask, tile=16, device="cpu", return_logits=True)
    assert result.info["tiles"] > 1 and result.info["blended"]
    assert np.isfinite(result.logits).all()
    assert (result.labels[~mask] == 0).all()
    assert np.abs(result.logits[:, mask]).min(axis=0).max() > 0  # every brain voxel got a prediction


def test_the_callers_net_is_left_as_it_was():
    net = make_net("deepmedic")
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    image, mask = volume((12, 12, 12))
    predict_volume(net, image, mask, tile=12, device="cpu")  # channels_last on a copy
    predict_volume(net, image, mask, tile=12, device="cpu", memory_format="contiguous")
    assert net.training
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key])
        assert value.is_contiguous()


def test_wrong_channel_count_and_shapes_are_input_errors():
    net = make_net("deepmedic", channels=2)
    image, mask = volume((12, 12, 12), channels=3)
    with pytest.raises(InputError, match="takes 2 input channel"):
        predict_volume(net, image, mask, device="cpu")
    with pytest.raises(InputError, match="brain mask has shape"):
        predict_volume(net, image[:2], mask[:5], device="cpu")
    with pytest.raises(InputError, match=r"\(C, D, H, W\)"):
        predict_volume(net, image[0], mask, device="cpu")


def test_progress_events_count_the_batches():
    net = make_net("deepmedic")
    image, mask = volume((18, 18, 18))
    events = []
    result = predict_volume(net, image, mask, tile=9, batch_size=3, device="cpu", on_event=events.append)
    progress = [e for e in events if e.kind == "progress"]
    assert all(e.stage == "infer" for e in progress)
    total = -(-result.info["tiles"] // 3)
    assert [e.done for e in progress] == list(range(total + 1))
    assert {e.total for e in progress} == {total}


def test_cancel_after_the_first_batch_stops_before_the_next():
    net = make_net("deepmedic")
    image, mask = volume((18, 18, 18))
    token = CancelToken()
    seen = []

    def on_event(event):
        seen.append(event.done)
        if event.kind == "progress" and event.done == 1:
            token.cancel("test")

    with pytest.raises(Cancelled):
        predict_volume(net, image, mask, tile=9, device="cpu", on_event=on_event, cancel=token)
    assert seen[-1] == 1


class OomAbove(torch.nn.Module):
    """A net that raises an out-of-memory error for output tiles larger than ``limit`` voxels per edge."""

    def __init__(self, net, limit, error):
        super().__init__()
        self.inner = net
        self.limit = limit
        self.error = error
        self.calls: list[int] = []
        for name in ("context", "output_multiple", "exact_tiling", "in_channels", "num_classes", "architecture"):
            setattr(self, name, getattr(net, name))

    def input_shape(self, shape):
        return self.inner.input_shape(shape)

    def forward(self, x):
        edge = max(x.shape[2:]) - 2 * self.context
        self.calls.append(edge)
        if edge > self.limit:
            raise self.error
        return self.inner(x)


@pytest.mark.parametrize("error", [
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB"),
    RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8000000000 bytes"),
])
def test_out_of_memory_halves_the_tiles_and_gives_the_same_result(error):
    base = make_net("deepmedic")
    image, mask = volume((24, 24, 24))
    normal = predict_volume(base, image, mask, tile=24, device="cpu", memory_format="contiguous",
                            return_logits=True)
    wrapped = OomAbove(base, limit=12, error=error)
    events = []
    result = predict_volume(wrapped, image, mask, tile=48, device="cpu", memory_format="contiguous",
                            return_logits=True, on_event=events.append)
    assert wrapped.calls[0] > 12 and max(result.info["tile"]) <= 12
    assert len(result.info["retries"]) >= 1
    logs = [e for e in events if e.kind == "log"]
    assert len(logs) == len(result.info["retries"]) and "retrying with" in logs[0].message
    np.testing.assert_array_equal(result.labels, normal.labels)
    np.testing.assert_allclose(result.logits, normal.logits, rtol=0, atol=1e-5)


def test_out_of_memory_with_the_smallest_tiles_is_a_resource_error():
    wrapped = OomAbove(make_net("deepmedic"), limit=0, error=torch.cuda.OutOfMemoryError("CUDA out of memory"))
    image, mask = volume((15, 15, 15))
    with pytest.raises(ResourceError, match="out of memory on cpu even with 12x12x12 tiles"):
        predict_volume(wrapped, image, mask, tile=30, device="cpu", memory_format="contiguous")


def test_other_errors_are_not_retried():
    wrapped = OomAbove(make_net("deepmedic"), limit=0, error=RuntimeError("a bug"))
    image, mask = volume((15, 15, 15))
    with pytest.raises(RuntimeError, match="a bug"):
        predict_volume(wrapped, image, mask, tile=30, device="cpu", memory_format="contiguous")
    assert len(wrapped.calls) == 1


def test_retry_loop_goes_from_smaller_tiles_on_the_accelerator_to_the_cpu():
    # The accelerator is simulated: attempts on "cuda" raise CUDA's out-of-memory error, attempts
    # on the CPU run the real engine. The loop itself is the production code path.
    net = make_net("deepmedic")
    image, mask = volume((24, 24, 24))
    attempts = []

    def attempt(device, tile):
        attempts.append((device.type, tuple(tile)))
        if device.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return predict_volume(net, image, mask, tile=tile, device=device, return_logits=True)

    events = []
    result, device, tile = run_with_oom_retry(
        attempt, device=torch.device("cuda"), tile=(48, 48, 48), multiple=3,
        fallback_device=torch.device("cpu"), fallback_tile=lambda: (24, 24, 24), on_event=events.append)
    assert attempts == [("cuda", (48, 48, 48)), ("cuda", (24, 24, 24)), ("cuda", (12, 12, 12)),
                        ("cpu", (24, 24, 24))]
    assert device.type == "cpu" and tile == (24, 24, 24)
    messages = [e.message for e in events if e.kind == "log"]
    assert len(messages) == 3 and "falling back to cpu" in messages[-1]
    normal = predict_volume(net, image, mask, tile=12, device="cpu", return_logits=True)
    np.testing.assert_array_equal(result.labels, normal.labels)
    np.testing.assert_allclose(result.logits, normal.logits, rtol=0, atol=1e-5)


def test_out_of_memory_errors_are_recognised():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_default_tile_fits_the_budget_and_grows_with_it():
    net = make_net("deepmedic", narrow=False, channels=4)
    model = ActivationModel.measure(net)
    small = default_tile(model, (141, 171, 138), multiple=3, budget_bytes=300_000_000, max_tile=160)
    large = default_tile(model, (141, 171, 138), multiple=3, budget_bytes=1_000_000_000, max_tile=160)
    assert all(t % 3 == 0 for t in small + large)
    assert max(small) < max(large)
    assert model.peak_bytes(small) <= 300_000_000 and model.peak_bytes(large) <= 1_000_000_000
    # The widest activation of this DeepMedic is the 150-feature FC layer over the output tile.
    assert model.peak_bytes((30, 30, 30)) >= 150 * 30 ** 3 * 4
    whole = default_tile(model, (20, 25, 30), multiple=3, budget_bytes=10 ** 12, max_tile=160)
    assert whole == (21, 27, 30)


def test_cheapest_exact_tile_fits_the_budget_and_costs_no_more_than_cubes():
    from asymseg.infer.tiling import plan_exact_tiles

    net = make_net("deepmedic", narrow=False, channels=4)
    model = ActivationModel.measure(net)
    region = (171, 180, 156)
    budget = 600_000_000

    def total_flops(tile):
        plan = plan_exact_tiles((0, 0, 0), region, tile=tile, multiple=3, context=net.context)
        return len(plan) * net.flops(net.input_shape(plan.tile_shape)), plan

    best = cheapest_exact_tile(model, region, multiple=3, budget_bytes=budget, max_tile=160, cost=tile_cost(net))
    cube = default_tile(model, region, multiple=3, budget_bytes=budget, max_tile=160)
    best_flops, plan = total_flops(best)
    assert plan.tile_shape == best and model.peak_bytes(best) <= budget
    assert best_flops <= total_flops(cube)[0]
    # With no memory limit one tile per axis would do, but max_tile caps the edge.
    free = cheapest_exact_tile(model, (40, 50, 60), multiple=3, budget_bytes=10 ** 12, max_tile=160,
                               cost=tile_cost(net))
    assert free == (42, 51, 60)
