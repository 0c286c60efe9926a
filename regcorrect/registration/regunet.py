"""The registration network R of RegGAN: a residual U-Net that outputs a displacement field.

The default mirrors the paper's R (the official ``ResUnet``: seven encoder levels of 32/64
channels with residual blocks, a 1×1-conv bottleneck with three residual blocks, a decoder with
skip connections, LeakyReLU, instance norm inside the residual blocks, an output convolution
initialised near zero so training starts from the identity field). Unlike the official network it

* adapts its depth to the input: the number of levels used is the largest that keeps the
  bottleneck at least 2 pixels wide, so any spatial size ``>= 32`` works (non-square, odd sizes
  included); the bottleneck's receptive field then covers the whole image;
* works in 2D and 3D (``spatial_dims``);
* can add a global **affine head** (``affine=True``): displacement = affine field + dense
  residual. Misalignment of real scans — and the paper's noise — is mostly affine, which a
  global head absorbs at any magnitude, while the residual stays small and smooth. By default
  the head reads **spatial moments** (orders 0–2 over centred coordinates) of the two finest
  encoder levels' features, plus the bottleneck's mean: the centroids and second moments from
  which translation, rotation and scale follow (classical moment-based alignment), at full
  resolution (``affine_features="moments"``); ``"mean"`` feeds it the bottleneck's spatial mean
  only (the head before that option, kept to reproduce results marked "mean-pooled head");
* can output a stationary velocity field integrated by scaling and squaring
  (``diffeomorphic=True``);
* can refine its own output recursively (``passes=k``): the same network is applied ``k``
  times, each time to the moving image warped by the field found so far, and the fields are
  composed (recursive cascades, Zhao et al. 2019). Each pass only has to find what the previous
  ones left, which lowered the end-point error of affine misalignments from 2.5 px to 0.9 px at
  equal training steps (``docs/results/registration.md``);
* can start from a closed-form **moment alignment** (``prealign="moments"``): the similarity
  transform that matches the centroids and second moments of the two images
  (:func:`~regcorrect.registration.moment_alignment`) is applied first, and the network only
  learns what it leaves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .._checks import (
    as_scalar,
    check_choice,
    check_count,
    check_displacement,
    check_fits_module,
    check_float,
    check_rank,
    check_same_device,
    check_spatial_dims,
    check_spatial_shape,
    is_int,
)
from .._precision import without_autocast
from .alignment import moment_alignment
from .fields import compose, integrate_velocity
from .grid import centred_coordinates, centring_half, moment_basis, moment_count
from .warp import warp

__all__ = ["RegUNet", "RegistrationFields", "PAPER_CHANNELS", "AFFINE_FEATURES", "PREALIGNMENTS"]

#: Encoder channels per level of the paper's R (the official ``ResUnet`` configuration 'A').
PAPER_CHANNELS: tuple[int, ...] = (32, 64, 64, 64, 64, 64, 64)

#: What the affine head reads (``RegUNet(affine_features=...)``).
AFFINE_FEATURES: tuple[str, ...] = ("moments", "mean")

#: Closed-form initial alignments (``RegUNet(prealign=...)``; ``None``: none).
PREALIGNMENTS: tuple[str, ...] = ("moments",)

#: Encoder levels (finest first) whose feature moments feed the ``"moments"`` affine head.
_MOMENT_LEVELS = 2


@dataclass
class RegistrationFields:
    """The parts of a registration network's output.

    Attributes:
        displacement: the full field ``(B, N, *spatial)`` in pixels (library convention).
        residual: the dense, non-affine part ``(B, N, *spatial)`` (the smoothness loss applies
            to it); equals ``displacement`` when there is no affine head.
        affine: the affine part as a matrix ``(B, N, N + 1)`` acting on centred, isotropically
            normalised coordinates in axis order, or ``None`` without affine head.

    With several passes (``RegUNet(passes=k)``), ``displacement`` is the composition of the
    passes' fields, ``affine`` the composition of their affine parts (exact), and ``residual``
    the **sum** of their dense parts (what the smoothness loss regularises: each pass's own
    non-affine field).
    """

    displacement: Tensor
    residual: Tensor
    affine: Tensor | None = None


def _conv(spatial_dims: int) -> type[nn.Module]:
    return nn.Conv2d if spatial_dims == 2 else nn.Conv3d


def _norm(spatial_dims: int, channels: int) -> nn.Module:
    norm = nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d
    return norm(channels, affine=False, track_running_stats=False)


def _affine_head_inputs(spatial_dims: int, channels: Sequence[int], features: str) -> int:
    """Input width of the affine head: the bottleneck's mean (``2 * channels[-1]``), plus the
    moments (``moment_basis`` columns) of the finest ``_MOMENT_LEVELS`` levels' features."""
    width = 2 * channels[-1]
    if features == "moments":
        width += moment_count(spatial_dims) * sum(channels[:_MOMENT_LEVELS])
    return width


