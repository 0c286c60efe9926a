"""Random affine misalignment: the noise levels of the RegGAN paper (Table 2).

The paper creates misaligned pairs from aligned ones by adding, independently to the source and
to the target image, a random rotation, translation and rescaling, each drawn uniformly:

=====  ========  ===========  =========
level  rotation  translation  rescaling
=====  ========  ===========  =========
0      0°        0 %          0 %
1      ±1°       ±2 %         ±2 %
2      ±2°       ±4 %         ±4 %
3      ±3°       ±6 %         ±6 %
4      ±4°       ±8 %         ±8 %
5      ±5°       ±10 %        ±10 %
=====  ========  ===========  =========

Table 1 of the paper uses ±5°, ±5 %, ±5 %: :meth:`Misalignment.custom`.
"""

from __future__ import annotations

import math

import torch
from kornia.geometry.transform import get_rotation_matrix2d, warp_affine
from torch import Tensor

from regcorrect._checks import (
    as_scalar,
    check_count,
    check_finite,
    check_float,
    check_rank,
    check_same_device,
    check_tensor,
    is_real,
)

__all__ = ["Misalignment", "NOISE_LEVELS", "compose_affine"]

NOISE_LEVELS: dict[int, tuple[float, float, float]] = {
    level: (float(level), 0.02 * level, 0.02 * level) for level in range(6)
}
"""Paper Table 2: level -> (rotation in degrees, translation fraction, scale fraction), each ±."""

_PARAM_KEYS = ("angle_deg", "translation_frac", "scale")


def check_generator(generator: object) -> None:
    """Raise ``TypeError`` unless ``generator`` is ``None`` or a CPU ``torch.Generator``."""
    if generator is not None and not (
        isinstance(generator, torch.Generator) and generator.device.type == "cpu"
    ):
        raise TypeError(f"generator must be None or a CPU torch.Generator, got {generator!r}")


def _check_range(value: float, name: str, *, below: float | None = None) -> float:
    value = as_scalar(value)  # type: ignore[assignment]
    if not is_real(value):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not 0 <= value < math.inf or (below is not None and value >= below):
        bound = f" and < {below}" if below is not None else ""
        raise ValueError(f"{name} must be >= 0{bound}, got {value!r}")
    return value


