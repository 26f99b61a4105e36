"""Metrics: hand-computed answers, BraTS empty rules, and cross-checks against SimpleITK's filters."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from asymseg import constants as C
from asymseg.metrics import METRIC_KEYS, case_metrics, confusion, hausdorff, hd95, summarize, surface, surface_distances


def random_blobs(rng: np.random.Generator, shape=(20, 24, 28), count=3) -> np.ndarray:
    """A union of random ellipsoids (D, H, W)."""
    grid = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    mask = np.zeros(shape, bool)
    for _ in range(count):
        centre = [rng.uniform(0.2 * n, 0.8 * n) for n in shape]
        radii = [rng.uniform(1.5, 0.35 * n) for n in shape]
        mask |= sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0
    return mask


def _image(mask: np.ndarray, spacing) -> sitk.Image:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing))
    return image


def sitk_surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels by SimpleITK's BinaryContour (face connectivity; padded so the volume edge is background)."""
    padded = sitk.GetImageFromArray(np.pad(mask, 1).astype(np.uint8))
    contour = sitk.BinaryContour(padded, fullyConnected=False, backgroundValue=0, foregroundValue=1)
    return sitk.GetArrayFromImage(contour).astype(bool)[1:-1, 1:-1, 1:-1]


def brute_force_distances(prediction, reference, spacing):
    """Pairwise distances between surface voxel centres, in mm (spacing is x, y, z; arrays z, y, x)."""
    scale = np.array(spacing[::-1], dtype=np.float64)
    p = np.argwhere(surface(prediction)) * scale
    r = np.argwhere(surface(reference)) * scale
    d = np.sqrt(((p[:, None, :] - r[None, :, :]) ** 2).sum(-1))
    return d.min(axis=1), d.min(axis=0)


