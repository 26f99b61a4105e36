"""Qt-free helpers of the AsymSegTraining Slicer module (fine-tuning).

Imports under plain MRML (slicer-core); never imports qt, torch or the ``asymseg`` engine.
Shared pieces (engine process, progress parsing, scene I/O, plots) come from AsymSegLib.

Modules:
    export: scene volumes + segmentation -> a training-case folder (BraTS 2017-2021 names).
    params: the fine-tuning parameters and their ``asymseg finetune`` command line.
    series: progress events -> loss and validation curves for live plots.
    jobs: a fine-tuning run (export, engine subprocess, plots, resulting model).
    estimate: the run time on this device, timed on a short warm-up before Start.
"""