class Misalignment:
    """Random rotation, translation and scaling of image batches, as the paper's noise.

    Convention:
        - The matrices are ``(n, 2, 3)`` in pixel coordinates ``(x, y)`` = (column, row), origin
          at the centre of the top-left pixel, and map a *source* pixel to its position in the
          *warped* image (the OpenCV / kornia ``warp_affine`` convention; the sampler uses the
          inverse).
        - Rotation and scaling are about the image centre ``((W - 1) / 2, (H - 1) / 2)``; a
          positive ``angle_deg`` turns the content counter-clockwise as displayed (row 0 at the
          top).
        - ``translation_frac = (tx, ty)`` shifts the content by ``tx * W`` pixels to the right and
          ``ty * H`` pixels down; ``scale > 1`` enlarges it. Shifts are not rounded to whole
          pixels (torchvision's ``RandomAffine``, used by the official code, rounds them).
        - Each parameter is uniform on its ± range, independently per image.
        - Warping is bilinear and the area that comes from outside the image is ``-1`` (the
          background), blended smoothly at the border.

    Args:
        level: noise level 0 to 5 of the paper's Table 2. Level 0 is exactly the identity.

    Example:
        >>> noise = Misalignment(3)
        >>> images = torch.rand(4, 1, 64, 64) * 2 - 1
        >>> warped, matrices = noise(images, generator=torch.Generator().manual_seed(0))
        >>> warped.shape, matrices.shape
        (torch.Size([4, 1, 64, 64]), torch.Size([4, 2, 3]))
    """

    def __init__(self, level: int = 0) -> None:
        if not isinstance(level, int) or isinstance(level, bool):
            raise TypeError(f"level must be an int, got {type(level).__name__}")
        if level not in NOISE_LEVELS:
            raise ValueError(f"level must be one of {list(NOISE_LEVELS)}, got {level!r}")
        self.level: int | None = level
        self.rotation_deg, self.translation_frac, self.scale_frac = NOISE_LEVELS[level]

    @classmethod
    def custom(
        cls, *, rotation_deg: float, translation_frac: float, scale_frac: float
    ) -> Misalignment:
        """Misalignment with custom ± ranges, e.g. Table 1's ``(5, 0.05, 0.05)``.

        Args:
            rotation_deg: maximum rotation in degrees, ``>= 0``.
            translation_frac: maximum shift as a fraction of ``(W, H)``, in ``[0, 1)``.
            scale_frac: maximum relative scaling, in ``[0, 1)``; the scale is in
                ``[1 - scale_frac, 1 + scale_frac]``.
        """
        noise = cls(0)
        noise.level = None
        noise.rotation_deg = _check_range(rotation_deg, "rotation_deg")
        noise.translation_frac = _check_range(translation_frac, "translation_frac", below=1.0)
        noise.scale_frac = _check_range(scale_frac, "scale_frac", below=1.0)
        return noise

    @property
    def is_identity(self) -> bool:
        """Whether every range is zero (then every sample is exactly the identity)."""
        return self.rotation_deg == self.translation_frac == self.scale_frac == 0.0

    def __repr__(self) -> str:
        name = f"level={self.level}, " if self.level is not None else ""
        return (
            f"Misalignment({name}rotation_deg=±{self.rotation_deg:g}, "
            f"translation_frac=±{self.translation_frac:g}, scale_frac=±{self.scale_frac:g})"
        )

    def sample_params(self, n: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Draw ``n`` independent parameter sets (on the CPU, float32).

        The draws are, in this order, ``angle_deg``, ``translation_frac`` and ``scale``, so a
        ``generator`` seeded the same way gives the same parameters.

        Args:
            n: number of images, ``>= 0``.
            generator: optional CPU ``torch.Generator``; default: torch's global generator.

        Returns:
            ``{"angle_deg": (n,), "translation_frac": (n, 2) as (tx, ty), "scale": (n,)}``.
        """
        n = check_count(n, "n")
        check_generator(generator)

        def symmetric(*shape: int) -> Tensor:
            return torch.rand(*shape, generator=generator) * 2.0 - 1.0

        return {
            "angle_deg": symmetric(n) * self.rotation_deg,
            "translation_frac": symmetric(n, 2) * self.translation_frac,
            "scale": 1.0 + symmetric(n) * self.scale_frac,
        }

    @staticmethod
    def identity_params(n: int) -> dict[str, Tensor]:
        """Parameters of ``n`` identity transforms, in the layout of :meth:`sample_params`."""
        n = check_count(n, "n")
        return {
            "angle_deg": torch.zeros(n),
            "translation_frac": torch.zeros(n, 2),
            "scale": torch.ones(n),
        }

    @staticmethod
    def matrices(params: dict[str, Tensor], size: tuple[int, int]) -> Tensor:
        """Affine matrices ``(n, 2, 3)`` in pixel coordinates for images of ``size = (H, W)``.

        See the class convention; ``angle_deg = 0``, ``translation_frac = 0``, ``scale = 1``
        gives exactly ``[[1, 0, 0], [0, 1, 0]]``.
        """
        angle, translation, scale = _check_params(params)
        height, width = _check_size(size)
        center = torch.tensor([(width - 1) / 2.0, (height - 1) / 2.0], dtype=angle.dtype)
        center = center.expand(angle.shape[0], 2)
        matrix = get_rotation_matrix2d(center, angle, torch.stack([scale, scale], dim=-1))
        shift = translation * torch.tensor([width, height], dtype=angle.dtype)
        return torch.cat([matrix[:, :, :2], matrix[:, :, 2:] + shift.unsqueeze(-1)], dim=-1)

    def __call__(
        self,
        images: Tensor,
        generator: torch.Generator | None = None,
        params: dict[str, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Warp each image of a batch with its own random affine transform.

        Args:
            images: float ``(N, C, H, W)`` in ``[-1, 1]`` (background ``-1``); all channels of one
                image share its transform.
            generator: optional CPU ``torch.Generator`` used when ``params`` is ``None``.
            params: optional parameters from :meth:`sample_params` with ``n == N``, to re-apply
                a known transform (the ranges of this object are then not used).

        Returns:
            ``(warped, matrices)``: ``warped`` ``(N, C, H, W)`` of the dtype and device of
            ``images``, ``-1`` where the source lies outside the image; ``matrices``
            ``(N, 2, 3)`` on the CPU. Identity matrices return an exact copy of ``images``.
        """
        check_float(images, "images")
        check_rank(images, "images", (4,), "(N, C, H, W)")  # finiteness: in warp
        n, _, height, width = images.shape
        if params is None:
            params = self.sample_params(n, generator)
        elif _check_params(params)[0].shape[0] != n:
            raise ValueError(
                f"params must hold {n} parameter sets (one per image), "
                f"got {params['angle_deg'].shape[0]}"
            )
        matrices = self.matrices(params, (height, width))
        return self.warp(images, matrices), matrices

    @staticmethod
    def warp(images: Tensor, matrices: Tensor) -> Tensor:
        """Warp each image of a batch with its own affine matrix, the background ``-1`` outside.

        This is the resampling :meth:`__call__` applies; use it to apply a composed transform
        (e.g. an augmentation followed by the noise, :func:`compose_affine`) with *one*
        interpolation instead of two.

        Args:
            images: float ``(N, C, H, W)`` in ``[-1, 1]`` (background ``-1``).
            matrices: ``(N, 2, 3)`` in the convention of the class (pixel coordinates, mapping a
                source pixel to its warped position), on any device.

        Returns:
            ``(N, C, H, W)`` of the dtype and device of ``images``; identity matrices return an
            exact copy.
        """
        check_float(images, "images")
        check_rank(images, "images", (4,), "(N, C, H, W)")
        check_finite(images, "images")
        check_tensor(matrices, "matrices")
        check_float(matrices, "matrices")
        if matrices.shape != (images.shape[0], 2, 3):
            raise ValueError(
                f"matrices must have shape ({images.shape[0]}, 2, 3) (one per image), "
                f"got {tuple(matrices.shape)}"
            )
        check_finite(matrices, "matrices")
        determinants = torch.linalg.det(matrices[:, :, :2].double())
        if bool((determinants.abs() < 1e-12).any()):
            singular = (determinants.abs() < 1e-12).nonzero().flatten().tolist()
            raise ValueError(
                f"matrices must be invertible (an affine map that does not collapse the image), "
                f"but those at index {singular} are singular"
            )
        identity = torch.eye(2, 3, dtype=matrices.dtype, device=matrices.device)
        if torch.equal(matrices, identity.expand_as(matrices)):
            return images.clone()
        # Bilinear warping is linear and pads with zeros: shifting by +1 and back makes the
        # outside exactly -1 and blends the border towards -1, for any number of channels.
        warped = warp_affine(
            images + 1.0,
            matrices.to(images.device, images.dtype),
            dsize=(images.shape[-2], images.shape[-1]),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )
        return warped - 1.0


def compose_affine(outer: Tensor, inner: Tensor) -> Tensor:
    """The affine transform "``inner``, then ``outer``" as one ``(N, 2, 3)`` matrix.

    Both are ``(N, 2, 3)`` (or broadcastable batch sizes) in the convention of
    :class:`Misalignment`: a point ``p`` goes to ``outer(inner(p))``, i.e. the product of the
    homogeneous ``3 × 3`` matrices ``outer @ inner``.

    Example:
        >>> shift = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]]])
        >>> compose_affine(shift, shift)[0, 0, 2].item()
        4.0
    """
    for name, matrix in (("outer", outer), ("inner", inner)):
        check_tensor(matrix, name)
        check_float(matrix, name)
        if matrix.ndim != 3 or matrix.shape[-2:] != (2, 3):
            raise ValueError(f"{name} must have shape (N, 2, 3), got {tuple(matrix.shape)}")
    check_same_device(outer=outer, inner=inner)
    if outer.shape[0] != inner.shape[0] and 1 not in (outer.shape[0], inner.shape[0]):
        raise ValueError(
            f"outer and inner must have the same batch size, or one of them 1 (broadcast), got "
            f"{tuple(outer.shape)} and {tuple(inner.shape)}"
        )
    dtype = torch.promote_types(outer.dtype, inner.dtype)
    outer, inner = outer.to(dtype), inner.to(dtype)
    linear = outer[..., :2] @ inner[..., :2]
    return torch.cat([linear, outer[..., :2] @ inner[..., 2:] + outer[..., 2:]], dim=-1)


def _check_params(params: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    if not isinstance(params, dict) or set(params) != set(_PARAM_KEYS):
        keys = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params must be a dict with keys {list(_PARAM_KEYS)}, got {keys}")
    for key in _PARAM_KEYS:
        check_tensor(params[key], f"params[{key!r}]")
        check_float(params[key], f"params[{key!r}]")
        check_finite(params[key], f"params[{key!r}]")
    angle, translation, scale = (params[key].cpu() for key in _PARAM_KEYS)
    n = angle.shape[0] if angle.ndim == 1 else -1
    if angle.shape != (n,) or translation.shape != (n, 2) or scale.shape != (n,):
        raise ValueError(
            "params must hold angle_deg (n,), translation_frac (n, 2) and scale (n,), got "
            f"{tuple(angle.shape)}, {tuple(translation.shape)} and {tuple(scale.shape)}"
        )
    dtype = angle.dtype
    return angle, translation.to(dtype), scale.to(dtype)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        raise ValueError(f"size must be a pair (H, W) of positive ints, got {size!r}")
    return int(size[0]), int(size[1])
