"""MUNIT backbone (Huang et al., "Multimodal Unsupervised Image-to-Image Translation", ECCV 2018).

Each domain has an auto-encoder: a content encoder (domain-shared content space), a style encoder
(a low-dimensional, domain-specific style code with a ``N(0, I)`` prior) and an AdaIN decoder. A
translation X→Y decodes the content of ``x`` with a style of Y.

* Mode C (``cyclic=True``): MUNIT's full objective — two auto-encoders, two multi-scale
  discriminators, adversarial + image, style and content reconstruction (+ optional explicit
  style-augmented cycle) losses, with MUNIT's published weights.
* Mode NC (``cyclic=False``): one generator X→Y made of the content encoder of X and the AdaIN
  decoder of Y (with its style MLP), fed a style code drawn from the prior ``N(0, I)`` as MUNIT
  does at training time; one multi-scale discriminator on Y; adversarial loss only. No style
  encoder, no Y→X decoder and no discriminator on X are constructed.

:meth:`MUNITBackbone.translate` is deterministic: it decodes with the prior mean, the zero style.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_fits_module, check_float, check_positive, check_rank
from ._munit_layers import (
    STYLE_ENCODER_DOWNSAMPLING,
    AdaINDecoder,
    ContentEncoder,
    MultiScaleDiscriminator,
    StyleEncoder,
)
from .base import GeneratorOutput, TranslationBackbone

__all__ = ["MUNITBackbone"]

PADDING_MODES = ("reflect", "zeros")


def _l1(prediction: Tensor, reference: Tensor) -> Tensor:
    """Mean absolute difference in float32 (safe under bf16 autocast)."""
    return (prediction.float() - reference.float()).abs().mean()


def _initialise(module: nn.Module, *, scheme: str) -> None:
    """MUNIT's initialisation: Kaiming-normal (fan-in) for generators, N(0, 0.02) for D; bias 0."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            if scheme == "kaiming":
                nn.init.kaiming_normal_(layer.weight, a=0.0, mode="fan_in")
            else:
                nn.init.normal_(layer.weight, 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class MUNITBackbone(TranslationBackbone):
    """MUNIT in mode C (full MUNIT) or mode NC (one content-encoder + AdaIN-decoder generator).

    Images are ``(B, C, H, W)`` in ``[-1, 1]``; ``H`` and ``W`` must be multiples of
    ``2**num_downsamplings`` and at least :attr:`min_size` (16 at the defaults).

    Args:
        in_channels: channels of ``source`` (domain X).
        out_channels: channels of ``target`` (domain Y).
        cyclic: ``True`` for mode C, ``False`` for mode NC (see the module docstring).
        gan_mode: ``"lsgan"`` (MUNIT's and the paper's choice), ``"vanilla"`` or ``"hinge"``.
        adversarial_weight: weight of each adversarial term, G and D sides (MUNIT ``gan_w``, 1);
            must be positive. Each term is summed over the discriminator scales, as in MUNIT.
        image_reconstruction_weight: within-domain image reconstruction (``recon_x_w``, 10).
        style_reconstruction_weight: style code reconstruction (``recon_s_w``, 1).
        content_reconstruction_weight: content code reconstruction (``recon_c_w``, 1).
        cycle_weight: explicit style-augmented cycle ``x → y → x`` (``recon_x_cyc_w``: 0 in
            MUNIT's edges2* configs and in Reg-GAN's MUNIT trainer, which computes ``x_aba`` but
            never adds it; 10 in its summer2winter and synthia configs); the term is only
            computed when positive. Mode C only.
        base_channels: width of the first encoder layer (``gen.dim``, 64).
        style_dim: length of the style code (``style_dim``, 8).
        num_downsamplings: stride-2 convs of the content encoder (``n_downsample``, 2).
        num_residual_blocks: residual blocks in content encoder and decoder (``n_res``, 4).
        mlp_channels: hidden width of the style → AdaIN MLP (``mlp_dim``, 256).
        discriminator_channels: width of the first discriminator layer (``dis.dim``, 64).
        discriminator_layers: stride-2 convs per discriminator scale (``n_layer``, 4).
        discriminator_scales: scales of the multi-scale discriminator (``num_scales``, 3).
        padding_mode: ``"reflect"`` (``pad_type: reflect``) or ``"zeros"``.

    Example:
        >>> model = MUNITBackbone(cyclic=False, base_channels=8, mlp_channels=16)
        >>> model.translate(torch.rand(2, 1, 32, 32) * 2 - 1).shape
        torch.Size([2, 1, 32, 32])
    """

    method = "munit"

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        cyclic: bool = True,
        gan_mode: str = "lsgan",
        adversarial_weight: float = 1.0,
        image_reconstruction_weight: float = 10.0,
        style_reconstruction_weight: float = 1.0,
        content_reconstruction_weight: float = 1.0,
        cycle_weight: float = 0.0,
        base_channels: int = 64,
        style_dim: int = 8,
        num_downsamplings: int = 2,
        num_residual_blocks: int = 4,
        mlp_channels: int = 256,
        discriminator_channels: int = 64,
        discriminator_layers: int = 4,
        discriminator_scales: int = 3,
        padding_mode: str = "reflect",
    ) -> None:
        super().__init__(cyclic=cyclic, gan_mode=gan_mode)
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("base_channels", base_channels),
            ("style_dim", style_dim),
            ("num_residual_blocks", num_residual_blocks),
            ("mlp_channels", mlp_channels),
            ("discriminator_channels", discriminator_channels),
            ("discriminator_layers", discriminator_layers),
            ("discriminator_scales", discriminator_scales),
        ):
            check_positive(value, name)
        check_positive(num_downsamplings, "num_downsamplings", strict=False)
        check_positive(adversarial_weight, "adversarial_weight")
        for name, value in (
            ("image_reconstruction_weight", image_reconstruction_weight),
            ("style_reconstruction_weight", style_reconstruction_weight),
            ("content_reconstruction_weight", content_reconstruction_weight),
            ("cycle_weight", cycle_weight),
        ):
            check_positive(value, name, strict=False)
        check_choice(padding_mode, "padding_mode", PADDING_MODES)

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.style_dim = style_dim
        self.adversarial_weight = float(adversarial_weight)
        self.image_reconstruction_weight = float(image_reconstruction_weight)
        self.style_reconstruction_weight = float(style_reconstruction_weight)
        self.content_reconstruction_weight = float(content_reconstruction_weight)
        self.cycle_weight = float(cycle_weight)
        self.size_multiple = 2**num_downsamplings
        # smallest side every network accepts: the content bottleneck needs >= 2 pixels for its
        # 3×3 reflect padding, each discriminator scale >= 2**layers, the style encoder >= 2**4
        sizes = [4, 2 * self.size_multiple, 2**discriminator_layers]
        if self.cyclic:
            sizes.append(2**STYLE_ENCODER_DOWNSAMPLING)
        self.min_size = max(sizes)

        def content_encoder(channels: int) -> ContentEncoder:
            return ContentEncoder(
                in_channels=channels,
                base_channels=base_channels,
                num_downsamplings=num_downsamplings,
                num_residual_blocks=num_residual_blocks,
                padding_mode=padding_mode,
            )

        def decoder(channels: int) -> AdaINDecoder:
            return AdaINDecoder(
                content_channels=base_channels * self.size_multiple,
                out_channels=channels,
                style_dim=style_dim,
                mlp_channels=mlp_channels,
                num_upsamplings=num_downsamplings,
                num_residual_blocks=num_residual_blocks,
                padding_mode=padding_mode,
            )

        def style_encoder(channels: int) -> StyleEncoder:
            return StyleEncoder(
                in_channels=channels,
                base_channels=base_channels,
                style_dim=style_dim,
                padding_mode=padding_mode,
            )

        def discriminator(channels: int) -> MultiScaleDiscriminator:
            return MultiScaleDiscriminator(
                in_channels=channels,
                base_channels=discriminator_channels,
                num_layers=discriminator_layers,
                num_scales=discriminator_scales,
                padding_mode=padding_mode,
            )

        # the X→Y generator, present in both modes
        self.source_content_encoder = content_encoder(in_channels)
        self.target_decoder = decoder(out_channels)
        self.target_discriminator = discriminator(out_channels)
        # the rest of MUNIT, mode C only
        self.source_style_encoder: StyleEncoder | None = None
        self.source_decoder: AdaINDecoder | None = None
        self.target_content_encoder: ContentEncoder | None = None
        self.target_style_encoder: StyleEncoder | None = None
        self.source_discriminator: MultiScaleDiscriminator | None = None
        if self.cyclic:
            self.source_style_encoder = style_encoder(in_channels)
            self.source_decoder = decoder(in_channels)
            self.target_content_encoder = content_encoder(out_channels)
            self.target_style_encoder = style_encoder(out_channels)
            self.source_discriminator = discriminator(in_channels)

        for network in self.generators().values():
            _initialise(network, scheme="kaiming")
        for network in self.discriminators().values():
            _initialise(network, scheme="gaussian")

    # ------------------------------------------------------------------ contract

    def generators(self) -> dict[str, nn.Module]:
        """Mode C: both auto-encoders (content, style encoders and decoder per domain).

        Mode NC: ``source_content_encoder`` and ``target_decoder`` (which owns the style MLP).
        """
        names = ["source_content_encoder", "target_decoder"]
        if self.cyclic:
            names += [
                "source_style_encoder",
                "source_decoder",
                "target_content_encoder",
                "target_style_encoder",
            ]
        return {name: getattr(self, name) for name in names}

    def discriminators(self) -> dict[str, nn.Module]:
        """``target_discriminator`` (on Y), plus ``source_discriminator`` (on X) in mode C."""
        networks: dict[str, nn.Module] = {"target_discriminator": self.target_discriminator}
        if self.source_discriminator is not None:
            networks["source_discriminator"] = self.source_discriminator
        return networks

    def translate(self, source: Tensor, *, style: Tensor | None = None) -> Tensor:
        """Deterministic X→Y translation: the content of ``source`` decoded with a Y style.

        Args:
            source: ``(B, in_channels, H, W)`` in ``[-1, 1]``.
            style: ``(B, style_dim)`` style code of Y; default zeros, the mean of MUNIT's
                ``N(0, I)`` style prior. In mode C, :meth:`encode_target_style` gives the style of
                a reference Y image (example-guided translation).

        Returns:
            ``(B, out_channels, H, W)`` in ``[-1, 1]``, with autograd graph unless run under
            ``torch.no_grad()``.
        """
        self._check_image(source, "source", self.in_channels)
        batch = source.shape[0]
        if style is None:
            style = source.new_zeros(batch, self.style_dim)
        else:
            check_float(style, "style")
            if tuple(style.shape) != (batch, self.style_dim):
                raise ValueError(
                    f"style must have shape (B, style_dim) = ({batch}, {self.style_dim}), "
                    f"got {tuple(style.shape)}"
                )
        return self.target_decoder(self.source_content_encoder(source), style)

    def encode_target_style(self, target: Tensor) -> Tensor:
        """Style code ``(B, style_dim)`` of Y images ``(B, out_channels, H, W)``; mode C only."""
        if self.target_style_encoder is None:
            raise ValueError("encode_target_style needs cyclic=True: mode NC has no style encoder")
        self._check_image(target, "target", self.out_channels)
        return self.target_style_encoder(target)

    def generator_forward(self, source: Tensor, target: Tensor) -> GeneratorOutput:
        """One generator pass; see the class docstring for the two modes.

        Args:
            source: ``(B, in_channels, H, W)`` X images in ``[-1, 1]``.
            target: ``(B, out_channels, H, W)`` Y images in ``[-1, 1]``, possibly misaligned.

        Returns:
            :class:`GeneratorOutput` with

            * ``translated`` ``(B, out_channels, H, W)``: mode C decodes the content of
              ``source`` with the style *encoded from* ``target`` (MUNIT's example-guided
              translation), so a registration correction loss compares images that differ only
              by content geometry; mode NC decodes it with the sampled prior style, the same image
              the discriminator judges.
            * ``losses``: weighted float32 scalars. NC: ``adversarial_target``. C: additionally
              ``adversarial_source``, ``image_reconstruction_{source,target}``,
              ``style_reconstruction_{source,target}``, ``content_reconstruction_{source,target}``
              and, if ``cycle_weight > 0``, ``cycle_{source,target}``; terms of weight 0 are left
              out.
            * ``fakes``: detached prior-style translations, ``"target"`` (X→Y) and, in mode C,
              ``"source"`` (Y→X).
        """
        self._check_pair(source, target)
        if self.cyclic:
            return self._cyclic_forward(source, target)
        content = self.source_content_encoder(source)
        translated = self.target_decoder(content, self._sample_style(source))
        adversarial = self.gan_generator_loss(self.target_discriminator(translated))
        losses = {"adversarial_target": self.adversarial_weight * adversarial}
        return GeneratorOutput(translated, losses, {"target": translated.detach()})

    def discriminator_losses(
        self, source: Tensor, target: Tensor, fakes: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """Weighted multi-scale discriminator losses.

        Args:
            source: ``(B, in_channels, H, W)`` real X images.
            target: ``(B, out_channels, H, W)`` real Y images.
            fakes: ``{"target": (B', out_channels, H, W)}`` and, in mode C,
                ``"source": (B', in_channels, H, W)``, detached (possibly from a replay buffer).

        Returns:
            ``discriminator_target`` and, in mode C, ``discriminator_source``: float32 scalars,
            ``adversarial_weight * sum_s gan.discriminator(D_s(real), D_s(fake))``, summed
            over the discriminator scales as in MUNIT.
        """
        self._check_pair(source, target)
        pairs = [("target", target, self.target_discriminator, self.out_channels)]
        if self.source_discriminator is not None:
            pairs.append(("source", source, self.source_discriminator, self.in_channels))
        losses = {}
        for domain, real, discriminator, channels in pairs:
            if domain not in fakes:
                raise ValueError(
                    f"fakes must hold the key {domain!r} (keys expected: "
                    f"{[pair[0] for pair in pairs]}), got {sorted(fakes)}"
                )
            fake = fakes[domain]
            self._check_image(fake, f"fakes[{domain!r}]", channels)
            loss = self.gan_discriminator_loss(discriminator(real), discriminator(fake.detach()))
            losses[f"discriminator_{domain}"] = self.adversarial_weight * loss
        return losses

    # ------------------------------------------------------------------ mode C

    def _cyclic_forward(self, source: Tensor, target: Tensor) -> GeneratorOutput:
        assert self.source_style_encoder is not None and self.source_decoder is not None
        assert self.target_content_encoder is not None and self.target_style_encoder is not None
        assert self.source_discriminator is not None
        # encode both domains
        source_content = self.source_content_encoder(source)
        source_style = self.source_style_encoder(source)
        target_content = self.target_content_encoder(target)
        target_style = self.target_style_encoder(target)
        # decode within each domain
        reconstructed_source = self.source_decoder(source_content, source_style)
        reconstructed_target = self.target_decoder(target_content, target_style)
        # decode across domains with styles drawn from the prior
        prior_source_style = self._sample_style(source)
        prior_target_style = self._sample_style(target)
        translated_to_target = self.target_decoder(source_content, prior_target_style)
        translated_to_source = self.source_decoder(target_content, prior_source_style)
        # encode the translations again
        source_content_again = self.target_content_encoder(translated_to_target)
        prior_target_style_again = self.target_style_encoder(translated_to_target)
        target_content_again = self.source_content_encoder(translated_to_source)
        prior_source_style_again = self.source_style_encoder(translated_to_source)

        unweighted = {
            "adversarial_target": self.gan_generator_loss(
                self.target_discriminator(translated_to_target)
            ),
            "adversarial_source": self.gan_generator_loss(
                self.source_discriminator(translated_to_source)
            ),
            "image_reconstruction_source": _l1(reconstructed_source, source),
            "image_reconstruction_target": _l1(reconstructed_target, target),
            "style_reconstruction_source": _l1(prior_source_style_again, prior_source_style),
            "style_reconstruction_target": _l1(prior_target_style_again, prior_target_style),
            "content_reconstruction_source": _l1(source_content_again, source_content),
            "content_reconstruction_target": _l1(target_content_again, target_content),
        }
        if self.cycle_weight > 0:
            cycled_source = self.source_decoder(source_content_again, source_style)
            cycled_target = self.target_decoder(target_content_again, target_style)
            unweighted["cycle_source"] = _l1(cycled_source, source)
            unweighted["cycle_target"] = _l1(cycled_target, target)
        # a term is named "<kind>_<domain>"; its weight is that of its kind
        weights = {
            "adversarial": self.adversarial_weight,
            "image_reconstruction": self.image_reconstruction_weight,
            "style_reconstruction": self.style_reconstruction_weight,
            "content_reconstruction": self.content_reconstruction_weight,
            "cycle": self.cycle_weight,
        }
        losses = {}
        for name, value in unweighted.items():
            weight = weights[name.rsplit("_", 1)[0]]
            if weight > 0:
                losses[name] = weight * value

        # the translation handed to the registration step: X content with the target's own style
        translated = self.target_decoder(source_content, target_style)
        fakes = {
            "target": translated_to_target.detach(),
            "source": translated_to_source.detach(),
        }
        return GeneratorOutput(translated, losses, fakes)

    # ------------------------------------------------------------------ helpers

    def _sample_style(self, like: Tensor) -> Tensor:
        """A style code ``(B, style_dim)`` from the prior ``N(0, I)``, on ``like``'s device."""
        return torch.randn(like.shape[0], self.style_dim, device=like.device, dtype=like.dtype)

    def _check_image(self, image: Tensor, name: str, channels: int) -> None:
        check_float(image, name)
        check_rank(image, name, (4,), f"(B, {channels}, H, W)")
        check_fits_module(image, name, self, type(self).__name__)
        if image.shape[1] != channels:
            raise ValueError(
                f"{name} must have {channels} channels (B, {channels}, H, W), "
                f"got shape {tuple(image.shape)}"
            )
        height, width = image.shape[-2:]
        if height % self.size_multiple or width % self.size_multiple:
            raise ValueError(
                f"{name} height and width must be multiples of 2**num_downsamplings = "
                f"{self.size_multiple}, got shape {tuple(image.shape)}"
            )
        if min(height, width) < self.min_size:
            raise ValueError(
                f"{name} height and width must be at least {self.min_size}, "
                f"got shape {tuple(image.shape)}"
            )

    def _check_pair(self, source: Tensor, target: Tensor) -> None:
        self._check_image(source, "source", self.in_channels)
        self._check_image(target, "target", self.out_channels)
        if source.shape[0] != target.shape[0] or source.shape[-2:] != target.shape[-2:]:
            raise ValueError(
                "source and target must have the same batch size and spatial size, got shapes "
                f"{tuple(source.shape)} and {tuple(target.shape)}"
            )
