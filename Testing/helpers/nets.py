"""Network settings shared by the training tests."""

#: A 4-layer DeepMedic with 4 feature maps (input 33^3 for a 9^3 output): fast on one thread.
TINY = {"normal_features": [4] * 4, "lowres_features": [4] * 4, "fc_features": [8], "dropout": [0.0, 0.0]}
