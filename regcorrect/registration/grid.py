"""Cached identity sampling grids in ``grid_sample`` layout, and the cached centred
coordinates that ``RegUNet``'s affine head works in.

Built on Kornia's mesh-grid utilities; the one pitfall handled here is that
``create_meshgrid3d`` orders its channels ``(d, x, y)`` while ``grid_sample`` expects
``(x, y, z)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import torch
from einops import rearrange
from torch import Tensor

try:  # kornia >= 0.8.3
    from kornia.geometry import create_meshgrid, create_meshgrid3d
except ImportError:  # pragma: no cover - older kornia
    from kornia.utils import create_meshgrid, create_meshgrid3d

__all__ = [
    "centred_coordinates",
    "identity_axes",
    "identity_grid",
    "moment_basis",
    "normalized_scales",
    "pixel_to_normalized_scale",
]


def _cached(function: Any, *args: Any) -> Any:
    """``function(*args)`` from its ``lru_cache``; while ``torch.compile`` traces, the function
    itself (dynamo would skip the cache anyway, with a warning; the compiled graph holds the
    values)."""
    if torch.compiler.is_compiling():
        return function.__wrapped__(*args)
    return function(*args)


@lru_cache(maxsize=64)
def _identity_grid(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    # Built outside inference mode so that the cached tensor can enter autograd graphs later.
    with torch.inference_mode(False), torch.no_grad():
        if len(shape) == 2:
            height, width = shape
            grid = create_meshgrid(height, width, True, device=device, dtype=dtype)
        else:
            depth, height, width = shape
            grid = create_meshgrid3d(depth, height, width, True, device=device, dtype=dtype)
            grid = grid[..., [1, 2, 0]]  # kornia's (d, x, y) -> grid_sample's (x, y, z)
        # kornia puts -1..1 on linspace; a size-1 axis would be -1, grid_sample wants its centre 0.
        for axis, size in enumerate(reversed(shape)):
            if size == 1:
                grid[..., axis] = 0.0
        return grid.contiguous()


def identity_grid(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """Identity sampling grid for ``torch.nn.functional.grid_sample`` with ``align_corners=True``.

    The result is cached per ``(shape, device, dtype)``; do not modify it in place.

    Args:
        shape: spatial shape ``(H, W)`` or ``(D, H, W)``.
        device: device of the grid.
        dtype: floating dtype of the grid.

    Returns:
        ``(1, H, W, 2)`` with last axis ``(x, y)`` or ``(1, D, H, W, 3)`` with ``(x, y, z)``, in
        normalised coordinates ``[-1, 1]`` (corner-aligned).
    """
    return _cached(_identity_grid, tuple(int(s) for s in shape), torch.device(device), dtype)


@lru_cache(maxsize=64)
def _identity_axes(
    shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, ...]:
    with torch.inference_mode(False), torch.no_grad():
        grid = _cached(_identity_grid, shape, device, dtype)
        n = len(shape)
        axes = []
        for i in range(n):  # grid channel i runs along spatial axis n - 1 - i
            axis = n - 1 - i
            index = [0] * n
            index[axis] = slice(None)
            values = grid[(0, *index, i)]
            view = [1] * n
            view[axis] = shape[axis]
            axes.append(values.reshape(1, *view).contiguous())
        return tuple(axes)


def identity_axes(
    shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, ...]:
    """The identity grid's coordinates as broadcastable 1-D profiles (cached).

    Returns:
        ``N`` tensors in ``grid_sample`` order ``(x, y[, z])``; coordinate ``i`` varies only along
        spatial axis ``N - 1 - i`` and has shape ``(1, *shape)`` with every other axis 1, e.g.
        ``(1, 1, W)`` and ``(1, H, 1)`` in 2D. Broadcast together they equal
        :func:`identity_grid`, while reading ``H + W`` values instead of ``2·H·W``.
    """
    return _cached(_identity_axes, tuple(int(s) for s in shape), torch.device(device), dtype)


@lru_cache(maxsize=256)
def _normalized_scales(shape: tuple[int, ...]) -> tuple[float, ...]:
    return tuple(2.0 / (size - 1) if size > 1 else 0.0 for size in reversed(shape))


def normalized_scales(shape: tuple[int, ...]) -> tuple[float, ...]:
    """Pixel -> ``align_corners=True`` normalised factors as Python floats (cached per shape).

    Returns:
        ``2 / (size - 1)`` per axis (0 for an axis of size 1), ordered like ``grid_sample``'s last
        axis (``x, y[, z]``), i.e. the reverse of ``shape``.
    """
    return _cached(_normalized_scales, tuple(shape))


@lru_cache(maxsize=64)
def _scale(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    with torch.inference_mode(False), torch.no_grad():
        return torch.tensor(normalized_scales(shape), device=device, dtype=dtype)


def pixel_to_normalized_scale(
    shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> Tensor:
    """Factors that turn pixel offsets into ``align_corners=True`` normalised offsets.

    Returns:
        ``(N,)`` tensor of :func:`normalized_scales` (cached per shape, device, dtype).
    """
    return _cached(_scale, tuple(int(s) for s in shape), torch.device(device), dtype)


def _device_and_dtype(
    device: torch.device | str | None, dtype: torch.dtype | None
) -> tuple[torch.device, torch.dtype]:
    return torch.device("cpu" if device is None else device), dtype or torch.get_default_dtype()


def centring_half(spatial: Sequence[int]) -> float:
    """Pixels per unit of :func:`centred_coordinates`: ``(max(spatial) - 1) / 2`` (at least 0.5)."""
    return max((max(spatial) - 1) / 2.0, 0.5)


@lru_cache(maxsize=64)
def _centred_coordinates(
    shape: tuple[int, ...], device: torch.device, dtype: torch.dtype
) -> Tensor:
    with torch.inference_mode(False), torch.no_grad():
        half = centring_half(shape)
        axes = [
            (torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2.0) / half
            for size in shape
        ]
        mesh = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)
        return rearrange(mesh, "n ... -> n (...)").contiguous()


def centred_coordinates(
    spatial: Sequence[int],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Pixel coordinates, centred and isotropically normalised, as ``(N, prod(spatial))``.

    Per axis ``(i - (s - 1) / 2) / half`` with ``half = (max(spatial) - 1) / 2``, so the
    longest axis spans ``[-1, 1]`` (the frame of ``RegistrationFields.affine``). Rows in axis
    order, pixels flattened in C order. Cached per ``(spatial, device, dtype)``; do not modify
    it in place.
    """
    return _cached(
        _centred_coordinates, tuple(int(s) for s in spatial), *_device_and_dtype(device, dtype)
    )


@lru_cache(maxsize=64)
def _moment_basis(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    with torch.inference_mode(False), torch.no_grad():
        coords = _cached(_centred_coordinates, shape, device, dtype)
        n = coords.shape[0]
        columns = [torch.ones_like(coords[0]), *coords]
        columns += [coords[i] * coords[j] for i in range(n) for j in range(i, n)]
        return torch.stack(columns, dim=1)


def moment_count(spatial_dims: int) -> int:
    """Columns of :func:`moment_basis` in ``spatial_dims`` dimensions: ``1 + N + N (N + 1) / 2``."""
    return 1 + spatial_dims + spatial_dims * (spatial_dims + 1) // 2


def moment_basis(
    spatial: Sequence[int],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Monomials of order 0–2 of :func:`centred_coordinates`, as ``(P, M)``.

    Columns: ``1``, each coordinate ``c_i``, then each product ``c_i c_j`` with ``i <= j``
    (axis order), so ``M =`` :func:`moment_count` ``(N)`` (6 in 2D, 10 in 3D). Cached per
    ``(spatial, device, dtype)``; do not modify it in place.
    """
    return _cached(_moment_basis, tuple(int(s) for s in spatial), *_device_and_dtype(device, dtype))
