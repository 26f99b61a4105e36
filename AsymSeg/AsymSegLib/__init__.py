"""Qt-free helpers of the AsymSeg Slicer module.

Everything here imports under plain MRML (slicer-core): no qt, ctk, ScriptedLoadableModule or
parameterNodeWrapper. None of it imports torch or the ``asymseg`` engine; the two sides meet only
through files, the ``python -m asymseg`` command line and its JSON-lines progress.

Modules:
    channels: assign scene volumes to a model's input channels by name.
    install: first-use dependency checks (torch via the PyTorch extension, pip requirements).
    jobs: engine runs from the scene (the shared EngineJob) and the segmentation run (inputs to
        files, engine subprocess, results into the scene).
    logicsupport: the engine side the module Logic classes share (interpreter, processes, installs).
    models: the model registry: model cards (the panels' list) and ``asymseg models list --json``.
    operatingpoint: the interactive operating point (threshold on dz after a run, live metrics).
    plots: plot series and chart nodes (logit distribution, training curves).
    process: the engine subprocess runner (non-blocking polling, blocking wait, cancel).
    progress: JSON-lines progress parsing.
    sampledata: the BraTS sample cases for the SampleData module.
    scene: volume nodes <-> files with exact geometry, segmentation import and export.
    tables: the metrics table node.
    views: layouts, slice layers, table and plot views through MRML (results, training charts).
    widgetsupport: what the module widgets share (parameter-node wiring, job polling, model lists).
"""
