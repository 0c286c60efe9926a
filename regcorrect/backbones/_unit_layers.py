"""Building blocks of the UNIT backbone (Liu et al., NeurIPS 2017).

The generator blocks follow the PyTorch UNIT/MUNIT family: reflection-padded convolutions, instance
normalisation in the encoder and in all residual blocks, layer normalisation in the up-sampling
blocks of the decoder, ReLU, and a ``tanh`` output. The discriminator is the multi-scale PatchGAN
of the same family (no normalisation, LeakyReLU 0.2, average-pool between scales).

Private to :mod:`regcorrect.backbones.unit`; the public entry point is
:class:`regcorrect.backbones.unit.UNITBackbone`.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = [
    "ConvBlock",
    "ResidualBlock",
    "DomainEncoder",
    "DomainDecoder",
    "MultiScaleDiscriminator",
    "residual_stack",
    "init_generator_weights",
    "init_discriminator_weights",
]

_NORMS = ("instance", "layer", "none")
_ACTIVATIONS = ("relu", "leaky_relu", "tanh", "none")


class ConvBlock(nn.Sequential):
    """Reflection padding → convolution → normalisation → activation.

    Args:
        in_channels: channels of the input ``(B, in_channels, H, W)``.
        out_channels: channels of the output.
        kernel_size: square kernel side.
        stride: convolution stride; the output is ``(H + 2 * padding - kernel_size) // stride + 1``.
        padding: reflection padding on every side (needs ``padding < H`` and ``padding < W``).
        norm: ``"instance"`` (per-sample, per-channel, no affine), ``"layer"`` (per-sample over
            ``(C, H, W)`` with a per-channel affine) or ``"none"``.
        activation: ``"relu"``, ``"leaky_relu"`` (slope 0.2), ``"tanh"`` or ``"none"``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        norm: str = "none",
        activation: str = "relu",
    ) -> None:
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {list(_NORMS)!r}, got {norm!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {list(_ACTIVATIONS)!r}, got {activation!r}"
            )
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(padding),
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride),
        ]
        if norm == "instance":
            layers.append(nn.InstanceNorm2d(out_channels, affine=False))
        elif norm == "layer":
            # One group over (C, H, W) is layer normalisation with a per-channel scale and shift.
            layers.append(nn.GroupNorm(1, out_channels))
        if activation == "relu":
            layers.append(nn.ReLU())
        elif activation == "leaky_relu":
            layers.append(nn.LeakyReLU(0.2))
        elif activation == "tanh":
            layers.append(nn.Tanh())
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """``x + IN(conv3x3(ReLU(IN(conv3x3(x)))))``, shape-preserving ``(B, C, H, W)``, ``H, W >= 2``.

    Args:
        channels: ``C``.
    """

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvBlock(
                in_channels=channels,
                out_channels=channels,
                kernel_size=3,
                padding=1,
                norm="instance",
                activation="relu",
            ),
            ConvBlock(
                in_channels=channels,
                out_channels=channels,
                kernel_size=3,
                padding=1,
                norm="instance",
                activation="none",
            ),
        )

    def forward(self, features: Tensor) -> Tensor:
        """Residual update of ``features`` ``(B, C, H, W)``; same shape out."""
        return features + self.body(features)


def residual_stack(*, channels: int, num_blocks: int) -> nn.Sequential:
    """``num_blocks`` :class:`ResidualBlock` s in a row (an identity ``Sequential`` for 0)."""
    return nn.Sequential(*(ResidualBlock(channels=channels) for _ in range(num_blocks)))


