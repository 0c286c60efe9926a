"""Device choice and multi-process data-parallel training under ``torchrun``.

``torchrun --nproc_per_node=K`` starts ``K`` processes with ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` in their environment. :func:`setup` then initialises ``torch.distributed``
(``gloo`` on CPU, ``nccl`` on CUDA, one GPU per local rank). Every process builds the same model
from the same seed; rank 0's weights are broadcast once more to be sure. Each process trains on
its share of the global batch, and after every backward :func:`average_gradients` (installed as
``model.gradient_hook``) replaces each gradient by its mean over the processes (one
``all_reduce`` of the flattened gradients). The optimizers then take identical steps, so the
weights stay identical on every rank. Only rank 0 evaluates, logs and writes checkpoints.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

__all__ = [
    "Context",
    "StopRequest",
    "resolve_device",
    "setup",
    "average_gradients",
    "broadcast_module",
    "any_rank",
]


def resolve_device(request: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; ``"cuda"`` -> ``cuda:<local_rank>``.

    Raises:
        ValueError: ``"cuda"`` requested but not available.
    """
    if request == "auto":
        request = "cuda" if torch.cuda.is_available() else "cpu"
    if request == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                "device 'cuda' was requested (device: cuda, or the official key cuda: true), but "
                "CUDA is not available; set device: cpu or pass --device cpu"
            )
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    if request == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {request!r}")


@dataclass(frozen=True)
class Context:
    """Where this process runs and which share of the work it does.

    Attributes:
        rank, world_size, local_rank: from the ``torchrun`` environment (0, 1, 0 otherwise).
        device: this process's device.
        initialized_here: whether :func:`setup` created the process group (and
            :meth:`close` should destroy it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that evaluates, logs and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def close(self) -> None:
        """Destroy the process group if :func:`setup` created it."""
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def setup(device: str = "auto") -> Context:
    """Read the ``torchrun`` environment and initialise ``torch.distributed`` if needed.

    Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) this is a single-process run and nothing is
    initialised. An already initialised process group is reused.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    resolved = resolve_device(device, local_rank)
    if world_size <= 1:
        return Context(device=resolved)
    created = False
    if not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        created = True
    return Context(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        device=resolved,
        initialized_here=created,
    )


def average_gradients(parameters: Iterable[nn.Parameter], world_size: int) -> None:
    """Replace every existing gradient by its mean over the processes (``all_reduce`` SUM / K).

    Gradients are flattened into one buffer per dtype so there is one collective call each.
    Parameters without a gradient are skipped (the same ones on every rank, as every rank runs
    the same code).
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for grad in grads:
        by_dtype.setdefault(grad.dtype, []).append(grad)
    for group in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= world_size
        offset = 0
        for grad in group:
            count = grad.numel()
            grad.copy_(flat[offset : offset + count].view_as(grad))
            offset += count


@torch.no_grad()
def broadcast_module(module: nn.Module, source: int = 0) -> None:
    """Copy rank ``source``'s parameters and buffers to every process."""
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=source)


#: Signals that stop a run cleanly: Ctrl-C, and SIGTERM (what ``kill``, SLURM before its time
#: limit and ``docker stop`` send).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Ctrl-C / SIGTERM handling for a training loop: within ``with StopRequest(context) as
    stop:``, the first SIGINT or SIGTERM only sets a flag that :meth:`requested` reports after
    the current step (so the loop can save and stop cleanly); a second one raises
    ``KeyboardInterrupt`` at once. In
    multi-process runs :meth:`requested` shares the flag (an ``all_reduce`` MAX, a collective
    call every rank makes each step) so that every rank stops at the same step."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.flag = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True
        if self.context.is_main:
            tqdm.write(
                "regcorrect: stopping after this step (Ctrl-C again: stop now, no checkpoint)"
            )

    def requested(self) -> bool:
        return any_rank(self.flag, self.context)


def any_rank(flag: bool, context: Context) -> bool:
    """Whether ``flag`` is true on any rank: a collective call (``all_reduce`` MAX) that every
    rank must make in multi-process runs; ``flag`` itself in a single process."""
    if not context.distributed:
        return flag
    shared = torch.tensor([float(flag)], device=context.device)
    dist.all_reduce(shared, op=dist.ReduceOp.MAX)
    return bool(shared.item() > 0)
