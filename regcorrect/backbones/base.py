"""The contract between a translation method (a *backbone*) and the mode engine.

A backbone owns the generator(s) and discriminator(s) of one method — CycleGAN, MUNIT, UNIT,
NICE-GAN, Pix2Pix or your own — in either the cyclic form (mode C: two generators, two
discriminators, the method's own cycle/reconstruction losses) or the non-cyclic form (mode NC: one
generator X→Y and one discriminator on Y, adversarial loss only). It knows nothing about
registration: :func:`regcorrect.build_model` adds the registration network R, the correction and
smoothness losses (modes C+R and NC+R), the optimizers, the replay buffer and the learning-rate
schedule around it.

Conventions for every backbone:

* Images are ``(B, C, H, W)`` tensors with values in ``[-1, 1]`` (generators end in ``tanh``);
  ``source`` is domain X (e.g. T1), ``target`` is domain Y (e.g. T2), possibly misaligned.
* :meth:`TranslationBackbone.generator_forward` returns **weighted** loss terms, each a float32
  scalar tensor; the engine sums them (plus the +R terms) and calls ``backward`` once.
* ``fakes`` are the generated images the discriminators must see, already ``detach()``-ed; the
  engine may pass them through a replay buffer before :meth:`discriminator_losses`.
* **Adversarial terms are summed over discriminator scales and heads**, never averaged, on both
  sides — as MUNIT, UNIT and NICE-GAN do in their original code, so that each method's published
  loss weights keep their meaning. :meth:`TranslationBackbone.gan_generator_loss` and
  :meth:`TranslationBackbone.gan_discriminator_loss` apply this rule to a tensor or a list of
  per-scale outputs. (The discriminator side is the library's ``0.5 * (real + fake)`` per scale.)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .._checks import check_choice
from ..losses.adversarial import GAN_MODES, DiscriminatorOutput, GANLoss

__all__ = ["GeneratorOutput", "TranslationBackbone"]


@dataclass
class GeneratorOutput:
    """What one generator pass of a backbone produces.

    Attributes:
        translated: ``G(x)``, the X→Y translation of ``source`` with its autograd graph,
            shape ``(B, C_out, H, W)``. The +R modes register it onto ``target``.
        losses: weighted generator loss terms by name (``"adversarial"``, ``"cycle"``, ...),
            float32 scalars.
        fakes: detached generated images for the discriminator update, keyed by the name the
            backbone's :meth:`~TranslationBackbone.discriminator_losses` expects (e.g.
            ``"target"`` for the fake Y images, ``"source"`` for the fake X images).
    """

    translated: Tensor
    losses: dict[str, Tensor]
    fakes: dict[str, Tensor] = field(default_factory=dict)


class TranslationBackbone(nn.Module, ABC):
    """Base class of every translation method.

    Args:
        cyclic: ``True`` for mode C (two generators, two discriminators, cycle/reconstruction
            losses), ``False`` for mode NC (one generator X→Y, one discriminator on Y,
            adversarial loss only).
        gan_mode: ``"lsgan"`` (the paper's choice), ``"vanilla"`` or ``"hinge"``.
    """

    #: Short name used by :func:`regcorrect.build_model` (``"cyclegan"``, ``"munit"``, ...).
    method: str = ""

    def __init__(self, *, cyclic: bool, gan_mode: str = "lsgan") -> None:
        super().__init__()
        check_choice(gan_mode, "gan_mode", GAN_MODES)
        self.cyclic = bool(cyclic)
        self.gan = GANLoss(gan_mode)

    @abstractmethod
    def generators(self) -> dict[str, nn.Module]:
        """The networks the generator optimizer updates, by name (e.g. ``{"generator": ...}``)."""

    @abstractmethod
    def discriminators(self) -> dict[str, nn.Module]:
        """The networks the discriminator optimizer updates, by name."""

    @abstractmethod
    def translate(self, source: Tensor) -> Tensor:
        """Deterministic X→Y translation ``G(x)`` of ``source`` ``(B, C_in, H, W)``."""

    @abstractmethod
    def generator_forward(self, source: Tensor, target: Tensor) -> GeneratorOutput:
        """One generator pass: X→Y translation, weighted generator losses, fakes for D."""

    @abstractmethod
    def discriminator_losses(
        self, source: Tensor, target: Tensor, fakes: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """Weighted discriminator loss terms on real images and the (detached) ``fakes``."""

    def gan_generator_loss(self, fake_prediction: DiscriminatorOutput) -> Tensor:
        """Generator-side GAN loss of ``D(G(x))``, **summed** over discriminator scales.

        Args:
            fake_prediction: one output tensor, or a list of them (one per scale or head).

        Returns:
            Float32 scalar ``sum_s gan.generator(fake_prediction[s])`` (unweighted).

        Example:
            >>> from regcorrect.backbones import CycleGAN
            >>> backbone = CycleGAN(base_channels=8, num_residual_blocks=1, cyclic=False)
            >>> backbone.gan_generator_loss([torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 2, 2)])
            tensor(1.)
        """
        return torch.stack([self.gan.generator(p) for p in _per_scale(fake_prediction)]).sum()

    def gan_discriminator_loss(
        self, real_prediction: DiscriminatorOutput, fake_prediction: DiscriminatorOutput
    ) -> Tensor:
        """Discriminator-side GAN loss, **summed** over discriminator scales.

        Args:
            real_prediction: ``D(y)``, a tensor or a list of per-scale tensors.
            fake_prediction: ``D(G(x).detach())``, with as many scales as ``real_prediction``.

        Returns:
            Float32 scalar ``sum_s gan.discriminator(real[s], fake[s])`` (unweighted).
        """
        real, fake = _per_scale(real_prediction), _per_scale(fake_prediction)
        if len(real) != len(fake):
            raise ValueError(
                "real_prediction and fake_prediction must have the same number of scales, got "
                f"{len(real)} and {len(fake)}"
            )
        terms = [self.gan.discriminator(r, f) for r, f in zip(real, fake, strict=True)]
        return torch.stack(terms).sum()


def _per_scale(prediction: DiscriminatorOutput) -> list[Tensor]:
    """A discriminator output as a list of per-scale tensors (a single tensor is one scale)."""
    if isinstance(prediction, Tensor):
        return [prediction]
    if isinstance(prediction, (list, tuple)) and len(prediction) > 0:
        return list(prediction)
    raise TypeError(
        "a discriminator output must be a tensor or a non-empty list of tensors, got "
        f"{type(prediction).__name__}"
    )
