"""CycleGAN (Zhu et al. 2017) and Pix2Pix (Isola et al. 2017) with a ResNet generator.

The networks follow the CycleGAN paper and its reference code, which the official RegGAN code
uses for every CycleGAN/Pix2Pix experiment:

* :class:`ResnetGenerator`: reflect-padded 7×7 stem, stride-2 downsamplings, residual blocks,
  transposed-convolution upsamplings and a 7×7 ``tanh`` output layer, with instance norm
  (``affine=False``) and ReLU. 9 blocks and 64 base channels for 256×256 images.
* :class:`PatchDiscriminator`: the 70×70 PatchGAN, a fully convolutional net scoring every
  overlapping 70×70 patch as real or fake.

and the two methods built on them:

* :class:`CycleGAN`: mode C trains ``G: X→Y``, ``F: Y→X``, ``D_Y`` and ``D_X`` with the
  adversarial loss in both directions plus the cycle loss (Eq. 3 of the RegGAN paper); mode NC
  trains ``G`` and ``D_Y`` with the adversarial loss only.
* :class:`Pix2Pix`: ``G`` and a conditional PatchGAN on ``cat([source, image])`` with the
  adversarial loss plus ``l1_weight · |G(x) - y|``; it has no cyclic form.

Weights are initialised from ``N(0, 0.02)`` with zero biases, as in the CycleGAN paper.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from .._checks import (
    as_scalar,
    check_fits_module,
    check_float,
    check_rank,
    check_same_batch_and_spatial,
    check_same_shape_and_device,
    is_real,
)
from ..losses.cycle import cycle_loss
from .base import GeneratorOutput, TranslationBackbone

__all__ = ["ResnetGenerator", "PatchDiscriminator", "CycleGAN", "Pix2Pix"]


def _check_int(value: object, name: str, minimum: int) -> int:
    """Raise unless ``value`` is an ``int`` (not a bool) that is at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_weight(value: object, name: str) -> float:
    """Raise unless ``value`` is a finite real number ``>= 0``; return it as a float."""
    value = as_scalar(value)
    if not is_real(value):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_images(images: Tensor, name: str, channels: int) -> None:
    """Check a float ``(B, C, H, W)`` batch with ``C == channels``."""
    check_float(images, name)
    check_rank(images, name, (4,), "(B, C, H, W)")
    if images.shape[1] != channels:
        raise ValueError(
            f"{name} must have {channels} channel(s), shape (B, {channels}, H, W), "
            f"got shape {tuple(images.shape)}"
        )


