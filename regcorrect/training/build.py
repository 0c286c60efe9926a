"""Models from configs and checkpoints.

``build_from_config`` turns a :class:`TrainingConfig` into the
:class:`~regcorrect.TranslationModel` it describes; ``load_model`` rebuilds a trained model from
a checkpoint for inference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..modes import TranslationModel, build_model
from .checkpoint import check_checkpoint, load_checkpoint
from .config import ConfigError, TrainingConfig

__all__ = ["build_from_config", "load_model", "checkpoint_path", "CHECKPOINT_NAME"]

#: Name of the checkpoint file in a run's ``out_dir``.
CHECKPOINT_NAME = "checkpoint.pt"


def build_from_config(
    config: TrainingConfig,
    image_size: tuple[int, int],
    *,
    device: str | torch.device | None = None,
    total_steps: int | None = None,
    decay_start: int | None = None,
) -> TranslationModel:
    """The :class:`~regcorrect.TranslationModel` a config describes, for ``(H, W)`` slices.

    Raises:
        ConfigError: a ``backbone`` / ``registration`` option the networks do not accept, or a
            value they reject.
    """
    if not isinstance(config, TrainingConfig):
        raise TypeError(f"config must be a TrainingConfig, got {type(config).__name__}")
    options = dict(config.backbone)
    for key in ("adversarial_weight", "cycle_weight"):
        value = getattr(config, key)
        if value is None or (key == "cycle_weight" and config.mode.startswith("pix2pix")):
            continue  # Pix2Pix has no cycle
        if key in options:
            raise ConfigError(f"{key} is given both at the top level and in backbone; give one")
        options[key] = float(value)
    registration, initial_alignment = None, None  # R's options are ignored without R
    if config.mode.endswith("+r"):
        initial_alignment = config.initial_alignment
        registration = dict(config.registration)
        if "channels" in registration:
            registration["channels"] = tuple(registration["channels"])
    try:
        return build_model(
            config.method,
            config.mode,
            image_size=image_size,
            device=device,
            amp=config.amp,
            gan_mode=config.gan_mode,
            learning_rate=config.lr,
            betas=(float(config.betas[0]), float(config.betas[1])),
            correction_weight=config.correction_weight,
            smoothness_weight=config.smoothness_weight,
            centering_weight=config.centering_weight,
            initial_alignment=initial_alignment,
            ema_decay=config.ema_decay,
            registration=registration,
            replay_buffer_size=config.replay_buffer_size,
            total_steps=total_steps if decay_start is not None else None,
            decay_start=decay_start,
            seed=config.seed,
            **options,
        )
    except TypeError as error:  # an option the backbone or RegUNet does not take
        raise ConfigError(f"invalid backbone/registration option: {error}") from None
    except ValueError as error:  # a value the backbone, RegUNet or the model rejects
        raise ConfigError(f"cannot build the model from this config: {error}") from None


def load_model(
    checkpoint: str | Path | dict[str, Any], device: str | torch.device = "cpu"
) -> tuple[TranslationModel, dict[str, Any]]:
    """Rebuild the model of a checkpoint (for inference) and return it with the checkpoint.

    Args:
        checkpoint: a checkpoint file, a run folder holding ``checkpoint.pt``, or a loaded dict.
        device: where to put the model.
    """
    state = (
        check_checkpoint(checkpoint, "the checkpoint dict")
        if isinstance(checkpoint, dict)
        else load_checkpoint(checkpoint_path(checkpoint))
    )
    config = TrainingConfig.from_dict(state["config"])
    model = build_from_config(config, tuple(state["image_size"]), device=device)
    model.load_state_dict(state["model"])
    model.step = int(state["training"]["step"])
    model.eval()
    return model, state


def checkpoint_path(path: str | Path) -> Path:
    """``path`` itself, or ``path/checkpoint.pt`` when ``path`` is a folder."""
    path = Path(path)
    return path / CHECKPOINT_NAME if path.is_dir() else path
