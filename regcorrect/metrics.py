"""Evaluation metrics of the RegGAN paper: NMAE, PSNR and SSIM, background excluded.

Images are in ``[-1, 1]`` with background ``-1`` (the paper's and the official code's
convention). Every metric is computed per image and returns ``(B,)`` values
(``reduction="none"``) or their mean (``reduction="mean"``, default). Definitions:

* **NMAE** = ``mean(|prediction - target|) / 2`` over foreground pixels (the mean absolute error
  normalised by the value range 2).
* **PSNR** = ``10 log10(1 / MSE)`` with ``MSE`` the mean squared error of ``(v + 1) / 2``
  (values in ``[0, 1]``, peak 1) over foreground pixels; 100 dB when ``MSE < 1e-10`` (as the
  official code).
* **SSIM** = the mean SSIM of Wang et al. 2004 exactly as ``skimage.metrics.structural_similarity``
  computes it with its defaults and ``data_range=2`` (the official code's call): a 7×7 (7×7×7
  in 3D) uniform window, ``K1 = 0.01``, ``K2 = 0.03``, sample covariances (``N - 1``), averaged
  over the pixels whose window lies inside the image. With ``mask`` the SSIM map is averaged over
  the foreground pixels of that region instead.

Foreground = the explicit ``mask`` if given, else the target pixels ``!= background`` (``-1``).
Channels are averaged together (one value per batch item).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import (
    as_scalar,
    check_choice,
    check_float,
    check_rank,
    check_same_device,
    check_same_shape_and_device,
    check_tensor,
    is_int,
    is_real,
)

__all__ = ["nmae", "psnr", "ssim", "foreground_mask"]


def _check_pair(prediction: Tensor, target: Tensor) -> None:
    check_float(prediction, "prediction")
    check_float(target, "target")
    check_rank(prediction, "prediction", (4, 5), "(B, C, H, W) or (B, C, D, H, W)")
    check_same_shape_and_device(prediction, target, "prediction", "target")


def foreground_mask(target: Tensor, mask: Tensor | None = None, background: float = -1.0) -> Tensor:
    """Boolean foreground of ``target`` ``(B, C, *spatial)``: ``mask`` broadcast, or ``target != background``."""
    check_tensor(target, "target")
    background = as_scalar(background)  # type: ignore[assignment]
    if not is_real(background):
        raise TypeError(f"background must be a number, got {background!r}")
    if mask is None:
        return target != background
    check_tensor(mask, "mask")
    check_same_device(target=target, mask=mask)
    if mask.ndim != target.ndim:
        raise ValueError(
            f"mask must have the rank of target {tuple(target.shape)}, got {tuple(mask.shape)}"
        )
    try:
        return mask.bool().expand_as(target)
    except RuntimeError:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to {tuple(target.shape)}"
        ) from None


def _reduce(values: Tensor, reduction: str) -> Tensor:
    check_choice(reduction, "reduction", ("mean", "none"))
    return values.mean() if reduction == "mean" else values


def _masked_mean(values: Tensor, weights: Tensor) -> Tensor:
    values, weights = values.flatten(1), weights.flatten(1).to(values.dtype)
    count = weights.sum(1)
    if bool((count == 0).any()):
        raise ValueError("an image has no foreground pixel: pass a mask or check the background")
    return (values * weights).sum(1) / count


def nmae(
    prediction: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    *,
    background: float = -1.0,
    reduction: str = "mean",
) -> Tensor:
    """Normalised mean absolute error over the foreground: ``mean|ŷ - y| / 2``.

    Args:
        prediction: ``(B, C, H, W)`` (or 3D) in ``[-1, 1]``.
        target: same shape.
        mask: optional foreground, broadcastable to ``target``.
        background: background value of ``target`` (when ``mask`` is None).
        reduction: ``"mean"`` or ``"none"`` (``(B,)``).

    Example:
        >>> y = torch.zeros(1, 1, 4, 4)
        >>> nmae(y + 0.2, y)
        tensor(0.1000, dtype=torch.float64)
    """
    _check_pair(prediction, target)
    fg = foreground_mask(target, mask, background)
    error = (prediction.double() - target.double()).abs()
    return _reduce(_masked_mean(error, fg) / 2.0, reduction)


def psnr(
    prediction: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    *,
    background: float = -1.0,
    reduction: str = "mean",
) -> Tensor:
    """Peak signal-to-noise ratio (dB) of ``(v + 1) / 2`` over the foreground, peak 1.

    Args: see :func:`nmae`.

    Example:
        >>> y = torch.zeros(1, 1, 4, 4)
        >>> psnr(y + 0.2, y)  # error 0.1 after rescaling: 20 dB
        tensor(20.0000, dtype=torch.float64)
    """
    _check_pair(prediction, target)
    fg = foreground_mask(target, mask, background)
    squared = ((prediction.double() - target.double()) / 2.0).square()
    mse = _masked_mean(squared, fg)
    values = torch.where(mse < 1e-10, torch.full_like(mse, 100.0), -10.0 * torch.log10(mse))
    return _reduce(values, reduction)


def ssim(
    prediction: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    *,
    data_range: float = 2.0,
    win_size: int = 7,
    reduction: str = "mean",
) -> Tensor:
    """Mean structural similarity, as ``skimage.metrics.structural_similarity(data_range=2)``.

    Args:
        prediction: ``(B, C, H, W)`` or ``(B, C, D, H, W)``; every spatial size ``>= win_size``.
        target: same shape.
        mask: optional foreground; the SSIM map is averaged over it (within the region where
            the window fits). ``None`` averages the whole valid region like skimage.
        data_range: value range of the images (2 for ``[-1, 1]``).
        win_size: odd window size (7).
        reduction: ``"mean"`` or ``"none"`` (``(B,)``, channels averaged).

    Example:
        >>> y = torch.rand(1, 1, 16, 16) * 2 - 1
        >>> round(ssim(y, y).item(), 6)  # identical images
        1.0
    """
    _check_pair(prediction, target)
    if not is_int(win_size) or as_scalar(win_size) < 3 or as_scalar(win_size) % 2 == 0:
        raise ValueError(f"win_size must be an odd integer >= 3, got {win_size!r}")
    win_size = int(as_scalar(win_size))
    data_range = as_scalar(data_range)
    if not is_real(data_range) or not 0 < data_range < math.inf:
        raise ValueError(f"data_range must be a finite number > 0, got {data_range!r}")
    data_range = float(data_range)
    if any(s < win_size for s in target.shape[2:]):
        raise ValueError(
            f"every spatial size must be >= win_size={win_size}, got shape {tuple(target.shape)}"
        )
    n = target.ndim - 2
    pool = F.avg_pool2d if n == 2 else F.avg_pool3d
    x, y = prediction.double(), target.double()

    def local_mean(v: Tensor) -> Tensor:
        return pool(v, kernel_size=win_size, stride=1)

    mean_x, mean_y = local_mean(x), local_mean(y)
    count = win_size**n
    covariance_norm = count / (count - 1)
    var_x = covariance_norm * (local_mean(x * x) - mean_x * mean_x)
    var_y = covariance_norm * (local_mean(y * y) - mean_y * mean_y)
    cov_xy = covariance_norm * (local_mean(x * y) - mean_x * mean_y)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    ssim_map = ((2 * mean_x * mean_y + c1) * (2 * cov_xy + c2)) / (
        (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    )
    if mask is None:
        values = ssim_map.flatten(1).mean(1)
    else:
        pad = (win_size - 1) // 2
        fg = foreground_mask(target, mask)
        crop = (slice(None), slice(None)) + (slice(pad, -pad),) * n
        values = _masked_mean(ssim_map, fg[crop])
    return _reduce(values, reduction)