# -- known answers --------------------------------------------------------------------------------
def test_known_answer_on_a_row_of_voxels_with_anisotropic_spacing():
    prediction = np.zeros((1, 1, 10), bool)
    reference = np.zeros((1, 1, 10), bool)
    prediction[0, 0, 2:5] = True  # x = 2, 3, 4
    reference[0, 0, 3:7] = True  # x = 3, 4, 5, 6
    m = case_metrics(prediction, reference, spacing=(2.0, 1.0, 1.0))  # 2 mm along x
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 2, 5)
    assert m["dsc"] == pytest.approx(4 / 7)
    assert m["sensitivity"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(5 / 6)
    assert m["volume_prediction_ml"] == pytest.approx(3 * 2 / 1000)
    assert m["volume_reference_ml"] == pytest.approx(4 * 2 / 1000)
    # Surface distances: prediction -> reference [2, 0, 0] mm, reference -> prediction [0, 0, 2, 4] mm.
    # Pooled and sorted [0, 0, 0, 0, 2, 2, 4]: the 95th percentile sits at 5.7 -> 2 + 0.7 * 2 = 3.4 mm.
    assert m["hd95"] == pytest.approx(3.4)
    assert hausdorff(prediction, reference, (2.0, 1.0, 1.0)) == pytest.approx(4.0)
    assert set(m) == set(METRIC_KEYS)


def test_nested_cubes_known_hausdorff():
    prediction = np.zeros((9, 9, 9), bool)
    reference = np.zeros((9, 9, 9), bool)
    prediction[3:6, 3:6, 3:6] = True  # side 3 around the centre
    reference[2:7, 2:7, 2:7] = True  # side 5 around the centre
    # Every prediction-surface voxel is 1 voxel from the reference surface; the reference corners are
    # sqrt(3) from the prediction corners.
    assert hausdorff(prediction, reference) == pytest.approx(math.sqrt(3), rel=1e-6)
    assert hausdorff(prediction, reference, (1.0, 1.0, 3.0)) == pytest.approx(math.sqrt(1 + 1 + 9), rel=1e-6)
    forward, backward = surface_distances(prediction, reference)
    assert forward.size == 26 and np.allclose(forward, 1.0)  # side-3 cube: all but the centre
    assert backward.size == 98  # 125 - 27


def test_surface_of_a_solid_cube_and_at_the_volume_edge():
    mask = np.zeros((6, 6, 6), bool)
    mask[1:5, 1:5, 1:5] = True
    assert surface(mask).sum() == 64 - 8
    full = np.ones((3, 3, 3), bool)
    assert surface(full).sum() == 26  # the volume edge counts as background


def test_identical_masks_are_perfect():
    rng = np.random.default_rng(3)
    mask = random_blobs(rng)
    m = case_metrics(mask, mask, spacing=(0.5, 0.8, 3.0))
    assert m["dsc"] == 1.0 and m["hd95"] == 0.0 and m["sensitivity"] == 1.0 and m["precision"] == 1.0
    assert m["fp"] == 0 and m["fn"] == 0


def test_confusion_counts():
    p = np.array([1, 1, 0, 0, 1], bool).reshape(1, 1, 5)
    r = np.array([1, 0, 1, 0, 0], bool).reshape(1, 1, 5)
    assert confusion(p, r) == (1, 2, 1, 1)


# -- BraTS empty rules ------------------------------------------------------------------------------
def _strict_json(metrics):
    json.dumps(metrics, allow_nan=False)  # raises on NaN/Inf


def test_both_empty():
    empty = np.zeros((4, 5, 6), bool)
    m = case_metrics(empty, empty)
    assert m["dsc"] == 1.0 and m["hd95"] == 0.0
    assert m["sensitivity"] is None and m["precision"] is None and m["specificity"] == 1.0
    assert m["volume_prediction_ml"] == 0.0 and m["tn"] == 120
    assert hausdorff(empty, empty) == 0.0
    _strict_json(m)


def test_empty_prediction_nonempty_reference():
    reference = np.zeros((4, 5, 6), bool)
    reference[1:3, 1:3, 1:3] = True
    m = case_metrics(np.zeros_like(reference), reference)
    assert m["dsc"] == 0.0 and m["hd95"] == pytest.approx(C.BRATS_HD95_CAP)
    assert m["sensitivity"] == 0.0 and m["precision"] is None and m["specificity"] == 1.0
    _strict_json(m)


def test_empty_reference_nonempty_prediction():
    prediction = np.zeros((4, 5, 6), bool)
    prediction[0, 0, 0] = True
    m = case_metrics(prediction, np.zeros_like(prediction))
    assert m["dsc"] == 0.0 and m["hd95"] == pytest.approx(C.BRATS_HD95_CAP)
    assert m["sensitivity"] is None and m["precision"] == 0.0 and m["specificity"] == pytest.approx(119 / 120)
    assert hausdorff(prediction, np.zeros_like(prediction)) == pytest.approx(C.BRATS_HD95_CAP)
    _strict_json(m)


def test_no_negatives_gives_no_specificity():
    full = np.ones((2, 2, 2), bool)
    m = case_metrics(full, full)
    assert m["specificity"] is None and m["dsc"] == 1.0
    _strict_json(m)


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match=r"one shape; got \(2, 2, 2\) and \(2, 2, 3\)"):
        case_metrics(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match=r"spacing must be three positive numbers"):
        hd95(np.ones((2, 2, 2)), np.ones((2, 2, 2)), spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="non-empty"):
        surface_distances(np.zeros((2, 2, 2)), np.ones((2, 2, 2)))


