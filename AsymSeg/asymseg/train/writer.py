"""The output model folder of a training run, written atomically with the run's provenance.

:class:`ModelWriter` is what :func:`asymseg.train.finetune` calls whenever the best model so far
changes and at the end; :func:`inherited_operating_point` is the operating point a fine-tuned
model starts with.
"""

from __future__ import annotations

import copy
import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from asymseg.errors import ResourceError
from asymseg.operating import OperatingPoint
from asymseg.train.checkpoint import swap_in_directory
from asymseg.train.config import TrainConfig
from asymseg.train.loop import TrainState

log = logging.getLogger(__name__)


class ModelWriter:
    """Writes the output model folder atomically (rank 0), with the training provenance in its card.

    The folder is written complete under a temporary name beside the destination and swapped in
    with two renames (destination -> ``.<name>.old``, temporary -> destination); a kill between the
    renames leaves the previous model complete in ``.<name>.old``, which the next write (or a
    resumed run) puts back first.

    Args:
        output: the model folder.
        source: the run's model source (``net``, ``card``, ``target``, ``base``, ``base_card``).
        config, technique: the resolved run configuration and technique (for the provenance).
        train_ids, val_ids: the case IDs trained and validated on.
        run_dir: the run folder (named in the provenance).
    """

    def __init__(self, output: Path, source: Any, config: TrainConfig, technique: Any,
                 train_ids: Sequence[str], val_ids: Sequence[str], run_dir: Path) -> None:
        self.output = output
        self.source = source
        self.config = config
        self.technique = technique
        self.train_ids = list(train_ids)
        self.val_ids = list(val_ids)
        self.run_dir = run_dir
        # A CPU copy of the untouched starting network: weights are loaded into it for writing,
        # so the training network (maybe on a GPU, inside DDP) is never modified.
        self.export_net = copy.deepcopy(source.net).to("cpu").eval()

    @property
    def old(self) -> Path:
        return self.output.parent / f".{self.output.name}.old"

    def recover(self) -> None:
        """Put back ``<name>.old`` left by a kill between the two renames of a write."""
        if not self.output.exists() and self.old.exists():
            os.replace(self.old, self.output)
            log.warning("recovered the model folder %s from %s", self.output, self.old)

    def provenance(self, state: TrainState, reason: str) -> dict[str, Any]:
        """The card's provenance: data, technique, hyper-parameters, iterations, base model, metrics."""
        base = self.source.base_card
        previous = dict(base.provenance) if base is not None else {}
        out: dict[str, Any] = {
            "data": {"train": self.train_ids, "val": self.val_ids},
            "technique": self.technique.to_dict(),
            "hyperparameters": {k: v for k, v in self.config.to_dict().items()
                                if k not in ("train_cases", "val_cases", "output_model", "run_dir")},
            "iterations": state.best_iteration if state.best_iteration is not None else state.iteration,
            "iterations_run": state.iteration,
            "total_iterations": self.config.iterations,
            "selected_by": state.best_kind,
            "validation": state.best_metrics,
            "status": reason,
            "base_model": None if base is None else {"name": base.name, "path": self.source.base,
                                                     "weights_sha256": base.weights_sha256},
            "init_seed": self.config.seed if base is None else previous.get("init_seed"),
            "run_dir": str(self.run_dir),
        }
        if "license_note" in previous:
            out["license_note"] = previous["license_note"]
        if previous:
            out["base_provenance"] = previous
        return out

    def write(self, weights: Mapping[str, torch.Tensor], state: TrainState, reason: str,
              *, extra_files: Mapping[str, Path] | None = None) -> Path:
        """Write the model with ``weights`` and the provenance of ``state``; returns the folder."""
        from asymseg.modelfile import save_model

        net = self.export_net
        self.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.output.name}.", suffix=".tmp", dir=self.output.parent))
        try:
            net.load_state_dict({k: v.detach().to("cpu") for k, v in weights.items()})
            folder = tmp / "model"
            save_model(folder, net, self._card(state, reason))
            for name, path in (extra_files or {}).items():
                if Path(path).is_file():
                    shutil.copyfile(path, folder / name)
            self.recover()
            swap_in_directory(folder, self.output, self.old)
        except (ResourceError, OSError) as err:
            # Name the model folder, not the temporary one the failure happened in.
            if isinstance(err, ResourceError) or err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise ResourceError(f"{self.output}: cannot write the model: out of disk space or over the file "
                                    "size limit") from err
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self.output

    def _card(self, state: TrainState, reason: str) -> Any:
        card = self.source.card
        base = self.source.base_card
        how = f"fine-tuned from {base.name}" if base is not None else f"trained from scratch ({card.architecture})"
        return card.replace(
            name=self.output.name, created="", target=self.source.target, provenance=self.provenance(state, reason),
            operating_point=None if self.config.operating_point == "none" else inherited_operating_point(base),
            description=f"{how} on {len(self.train_ids)} case(s) with {self.technique.name}, "
                        f"best at iteration {state.best_iteration}")


def inherited_operating_point(base: Any | None) -> OperatingPoint | None:
    """The operating point a fine-tuned model starts with: its base model's, marked as inherited.

    It is replaced at the end of the run when one is chosen for this model (validation cases or
    cross-validation). Kept otherwise because a threshold and cleaning chosen for a sibling model
    carry over: on the starter's leave-one-out folds, each fold's model scored better with the
    operating point chosen on the OTHER fold's model than with its own argmax (DSC 71.9 -> 73.4
    and 14.6 -> 23.8; docs/RESULTS.md section 3). A model trained from scratch has none (argmax).
    """
    point = getattr(base, "operating_point", None)
    if point is None:
        return None
    record = {**dict(point.validation), "inherited_from": base.name}
    return OperatingPoint(threshold=point.threshold, postprocess=point.postprocess, tta=point.tta,
                          chosen_on=point.chosen_on, validation=record)


# -- the routine ---------------------------------------------------------------------------------------
