"""UNIT backbone: shared-latent VAE-GAN translation (Liu, Breuel & Kautz, NeurIPS 2017).

UNIT assumes that an image ``x`` of domain X and its counterpart ``y`` of domain Y map to the same
code ``z`` in a shared latent space. Each domain has a VAE — encoder ``E_X`` / ``E_Y`` and decoder
(generator) ``G_X`` / ``G_Y`` — and the last residual block(s) of the two encoders and the first of
the two decoders are the **same modules**, which ties the two VAEs to one latent space. X→Y
translation is ``G_Y(E_X(x))``. The encoders output the mean ``mu`` of ``q(z|x) = N(mu, I)``; in
training the decoder sees ``z = mu + n`` with ``n ~ N(0, I)``.

Modes of the RegGAN paper (Table 1):

* **C** (``cyclic=True``): both VAEs, two multi-scale discriminators, UNIT's full objective —
  adversarial, VAE reconstruction + KL, cycle reconstruction + KL.
* **NC** (``cyclic=False``): only ``E_X`` (with the shared encoder block), the shared decoder block
  and ``G_Y``, one discriminator on Y, adversarial loss only. The VAE noise is kept (it is part of
  UNIT's generator); the KL term is dropped with the other non-adversarial terms, as the paper
  defines NC as "only adversarial loss".
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_fits_module, check_float, check_positive, check_rank
from ..losses.cycle import cycle_loss
from ._unit_layers import (
    DomainDecoder,
    DomainEncoder,
    MultiScaleDiscriminator,
    init_discriminator_weights,
    init_generator_weights,
    residual_stack,
)
from .base import GeneratorOutput, TranslationBackbone

__all__ = ["UNITBackbone", "SharedLatentGenerator", "latent_kl_loss"]

_DOMAINS = ("source", "target")


def latent_kl_loss(latent_mean: Tensor) -> Tensor:
    """UNIT's KL term pulling the latent posterior ``N(mu, I)`` towards the prior ``N(0, I)``.

    With a unit-variance posterior, :math:`KL(N(\\mu, I) \\| N(0, I)) = \\tfrac12 \\sum_i \\mu_i^2`.
    UNIT uses the **mean** of :math:`\\mu_i^2` over all elements (twice the per-element KL); the
    published weight (``kl_weight``, UNIT's ``recon_kl_w`` = 0.01) is calibrated for that form,
    so it is kept here.

    Args:
        latent_mean: encoder output ``mu``, any shape (``(B, C_z, h, w)`` for UNIT).

    Returns:
        Float32 scalar ``mean(mu ** 2)`` (``>= 0``).

    Example:
        >>> latent_kl_loss(torch.tensor([1.0, -3.0]))
        tensor(5.)
    """
    check_float(latent_mean, "latent_mean")
    return latent_mean.float().pow(2).mean()


class SharedLatentGenerator(nn.Module):
    """Per-domain VAE encoders/decoders around shared latent layers.

    ``encode(image, domain) = shared_encoder(encoders[domain](image))`` and
    ``decode(latent, domain) = decoders[domain](shared_decoder(latent))``. The shared blocks are
    single modules used by every domain, so their parameters exist once.

    Args:
        encoder_channels: image channels per domain that gets an encoder, e.g.
            ``{"source": 1, "target": 1}``.
        decoder_channels: image channels per domain that gets a decoder.
        base_channels: channels after the first convolution; the latent has
            ``base_channels * 2**num_downsamplings``.
        num_downsamplings: stride-2 stages ``n``; the latent is ``(B, C_z, H / 2**n, W / 2**n)``.
        num_residual_blocks: residual blocks per encoder and per decoder, shared ones included.
        num_shared_blocks: how many of the ``num_residual_blocks`` are shared (the last of each
            encoder, the first of each decoder); ``0 <= num_shared_blocks <= num_residual_blocks``.
    """

    def __init__(
        self,
        *,
        encoder_channels: dict[str, int],
        decoder_channels: dict[str, int],
        base_channels: int,
        num_downsamplings: int,
        num_residual_blocks: int,
        num_shared_blocks: int,
    ) -> None:
        super().__init__()
        num_private_blocks = num_residual_blocks - num_shared_blocks
        self.encoders = nn.ModuleDict(
            {
                domain: DomainEncoder(
                    in_channels=channels,
                    base_channels=base_channels,
                    num_downsamplings=num_downsamplings,
                    num_private_blocks=num_private_blocks,
                )
                for domain, channels in encoder_channels.items()
            }
        )
        self.latent_channels = base_channels * 2**num_downsamplings
        self.shared_encoder = residual_stack(
            channels=self.latent_channels, num_blocks=num_shared_blocks
        )
        self.shared_decoder = residual_stack(
            channels=self.latent_channels, num_blocks=num_shared_blocks
        )
        self.decoders = nn.ModuleDict(
            {
                domain: DomainDecoder(
                    latent_channels=self.latent_channels,
                    out_channels=channels,
                    num_upsamplings=num_downsamplings,
                    num_private_blocks=num_private_blocks,
                )
                for domain, channels in decoder_channels.items()
            }
        )

    def encoder(self, domain: str) -> nn.Sequential:
        """The full encoder of ``domain``: its own layers, then the shared blocks (same modules)."""
        check_choice(domain, "domain", list(self.encoders))
        return nn.Sequential(self.encoders[domain], self.shared_encoder)

    def decoder(self, domain: str) -> nn.Sequential:
        """The full decoder of ``domain``: the shared blocks (same modules), then its own layers."""
        check_choice(domain, "domain", list(self.decoders))
        return nn.Sequential(self.shared_decoder, self.decoders[domain])

    def encode(self, image: Tensor, domain: str) -> Tensor:
        """Latent mean ``mu`` ``(B, C_z, H / 2**n, W / 2**n)`` of ``image`` ``(B, C, H, W)``."""
        return self.encoder(domain)(image)

    def decode(self, latent: Tensor, domain: str) -> Tensor:
        """Image ``(B, C, h * 2**n, w * 2**n)`` in ``[-1, 1]`` of ``domain`` from ``latent``."""
        return self.decoder(domain)(latent)

    def sample_latent(self, latent_mean: Tensor) -> Tensor:
        """``mu + n``, ``n ~ N(0, I)``, in training mode; ``mu`` unchanged in eval mode."""
        if not self.training:
            return latent_mean
        return latent_mean + torch.randn_like(latent_mean)


class UNITBackbone(TranslationBackbone):
    """UNIT in the RegGAN modes C (``cyclic=True``) and NC (``cyclic=False``).

    Loss weights have UNIT's published values; the names are the library's (UNIT's config key in
    brackets). Generator terms (mode C, ``lsgan``):

    * ``"adversarial"``: ``adversarial_weight * sum_s [mean((D_Y_s(G_Y(z_x)) - 1)^2)
      + mean((D_X_s(G_X(z_y)) - 1)^2)]`` with ``z = mu + n`` — **summed** over discriminator
      scales as in UNIT (:meth:`~TranslationBackbone.gan_generator_loss`), so
      ``adversarial_weight : reconstruction_weight = 1 : 10`` keeps its published meaning;
    * ``"reconstruction"``: ``reconstruction_weight * (|G_X(z_x) - x|_1 + |G_Y(z_y) - y|_1)``;
    * ``"kl"``: ``kl_weight * (kl(mu_x) + kl(mu_y))`` with :func:`latent_kl_loss`;
    * ``"cycle"``: ``cycle_weight * (|G_X(z_xy) - x|_1 + |G_Y(z_yx) - y|_1)`` where ``z_xy`` is
      the (noisy) code of the translation ``G_Y(z_x)`` re-encoded by ``E_Y``;
    * ``"cycle_kl"``: ``cycle_kl_weight * (kl(mu_xy) + kl(mu_yx))``.

    Mode NC returns ``"adversarial"`` only (Y side). Discriminator terms are
    ``adversarial_weight * sum_s gan.discriminator(D_s(real), D_s(fake))`` per domain
    (``"adversarial_target"``, and ``"adversarial_source"`` in mode C).

    Args:
        in_channels: channels of source images (domain X).
        out_channels: channels of target images (domain Y).
        cyclic: mode C (``True``) or NC (``False``).
        gan_mode: ``"lsgan"`` (UNIT and RegGAN), ``"vanilla"`` or ``"hinge"``.
        adversarial_weight: adversarial weight (UNIT ``gan_w``: 1).
        reconstruction_weight: VAE image reconstruction weight (``recon_x_w``: 10), mode C.
        kl_weight: VAE KL weight (``recon_kl_w``: 0.01), mode C.
        cycle_weight: cycle reconstruction weight (``recon_x_cyc_w``: 10), mode C.
        cycle_kl_weight: cycle KL weight (``recon_kl_cyc_w``: 0.01), mode C.
        base_channels: generator width after the first convolution (``gen.dim``: 64).
        num_downsamplings: stride-2 stages of each encoder, ×2 stages of each decoder
            (``n_downsample``: 2). Image sides must be multiples of ``2**num_downsamplings`` and
            at least ``max(4, 2 * 2**num_downsamplings)``.
        num_residual_blocks: residual blocks per encoder and per decoder (``n_res``: 4).
        num_shared_blocks: how many of them are shared between the domains — the last of each
            encoder, the first of each decoder (UNIT paper: 1).
        discriminator_channels: channels of each discriminator's first layer (``dis.dim``: 64).
        discriminator_layers: stride-2 layers per discriminator scale (``n_layer``: 4); images
            need sides of at least ``2**discriminator_layers`` for :meth:`generator_forward` and
            :meth:`discriminator_losses`.
        discriminator_scales: discriminator scales (``num_scales``: 3); scales too small for
            ``discriminator_layers`` are skipped.

    Example:
        >>> model = UNITBackbone(base_channels=8, num_residual_blocks=2,
        ...                      discriminator_channels=8, discriminator_layers=2)
        >>> x, y = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
        >>> out = model.generator_forward(x, y)
        >>> sorted(out.losses)
        ['adversarial', 'cycle', 'cycle_kl', 'kl', 'reconstruction']
        >>> model.translate(x).shape
        torch.Size([2, 1, 32, 32])
    """

    method = "unit"

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        cyclic: bool = True,
        gan_mode: str = "lsgan",
        adversarial_weight: float = 1.0,
        reconstruction_weight: float = 10.0,
        kl_weight: float = 0.01,
        cycle_weight: float = 10.0,
        cycle_kl_weight: float = 0.01,
        base_channels: int = 64,
        num_downsamplings: int = 2,
        num_residual_blocks: int = 4,
        num_shared_blocks: int = 1,
        discriminator_channels: int = 64,
        discriminator_layers: int = 4,
        discriminator_scales: int = 3,
    ) -> None:
        super().__init__(cyclic=cyclic, gan_mode=gan_mode)
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("base_channels", base_channels),
            ("num_residual_blocks", num_residual_blocks),
            ("discriminator_channels", discriminator_channels),
            ("discriminator_layers", discriminator_layers),
            ("discriminator_scales", discriminator_scales),
        ):
            _check_int(value, name, minimum=1)
        _check_int(num_downsamplings, "num_downsamplings", minimum=0)
        _check_int(num_shared_blocks, "num_shared_blocks", minimum=0)
        if num_shared_blocks > num_residual_blocks:
            raise ValueError(
                f"num_shared_blocks must be <= num_residual_blocks={num_residual_blocks}, "
                f"got {num_shared_blocks}"
            )
        for name, value in (
            ("adversarial_weight", adversarial_weight),
            ("reconstruction_weight", reconstruction_weight),
            ("kl_weight", kl_weight),
            ("cycle_weight", cycle_weight),
            ("cycle_kl_weight", cycle_kl_weight),
        ):
            check_positive(value, name, strict=False)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.adversarial_weight = float(adversarial_weight)
        self.reconstruction_weight = float(reconstruction_weight)
        self.kl_weight = float(kl_weight)
        self.cycle_weight = float(cycle_weight)
        self.cycle_kl_weight = float(cycle_kl_weight)
        self.num_downsamplings = num_downsamplings

        channels = {"source": in_channels, "target": out_channels}
        # NC needs E_X and G_Y only; the other VAE halves and D_X are never built.
        self.generator = SharedLatentGenerator(
            encoder_channels=channels if cyclic else {"source": in_channels},
            decoder_channels=channels if cyclic else {"target": out_channels},
            base_channels=base_channels,
            num_downsamplings=num_downsamplings,
            num_residual_blocks=num_residual_blocks,
            num_shared_blocks=num_shared_blocks,
        )
        self.discriminator_of = nn.ModuleDict(
            {
                domain: MultiScaleDiscriminator(
                    in_channels=channels[domain],
                    base_channels=discriminator_channels,
                    num_layers=discriminator_layers,
                    num_scales=discriminator_scales,
                )
                for domain in (_DOMAINS if cyclic else ("target",))
            }
        )
        init_generator_weights(self.generator)
        init_discriminator_weights(self.discriminator_of)

    # ----------------------------------------------------------------------------------- contract
    def generators(self) -> dict[str, nn.Module]:
        """``{"generator": SharedLatentGenerator}`` (both VAEs in C; ``E_X``, ``G_Y`` in NC)."""
        return {"generator": self.generator}

    def discriminators(self) -> dict[str, nn.Module]:
        """``{"discriminator_target": D_Y}``, plus ``"discriminator_source": D_X`` in mode C."""
        return {f"discriminator_{domain}": net for domain, net in self.discriminator_of.items()}

    def translate(self, source: Tensor) -> Tensor:
        """Deterministic X→Y translation ``G_Y(mu_x)`` (latent mean, no noise).

        Args:
            source: ``(B, in_channels, H, W)`` in ``[-1, 1]``; ``H, W`` multiples of
                ``2**num_downsamplings``.

        Returns:
            ``(B, out_channels, H, W)`` in ``[-1, 1]``.
        """
        self._check_image(source, "source", self.in_channels)
        return self.generator.decode(self.generator.encode(source, "source"), "target")

    def generator_forward(self, source: Tensor, target: Tensor) -> GeneratorOutput:
        """One generator pass (VAE noise on in training mode, off in eval mode).

        Args:
            source: X images ``(B, in_channels, H, W)`` in ``[-1, 1]``.
            target: Y images ``(B, out_channels, H, W)`` in ``[-1, 1]``, possibly misaligned.

        Returns:
            ``translated = G_Y(z_x)`` ``(B, out_channels, H, W)`` with graph; the weighted losses
            listed in the class docstring; ``fakes`` ``{"target": G_Y(z_x)}`` (+ ``"source":
            G_X(z_y)`` in mode C), detached.
        """
        self._check_pair(source, target)
        generator = self.generator
        source_mean = generator.encode(source, "source")
        source_latent = generator.sample_latent(source_mean)
        translated = generator.decode(source_latent, "target")
        adversarial = self._generator_adversarial(translated, "target")
        fakes = {"target": translated.detach()}
        if not self.cyclic:
            return GeneratorOutput(
                translated, {"adversarial": self.adversarial_weight * adversarial}, fakes
            )

        target_mean = generator.encode(target, "target")
        target_latent = generator.sample_latent(target_mean)
        translated_to_source = generator.decode(target_latent, "source")
        adversarial = adversarial + self._generator_adversarial(translated_to_source, "source")
        fakes["source"] = translated_to_source.detach()
        reconstructed_source = generator.decode(source_latent, "source")
        reconstructed_target = generator.decode(target_latent, "target")
        losses = {
            "adversarial": self.adversarial_weight * adversarial,
            "reconstruction": self.reconstruction_weight
            * (cycle_loss(reconstructed_source, source) + cycle_loss(reconstructed_target, target)),
            "kl": self.kl_weight * (latent_kl_loss(source_mean) + latent_kl_loss(target_mean)),
        }
        if self.cycle_weight > 0 or self.cycle_kl_weight > 0:
            translated_mean = generator.encode(translated, "target")
            translated_to_source_mean = generator.encode(translated_to_source, "source")
            cycled_source = generator.decode(generator.sample_latent(translated_mean), "source")
            cycled_target = generator.decode(
                generator.sample_latent(translated_to_source_mean), "target"
            )
            losses["cycle"] = self.cycle_weight * (
                cycle_loss(cycled_source, source) + cycle_loss(cycled_target, target)
            )
            losses["cycle_kl"] = self.cycle_kl_weight * (
                latent_kl_loss(translated_mean) + latent_kl_loss(translated_to_source_mean)
            )
        return GeneratorOutput(translated, losses, fakes)

    def discriminator_losses(
        self, source: Tensor, target: Tensor, fakes: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """Weighted multi-scale discriminator losses on real images and (detached) ``fakes``.

        Args:
            source: real X images ``(B, in_channels, H, W)``.
            target: real Y images ``(B, out_channels, H, W)``.
            fakes: ``{"target": (B', out_channels, H, W)}``, plus ``"source"`` ``(B',
                in_channels, H, W)`` in mode C (from :meth:`generator_forward` or a replay buffer).

        Returns:
            ``{"adversarial_target": ...}`` (+ ``"adversarial_source"`` in mode C), float32 scalars.
        """
        self._check_pair(source, target)
        if not isinstance(fakes, dict):
            raise TypeError(f"fakes must be a dict of tensors, got {type(fakes).__name__}")
        reals = {"source": source, "target": target}
        losses = {}
        for domain, discriminator in self.discriminator_of.items():
            if domain not in fakes:
                raise ValueError(
                    f"fakes must hold the key {domain!r} in mode {'C' if self.cyclic else 'NC'}, "
                    f"got keys {sorted(fakes)}"
                )
            fake, real = fakes[domain], reals[domain]
            check_float(fake, f"fakes[{domain!r}]")
            check_rank(fake, f"fakes[{domain!r}]", (4,), "(B, C, H, W)")
            if fake.shape[1:] != real.shape[1:]:
                raise ValueError(
                    f"fakes[{domain!r}] must have shape (B, {', '.join(map(str, real.shape[1:]))}) "
                    f"like the real {domain}, got {tuple(fake.shape)}"
                )
            losses[f"adversarial_{domain}"] = self.adversarial_weight * self.gan_discriminator_loss(
                discriminator(real), discriminator(fake.detach())
            )
        return losses

    # ------------------------------------------------------------------------------------ helpers
    def _generator_adversarial(self, fake: Tensor, domain: str) -> Tensor:
        """Unweighted generator-side GAN loss of ``fake``, summed over discriminator scales."""
        return self.gan_generator_loss(self.discriminator_of[domain](fake))

    def _check_image(self, image: Tensor, name: str, channels: int) -> None:
        check_float(image, name)
        check_rank(image, name, (4,), "(B, C, H, W)")
        check_fits_module(image, name, self, type(self).__name__)
        if image.shape[1] != channels:
            raise ValueError(
                f"{name} must have {channels} channel(s), shape (B, {channels}, H, W), "
                f"got shape {tuple(image.shape)}"
            )
        height, width = image.shape[-2:]
        factor = 2**self.num_downsamplings
        smallest = max(4, 2 * factor)
        if height % factor or width % factor or min(height, width) < smallest:
            raise ValueError(
                f"{name} height and width must be multiples of 2**num_downsamplings={factor} "
                f"and at least {smallest}, got {height}x{width} (shape {tuple(image.shape)})"
            )

    def _check_pair(self, source: Tensor, target: Tensor) -> None:
        self._check_image(source, "source", self.in_channels)
        self._check_image(target, "target", self.out_channels)
        if source.shape[0] != target.shape[0] or source.shape[-2:] != target.shape[-2:]:
            raise ValueError(
                "source and target must share batch size and spatial size, got shapes "
                f"{tuple(source.shape)} and {tuple(target.shape)}"
            )
        height, width = target.shape[-2:]
        smallest = self.discriminator_of["target"].min_size
        if min(height, width) < smallest:
            raise ValueError(
                f"the discriminators need images of at least 2**discriminator_layers={smallest} "
                f"pixels per "
                f"side, got {height}x{width}"
            )


def _check_int(value: object, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
