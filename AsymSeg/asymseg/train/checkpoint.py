"""Resume checkpoints of a training run, written atomically and without pickle.

A checkpoint is the folder ``<run_dir>/checkpoint/``:

- ``weights.safetensors``: the network's parameters and buffers;
- ``optimizer.safetensors``: the optimiser's tensor state (``state.<param index>.<name>``);
- ``rng.safetensors``: torch generator states (uint8 tensors);
- ``best.safetensors``: the best model's weights so far (once there is one);
- ``state.json``: everything else (iteration, optimiser param groups and scalar state, the patch
  sampler's numpy generator state, best-model tracking, early-stopping counters, the config).

It is written into a temporary folder beside it (every file flushed and fsynced), then swapped in
by two renames: ``checkpoint`` -> ``checkpoint.old``, temporary -> ``checkpoint``. A kill between the
renames leaves ``checkpoint.old``, which :func:`load_checkpoint` falls back to, so at any moment there
is one complete checkpoint. Nothing here unpickles: tensors go through safetensors, the rest is JSON.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from asymseg import jsontext
from asymseg.errors import InputError, ResourceError

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_OLD = "checkpoint.old"
CHECKPOINT_FORMAT = "asymseg-train-checkpoint"
CHECKPOINT_VERSION = 1

_WEIGHTS = "weights.safetensors"
_OPTIMIZER = "optimizer.safetensors"
_RNG = "rng.safetensors"
_BEST = "best.safetensors"
_STATE = "state.json"


# -- atomic file writes ------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _save_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    from asymseg.modelfile import write_safetensors

    plain = {k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}
    write_safetensors(plain, path)
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def remove_stale_temporaries(folder: Path, prefix: str) -> list[Path]:
    """Remove the temporary folders ``<prefix><8 random characters>.tmp`` (``tempfile.mkdtemp``
    names) that a writer killed mid-write (SIGKILL, power loss) left in ``folder``.

    Only call this where no other writer of the same prefix can be working (one run per run
    folder, one run per output model).

    Returns:
        The folders removed.
    """
    pattern = re.compile(rf"^{re.escape(prefix)}[a-z0-9_]{{8}}\.tmp$")
    removed = []
    if Path(folder).is_dir():
        for entry in Path(folder).iterdir():
            if pattern.match(entry.name) and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    if removed:
        log.info("removed %d unfinished temporary folder(s) of an interrupted write in %s", len(removed), folder)
    return removed


def swap_in_directory(tmp_dir: Path, final: Path, old: Path) -> None:
    """Replace folder ``final`` by ``tmp_dir`` with two renames (``final`` -> ``old`` first).

    A kill between the renames leaves ``old`` complete; readers fall back to it.
    """
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp_dir, final)
    _fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


# -- optimiser state <-> (tensors, JSON) -------------------------------------------------------
def split_optimizer_state(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into safetensors-ready tensors and a JSON-ready rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state_dict["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    rest = {"param_groups": [dict(g) for g in state_dict["param_groups"]], "scalars": scalars,
            "indices": [int(i) for i in state_dict["state"]]}
    return tensors, rest


def join_optimizer_state(tensors: Mapping[str, torch.Tensor], rest: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`split_optimizer_state`: a dict ``optimizer.load_state_dict`` accepts."""
    state: dict[int, dict[str, Any]] = {int(i): {} for i in rest["indices"]}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, entry in rest["scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    return {"state": state, "param_groups": [dict(g) for g in rest["param_groups"]]}


# -- checkpoints -------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """A loaded resume checkpoint.

    Attributes:
        weights: network state dict (parameters and buffers), CPU tensors.
        optimizer: optimiser state dict for ``load_state_dict`` (CPU tensors).
        rng: named generator states (uint8 tensors).
        state: the JSON part (iteration, sampler state, best tracking, config ...).
        path: the folder it was read from.
        best: the best model's weights at that point (None before the first evaluation).
    """

    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, torch.Tensor]
    state: dict[str, Any]
    path: Path
    best: dict[str, torch.Tensor] | None = None

    @property
    def iteration(self) -> int:
        return int(self.state["iteration"])


def save_checkpoint(run_dir: str | Path, *, weights: Mapping[str, torch.Tensor],
                    optimizer: Mapping[str, Any], rng: Mapping[str, torch.Tensor],
                    state: Mapping[str, Any], best: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write ``<run_dir>/checkpoint/`` atomically; returns its path.

    Args:
        run_dir: the run folder (created if missing).
        weights: network state dict.
        optimizer: ``optimizer.state_dict()``.
        rng: named torch generator states (``torch.Generator.get_state()``).
        state: JSON-serialisable rest; must contain ``iteration``.
        best: the best model's weights so far (kept so a resumed run can write the final model).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    opt_tensors, opt_rest = split_optimizer_state(optimizer)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **dict(state), "optimizer": opt_rest}
    text = json.dumps(payload, indent=1, sort_keys=True, allow_nan=True)
    remove_stale_temporaries(run_dir, ".checkpoint.")
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint.", suffix=".tmp", dir=run_dir))
    try:
        _save_tensors(tmp / _WEIGHTS, weights)
        _save_tensors(tmp / _OPTIMIZER, opt_tensors)
        _save_tensors(tmp / _RNG, rng)
        if best is not None:
            _save_tensors(tmp / _BEST, best)
        with open(tmp / _STATE, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(tmp)
        swap_in_directory(tmp, run_dir / CHECKPOINT_DIR, run_dir / CHECKPOINT_OLD)
    except (OSError, ResourceError) as err:  # name the checkpoint, not the temporary folder removed now
        shutil.rmtree(tmp, ignore_errors=True)
        where = run_dir / CHECKPOINT_DIR
        if isinstance(err, ResourceError) or err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise ResourceError(f"{where}: cannot write the checkpoint: out of disk space or over the file size "
                                "limit (the previous checkpoint, if any, is kept)") from err
        raise InputError(f"{where}: cannot write the checkpoint: {err.strerror or err}") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir / CHECKPOINT_DIR


def find_checkpoint(run_dir: str | Path) -> Path | None:
    """The complete checkpoint folder of a run (``checkpoint`` or, after a kill, ``checkpoint.old``)."""
    run_dir = Path(run_dir)
    for name in (CHECKPOINT_DIR, CHECKPOINT_OLD):
        candidate = run_dir / name
        if (candidate / _STATE).is_file():
            return candidate
    return None


def _state_problems(state: dict[str, Any]) -> str | None:
    """What is wrong with a checkpoint's state.json (None when nothing): the keys resume needs."""
    version = state.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        return f"version {str(version)[:40]!r} is not a whole number"
    iteration = state.get("iteration")
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        return f"iteration {str(iteration)[:40]!r} is not a whole number >= 0"
    if not isinstance(state.get("optimizer"), dict):
        return "'optimizer' is missing or not an object"
    return None


def load_checkpoint(run_dir: str | Path) -> Checkpoint:
    """Read the resume checkpoint of ``run_dir``.

    Raises:
        InputError: no checkpoint, or a damaged/unknown one (names the folder).
    """
    run_dir = Path(run_dir)
    path = find_checkpoint(run_dir)
    if path is None:
        raise InputError(f"{run_dir}: no training checkpoint found (expected {run_dir / CHECKPOINT_DIR})")
    try:
        state = jsontext.loads((path / _STATE).read_text(encoding="utf-8"), allow_nan=True,
                               max_int_digits=100)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{path / _STATE}: unreadable checkpoint state ({err})") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path / _STATE}: not an asymseg training checkpoint")
    problems = _state_problems(state)
    if problems:
        raise InputError(f"{path / _STATE}: damaged checkpoint state: {problems}; start anew with --overwrite")
    if int(state.get("version", 0)) > CHECKPOINT_VERSION:
        raise InputError(f"{path / _STATE}: checkpoint version {state.get('version')} is newer than "
                         f"this asymseg supports ({CHECKPOINT_VERSION})")
    try:
        weights = load_file(str(path / _WEIGHTS))
        opt_tensors = load_file(str(path / _OPTIMIZER))
        rng = load_file(str(path / _RNG))
        best = load_file(str(path / _BEST)) if (path / _BEST).is_file() else None
    except (OSError, SafetensorError) as err:
        raise InputError(f"{path}: damaged checkpoint tensors ({err})") from err
    optimizer = join_optimizer_state(opt_tensors, state.pop("optimizer"))
    return Checkpoint(weights=weights, optimizer=optimizer, rng=rng, state=state, path=path, best=best)
