"""Centred correction: train the generator under R's field minus its persistent mean shift.

Why: in NC+R nothing but the generator's inductive bias ties the position of ``G(x)`` to ``x``.
A constant shift of R's field costs nothing under the smoothness loss, and a fractional shift
also blurs (bilinear sampling averages neighbours), which hides high-frequency artefacts of
``G(x)`` from the correction loss. On our data R settled on such shifts (0.3–0.7 px, mostly
diagonal) and the generator, scored without R, was off by as much (``docs/training.md``).

The paper's misalignment is zero-mean over the data, so averaged over many batches the field
of a good R has no constant part; a persistent mean is drift. :class:`CenteredCorrection` keeps
a running mean ``m`` of the field's (foreground-weighted) batch mean and adds

.. math:: \\mathcal{L}_{centre} = \\lVert \\tilde y - G(x) \\circ \\operatorname{sg}(\\phi - m)
    \\rVert_1

a correction loss whose field is R's minus ``m``, with no gradient into R (``sg`` = stop
gradient): it pulls ``G`` to where it matches the target without R's persistent shift, while R
keeps absorbing each pair's own misalignment. A penalty on R's mean itself was tried first and
is not offered: being linear in the mean, with ``m`` lagging behind, it drove R's field into a
diverging oscillation under strong misalignment (noise level 5).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from einops import reduce, repeat
from torch import Tensor, nn

from .._checks import (
    check_choice,
    check_displacement,
    check_positive,
    check_same_device,
    check_spatial_dims,
    check_tensor,
)
from ..metrics import foreground_mask
from ..registration.warp import PADDING_MODES, warp
from .correction import correction_loss

__all__ = [
    "batch_mean_displacement",
    "centered_correction_loss",
    "CenteredCorrection",
    "target_foreground",
]


def target_foreground(target: Tensor, mask: Tensor | None = None) -> Tensor:
    """``(B, 1, *spatial)`` boolean: pixels where ``mask`` (broadcast) or any channel of
    ``target`` is foreground (``!= -1``) — the weights :class:`CenteredCorrection` tracks R's
    mean field over in the training steps."""
    check_tensor(target, "target")
    return foreground_mask(target, mask).any(dim=1, keepdim=True)


def _check_weights(weights: Tensor | None, displacement: Tensor) -> None:
    if weights is None:
        return
    check_tensor(weights, "weights")
    check_same_device(displacement=displacement, weights=weights)
    expected = (displacement.shape[0], 1, *displacement.shape[2:])
    if weights.ndim != displacement.ndim or any(
        w not in (1, e) for w, e in zip(weights.shape, expected, strict=True)
    ):
        raise ValueError(
            f"weights must be broadcastable to {expected} (batch, 1, *spatial of displacement), "
            f"got {tuple(weights.shape)}"
        )


def batch_mean_displacement(displacement: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean of ``displacement`` over batch and pixels, per channel, optionally weighted.

    Args:
        displacement: ``(B, N, *spatial)`` in pixels (library convention, channels in axis
            order ``(dy, dx)`` / ``(dz, dy, dx)``).
        weights: ``None`` (plain mean) or non-negative weights broadcastable to
            ``(B, 1, *spatial)``, e.g. the foreground of the target (in the background the
            correction loss does not constrain the field, so R can move it freely and cancel a
            shift of the foreground in a plain mean). All-zero weights (and an empty batch)
            fall back to the plain mean; negative or non-finite weights are an error.

    Returns:
        ``(N,)`` (float32, or float64 for a float64 field).

    Example:
        >>> u = torch.zeros(1, 2, 4, 4)
        >>> u[:, :, :2] = 0.5  # the upper half moves
        >>> batch_mean_displacement(u)
        tensor([0.2500, 0.2500])
        >>> upper = torch.zeros(1, 1, 4, 4)
        >>> upper[:, :, :2] = 1
        >>> batch_mean_displacement(u, upper)
        tensor([0.5000, 0.5000])
    """
    check_displacement(displacement, "displacement")
    _check_weights(weights, displacement)
    field = displacement.to(torch.promote_types(displacement.dtype, torch.float32))
    if weights is None:
        return reduce(field, "b n ... -> n", "mean")
    w = weights.detach().to(field.dtype).expand(field.shape[0], 1, *field.shape[2:])
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError("weights must be finite and >= 0")
    total = w.sum()
    if total <= 0:
        return reduce(field, "b n ... -> n", "mean")
    return reduce(field * w, "b n ... -> n", "sum") / total


