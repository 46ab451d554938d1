"""One model on several processes: torchrun's environment → a torch.distributed process group.

``torchrun --nproc_per_node N train.py EXPERIMENT ...`` starts N copies of train.py with
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (and the rendezvous address) in their environment;
multi-node is torchrun's own ``--nnodes`` / ``--rdzv-endpoint``. ``setup`` joins the group
(gloo on CPU, nccl on CUDA, each process on GPU ``LOCAL_RANK``); from then on
``minitf.trainer.Trainer`` trains in DistributedDataParallel and process 0 alone writes. Without
torchrun (or with one process) nothing here does anything, so a single process runs exactly
as before.
"""
import datetime
import os

import torch
import torch.distributed as dist

from minitf.errors import ConfigError
from minitf.trainer import process_group


def launched_world() -> int:
    """The number of processes torchrun started (``WORLD_SIZE``); 1 outside torchrun."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def is_main() -> bool:
    """Whether this process writes files and prints: rank 0 (or no torchrun at all)."""
    return os.environ.get("RANK", "0") == "0" if not dist.is_initialized() else dist.get_rank() == 0


def setup(experiment, train_cfg) -> bool:
    """Join torchrun's process group for a run of ``experiment`` with ``train_cfg``; returns
    whether this is a data-parallel run (world size > 1). Backend gloo for device "cpu", nccl
    for "cuda" (this process on GPU ``LOCAL_RANK``). Raises ``ConfigError`` (before any
    collective) when the experiment opts out (``data_parallel = False``), the global
    ``batch_size`` is smaller than the number of processes, or CUDA has fewer GPUs than the
    node's processes (checks that give the same answer on every process)."""
    world = launched_world()
    if world <= 1:
        return False
    if not getattr(experiment, "data_parallel", True):
        raise ConfigError(f"experiment {experiment.name!r} cannot train data-parallel (its data_parallel is "
                          "False); run it without torchrun")
    if train_cfg.batch_size < world:
        raise ConfigError(f"batch_size={train_cfg.batch_size} is the global batch, split over {world} processes: "
                          f"set --set batch_size={world} or larger")
    if not dist.is_initialized():
        backend = "gloo"
        if train_cfg.device == "cuda":
            per_node = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
            if per_node > torch.cuda.device_count():  # the same on every process of a node: rank 0 says it
                raise ConfigError(f"{per_node} processes per node but {torch.cuda.device_count()} GPU(s) visible; "
                                  "start at most one process per GPU (--nproc_per_node)")
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            backend = "nccl"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return True


def barrier() -> None:
    """Wait for every process of the group (no-op without one)."""
    if process_group()[1] > 1:
        dist.barrier()


def from_main(value):
    """Process 0's ``value`` on every process (e.g. a run folder named after the clock); the
    value itself without a group."""
    if process_group()[1] <= 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def refuse(what: str) -> None:
    """Raise ``ConfigError`` when running under torchrun with several processes: ``what``
    (a sweep, an ensemble) runs many models, which is Ray's job, not DDP's."""
    if launched_world() > 1:
        raise ConfigError(f"{what} runs many models and cannot run under torchrun; torchrun trains one model "
                          "on several processes. Start it with plain python (--workers W runs it on Ray)")
