"""Networks of MUNIT (Huang et al., ECCV 2018): AdaIN, encoders, AdaIN decoder, multi-scale D.

The layout follows the published MUNIT architecture (``gen``/``dis`` blocks of its configs):

* :class:`ContentEncoder`: 7×7 conv, ``num_downsamplings`` stride-2 4×4 convs that double the
  width, ``num_residual_blocks`` residual blocks; instance norm and ReLU throughout.
* :class:`StyleEncoder`: 7×7 conv, four stride-2 4×4 convs (the first two double the width), global
  average pooling and a 1×1 conv to a ``style_dim`` code; no normalisation.
* :class:`AdaINDecoder`: residual blocks whose normalisations are adaptive instance norms with
  scales and shifts produced from the style code by a 3-layer MLP, then nearest ×2 upsampling +
  5×5 conv + layer norm per downsampling step, and a 7×7 conv with ``tanh``.
* :class:`MultiScaleDiscriminator`: one PatchGAN-like stack of stride-2 4×4 convs (LeakyReLU 0.2,
  no normalisation) per scale, the image being average-pooled by 2 between scales.

Style codes are ``(B, style_dim)`` tensors; content codes are ``(B, C_content, H / 2**n, W / 2**n)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from einops.layers.torch import Rearrange
from torch import Tensor, nn

from .._checks import check_float, check_rank

__all__ = [
    "adaptive_instance_norm",
    "AdaptiveInstanceNorm2d",
    "LayerNorm2d",
    "ContentEncoder",
    "StyleEncoder",
    "AdaINDecoder",
    "MultiScaleDiscriminator",
    "STYLE_ENCODER_DOWNSAMPLING",
]

#: MUNIT's style encoder always halves the image four times, whatever the content encoder does.
STYLE_ENCODER_DOWNSAMPLING = 4


def _at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """The dtype normalisation statistics are computed in: float32, or float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


def adaptive_instance_norm(
    features: Tensor, scale: Tensor, shift: Tensor, eps: float = 1e-5
) -> Tensor:
    """Adaptive instance normalisation (Huang & Belongie 2017).

    .. math::
        \\mathrm{AdaIN}(x, \\gamma, \\beta)_{bc} =
        \\gamma_{bc} \\frac{x_{bc} - \\mu_{bc}(x)}{\\sqrt{\\sigma^2_{bc}(x) + \\epsilon}} + \\beta_{bc}

    where :math:`\\mu_{bc}` and :math:`\\sigma^2_{bc}` are the mean and the biased variance of
    channel ``c`` of sample ``b`` over its spatial positions. Statistics are computed in at least
    float32 (also under bf16 autocast); the result has the dtype of ``features``.

    Args:
        features: ``(B, C, H, W)`` feature maps, any real values.
        scale: ``(B, C)`` per-sample, per-channel scale :math:`\\gamma` (MUNIT uses it raw).
        shift: ``(B, C)`` per-sample, per-channel shift :math:`\\beta`.
        eps: added to the variance.

    Returns:
        ``(B, C, H, W)``: each ``(b, c)`` slice has mean ``shift[b, c]`` and standard deviation
        ``|scale[b, c]|`` (up to ``eps``).

    Example:
        >>> x = torch.randn(2, 3, 8, 8)
        >>> y = adaptive_instance_norm(x, torch.full((2, 3), 2.0), torch.ones(2, 3))
        >>> round(y[0, 0].mean().item(), 4), round(y[0, 0].std(unbiased=False).item(), 3)
        (1.0, 2.0)
    """
    check_float(features, "features")
    check_rank(features, "features", (4,), "(B, C, H, W)")
    expected = tuple(features.shape[:2])
    for name, value in (("scale", scale), ("shift", shift)):
        check_float(value, name)
        if tuple(value.shape) != expected:
            raise ValueError(
                f"{name} must have shape (B, C) = {expected} to match features of shape "
                f"{tuple(features.shape)}, got {tuple(value.shape)}"
            )
    compute = _at_least_float32(features.dtype)
    normalized = F.instance_norm(features.to(compute), eps=eps)
    scale = rearrange(scale.to(compute), "b c -> b c 1 1")
    shift = rearrange(shift.to(compute), "b c -> b c 1 1")
    return (normalized * scale + shift).to(features.dtype)


