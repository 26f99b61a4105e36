"""Property-based checks of the metrics on random masks and spacings."""

from __future__ import annotations

import json
import math

import numpy as np
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from asymseg import constants as C
from asymseg.metrics import case_metrics, hausdorff, hd95, surface


@st.composite
def mask_pairs(draw):
    shape = draw(st.tuples(*[st.integers(1, 7)] * 3))
    prediction = draw(arrays(np.bool_, shape))
    reference = draw(arrays(np.bool_, shape))
    spacing = draw(st.tuples(*[st.floats(0.2, 5.0)] * 3))
    return prediction, reference, spacing


def _image(mask, spacing):
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(spacing)
    return image


@settings(max_examples=150, deadline=None)
@given(mask_pairs())
def test_metrics_are_bounded_symmetric_and_never_nan(pair):
    prediction, reference, spacing = pair
    forward = case_metrics(prediction, reference, spacing)
    backward = case_metrics(reference, prediction, spacing)
    json.dumps(forward, allow_nan=False)
    for key in ("dsc", "sensitivity", "precision", "specificity"):
        assert forward[key] is None or 0.0 <= forward[key] <= 1.0
    assert forward["dsc"] == backward["dsc"]
    assert forward["hd95"] == backward["hd95"]
    assert forward["sensitivity"] == backward["precision"]
    assert forward["tp"] + forward["fp"] + forward["fn"] + forward["tn"] == prediction.size
    assert forward["hd95"] >= 0.0
    if prediction.any() and reference.any():
        assert forward["hd95"] <= hausdorff(prediction, reference, spacing) + 1e-9
        diagonal = math.dist((0, 0, 0), [(n - 1) * s for n, s in zip(prediction.shape[::-1], spacing)])
        assert forward["hd95"] <= diagonal + 1e-6
    elif prediction.any() != reference.any():
        assert forward["dsc"] == 0.0 and forward["hd95"] == C.BRATS_HD95_CAP
    else:
        assert forward["dsc"] == 1.0 and forward["hd95"] == 0.0


@settings(max_examples=100, deadline=None)
@given(mask_pairs())
def test_dice_agrees_with_simpleitk(pair):
    prediction, reference, spacing = pair
    if not (prediction.any() or reference.any()):
        return  # ITK's Dice is undefined there; the BraTS rule (1) is tested elsewhere
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(_image(prediction, spacing), _image(reference, spacing))
    ours = case_metrics(prediction, reference, spacing)["dsc"]
    itk = overlap.GetDiceCoefficient()
    if not math.isnan(itk):  # ITK reports NaN when one label is absent from both images
        assert math.isclose(ours, itk, rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=100, deadline=None)
@given(mask_pairs())
def test_hausdorff_agrees_with_simpleitk_on_surfaces(pair):
    prediction, reference, spacing = pair
    if not (prediction.any() and reference.any()):
        return
    hausdorff_filter = sitk.HausdorffDistanceImageFilter()
    hausdorff_filter.Execute(_image(surface(prediction), spacing), _image(surface(reference), spacing))
    assert math.isclose(hausdorff(prediction, reference, spacing), hausdorff_filter.GetHausdorffDistance(),
                        rel_tol=1e-5, abs_tol=1e-5)


@settings(max_examples=100, deadline=None)
@given(mask_pairs())
def test_hd95_matches_a_brute_force_pooled_percentile(pair):
    prediction, reference, spacing = pair
    if not (prediction.any() and reference.any()):
        return
    scale = np.array(spacing[::-1])
    p = np.argwhere(surface(prediction)) * scale
    r = np.argwhere(surface(reference)) * scale
    d = np.sqrt(((p[:, None] - r[None]) ** 2).sum(-1))
    expected = np.percentile(np.concatenate([d.min(1), d.min(0)]), 95)
    assert math.isclose(hd95(prediction, reference, spacing), expected, rel_tol=1e-5, abs_tol=1e-5)
