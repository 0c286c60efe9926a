"""Joint data augmentation of aligned pairs: one random flip and affine for source and target.

Unlike :class:`~regcorrect.data.Misalignment` (the paper's noise, drawn *independently* for
source and target), a :class:`PairAugmentation` moves every channel of an image — stack source,
target and mask along the channels — by the *same* transform, so an aligned pair stays aligned
and a misaligned one keeps its misalignment. It widens what the generator sees: on the bundled
ICBM152 data the held-out slab (the most superior slices, whose brain covers 6–31 % of the slice
against 35 % on average in training) is out of the training distribution, and a zoom-out
augmentation narrows that gap (``docs/results/augmented/noise_sweep.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from regcorrect._checks import (
    as_scalar,
    check_count,
    check_float,
    check_rank,
    check_tensor,
    is_real,
)
from regcorrect.data.misalignment import (
    Misalignment,
    _check_range,
    _check_size,
    check_generator,
    compose_affine,
)

__all__ = ["PairAugmentation"]

_KEYS = ("flip", "angle_deg", "translation_frac", "scale")


def _check_scale_range(scale_range: Sequence[float]) -> tuple[float, float]:
    if isinstance(scale_range, (tuple, list)):
        scale_range = tuple(as_scalar(s) for s in scale_range)  # type: ignore[assignment]
    if (
        not isinstance(scale_range, tuple)
        or len(scale_range) != 2
        or not all(is_real(s) for s in scale_range)
    ):
        raise TypeError(f"scale_range must be a pair (low, high) of numbers, got {scale_range!r}")
    low, high = float(scale_range[0]), float(scale_range[1])
    if not 0 < low <= high < math.inf:
        raise ValueError(f"scale_range must satisfy 0 < low <= high < inf, got {scale_range!r}")
    return low, high


def _check_keys(params: dict[str, Tensor]) -> None:
    if not isinstance(params, dict) or set(params) != set(_KEYS):
        keys = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params must be a dict with keys {list(_KEYS)}, got {keys}")


def _check_flip(flip: Tensor, n: int) -> Tensor:
    check_tensor(flip, "params['flip']")
    if flip.dtype != torch.bool or flip.shape != (n,):
        raise ValueError(
            f"params['flip'] must be a bool tensor of shape ({n},), got {flip.dtype} "
            f"{tuple(flip.shape)}"
        )
    return flip


class PairAugmentation:
    """Random horizontal flip, then a random rotation, translation and scaling, shared by all
    channels of an image.

    Convention:
        The affine part follows :class:`~regcorrect.data.Misalignment` (about the image centre,
        pixel coordinates, outside = background ``-1``, bilinear); the flip mirrors the last
        (width) axis and comes first. Each parameter is drawn uniformly and independently per
        image: the rotation on ``±rotation_deg``, each shift on ``±translation_frac`` of the
        image size, the scale on ``scale_range`` (``< 1`` shrinks the content), the flip with
        ``flip_probability``. Parameters are drawn in the order flip, angle, translation, scale.

    Args:
        rotation_deg: maximum rotation in degrees, ``>= 0``.
        translation_frac: maximum shift as a fraction of ``(W, H)``, in ``[0, 1)``.
        scale_range: ``(low, high)`` with ``0 < low <= high``; the default ``(0.55, 1.05)``
            mostly zooms out, so that training slices also show small brain sections.
        flip_probability: chance of a left-right flip, in ``[0, 1]`` (brains are nearly
            left-right symmetric).

    Example:
        >>> augment = PairAugmentation()
        >>> source, target = torch.rand(2, 4, 1, 32, 32) * 2 - 1
        >>> both = augment(torch.cat([source, target], dim=1), generator=torch.Generator().manual_seed(0))
        >>> both.shape  # channel 0: the source, channel 1: the target, moved alike
        torch.Size([4, 2, 32, 32])
    """

    def __init__(
        self,
        *,
        rotation_deg: float = 10.0,
        translation_frac: float = 0.05,
        scale_range: Sequence[float] = (0.55, 1.05),
        flip_probability: float = 0.5,
    ) -> None:
        self.rotation_deg = _check_range(rotation_deg, "rotation_deg")
        self.translation_frac = _check_range(translation_frac, "translation_frac", below=1.0)
        self.scale_range = _check_scale_range(scale_range)
        probability = _check_range(flip_probability, "flip_probability")
        if probability > 1:
            raise ValueError(f"flip_probability must be in [0, 1], got {flip_probability!r}")
        self.flip_probability = probability
        self._affine = Misalignment.custom(
            rotation_deg=self.rotation_deg,
            translation_frac=self.translation_frac,
            scale_frac=0.0,
        )

    def __repr__(self) -> str:
        low, high = self.scale_range
        return (
            f"PairAugmentation(rotation_deg=±{self.rotation_deg:g}, "
            f"translation_frac=±{self.translation_frac:g}, scale_range=({low:g}, {high:g}), "
            f"flip_probability={self.flip_probability:g})"
        )

    def sample_params(self, n: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Draw ``n`` parameter sets on the CPU.

        Returns:
            ``{"flip": bool (n,), "angle_deg": (n,), "translation_frac": (n, 2) as (tx, ty),
            "scale": (n,)}``.
        """
        n = check_count(n, "n")
        check_generator(generator)
        flip = torch.rand(n, generator=generator) < self.flip_probability
        params = self._affine.sample_params(n, generator)
        low, high = self.scale_range
        params["scale"] = low + (high - low) * torch.rand(n, generator=generator)
        return {"flip": flip, **params}

    def matrices(self, params: dict[str, Tensor], size: tuple[int, int]) -> Tensor:
        """The whole transform (flip, then affine) as ``(n, 2, 3)`` matrices for ``size = (H, W)``.

        In :class:`~regcorrect.data.Misalignment`'s convention (pixel coordinates, a source pixel
        to its augmented position); the flip is ``x -> W - 1 - x``. Compose it with the noise's
        matrices (:func:`~regcorrect.data.compose_affine`) to augment and misalign with one
        interpolation, as :class:`~regcorrect.data.MisalignedPairs` does.
        """
        _check_keys(params)
        height, width = _check_size(size)
        affine = Misalignment.matrices({key: params[key] for key in _KEYS[1:]}, (height, width))
        flip = _check_flip(params["flip"], affine.shape[0]).cpu()
        mirror = torch.eye(2, 3, dtype=affine.dtype).repeat(flip.shape[0], 1, 1)
        mirror[flip, 0, 0] = -1.0
        mirror[flip, 0, 2] = width - 1.0
        return compose_affine(affine, mirror)

    def __call__(
        self,
        images: Tensor,
        generator: torch.Generator | None = None,
        params: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """Augment each image of a batch; all channels of one image move alike.

        Args:
            images: float ``(N, C, H, W)`` in ``[-1, 1]`` with background ``-1`` (stack source,
                target and a ``±1`` mask along ``C``).
            generator: optional CPU ``torch.Generator`` used when ``params`` is ``None``.
            params: optional parameters from :meth:`sample_params` with ``n == N``.

        Returns:
            The augmented images, shape, dtype and device of ``images``.
        """
        check_float(images, "images")
        check_rank(images, "images", (4,), "(N, C, H, W)")
        n = images.shape[0]
        if params is None:
            params = self.sample_params(n, generator)
        _check_keys(params)
        flip = _check_flip(params["flip"], n).to(images.device).view(n, 1, 1, 1)
        flipped = torch.where(flip, images.flip(-1), images)
        affine = {key: params[key] for key in _KEYS[1:]}
        augmented, _ = self._affine(flipped, params=affine)
        return augmented