def centered_correction_loss(
    translated: Tensor,
    target: Tensor,
    displacement: Tensor,
    offset: Tensor,
    mask: Tensor | None = None,
    *,
    padding_mode: str = "border",
) -> Tensor:
    """L1 between ``target`` and ``translated`` warped by ``displacement - offset`` (detached).

    Gradients reach ``translated`` only; neither the field nor the offset gets any.

    Args:
        translated: ``G(x)``, ``(B, C, *spatial)``.
        target: the (misaligned) target, same shape.
        displacement: R's field ``(B, N, *spatial)`` in pixels.
        offset: ``(N,)`` pixels removed from every pixel of the field, e.g. its running mean.
        mask: optional weights of the L1, broadcastable to ``target``
            (:func:`~regcorrect.losses.correction_loss`).
        padding_mode: padding of the warp.

    Returns:
        Scalar tensor.

    Example:
        >>> image = torch.zeros(1, 1, 6, 6)
        >>> image[..., 2:4, 2:4] = 1.0
        >>> shift = torch.zeros(1, 2, 6, 6)
        >>> shift[:, 1] = 1.0  # R's field: everything moves one pixel, all of it drift
        >>> centered_correction_loss(image, image, shift, torch.tensor([0.0, 1.0]))
        tensor(0.)
    """
    n = check_displacement(displacement, "displacement")
    check_tensor(translated, "translated")
    check_tensor(target, "target")
    check_tensor(offset, "offset")
    check_same_device(
        translated=translated, target=target, displacement=displacement, offset=offset
    )
    if translated.shape != target.shape:
        raise ValueError(
            f"translated and target must have the same shape, got {tuple(translated.shape)} "
            f"and {tuple(target.shape)}"
        )
    if offset.shape != (n,):
        raise ValueError(
            f"offset must have shape ({n},) (one value per displacement channel), got "
            f"{tuple(offset.shape)}"
        )
    field = displacement.detach() - repeat(offset.detach().to(displacement), "n -> 1 n" + " 1" * n)
    return correction_loss(warp(translated, field, padding_mode=padding_mode), target, mask)


class CenteredCorrection(nn.Module):
    """:func:`centered_correction_loss` against a running mean of the field (a buffer).

    In training mode each call uses the running mean of the *earlier* batches as the offset,
    then folds this batch's (detached, ``weights``-weighted) mean field into it; in eval mode
    the running mean is left alone. Under ``torch.distributed`` the batch mean is averaged
    over the processes first, so every process keeps the same running mean.

    Args:
        spatial_dims: 2 or 3.
        momentum: ``α`` of the running mean ``m ← (1 − α) m + α ū``, in ``(0, 1]`` (default
            0.02: about the last 50 batches).
        padding_mode: padding of the warp.

    Example:
        >>> centring = CenteredCorrection(2)
        >>> image, field = torch.rand(2, 1, 8, 8), torch.full((2, 2, 8, 8), 0.5)
        >>> loss = centring(image, image, field)
        >>> centring.running_mean
        tensor([0.0100, 0.0100])
    """

    running_mean: Tensor

    def __init__(
        self, spatial_dims: int = 2, momentum: float = 0.02, *, padding_mode: str = "border"
    ) -> None:
        super().__init__()
        spatial_dims = check_spatial_dims(spatial_dims)
        momentum = check_positive(momentum, "momentum")
        if momentum > 1:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        check_choice(padding_mode, "padding_mode", PADDING_MODES)
        self.spatial_dims = spatial_dims
        self.momentum = float(momentum)
        self.padding_mode = padding_mode
        self.register_buffer("running_mean", torch.zeros(spatial_dims))

    def forward(
        self,
        translated: Tensor,
        target: Tensor,
        displacement: Tensor,
        weights: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Centred correction loss of ``translated`` (``(B, C, *spatial)``) onto ``target``.

        Args:
            translated, target: ``(B, C, *spatial)``.
            displacement: R's field ``(B, N, *spatial)``, N = ``spatial_dims``.
            weights: pixel weights of the running mean, broadcastable to ``(B, 1, *spatial)``
                (the target's foreground, say); ``None``: all pixels.
            mask: weights of the L1.
        """
        n = check_displacement(displacement, "displacement")
        if n != self.spatial_dims:
            raise ValueError(
                f"displacement must have {self.spatial_dims} channels (spatial_dims), got shape "
                f"{tuple(displacement.shape)}"
            )
        offset = self.running_mean.clone()
        if self.training and displacement.shape[0] > 0:  # an empty batch has no mean
            with torch.no_grad():
                mean = batch_mean_displacement(displacement.detach(), weights)
                if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                    dist.all_reduce(mean)
                    mean /= dist.get_world_size()
                self.running_mean.lerp_(mean.to(self.running_mean), self.momentum)
        return centered_correction_loss(
            translated, target, displacement, offset, mask, padding_mode=self.padding_mode
        )

    def extra_repr(self) -> str:
        return f"spatial_dims={self.spatial_dims}, momentum={self.momentum}"
