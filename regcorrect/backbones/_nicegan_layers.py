"""Building blocks of the NICE-GAN backbone (Chen et al., CVPR 2020).

NICE-GAN ("No-Independent-Component-for-Encoding") has no generator encoder: the first layers of
each discriminator encode images into a latent map, and a generator is only a translation module
(residual blocks with adaptive layer-instance normalisation, AdaLIN, as in U-GAT-IT) followed by
a sub-pixel decoder. The pieces here:

* :func:`adaptive_layer_instance_norm` and its modules :class:`AdaLIN` (scale/shift from the
  generator's MLP) and :class:`LayerInstanceNorm` (learned scale/shift).
* :class:`CAMEncoder`: two spectral-normalised stride-2 convolutions and class-activation-map
  (CAM) attention; the encoder of a discriminator and the latent code of the generators.
* :class:`NICEDiscriminator`: the encoder plus a local and a global PatchGAN head.
* :class:`NICEGenerator`: translation module and decoder, latent map → image in ``[-1, 1]``.
* :class:`EncodingGenerator`: a :class:`CAMEncoder` of its own in front of a
  :class:`NICEGenerator`, the single generator of mode NC.

Private to :mod:`regcorrect.backbones.nicegan`; the public entry point is
:class:`regcorrect.backbones.nicegan.NICEGANBackbone`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from .._checks import check_float, check_rank

__all__ = [
    "adaptive_layer_instance_norm",
    "AdaLIN",
    "LayerInstanceNorm",
    "CAMEncoder",
    "EncoderOutput",
    "NICEDiscriminator",
    "NICEDiscriminatorOutput",
    "NICEGenerator",
    "EncodingGenerator",
    "discriminator_minimum_size",
]

#: Stride-2 convolutions in the encoder; the decoder up-samples by the same factor ``2**2``.
ENCODER_DOWNSAMPLINGS = 2


def adaptive_layer_instance_norm(
    features: Tensor, instance_weight: Tensor, scale: Tensor, shift: Tensor, *, eps: float = 1e-5
) -> Tensor:
    """Layer-instance normalisation: a per-channel blend of instance and layer normalisation.

    .. math::
        \\mathrm{out} = \\big(\\rho\\,\\mathrm{IN}(x) + (1 - \\rho)\\,\\mathrm{LN}(x)\\big)\\,\\gamma + \\beta

    where IN normalises each ``(b, c)`` plane over ``(H, W)`` and LN each sample over
    ``(C, H, W)``, both with the biased variance and no affine of their own.

    Args:
        features: ``x``, shape ``(B, C, H, W)``.
        instance_weight: ``ρ`` in ``[0, 1]``, shape ``(C,)``; 1 is pure instance norm, 0 pure
            layer norm.
        scale: ``γ``, shape ``(B, C)`` (adaptive, per sample) or ``(C,)``.
        shift: ``β``, same shape rules as ``scale``.
        eps: added to the variances.

    Returns:
        Tensor of the shape and dtype of ``features`` (statistics are computed in float32).

    Example:
        >>> x = torch.randn(2, 3, 8, 8)
        >>> out = adaptive_layer_instance_norm(x, torch.ones(3), torch.ones(3), torch.zeros(3))
        >>> torch.allclose(out, F.instance_norm(x), atol=1e-5)
        True
    """
    check_float(features, "features")
    check_rank(features, "features", (4,), "(B, C, H, W)")
    channels = features.shape[1]
    if instance_weight.shape != (channels,):
        raise ValueError(
            f"instance_weight must have shape ({channels},) to match features "
            f"{tuple(features.shape)}, got {tuple(instance_weight.shape)}"
        )
    x = features.float()
    instance_mean = x.mean(dim=(2, 3), keepdim=True)
    instance_var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
    layer_mean = x.mean(dim=(1, 2, 3), keepdim=True)
    layer_var = x.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
    instance_normed = (x - instance_mean) * torch.rsqrt(instance_var + eps)
    layer_normed = (x - layer_mean) * torch.rsqrt(layer_var + eps)
    rho = rearrange(instance_weight.float(), "c -> 1 c 1 1")
    mixed = rho * instance_normed + (1.0 - rho) * layer_normed
    out = mixed * _as_channel_map(scale, "scale", features) + _as_channel_map(
        shift, "shift", features
    )
    return out.to(features.dtype)


def _as_channel_map(value: Tensor, name: str, features: Tensor) -> Tensor:
    """``(B, C)`` or ``(C,)`` → a tensor broadcastable to ``features`` ``(B, C, H, W)``."""
    batch, channels = features.shape[:2]
    if value.shape == (batch, channels):
        return rearrange(value.float(), "b c -> b c 1 1")
    if value.shape == (channels,):
        return rearrange(value.float(), "c -> 1 c 1 1")
    raise ValueError(
        f"{name} must have shape ({batch}, {channels}) or ({channels},) for features "
        f"{tuple(features.shape)}, got {tuple(value.shape)}"
    )


class AdaLIN(nn.Module):
    """Adaptive layer-instance normalisation: ``γ``, ``β`` come from outside, ``ρ`` is learned.

    ``ρ`` is the softmax of two learned logits per channel (instance, layer), initialised to
    ``(3.2, 1.0)`` as in NICE-GAN, i.e. ``ρ ≈ 0.90`` (mostly instance norm).

    Args:
        channels: ``C`` of the ``(B, C, H, W)`` input.
    """

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.mixing_logits = nn.Parameter(torch.tensor([3.2, 1.0]).repeat(channels, 1))

    @property
    def instance_weight(self) -> Tensor:
        """``ρ``, shape ``(C,)``, in ``(0, 1)``."""
        return self.mixing_logits.softmax(dim=-1)[:, 0]

    def forward(self, features: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        """Normalise ``features`` ``(B, C, H, W)`` with per-sample ``scale``/``shift`` ``(B, C)``."""
        return adaptive_layer_instance_norm(features, self.instance_weight, scale, shift)


class LayerInstanceNorm(nn.Module):
    """Layer-instance normalisation with a learned per-channel affine (NICE-GAN's "ILN").

    ``ρ`` starts at ``≈ 0.10`` (logits ``(1.0, 3.2)``: mostly layer norm), ``γ = 1``, ``β = 0``.

    Args:
        channels: ``C`` of the ``(B, C, H, W)`` input.
    """

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.mixing_logits = nn.Parameter(torch.tensor([1.0, 3.2]).repeat(channels, 1))
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))

    def forward(self, features: Tensor) -> Tensor:
        """Normalise ``features`` ``(B, C, H, W)``; same shape out."""
        instance_weight = self.mixing_logits.softmax(dim=-1)[:, 0]
        return adaptive_layer_instance_norm(features, instance_weight, self.scale, self.shift)


def _spectral_conv(
    in_channels: int, out_channels: int, *, stride: int, activation: bool = True
) -> nn.Sequential:
    """Reflection pad 1 → spectral-normalised 4×4 conv → LeakyReLU(0.2); ``H → H // 2`` at
    stride 2, ``H → H - 1`` at stride 1. The output layer (``activation=False``) has no bias."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=stride, bias=activation)
    layers: list[nn.Module] = [nn.ReflectionPad2d(1), spectral_norm(conv)]
    if activation:
        layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


class EncoderOutput(NamedTuple):
    """Latent map ``(B, 2·base, H/4, W/4)`` and CAM logits ``(B, 1)`` of a :class:`CAMEncoder`."""

    features: Tensor
    cam_logits: Tensor


class CAMEncoder(nn.Module):
    """The discriminator's encoder: two stride-2 convolutions and CAM attention.

    An auxiliary linear classifier on the global average- and max-pooled features gives the CAM
    logits (one more real/fake output of the discriminator); its weights re-weight the feature
    channels, a 1×1 convolution fuses the two weighted copies, and the result is added to the
    features with a learned gain ``λ`` (initialised to 0) before a LeakyReLU.

    Args:
        in_channels: channels of the input images ``(B, in_channels, H, W)``.
        base_channels: width of the first convolution; the latent map has ``2 * base_channels``.
    """

    def __init__(self, *, in_channels: int, base_channels: int) -> None:
        super().__init__()
        width = 2 * base_channels
        self.downsample = nn.Sequential(
            _spectral_conv(in_channels, base_channels, stride=2),
            _spectral_conv(base_channels, width, stride=2),
        )
        self.cam_classifier = spectral_norm(nn.Linear(2 * width, 1, bias=False))
        self.cam_fusion = nn.Conv2d(2 * width, width, kernel_size=1)
        self.attention_gain = nn.Parameter(torch.zeros(1))
        self.out_channels = width

    def forward(self, images: Tensor) -> EncoderOutput:
        """Encode ``images`` ``(B, C_in, H, W)`` into ``(B, 2·base, H/4, W/4)`` and ``(B, 1)``."""
        features = self.downsample(images)
        pooled = torch.cat(
            [reduce(features, "b c h w -> b c", "mean"), reduce(features, "b c h w -> b c", "max")],
            dim=1,
        )
        # One access of the spectral-normalised weight per forward = one power iteration.
        classifier_weight = self.cam_classifier.weight  # (1, 2 * width)
        cam_logits = F.linear(pooled, classifier_weight)
        channel_weights = rearrange(classifier_weight, "1 c -> 1 c 1 1")
        weighted = torch.cat([features, features], dim=1) * channel_weights
        attended = self.attention_gain * self.cam_fusion(weighted) + features
        return EncoderOutput(F.leaky_relu(attended, 0.2), cam_logits)


def discriminator_minimum_size(layers: int) -> int:
    """Smallest image side a :class:`NICEDiscriminator` with ``layers`` layers accepts.

    The global head halves the side ``layers - 2`` times, then two stride-1 4×4 convolutions
    remove one pixel each; one output pixel needs ``side // 2**(layers - 2) >= 3``.
    """
    return 3 * 2 ** (layers - 2)


class NICEDiscriminatorOutput(NamedTuple):
    """Outputs of :class:`NICEDiscriminator` on ``(B, C, H, W)`` images.

    Attributes:
        local_logits: patch logits of the shallow head, ``(B, 1, h_l, w_l)``.
        global_logits: patch logits of the deep head, ``(B, 1, h_g, w_g)``.
        cam_logits: logits of the encoder's CAM classifier, ``(B, 1)``.
        features: the encoder's latent map ``(B, 2·base, H/4, W/4)``, the generators' input.
    """

    local_logits: Tensor
    global_logits: Tensor
    cam_logits: Tensor
    features: Tensor


class NICEDiscriminator(nn.Module):
    """NICE-GAN's multi-scale discriminator whose first layers are the :class:`CAMEncoder`.

    Every convolution doubles the width. After the encoder (2 stride-2 convs) come
    ``max(0, layers - 6)`` shared stride-2 convs; the local head adds a stride-1 conv and the
    output conv, the global head ``min(2, layers - 4)`` further stride-2 convs, a stride-1 conv
    and the output conv. ``layers`` counts the convolutions on the global path; ``layers=7`` is
    NICE-GAN's default (receptive fields 70 and 286 pixels) and ``layers=6`` its other published
    depth. ``layers=5`` (one extra down-sampling in the global head) is this library's extension
    for small test images.

    Args:
        in_channels: channels of the images.
        base_channels: width of the first convolution (NICE-GAN: 64).
        layers: depth, ``>= 5``; images need sides ``>= discriminator_minimum_size(layers)``.
    """

    def __init__(self, *, in_channels: int, base_channels: int, layers: int) -> None:
        super().__init__()
        if layers < 5:
            raise ValueError(f"discriminator layers must be >= 5, got {layers}")
        self.layers = layers
        self.encoder = CAMEncoder(in_channels=in_channels, base_channels=base_channels)
        width = self.encoder.out_channels
        shared: list[nn.Module] = []
        for _ in range(max(0, layers - 6)):
            shared.append(_spectral_conv(width, 2 * width, stride=2))
            width *= 2
        self.shared = nn.Sequential(*shared)
        self.local_head = nn.Sequential(
            _spectral_conv(width, 2 * width, stride=1),
            _spectral_conv(2 * width, 1, stride=1, activation=False),
        )
        global_layers: list[nn.Module] = []
        for _ in range(min(2, layers - 4)):
            global_layers.append(_spectral_conv(width, 2 * width, stride=2))
            width *= 2
        global_layers += [
            _spectral_conv(width, 2 * width, stride=1),
            _spectral_conv(2 * width, 1, stride=1, activation=False),
        ]
        self.global_head = nn.Sequential(*global_layers)

    @property
    def minimum_size(self) -> int:
        """Smallest accepted image side, see :func:`discriminator_minimum_size`."""
        return discriminator_minimum_size(self.layers)

    def forward(self, images: Tensor) -> NICEDiscriminatorOutput:
        """Score ``images`` ``(B, C, H, W)``, sides ``>= minimum_size``; see the output type."""
        features, cam_logits = self.encoder(images)
        shared = self.shared(features)
        return NICEDiscriminatorOutput(
            self.local_head(shared), self.global_head(shared), cam_logits, features
        )


class _AdaLINResidualBlock(nn.Module):
    """``x + AdaLIN(conv3x3(ReLU(AdaLIN(conv3x3(x)))))`` with reflection padding, bias-free."""

    def __init__(self, *, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False)
        )
        self.norm1 = AdaLIN(channels=channels)
        self.conv2 = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False)
        )
        self.norm2 = AdaLIN(channels=channels)

    def forward(self, features: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        hidden = F.relu(self.norm1(self.conv1(features), scale, shift))
        return features + self.norm2(self.conv2(hidden), scale, shift)


def _pixel_shuffle_upsample(channels: int) -> nn.Sequential:
    """``(B, C, H, W) → (B, C/2, 2H, 2W)``: conv3x3 → LIN → ReLU → conv1x1 ×4 → pixel shuffle →
    LIN → ReLU (NICE-GAN's sub-pixel up-sampling)."""
    half = channels // 2
    return nn.Sequential(
        nn.ReflectionPad2d(1),
        nn.Conv2d(channels, half, kernel_size=3, bias=False),
        LayerInstanceNorm(channels=half),
        nn.ReLU(),
        nn.Conv2d(half, 4 * half, kernel_size=1),
        nn.PixelShuffle(2),
        LayerInstanceNorm(channels=half),
        nn.ReLU(),
    )


class NICEGenerator(nn.Module):
    """NICE-GAN's generator: translation module and decoder, latent map → image.

    The latent map ``(B, 2·base, h, w)`` (``h = H/4``) goes through a 3×3 conv to ``4·base``
    channels with LIN and ReLU; an MLP turns it into per-sample AdaLIN ``γ``, ``β`` ``(B, 4·base)``;
    ``num_residual_blocks`` AdaLIN residual blocks translate it; two sub-pixel up-samplings and a
    7×7 conv with ``tanh`` decode it to ``(B, out_channels, H, W)`` in ``[-1, 1]``.

    Args:
        out_channels: channels of the produced images.
        base_channels: NICE-GAN's ``ch`` (64); the latent input has ``2 * base_channels``.
        num_residual_blocks: number of AdaLIN residual blocks (NICE-GAN: 6).
        latent_size: ``None`` for the "light" MLP on the globally average-pooled map (any image
            size); ``(h, w)`` for NICE-GAN's full MLP on the flattened map, which then only
            accepts latent maps of that size.
    """

    def __init__(
        self,
        *,
        out_channels: int,
        base_channels: int,
        num_residual_blocks: int,
        latent_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        width = 4 * base_channels
        self.latent_size = latent_size
        self.stem = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(2 * base_channels, width, kernel_size=3),
            LayerInstanceNorm(channels=width),
            nn.ReLU(),
        )
        mlp_inputs = width if latent_size is None else width * latent_size[0] * latent_size[1]
        self.style_mlp = nn.Sequential(
            nn.Linear(mlp_inputs, width, bias=False),
            nn.ReLU(),
            nn.Linear(width, width, bias=False),
            nn.ReLU(),
        )
        self.to_scale = nn.Linear(width, width, bias=False)
        self.to_shift = nn.Linear(width, width, bias=False)
        self.blocks = nn.ModuleList(
            [_AdaLINResidualBlock(channels=width) for _ in range(num_residual_blocks)]
        )
        self.decoder = nn.Sequential(
            _pixel_shuffle_upsample(width),
            _pixel_shuffle_upsample(width // 2),
            nn.ReflectionPad2d(3),
            nn.Conv2d(base_channels, out_channels, kernel_size=7, bias=False),
            nn.Tanh(),
        )

    def forward(self, latent: Tensor) -> Tensor:
        """Decode ``latent`` ``(B, 2·base, h, w)`` into images ``(B, out_channels, 4h, 4w)``."""
        features = self.stem(latent)
        if self.latent_size is None:
            summary = reduce(features, "b c h w -> b c", "mean")
        else:
            summary = rearrange(features, "b c h w -> b (c h w)")
        style = self.style_mlp(summary)
        scale, shift = self.to_scale(style), self.to_shift(style)
        for block in self.blocks:
            features = block(features, scale, shift)
        return self.decoder(features)


class EncodingGenerator(nn.Module):
    """A generator with an encoder of its own: :class:`CAMEncoder` → :class:`NICEGenerator`.

    The single X→Y generator of mode NC, where no discriminator of X exists to lend its
    encoder (the official Reg-GAN code does the same). Trained with the generator loss.

    Args:
        in_channels: channels of the input images.
        out_channels: channels of the produced images.
        base_channels: width, as in :class:`CAMEncoder` / :class:`NICEGenerator`.
        num_residual_blocks: number of AdaLIN residual blocks.
        latent_size: see :class:`NICEGenerator`.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        base_channels: int,
        num_residual_blocks: int,
        latent_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.encoder = CAMEncoder(in_channels=in_channels, base_channels=base_channels)
        self.translator = NICEGenerator(
            out_channels=out_channels,
            base_channels=base_channels,
            num_residual_blocks=num_residual_blocks,
            latent_size=latent_size,
        )

    def forward(self, images: Tensor) -> Tensor:
        """Translate ``images`` ``(B, C_in, H, W)`` into ``(B, C_out, H, W)`` in ``[-1, 1]``."""
        return self.translator(self.encoder(images).features)