def _compose_affine(outer: Tensor, inner: Tensor) -> Tensor:
    """The affine part of ``compose(outer field, inner field)``, both ``(B, N, N + 1)``.

    In displacement form ``u(p) = L p + t``: ``compose(u_o, u_i)(p) = u_o(p) + u_i(p + u_o(p))``
    gives ``L = L_o + L_i + L_i L_o`` and ``t = t_o + t_i + L_i t_o``.
    """
    n = outer.shape[1]
    linear_o, shift_o = outer[..., :n], outer[..., n:]
    linear_i, shift_i = inner[..., :n], inner[..., n:]
    linear = linear_o + linear_i + linear_i @ linear_o
    shift = shift_o + shift_i + linear_i @ shift_o
    return torch.cat([linear, shift], dim=-1)


def _replicate_pad(x: Tensor, width: int) -> Tensor:
    """Pad every spatial axis of ``x`` ``(B, C, *spatial)`` by repeating its edge ``width`` times.

    Same values as ``F.pad(x, ..., mode="replicate")``, built from ``cat`` so that
    ``torch.compile`` can trace its backward (torch 2.13's meta kernel of
    ``replication_pad2d_backward`` rejects channels-last strides).
    """
    for axis in range(2, x.ndim):
        first = x.narrow(axis, 0, 1)
        last = x.narrow(axis, x.shape[axis] - 1, 1)
        x = torch.cat([first] * width + [x] + [last] * width, dim=axis)
    return x


class _EdgePaddedConv2d(nn.Conv2d):
    """``nn.Conv2d`` (no padding of its own) after a replicate pad of ``kernel_size // 2``."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(_replicate_pad(x, self.kernel_size[0] // 2))


class _EdgePaddedConv3d(nn.Conv3d):
    """``nn.Conv3d`` (no padding of its own) after a replicate pad of ``kernel_size // 2``."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(_replicate_pad(x, self.kernel_size[0] // 2))


