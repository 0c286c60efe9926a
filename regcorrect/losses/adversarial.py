"""Adversarial losses (the :math:`\\mathcal{L}_{Adv}` term of Eq. 1 and Eq. 9 of the RegGAN paper).

Three formulations, for the generator and the discriminator sides:

* ``"lsgan"`` (the paper's choice, Mao et al. 2017): mean squared error of the discriminator's
  output to 1 (real) and 0 (fake).
* ``"vanilla"``: binary cross-entropy on logits (Goodfellow et al. 2014, non-saturating for G).
* ``"hinge"``: ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))`` for D, ``-mean(D(fake))`` for G.

Discriminator outputs may be a tensor (a PatchGAN map) or a list/tuple of tensors (one per scale
of a multi-scale discriminator); a list is reduced by the **mean** over its items. The reference
backbones (MUNIT, UNIT, NICE-GAN) instead call these losses once per scale and **sum** the terms,
as their original code does (``TranslationBackbone.gan_generator_loss``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import as_scalar, check_choice, check_float, check_same_device

__all__ = ["GAN_MODES", "DiscriminatorOutput", "generator_loss", "discriminator_loss", "GANLoss"]

GAN_MODES = ("lsgan", "vanilla", "hinge")

DiscriminatorOutput = Tensor | Sequence[Tensor]


def _as_list(prediction: DiscriminatorOutput, name: str) -> list[Tensor]:
    if isinstance(prediction, Tensor):
        items = [prediction]
    elif isinstance(prediction, (list, tuple)) and len(prediction) > 0:
        items = list(prediction)
    else:
        raise TypeError(
            f"{name} must be a tensor or a non-empty list of tensors, got {type(prediction).__name__}"
        )
    for i, item in enumerate(items):
        check_float(item, f"{name}[{i}]" if len(items) > 1 else name)
    return items


def _single(prediction: Tensor, real: bool, mode: str, for_discriminator: bool) -> Tensor:
    prediction = prediction.to(torch.promote_types(prediction.dtype, torch.float32))
    if mode == "lsgan":
        label = 1.0 if real else 0.0
        return F.mse_loss(prediction, torch.full_like(prediction, label))
    if mode == "vanilla":
        label = 1.0 if real else 0.0
        return F.binary_cross_entropy_with_logits(prediction, torch.full_like(prediction, label))
    # hinge
    if for_discriminator:
        return F.relu(1.0 - prediction).mean() if real else F.relu(1.0 + prediction).mean()
    return -prediction.mean()


def generator_loss(fake_prediction: DiscriminatorOutput, mode: str = "lsgan") -> Tensor:
    """Generator side: push the discriminator's output on translated images towards "real".

    Args:
        fake_prediction: ``D(G(x))``, a tensor of any shape or a list of them (multi-scale D).
        mode: ``"lsgan"``, ``"vanilla"`` or ``"hinge"``.

    Returns:
        A scalar tensor, float32 (float64 for float64 predictions). For ``"lsgan"``:
        ``mean((D(G(x)) - 1)^2)``.

    Example:
        >>> generator_loss(torch.ones(2, 1, 4, 4))
        tensor(0.)
    """
    check_choice(mode, "mode", GAN_MODES)
    items = _as_list(fake_prediction, "fake_prediction")
    return torch.stack([_single(p, True, mode, False) for p in items]).mean()


def discriminator_loss(
    real_prediction: DiscriminatorOutput, fake_prediction: DiscriminatorOutput, mode: str = "lsgan"
) -> Tensor:
    """Discriminator side: real images to "real", translated (detached) images to "fake".

    Args:
        real_prediction: ``D(y)``.
        fake_prediction: ``D(G(x).detach())``.
        mode: ``"lsgan"``, ``"vanilla"`` or ``"hinge"``.

    Returns:
        A scalar: ``0.5 * (loss(real, 1) + loss(fake, 0))``. The half follows
        pytorch-CycleGAN-and-pix2pix; the official Reg-GAN code adds the two terms without it.
        With Adam (scale-invariant updates) the factor has almost no effect on training.

    Example:
        >>> discriminator_loss(torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
        tensor(0.)
    """
    check_choice(mode, "mode", GAN_MODES)
    real_items = _as_list(real_prediction, "real_prediction")
    fake_items = _as_list(fake_prediction, "fake_prediction")
    if len(real_items) != len(fake_items):
        raise ValueError(
            "real_prediction and fake_prediction must have the same number of scales, got "
            f"{len(real_items)} and {len(fake_items)}"
        )
    for scale, (real_item, fake_item) in enumerate(zip(real_items, fake_items, strict=True)):
        check_same_device(
            **{f"real_prediction[{scale}]": real_item, f"fake_prediction[{scale}]": fake_item}
        )
    real = torch.stack([_single(p, True, mode, True) for p in real_items]).mean()
    fake = torch.stack([_single(p, False, mode, True) for p in fake_items]).mean()
    return 0.5 * (real + fake)


class GANLoss(nn.Module):
    """Module form of :func:`generator_loss` / :func:`discriminator_loss`.

    Args:
        mode: ``"lsgan"`` (default, as in the paper), ``"vanilla"`` or ``"hinge"``.

    Example:
        >>> gan = GANLoss("lsgan")
        >>> d_fake = torch.zeros(2, 1, 8, 8)
        >>> gan.generator(d_fake)
        tensor(1.)
        >>> gan.discriminator(torch.ones(2, 1, 8, 8), d_fake)
        tensor(0.)
    """

    def __init__(self, mode: str = "lsgan") -> None:
        super().__init__()
        check_choice(mode, "mode", GAN_MODES)
        self.mode = mode

    def generator(self, fake_prediction: DiscriminatorOutput) -> Tensor:
        """Generator-side loss, see :func:`generator_loss`."""
        return generator_loss(fake_prediction, self.mode)

    def discriminator(
        self, real_prediction: DiscriminatorOutput, fake_prediction: DiscriminatorOutput
    ) -> Tensor:
        """Discriminator-side loss, see :func:`discriminator_loss`."""
        return discriminator_loss(real_prediction, fake_prediction, self.mode)

    def forward(self, prediction: DiscriminatorOutput, target_is_real: bool) -> Tensor:
        """Loss of ``prediction`` against a real/fake label, as in pytorch-CycleGAN-and-pix2pix.

        For ``"hinge"`` this is the discriminator form.
        """
        target_is_real = as_scalar(target_is_real)  # np.bool_ / a 0-d bool tensor as well
        if not isinstance(target_is_real, bool):  # 1 == True, but a loss target is no int
            raise ValueError(f"target_is_real must be True or False, got {target_is_real!r}")
        items = _as_list(prediction, "prediction")
        return torch.stack([_single(p, target_is_real, self.mode, True) for p in items]).mean()

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