class DomainEncoder(nn.Sequential):
    """The domain-specific (unshared) front of a UNIT encoder.

    ``7×7 conv (base_channels)`` → ``num_downsamplings`` × ``4×4 stride-2 conv (channels
    doubled)`` → ``num_private_blocks`` residual blocks, all with instance norm and ReLU.

    Args:
        in_channels: image channels ``C``.
        base_channels: channels after the first convolution.
        num_downsamplings: number of stride-2 convolutions ``n``; the output is
            ``(B, base_channels * 2**n, H / 2**n, W / 2**n)``.
        num_private_blocks: residual blocks owned by this domain alone.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        base_channels: int,
        num_downsamplings: int,
        num_private_blocks: int,
    ) -> None:
        layers: list[nn.Module] = [
            ConvBlock(
                in_channels=in_channels,
                out_channels=base_channels,
                kernel_size=7,
                padding=3,
                norm="instance",
                activation="relu",
            )
        ]
        channels = base_channels
        for _ in range(num_downsamplings):
            layers.append(
                ConvBlock(
                    in_channels=channels,
                    out_channels=2 * channels,
                    kernel_size=4,
                    stride=2,
                    padding=1,
                    norm="instance",
                    activation="relu",
                )
            )
            channels *= 2
        layers.append(residual_stack(channels=channels, num_blocks=num_private_blocks))
        super().__init__(*layers)
        #: channels of the latent code this encoder produces.
        self.latent_channels = channels


class DomainDecoder(nn.Sequential):
    """The domain-specific (unshared) back of a UNIT decoder.

    ``num_private_blocks`` residual blocks → ``num_upsamplings`` × ``(nearest ×2, 5×5 conv,
    channels halved, layer norm, ReLU)`` → ``7×7 conv`` → ``tanh``.

    Args:
        latent_channels: channels of the latent code ``(B, latent_channels, h, w)``.
        out_channels: image channels of the output ``(B, out_channels, h * 2**n, w * 2**n)``,
            values in ``[-1, 1]``.
        num_upsamplings: number ``n`` of ×2 up-sampling stages.
        num_private_blocks: residual blocks owned by this domain alone.
    """

    def __init__(
        self,
        *,
        latent_channels: int,
        out_channels: int,
        num_upsamplings: int,
        num_private_blocks: int,
    ) -> None:
        layers: list[nn.Module] = [
            residual_stack(channels=latent_channels, num_blocks=num_private_blocks)
        ]
        channels = latent_channels
        for _ in range(num_upsamplings):
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            layers.append(
                ConvBlock(
                    in_channels=channels,
                    out_channels=channels // 2,
                    kernel_size=5,
                    padding=2,
                    norm="layer",
                    activation="relu",
                )
            )
            channels //= 2
        layers.append(
            ConvBlock(
                in_channels=channels,
                out_channels=out_channels,
                kernel_size=7,
                padding=3,
                norm="none",
                activation="tanh",
            )
        )
        super().__init__(*layers)


class MultiScaleDiscriminator(nn.Module):
    """Multi-scale PatchGAN: one CNN per scale, the image average-pooled by 2 between scales.

    Each scale's CNN is ``num_layers`` × ``(4×4 stride-2 conv, LeakyReLU 0.2)`` (channels
    ``base, 2 base, 4 base, ...``) and a ``1×1`` conv to one logit channel, so it needs an image of
    at least ``2**num_layers`` pixels on each side. Scales whose (pooled) image is smaller than
    that are **skipped**, so small images keep working with fewer scales: at 32×32 with
    ``num_layers=4`` the 8×8 third scale is left out and two predictions are returned.

    Args:
        in_channels: image channels ``C``.
        base_channels: channels of the first layer.
        num_layers: stride-2 layers per scale.
        num_scales: number of scales (CNNs).
    """

    def __init__(
        self, *, in_channels: int, base_channels: int, num_layers: int, num_scales: int
    ) -> None:
        super().__init__()
        self.min_size = 2**num_layers
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.scales = nn.ModuleList(
            self._make_scale(
                in_channels=in_channels, base_channels=base_channels, num_layers=num_layers
            )
            for _ in range(num_scales)
        )

    @staticmethod
    def _make_scale(*, in_channels: int, base_channels: int, num_layers: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        channels_in, channels_out = in_channels, base_channels
        for _ in range(num_layers):
            layers.append(
                ConvBlock(
                    in_channels=channels_in,
                    out_channels=channels_out,
                    kernel_size=4,
                    stride=2,
                    padding=1,
                    norm="none",
                    activation="leaky_relu",
                )
            )
            channels_in, channels_out = channels_out, 2 * channels_out
        layers.append(nn.Conv2d(channels_in, 1, kernel_size=1))
        return nn.Sequential(*layers)

    def num_active_scales(self, height: int, width: int) -> int:
        """How many scales an image of ``height × width`` pixels goes through (0 if too small)."""
        active = 0
        for _ in self.scales:
            if min(height, width) < self.min_size:
                break
            active += 1
            height, width = (height + 1) // 2, (width + 1) // 2  # the pooling rounds up
        return active

    def forward(self, image: Tensor) -> list[Tensor]:
        """Patch logits of ``image`` ``(B, C, H, W)`` at every usable scale.

        Returns:
            A list, finest scale first, of ``(B, 1, H_s / 2**L, W_s / 2**L)`` maps, where
            ``L = num_layers`` and ``H_s = ceil(H / 2**s)``; its length is
            :meth:`num_active_scales`.
        """
        predictions = []
        for scale in self.scales[: self.num_active_scales(image.shape[-2], image.shape[-1])]:
            predictions.append(scale(image))
            image = self.downsample(image)
        return predictions


def init_generator_weights(module: nn.Module) -> None:
    """He-normal (fan-in) convolution weights and zero biases, as UNIT's ``init: kaiming``."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, a=0.0, mode="fan_in")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def init_discriminator_weights(module: nn.Module) -> None:
    """``N(0, 0.02)`` convolution weights and zero biases, as UNIT's discriminators."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, mean=0.0, std=0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
