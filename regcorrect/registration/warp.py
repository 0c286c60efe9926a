"""Differentiable warping of images by dense displacement fields.

Convention (the whole library uses it, see ``docs/conventions.md``):

* A displacement field has shape ``(B, N, *spatial)`` with ``N = 2`` (``(B, 2, H, W)``) or
  ``N = 3`` (``(B, 3, D, H, W)``), in **pixel (voxel) units**, channels in tensor-axis order:
  ``(dy, dx)`` in 2D, ``(dz, dy, dx)`` in 3D.
* Backward mapping: ``warped[p] = image[p + u(p)]``.
* Corner-aligned sampling (``align_corners=True``): pixel ``0`` and pixel ``size - 1`` are the
  centres of the first and last pixels.
* Bilinear (2D) / trilinear (3D) interpolation, ``padding_mode="border"`` by default.

This is the convention of the official Reg-GAN ``Transformer_2D``, VoxelMorph's
``SpatialTransformer`` and MONAI's ``Warp``: fields interchange with theirs.
"""

from __future__ import annotations

import math
from functools import cache

import torch
from einops import rearrange
from torch import Tensor, nn

from .._checks import (
    check_choice,
    check_displacement,
    check_float,
    check_rank,
    check_same_device,
)
from .._precision import without_autocast
from .grid import identity_axes, identity_grid, normalized_scales, pixel_to_normalized_scale

__all__ = ["warp", "Warp", "WARP_MODES", "PADDING_MODES"]

WARP_MODES = ("bilinear", "trilinear", "nearest", "bicubic")
PADDING_MODES = ("border", "zeros", "reflection")

_LOW_PRECISION = (torch.float16, torch.bfloat16)

# torch's integer codes for grid_sample's interpolation and padding modes.
_INTERPOLATION = {"bilinear": 0, "nearest": 1, "bicubic": 2}
_PADDING = {"zeros": 0, "border": 1, "reflection": 2}
_SAMPLE = {2: torch.ops.aten.grid_sampler_2d, 3: torch.ops.aten.grid_sampler_3d}
_SAMPLE_BACKWARD = {
    2: torch.ops.aten.grid_sampler_2d_backward,
    3: torch.ops.aten.grid_sampler_3d_backward,
}


def _field_to_grid(displacement: Tensor) -> Tensor:
    """Pixel field ``(B, N, *spatial)`` in axis order -> normalised sampling grid ``(B, *spatial, N)``
    in ``grid_sample``'s ``(x, y[, z])`` order.

    One pass per channel: grid channel ``i`` = identity profile ``i`` (:func:`identity_axes`,
    broadcast) + scale ``i`` * field channel ``N - 1 - i``, written into a channels-first buffer
    whose channels-last view is returned (``grid_sample`` reads strided grids; this avoids the
    flip/permute/scale/add chain).
    """
    n = displacement.shape[1]
    spatial = tuple(displacement.shape[2:])
    axes = identity_axes(spatial, displacement.device, displacement.dtype)
    scales = normalized_scales(spatial)
    buffer = torch.empty_like(displacement, memory_format=torch.contiguous_format)
    for i in range(n):
        torch.add(axes[i], displacement[:, n - 1 - i], alpha=scales[i], out=buffer[:, i])
    return buffer.movedim(1, -1)


def _make_finite(grid: Tensor) -> Tensor | None:
    """Replace non-finite sampling positions by the image centre, in place; return the marker.

    ``grid_sample`` turns a NaN position into an out-of-range index: the CPU bilinear backward
    then writes out of bounds and kills the process (torch 2.13), and the forward returns some
    pixel's value. So a non-finite displacement is sampled at the centre and its output set to
    NaN afterwards with the returned marker, ``(B, 1, *spatial)``: NaN where a position was not
    finite, 0 elsewhere. ``None`` when every position is finite — checked on the CPU by the
    grid's sum (finite unless some position is not; one read pass, ≈ 2 % of a 256² warp); on
    other devices and under ``torch.compile`` the marker is always built, so that nothing waits
    for the device and the compiled graph does not break.
    """
    if (
        grid.device.type == "cpu"
        and not torch.compiler.is_compiling()  # compiled code: no data-dependent branch
        and math.isfinite(grid.sum().item())
    ):
        return None
    finite = torch.isfinite(grid).all(-1, keepdim=True).movedim(-1, 1)
    # masked_fill, not 0 * grid: inductor simplifies x * 0 to 0, NaN or not
    marker = torch.zeros_like(finite, dtype=grid.dtype).masked_fill_(~finite, math.nan)
    grid.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    return marker


