"""Property-based robustness checks (hypothesis), beside test_io_properties.py and test_metrics_properties.py.

Those files cover image round trips over random arrays, types and geometries, and the metrics'
bounds, symmetry and agreement with SimpleITK. Here:

- a NIfTI, NRRD or MetaImage file cut at any byte is refused with an InputError naming it, never read
  with zeros in place of the missing data;
- a model folder with any byte of its card or weights changed either loads (the card is still
  valid and the SHA256 still matches) or is refused with a ModelError/InputError, never another
  exception; the weights never load changed;
- any archive entry name either maps inside the target folder or is refused;
- ``TargetSpec.class_map``/``rare_mask``/``check_label_values`` agree with their definitions on
  random targets and label maps;
- inference equals one forward pass over the padded volume for random tile sizes and brain masks.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from asymseg import constants as C
from asymseg.errors import InputError, ModelError
from asymseg.io import read_image
from asymseg.target import TargetClass, TargetSpec

SMALL = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])


# -- truncated files ---------------------------------------------------------------------------------
@SMALL
@given(shape=st.tuples(*[st.integers(2, 9)] * 3), seed=st.integers(0, 2 ** 16),
       ext=st.sampled_from([".nii.gz", ".nii", ".nrrd", ".mha"]), compressed=st.booleans(),
       keep=st.floats(0.0, 0.999))
def test_a_file_cut_anywhere_is_refused_naming_it(shape, seed, ext, compressed, keep):
    array = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"cut{ext}"
        sitk.WriteImage(sitk.GetImageFromArray(array), str(path), compressed or ext == ".nii.gz")
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
        with pytest.raises(InputError, match=r"cut\.(nii\.gz|nii|nrrd|mha): "):
            read_image(path)


# -- damaged model folders ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from asymseg.modelfile import create_model, save_model

    net, card = create_model("deepmedic", ["flair", "t1c"], TargetSpec.tumour_core("brats2017"), seed=5,
                             normal_features=[2, 2], lowres_features=[2, 2], fc_features=[4], dropout=[0.0, 0.0])
    folder = save_model(tmp_path_factory.mktemp("fuzz") / "tiny", net, card)
    return folder, {k: v.clone() for k, v in net.state_dict().items()}


@SMALL
@given(which=st.sampled_from(["model.json", "model.safetensors"]), where=st.floats(0.0, 1.0),
       new=st.integers(0, 255))
def test_any_changed_byte_loads_the_same_weights_or_is_refused(tiny_model, which, where, new):
    from asymseg.modelfile import load_model

    folder, weights = tiny_model
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "m"
        copy.mkdir()
        for name in ("model.json", "model.safetensors"):
            (copy / name).write_bytes((folder / name).read_bytes())
        data = bytearray((copy / which).read_bytes())
        index = min(int(where * len(data)), len(data) - 1)
        assume(data[index] != new)
        data[index] = new
        (copy / which).write_bytes(bytes(data))
        try:
            loaded = load_model(copy)
        except (ModelError, InputError):
            return
        assert which == "model.json", "changed weights must never load"
        for key, value in loaded.net.state_dict().items():
            torch.testing.assert_close(value, weights[key], rtol=0, atol=0)


# -- archive entry names -------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(parts=st.lists(st.sampled_from(["..", ".", "", "core", "model.json", "a b", "C:", "x\\..", "~"]),
                      min_size=1, max_size=6),
       leading=st.sampled_from(["", "/", "\\", "./", "C:\\"]))
def test_every_archive_entry_name_stays_inside_or_is_refused(parts, leading):
    from asymseg.registry import _member_path

    name = leading + "/".join(parts)
    try:
        rel = _member_path(name, Path("archive.zip"))
    except ModelError as err:
        assert "archive.zip" in str(err)
        return
    if rel is None:
        return
    assert not rel.is_absolute() and ".." not in rel.parts
    base = PurePosixPath("/staging")
    assert str(base / rel).startswith("/staging/")


# -- targets ---------------------------------------------------------------------------------------------
@st.composite
def targets(draw):
    labels = draw(st.lists(st.integers(1, 12), min_size=1, max_size=8, unique=True))
    k = draw(st.integers(1, len(labels)))
    cuts = sorted(draw(st.lists(st.integers(1, len(labels) - 1), min_size=k - 1, max_size=k - 1, unique=True))) \
        if k > 1 else []
    groups = [labels[a:b] for a, b in zip([0, *cuts], [*cuts, len(labels)])]
    rare = draw(st.lists(st.booleans(), min_size=len(groups), max_size=len(groups)))
    if not any(rare):
        rare[0] = True
    classes = (TargetClass("background", (), False),
               *(TargetClass(f"c{i}", tuple(g), r) for i, (g, r) in enumerate(zip(groups, rare))))
    return TargetSpec(classes)


@SMALL
@given(target=targets(), label=arrays(np.int16, st.tuples(*[st.integers(1, 6)] * 3), elements=st.integers(0, 14)))
def test_class_map_and_rare_mask_follow_the_class_definitions(target, label):
    classes = target.class_map(label)
    assert classes.shape == label.shape and classes.dtype == np.int64
    assert classes.min() >= 0 and classes.max() < target.num_classes
    for index, cls in enumerate(target.classes[1:], start=1):
        np.testing.assert_array_equal(classes == index, np.isin(label, cls.labels))
    np.testing.assert_array_equal(classes == 0, ~np.isin(label, sorted(target.claimed_labels)))
    rare_classes = [i for i, r in enumerate(target.rare) if r]
    np.testing.assert_array_equal(target.rare_mask(label), np.isin(classes, rare_classes) & (classes > 0))
    assert TargetSpec.from_dict(target.to_dict()) == target
    target.check_label_values(np.unique(label), "any.nii.gz")  # no convention: every value is accepted


@SMALL
@given(convention=st.sampled_from(sorted(C.CONVENTION_VALUES)),
       values=st.sets(st.integers(0, 9), min_size=1, max_size=6))
def test_check_label_values_refuses_exactly_the_values_outside_the_convention(convention, values):
    target = TargetSpec.tumour_core(convention)
    outside = sorted(values - C.CONVENTION_VALUES[convention])
    if outside:
        expected = re.escape(f"seg.nii.gz: label values {outside} are not part of the {convention} convention")
        with pytest.raises(InputError, match=expected):
            target.check_label_values(values, "seg.nii.gz")
    else:
        target.check_label_values(values, "seg.nii.gz")


# -- tiling ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_net():
    from asymseg.nets import build_network

    net = build_network("deepmedic", 2, 2, generator=torch.Generator().manual_seed(7), normal_features=[3, 3, 3],
                        lowres_features=[3, 3, 3], fc_features=[6], dropout=[0.0, 0.0])
    return net.eval()


def _direct(net, image):
    c, m = net.context, net.output_multiple
    pads = []
    for n in reversed(image.shape[1:]):
        pads += [c, c + (-n) % m]
    with torch.inference_mode():
        out = net(F.pad(torch.from_numpy(image)[None], pads))[0].numpy()
    return out[(slice(None), *(slice(0, n) for n in image.shape[1:]))]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(shape=st.tuples(*[st.integers(6, 22)] * 3), tile=st.tuples(*[st.integers(3, 30)] * 3),
       corner=st.tuples(*[st.floats(0, 0.6)] * 3), extent=st.tuples(*[st.floats(0.2, 1.0)] * 3),
       seed=st.integers(0, 1000))
def test_inference_equals_one_forward_pass_for_any_tile_and_mask(tiny_net, shape, tile, corner, extent, seed):
    from asymseg.infer import predict_volume

    rng = np.random.default_rng(seed)
    image = rng.standard_normal((2, *shape)).astype(np.float32)
    mask = np.zeros(shape, bool)
    box = tuple(slice(int(c * n), max(int(c * n) + 1, int(min(1.0, c + e) * n)))
                for c, e, n in zip(corner, extent, shape))
    mask[box] = True
    prediction = predict_volume(tiny_net, image, mask, tile=tile, device="cpu", return_logits=True)
    expected = _direct(tiny_net, image)
    np.testing.assert_allclose(prediction.logits[:, mask], expected[:, mask], rtol=0, atol=2e-5)
    assert not prediction.logits[:, ~mask].any() and not prediction.labels[~mask].any()
    np.testing.assert_array_equal(prediction.labels[mask], expected.argmax(axis=0)[mask])


@pytest.mark.parametrize("env, argv", [({"ASYMSEG_THREADS": "abc"}, []), ({"ASYMSEG_THREADS": "-2"}, []),
                                        ({}, ["--threads", "0"])])
def test_a_bad_thread_count_is_a_usage_error_not_an_internal_one(cli, monkeypatch, env, argv):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = cli(*argv, "models", "path")
    assert result.code == 2 and "internal error" not in result.err and "threads" in result.err.lower()
