"""Multi-process training with PyTorch's own engine (torchrun + DistributedDataParallel).

``torchrun --nproc_per_node=K -m asymseg finetune ...`` starts K processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`setup` joins them
into a process group (gloo on the CPU, nccl on CUDA, one GPU per process: ``cuda:LOCAL_RANK``).

How a run is split (see ``asymseg.train.loop``):

- the configured batch size is GLOBAL; each process trains on ``batch_size / world_size`` patches;
- every process draws the same global batch from the same sampler generator and cuts out its own
  slice, so the processes see different patches and together exactly the single-process batch;
- DDP averages the gradients, which equals the gradient of the loss averaged over the global
  batch when every process's loss is a mean over equally many voxels;
- batch normalisation: on CUDA the layers become ``SyncBatchNorm`` (statistics over the global
  batch); SyncBatchNorm does not run on the CPU, so gloo runs normalise with per-process batch
  statistics (the only difference to a single process with the same batch);
- rank 0 validates, keeps the best model and writes checkpoints; the stop decision (cancel,
  early stopping) is agreed on by a collective so every process stops at the same iteration.

Multi-node (two machines, G GPUs each; run once per node with ``--node_rank`` 0 and 1)::

    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --master_port=29500 \\
        --nproc_per_node=G -m asymseg finetune ...
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from asymseg.errors import InputError

log = logging.getLogger(__name__)

#: How long a process waits for the others at a collective (validation on rank 0 can be long).
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=60)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly single-process) run.

    Attributes:
        rank: global rank (0 = the process that validates and writes).
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        backend: "gloo" or "nccl" when a process group is active, else None.
        owns_group: True when :func:`setup` created the process group (and must destroy it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launch_environment(env: Mapping[str, str] | None = None) -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) from torchrun's environment variables, or None.

    Args:
        env: the environment to read (default ``os.environ``; read only at the API boundary).

    Raises:
        InputError: the variables are present but inconsistent.
    """
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return None
    try:
        world = int(env["WORLD_SIZE"])
        rank = int(env["RANK"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError as err:
        raise InputError(f"invalid torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {err}") from err
    if world < 1 or not 0 <= rank < world or local < 0:
        raise InputError(f"invalid torchrun environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}")
    return rank, world, local


def setup(device_type: str, env: Mapping[str, str] | None = None) -> DistContext:
    """Join the torchrun process group when launched by torchrun (else a single-process context).

    Args:
        device_type: "cpu" (gloo) or "cuda" (nccl; this process uses GPU ``LOCAL_RANK``).
        env: the environment to read (default ``os.environ``).
    """
    import torch.distributed as dist

    launch = launch_environment(env)
    if launch is None or launch[1] == 1:
        return DistContext()
    rank, world, local = launch
    if not dist.is_available():
        raise InputError("torch.distributed is not available in this PyTorch build")
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        if local >= torch.cuda.device_count():
            raise InputError(f"LOCAL_RANK {local} needs GPU {local}, but this machine has "
                             f"{torch.cuda.device_count()}; lower --nproc_per_node")
        torch.cuda.set_device(local)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
        owns = True
    else:
        backend = dist.get_backend()
    log.info("process %d of %d joined the %s process group", rank, world, backend)
    return DistContext(rank=rank, world_size=world, local_rank=local, backend=backend, owns_group=owns)


def teardown(ctx: DistContext) -> None:
    """Leave the process group if :func:`setup` created it.

    The run's objects are collected first: a DistributedDataParallel wrapper caught in a reference
    cycle would otherwise be freed after the group is gone, or during interpreter shutdown, where
    the communication threads it still holds can end the process with an abort.
    """
    if ctx.owns_group:
        import gc

        import torch.distributed as dist

        gc.collect()
        if dist.is_initialized():
            dist.destroy_process_group()


def wrap_model(net: nn.Module, ctx: DistContext, device: torch.device, *, sync_batchnorm: bool) -> nn.Module:
    """The module the training steps call: ``net`` itself, or ``net`` inside DDP.

    Under CUDA with ``sync_batchnorm``, batch-norm layers are converted to SyncBatchNorm first
    (in place on ``net``'s children; parameters and buffers are kept).
    """
    if not ctx.is_distributed:
        return net
    from torch.nn.parallel import DistributedDataParallel

    if sync_batchnorm and device.type == "cuda":
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        if converted is not net:  # the root itself was a BN layer (not the case for our nets)
            raise ValueError("cannot convert a bare batch-norm module")
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=ids)  # buffers (BN statistics) follow rank 0


def _tensor_device(ctx: DistContext, device: torch.device) -> torch.device:
    return device if ctx.backend == "nccl" else torch.device("cpu")


def all_mean(ctx: DistContext, values: Sequence[float], device: torch.device) -> list[float]:
    """Average a few floats over the processes (identity in a single process)."""
    if not ctx.is_distributed:
        return [float(v) for v in values]
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_tensor_device(ctx, device))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) / ctx.world_size for v in t.tolist()]


def any_flags(ctx: DistContext, flags: Sequence[bool], device: torch.device) -> list[bool]:
    """Element-wise OR of a few flags over the processes (one all-reduce; identity in a single process).

    Used once per iteration so every process takes the same stop decision (cancel, early stop).
    """
    if not ctx.is_distributed:
        return [bool(f) for f in flags]
    import torch.distributed as dist

    t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32, device=_tensor_device(ctx, device))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def gather_tensors(ctx: DistContext, tensor: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Every process's copy of a same-shaped tensor, in rank order (on every process)."""
    if not ctx.is_distributed:
        return [tensor]
    import torch.distributed as dist

    t = tensor.to(_tensor_device(ctx, device))
    out = [torch.empty_like(t) for _ in range(ctx.world_size)]
    dist.all_gather(out, t)
    return [o.cpu() for o in out]


def barrier(ctx: DistContext) -> None:
    """Wait for every process (no-op in a single process)."""
    if ctx.is_distributed:
        import torch.distributed as dist

        dist.barrier()
