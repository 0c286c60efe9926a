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

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .._checks import check_choice, check_displacement, check_float, check_rank
from .grid import identity_grid, pixel_to_normalized_scale

__all__ = ["warp", "Warp", "WARP_MODES", "PADDING_MODES"]

WARP_MODES = ("bilinear", "trilinear", "nearest", "bicubic")
PADDING_MODES = ("border", "zeros", "reflection")

_LOW_PRECISION = (torch.float16, torch.bfloat16)


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
        (kornia issue 4504), a zero field is exactly the identity. The identity grid is cached
        per (shape, device, dtype).

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
    with torch.autocast(device_type=image.device.type, enabled=False):
        scale = pixel_to_normalized_scale(spatial, displacement.device, dtype)
        offsets = rearrange(displacement.to(dtype).flip(1), "b n ... -> b ... n") * scale
        grid = identity_grid(spatial, displacement.device, dtype) + offsets
        batch = max(batch_image, batch_field)
        source = image.to(dtype)
        if batch_image != batch:
            source = source.expand(batch, *source.shape[1:])
        if batch_field != batch:
            grid = grid.expand(batch, *grid.shape[1:])
        warped = F.grid_sample(
            source, grid, mode=sample_mode, padding_mode=padding_mode, align_corners=True
        )
    return warped.to(image.dtype)


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
