"""``PairedSlices``: a stack of co-registered source/target slices, and grid changes on it.

Convention:
    Tensors are ``(N, 1, H, W)``: ``N`` slices, one channel, ``H`` rows (top to bottom as
    displayed), ``W`` columns (left to right). Intensities are in ``[-1, 1]`` with the background
    at exactly ``-1``; ``mask`` is ``True`` on the foreground (e.g. brain).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from regcorrect._checks import (
    as_scalar,
    check_finite,
    check_float,
    check_positive,
    check_rank,
    check_same_device,
    check_same_shape_and_device,
    check_tensor,
    is_real,
)

__all__ = ["PairedSlices", "resample_pairs", "pad_or_crop_pairs"]


@dataclass(frozen=True)
class PairedSlices:
    """Co-registered source/target slices with their foreground mask.

    Indexing (an ``int``, a ``slice``, a sequence or a tensor of indices) always returns a
    ``PairedSlices`` so its tensors stay ``(N, 1, H, W)``; ``pairs[3]`` holds one slice.

    Attributes:
        source: float32 ``(N, 1, H, W)`` in ``[-1, 1]``, e.g. T1.
        target: float32 ``(N, 1, H, W)`` in ``[-1, 1]``, e.g. T2, pixel-aligned with ``source``.
        mask: bool ``(N, 1, H, W)``, foreground; ``source`` and ``target`` are ``-1`` outside.
        slice_index: int64 ``(N,)``, position of each slice in its volume or file list.
        spacing: pixel size ``(row, column)`` in millimetres (``(1.0, 1.0)`` when unknown).
        names: optional file names, one per slice.
    """

    source: Tensor
    target: Tensor
    mask: Tensor
    slice_index: Tensor
    spacing: tuple[float, float] = (1.0, 1.0)
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        check_tensor(self.source, "source")
        check_tensor(self.target, "target")
        check_tensor(self.mask, "mask")
        check_same_device(source=self.source, target=self.target, mask=self.mask)
        for name in ("source", "target"):
            value = getattr(self, name)
            check_float(value, name)
            check_rank(value, name, (4,), "(N, 1, H, W)")
            check_finite(value, name)
            if value.shape[1] != 1:
                raise ValueError(
                    f"{name} must have 1 channel (N, 1, H, W), got {tuple(value.shape)}"
                )
        check_tensor(self.mask, "mask")
        if self.mask.dtype != torch.bool:
            raise TypeError(f"mask must be a boolean tensor, got dtype {self.mask.dtype}")
        for name in ("target", "mask"):
            if getattr(self, name).shape != self.source.shape:
                raise ValueError(
                    f"{name} must have the shape of source {tuple(self.source.shape)}, "
                    f"got {tuple(getattr(self, name).shape)}"
                )
        spacing = self.spacing
        if isinstance(spacing, (np.ndarray, Tensor)) and spacing.ndim == 1:
            spacing = spacing.tolist()
        if isinstance(spacing, (tuple, list)):
            spacing = tuple(as_scalar(s) for s in spacing)
        if (
            not isinstance(spacing, tuple)
            or len(spacing) != 2
            or not all(is_real(s) and 0 < s < math.inf for s in spacing)
        ):
            raise ValueError(
                f"spacing must be a pair (row, column) of pixel sizes > 0 in mm, got "
                f"{self.spacing!r}"
            )
        object.__setattr__(self, "spacing", (float(spacing[0]), float(spacing[1])))
        check_tensor(self.slice_index, "slice_index")
        if self.slice_index.shape != (self.source.shape[0],):
            raise ValueError(
                f"slice_index must have shape ({self.source.shape[0]},), "
                f"got {tuple(self.slice_index.shape)}"
            )
        if self.names is not None and len(self.names) != len(self):
            raise ValueError(f"names must hold {len(self)} entries, got {len(self.names)}")

    @classmethod
    def from_tensors(
        cls, *, source: Tensor, target: Tensor, mask: Tensor | None = None
    ) -> PairedSlices:
        """Build from ``(N, 1, H, W)`` tensors in ``[-1, 1]``.

        Args:
            source: float ``(N, 1, H, W)``.
            target: float ``(N, 1, H, W)``.
            mask: bool ``(N, 1, H, W)``; default: pixels where source or target is above ``-1``.

        Returns:
            The pairs with float32 images, ``slice_index = arange(N)`` and unit spacing.
        """
        check_float(source, "source")
        check_float(target, "target")
        check_same_shape_and_device(source, target, "source", "target")
        if mask is None:
            mask = (source > -1) | (target > -1)
        return cls(
            source=source.float(),
            target=target.float(),
            mask=mask,
            slice_index=torch.arange(source.shape[0]),
        )

    def __len__(self) -> int:
        return int(self.source.shape[0])

    def __getitem__(self, key: int | slice | Sequence[int] | Tensor) -> PairedSlices:
        if not isinstance(key, (int, slice)) and np.ndim(key) == 0:  # numpy / 0-d tensor int
            key = operator.index(key)
        if isinstance(key, int):
            if not -len(self) <= key < len(self):
                raise IndexError(f"index {key} is out of range for {len(self)} slices")
            key = slice(key % len(self), key % len(self) + 1)
        elif not isinstance(key, slice):
            key = torch.as_tensor(key)
            if key.numel() == 0:  # pairs[[]]: no slice (as_tensor makes it float32)
                key = key.long()
            if key.dtype == torch.bool:  # a mask over the slices: the indices where it is true
                if key.shape != (len(self),):
                    raise IndexError(
                        f"a boolean index must have shape ({len(self)},), got {tuple(key.shape)}"
                    )
                key = key.nonzero().flatten()
            elif key.is_floating_point() or key.is_complex():
                raise IndexError(f"indices must be integers or booleans, got dtype {key.dtype}")
            key = key.long()
        names = None
        if self.names is not None:
            picked = range(len(self))[key] if isinstance(key, slice) else key.tolist()
            names = tuple(self.names[i] for i in picked)
        return replace(
            self,
            source=self.source[key],
            target=self.target[key],
            mask=self.mask[key],
            slice_index=self.slice_index[key],
            names=names,
        )

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the slices."""
        return int(self.source.shape[-2]), int(self.source.shape[-1])


