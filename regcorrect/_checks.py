"""Input validation at the door.

Every public function of regcorrect checks its arguments with these helpers so that bad input
fails with a :class:`ValueError` / :class:`TypeError` that names the argument and shows the
expected and the received value, instead of an error from deep inside torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "check_tensor",
    "check_float",
    "check_rank",
    "check_finite",
    "check_spatial_dims",
    "check_displacement",
    "check_same_shape_and_device",
    "check_same_batch_and_spatial",
    "check_choice",
    "check_positive",
    "check_spatial_shape",
    "check_fits_module",
]


def as_scalar(value: object) -> object:
    """A numpy scalar or a one-element 0-d tensor as the Python number (or bool) it holds;
    anything else unchanged. Lets ``np.int64(2)`` or ``torch.tensor(20.0)`` pass the checks
    below like ``2`` and ``20.0``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Tensor) and value.ndim == 0 and not value.is_complex():
        return value.item()
    return value


def is_int(value: object) -> bool:
    """Whether ``value`` (after :func:`as_scalar`) is an integer, not a bool."""
    value = as_scalar(value)
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """Whether ``value`` (after :func:`as_scalar`) is a real number, not a bool."""
    value = as_scalar(value)
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_tensor(value: object, name: str) -> Tensor:
    """Raise ``TypeError`` unless ``value`` is a tensor; return it."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_float(value: Tensor, name: str) -> Tensor:
    """Raise ``TypeError`` unless ``value`` is a floating-point tensor."""
    check_tensor(value, name)
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    return value


def check_rank(value: Tensor, name: str, ranks: Sequence[int], layout: str = "") -> Tensor:
    """Raise ``ValueError`` unless ``value.ndim`` is one of ``ranks``."""
    check_tensor(value, name)
    if value.ndim not in ranks:
        expected = " or ".join(f"{r}-D" for r in ranks)
        hint = f" {layout}" if layout else ""
        raise ValueError(
            f"{name} must be a {expected} tensor{hint}, got shape {tuple(value.shape)}"
        )
    return value


def check_finite(value: Tensor, name: str) -> Tensor:
    """Raise ``ValueError`` if ``value`` holds NaN or infinity."""
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} must be finite, but it holds {bad} NaN/inf values")
    return value


def check_spatial_dims(spatial_dims: int, name: str = "spatial_dims") -> int:
    """``spatial_dims`` as an int if it is 2 or 3 (an integer, numpy ones included), else
    ``ValueError``."""
    if not is_int(spatial_dims) or as_scalar(spatial_dims) not in (2, 3):
        raise ValueError(f"{name} must be 2 or 3, got {spatial_dims!r}")
    return int(as_scalar(spatial_dims))  # type: ignore[call-overload]


def check_displacement(displacement: Tensor, name: str = "displacement") -> int:
    """Check a displacement field ``(B, N, *spatial)`` with ``N == len(spatial)`` in {2, 3}.

    Returns:
        The number of spatial dimensions ``N``.
    """
    check_float(displacement, name)
    check_rank(displacement, name, (4, 5), "(B, 2, H, W) or (B, 3, D, H, W)")
    n = displacement.ndim - 2
    if displacement.shape[1] != n:
        layout = "(B, 2, H, W)" if n == 2 else "(B, 3, D, H, W)"
        raise ValueError(
            f"{name} of a {n}-D field must have {n} channels {layout} "
            f"(one per spatial axis, in axis order), got shape {tuple(displacement.shape)}"
        )
    if 0 in displacement.shape[2:]:
        raise ValueError(
            f"{name} must have at least 1 sample along each spatial axis, got shape "
            f"{tuple(displacement.shape)}"
        )
    return n


def check_same_shape_and_device(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same shape and device."""
    check_same_device(**{name_a: a, name_b: b})
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_same_batch_and_spatial(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` (``(B, C, *spatial)``) have the same rank,
    batch size and spatial shape; their channel counts may differ."""
    if a.ndim != b.ndim or a.shape[0] != b.shape[0] or a.shape[2:] != b.shape[2:]:
        raise ValueError(
            f"{name_a} and {name_b} must share batch and spatial sizes (channels may differ), "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_same_device(**tensors: Tensor | None) -> None:
    """Raise ``ValueError`` unless the given tensors (``None`` skipped) are on one device.

    Example: ``check_same_device(image=image, displacement=displacement)``.
    """
    named = [(name, t.device) for name, t in tensors.items() if isinstance(t, Tensor)]
    if len({device for _, device in named}) > 1:
        where = ", ".join(f"{name} on {device}" for name, device in named)
        raise ValueError(f"tensors must be on one device, got {where}; move them with .to(device)")


def check_choice(value: object, name: str, choices: Sequence[object]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)!r}, got {value!r}")


def check_count(value: object, name: str, *, minimum: int = 0) -> int:
    """``value`` as an int if it is an integer ``>= minimum`` (not a bool; numpy integers and
    0-d integer tensors count), else ``ValueError`` naming ``name``."""
    if not is_int(value) or as_scalar(value) < minimum:  # type: ignore[operator]
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(as_scalar(value))  # type: ignore[call-overload]


def check_positive(value: float, name: str, *, strict: bool = True) -> float:
    """``value`` as a float if it is a finite real number (not a bool) ``> 0`` (or ``>= 0`` if
    not strict); else ``ValueError`` naming ``name``."""
    sign = "> 0" if strict else ">= 0"
    value = as_scalar(value)  # type: ignore[assignment]
    ok = is_real(value) and math.isfinite(value) and (value > 0 if strict else value >= 0)
    if not ok:
        raise ValueError(f"{name} must be {sign} (a finite number), got {value!r}")
    return float(value)


def check_spatial_shape(
    value: object, name: str, spatial_dims: int | None = None, hint: str = ""
) -> tuple[int, ...]:
    """``value`` as a tuple of ints ``>= 1`` (a spatial shape such as ``(H, W)``), with
    ``spatial_dims`` entries if given; else ``TypeError`` / ``ValueError`` naming ``name``."""
    if isinstance(value, (np.ndarray, Tensor)) and value.ndim == 1:
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(
            f"{name} must be a sequence of ints such as (H, W) or (D, H, W), got {value!r}"
        )
    entries = [as_scalar(size) for size in value]
    # integers, or floats with an integral value (8.0)
    whole = [
        int(size)  # type: ignore[call-overload]
        if is_int(size) or (isinstance(size, float) and size.is_integer())
        else None
        for size in entries
    ]
    if None in whole:
        raise TypeError(f"{name} must hold ints, got {tuple(value)!r}")
    shape = tuple(whole)  # type: ignore[arg-type]
    if spatial_dims is not None and len(shape) != spatial_dims:
        raise ValueError(
            f"{name} must have {spatial_dims} entries{hint}, got {len(shape)}: {shape}"
        )
    if not shape or min(shape) < 1:
        raise ValueError(f"{name} must hold sizes >= 1, got {shape}")
    return shape


def check_fits_module(value: Tensor, name: str, module: torch.nn.Module, label: str) -> None:
    """Raise unless ``value`` can enter ``module``: on its parameters' device (``ValueError``)
    and of their dtype, or any float dtype autocast casts while it is on (``TypeError``)."""
    weight = next(module.parameters(), None)
    if weight is None:
        return
    check_same_device(**{name: value, "weights": weight})
    allowed = {weight.dtype}
    try:
        autocast = bool(torch.is_autocast_enabled(value.device.type))
    except (TypeError, RuntimeError):  # torch < 2.4 / a device type without autocast
        autocast = False
    if autocast:  # autocast casts these for the convolutions
        allowed |= {torch.float32, torch.bfloat16, torch.float16}
    if value.dtype not in allowed:
        raise TypeError(
            f"{name} has dtype {value.dtype} but {label}'s weights are {weight.dtype}: convert "
            f"one of them ({name}.to({weight.dtype}) or the network .to({value.dtype}))"
        )
