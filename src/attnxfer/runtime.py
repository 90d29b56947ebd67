"""Where training runs: the device, the torchrun process group, mixed precision, the signals
that stop a run.

Launched by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set), processes join one group
(NCCL on GPUs, Gloo on CPUs); otherwise there is one process. Rank 0 logs and writes files.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from .errors import AttnxferError


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Dist:
    """Join the torchrun process group when launched by torchrun; pick the device."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise AttnxferError("run.device=cuda but no CUDA device is available; use run.device=cpu")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return Dist(rank, world, dev)


def all_reduce(values: list[float], d: Dist) -> list[float]:
    """Sums of ``values`` over all processes (as float64), on every process."""
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    if d.world > 1:
        dist.all_reduce(t)
    return t.tolist()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware: a GPU that supports it, or a
    CPU with AVX512-BF16 or AMX. Elsewhere oneDNN emulates bfloat16 and a matmul is many times
    slower than in float32 (14x at the CPU tier's sizes on an AVX2-only AMD EPYC)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu, private
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_amp(device: torch.device, amp: str) -> str:
    """``run.amp=auto`` becomes ``bf16`` where :func:`native_bf16` holds, else ``none``; any
    other value is kept."""
    if amp != "auto":
        return amp
    return "bf16" if native_bf16(device) else "none"


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """``run.amp``: none, bf16 (CPU and GPU) or fp16 (GPU) autocast; ``auto`` as
    :func:`resolve_amp` says."""
    amp = resolve_amp(device, amp)
    if amp == "none":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if dtype is None:
        raise AttnxferError(f"run.amp={amp!r} is unknown: use auto, none, bf16 or fp16")
    if dtype is torch.float16 and device.type != "cuda":
        raise AttnxferError("run.amp=fp16 needs a GPU; use run.amp=bf16 on CPU")
    return torch.autocast(device.type, dtype=dtype)


#: the signals that ask a run (or a sweep) to stop with a checkpoint of the step it reached:
#: a batch scheduler's before it preempts or cancels a job, and Ctrl-C
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def on_stop_signals(handler: Callable[[int, Any], None]):
    """Inside the block, :data:`STOP_SIGNALS` call ``handler(signum, frame)``; after it, the
    handlers there were are back. Only a main thread can take signals: elsewhere nothing
    changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, before in previous.items():
            signal.signal(s, before)
