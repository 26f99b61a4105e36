"""Validation during training: the cropped validation case scores exactly like the full volume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asymseg.infer import predict_volume
from asymseg.io import discover_case, load_case
from asymseg.metrics import case_metrics
from asymseg.nets import build_network
from asymseg.target import TargetSpec
from asymseg.train.validate import prepare_validation_case, validate
from helpers.nets import TINY

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("architecture, hparams", [("deepmedic", TINY),
                                                    ("unet", {"depth": 2, "base_features": 4})])
def test_cropped_validation_equals_the_full_volume(tmp_path, architecture, hparams):
    from asymseg.phantom import write_phantom_cases

    folder = write_phantom_cases(tmp_path, 1, size=(36, 34, 32), seed=2)[0]
    case = load_case(discover_case(folder), channels=["flair", "t1c"], require_label=True)
    # Surround the head with empty space so the validation crop is strictly smaller than the volume.
    pad = ((14, 10), (9, 13), (11, 12))
    image = np.pad(case.image, ((0, 0), *pad))
    label, mask = np.pad(case.label, pad), np.pad(case.mask, pad)
    target = TargetSpec.tumour_core("brats2017")
    net = build_network(architecture, 2, 2, generator=torch.Generator().manual_seed(1), **hparams)
    # Bias the classifier so both classes appear in the prediction.
    with torch.no_grad():
        net.classifier.bias.copy_(torch.tensor([0.0, -0.3]))
    net.eval()
    full = predict_volume(net, image, mask, device="cpu", rare=[False, True])
    expected = case_metrics(full.labels == 1, target.rare_mask(label), case.geometry.spacing)
    assert 0 < expected["tp"] + expected["fp"] < mask.sum()

    cropped = prepare_validation_case(case.case_id, image, label, mask, case.geometry.spacing,
                                      target, context=net.context, output_multiple=net.output_multiple)
    assert cropped.outside_voxels > 0 and cropped.outside_voxels + cropped.mask.size == mask.size
    net.train()
    result = validate(net, [cropped], rare=[False, True], device=torch.device("cpu"))
    assert net.training  # the mode is restored
    got = result["cases"][0]
    for key in ("dsc", "sensitivity", "precision", "specificity", "hd95"):
        assert got[key] == expected[key], key
    assert result["mean"]["dsc"] == got["dsc"]
