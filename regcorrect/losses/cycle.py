"""Cycle-consistency loss (Eq. 3 of the RegGAN paper, Zhu et al. 2017)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_float, check_same_shape_and_device

__all__ = ["cycle_loss", "CycleLoss"]


def cycle_loss(reconstructed: Tensor, original: Tensor) -> Tensor:
    """L1 distance between an image and its round trip ``F(G(x))``.

    Args:
        reconstructed: ``F(G(x))``, shape ``(B, C, *spatial)``.
        original: ``x``, same shape.

    Returns:
        Scalar ``mean(|reconstructed - original|)``, computed in float32 (float64 for float64
        inputs).

    Example:
        >>> import torch
        >>> cycle_loss(torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4))
        tensor(1.)
    """
    check_float(reconstructed, "reconstructed")
    check_float(original, "original")
    check_same_shape_and_device(reconstructed, original, "reconstructed", "original")
    dtype = torch.promote_types(
        torch.promote_types(reconstructed.dtype, original.dtype), torch.float32
    )
    return (reconstructed.to(dtype) - original.to(dtype)).abs().mean()


class CycleLoss(nn.Module):
    """Module form of :func:`cycle_loss`."""

    def forward(self, reconstructed: Tensor, original: Tensor) -> Tensor:
        return cycle_loss(reconstructed, original)