def _sample(
    image: Tensor, grid: Tensor, interpolation: int, padding: int
) -> tuple[Tensor, Tensor | None]:
    """``grid_sample`` (corner-aligned) with NaN where ``grid`` was not finite; ``grid`` is made
    finite in place. Returns the samples and :func:`_make_finite`'s marker."""
    marker = _make_finite(grid)
    warped = _SAMPLE[grid.shape[-1]](image, grid, interpolation, padding, True)
    if marker is not None:
        warped.add_(marker)
    return warped, marker


class _WarpByField(torch.autograd.Function):
    """``grid_sample`` of ``image`` at ``identity + displacement`` as one autograd node.

    Forward: :func:`_field_to_grid` then the sampler. Backward: the sampler's backward, then the
    grid gradient turned back into a field gradient in one pass per channel (scale and axis
    order), instead of autograd replaying the conversion op by op.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        image: Tensor,
        displacement: Tensor,
        interpolation: int,
        padding: int,
    ) -> Tensor:
        grid = _field_to_grid(displacement)
        warped, marker = _sample(image, grid, interpolation, padding)
        ctx.save_for_backward(image, displacement, grid, marker)
        ctx.modes = (interpolation, padding)  # type: ignore[attr-defined]
        return warped

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_warped: Tensor
    ) -> tuple[Tensor | None, Tensor | None, None, None]:
        image, displacement, grid, marker = ctx.saved_tensors  # type: ignore[attr-defined]
        interpolation, padding = ctx.modes  # type: ignore[attr-defined]
        needs_image, needs_field = ctx.needs_input_grad[:2]  # type: ignore[attr-defined]
        if torch.is_grad_enabled():  # create_graph=True: recompute differentiably
            return _differentiable_backward(
                image, displacement, grad_warped, interpolation, padding, needs_image, needs_field
            )
        n = grid.shape[-1]
        if marker is not None:
            # NaN outputs do not depend on the image; their field gradient is NaN (below)
            grad_warped = grad_warped.masked_fill(marker.isnan(), 0.0)
        grad_image, grad_grid = _SAMPLE_BACKWARD[n](
            grad_warped, image, grid, interpolation, padding, True, [needs_image, needs_field]
        )
        grad_field = None
        if needs_field:
            scales = normalized_scales(tuple(grid.shape[1:-1]))
            grad_field = grad_grid.new_empty(grad_grid.shape[0], n, *grad_grid.shape[1:-1])
            for i in range(n):
                torch.mul(grad_grid[..., i], scales[i], out=grad_field[:, n - 1 - i])
            if marker is not None:
                grad_field.add_(marker)
        return (grad_image if needs_image else None), grad_field, None, None


def _differentiable_backward(
    image: Tensor,
    displacement: Tensor,
    grad_warped: Tensor,
    interpolation: int,
    padding: int,
    needs_image: bool,
    needs_field: bool,
) -> tuple[Tensor | None, Tensor | None, None, None]:
    """Backward of :class:`_WarpByField` built from differentiable ops, for double backward."""
    n = displacement.shape[1]
    if not sampler_has_double_backward(displacement.device.type, n):
        raise NotImplementedError(
            f"double backward through warp (create_graph=True) needs a grid_sample that can be "
            f"differentiated twice, which torch {torch.__version__} lacks for {n}-D inputs on "
            f"{displacement.device.type} (torch 2.13 has it on the CPU)"
        )
    spatial = tuple(displacement.shape[2:])
    scale = pixel_to_normalized_scale(spatial, displacement.device, displacement.dtype)
    offsets = rearrange(displacement.flip(1), "b n ... -> b ... n") * scale
    grid = identity_grid(spatial, displacement.device, displacement.dtype) + offsets
    finite = grid.detach().clone()
    marker = _make_finite(finite)
    if marker is not None:  # the forward's positions and gradients (see _WarpByField.backward)
        grid = torch.where(torch.isfinite(grid), grid, finite)
        grad_warped = grad_warped.masked_fill(marker.isnan(), 0.0)
    warped = _SAMPLE[n](image, grid, interpolation, padding, True)
    inputs = [t for t, needed in ((image, needs_image), (displacement, needs_field)) if needed]
    grads = list(torch.autograd.grad(warped, inputs, grad_warped, create_graph=True))
    grad_image = grads.pop(0) if needs_image else None
    grad_field = grads.pop(0) if needs_field else None
    if marker is not None and grad_field is not None:
        grad_field = grad_field + marker
    return grad_image, grad_field, None, None


@cache
def sampler_has_double_backward(device_type: str, spatial_dims: int) -> bool:
    """Whether this torch's ``grid_sample`` can be differentiated twice on ``device_type``.

    Checked once per (device type, 2 or 3 spatial dims) on a tiny float64 input: older torch
    releases have no derivative of ``grid_sampler_2d_backward`` (seen in torch 2.11).
    """
    shape = (1, 1) + (2,) * spatial_dims
    image = torch.ones(shape, dtype=torch.float64, device=device_type, requires_grad=True)
    grid = torch.zeros(
        (1,) + (2,) * spatial_dims + (spatial_dims,),
        dtype=torch.float64,
        device=device_type,
        requires_grad=True,
    )
    try:
        with torch.enable_grad():
            sampled = _SAMPLE[spatial_dims](image, grid, 0, 1, True)
            (grad_grid,) = torch.autograd.grad(sampled.sum(), grid, create_graph=True)
            torch.autograd.grad(grad_grid.sum(), image)
    except RuntimeError:
        return False
    return True


def _sampling_dtype(image: Tensor, displacement: Tensor) -> torch.dtype:
    dtype = torch.promote_types(image.dtype, displacement.dtype)
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def warp(
    image: Tensor,
    displacement: Tensor,
    *,
    mode: str = "bilinear",
    padding_mode: str = "border",
) -> Tensor:
    """Warp ``image`` by a dense ``displacement`` field: ``warped[p] = image[p + u(p)]``.

    Args:
        image: ``(B, C, H, W)`` for a 2D field or ``(B, C, D, H, W)`` for a 3D field, any float
            dtype, any channel count.
        displacement: ``(B, 2, H, W)`` with channels ``(dy, dx)`` or ``(B, 3, D, H, W)`` with
            ``(dz, dy, dx)``, in pixels. A field with batch 1 is applied to every image of the
            batch (and one image to every field).
        mode: ``"bilinear"`` (trilinear in 3D; ``"trilinear"`` is accepted as a synonym),
            ``"nearest"``, or ``"bicubic"`` (2D only).
        padding_mode: ``"border"`` (default), ``"zeros"`` or ``"reflection"`` — the value of
            samples that fall outside the image.

    Returns:
        The warped image, shape ``(B, C, *spatial)``, dtype of ``image``. Half-precision inputs
        (and inputs under ``torch.autocast``) are sampled in float32 and cast back.

    Convention:
        Pixel units, channel order = axis order, backward mapping, ``align_corners=True``.
        Unlike ``kornia.geometry.transform.remap`` with its default ``align_corners=False``
        (kornia issue 4504), a zero field is the identity, up to float rounding of the sampling
        positions (at most 4e-6 px at 256 px in float32). The identity grid is cached per
        (shape, device, dtype); the field -> grid conversion and its gradient are one pass per
        channel (a single autograd node around ``grid_sample``), so the warp costs little more
        than ``grid_sample`` itself (``docs/results/warp.md``). Double backward (``create_graph=True``)
        is supported where torch's ``grid_sample`` can be differentiated twice (torch 2.13, not
        2.11: a ``NotImplementedError`` then): that backward is recomputed from differentiable
        ops. ``image`` and ``displacement`` must be on one device. Where the displacement is
        not finite (NaN or infinite, e.g. from a diverging registration net) the output is NaN
        (its field gradient NaN, its image gradient 0); ``grid_sample`` itself would return
        another pixel's value there, or crash in its CPU backward.

    Example:
        >>> image = torch.arange(16.0, dtype=torch.float64).reshape(1, 1, 4, 4)
        >>> shift_right = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
        >>> shift_right[:, 1] = -1.0  # sample one pixel to the left: content moves right
        >>> warp(image, shift_right)[0, 0, 0]
        tensor([0., 0., 1., 2.], dtype=torch.float64)
    """
    check_float(image, "image")
    n = check_displacement(displacement, "displacement")
    check_choice(mode, "mode", WARP_MODES)
    check_choice(padding_mode, "padding_mode", PADDING_MODES)
    layout = "(B, C, H, W)" if n == 2 else "(B, C, D, H, W)"
    check_rank(image, "image", (n + 2,), f"{layout} to match a {n}-D displacement field")
    check_same_device(image=image, displacement=displacement)
    spatial = tuple(displacement.shape[2:])
    if tuple(image.shape[2:]) != spatial:
        raise ValueError(
            f"image spatial shape {tuple(image.shape[2:])} must equal displacement spatial shape "
            f"{spatial} (image {tuple(image.shape)}, displacement {tuple(displacement.shape)})"
        )
    batch_image, batch_field = image.shape[0], displacement.shape[0]
    if batch_image != batch_field and 1 not in (batch_image, batch_field):
        raise ValueError(
            f"image batch {batch_image} and displacement batch {batch_field} must be equal, or "
            "one of them 1 (broadcast)"
        )
    if mode == "bicubic" and n == 3:
        raise ValueError("mode 'bicubic' is only available for 2D images, got a 3D field")
    sample_mode = "bilinear" if mode == "trilinear" else mode

    dtype = _sampling_dtype(image, displacement)
    device_type = image.device.type
    # (the checks below skip no-op calls: at small sizes the per-call Python cost is the warp's)
    with without_autocast(device_type):
        batch = batch_field if batch_image == 1 else batch_image  # (a batch 1 broadcasts, to 0 too)
        source = image if image.dtype == dtype else image.to(dtype)
        field = displacement if displacement.dtype == dtype else displacement.to(dtype)
        if batch_image != batch:
            source = source.expand(batch, *source.shape[1:])
        if batch_field != batch:
            field = field.expand(batch, *field.shape[1:])
        interpolation, padding = _INTERPOLATION[sample_mode], _PADDING[padding_mode]
        if torch.is_grad_enabled() and (source.requires_grad or field.requires_grad):
            warped = _WarpByField.apply(source, field, interpolation, padding)
        else:
            warped, _ = _sample(source, _field_to_grid(field), interpolation, padding)
    return warped if warped.dtype == image.dtype else warped.to(image.dtype)


class Warp(nn.Module):
    """Module form of :func:`warp`.

    Args:
        mode: interpolation, see :func:`warp`.
        padding_mode: out-of-image samples, see :func:`warp`.

    Example:
        >>> warper = Warp()
        >>> warper(torch.rand(2, 1, 8, 8), torch.zeros(2, 2, 8, 8)).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(self, *, mode: str = "bilinear", padding_mode: str = "border") -> None:
        super().__init__()
        check_choice(mode, "mode", WARP_MODES)
        check_choice(padding_mode, "padding_mode", PADDING_MODES)
        self.mode = mode
        self.padding_mode = padding_mode

    def forward(self, image: Tensor, displacement: Tensor) -> Tensor:
        """Warp ``image`` ``(B, C, *spatial)`` by ``displacement`` ``(B, N, *spatial)``."""
        return warp(image, displacement, mode=self.mode, padding_mode=self.padding_mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, padding_mode={self.padding_mode!r}"
