"""Load generator weights trained with the official Reg-GAN code into :class:`ResnetGenerator`.

The official code (``Kid-Liet/Reg-GAN``, ``Model/CycleGan.py``) saves ``netG_A2B.pth``, the
state dict of its ResNet ``Generator``: the CycleGAN, Pix2Pix and RegGAN (NC+R) generators all
share it. Its layers are the ones of :class:`~regcorrect.backbones.cyclegan.ResnetGenerator` at
the default configuration (64 base channels, 2 downsamplings, 9 residual blocks): convolutions
with biases, instance norm without parameters, 3×3 transposed convolutions with
``output_padding=1`` for upsampling. Explicit ``ReflectionPad2d`` layers become
``padding_mode="reflect"`` convolutions, which compute the same thing, so only the key names
change. Two key layouts exist:

* ``"split"`` (the Reg-GAN repository): ``model_head.<i>`` (stem and downsamplings),
  ``model_body.<b>.conv_block.<j>`` (residual blocks), ``model_tail.<i>`` (upsamplings, output).
* ``"sequential"`` (the PyTorch-CycleGAN code it descends from): one ``nn.Sequential``,
  ``model.<i>`` for plain convolutions and ``model.<i>.conv_block.<j>`` for residual blocks.

Both are recognised; a ``module.`` prefix left by ``nn.DataParallel`` is removed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch
from torch import Tensor

from .cyclegan import ResnetGenerator

__all__ = ["convert_official_generator", "load_official_generator"]

_PARAMETERS = ("weight", "bias")
_RESIDUAL_KEY = re.compile(r"^(model|model_body)\.(\d+)\.conv_block\.")
_PLAIN_KEY = re.compile(r"^(model|model_head|model_tail)\.(\d+)\.weight$")


def _indices(keys: list[str], pattern: re.Pattern[str], prefix: str) -> list[int]:
    """Sorted distinct layer indices of the keys matching ``pattern`` under ``prefix``."""
    found = {int(match[2]) for key in keys if (match := pattern.match(key)) and match[1] == prefix}
    return sorted(found)


def _layout(keys: list[str]) -> str:
    if any(key.startswith(("model_head.", "model_body.", "model_tail.")) for key in keys):
        return "split"
    if any(key.startswith("model.") for key in keys):
        return "sequential"
    raise ValueError(
        "state_dict is not an official Reg-GAN generator: expected keys starting with "
        f"'model_head.'/'model_body.'/'model_tail.' or 'model.', got {sorted(keys)[:6]}"
    )


def _key_map(layout: str, num_downsamplings: int, num_residual_blocks: int) -> dict[str, str]:
    """Official layer name → :class:`ResnetGenerator` layer name (without ``.weight``/``.bias``).

    Every official stage is ``[pad,] conv, norm, ReLU``, so convolutions sit 3 indices apart.
    """
    if layout == "split":
        head, body, tail = "model_head.", "model_body.", "model_tail."
        residual_start = upsampling_start = 0
    else:
        head = body = tail = "model."
        residual_start = 3 * num_downsamplings + 4  # after pad, stem (3) and downsamplings
        upsampling_start = residual_start + num_residual_blocks
    mapping = {f"{head}1": "stem.conv"}
    for level in range(num_downsamplings):
        mapping[f"{head}{4 + 3 * level}"] = f"downsampling.{level}.conv"
    for block in range(num_residual_blocks):
        official = f"{body}{residual_start + block}.conv_block"
        mapping[f"{official}.1"] = f"residual_blocks.{block}.conv1"  # after ReflectionPad2d
        mapping[f"{official}.5"] = f"residual_blocks.{block}.conv2"  # after norm, ReLU, pad
    for level in range(num_downsamplings):
        mapping[f"{tail}{upsampling_start + 3 * level}"] = f"upsampling.{level}.conv"
    mapping[f"{tail}{upsampling_start + 3 * num_downsamplings + 1}"] = "output.conv"
    return mapping


def _list(keys: set[str]) -> str:
    return ", ".join(sorted(keys))


def convert_official_generator(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename the official Reg-GAN generator's weights to :class:`ResnetGenerator` keys.

    The number of downsamplings and residual blocks is read from the keys, so reduced official
    generators convert too. Tensors are passed through unchanged (same storage, dtype, device).

    Args:
        state_dict: the content of an official ``netG_A2B.pth``, e.g.
            ``torch.load(path, map_location="cpu", weights_only=True)``.

    Returns:
        A state dict for ``ResnetGenerator(in_channels=..., out_channels=..., ...)`` with keys
        ``stem.conv.*``, ``downsampling.<k>.conv.*``, ``residual_blocks.<b>.conv1.*`` /
        ``conv2.*``, ``upsampling.<k>.conv.*``, ``output.conv.*``.

    Raises:
        TypeError: if ``state_dict`` is not a mapping of names to tensors.
        ValueError: if keys are unknown or missing for the inferred layout; the message lists them.

    Example:
        >>> official = torch.load("netG_A2B.pth", map_location="cpu", weights_only=True)  # doctest: +SKIP
        >>> generator = ResnetGenerator()  # 1 -> 1 channels, as in the official configs
        >>> generator.load_state_dict(convert_official_generator(official))  # doctest: +SKIP
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"state_dict must be a mapping of names to tensors, got {type(state_dict).__name__}"
        )
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise TypeError(
                "state_dict must map str names to tensors, got "
                f"{type(key).__name__} -> {type(value).__name__} for {key!r}"
            )
    entries = dict(state_dict)
    if entries and all(key.startswith("module.") for key in entries):
        entries = {key.removeprefix("module."): value for key, value in entries.items()}
    keys = list(entries)
    layout = _layout(keys)

    if layout == "split":
        num_downsamplings = max(len(_indices(keys, _PLAIN_KEY, "model_head")) - 1, 0)
        num_residual_blocks = len(_indices(keys, _RESIDUAL_KEY, "model_body"))
    else:
        plain_convolutions = len(_indices(keys, _PLAIN_KEY, "model"))  # stem, 2n scalings, output
        num_downsamplings = max((plain_convolutions - 2) // 2, 0)
        num_residual_blocks = len(_indices(keys, _RESIDUAL_KEY, "model"))

    mapping = _key_map(layout, num_downsamplings, num_residual_blocks)
    expected = {f"{official}.{name}" for official in mapping for name in _PARAMETERS}
    unexpected, missing = set(keys) - expected, expected - set(keys)
    if unexpected or missing:
        raise ValueError(
            f"state_dict does not match an official Reg-GAN generator ({layout!r} layout, "
            f"{num_downsamplings} downsamplings, {num_residual_blocks} residual blocks): "
            f"unexpected keys [{_list(unexpected)}]; missing keys [{_list(missing)}]"
        )
    return {
        f"{ours}.{name}": entries[f"{official}.{name}"]
        for official, ours in mapping.items()
        for name in _PARAMETERS
    }


def _inferred_options(converted: Mapping[str, Tensor]) -> dict[str, int]:
    """The :class:`ResnetGenerator` keyword arguments a converted state dict was trained with."""
    stem, output = converted["stem.conv.weight"], converted["output.conv.weight"]
    return {
        "in_channels": int(stem.shape[1]),
        "out_channels": int(output.shape[0]),
        "base_channels": int(stem.shape[0]),
        "num_residual_blocks": sum(
            key.endswith(".conv1.weight") for key in converted if key.startswith("residual_blocks")
        ),
        "num_downsamplings": sum(
            key.endswith(".weight") for key in converted if key.startswith("downsampling.")
        ),
    }


def load_official_generator(
    path: str | os.PathLike[str], **generator_kwargs: int
) -> ResnetGenerator:
    """Build a :class:`ResnetGenerator` holding the weights of an official ``netG_A2B.pth``.

    Channels, width, residual blocks and downsamplings are inferred from the weights; keyword
    arguments override the inferred values (a value the weights contradict raises ``ValueError``).

    Args:
        path: file written by ``torch.save(netG_A2B.state_dict(), path)`` in the official code.
        **generator_kwargs: :class:`ResnetGenerator` keyword arguments.

    Returns:
        The generator (training mode; instance norm without running statistics behaves the same
        in both modes). It maps ``(B, C_in, H, W)`` images in ``[-1, 1]`` to ``(B, C_out, H, W)``
        in ``[-1, 1]`` — the official data pipeline normalises images to ``[-1, 1]`` as well.

    Raises:
        TypeError: if the file does not hold a state dict.
        ValueError: if its keys or shapes do not fit (the message lists them).

    Example:
        >>> generator = load_official_generator("output/Cyc/NC+R/netG_A2B.pth")  # doctest: +SKIP
        >>> with torch.no_grad():  # doctest: +SKIP
        ...     t2 = generator(t1)  # t1: (B, 1, 256, 256) in [-1, 1]
    """
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(loaded, Mapping):
        raise TypeError(
            f"{os.fspath(path)!r} must hold a state dict (a mapping of names to tensors), "
            f"got {type(loaded).__name__}"
        )
    converted = convert_official_generator(loaded)
    options = _inferred_options(converted) | generator_kwargs
    generator = ResnetGenerator(**options)
    expected = generator.state_dict()
    unexpected, missing = set(converted) - set(expected), set(expected) - set(converted)
    mismatched = {
        f"{key}: weights {tuple(converted[key].shape)} vs generator {tuple(expected[key].shape)}"
        for key in set(expected) & set(converted)
        if converted[key].shape != expected[key].shape
    }
    if unexpected or missing or mismatched:
        raise ValueError(
            f"weights in {os.fspath(path)!r} do not fit ResnetGenerator({options}): "
            f"unexpected keys [{_list(unexpected)}]; missing keys [{_list(missing)}]; "
            f"shape mismatches [{_list(mismatched)}]"
        )
    generator.load_state_dict(converted)
    return generator
