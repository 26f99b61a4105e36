"""Small-data fine-tuning with the asymmetric techniques (``asymseg finetune``).

Modules:
    config: :class:`TrainConfig` (frozen, validated), JSON/YAML loading, command-line overrides.
    data: cases cropped to the brain and the patch sampler (foreground fraction, augmentation).
    steps: one iteration (clean, adversarial, mixup updates; batch-norm statistics from clean batches).
    loop: the training loop (validation, best model, early stopping, checkpoints, cancellation).
    validate: validation with the inference engine.
    checkpoint: atomic, pickle-free resume checkpoints.
    distributed: torchrun / DDP (gloo on CPU, nccl on CUDA).
    runlog: the JSONL/CSV training log.
    api: :func:`finetune`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from asymseg.train.config import TrainConfig, load_config

if TYPE_CHECKING:
    from asymseg.train.api import TrainResult, finetune, load_run_config, resolve_output

_FROM_API = ("TrainResult", "finetune", "load_run_config", "resolve_output")


def __getattr__(name: str) -> Any:
    # The training routine imports torch (seconds); the configuration does not. Importing
    # ``asymseg.train.config`` (as every command's argument parser does) must not pay for torch.
    if name in _FROM_API:
        from asymseg.train import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["TrainConfig", "TrainResult", "finetune", "load_config", "load_run_config", "resolve_output"]