class _ResidualBlock(nn.Module):
    """conv-IN-ReLU-conv-IN with replicate (edge) padding and an identity skip."""

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        conv = _EdgePaddedConv2d if spatial_dims == 2 else _EdgePaddedConv3d
        self.body = nn.Sequential(
            conv(channels, channels, 3),
            _norm(spatial_dims, channels),
            nn.ReLU(),
            conv(channels, channels, 3),
            _norm(spatial_dims, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class _ConvAct(nn.Sequential):
    def __init__(
        self, spatial_dims: int, in_ch: int, out_ch: int, kernel: int, residual: bool
    ) -> None:
        layers: list[nn.Module] = [
            _conv(spatial_dims)(in_ch, out_ch, kernel, padding=kernel // 2),
            nn.LeakyReLU(0.2),
        ]
        if residual:
            layers.append(_ResidualBlock(spatial_dims, out_ch))
        super().__init__(*layers)


class RegUNet(nn.Module):
    """Residual U-Net registration network ``R(moving, fixed) -> displacement``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the input, i.e. of ``cat([moving, fixed], dim=1)`` (2 for two
            single-channel images).
        channels: encoder channels per level (decoder mirrors them). Default: the paper's
            ``(32, 64, 64, 64, 64, 64, 64)``. Levels that the input is too small for are skipped.
        bottleneck_blocks: residual blocks at the bottleneck (paper: 3).
        affine: add a global affine head; the output is affine field + dense residual.
        affine_features: what the affine head reads: ``"moments"`` (default) — the mean and the
            first and second spatial moments of the features of the two finest encoder levels,
            plus the bottleneck's spatial mean (position-aware: a centroid shift is a
            translation); ``"mean"`` — the bottleneck's spatial mean only (position must then be
            inferred from channel statistics; kept to reproduce earlier results).
        diffeomorphic: integrate the dense residual as a stationary velocity field
            (scaling and squaring, ``integration_steps``); with ``affine`` the two are composed.
        integration_steps: squarings for ``diffeomorphic``.
        passes: how many times the network is applied (weights shared): pass ``k`` sees
            ``cat([warp(moving, u), fixed])`` with ``u`` the field of passes ``1..k-1``
            (border padding) and its field is composed onto ``u``. ``moving`` and ``fixed`` are
            the two halves of the input's channels, so ``passes > 1`` needs an even
            ``in_channels``. Costs ``passes`` times the compute of one pass. ``0``: the network
            is not applied — the field is the pre-alignment (``prealign``) or zero; with
            ``build_model(..., initial_alignment="source")`` a registration that is all closed
            form (the network's weights stay unused).
        prealign: ``None`` (default, the paper) or ``"moments"``: before the network's passes,
            ``moving`` is aligned onto ``fixed`` by the similarity transform that matches their
            intensity moments (:func:`~regcorrect.registration.moment_alignment`, background
            ``-1``; no gradient flows through it); the passes refine from there and every field
            includes it (in ``affine`` too, with an affine head). Needs an even ``in_channels``.
        min_bottleneck: smallest bottleneck size (pixels) when choosing the depth.
        image_size: if given, only the levels an input of this spatial size uses are built
            (no unused parameters, e.g. for DistributedDataParallel); larger sizes still work,
            smaller ones only if the widths of the deeper levels are equal (as the paper's).

    Shapes:
        input ``(B, in_channels, H, W)`` (or ``(B, in_channels, D, H, W)``), every spatial size
        ``>= 4 * min_bottleneck`` (8 with the defaults: 2 levels; 32 gives 4 levels);
        output ``(B, spatial_dims, *spatial)`` in pixels, channels ``(dy, dx)`` /
        ``(dz, dy, dx)`` (see ``docs/conventions.md``), float32 (float64 for a float64
        network) also under autocast or for a half-precision network.

    Example:
        >>> net = RegUNet(spatial_dims=2, in_channels=2, channels=(8, 16, 16, 16))
        >>> moving, fixed = torch.rand(1, 1, 40, 48), torch.rand(1, 1, 40, 48)
        >>> net(torch.cat([moving, fixed], dim=1)).shape
        torch.Size([1, 2, 40, 48])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 2,
        *,
        channels: Sequence[int] = PAPER_CHANNELS,
        bottleneck_blocks: int = 3,
        affine: bool = False,
        affine_features: str = "moments",
        diffeomorphic: bool = False,
        integration_steps: int = 7,
        passes: int = 1,
        prealign: str | None = None,
        min_bottleneck: int = 2,
        image_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        spatial_dims = check_spatial_dims(spatial_dims)
        in_channels = check_count(in_channels, "in_channels", minimum=1)
        bottleneck_blocks = check_count(bottleneck_blocks, "bottleneck_blocks")
        integration_steps = check_count(integration_steps, "integration_steps")
        min_bottleneck = check_count(min_bottleneck, "min_bottleneck", minimum=1)
        for name, flag in (("affine", affine), ("diffeomorphic", diffeomorphic)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        widths = (
            None
            if isinstance(channels, (str, bytes)) or not isinstance(channels, Iterable)
            else [as_scalar(c) for c in channels]
        )
        if widths is None or len(widths) < 2 or not all(is_int(c) and c >= 1 for c in widths):
            raise ValueError(f"channels must list >= 2 positive int widths, got {channels!r}")
        channels = tuple(int(c) for c in widths)
        self.min_bottleneck = min_bottleneck
        if image_size is not None:
            image_size = check_spatial_shape(image_size, "image_size", spatial_dims)
            channels = channels[: max(2, self._fit(image_size))]
        check_choice(affine_features, "affine_features", AFFINE_FEATURES)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.channels = channels
        self.affine = affine
        self.affine_features = affine_features
        self.diffeomorphic = diffeomorphic
        self.integration_steps = integration_steps
        self.passes = passes  # validated by the property's setter
        self.prealign = prealign  # likewise
        conv = _conv(spatial_dims)

        self.encoder = nn.ModuleList()
        previous = in_channels
        for width in channels:
            self.encoder.append(_ConvAct(spatial_dims, previous, width, 3, residual=True))
            previous = width
        deepest = channels[-1]
        # The bottleneck follows whichever level L - 1 is the deepest one used for an input
        # (L >= 2 levels). Its 1x1 projection in is keyed by that level's width; its projection
        # out by the width decoder[L - 1] expects from below: channels[L], or channels[-1] when
        # every level is used. With image_size, only the projections of that size are built.
        if image_size is not None:
            in_widths, out_widths = [deepest], [deepest]
        else:
            in_widths = sorted(set(channels[1:]))
            out_widths = sorted(set(channels[2:]) | {deepest})
        self.bottleneck_in = nn.ModuleDict(
            {str(w): _ConvAct(spatial_dims, w, 2 * deepest, 1, residual=False) for w in in_widths}
        )
        self.bottleneck = nn.Sequential(
            *[_ResidualBlock(spatial_dims, 2 * deepest) for _ in range(bottleneck_blocks)]
        )
        self.bottleneck_out = nn.ModuleDict(
            {str(w): _ConvAct(spatial_dims, 2 * deepest, w, 1, residual=False) for w in out_widths}
        )
        # decoder[i] fuses level i's skip with the upsampled deeper features (width channels[i]).
        self.decoder = nn.ModuleList()
        for level, width in enumerate(channels):
            deeper = channels[level + 1] if level + 1 < len(channels) else width
            self.decoder.append(_ConvAct(spatial_dims, deeper + width, width, 3, residual=False))
        first = channels[0]
        self.refine = nn.Sequential(
            _ResidualBlock(spatial_dims, first), _ConvAct(spatial_dims, first, first, 1, False)
        )
        self.output = conv(first, spatial_dims, 3, padding=1)
        nn.init.normal_(self.output.weight, mean=0.0, std=1e-5)
        nn.init.zeros_(self.output.bias)
        if affine:
            self.affine_head = nn.Sequential(
                nn.Linear(_affine_head_inputs(spatial_dims, channels, affine_features), 64),
                nn.LeakyReLU(0.2),
                nn.Linear(64, spatial_dims * (spatial_dims + 1)),
            )
            nn.init.zeros_(self.affine_head[-1].weight)
            nn.init.zeros_(self.affine_head[-1].bias)

    def _load_from_state_dict(
        self, state_dict: dict[str, Tensor], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # A clear error for a checkpoint whose affine head reads the other features (e.g. one
        # saved before ``affine_features`` existed, with the bottleneck-mean head).
        key = prefix + "affine_head.0.weight"
        if self.affine and key in state_dict:
            saved = state_dict[key].shape[-1]
            expected = self.affine_head[0].in_features
            if saved != expected:
                other = [
                    f
                    for f in AFFINE_FEATURES
                    if _affine_head_inputs(self.spatial_dims, self.channels, f) == saved
                ]
                hint = (
                    f"; build RegUNet(..., affine_features={other[0]!r}) to load it"
                    if other
                    else ""
                )
                raise ValueError(
                    f"{key} reads {saved} features, but this RegUNet's affine head "
                    f"(affine_features={self.affine_features!r}) reads {expected}{hint}"
                )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def passes(self) -> int:
        """How many times the network is applied (see the class docstring). May be changed
        after training, e.g. one more pass at test time: ``net.passes = 3``."""
        return self._passes

    @passes.setter
    def passes(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"passes must be an integer >= 0, got {value!r}")
        if value > 1:
            self._require_even_in_channels("passes > 1")
        self._passes = value

    @property
    def prealign(self) -> str | None:
        """The closed-form alignment the passes start from (``None`` or ``"moments"``); may be
        changed after training, e.g. ``net.prealign = None``."""
        return self._prealign

    @prealign.setter
    def prealign(self, value: str | None) -> None:
        if value is not None:
            check_choice(value, "prealign", PREALIGNMENTS)
            self._require_even_in_channels("prealign")
        self._prealign = value

    def _require_even_in_channels(self, what: str) -> None:
        """Raise unless the input splits into ``cat([moving, fixed])`` of equal channels."""
        if self.in_channels % 2:
            raise ValueError(
                f"{what} needs an even in_channels (cat([moving, fixed]) of equal channels), "
                f"got in_channels={self.in_channels}"
            )

    # ------------------------------------------------------------------ helpers
    def _fit(self, spatial_shape: Sequence[int]) -> int:
        # level l runs at ceil(size / 2**l); the bottleneck at ceil(size / 2**levels).
        smallest = min(int(s) for s in spatial_shape)
        return max(0, int(math.floor(math.log2(max(smallest, 1) / self.min_bottleneck))))

    def levels_for(self, spatial_shape: Sequence[int]) -> int:
        """Number of encoder levels used for an input of ``spatial_shape``."""
        return min(len(self.channels), self._fit(spatial_shape))

    def _check_input(self, x: Tensor) -> None:
        check_float(x, "x")
        layout = "(B, C, H, W)" if self.spatial_dims == 2 else "(B, C, D, H, W)"
        check_rank(x, "x", (self.spatial_dims + 2,), layout)
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have in_channels={self.in_channels} channels (cat([moving, fixed], dim=1)), "
                f"got shape {tuple(x.shape)}"
            )
        check_fits_module(x, "x", self, "RegUNet")
        if self.levels_for(x.shape[2:]) < 2:
            needed = self.min_bottleneck * 4
            raise ValueError(
                f"x spatial shape {tuple(x.shape[2:])} is too small for RegUNet: every spatial "
                f"size must be >= {needed}"
            )

    def _affine_field(self, theta: Tensor, spatial: Sequence[int]) -> Tensor:
        """Displacement of ``theta`` ``(B, N, N+1)`` on centred, isotropically scaled coords.

        Computed in ``theta``'s dtype (at least float32) with autocast off: a bfloat16 product
        would round the field to about 1/256 of the image size."""
        n = self.spatial_dims
        half = centring_half(spatial)
        theta = theta.to(torch.promote_types(theta.dtype, torch.float32))
        with without_autocast(theta.device.type):
            coords = centred_coordinates(spatial, device=theta.device, dtype=theta.dtype)
            field = theta[:, :, :n] @ coords + theta[:, :, n:]  # (B, N, P), normalised units
            return (field * half).reshape(theta.shape[0], n, *spatial)

    @staticmethod
    def _moments(levels: Sequence[Tensor]) -> list[Tensor]:
        """Per-channel spatial moments (orders 0–2) of each ``(B, C, *spatial)`` feature map,
        each flattened to ``(B, C * M)`` (see ``moment_basis``)."""
        out = []
        for features in levels:
            spatial = features.shape[2:]
            basis = moment_basis(spatial, device=features.device, dtype=features.dtype)
            flat = rearrange(features, "b c ... -> b c (...)")
            moments = (flat @ basis) / basis.shape[0]  # (B, C, M): means of f, f*c_i, f*c_i*c_j
            out.append(rearrange(moments, "b c m -> b (c m)"))
        return out

    # ------------------------------------------------------------------ forward
    def decompose(self, x: Tensor, *, initial: Tensor | None = None) -> RegistrationFields:
        """Run the network and return the full field with its affine and dense parts.

        Args:
            x: ``cat([moving, fixed], dim=1)``, ``(B, in_channels, *spatial)``.
            initial: optional field ``(B or 1, spatial_dims, *spatial)`` in pixels to start
                from (e.g. a closed-form alignment; no gradient is taken through it): pass
                ``k`` sees ``cat([warp(moving, u), fixed])`` with ``u`` = the passes ``1..k-1``
                composed onto ``initial``, so every pass interpolates the original ``moving``
                once; the result's ``displacement`` includes ``initial``, its ``residual`` and
                ``affine`` are the network's own (and the pre-alignment's, with ``prealign``).
                With ``passes=0`` and no ``prealign`` the displacement *is* ``initial``. Needs
                an even ``in_channels``.
        """
        self._check_input(x)
        if initial is None and self.passes == 1 and self.prealign is None:
            return self._one_pass(x)
        half = self.in_channels // 2
        moving, fixed = x[:, :half], x[:, half:]
        if initial is not None:
            fields, remaining = self._initial_fields(moving, fixed, initial), self.passes
        elif self.prealign is not None:
            fields, remaining = self._moment_fields(moving, fixed), self.passes
        elif self.passes == 0:
            return self._identity_fields(x)
        else:
            fields, remaining = self._one_pass(x), self.passes - 1
        for _ in range(remaining):
            aligned = warp(moving, fields.displacement)
            step = self._one_pass(torch.cat([aligned, fixed], dim=1))
            fields = RegistrationFields(
                displacement=compose(step.displacement, fields.displacement),
                residual=fields.residual + step.residual,
                affine=None if step.affine is None else _compose_affine(step.affine, fields.affine),
            )
        return fields

    def _initial_fields(self, moving: Tensor, fixed: Tensor, initial: Tensor) -> RegistrationFields:
        """``initial`` (checked) as fields, with the pre-alignment of ``moving ∘ initial``
        composed onto it when ``prealign`` is set."""
        self._require_even_in_channels("initial")
        check_displacement(initial, "initial")
        expected = (self.spatial_dims, *moving.shape[2:])
        if tuple(initial.shape[1:]) != expected or initial.shape[0] not in (1, moving.shape[0]):
            raise ValueError(
                f"initial must have shape ({moving.shape[0]} or 1, {', '.join(map(str, expected))}) "
                f"to match x {tuple(moving.shape[:1]) + (self.in_channels,) + expected[1:]}, "
                f"got {tuple(initial.shape)}"
            )
        check_same_device(initial=initial, x=moving)
        dtype = torch.promote_types(moving.dtype, torch.float32)
        start = initial.detach().to(dtype).expand(moving.shape[0], *expected)
        if self.prealign is None:
            theta = start.new_zeros(start.shape[0], self.spatial_dims, self.spatial_dims + 1)
            return RegistrationFields(
                displacement=start,
                residual=torch.zeros_like(start),
                affine=theta if self.affine else None,
            )
        pre = self._moment_fields(warp(moving, start), fixed)
        return RegistrationFields(
            displacement=compose(pre.displacement, start),
            residual=pre.residual,
            affine=pre.affine,
        )

    def _identity_fields(self, x: Tensor) -> RegistrationFields:
        """Zero fields (``passes=0`` without a pre-alignment): no registration at all."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        zeros = x.new_zeros((x.shape[0], self.spatial_dims, *x.shape[2:]), dtype=dtype)
        theta = x.new_zeros((x.shape[0], self.spatial_dims, self.spatial_dims + 1), dtype=dtype)
        return RegistrationFields(
            displacement=zeros, residual=zeros, affine=theta if self.affine else None
        )

    def _moment_fields(self, moving: Tensor, fixed: Tensor) -> RegistrationFields:
        """The moment alignment of ``moving`` onto ``fixed`` as fields (no gradient)."""
        with without_autocast(moving.device.type):  # float32 matrices, also under autocast
            spatial = tuple(moving.shape[2:])
            matrix = moment_alignment(
                moving, fixed
            )  # kornia convention: (x, y[, z]), moving -> fixed
            forward, shift = matrix[:, :, :-1].flip(1, 2), matrix[:, :, -1].flip(1)  # axis order
            # backward field u(p) = forward^-1 (p - shift) - p; on centred coordinates p = q + o:
            # u = (forward^-1 - I) q + forward^-1 (o - shift) - o
            inverse = torch.linalg.inv(forward)
            origin = torch.tensor([(size - 1) / 2.0 for size in spatial], dtype=inverse.dtype)
            origin = origin.to(inverse.device)[:, None]
            identity = torch.eye(self.spatial_dims, dtype=inverse.dtype, device=inverse.device)
            offset = (inverse @ (origin - shift[:, :, None]) - origin) / centring_half(spatial)
            theta = torch.cat([inverse - identity, offset], dim=2)
            theta = theta.to(torch.promote_types(moving.dtype, torch.float32))
            displacement = self._affine_field(theta, spatial)
            return RegistrationFields(
                displacement=displacement,
                residual=torch.zeros_like(displacement),
                affine=theta if self.affine else None,
            )

    def _one_pass(self, x: Tensor) -> RegistrationFields:
        spatial = tuple(x.shape[2:])
        levels = self.levels_for(spatial)
        pool = F.max_pool2d if self.spatial_dims == 2 else F.max_pool3d
        skips: list[Tensor] = []
        features = x
        for level in range(levels):
            features = self.encoder[level](features)
            skips.append(features)
            features = pool(features, kernel_size=2, ceil_mode=True)
        width = str(self.channels[levels - 1])
        below = str(self.channels[levels] if levels < len(self.channels) else self.channels[-1])
        if width not in self.bottleneck_in or below not in self.bottleneck_out:
            raise ValueError(
                f"x spatial shape {spatial} uses {levels} levels, but this RegUNet was built for "
                f"image_size with {len(self.channels)} levels of widths {self.channels}; build it "
                "without image_size (or with equal widths) to use smaller inputs"
            )
        features = self.bottleneck_in[width](features)
        features = self.bottleneck(features)
        pooled = features.mean(dim=tuple(range(2, features.ndim)))
        if self.affine and self.affine_features == "moments":
            pooled = torch.cat([pooled, *self._moments(skips[:_MOMENT_LEVELS])], dim=1)
        features = self.bottleneck_out[below](features)
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        for level in reversed(range(levels)):
            skip = skips[level]
            features = F.interpolate(features, size=skip.shape[2:], mode=mode, align_corners=False)
            features = self.decoder[level](torch.cat([features, skip], dim=1))
        residual = self.output(self.refine(features))
        # fields in at least float32 (autocast / a bfloat16 network: 8-bit mantissas would round
        # a 10 px field to 1/16 px), whatever the head
        residual = residual.to(torch.promote_types(residual.dtype, torch.float32))
        if self.diffeomorphic:
            residual = integrate_velocity(residual, self.integration_steps)
        if not self.affine:
            return RegistrationFields(displacement=residual, residual=residual)
        theta = rearrange(self.affine_head(pooled), "b (n k) -> b n k", n=self.spatial_dims)
        theta = theta.to(torch.promote_types(theta.dtype, torch.float32))  # half -> float32 only
        affine_field = self._affine_field(theta, spatial)  # float32 also under autocast
        if self.diffeomorphic:
            displacement = compose(affine_field, residual)
        else:
            displacement = affine_field + residual
        return RegistrationFields(displacement=displacement, residual=residual, affine=theta)

    def forward(self, x: Tensor, *, initial: Tensor | None = None) -> Tensor:
        """Displacement field ``(B, spatial_dims, *spatial)`` that warps ``moving`` onto ``fixed``.

        Args:
            x: ``cat([moving, fixed], dim=1)``, ``(B, in_channels, *spatial)``.
            initial: optional field to start from (see :meth:`decompose`).
        """
        return self.decompose(x, initial=initial).displacement
