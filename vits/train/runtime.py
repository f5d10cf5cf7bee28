"""Where a training process runs: device, rank, the torchrun process group, and graceful-stop signals."""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from vits.errors import KoeError


@dataclass
class Runtime:
    """Where this process runs: rank, world size, device and process groups."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")
    distributed: bool = False
    control_group: object = None  # a gloo group for cheap CPU-side flags (stop requests)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_runtime(device: str | None = None) -> Runtime:
    """Set up the device and, under torchrun (WORLD_SIZE set), the process group.

    NCCL on CUDA (not Windows), gloo on CPU and Windows. Returns a Runtime.
    Raises KoeError when CUDA is asked for but not available.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if device in (None, "", "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise KoeError(f"device {device!r} requested but CUDA is not available",
                           fix="use --device cpu, or install a CUDA build of PyTorch")
        dev = torch.device("cuda", local_rank) if (world > 1 or device == "cuda") else torch.device(device)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    rt = Runtime(rank, world, local_rank, local_world, dev, world > 1)
    if rt.distributed and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" and sys.platform != "win32" else "gloo"
        # A rank that dies makes torchrun stop the others; the timeout only bounds a true deadlock.
        dist.init_process_group(backend, timeout=timedelta(minutes=30),
                                device_id=dev if backend == "nccl" else None)
        rt.control_group = dist.new_group(backend="gloo") if backend == "nccl" else dist.group.WORLD
    return rt


def shutdown_runtime(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        dist.destroy_process_group()


class StopRequest:
    """SIGTERM/SIGINT set a flag; the loop finishes its step, saves and exits. A second SIGINT aborts."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def _handle(self, signum, _frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. called from a UI worker): no signal handling
                pass
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def stop_requested(rt: Runtime, stop: StopRequest) -> bool:
    """True on every rank once any rank got SIGTERM/SIGINT (one tiny CPU all-reduce per step)."""
    if not rt.distributed:
        return stop.requested
    flag = torch.tensor([1 if stop.requested else 0], dtype=torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=rt.control_group)
    return bool(flag.item())