def _with_background(image: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, image.clamp(-1.0, 1.0), torch.full_like(image, -1.0))


def check_pairs(pairs: object, *, nonempty: bool = False) -> PairedSlices:
    """``pairs`` if it is a :class:`PairedSlices` (with at least one slice if ``nonempty``),
    else ``TypeError`` / ``ValueError`` naming ``pairs``."""
    if not isinstance(pairs, PairedSlices):
        raise TypeError(
            "pairs must be a PairedSlices (see PairedSlices.from_tensors), "
            f"got {type(pairs).__name__}"
        )
    if nonempty and len(pairs) == 0:
        raise ValueError("pairs must hold at least one slice, got 0")
    return pairs


def resample_pairs(pairs: PairedSlices, *, factor: float | tuple[float, float]) -> PairedSlices:
    """Resample to a grid whose pixels are ``factor`` times larger (``2.0`` halves ``H`` and ``W``).

    Images are resized with antialiased bilinear interpolation (``align_corners=False``, so the
    field of view is kept), the mask is resized the same way and thresholded at 0.5, and the
    background is then set back to exactly ``-1``.

    Args:
        pairs: slices ``(N, 1, H, W)``.
        factor: pixel-size factor ``> 0``, one for both axes or ``(factor_h, factor_w)`` (e.g.
            to bring anisotropic pixels to a square size); the new size is ``H / factor_h`` by
            ``W / factor_w`` rounded half up (at least 1), and ``pairs.spacing`` is updated to
            the exact new pixel size.

    Returns:
        Resampled pairs; ``factor=1.0`` returns ``pairs`` unchanged.
    """
    check_pairs(pairs)
    factors = tuple(factor) if isinstance(factor, (tuple, list)) else (factor, factor)
    factors = tuple(as_scalar(f) for f in factors)
    if len(factors) != 2 or not all(is_real(f) for f in factors):
        raise TypeError(f"factor must be a number or a pair of numbers, got {factor!r}")
    for f in factors:
        check_positive(float(f), "factor")
    if factors == (1.0, 1.0):
        return pairs
    height, width = pairs.image_size
    new_size = (
        max(1, int(height / factors[0] + 0.5)),
        max(1, int(width / factors[1] + 0.5)),
    )

    def resize(image: Tensor) -> Tensor:
        return F.interpolate(
            image, size=new_size, mode="bilinear", align_corners=False, antialias=True
        )

    mask = resize(pairs.mask.float()) > 0.5
    return replace(
        pairs,
        source=_with_background(resize(pairs.source), mask),
        target=_with_background(resize(pairs.target), mask),
        mask=mask,
        spacing=(
            pairs.spacing[0] * height / new_size[0],
            pairs.spacing[1] * width / new_size[1],
        ),
    )


def _pad_or_crop_axis(image: Tensor, *, dim: int, size: int, fill: float) -> Tensor:
    current = image.shape[dim]
    if current > size:  # centred crop
        start = (current - size) // 2
        return image.narrow(dim, start, size)
    if current < size:  # centred pad
        before = (size - current) // 2
        pad_shape = list(image.shape)
        pad_shape[dim] = before
        head = torch.full(pad_shape, fill, dtype=image.dtype)
        pad_shape[dim] = size - current - before
        tail = torch.full(pad_shape, fill, dtype=image.dtype)
        return torch.cat([head, image, tail], dim=dim)
    return image


def pad_or_crop_pairs(pairs: PairedSlices, *, size: int | tuple[int, int]) -> PairedSlices:
    """Centre-pad (background ``-1``, mask ``False``) or centre-crop to ``size`` without resizing.

    The pixel size is kept, so ``(256, 256)`` around a ``(229, 193)`` slice at 1 mm adds a
    background margin. When the difference is odd the extra row or column goes to the bottom or
    right.

    Args:
        pairs: slices ``(N, 1, H, W)``.
        size: ``(H', W')`` or one ``int`` for a square.

    Returns:
        Pairs of shape ``(N, 1, H', W')``.
    """
    check_pairs(pairs)
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        raise ValueError(f"size must be a positive int or a pair (H, W) of them, got {size!r}")
    source, target, mask = pairs.source, pairs.target, pairs.mask
    for dim, length in ((2, size[0]), (3, size[1])):
        source = _pad_or_crop_axis(source, dim=dim, size=length, fill=-1.0)
        target = _pad_or_crop_axis(target, dim=dim, size=length, fill=-1.0)
        mask = _pad_or_crop_axis(mask, dim=dim, size=length, fill=False)
    return replace(pairs, source=source, target=target, mask=mask)
