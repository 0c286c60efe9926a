"""Correction loss (Eq. 7 of the RegGAN paper): L1 between the noisy target and the registered
translation ``G(x) ∘ R(G(x), ỹ)``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_float, check_same_device, check_same_shape_and_device, check_tensor

__all__ = ["correction_loss", "CorrectionLoss"]


def correction_loss(registered: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean absolute error ``E[|ỹ - G(x) ∘ R(G(x), ỹ)|]`` (Eq. 7).

    Args:
        registered: the translation warped onto the target, ``(B, C, *spatial)``.
        target: the (possibly misaligned) target ``ỹ``, same shape.
        mask: optional weights/boolean mask broadcastable to ``target`` (e.g. ``(B, 1, H, W)``);
            the loss is then ``sum(mask * |diff|) / sum(mask * 1)`` over the broadcast shape.

    Returns:
        Scalar tensor, computed in float32 for half/bfloat16/float32 inputs and in float64 for
        float64 inputs (never below float32, never downcast).

    Example:
        >>> import torch
        >>> correction_loss(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2))
        tensor(1.)
    """
    check_float(registered, "registered")
    check_float(target, "target")
    check_same_shape_and_device(registered, target, "registered", "target")
    dtype = torch.promote_types(torch.promote_types(registered.dtype, target.dtype), torch.float32)
    difference = (registered.to(dtype) - target.to(dtype)).abs()
    if mask is None:
        return difference.mean()
    check_tensor(mask, "mask")
    check_same_device(target=target, mask=mask)
    if mask.ndim != target.ndim:
        raise ValueError(
            f"mask must have the rank of target {tuple(target.shape)} (e.g. (B, 1, *spatial)), "
            f"got shape {tuple(mask.shape)}"
        )
    try:
        weights = mask.to(dtype).expand_as(difference)
    except RuntimeError:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to target {tuple(target.shape)}"
        ) from None
    return (difference * weights).sum() / weights.sum().clamp_min(1e-8)


class CorrectionLoss(nn.Module):
    """Module form of :func:`correction_loss`."""

    def forward(self, registered: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return correction_loss(registered, target, mask)
