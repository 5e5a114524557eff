"""Processes of a run: the process group under torchrun, each rank's device, its peak memory.

`farmer.train` calls `setup` once per run; DDP and FSDP (farmer/sharding.py)
both build on the group it joins. Memory is measured per process: CUDA's
max allocated on a GPU, the resident-set high-water mark (VmHWM) on a CPU.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist


@dataclass
class Dist:
    """This process's place in the run: rank, world size, device, and whether it created the group."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str, fsdp: bool = False) -> Dist:
    """Pick this rank's device (cuda:LOCAL_RANK under torchrun) and join the process group.

    Under torchrun (WORLD_SIZE > 1) the group is gloo on CPU, nccl on GPU. With
    `fsdp` in one process without torchrun, a group of one over an in-process
    HashStore, since FSDP2 needs a group even then. A group that already exists
    is used as it is and left up afterwards (owns_group False)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if cuda and local >= torch.cuda.device_count():
        raise ValueError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s): start at most that many "
                         f"processes per node, or pass --device cpu")
    dev = torch.device(f"cuda:{local}" if cuda else "cpu") if device in ("auto", "cuda") else torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world == 1 and not (fsdp and not dist.is_initialized()):
        return Dist(device=dev)
    owns = not dist.is_initialized()
    if owns and world == 1 and "MASTER_ADDR" not in os.environ:   # --fsdp without torchrun: a group of one
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", store=dist.HashStore(),
                                rank=0, world_size=1)
    elif owns:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), dev, owns)


def teardown(dd: Dist, ok: bool = True) -> None:
    """Leave the run's process group, if this run created it; every rank calls it at the end of a run.

    On success the ranks first meet at a barrier, so no rank closes its
    connections while another is still finishing a collective. Then the group
    is destroyed. What outlives that under FSDP: gloo's worker threads
    (`gloo_tcp_loop` and two `pt_gloo_runloop` per group) stop only when the
    backend object is freed, and destroy_process_group does not free it while
    FSDP2/DTensor state still refers to it (measured on torch 2.13: the threads
    survive `destroy_process_group`, the deletion of the sharded model and its
    mesh, and a garbage collection). Left running into interpreter shutdown,
    they made about one `torchrun ... --fsdp` job in six abort after its work
    was done ("terminate called without an active exception", exit −6). So we
    also drop DTensor's sharding caches (which hold the mesh) and collect; and
    the command line ends a torchrun process without running C++ static
    destructors (farmer.cli.main), which is where the abort happened.
    On failure (ok=False) there is no barrier: another rank may never reach it.
    """
    if not dd.owns_group or not dist.is_initialized():
        return
    if ok and dd.world > 1:
        dist.barrier()
    dist.destroy_process_group()
    try:                                                              # private torch API: best effort
        from torch.distributed.tensor.debug import _clear_sharding_prop_cache
        _clear_sharding_prop_cache()
    except (ImportError, AttributeError, RuntimeError):
        pass
    import gc
    gc.collect()


def peak_memory_bytes(device: torch.device) -> int:
    """This process's peak memory: CUDA's max allocated on a GPU, else the resident-set high-water mark (VmHWM)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource                                                   # not Linux: ru_maxrss (KiB on Linux, B on macOS)
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def peak_per_rank(dd: Dist) -> list[int]:
    """Every rank's peak_memory_bytes, on every rank (a collective under torchrun)."""
    mine = torch.tensor([peak_memory_bytes(dd.device)], dtype=torch.int64, device=dd.device)
    if dd.world == 1:
        return [int(mine)]
    every = [torch.zeros_like(mine) for _ in range(dd.world)]
    dist.all_gather(every, mine)
    return [int(t) for t in every]