def _init_normal(module: nn.Module) -> None:
    """CycleGAN initialisation: convolution weights ``N(0, 0.02)``, biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _conv_norm_relu(conv: nn.Module, channels: int) -> nn.Sequential:
    norm = nn.InstanceNorm2d(channels, affine=False)
    return nn.Sequential(OrderedDict(conv=conv, norm=norm, act=nn.ReLU()))


class ResidualBlock(nn.Module):
    """``x + IN(conv(ReLU(IN(conv(x)))))`` with reflect-padded 3×3 convolutions.

    Args:
        channels: feature channels ``C``; input and output are ``(B, C, H, W)``, ``H, W >= 2``.
    """

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.norm1 = nn.InstanceNorm2d(channels, affine=False)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect")
        self.norm2 = nn.InstanceNorm2d(channels, affine=False)

    def forward(self, features: Tensor) -> Tensor:
        residual = self.norm2(self.conv2(self.act(self.norm1(self.conv1(features)))))
        return features + residual


class ResnetGenerator(nn.Module):
    """The CycleGAN ResNet generator (Johnson et al. 2016 as adapted by Zhu et al. 2017).

    ``stem`` (7×7 conv, reflect padding) → ``downsampling`` (``num_downsamplings`` stride-2 3×3
    convs, channels doubling) → ``residual_blocks`` → ``upsampling`` (stride-2 3×3 transposed
    convs, ``output_padding=1``, channels halving) → ``output`` (7×7 conv, reflect padding,
    ``tanh``). Every hidden convolution is followed by instance norm (``affine=False``) and ReLU.

    Args:
        in_channels: channels ``C_in`` of the input image.
        out_channels: channels ``C_out`` of the output image.
        base_channels: channels after the stem (``ngf`` in the CycleGAN code); the bottleneck has
            ``base_channels * 2**num_downsamplings``.
        num_residual_blocks: 9 for 256×256 images, 6 for 128×128 in the CycleGAN paper.
        num_downsamplings: stride-2 stages; ``H`` and ``W`` must be divisible by
            ``2**num_downsamplings``.

    Shape:
        - Input: ``(B, C_in, H, W)`` with ``H, W`` divisible by ``2**num_downsamplings``,
          at least ``2 * 2**num_downsamplings`` and at least 4 (reflect padding).
        - Output: ``(B, C_out, H, W)`` with values in ``[-1, 1]``.

    Example:
        >>> generator = ResnetGenerator(base_channels=8, num_residual_blocks=2)
        >>> generator(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 64,
        num_residual_blocks: int = 9,
        num_downsamplings: int = 2,
    ) -> None:
        super().__init__()
        self.in_channels = _check_int(in_channels, "in_channels", 1)
        self.out_channels = _check_int(out_channels, "out_channels", 1)
        self.base_channels = _check_int(base_channels, "base_channels", 1)
        self.num_residual_blocks = _check_int(num_residual_blocks, "num_residual_blocks", 0)
        self.num_downsamplings = _check_int(num_downsamplings, "num_downsamplings", 0)

        stem_conv = nn.Conv2d(in_channels, base_channels, 7, padding=3, padding_mode="reflect")
        self.stem = _conv_norm_relu(stem_conv, base_channels)
        widths = [base_channels * 2**level for level in range(num_downsamplings + 1)]
        self.downsampling = nn.Sequential(
            *(
                _conv_norm_relu(nn.Conv2d(wide_in, wide_out, 3, stride=2, padding=1), wide_out)
                for wide_in, wide_out in zip(widths[:-1], widths[1:], strict=True)
            )
        )
        self.residual_blocks = nn.Sequential(
            *(ResidualBlock(channels=widths[-1]) for _ in range(num_residual_blocks))
        )
        self.upsampling = nn.Sequential(
            *(
                _conv_norm_relu(
                    nn.ConvTranspose2d(wide_in, wide_out, 3, stride=2, padding=1, output_padding=1),
                    wide_out,
                )
                for wide_in, wide_out in zip(widths[:0:-1], widths[-2::-1], strict=True)
            )
        )
        output_conv = nn.Conv2d(base_channels, out_channels, 7, padding=3, padding_mode="reflect")
        self.output = nn.Sequential(OrderedDict(conv=output_conv, act=nn.Tanh()))
        self.apply(_init_normal)

    @property
    def size_multiple(self) -> int:
        """``H`` and ``W`` of the input must be multiples of this (``2**num_downsamplings``)."""
        return 2**self.num_downsamplings

    def check_input(self, image: Tensor, name: str = "image") -> None:
        """Raise ``TypeError``/``ValueError`` naming ``name`` unless ``image`` fits this network."""
        _check_images(image, name, self.in_channels)
        check_fits_module(image, name, self, type(self).__name__)
        multiple = self.size_multiple
        minimum = max(4, 2 * multiple)
        height, width = image.shape[-2:]
        if height % multiple or width % multiple or min(height, width) < minimum:
            raise ValueError(
                f"{name} must have H and W divisible by {multiple} (2**num_downsamplings) and "
                f"at least {minimum}, got shape {tuple(image.shape)}"
            )

    def forward(self, image: Tensor) -> Tensor:
        """Translate ``image`` ``(B, C_in, H, W)`` into ``(B, C_out, H, W)`` in ``[-1, 1]``."""
        self.check_input(image)
        features = self.downsampling(self.stem(image))
        features = self.upsampling(self.residual_blocks(features))
        return self.output(features)


