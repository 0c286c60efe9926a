"""NICE-GAN backbone (Chen et al., "Reusing Discriminators for Encoding", CVPR 2020).

NICE-GAN has no separate generator encoder: the first layers of the discriminator of domain X
(its :class:`~regcorrect.backbones._nicegan_layers.CAMEncoder`) encode X images, and the X→Y
generator is only a translation module with AdaLIN residual blocks plus a decoder. Each
discriminator has a local and a global PatchGAN head and a CAM classifier, three real/fake
outputs. The encoders are trained by the discriminator loss only ("decoupled training").

Mode C (``cyclic=True``), as published:

* networks: decoders ``G_X→Y``, ``G_Y→X`` (generators) and ``D_X``, ``D_Y`` with their encoders
  ``E_X``, ``E_Y`` (discriminators).
* generator losses: adversarial (local + global heads), CAM adversarial, cycle
  ``|G_Y→X(E_Y(G_X→Y(E_X(x)))) - x|`` and reconstruction ``|G_Y→X(E_X(x)) - x|`` (L1, both
  directions), weights 1, 1, 10, 10.

Mode NC (``cyclic=False``): one generator X→Y and one discriminator ``D_Y``, adversarial and CAM
adversarial losses only. ``D_X`` does not exist, so its encoder cannot serve the generator; the
generator gets an encoder of its own (same architecture) that the generator loss trains, as in
the official Reg-GAN code. See ``docs/backbones.md`` for the reasoning.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .._checks import check_fits_module, check_float, check_positive, check_rank
from ..losses.cycle import cycle_loss
from ._nicegan_layers import (
    ENCODER_DOWNSAMPLINGS,
    CAMEncoder,
    EncodingGenerator,
    NICEDiscriminator,
    NICEDiscriminatorOutput,
    NICEGenerator,
    discriminator_minimum_size,
)
from .base import GeneratorOutput, TranslationBackbone

__all__ = ["NICEGANBackbone"]

#: Smallest image side the encoder and the generator accept: the latent map (side / 4) is
#: reflection-padded by 1 and needs a side of at least 2.
_GENERATOR_MINIMUM_SIZE = 2 * 2**ENCODER_DOWNSAMPLINGS


class NICEGANBackbone(TranslationBackbone):
    """NICE-GAN in mode C (two decoders, two discriminators-with-encoders) or NC.

    Args:
        in_channels: channels of domain X (``source``).
        out_channels: channels of domain Y (``target``).
        cyclic: ``True`` for mode C, ``False`` for mode NC (see the module docstring).
        gan_mode: ``"lsgan"`` (NICE-GAN's and the paper's choice), ``"vanilla"`` or ``"hinge"``.
        adversarial_weight: weight of the adversarial and CAM adversarial terms, on both the
            generator and the discriminator side (NICE-GAN: 1).
        cycle_weight: weight of the L1 cycle loss, mode C only (NICE-GAN: 10).
        reconstruction_weight: weight of the L1 reconstruction loss ``G_Y→X(E_X(x)) ≈ x``,
            mode C only (NICE-GAN: 10).
        base_channels: NICE-GAN's ``ch`` (64): width of the first encoder convolution.
        num_residual_blocks: AdaLIN residual blocks per generator (NICE-GAN: 6).
        discriminator_layers: convolutions on the global path of a discriminator (NICE-GAN: 7),
            ``>= 5``. Images fed to a discriminator need sides ``>= 3 * 2**(layers - 2)``: 96 for
            7, 48 for 6, 24 for 5.
        image_size: ``None`` (default) for the "light" generator MLP that sees globally pooled
            features and works at any size; an int or ``(H, W)`` for NICE-GAN's full MLP on the
            flattened feature map, which then accepts only that image size (and costs
            ``(H/4)(W/4)·16·base²`` parameters per generator, 268 M at 256², ``base`` 64).

    Inputs are ``(B, C, H, W)`` in ``[-1, 1]`` with ``H`` and ``W`` multiples of 4.

    Example:
        >>> model = NICEGANBackbone(base_channels=8, num_residual_blocks=1, discriminator_layers=5)
        >>> x, y = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
        >>> out = model.generator_forward(x, y)
        >>> sorted(out.losses)
        ['adversarial', 'adversarial_cam', 'cycle', 'reconstruction']
        >>> sorted(model.discriminator_losses(x, y, out.fakes))
        ['adversarial', 'adversarial_cam']
    """

    method = "nicegan"

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        cyclic: bool = True,
        gan_mode: str = "lsgan",
        adversarial_weight: float = 1.0,
        cycle_weight: float = 10.0,
        reconstruction_weight: float = 10.0,
        base_channels: int = 64,
        num_residual_blocks: int = 6,
        discriminator_layers: int = 7,
        image_size: int | tuple[int, int] | None = None,
    ) -> None:
        super().__init__(cyclic=cyclic, gan_mode=gan_mode)
        _check_int(in_channels, "in_channels", 1)
        _check_int(out_channels, "out_channels", 1)
        _check_int(base_channels, "base_channels", 1)
        _check_int(num_residual_blocks, "num_residual_blocks", 0)
        _check_int(discriminator_layers, "discriminator_layers", 5)
        for value, name in (
            (adversarial_weight, "adversarial_weight"),
            (cycle_weight, "cycle_weight"),
            (reconstruction_weight, "reconstruction_weight"),
        ):
            check_positive(value, name, strict=False)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.adversarial_weight = float(adversarial_weight)
        self.cycle_weight = float(cycle_weight)
        self.reconstruction_weight = float(reconstruction_weight)
        self.discriminator_layers = discriminator_layers
        self.image_size = _image_size(image_size, discriminator_minimum_size(discriminator_layers))
        latent_size = None
        if self.image_size is not None:
            factor = 2**ENCODER_DOWNSAMPLINGS
            latent_size = (self.image_size[0] // factor, self.image_size[1] // factor)

        def generator(channels: int) -> NICEGenerator:
            return NICEGenerator(
                out_channels=channels,
                base_channels=base_channels,
                num_residual_blocks=num_residual_blocks,
                latent_size=latent_size,
            )

        def discriminator(channels: int) -> NICEDiscriminator:
            return NICEDiscriminator(
                in_channels=channels, base_channels=base_channels, layers=discriminator_layers
            )

        self.discriminator_target = discriminator(out_channels)
        self.discriminator_source: NICEDiscriminator | None = None
        self.generator_target_to_source: NICEGenerator | None = None
        # Mode C: a decoder fed by the encoder of D_X. Mode NC: an encoder of its own + decoder.
        self.generator_source_to_target: NICEGenerator | EncodingGenerator
        if self.cyclic:
            self.discriminator_source = discriminator(in_channels)
            self.generator_source_to_target = generator(out_channels)
            self.generator_target_to_source = generator(in_channels)
        else:
            self.generator_source_to_target = EncodingGenerator(
                in_channels=in_channels,
                out_channels=out_channels,
                base_channels=base_channels,
                num_residual_blocks=num_residual_blocks,
                latent_size=latent_size,
            )

    @property
    def minimum_size(self) -> int:
        """Smallest image side :meth:`generator_forward` and :meth:`discriminator_losses` accept."""
        return discriminator_minimum_size(self.discriminator_layers)

    def generators(self) -> dict[str, nn.Module]:
        """Mode C: both decoders (their encoders live in the discriminators). Mode NC: the
        encoder-decoder X→Y."""
        networks: dict[str, nn.Module] = {
            "generator_source_to_target": self.generator_source_to_target
        }
        if self.generator_target_to_source is not None:
            networks["generator_target_to_source"] = self.generator_target_to_source
        return networks

    def discriminators(self) -> dict[str, nn.Module]:
        """``D_Y`` and, in mode C, ``D_X`` — each with its encoder, so only the discriminator
        loss trains the encoders."""
        networks: dict[str, nn.Module] = {"discriminator_target": self.discriminator_target}
        if self.discriminator_source is not None:
            networks["discriminator_source"] = self.discriminator_source
        return networks

    def translate(self, source: Tensor) -> Tensor:
        """Deterministic ``G(x)``: ``(B, C_in, H, W)`` → ``(B, C_out, H, W)`` in ``[-1, 1]``.

        The encoder runs in eval mode, so its spectral norms reuse their stored singular
        vectors instead of taking a power-iteration step; two calls give the same result.
        """
        self._check_images(source, "source", self.in_channels, minimum=_GENERATOR_MINIMUM_SIZE)
        encoder, translator = self._source_encoder_and_translator()
        with _eval_mode(encoder):
            latent = encoder(source).features
        return translator(latent)

    def generator_forward(self, source: Tensor, target: Tensor) -> GeneratorOutput:
        """One generator pass; the discriminators (and their encoders) get no gradient from it.

        Args:
            source: ``x`` ``(B, C_in, H, W)``, sides ``>= minimum_size``, multiples of 4.
            target: ``y`` ``(B', C_out, H', W')``, same rules.

        Returns:
            ``translated`` ``G(x)`` with its graph; weighted float32 losses ``"adversarial"``
            (local + global heads), ``"adversarial_cam"`` and, in mode C, ``"cycle"`` and
            ``"reconstruction"``, each summed over both directions as in NICE-GAN; detached
            fakes ``"target"`` (``G(x)``) and, in mode C, ``"source"`` (``G_Y→X(y)``).
        """
        self._check_images(source, "source", self.in_channels, minimum=self.minimum_size)
        self._check_images(target, "target", self.out_channels, minimum=self.minimum_size)
        # NICE-GAN steps only the generator optimizer here; freezing the discriminators makes
        # that explicit: gradients flow through them to the images but not into their weights.
        with _frozen(self.discriminators().values()):
            if self.cyclic:
                return self._cyclic_generator_forward(source, target)
            translated = self.generator_source_to_target(source)
            patch, cam = self._generator_adversarial(self.discriminator_target(translated))
            losses = {
                "adversarial": self.adversarial_weight * patch,
                "adversarial_cam": self.adversarial_weight * cam,
            }
            return GeneratorOutput(translated, losses, {"target": translated.detach()})

    def discriminator_losses(
        self, source: Tensor, target: Tensor, fakes: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """Weighted discriminator losses on real images and ``fakes``; trains the encoders.

        Args:
            source: real ``x`` ``(B, C_in, H, W)`` (used in mode C).
            target: real ``y`` ``(B, C_out, H, W)``.
            fakes: ``"target"`` ``(B, C_out, H, W)`` and, in mode C, ``"source"``
                ``(B, C_in, H, W)``, as returned by :meth:`generator_forward` (or a replay
                buffer); detached again here.

        Returns:
            ``"adversarial"`` (local + global heads) and ``"adversarial_cam"``, summed over the
            discriminators, each term ``0.5 * (loss(real, 1) + loss(fake, 0))``.
        """
        self._check_images(source, "source", self.in_channels, minimum=self.minimum_size)
        self._check_images(target, "target", self.out_channels, minimum=self.minimum_size)
        pairs = [
            (self.discriminator_target, target, self._fake(fakes, "target", self.out_channels))
        ]
        if self.discriminator_source is not None:
            pairs.append(
                (self.discriminator_source, source, self._fake(fakes, "source", self.in_channels))
            )
        patch_total, cam_total = [], []
        for discriminator, real, fake in pairs:
            patch, cam = self._discriminator_adversarial(discriminator(real), discriminator(fake))
            patch_total.append(patch)
            cam_total.append(cam)
        return {
            "adversarial": self.adversarial_weight * torch.stack(patch_total).sum(),
            "adversarial_cam": self.adversarial_weight * torch.stack(cam_total).sum(),
        }

    # ----------------------------------------------------------------------------------------

    def _cyclic_generator_forward(self, source: Tensor, target: Tensor) -> GeneratorOutput:
        assert self.discriminator_source is not None and self.generator_target_to_source is not None
        to_target, to_source = self.generator_source_to_target, self.generator_target_to_source
        judge_target, judge_source = self.discriminator_target, self.discriminator_source
        # Latent codes of the real images: the encoders are the discriminators', not trained here.
        with torch.no_grad():
            source_latent = judge_source.encoder(source).features
            target_latent = judge_target.encoder(target).features
        translated = to_target(source_latent)
        target_as_source = to_source(target_latent)
        # One pass of each (frozen) discriminator gives its verdict and the latent for the cycle.
        translated_judged = judge_target(translated)
        target_as_source_judged = judge_source(target_as_source)
        patch_target, cam_target = self._generator_adversarial(translated_judged)
        patch_source, cam_source = self._generator_adversarial(target_as_source_judged)
        cycle = cycle_loss(to_source(translated_judged.features), source) + cycle_loss(
            to_target(target_as_source_judged.features), target
        )
        reconstruction = cycle_loss(to_source(source_latent), source) + cycle_loss(
            to_target(target_latent), target
        )
        losses = {
            "adversarial": self.adversarial_weight * (patch_target + patch_source),
            "adversarial_cam": self.adversarial_weight * (cam_target + cam_source),
            "cycle": self.cycle_weight * cycle,
            "reconstruction": self.reconstruction_weight * reconstruction,
        }
        fakes = {"target": translated.detach(), "source": target_as_source.detach()}
        return GeneratorOutput(translated, losses, fakes)

    def _generator_adversarial(self, judged: NICEDiscriminatorOutput) -> tuple[Tensor, Tensor]:
        """Generator-side (local + global, CAM) losses, summed over heads as in NICE-GAN."""
        patch = self.gan_generator_loss([judged.local_logits, judged.global_logits])
        return patch, self.gan_generator_loss(judged.cam_logits)

    def _discriminator_adversarial(
        self, real: NICEDiscriminatorOutput, fake: NICEDiscriminatorOutput
    ) -> tuple[Tensor, Tensor]:
        """Discriminator-side (local + global, CAM) losses, summed over heads."""
        patch = self.gan_discriminator_loss(
            [real.local_logits, real.global_logits], [fake.local_logits, fake.global_logits]
        )
        return patch, self.gan_discriminator_loss(real.cam_logits, fake.cam_logits)

    def _source_encoder_and_translator(self) -> tuple[CAMEncoder, NICEGenerator]:
        generator = self.generator_source_to_target
        if isinstance(generator, EncodingGenerator):
            return generator.encoder, generator.translator
        assert self.discriminator_source is not None
        return self.discriminator_source.encoder, generator

    def _fake(self, fakes: dict[str, Tensor], key: str, channels: int) -> Tensor:
        if not isinstance(fakes, dict):
            raise TypeError(f"fakes must be a dict of tensors, got {type(fakes).__name__}")
        if key not in fakes:
            raise ValueError(
                f"fakes must hold the key {key!r} (from generator_forward), got keys {sorted(fakes)}"
            )
        self._check_images(fakes[key], f"fakes[{key!r}]", channels, minimum=self.minimum_size)
        return fakes[key].detach()

    def _check_images(self, images: Tensor, name: str, channels: int, *, minimum: int) -> None:
        check_float(images, name)
        check_rank(images, name, (4,), "(B, C, H, W)")
        check_fits_module(images, name, self, type(self).__name__)
        _, received_channels, height, width = images.shape
        if received_channels != channels:
            raise ValueError(
                f"{name} must have {channels} channels, shape (B, {channels}, H, W), got shape "
                f"{tuple(images.shape)}"
            )
        factor = 2**ENCODER_DOWNSAMPLINGS
        if height % factor or width % factor:
            raise ValueError(
                f"{name} height and width must be multiples of {factor} (the encoder halves them "
                f"twice, the decoder doubles them twice), got shape {tuple(images.shape)}"
            )
        if self.image_size is not None and (height, width) != self.image_size:
            raise ValueError(
                f"{name} must be {self.image_size[0]}×{self.image_size[1]} (the generator MLP was "
                f"built for image_size={self.image_size}), got shape {tuple(images.shape)}"
            )
        if min(height, width) < minimum:
            raise ValueError(
                f"{name} must have height and width >= {minimum} for "
                f"discriminator_layers={self.discriminator_layers}, got shape "
                f"{tuple(images.shape)}; use smaller discriminator_layers or larger images"
            )


def _check_int(value: object, name: str, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _image_size(image_size: int | tuple[int, int] | None, minimum: int) -> tuple[int, int] | None:
    """Normalise ``image_size`` to ``(H, W)`` and check it against the architecture."""
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    factor = 2**ENCODER_DOWNSAMPLINGS
    if len(size) != 2 or not all(isinstance(side, int) for side in size):
        raise TypeError(f"image_size must be None, an int or (H, W), got {image_size!r}")
    if any(side % factor or side < minimum for side in size):
        raise ValueError(
            f"image_size sides must be multiples of {factor} and >= {minimum} (the discriminator "
            f"minimum), got {image_size!r}"
        )
    return (size[0], size[1])


@contextmanager
def _frozen(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Switch off ``requires_grad`` of the modules' parameters, restoring it on exit."""
    parameters = [p for module in modules for p in module.parameters()]
    flags = [p.requires_grad for p in parameters]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(parameters, flags, strict=True):
            parameter.requires_grad_(flag)


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` and its children in eval mode, restoring each one's flag on exit."""
    flags = [(child, child.training) for child in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for child, flag in flags:
            child.training = flag
