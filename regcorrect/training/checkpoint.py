"""Checkpoints: atomic writes, safe loads, and the random-number-generator states.

A checkpoint is one ``torch.save`` file holding only tensors, numbers, strings, lists and dicts,
so it loads with ``torch.load(..., weights_only=True)`` (no pickled code runs). It is written to
a temporary file in the destination folder, flushed to disk (``fsync``) and moved over the
destination with ``os.replace``: a crash leaves either the old or the new file, never half of
one.

Layout (``format`` ``"regcorrect-checkpoint"``, ``version`` 1)::

    config       TrainingConfig.to_dict()
    image_size   [H, W] of the training slices
    spacing      [row, column] pixel size in mm of the training slices
    spacing_known
    model        TranslationModel.state_dict()   (every network)
    training     TranslationModel.training_state() (optimizers, schedulers, replay buffers, step)
    replay_buffers_by_rank   one replay-buffer state per process (multi-process runs)
    sampling     StepSampler.state_dict() plus the step
    rng          torch (CPU and CUDA), numpy and python ``random`` states
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
    "FORMAT",
    "VERSION",
]

FORMAT = "regcorrect-checkpoint"
VERSION = 1
_REQUIRED = ("config", "image_size", "model", "training", "sampling", "rng")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or not a regcorrect checkpoint."""


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file next to ``path``, ``fsync``, then ``os.replace``."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(obj, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it 0600; use the usual mode
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable where the platform allows it (not on Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write a checkpoint dict (see module doc) atomically; adds ``format`` and ``version``."""
    return atomic_torch_save({"format": FORMAT, "version": VERSION, **state}, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)`` and check its layout.

    Raises:
        CheckpointError: missing file, unreadable or corrupt file, or not a regcorrect
            checkpoint of a known version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist or is not a file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or foreign files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or not a torch file ({reason[:200]})"
        ) from None
    return check_checkpoint(state, repr(str(path)))


def check_checkpoint(state: object, label: str = "the checkpoint") -> dict[str, Any]:
    """``state`` if it is a regcorrect checkpoint dict of this version with every required
    entry, else :class:`CheckpointError` naming ``label``."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{label} is not a regcorrect checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{label} has version {state.get('version')!r}; this regcorrect reads version {VERSION}"
        )
    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        raise CheckpointError(f"{label} lacks {', '.join(missing)}")
    return state


def rng_state() -> dict[str, Any]:
    """The states of torch (CPU and every CUDA device), numpy and python ``random``, stored as
    tensors and lists only (``weights_only``-loadable)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate(
        (python_state["version"], tuple(python_state["internal"]), python_state["gauss_next"])
    )
