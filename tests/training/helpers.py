"""Tiny training settings shared by the training, CLI and example tests (32×32 slices, narrow
networks, a handful of steps)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from regcorrect.training import Trainer, TrainingConfig, TrainingData, load_training_data

#: Narrow CycleGAN and RegUNet widths: one step takes a few tens of milliseconds at 32×32.
TINY_NETWORKS: dict[str, Any] = {
    "backbone": {"base_channels": 8, "num_residual_blocks": 1, "discriminator_channels": 8},
    "registration": {"channels": [8, 16, 16, 16]},
}


def tiny_settings(out_dir: str | Path | None, **changes: Any) -> dict[str, Any]:
    """Config values of a tiny run on the bundled data at 7 mm, 32×32 (as a plain dict)."""
    values: dict[str, Any] = {
        **TINY_NETWORKS,
        "spacing": 7.0,
        "size": 32,
        "noise_level": 3,
        "steps": 4,
        "batch_size": 2,
        "eval_every": 2,
        "eval_batch_size": 27,
        "checkpoint_every": 2,
        "log_every": 1,
        "replay_buffer_size": 3,
        "device": "cpu",
        "tensorboard": False,
        "out_dir": None if out_dir is None else str(out_dir),
    }
    values.update(changes)
    return values


def tiny_config(out_dir: str | Path | None, **changes: Any) -> TrainingConfig:
    """:func:`tiny_settings` as a :class:`TrainingConfig`."""
    return TrainingConfig(**tiny_settings(out_dir, **changes))


def weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Whether two models hold bit-identical tensors under the same names."""
    first, second = a.state_dict(), b.state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@lru_cache(maxsize=1)
def tiny_data() -> TrainingData:
    """The slices of :func:`tiny_config` (110 train / 27 test at 32×32), loaded once."""
    return load_training_data(tiny_config(None))


def tiny_trainer(out_dir: str | Path | None, **changes: Any) -> Trainer:
    """A :class:`Trainer` of :func:`tiny_config` on :func:`tiny_data`, without progress bars."""
    return Trainer(tiny_config(out_dir, **changes), data=tiny_data(), progress=False)


def tiny_resume(checkpoint: str | Path, config: TrainingConfig | None = None) -> Trainer:
    """``Trainer.resume`` on :func:`tiny_data`, without progress bars."""
    return Trainer.resume(checkpoint, config, data=tiny_data(), progress=False)