# -- cross-checks ------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(8))
def test_overlap_agrees_with_simpleitk_label_overlap_measures(seed):
    rng = np.random.default_rng(seed)
    prediction, reference = random_blobs(rng), random_blobs(rng)
    spacing = tuple(rng.uniform(0.4, 3.0, 3))
    m = case_metrics(prediction, reference, spacing)
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(_image(prediction, spacing), _image(reference, spacing))  # source, target
    assert m["dsc"] == pytest.approx(overlap.GetDiceCoefficient(), rel=1e-9)
    assert 1 - m["sensitivity"] == pytest.approx(overlap.GetFalseNegativeError(), abs=1e-9)
    assert 1 - m["precision"] == pytest.approx(overlap.GetFalseDiscoveryRate(), abs=1e-9)
    assert 1 - m["specificity"] == pytest.approx(overlap.GetFalsePositiveError(), abs=1e-9)  # FP / (FP + TN)
    jaccard = m["tp"] / (m["tp"] + m["fp"] + m["fn"])
    assert jaccard == pytest.approx(overlap.GetJaccardCoefficient(), rel=1e-9)
    stats = sitk.LabelStatisticsImageFilter()
    stats.Execute(_image(prediction, spacing), _image(prediction, spacing))
    assert m["volume_prediction_ml"] == pytest.approx(stats.GetCount(1) * np.prod(spacing) / 1000, rel=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_hausdorff_agrees_with_simpleitk_hausdorff_filter_on_the_surfaces(seed):
    rng = np.random.default_rng(100 + seed)
    prediction, reference = random_blobs(rng), random_blobs(rng)
    spacing = tuple(rng.uniform(0.4, 3.0, 3))
    # Surfaces from SimpleITK's BinaryContour, independent of asymseg.metrics.surface.
    np.testing.assert_array_equal(surface(prediction), sitk_surface(prediction))
    hausdorff_filter = sitk.HausdorffDistanceImageFilter()
    hausdorff_filter.Execute(_image(sitk_surface(prediction), spacing), _image(sitk_surface(reference), spacing))
    assert hausdorff(prediction, reference, spacing) == pytest.approx(hausdorff_filter.GetHausdorffDistance(),
                                                                     rel=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_hd95_agrees_with_brute_force_pooled_percentile(seed):
    rng = np.random.default_rng(200 + seed)
    shape = (10, 12, 14)
    prediction, reference = random_blobs(rng, shape), random_blobs(rng, shape)
    spacing = tuple(rng.uniform(0.4, 3.0, 3))
    forward, backward = brute_force_distances(prediction, reference, spacing)
    expected = np.percentile(np.concatenate([forward, backward]), 95)
    assert hd95(prediction, reference, spacing) == pytest.approx(expected, rel=1e-5)
    ours_forward, ours_backward = surface_distances(prediction, reference, spacing)
    np.testing.assert_allclose(np.sort(ours_forward), np.sort(forward), rtol=1e-5)
    np.testing.assert_allclose(np.sort(ours_backward), np.sort(backward), rtol=1e-5)


def test_hd95_is_symmetric_and_below_hausdorff():
    rng = np.random.default_rng(7)
    prediction, reference = random_blobs(rng), random_blobs(rng)
    spacing = (0.9, 1.1, 2.5)
    assert hd95(prediction, reference, spacing) == pytest.approx(hd95(reference, prediction, spacing))
    assert hd95(prediction, reference, spacing) <= hausdorff(prediction, reference, spacing) + 1e-9


# -- summaries -------------------------------------------------------------------------------------
def test_summarize_ignores_none_and_reports_counts():
    per_case = [
        {"case_id": "a", "dsc": 0.5, "sensitivity": None, "hd95": 2.0},
        {"case_id": "b", "dsc": 0.7, "sensitivity": 0.4, "hd95": 4.0},
        {"case_id": "c", "dsc": 0.9, "sensitivity": None, "hd95": float("nan")},
    ]
    out = summarize(per_case)
    assert "case_id" not in out
    assert out["dsc"]["mean"] == pytest.approx(0.7) and out["dsc"]["sd"] == pytest.approx(0.2)
    assert out["dsc"]["n"] == 3 and out["dsc"]["missing"] == 0 and out["dsc"]["median"] == pytest.approx(0.7)
    assert out["sensitivity"] == {"mean": 0.4, "sd": None, "median": 0.4, "min": 0.4, "max": 0.4, "n": 1,
                                  "missing": 2}
    assert out["hd95"]["n"] == 2 and out["hd95"]["mean"] == pytest.approx(3.0)
    assert summarize([])  == {}
    assert summarize([{"dsc": None}])["dsc"]["mean"] is None
    json.dumps(out, allow_nan=False)
