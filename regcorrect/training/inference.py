"""Slice-wise translation of whole volumes with a trained model.

Each slice is brought to the grid the model was trained on — resampled to the training pixel
size when both are known, then centre-padded with background to the training size (or, for a
larger slice, to the next multiple of 16) — translated, and taken back to its own grid.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_finite, check_float, check_rank

__all__ = ["translate_slices"]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _resize(images: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(images.shape[-2:]) == size:
        return images
    shrink = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrink)


@torch.no_grad()
def translate_slices(
    translate: Callable[[Tensor], Tensor],
    slices: Tensor,
    *,
    model_size: tuple[int, int],
    slice_spacing: tuple[float, float] | None = None,
    model_spacing: tuple[float, float] | None = None,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Translate ``(N, 1, H, W)`` slices in ``[-1, 1]`` on the model's training grid.

    Args:
        translate: the model, ``(B, 1, h, w) -> (B, 1, h, w)``.
        slices: float ``(N, 1, H, W)`` in ``[-1, 1]``, background ``-1``.
        model_size: ``(h, w)`` of the training slices.
        slice_spacing, model_spacing: pixel sizes in mm; when both are given and differ, slices
            are resampled to ``model_spacing`` and back.
        batch_size: slices per call of ``translate``.
        progress: called with the number of slices done after each batch.

    Returns:
        ``(N, 1, H, W)`` float32 translations on the input grid.
    """
    check_float(slices, "slices")
    check_rank(slices, "slices", (4,), "(N, 1, H, W)")
    check_finite(slices, "slices")
    height, width = slices.shape[-2:]
    grid = (height, width)
    if slice_spacing is not None and model_spacing is not None:
        factors = [s / m for s, m in zip(slice_spacing, model_spacing, strict=True)]
        if any(abs(f - 1.0) > 1e-3 for f in factors):
            grid = (max(1, round(height * factors[0])), max(1, round(width * factors[1])))
    if grid[0] <= model_size[0] and grid[1] <= model_size[1]:
        padded = model_size
    else:
        padded = (
            _round_up(max(grid[0], model_size[0]), 16),
            _round_up(max(grid[1], model_size[1]), 16),
        )
    top, left = (padded[0] - grid[0]) // 2, (padded[1] - grid[1]) // 2
    pad = (left, padded[1] - grid[1] - left, top, padded[0] - grid[0] - top)
    outputs = []
    for start in range(0, slices.shape[0], batch_size):
        batch = _resize(slices[start : start + batch_size].float(), grid).clamp(-1.0, 1.0)
        batch = F.pad(batch, pad, value=-1.0)
        translated = translate(batch).float().cpu()
        translated = translated[..., top : top + grid[0], left : left + grid[1]]
        outputs.append(_resize(translated, (height, width)).clamp(-1.0, 1.0))
        if progress is not None:
            progress(len(outputs[-1]))
    return torch.cat(outputs)
