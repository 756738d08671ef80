"""
sax/distributed.py -- training past one process: torchrun's ranks, the process group (NCCL on
GPUs, gloo on the CPU), and the few collectives train.py needs.

    torchrun --standalone --nproc_per_node=2 train.py --preset small   # 2 GPUs, or 2 CPU processes

Without torchrun there is one process (a World of size 1), and nothing here runs: the
single-process path is the one of every other page. How the work is shared (docs/scaling.md):
every rank draws the same global batch from the same generator and computes the micro-batches
i with i % world == rank; DistributedDataParallel averages the gradients on the last of them
(no_sync before), so N processes take the step one process takes on the same global batch.
Rank 0 alone writes: metrics.jsonl, checkpoints, the run's page, the Hub upload.
"""
import datetime
import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

# How long a collective waits for a rank before the job ends with an error instead of a
# hang: a rank that died leaves the others here (torchrun then stops them all).
TIMEOUT = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class World:
    rank: int = 0        # this process, 0 .. size - 1 (torchrun's RANK)
    size: int = 1        # processes in the job (WORLD_SIZE)
    local_rank: int = 0  # this process on its machine: which GPU it takes (LOCAL_RANK)

    @property
    def main(self):
        """Rank 0: the one process that writes and prints."""
        return self.rank == 0

    @property
    def many(self):
        return self.size > 1


def world_from_env():
    """The World torchrun describes in the environment; one process without it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return World()
    try:
        return World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                     int(os.environ.get("LOCAL_RANK", "0")))
    except (KeyError, ValueError) as err:
        raise SystemExit(f"WORLD_SIZE is set but RANK is not a number ({err}): start the job "
                         "with torchrun, which sets both") from None


def start(world, device):
    """Join the process group (a no-op for one process); -> the device of this rank."""
    if not world.many:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT,
                            rank=world.rank, world_size=world.size)
    return device


def leave(world):
    """Leave the process group (every rank, together: after a barrier)."""
    if world.many and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model, world, device):
    """The module the steps run: `model.loss` for one process, a DistributedDataParallel
    module whose forward is the loss for several (DDP averages gradients in backward only
    after its own forward ran, so the loss must be that forward)."""
    if not world.many:
        return model.loss
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(Loss(model), device_ids=[device.index] if device.type == "cuda"
                                   else None)


class Loss(torch.nn.Module):
    """A model whose forward is its loss (what DistributedDataParallel wraps)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        return self.model.loss(*args, **kwargs)


def no_sync(step_fn, world, last):
    """DDP's no_sync() for every micro-batch but the last: the gradients are averaged once
    per step, not once per micro-batch."""
    return step_fn.no_sync() if world.many and not last else nullcontext()


def mean(value, world):
    """The mean of a float over the ranks (every rank gets it)."""
    if not world.many:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world.size


def any_rank(flag, world):
    """True on every rank when it is True on any (a Ctrl-C seen by one rank stops all)."""
    if not world.many:
        return flag
    t = torch.tensor([int(bool(flag))])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(world):
    if world.many:
        dist.barrier()


def gathered(obj, world):
    """Every rank's obj, in rank order (a list of one for one process)."""
    if not world.many:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out
