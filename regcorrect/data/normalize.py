"""Intensity normalisation of MR images to the ``[-1, 1]`` range used throughout regcorrect.

Every image that enters a translation network is expected in ``[-1, 1]`` with the background
(outside the body or brain) at exactly ``-1`` — the convention of the official RegGAN code, whose
metrics and masks treat ``x == -1`` as background.
"""

from __future__ import annotations

from typing import Literal

import torch
from einops import rearrange
from torch import Tensor

from regcorrect._checks import (
    as_scalar,
    check_choice,
    check_finite,
    check_float,
    check_same_shape_and_device,
    check_tensor,
    is_real,
)

__all__ = ["normalize_intensity"]

NormalizeMethod = Literal["minmax", "percentile"]


def _check_percentiles(percentiles: tuple[float, float]) -> tuple[float, float]:
    if isinstance(percentiles, (tuple, list)):
        percentiles = tuple(as_scalar(p) for p in percentiles)
    if (
        not isinstance(percentiles, tuple)
        or len(percentiles) != 2
        or not all(is_real(p) for p in percentiles)
    ):
        raise ValueError(f"percentiles must be a pair (low, high) of numbers, got {percentiles!r}")
    low, high = float(percentiles[0]), float(percentiles[1])
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles!r}")
    return low, high


def _bounds(
    values: Tensor, *, method: NormalizeMethod, percentiles: tuple[float, float]
) -> tuple[Tensor, Tensor]:
    """Lower and upper intensity bounds of a 1-D tensor of foreground values."""
    if method == "minmax":
        return values.min(), values.max()
    low, high = percentiles
    # Linear interpolation between order statistics, as numpy.percentile; unlike torch.quantile
    # it has no input-size limit (a whole MR volume can exceed it).
    ordered = torch.sort(values.double()).values
    positions = torch.tensor([low, high], dtype=torch.float64) / 100.0 * (ordered.numel() - 1)
    below = positions.floor().long()
    above = positions.ceil().long()
    weight = positions - below
    bounds = ordered[below] * (1 - weight) + ordered[above] * weight
    return bounds[0].to(values.dtype), bounds[1].to(values.dtype)


def _normalize_one(
    image: Tensor, foreground: Tensor, *, method: NormalizeMethod, percentiles: tuple[float, float]
) -> Tensor:
    out = torch.full_like(image, -1.0)
    if not bool(foreground.any()):
        return out
    values = image[foreground]
    low, high = _bounds(values, method=method, percentiles=percentiles)
    if bool(high > low):
        scaled = (values.clamp(low, high) - low) / (high - low) * 2.0 - 1.0
    else:  # constant foreground: keep it distinct from the background
        scaled = torch.ones_like(values)
    out[foreground] = scaled
    return out


def normalize_intensity(
    image: Tensor,
    *,
    method: NormalizeMethod = "minmax",
    percentiles: tuple[float, float] = (0.5, 99.5),
    mask: Tensor | None = None,
    per_sample: bool = False,
) -> Tensor:
    r"""Map foreground intensities to ``[-1, 1]`` and set the background to exactly ``-1``.

    The foreground is ``mask`` when given, otherwise every non-zero voxel (the usual convention of
    skull-stripped MRI, where the background is stored as 0). With bounds :math:`(l, h)` computed
    over the foreground only,

    .. math::
        y = 2 \, \frac{\operatorname{clip}(x, l, h) - l}{h - l} - 1 \quad \text{(foreground)},
        \qquad y = -1 \quad \text{(background)}.

    - ``"minmax"``: :math:`l, h` are the foreground minimum and maximum.
    - ``"percentile"``: :math:`l, h` are the ``percentiles`` of the foreground (linear
      interpolation, as ``numpy.percentile``); values beyond them are clipped. This is robust to a
      few hot voxels.

    A foreground of one constant value maps to ``1`` (not ``-1``) so that it stays distinguishable
    from the background. Note that the darkest foreground voxel maps to ``-1`` too; use ``mask``
    (not ``y > -1``) to recover the foreground afterwards.

    Args:
        image: real-valued tensor of any shape, e.g. a slice ``(H, W)``, a batch ``(N, 1, H, W)``
            or a volume ``(D, H, W)``; any range.
        method: ``"minmax"`` or ``"percentile"``.
        percentiles: ``(low, high)`` in ``[0, 100]`` with ``low < high``; only for
            ``"percentile"``.
        mask: optional boolean foreground of the same shape as ``image``.
        per_sample: compute the bounds separately for each ``image[i]`` along the first axis
            (e.g. per slice of a batch) instead of once over the whole tensor (e.g. a volume).

    Returns:
        Tensor of the shape and dtype of ``image`` with values in ``[-1, 1]`` and exactly ``-1``
        outside the foreground.

    Raises:
        TypeError: ``image`` is not a floating-point tensor or ``mask`` is not boolean.
        ValueError: unknown ``method``, bad ``percentiles``, non-finite ``image``, or ``mask`` of
            another shape.

    Example:
        >>> x = torch.tensor([[0.0, 10.0], [20.0, 30.0]])
        >>> normalize_intensity(x)
        tensor([[-1., -1.],
                [ 0.,  1.]])
    """
    check_float(image, "image")
    check_finite(image, "image")
    check_choice(method, "method", ("minmax", "percentile"))
    percentiles = _check_percentiles(percentiles)
    if mask is None:
        foreground = image != 0
    else:
        check_tensor(mask, "mask")
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a boolean tensor, got dtype {mask.dtype}")
        check_same_shape_and_device(image, mask, "image", "mask")
        foreground = mask
    if not isinstance(per_sample, bool):
        raise TypeError(f"per_sample must be a bool, got {type(per_sample).__name__}")
    if not per_sample or image.ndim == 0:
        return _normalize_one(image, foreground, method=method, percentiles=percentiles)
    if image.shape[0] == 0:  # no sample: nothing to normalise
        return image.clone()
    flat = rearrange(image, "n ... -> n (...)")
    flat_foreground = rearrange(foreground, "n ... -> n (...)")
    rows = [
        _normalize_one(row, fg, method=method, percentiles=percentiles)
        for row, fg in zip(flat, flat_foreground, strict=True)
    ]
    return torch.stack(rows).view_as(image)