class AdaptiveInstanceNorm2d(nn.Module):
    """Module form of :func:`adaptive_instance_norm`; scale and shift are inputs, not parameters.

    Args:
        num_features: number of channels ``C`` it expects.
        eps: added to the variance.

    Example:
        >>> norm = AdaptiveInstanceNorm2d(3)
        >>> norm(torch.randn(2, 3, 8, 8), torch.ones(2, 3), torch.zeros(2, 3)).shape
        torch.Size([2, 3, 8, 8])
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps

    def forward(self, features: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        if features.ndim == 4 and features.shape[1] != self.num_features:
            raise ValueError(
                f"features must have {self.num_features} channels, got shape {tuple(features.shape)}"
            )
        return adaptive_instance_norm(features, scale, shift, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class LayerNorm2d(nn.Module):
    """MUNIT's layer norm: per sample over ``(C, H, W)``, then a per-channel affine map.

    ``y = gamma * (x - mean) / (std + eps) + beta`` with the unbiased standard deviation, as in
    MUNIT; ``gamma`` starts uniform in ``[0, 1)`` and ``beta`` at zero, as there.

    Args:
        num_features: number of channels ``C``.
        eps: added to the standard deviation.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.rand(num_features))
        self.beta = nn.Parameter(torch.zeros(num_features))

    def forward(self, features: Tensor) -> Tensor:
        """Normalise ``(B, C, H, W)`` features; returns the same shape and dtype."""
        values = features.to(_at_least_float32(features.dtype))
        mean = values.mean(dim=(1, 2, 3), keepdim=True)
        std = values.std(dim=(1, 2, 3), keepdim=True)
        normalized = (values - mean) / (std + self.eps)
        gamma = rearrange(self.gamma.to(values.dtype), "c -> 1 c 1 1")
        beta = rearrange(self.beta.to(values.dtype), "c -> 1 c 1 1")
        return (normalized * gamma + beta).to(features.dtype)


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "lrelu":
        return nn.LeakyReLU(0.2)
    if name == "tanh":
        return nn.Tanh()
    return nn.Identity()


def _conv_block(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int,
    *,
    norm: str,
    activation: str,
    padding_mode: str,
) -> nn.Sequential:
    """Conv (``kernel_size // 2`` padding, or 1 for 4×4) → ``"instance"``/``"layer"``/no norm → act."""
    padding = 1 if kernel_size == 4 else kernel_size // 2
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, padding_mode=padding_mode
        )
    ]
    if norm == "instance":
        layers.append(nn.InstanceNorm2d(out_channels))
    elif norm == "layer":
        layers.append(LayerNorm2d(out_channels))
    layers.append(_activation(activation))
    return nn.Sequential(*layers)


class _ResidualBlock(nn.Module):
    """``x + IN(conv(ReLU(IN(conv(x)))))`` with 3×3 convs, as in MUNIT's content encoder."""

    def __init__(self, channels: int, padding_mode: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_block(
                channels,
                channels,
                3,
                1,
                norm="instance",
                activation="relu",
                padding_mode=padding_mode,
            ),
            _conv_block(
                channels,
                channels,
                3,
                1,
                norm="instance",
                activation="none",
                padding_mode=padding_mode,
            ),
        )

    def forward(self, features: Tensor) -> Tensor:
        return features + self.body(features)


