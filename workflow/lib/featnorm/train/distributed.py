"""Multi-process (DDP) plumbing for the trainer: which rank am I, and small collectives.

`scripts/pretrain.py` under `torchrun --nproc-per-node N` calls `init_from_env()`: it reads
torchrun's RANK / WORLD_SIZE / LOCAL_RANK, opens the process group (nccl on CUDA, gloo
on the CPU) and picks this rank's device (`cuda:LOCAL_RANK`). Without those variables
everything is a single process and no collective is ever called.

What is synchronised where (see featnorm.train.trainer for the loop):
- gradients: DistributedDataParallel (averaged over ranks);
- the loss: `IJEPA` divides each rank's token-loss sum by the *global* mean token count,
  so the rank average equals the one-process loss over the whole batch;
- running statistics: target norm (`running-batchnorm*`, `batchnorm`) and the encoder's
  `RunningNorm` use all-reduced sums; DiffMoE thresholds average their k-th scores;
- the teacher: the EMA of identical students is identical on every rank;
- data: each rank reads a disjoint part of every epoch (`TrainLoader(rank, world_size)`);
  ranks agree every step on whether the epoch goes on (`all_ranks_have`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


SINGLE = DistInfo()


def launched_by_torchrun(env=None) -> bool:
    env = os.environ if env is None else env
    return "RANK" in env and "WORLD_SIZE" in env and int(env["WORLD_SIZE"]) > 1


def init_from_env(device: str | None = None) -> tuple[DistInfo, torch.device | None]:
    """Open the process group when launched by torchrun (WORLD_SIZE > 1).

    Returns (info, device): the device is `cuda:LOCAL_RANK` on CUDA machines (unless
    `device` names one), `device` as given otherwise; (SINGLE, device) without torchrun."""
    if not launched_by_torchrun():
        return SINGLE, (torch.device(device) if device else None)
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    use_cuda = (device is None and torch.cuda.is_available()) or (device is not None and device.startswith("cuda"))
    if use_cuda:
        dev = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(device or "cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return info, dev


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum_(t: torch.Tensor) -> torch.Tensor:
    """In place sum over ranks (no-op in one process); returns `t`."""
    if active():
        dist.all_reduce(t)
    return t


def _reduce_flag(flag: bool, op, device: torch.device) -> bool:
    if not active():
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=op)
    return bool(t.item())


def all_ranks_have(flag: bool, device: torch.device) -> bool:
    """True when `flag` is True on every rank (a MIN over ranks)."""
    return _reduce_flag(flag, dist.ReduceOp.MIN, device)


def any_rank_has(flag: bool, device: torch.device) -> bool:
    """True when `flag` is True on some rank (a MAX over ranks)."""
    return _reduce_flag(flag, dist.ReduceOp.MAX, device)


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average a dict of floats over ranks (keys must match on every rank)."""
    if not active() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def sum_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    if not active() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def gather_objects(obj):
    """Every rank's `obj` as a list on every rank ([obj] in one process)."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if active():
        dist.barrier()


def per_rank_batch_size(global_batch: int, world_size: int) -> int:
    if global_batch % world_size:
        raise ValueError(
            f"train.batch_size = {global_batch} (the global batch, in packed rows) is not divisible by the "
            f"{world_size} processes of this run; choose a batch size that is a multiple of {world_size} "
            f"or another number of GPUs (train.gpus / torchrun --nproc-per-node)"
        )
    return global_batch // world_size
