"""Operations on displacement fields: composition, diffeomorphic integration, Jacobians, affines.

All fields follow the library convention (``docs/conventions.md``): shape ``(B, N, *spatial)``,
pixel units, channels in axis order (``(dy, dx)`` / ``(dz, dy, dx)``), backward mapping
``warped[p] = image[p + u(p)]``, corner-aligned sampling.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor

from .._checks import (
    check_displacement,
    check_finite,
    check_float,
    check_rank,
    check_same_device,
    check_spatial_shape,
    check_tensor,
)
from .._precision import without_autocast
from .warp import warp

__all__ = [
    "compose",
    "invert_displacement",
    "integrate_velocity",
    "jacobian_determinant",
    "folding_fraction",
    "affine_to_displacement",
    "INVERSE_ITERATIONS",
]

#: Fixed-point iterations of :func:`invert_displacement` by default.
INVERSE_ITERATIONS = 20


def compose(first: Tensor, second: Tensor) -> Tensor:
    """Compose two displacement fields so that one warp equals two in a row.

    ``warp(warp(x, second), first) == warp(x, compose(first, second))`` (up to interpolation),
    i.e. ``compose(u, v)(p) = u(p) + v(p + u(p))``.

    Args:
        first: ``u``, ``(B, N, *spatial)``, the field applied last (outer warp).
        second: ``v``, same field shape, the field applied first (inner warp); the two batch
            sizes must be equal or one of them 1 (broadcast).

    Returns:
        ``(B, N, *spatial)``. ``second`` is resampled with border padding.

    Example:
        >>> u = torch.full((1, 2, 8, 8), 1.0)
        >>> compose(u, u).mean().item()
        2.0
    """
    n = check_displacement(first, "first")
    check_displacement(second, "second")
    check_same_device(first=first, second=second)
    if first.shape[0] != second.shape[0] and 1 not in (first.shape[0], second.shape[0]):
        raise ValueError(
            f"first and second must have the same batch size, or one of them 1 (broadcast), got "
            f"{tuple(first.shape)} and {tuple(second.shape)}"
        )
    if second.shape[1:] != first.shape[1:]:
        raise ValueError(
            f"first and second must have the same field shape (B, {n}, *spatial), got "
            f"{tuple(first.shape)} and {tuple(second.shape)}"
        )
    return first + warp(second, first)


def invert_displacement(displacement: Tensor, *, iterations: int = INVERSE_ITERATIONS) -> Tensor:
    """The inverse field ``w`` of ``u``: ``warp(warp(x, u), w) ≈ x``.

    ``w`` solves ``compose(w, u) = 0``, i.e. ``w(p) = -u(p + w(p))``, by fixed-point iteration
    from ``w = -u`` (Chen et al. 2008; ITK / ANTs invert fields the same way): each iteration is
    one warp of ``u``. It converges where ``u`` is a contraction, ``‖∇u‖ < 1`` (for an affine
    ``p -> A p + b``: ``‖A - I‖ < 1``, e.g. any rotation below 60° at a scale near 1; any small
    smooth deformation); the error shrinks by about that factor per iteration. An affine field is
    inverted exactly (to float rounding) wherever ``p + w(p)`` stays inside the image, since
    bilinear interpolation reproduces a linear field; beyond the image ``u`` is extended by its
    border values (``padding_mode="border"``), which is approximate there.

    Args:
        displacement: ``u``, ``(B, 2, H, W)`` or ``(B, 3, D, H, W)``, library convention (pixels,
            axis order, backward mapping).
        iterations: fixed-point iterations, an int ``>= 1`` (default
            :data:`INVERSE_ITERATIONS`, 20).

    Returns:
        ``w``, same shape, dtype and device as ``displacement``; differentiable (the iterations
        are warps).

    Example:
        >>> shift = torch.zeros(1, 2, 8, 8)
        >>> shift[:, 1] = 1.5  # sample 1.5 px to the right
        >>> invert_displacement(shift)[0, 1, 4, 4].item()  # and back: 1.5 px to the left
        -1.5
    """
    check_displacement(displacement, "displacement")
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise ValueError(f"iterations must be an int >= 1, got {iterations!r}")
    inverse = -displacement
    for _ in range(iterations):
        inverse = -warp(displacement, inverse)
    return inverse


def integrate_velocity(velocity: Tensor, steps: int = 7) -> Tensor:
    """Integrate a stationary velocity field by scaling and squaring (Arsigny et al. 2006).

    ``u = v / 2**steps``, then ``steps`` times ``u = compose(u, u)``. The result approximates the
    flow ``exp(v)`` and is diffeomorphic (no folding) when ``v / 2**steps`` is small.

    Args:
        velocity: ``(B, N, *spatial)`` in pixels, library convention.
        steps: number of squarings (``>= 0``); ``0`` returns ``velocity`` unchanged.

    Returns:
        The displacement ``(B, N, *spatial)``.

    Example:
        >>> v = torch.full((1, 2, 8, 8), 0.5)
        >>> torch.allclose(integrate_velocity(v), v)  # a constant field integrates to itself
        True
    """
    check_displacement(velocity, "velocity")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    displacement = velocity / (2**steps)
    for _ in range(steps):
        displacement = displacement + warp(displacement, displacement)
    return displacement


def _spatial_gradients(displacement: Tensor) -> Tensor:
    """``(B, *spatial, N, N)``: entry ``[i, j]`` = d u_i / d axis_j (central differences)."""
    n = displacement.shape[1]
    dims = tuple(range(2, 2 + n))
    grads = torch.gradient(displacement, dim=dims)  # N tensors (B, N, *spatial), d/d axis_j
    jac = torch.stack(grads, dim=2)  # (B, N_i, N_j, *spatial)
    return rearrange(jac, "b i j ... -> b ... i j")


def jacobian_determinant(displacement: Tensor) -> Tensor:
    """Determinant of the Jacobian of the mapping ``p -> p + u(p)``.

    Derivatives are central differences inside and one-sided at the borders
    (``numpy.gradient`` with ``edge_order=1``), in pixel units.

    Args:
        displacement: ``(B, 2, H, W)`` or ``(B, 3, D, H, W)``, library convention.

    Returns:
        ``(B, *spatial)`` in the dtype of ``displacement`` (half precision is computed in
        float32); 1 for the identity, ``<= 0`` where the mapping folds, NaN next to a
        non-finite displacement.

    Example:
        >>> jacobian_determinant(torch.zeros(1, 2, 5, 5)).unique()
        tensor([1.])
    """
    n = check_displacement(displacement, "displacement")
    if any(s < 2 for s in displacement.shape[2:]):
        raise ValueError(
            "displacement needs at least 2 samples along each spatial axis to differentiate, "
            f"got shape {tuple(displacement.shape)}"
        )
    dtype = torch.promote_types(displacement.dtype, torch.float32)  # half: float32 inside
    with without_autocast(displacement.device.type):
        jac = _spatial_gradients(displacement.to(dtype))
        eye = torch.eye(n, device=displacement.device, dtype=dtype)
        return torch.linalg.det(jac + eye).to(displacement.dtype)


def folding_fraction(displacement: Tensor, mask: Tensor | None = None) -> Tensor:
    """Share of pixels (voxels) where the mapping folds: ``det J <= 0``.

    Args:
        displacement: ``(B, N, *spatial)``, library convention.
        mask: optional boolean ``(B, *spatial)`` or ``(B, 1, *spatial)`` (a numeric mask counts
            where it is non-zero); only pixels where it is true count.

    Returns:
        ``(B,)`` fractions in ``[0, 1]``; NaN for a sample whose determinant is NaN at a
        counted pixel (a non-finite displacement: whether it folds is unknown).

    Example:
        >>> folding_fraction(torch.zeros(2, 2, 8, 8))
        tensor([0., 0.])
    """
    if mask is not None:
        check_tensor(mask, "mask")
        check_same_device(displacement=displacement, mask=mask)
    det = jacobian_determinant(displacement)
    dtype = torch.promote_types(det.dtype, torch.float32)
    folded = (det <= 0).to(dtype).masked_fill(det.isnan(), math.nan)
    if mask is None:
        return folded.flatten(1).mean(dim=1).to(det.dtype)
    if mask.ndim == det.ndim + 1 and mask.shape[1] == 1:
        mask = mask.squeeze(1)
    if mask.shape != det.shape:
        raise ValueError(
            f"mask must have shape {tuple(det.shape)} or {(det.shape[0], 1, *det.shape[1:])}, "
            f"got {tuple(mask.shape)}"
        )
    counted = mask if mask.dtype == torch.bool else mask != 0
    folded_counted = torch.where(counted, folded, 0.0).flatten(1).sum(1)
    return (folded_counted / counted.flatten(1).sum(1).clamp_min(1)).to(det.dtype)


def affine_to_displacement(matrix: Tensor, spatial_shape: tuple[int, ...]) -> Tensor:
    """Dense displacement field of an affine transform given in pixel coordinates.

    ``matrix`` follows Kornia's ``warp_affine`` / ``warp_affine3d`` convention: it maps a
    **source** pixel position ``(x, y[, z], 1)`` (column order x, y, z — *not* axis order) to its
    **destination** position. The returned field ``u`` satisfies
    ``warp(image, u) == kornia.geometry.transform.warp_affine(image, matrix, (H, W),
    align_corners=True)`` — i.e. ``u(p) = matrix^-1 p - p`` in axis order. This is the ground
    truth a registration network must output to map an image onto its affinely moved copy.

    Args:
        matrix: ``(B, 2, 3)`` / ``(2, 3)`` for 2D or ``(B, 3, 4)`` / ``(3, 4)`` for 3D.
        spatial_shape: ``(H, W)`` or ``(D, H, W)``.

    Returns:
        ``(B, 2, H, W)`` with ``(dy, dx)`` or ``(B, 3, D, H, W)`` with ``(dz, dy, dx)``, in the
        matrix's dtype (float32 for integer matrices; half precision and autocast are computed
        in float32).

    Example:
        >>> shift = torch.tensor([[1.0, 0.0, 3.0], [0.0, 1.0, 0.0]])  # move content 3 px right
        >>> affine_to_displacement(shift, (4, 4))[0, :, 0, 0]
        tensor([ 0., -3.])
    """
    check_rank(matrix, "matrix", (2, 3), "(B, 2, 3) or (B, 3, 4)")
    if not (matrix.is_floating_point() or matrix.is_complex()):
        matrix = matrix.float()  # integer matrices
    check_float(matrix, "matrix")
    if matrix.ndim == 2:
        matrix = matrix.unsqueeze(0)
    n = matrix.shape[1]
    if n not in (2, 3) or matrix.shape[2] != n + 1:
        raise ValueError(
            f"matrix must have shape (B, 2, 3) or (B, 3, 4), got {tuple(matrix.shape)}"
        )
    shape = check_spatial_shape(
        spatial_shape, "spatial_shape", n, f" for a {tuple(matrix.shape[1:])} matrix"
    )
    check_finite(matrix, "matrix")
    # float32 at least (half precision cannot invert) and autocast off: a bfloat16 product
    # would put the field up to a pixel off at 256 px
    with without_autocast(matrix.device.type):
        field = _affine_field(matrix.to(torch.promote_types(matrix.dtype, torch.float32)), shape)
    return field.to(matrix.dtype)


def _affine_field(matrix: Tensor, shape: tuple[int, ...]) -> Tensor:
    """:func:`affine_to_displacement` of a checked ``(B, N, N + 1)`` matrix."""
    n = matrix.shape[1]
    dtype = matrix.dtype
    square = torch.zeros(matrix.shape[0], n + 1, n + 1, device=matrix.device, dtype=dtype)
    square[:, :n, :] = matrix
    square[:, n, n] = 1.0
    inverse, info = torch.linalg.inv_ex(square)  # destination -> source, (x, y[, z]) order
    if bool(info.any()):
        singular = info.nonzero().flatten().tolist()
        raise ValueError(
            f"matrix must be invertible (an affine map that does not collapse the image), but "
            f"the matrices at batch index {singular} are singular"
        )
    inverse = inverse[:, :n, :]
    axes = [torch.arange(s, device=matrix.device, dtype=dtype) for s in shape]
    mesh = torch.meshgrid(*axes, indexing="ij")  # axis order (z, y, x) / (y, x)
    points = torch.stack([*reversed(mesh), torch.ones_like(mesh[0])], dim=0)  # (x, y[, z], 1)
    points = rearrange(points, "k ... -> k (...)")
    mapped = inverse @ points  # (B, n, P) in (x, y[, z]) order
    source_xyz = points[:n]
    displacement = (mapped - source_xyz).flip(1)  # -> axis order
    return displacement.reshape(matrix.shape[0], n, *shape)