class PatchDiscriminator(nn.Module):
    """The PatchGAN discriminator of pix2pix/CycleGAN (70×70 receptive field by default).

    ``num_layers`` stride-2 4×4 convs (channels ``base_channels · 2**i``, capped at 8×), one
    stride-1 4×4 conv and a stride-1 4×4 ``classifier`` conv to one channel. LeakyReLU(0.2) after
    every hidden conv, instance norm (``affine=False``) after all but the first. The output is a
    map of raw scores (no sigmoid; the GAN loss decides how to read them), one per input patch.

    Args:
        in_channels: channels of the judged image (``C_in + C_out`` for a conditional pix2pix D).
        base_channels: channels of the first conv (``ndf`` in the CycleGAN code).
        num_layers: stride-2 convs; 3 gives the 70×70 PatchGAN.

    Shape:
        - Input: ``(B, C, H, W)``; for the default, ``H, W >= 24`` (the smallest size that leaves
          a normalisable feature map and a non-empty output).
        - Output: ``(B, 1, H', W')``; ``H' = H / 8 - 2`` for the default and ``H`` divisible by 8.

    Example:
        >>> discriminator = PatchDiscriminator(base_channels=8)
        >>> discriminator.receptive_field
        70
        >>> discriminator(torch.zeros(2, 1, 64, 64)).shape
        torch.Size([2, 1, 6, 6])
    """

    def __init__(self, *, in_channels: int = 1, base_channels: int = 64, num_layers: int = 3):
        super().__init__()
        self.in_channels = _check_int(in_channels, "in_channels", 1)
        self.base_channels = _check_int(base_channels, "base_channels", 1)
        self.num_layers = _check_int(num_layers, "num_layers", 1)

        widths = [in_channels] + [base_channels * min(2**i, 8) for i in range(num_layers + 1)]
        blocks = []
        for index, (wide_in, wide_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            stride = 2 if index < num_layers else 1
            layers: OrderedDict[str, nn.Module] = OrderedDict(
                conv=nn.Conv2d(wide_in, wide_out, 4, stride=stride, padding=1)
            )
            if index > 0:
                layers["norm"] = nn.InstanceNorm2d(wide_out, affine=False)
            layers["act"] = nn.LeakyReLU(0.2)
            blocks.append(nn.Sequential(layers))
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Conv2d(widths[-1], 1, 4, stride=1, padding=1)
        self.apply(_init_normal)

    def _convolutions(self) -> list[nn.Conv2d]:
        return [module for module in self.modules() if isinstance(module, nn.Conv2d)]

    @property
    def receptive_field(self) -> int:
        """Side in pixels of the input patch that one output score sees (70 by default)."""
        field, jump = 1, 1
        for conv in self._convolutions():
            field += (conv.kernel_size[0] - 1) * jump
            jump *= conv.stride[0]
        return field

    def _feature_sizes(self, size: int) -> list[int]:
        """Spatial size after each convolution for an input side of ``size``."""
        sizes = []
        for conv in self._convolutions():
            size = (size + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
            sizes.append(size)
        return sizes

    def check_input(self, image: Tensor, name: str = "image") -> None:
        """Raise ``TypeError``/``ValueError`` naming ``name`` unless ``image`` fits this network."""
        _check_images(image, name, self.in_channels)
        check_fits_module(image, name, self, type(self).__name__)
        height, width = image.shape[-2:]
        heights, widths = self._feature_sizes(height), self._feature_sizes(width)
        # instance norm needs more than one value per channel, the output at least one score
        normalised = list(zip(heights[1:-1], widths[1:-1], strict=True))
        if min(heights[-1], widths[-1]) < 1 or any(h * w < 2 for h, w in normalised):
            raise ValueError(
                f"{name} is too small for a PatchGAN with {self.num_layers} stride-2 layers: "
                f"it needs H and W of at least {self.minimum_size}, got shape {tuple(image.shape)}"
            )

    @property
    def minimum_size(self) -> int:
        """Smallest square input side this discriminator accepts."""
        size = 1
        while self._feature_sizes(size)[-1] < 1 or self._feature_sizes(size)[-2] < 2:
            size += 1
        return size

    def forward(self, image: Tensor) -> Tensor:
        """Score ``image`` ``(B, C, H, W)``: a ``(B, 1, H', W')`` map of real/fake logits."""
        self.check_input(image)
        return self.classifier(self.blocks(image))


def _l1(prediction: Tensor, target: Tensor) -> Tensor:
    return (prediction.float() - target.float()).abs().mean()


def _fake(fakes: dict[str, Tensor], key: str, like: Tensor) -> Tensor:
    """``fakes[key]`` (detached), checked to have the channels of the real images ``like``."""
    if not isinstance(fakes, dict) or key not in fakes:
        found = sorted(fakes) if isinstance(fakes, dict) else type(fakes).__name__
        raise ValueError(f"fakes must be a dict holding {key!r}, got {found}")
    fake = fakes[key]
    _check_images(fake, f"fakes[{key!r}]", like.shape[1])
    return fake.detach()


class CycleGAN(TranslationBackbone):
    """CycleGAN in mode C (cycle-consistent) or mode NC (one generator, adversarial only).

    Mode C (``cyclic=True``) trains ``generator`` ``G: X→Y``, ``inverse_generator``
    ``F: Y→X``, ``discriminator`` ``D_Y`` and ``source_discriminator`` ``D_X`` on

    .. math::
        \\lambda_{adv}(\\mathcal{L}_{GAN}(G, D_Y) + \\mathcal{L}_{GAN}(F, D_X))
        + \\lambda_{cyc}(\\|F(G(x)) - x\\|_1 + \\|G(F(y)) - y\\|_1)
        + \\lambda_{id}(\\|G(y) - y\\|_1 + \\|F(x) - x\\|_1).

    Mode NC (``cyclic=False``) builds only ``G`` and ``D_Y`` and uses the adversarial term only;
    ``cycle_weight`` and ``identity_weight`` are then unused.

    Args:
        in_channels: channels of domain X (``source``).
        out_channels: channels of domain Y (``target``).
        cyclic: mode C (``True``) or NC (``False``).
        gan_mode: ``"lsgan"`` (paper), ``"vanilla"`` or ``"hinge"``.
        adversarial_weight: ``λ_adv`` (1 in the RegGAN configs), also scales the D losses.
        cycle_weight: ``λ_cyc`` (10 in CycleGAN and RegGAN).
        identity_weight: ``λ_id`` (0 in RegGAN; the CycleGAN code uses 0.5 · 10 = 5). Needs
            ``in_channels == out_channels`` when positive.
        base_channels: generator width ``ngf``.
        num_residual_blocks: generator residual blocks.
        num_downsamplings: generator stride-2 stages.
        discriminator_channels: PatchGAN width ``ndf``.
        discriminator_layers: PatchGAN stride-2 layers (3: 70×70 patches).

    Example:
        >>> model = CycleGAN(base_channels=8, num_residual_blocks=1, discriminator_channels=8)
        >>> x, y = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
        >>> out = model.generator_forward(x, y)
        >>> sorted(out.losses), sorted(out.fakes)
        (['adversarial', 'cycle', 'inverse_adversarial'], ['source', 'target'])
        >>> sorted(model.discriminator_losses(x, y, out.fakes))
        ['discriminator', 'source_discriminator']
    """

    method = "cyclegan"

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        cyclic: bool = True,
        gan_mode: str = "lsgan",
        adversarial_weight: float = 1.0,
        cycle_weight: float = 10.0,
        identity_weight: float = 0.0,
        base_channels: int = 64,
        num_residual_blocks: int = 9,
        num_downsamplings: int = 2,
        discriminator_channels: int = 64,
        discriminator_layers: int = 3,
    ) -> None:
        super().__init__(cyclic=cyclic, gan_mode=gan_mode)
        self.adversarial_weight = _check_weight(adversarial_weight, "adversarial_weight")
        self.cycle_weight = _check_weight(cycle_weight, "cycle_weight")
        self.identity_weight = _check_weight(identity_weight, "identity_weight")
        if self.cyclic and self.identity_weight > 0 and in_channels != out_channels:
            raise ValueError(
                "identity_weight > 0 feeds target images to the X→Y generator, so it needs "
                f"in_channels == out_channels, got {in_channels} and {out_channels}"
            )
        generator_options = dict(
            base_channels=base_channels,
            num_residual_blocks=num_residual_blocks,
            num_downsamplings=num_downsamplings,
        )
        discriminator_options = dict(
            base_channels=discriminator_channels, num_layers=discriminator_layers
        )
        self.generator = ResnetGenerator(
            in_channels=in_channels, out_channels=out_channels, **generator_options
        )
        self.discriminator = PatchDiscriminator(in_channels=out_channels, **discriminator_options)
        self.inverse_generator: ResnetGenerator | None = None
        self.source_discriminator: PatchDiscriminator | None = None
        if self.cyclic:
            self.inverse_generator = ResnetGenerator(
                in_channels=out_channels, out_channels=in_channels, **generator_options
            )
            self.source_discriminator = PatchDiscriminator(
                in_channels=in_channels, **discriminator_options
            )

    def generators(self) -> dict[str, nn.Module]:
        """``{"generator": G}`` plus ``{"inverse_generator": F}`` in mode C."""
        networks: dict[str, nn.Module] = {"generator": self.generator}
        if self.inverse_generator is not None:
            networks["inverse_generator"] = self.inverse_generator
        return networks

    def discriminators(self) -> dict[str, nn.Module]:
        """``{"discriminator": D_Y}`` plus ``{"source_discriminator": D_X}`` in mode C."""
        networks: dict[str, nn.Module] = {"discriminator": self.discriminator}
        if self.source_discriminator is not None:
            networks["source_discriminator"] = self.source_discriminator
        return networks

    def translate(self, source: Tensor) -> Tensor:
        """``G(x)``: ``source`` ``(B, C_in, H, W)`` → ``(B, C_out, H, W)`` in ``[-1, 1]``."""
        self.generator.check_input(source, "source")
        return self.generator(source)

    def generator_forward(self, source: Tensor, target: Tensor) -> GeneratorOutput:
        """Generator pass on ``source`` ``(B, C_in, H, W)`` and ``target`` ``(B, C_out, H, W)``.

        Returns:
            ``translated`` ``G(x)`` with its graph; losses ``"adversarial"`` (and in mode C
            ``"inverse_adversarial"``, ``"cycle"``, and ``"identity"`` if its weight is > 0);
            fakes ``"target"`` ``G(x)`` (and in mode C ``"source"`` ``F(y)``), detached.
        """
        self.generator.check_input(source, "source")
        _check_images(target, "target", self.generator.out_channels)
        translated = self.generator(source)
        losses = {
            "adversarial": self.adversarial_weight
            * self.gan.generator(self.discriminator(translated))
        }
        fakes = {"target": translated.detach()}
        if self.inverse_generator is None or self.source_discriminator is None:
            return GeneratorOutput(translated=translated, losses=losses, fakes=fakes)

        self.inverse_generator.check_input(target, "target")
        inverse_translated = self.inverse_generator(target)
        reconstructed_source = self.inverse_generator(translated)
        reconstructed_target = self.generator(inverse_translated)
        losses["inverse_adversarial"] = self.adversarial_weight * self.gan.generator(
            self.source_discriminator(inverse_translated)
        )
        losses["cycle"] = self.cycle_weight * (
            cycle_loss(reconstructed_source, source) + cycle_loss(reconstructed_target, target)
        )
        if self.identity_weight > 0:
            losses["identity"] = self.identity_weight * (
                _l1(self.generator(target), target) + _l1(self.inverse_generator(source), source)
            )
        fakes["source"] = inverse_translated.detach()
        return GeneratorOutput(translated=translated, losses=losses, fakes=fakes)

    def discriminator_losses(
        self, source: Tensor, target: Tensor, fakes: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """``"discriminator"``: D_Y on ``target`` vs ``fakes["target"]``; in mode C also
        ``"source_discriminator"``: D_X on ``source`` vs ``fakes["source"]``. Both weighted by
        ``adversarial_weight``."""
        _check_images(target, "target", self.discriminator.in_channels)
        losses = {
            "discriminator": self.adversarial_weight
            * self.gan.discriminator(
                self.discriminator(target),
                self.discriminator(_fake(fakes, "target", target)),
            )
        }
        if self.source_discriminator is not None:
            _check_images(source, "source", self.source_discriminator.in_channels)
            losses["source_discriminator"] = self.adversarial_weight * self.gan.discriminator(
                self.source_discriminator(source),
                self.source_discriminator(_fake(fakes, "source", source)),
            )
        return losses


class Pix2Pix(TranslationBackbone):
    """Pix2Pix with the ResNet generator, as in the RegGAN experiments (always non-cyclic).

    ``G: X→Y`` and a conditional PatchGAN ``D`` judging ``cat([x, image], dim=1)`` are trained on
    ``λ_adv · L_GAN(G, D) + λ_L1 · ‖G(x) - y‖_1``. The L1 term assumes aligned pairs; on
    misaligned data it is exactly what RegGAN's correction loss replaces.

    Args:
        in_channels: channels of domain X (``source``).
        out_channels: channels of domain Y (``target``).
        cyclic: must be ``False``; Pix2Pix has no cyclic form.
        gan_mode: ``"lsgan"`` (RegGAN code), ``"vanilla"`` (pix2pix paper) or ``"hinge"``.
        adversarial_weight: ``λ_adv`` (1), also scales the D loss.
        l1_weight: ``λ_L1`` (100 in pix2pix and RegGAN).
        base_channels, num_residual_blocks, num_downsamplings: generator architecture.
        discriminator_channels, discriminator_layers: PatchGAN architecture.

    Example:
        >>> model = Pix2Pix(base_channels=8, num_residual_blocks=1, discriminator_channels=8)
        >>> x, y = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
        >>> sorted(model.generator_forward(x, y).losses)
        ['adversarial', 'l1']
    """

    method = "pix2pix"

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        cyclic: bool = False,
        gan_mode: str = "lsgan",
        adversarial_weight: float = 1.0,
        l1_weight: float = 100.0,
        base_channels: int = 64,
        num_residual_blocks: int = 9,
        num_downsamplings: int = 2,
        discriminator_channels: int = 64,
        discriminator_layers: int = 3,
    ) -> None:
        if cyclic:
            raise ValueError(
                "Pix2Pix has no cyclic form (mode C); use cyclic=False (modes NC / NC+R)"
            )
        super().__init__(cyclic=False, gan_mode=gan_mode)
        self.adversarial_weight = _check_weight(adversarial_weight, "adversarial_weight")
        self.l1_weight = _check_weight(l1_weight, "l1_weight")
        self.generator = ResnetGenerator(
            in_channels=in_channels,
            out_channels=out_channels,
            base_channels=base_channels,
            num_residual_blocks=num_residual_blocks,
            num_downsamplings=num_downsamplings,
        )
        self.discriminator = PatchDiscriminator(
            in_channels=in_channels + out_channels,
            base_channels=discriminator_channels,
            num_layers=discriminator_layers,
        )

    def generators(self) -> dict[str, nn.Module]:
        """``{"generator": G}``."""
        return {"generator": self.generator}

    def discriminators(self) -> dict[str, nn.Module]:
        """``{"discriminator": D}`` (conditional, on ``C_in + C_out`` channels)."""
        return {"discriminator": self.discriminator}

    def translate(self, source: Tensor) -> Tensor:
        """``G(x)``: ``source`` ``(B, C_in, H, W)`` → ``(B, C_out, H, W)`` in ``[-1, 1]``."""
        self.generator.check_input(source, "source")
        return self.generator(source)

    def check_pair(self, source: Tensor, target: Tensor) -> None:
        """Raise unless ``source`` fits the generator and ``target`` is its ``(B, C_out, H, W)``
        pair."""
        self.generator.check_input(source, "source")
        _check_images(target, "target", self.generator.out_channels)
        batch, _, height, width = source.shape
        expected = (batch, self.generator.out_channels, height, width)
        if tuple(target.shape) != expected:
            raise ValueError(
                f"target must be the (B, C_out, H, W) pair of source, expected {expected}, "
                f"got shape {tuple(target.shape)}"
            )

    def adversarial(self, condition: Tensor, image: Tensor) -> Tensor:
        """Weighted generator-side adversarial term: D judges ``cat([condition, image])``.

        Args:
            condition: ``(B, C_in, H, W)``, the source.
            image: ``(B, C_out, H, W)``, the generated image judged with it.
        """
        return self.adversarial_weight * self.gan.generator(
            self.discriminator(torch.cat([condition, image], dim=1))
        )

    def generator_forward(self, source: Tensor, target: Tensor) -> GeneratorOutput:
        """Generator pass on the pair ``source`` ``(B, C_in, H, W)``, ``target``
        ``(B, C_out, H, W)``: losses ``"adversarial"`` and ``"l1"``; fakes ``"target"`` (``G(x)``,
        like every backbone's) and ``"pair"``, the judged ``cat([x, G(x)])`` that
        :meth:`discriminator_losses` uses, so that a replay buffer keeps each fake with its own
        condition (all detached)."""
        self.check_pair(source, target)
        translated = self.generator(source)
        losses = {
            "adversarial": self.adversarial(source, translated),
            "l1": self.l1_weight * _l1(translated, target),
        }
        return GeneratorOutput(
            translated=translated, losses=losses, fakes=self.judged_fakes(source, translated)
        )

    def judged_fakes(self, source: Tensor, translated: Tensor) -> dict[str, Tensor]:
        """The detached fakes of one generator pass: ``"target"`` (``G(x)``) and ``"pair"``
        (``cat([x, G(x)])``, what :meth:`discriminator_losses` judges)."""
        fake = translated.detach()
        return {"target": fake, "pair": torch.cat([source, fake], dim=1)}

    def discriminator_losses(
        self, source: Tensor, target: Tensor, fakes: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """``"discriminator"``: D on ``cat([x, y])`` (real) vs the fake pair: ``fakes["pair"]``
        (``(B, C_in + C_out, H, W)``, as :meth:`generator_forward` returns it) or, if that is
        absent, ``cat([x, fakes["target"]])``."""
        self.check_pair(source, target)
        if isinstance(fakes, dict) and "pair" in fakes:
            fake_pair = _fake(fakes, "pair", torch.cat([source, target], dim=1))
            check_same_batch_and_spatial(fake_pair, source, 'fakes["pair"]', "source")
        else:
            fake = _fake(fakes, "target", target)
            check_same_shape_and_device(fake, target, 'fakes["target"]', "target")
            fake_pair = torch.cat([source, fake], dim=1)
        real_prediction = self.discriminator(torch.cat([source, target], dim=1))
        fake_prediction = self.discriminator(fake_pair)
        return {
            "discriminator": self.adversarial_weight
            * self.gan.discriminator(real_prediction, fake_prediction)
        }