class _AdaINResidualBlock(nn.Module):
    """``x + AdaIN(conv(ReLU(AdaIN(conv(x)))))``: a decoder block whose norms carry the style."""

    def __init__(self, channels: int, padding_mode: str) -> None:
        super().__init__()
        self.first_conv = nn.Conv2d(channels, channels, 3, 1, 1, padding_mode=padding_mode)
        self.second_conv = nn.Conv2d(channels, channels, 3, 1, 1, padding_mode=padding_mode)
        self.norm = AdaptiveInstanceNorm2d(channels)

    def forward(self, features: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        """``scale``/``shift``: ``(2, B, C)``, one ``(B, C)`` pair per AdaIN of the block."""
        hidden = F.relu(self.norm(self.first_conv(features), scale[0], shift[0]))
        return features + self.norm(self.second_conv(hidden), scale[1], shift[1])


class ContentEncoder(nn.Module):
    """Image ``(B, C_in, H, W)`` → content code ``(B, base_channels * 2**n, H / 2**n, W / 2**n)``.

    Args:
        in_channels: image channels.
        base_channels: width of the first layer (MUNIT ``gen.dim``, 64).
        num_downsamplings: stride-2 convs ``n`` (MUNIT ``n_downsample``, 2).
        num_residual_blocks: residual blocks at the bottom (MUNIT ``n_res``, 4).
        padding_mode: ``"reflect"`` (MUNIT ``pad_type: reflect``) or ``"zeros"``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        base_channels: int,
        num_downsamplings: int,
        num_residual_blocks: int,
        padding_mode: str,
    ) -> None:
        super().__init__()
        block = {"norm": "instance", "activation": "relu", "padding_mode": padding_mode}
        layers: list[nn.Module] = [_conv_block(in_channels, base_channels, 7, 1, **block)]
        channels = base_channels
        for _ in range(num_downsamplings):
            layers.append(_conv_block(channels, 2 * channels, 4, 2, **block))
            channels *= 2
        layers += [_ResidualBlock(channels, padding_mode) for _ in range(num_residual_blocks)]
        self.layers = nn.Sequential(*layers)
        self.out_channels = channels

    def forward(self, image: Tensor) -> Tensor:
        return self.layers(image)


class StyleEncoder(nn.Module):
    """Image ``(B, C_in, H, W)`` → style code ``(B, style_dim)`` (global average pooled).

    Args:
        in_channels: image channels.
        base_channels: width of the first layer (MUNIT ``gen.dim``, 64); the width doubles on the
            first two of the :data:`STYLE_ENCODER_DOWNSAMPLING` stride-2 convs.
        style_dim: length of the style code (MUNIT ``style_dim``, 8).
        padding_mode: ``"reflect"`` or ``"zeros"``.
    """

    def __init__(
        self, *, in_channels: int, base_channels: int, style_dim: int, padding_mode: str
    ) -> None:
        super().__init__()
        block = {"norm": "none", "activation": "relu", "padding_mode": padding_mode}
        layers: list[nn.Module] = [_conv_block(in_channels, base_channels, 7, 1, **block)]
        channels = base_channels
        for step in range(STYLE_ENCODER_DOWNSAMPLING):
            widened = 2 * channels if step < 2 else channels
            layers.append(_conv_block(channels, widened, 4, 2, **block))
            channels = widened
        layers += [
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, style_dim, 1),
            Rearrange("b s 1 1 -> b s"),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, image: Tensor) -> Tensor:
        return self.layers(image)


class AdaINDecoder(nn.Module):
    """Content code + style code → image in ``[-1, 1]``; owns the MLP that maps style to AdaIN.

    Args:
        content_channels: channels of the content code (``ContentEncoder.out_channels``).
        out_channels: image channels.
        style_dim: length of the style code.
        mlp_channels: hidden width of the 3-layer style MLP (MUNIT ``mlp_dim``, 256).
        num_upsamplings: nearest ×2 upsampling steps, equal to the encoder's downsampling.
        num_residual_blocks: AdaIN residual blocks (two AdaIN layers each).
        padding_mode: ``"reflect"`` or ``"zeros"``.
    """

    def __init__(
        self,
        *,
        content_channels: int,
        out_channels: int,
        style_dim: int,
        mlp_channels: int,
        num_upsamplings: int,
        num_residual_blocks: int,
        padding_mode: str,
    ) -> None:
        super().__init__()
        self.content_channels = content_channels
        self.style_dim = style_dim
        self.num_adain_layers = 2 * num_residual_blocks
        self.style_mlp = nn.Sequential(
            nn.Linear(style_dim, mlp_channels),
            nn.ReLU(),
            nn.Linear(mlp_channels, mlp_channels),
            nn.ReLU(),
            # one (scale, shift) pair of C values per AdaIN layer
            nn.Linear(mlp_channels, self.num_adain_layers * 2 * content_channels),
        )
        self.residual_blocks = nn.ModuleList(
            _AdaINResidualBlock(content_channels, padding_mode) for _ in range(num_residual_blocks)
        )
        layers: list[nn.Module] = []
        channels = content_channels
        for _ in range(num_upsamplings):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                _conv_block(
                    channels,
                    channels // 2,
                    5,
                    1,
                    norm="layer",
                    activation="relu",
                    padding_mode=padding_mode,
                ),
            ]
            channels //= 2
        layers.append(
            _conv_block(
                channels,
                out_channels,
                7,
                1,
                norm="none",
                activation="tanh",
                padding_mode=padding_mode,
            )
        )
        self.upsampling = nn.Sequential(*layers)

    def forward(self, content: Tensor, style: Tensor) -> Tensor:
        """Decode ``content`` ``(B, C_content, h, w)`` with ``style`` ``(B, style_dim)``.

        Returns:
            ``(B, out_channels, h * 2**n, w * 2**n)`` in ``[-1, 1]``.
        """
        if style.ndim != 2 or style.shape != (content.shape[0], self.style_dim):
            raise ValueError(
                f"style must have shape (B, style_dim) = ({content.shape[0]}, {self.style_dim}), "
                f"got {tuple(style.shape)}"
            )
        adain = rearrange(
            self.style_mlp(style),
            "b (layer affine c) -> affine layer b c",
            layer=self.num_adain_layers,
            affine=2,
        )
        scale, shift = adain[0], adain[1]
        features = content
        for index, block in enumerate(self.residual_blocks):
            layers = slice(2 * index, 2 * index + 2)
            features = block(features, scale[layers], shift[layers])
        return self.upsampling(features)


class MultiScaleDiscriminator(nn.Module):
    """MUNIT's multi-scale discriminator: one patch discriminator per image scale.

    Scale ``k`` sees the image average-pooled ``k`` times by 2 (3×3 window, stride 2, padding not
    counted). A pyramid level smaller than :attr:`min_size` (``2**num_layers``, the smallest side
    its stride-2 convs accept) is not made: coarser scales then see the coarsest valid level, so
    32×32 images work with 3 scales and 4 layers. At MUNIT's 256×256 nothing changes.

    Args:
        in_channels: image channels.
        base_channels: width of the first layer (MUNIT ``dis.dim``, 64), doubled at every layer.
        num_layers: stride-2 4×4 convs per scale (MUNIT ``n_layer``, 4).
        num_scales: number of scales (MUNIT ``num_scales``, 3).
        padding_mode: ``"reflect"`` or ``"zeros"``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        base_channels: int = 64,
        num_layers: int = 4,
        num_scales: int = 3,
        padding_mode: str = "reflect",
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.min_size = 2**num_layers
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.scales = nn.ModuleList(
            self._make_scale(in_channels, base_channels, num_layers, padding_mode)
            for _ in range(num_scales)
        )

    @staticmethod
    def _make_scale(
        in_channels: int, base_channels: int, num_layers: int, padding_mode: str
    ) -> nn.Sequential:
        block = {"norm": "none", "activation": "lrelu", "padding_mode": padding_mode}
        layers: list[nn.Module] = [_conv_block(in_channels, base_channels, 4, 2, **block)]
        channels = base_channels
        for _ in range(num_layers - 1):
            layers.append(_conv_block(channels, 2 * channels, 4, 2, **block))
            channels *= 2
        layers.append(nn.Conv2d(channels, 1, 1))
        return nn.Sequential(*layers)

    def forward(self, image: Tensor) -> list[Tensor]:
        """Score ``image`` ``(B, C, H, W)``; returns one ``(B, 1, h_k, w_k)`` map per scale."""
        check_rank(image, "image", (4,), "(B, C, H, W)")
        if min(image.shape[-2:]) < self.min_size:
            raise ValueError(
                f"image must be at least {self.min_size}×{self.min_size} for a discriminator with "
                f"{self.num_layers} stride-2 layers, got shape {tuple(image.shape)}"
            )
        predictions = []
        for scale in self.scales:
            predictions.append(scale(image))
            smaller = self.downsample(image)
            if min(smaller.shape[-2:]) >= self.min_size:
                image = smaller
        return predictions
