"""Tests of the registration network R (``RegUNet``), including the heart of the method: R alone
recovers a known misalignment of a real-looking image from the correction loss."""

from __future__ import annotations

import math

import kornia
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from regcorrect import RegUNet, warp
from regcorrect.losses import correction_loss, smoothness_loss
from regcorrect.registration import (
    AFFINE_FEATURES,
    PAPER_CHANNELS,
    RegistrationFields,
    affine_to_displacement,
    compose,
    folding_fraction,
    moment_alignment,
)
from regcorrect.registration.grid import centred_coordinates, moment_basis, moment_count
from regcorrect.registration.regunet import _compose_affine

SMALL = (8, 16, 16, 16)


def brain(size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A real-looking 2D slice: smooth blobs inside an elliptic "brain", background -1.

    Returns the image ``(1, 1, size, size)`` in ``[-1, 1]`` and its brain mask ``(size, size)``.
    """
    generator = torch.Generator().manual_seed(seed)
    axis = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    centre = (size - 1) / 2
    inside = ((yy - centre) / (0.36 * size)) ** 2 + ((xx - centre) / (0.30 * size)) ** 2 <= 1
    image = torch.zeros(size, size)
    for _ in range(6):
        offset = (torch.rand(2, generator=generator) - 0.5) * torch.tensor([0.5, 0.4]) * size
        py, px = centre + offset
        sigma = (0.06 + 0.08 * torch.rand(1, generator=generator)) * size
        amplitude = torch.rand(1, generator=generator) * 2 - 1
        image += amplitude * torch.exp(-((yy - py) ** 2 + (xx - px) ** 2) / (2 * sigma**2))
    image = torch.tanh(image + 0.2) * 0.8
    image = torch.where(inside, image, torch.full_like(image, -1.0))
    return image[None, None], inside


def end_point_error(field: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean Euclidean distance (pixels) between two (1, 2, H, W) fields over ``mask`` (H, W)."""
    return float((field - truth).norm(dim=1)[0][mask].mean())


def fit_registration(
    net: RegUNet,
    image: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int,
    lr: float,
    cosine: bool = False,
) -> None:
    """Train R alone (identity generator) on one pair: correction + smoothness of the residual."""
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if cosine else None
    x = torch.cat([image, target], dim=1)
    for _ in range(steps):
        fields = net.decompose(x)
        loss = correction_loss(warp(image, fields.displacement), target) + smoothness_loss(
            fields.residual
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()


def affine_field_np(theta: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    """Displacement of ``theta`` (B, N, N+1) acting on centred coordinates scaled by
    ``(max(spatial) - 1) / 2`` (RegistrationFields.affine's documented convention), in pixels."""
    n = len(spatial)
    half = (max(spatial) - 1) / 2
    axes = [(np.arange(s) - (s - 1) / 2) / half for s in spatial]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"))  # (N, *spatial), axis order
    linear, shift = theta[:, :, :n], theta[:, :, n]
    field = np.einsum("bij,j...->bi...", linear, coords)
    return (field + shift.reshape(*shift.shape, *[1] * n)) * half


class TestRegUNet:
    def test_smoke(self):
        net = RegUNet(spatial_dims=2, in_channels=2)
        assert net.channels == PAPER_CHANNELS and not net.affine and not net.diffeomorphic
        displacement = net(torch.rand(1, 2, 32, 32))
        assert displacement.shape == (1, 2, 32, 32) and displacement.dtype == torch.float32

    @pytest.mark.parametrize("size", [(32, 32), (40, 48), (33, 65), (96, 112)])
    @pytest.mark.parametrize("batch", [1, 3])
    def test_cardinality_2d(self, size, batch):
        net = RegUNet(spatial_dims=2, in_channels=2)
        with torch.no_grad():
            displacement = net(torch.rand(batch, 2, *size))
        assert displacement.shape == (batch, 2, *size)
        assert bool(torch.isfinite(displacement).all())
        assert displacement.abs().max() < 1e-2  # starts near the identity

    @pytest.mark.parametrize("batch", [1, 3])
    def test_cardinality_3d(self, batch):
        net = RegUNet(spatial_dims=3, in_channels=2, channels=(4, 8, 8, 8))
        with torch.no_grad():
            displacement = net(torch.rand(batch, 2, 32, 32, 32))
        assert displacement.shape == (batch, 3, 32, 32, 32)
        assert displacement.abs().max() < 1e-2

    def test_other_in_channels(self):
        net = RegUNet(spatial_dims=2, in_channels=6, channels=SMALL)  # two RGB images
        assert net(torch.rand(2, 6, 32, 40)).shape == (2, 2, 32, 40)

    def test_initial_output_is_near_identity(self):
        net = RegUNet(spatial_dims=2, in_channels=2)
        image, _ = brain(64)
        moving, fixed = image, torch.roll(image, 3, dims=3)
        with torch.no_grad():
            displacement = net(torch.cat([moving, fixed], dim=1))
        assert displacement.abs().max() < 1e-2
        torch.testing.assert_close(warp(moving, displacement), moving, atol=1e-2, rtol=0)

    def test_levels_for(self):
        net = RegUNet()  # seven levels, bottleneck >= 2 pixels
        assert net.levels_for((32, 32)) == 4  # bottleneck 2 x 2
        assert net.levels_for((40, 48)) == 4  # 3 x 3
        assert net.levels_for((33, 65)) == 4  # ceil: 33 -> 17 -> 9 -> 5 -> 3
        assert net.levels_for((96, 112)) == 5
        assert net.levels_for((64, 1000)) == 5  # the smallest side decides
        assert net.levels_for((256, 256)) == 7
        assert net.levels_for((1024, 1024)) == 7  # capped at len(channels)
        assert net.levels_for((8, 8)) == 2
        assert net.levels_for((7, 9)) == 1
        assert net.levels_for((32, 32, 48)) == 4
        assert RegUNet(min_bottleneck=4).levels_for((32, 32)) == 3
        assert RegUNet(channels=SMALL).levels_for((256, 256)) == 4

    def test_image_size_trims_levels(self):
        channels = (8, 16, 32, 64, 64, 64)
        full = RegUNet(channels=channels)
        full(torch.rand(1, 2, 32, 32)).sum().backward()
        unused = [name for name, p in full.named_parameters() if p.grad is None]
        assert any(name.startswith("encoder.4") for name in unused)  # levels 5-6 are unused

        net = RegUNet(channels=channels, image_size=(32, 32))
        assert net.channels == (8, 16, 32, 64)
        assert sum(p.numel() for p in net.parameters()) < sum(p.numel() for p in full.parameters())
        net(torch.rand(2, 2, 32, 32)).square().sum().backward()
        assert [name for name, p in net.named_parameters() if p.grad is None] == []
        assert net(torch.rand(1, 2, 64, 48)).shape == (1, 2, 64, 48)  # larger sizes still work

        paper = RegUNet(image_size=(64, 64))
        assert paper.channels == PAPER_CHANNELS[:5]
        paper(torch.rand(1, 2, 64, 64)).sum().backward()
        assert all(p.grad is not None for p in paper.parameters())
        assert paper(torch.rand(1, 2, 32, 32)).shape == (1, 2, 32, 32)  # equal deep widths

    @pytest.mark.parametrize("size", [(8, 8), (16, 16), (16, 24), (32, 32)])
    def test_unequal_widths_at_every_depth(self, size):
        # regression: with widths that differ between levels, inputs using fewer levels than
        # built fed the decoder the wrong number of channels
        net = RegUNet(channels=(8, 16, 32, 64))
        assert net(torch.rand(2, 2, *size)).shape == (2, 2, *size)

    def test_exception(self):
        net = RegUNet(channels=SMALL)
        with pytest.raises(ValueError, match=r"x spatial shape \(7, 32\) is too small"):
            net(torch.rand(1, 2, 7, 32))
        with pytest.raises(ValueError, match="x must have in_channels=2"):
            net(torch.rand(1, 3, 32, 32))
        with pytest.raises(ValueError, match="x must be a 4-D tensor"):
            net(torch.rand(1, 2, 32, 32, 32))
        with pytest.raises(TypeError, match="x must be a floating-point"):
            net(torch.ones(1, 2, 32, 32, dtype=torch.int64))
        with pytest.raises(TypeError, match="x must be a torch.Tensor"):
            net(np.zeros((1, 2, 32, 32), dtype=np.float32))
        with pytest.raises(ValueError, match="spatial_dims"):
            RegUNet(spatial_dims=4)
        with pytest.raises(ValueError, match="channels"):
            RegUNet(channels=(8,))
        with pytest.raises(ValueError, match="in_channels"):
            RegUNet(in_channels=0)
        for name, value in [
            ("in_channels", 2.5),
            ("bottleneck_blocks", -1),
            ("integration_steps", -1),
            ("min_bottleneck", 0),
            ("min_bottleneck", -1),
        ]:
            with pytest.raises(ValueError, match=f"{name} must be an int >= .*got {value}"):
                RegUNet(channels=SMALL, **{name: value})
        for name in ("affine", "diffeomorphic"):
            with pytest.raises(TypeError, match=f"{name} must be True or False, got 'maybe'"):
                RegUNet(channels=SMALL, **{name: "maybe"})
        with pytest.raises(ValueError, match="spatial_dims must be 2 or 3, got 2.0"):
            RegUNet(2.0, 2)
        for channels in (None, 4, (2.5, 3.9), ("a", "b"), (8,)):
            with pytest.raises(ValueError, match="channels must list >= 2 positive int widths"):
                RegUNet(channels=channels)
        for image_size, error in (
            ("32", TypeError),
            (32, TypeError),
            ((0, 32), ValueError),
            ((32.5, 32), TypeError),
        ):
            with pytest.raises(error, match="image_size"):
                RegUNet(channels=SMALL, image_size=image_size)
        with pytest.raises(ValueError, match="image_size must have 2 entries"):
            RegUNet(image_size=(32, 32, 32))
        trimmed = RegUNet(channels=(8, 16, 32, 64), image_size=(32, 32))
        with pytest.raises(ValueError, match="image_size"):
            trimmed(torch.rand(1, 2, 16, 16))

    def test_decompose_without_affine(self):
        net = RegUNet(channels=SMALL)
        fields = net.decompose(torch.rand(2, 2, 32, 32))
        assert isinstance(fields, RegistrationFields) and fields.affine is None
        assert fields.residual is fields.displacement

    def test_affine_decompose(self):
        torch.manual_seed(1)
        net = RegUNet(channels=SMALL, affine=True)
        with torch.no_grad():
            net.affine_head[-1].weight.normal_(0.0, 0.05)
            net.affine_head[-1].bias.normal_(0.0, 0.1)
            net.output.weight.normal_(0.0, 0.01)
        x = torch.rand(2, 2, 32, 40)
        fields = net.decompose(x)
        assert fields.affine.shape == (2, 2, 3) and fields.affine.dtype == torch.float32
        assert fields.residual.shape == fields.displacement.shape == (2, 2, 32, 40)
        assert fields.residual.abs().max() > 1e-3 and fields.affine.abs().max() > 1e-2
        expected = affine_field_np(fields.affine.detach().double().numpy(), (32, 40))
        affine_part = (fields.displacement - fields.residual).detach().double().numpy()
        np.testing.assert_allclose(affine_part, expected, atol=1e-4)
        torch.testing.assert_close(net(x), fields.displacement)

    def test_affine_head_translation(self):
        # theta = (0 | t) with zero head weights is a constant displacement t * half (pixels)
        net = RegUNet(channels=SMALL, affine=True)
        half = (40 - 1) / 2
        with torch.no_grad():
            net.affine_head[-1].bias.copy_(torch.tensor([0, 0, 2.0 / half, 0, 0, -3.0 / half]))
        fields = net.decompose(torch.rand(1, 2, 32, 40))
        translation = fields.displacement - fields.residual
        torch.testing.assert_close(translation[:, 0], torch.full((1, 32, 40), 2.0))
        torch.testing.assert_close(translation[:, 1], torch.full((1, 32, 40), -3.0))

    def test_affine_3d(self):
        net = RegUNet(spatial_dims=3, channels=(4, 8, 8), affine=True)
        with torch.no_grad():
            net.affine_head[-1].bias.normal_(0.0, 0.1)
        fields = net.decompose(torch.rand(1, 2, 16, 20, 18))
        assert fields.affine.shape == (1, 3, 4) and fields.displacement.shape == (1, 3, 16, 20, 18)
        expected = affine_field_np(fields.affine.detach().double().numpy(), (16, 20, 18))
        got = (fields.displacement - fields.residual).detach().double().numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4)

    @pytest.mark.parametrize("seed", [0, 3, 5])
    def test_diffeomorphic_does_not_fold(self, seed):
        torch.manual_seed(seed)
        net = RegUNet(channels=SMALL, diffeomorphic=True)
        with torch.no_grad():
            net.output.weight.normal_(0.0, 0.1)  # a velocity field of 1-3 px, rough
        plain = RegUNet(channels=SMALL)
        plain.load_state_dict(net.state_dict())  # same weights, no integration
        noise = torch.rand(3, 2, 32, 32, generator=torch.Generator().manual_seed(seed))
        x = kornia.filters.gaussian_blur2d(noise, (9, 9), (2.0, 2.0)) * 4
        with torch.no_grad():
            displacement, velocity = net(x), plain(x)
        assert velocity.abs().max() > 1
        assert folding_fraction(velocity).max() > 0  # used directly, this field folds
        assert folding_fraction(displacement).tolist() == [0.0, 0.0, 0.0]
        # (with much rougher fields, std 0.2, scaling and squaring on the pixel grid can fold
        # a few border pixels: the guarantee is for the continuous flow)

    def test_parameter_count(self):
        # The paper's R (official ResUnet): 2,058,018 parameters in 2D with PAPER_CHANNELS.
        count = sum(p.numel() for p in RegUNet(spatial_dims=2, in_channels=2).parameters())
        assert 1.5e6 <= count <= 2.5e6

    def test_gradcheck(self):
        torch.manual_seed(0)
        x = torch.rand(1, 2, 8, 8, dtype=torch.float64, requires_grad=True)
        for options in ({}, {"affine": True, "diffeomorphic": True, "integration_steps": 3}):
            net = RegUNet(channels=(2, 3), bottleneck_blocks=1, **options).double()
            with torch.no_grad():
                net.output.weight.normal_(0.0, 0.1)
                if options:
                    net.affine_head[-1].weight.normal_(0.0, 0.1)
            assert torch.autograd.gradcheck(net, (x,))

    def test_autocast_bfloat16(self):
        net = RegUNet(channels=SMALL, affine=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fields = net.decompose(torch.rand(2, 2, 32, 32))
        assert fields.affine.dtype == torch.float32
        assert fields.displacement.shape == (2, 2, 32, 32)
        assert bool(torch.isfinite(fields.displacement).all())

    def test_affine_field_stays_float32_under_autocast(self):
        net = RegUNet(channels=SMALL, affine=True)
        theta = torch.tensor([[[0.087, -0.004, 0.06], [0.004, 0.087, -0.03]]])
        expected = net._affine_field(theta.double(), (128, 96))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            field = net._affine_field(theta, (128, 96))
        assert field.dtype == torch.float32
        torch.testing.assert_close(field.double(), expected, atol=1e-4, rtol=0)  # bf16: 0.03 px


class TestAffineFeatures:
    """The affine head's input: spatial moments of the finest features (default) or the
    bottleneck's mean (``affine_features="mean"``)."""

    @pytest.mark.parametrize("spatial", [(5, 7), (4, 6, 3)])
    def test_moment_basis_against_numpy(self, spatial):
        half = (max(spatial) - 1) / 2
        axes = [(np.arange(s) - (s - 1) / 2) / half for s in spatial]
        coords = [c.ravel() for c in np.meshgrid(*axes, indexing="ij")]
        n = len(spatial)
        expected = [np.ones_like(coords[0]), *coords]
        expected += [coords[i] * coords[j] for i in range(n) for j in range(i, n)]
        basis = moment_basis(spatial, dtype=torch.float64)
        np.testing.assert_allclose(basis.numpy(), np.stack(expected, axis=1), atol=1e-12)
        assert (
            basis.shape
            == (math.prod(spatial), 1 + n + n * (n + 1) // 2)
            == (basis.shape[0], moment_count(n))
        )
        coordinates = centred_coordinates(spatial, dtype=torch.float64)
        np.testing.assert_allclose(coordinates.numpy(), np.stack(coords), atol=1e-12)
        assert float(coordinates.abs().max()) == 1.0  # the longest axis spans [-1, 1]
        assert moment_basis(spatial, dtype=torch.float64) is basis  # cached, not rebuilt

    def test_moments_against_numpy(self):
        features = torch.randn(2, 3, 6, 9, dtype=torch.float64)
        (moments,) = RegUNet._moments([features])
        f = features.numpy()
        half = (9 - 1) / 2
        y = (np.arange(6) - 2.5)[:, None] / half
        x = (np.arange(9) - 4.0)[None, :] / half
        weights = [np.ones((6, 9)), y + 0 * x, x + 0 * y, y * y + 0 * x, y * x, x * x + 0 * y]
        expected = np.stack([(f * w).mean(axis=(2, 3)) for w in weights], axis=2)  # (B, C, M)
        np.testing.assert_allclose(moments.numpy(), expected.reshape(2, 18), atol=1e-12)

    @settings(max_examples=25, deadline=None)
    @given(
        dy=st.integers(-4, 4),
        dx=st.integers(-4, 4),
        seed=st.integers(0, 2**16),
    )
    def test_first_moment_moves_with_content(self, dy, dx, seed):
        # content inside a zero canvas moved by (dy, dx) px: the first moments change by
        # mean * (dy, dx) / half exactly; the zeroth moment does not change (position-aware).
        generator = torch.Generator().manual_seed(seed)
        canvas = torch.zeros(1, 2, 20, 24, dtype=torch.float64)
        canvas[..., 5:15, 5:19] = torch.rand(1, 2, 10, 14, generator=generator, dtype=torch.float64)
        moved = torch.roll(canvas, shifts=(dy, dx), dims=(2, 3))
        (before,) = RegUNet._moments([canvas])
        (after,) = RegUNet._moments([moved])
        before, after = before.reshape(2, 6), after.reshape(2, 6)
        half = (24 - 1) / 2
        torch.testing.assert_close(after[:, 0], before[:, 0])
        torch.testing.assert_close(after[:, 1] - before[:, 1], before[:, 0] * dy / half)
        torch.testing.assert_close(after[:, 2] - before[:, 2], before[:, 0] * dx / half)

    def test_head_input_width(self):
        assert AFFINE_FEATURES == ("moments", "mean")
        channels = (4, 8, 16, 16)
        mean_head = RegUNet(channels=channels, affine=True, affine_features="mean")
        assert mean_head.affine_head[0].in_features == 2 * 16
        moments_head = RegUNet(channels=channels, affine=True)
        assert moments_head.affine_features == "moments"
        assert moments_head.affine_head[0].in_features == 2 * 16 + 6 * (4 + 8)
        volume = RegUNet(spatial_dims=3, channels=(2, 4, 4), affine=True)
        assert volume.affine_head[0].in_features == 2 * 4 + 10 * (2 + 4)
        with pytest.raises(ValueError, match="affine_features must be one of"):
            RegUNet(channels=channels, affine=True, affine_features="max")

    def test_loading_the_other_head_says_which_to_build(self):
        # e.g. a checkpoint saved before affine_features existed (bottleneck-mean head)
        saved = RegUNet(channels=SMALL, affine=True, affine_features="mean").state_dict()
        with pytest.raises(ValueError, match=r"reads 32 features.*affine_features='mean'"):
            RegUNet(channels=SMALL, affine=True).load_state_dict(saved)
        nested = torch.nn.ModuleDict({"reg": RegUNet(channels=SMALL, affine=True)})
        with pytest.raises(ValueError, match=r"reg\.affine_head\.0\.weight reads 32"):
            nested.load_state_dict({f"reg.{k}": v for k, v in saved.items()})
        same = RegUNet(channels=SMALL, affine=True, affine_features="mean")
        same.load_state_dict(saved)  # the matching head loads
        torch.testing.assert_close(same.affine_head[0].weight, saved["affine_head.0.weight"])

    @pytest.mark.parametrize("features", AFFINE_FEATURES)
    def test_each_head_runs_at_any_size(self, features):
        torch.manual_seed(0)
        net = RegUNet(channels=SMALL, affine=True, affine_features=features)
        with torch.no_grad():
            net.affine_head[-1].weight.normal_(0.0, 0.05)
        for shape in ((32, 32), (33, 47), (64, 40)):
            fields = net.decompose(torch.rand(2, 2, *shape))
            assert fields.displacement.shape == (2, 2, *shape)
            assert fields.affine.shape == (2, 2, 3)
            assert float(fields.affine.detach().abs().max()) > 0

    def test_moments_head_sees_position_mean_head_barely(self):
        # A blob and the same blob moved by 6 px, same weights: the moments head's input
        # changes by far more than the mean head's (which sees position only through borders).
        torch.manual_seed(0)
        image, _ = brain(48)
        moved = torch.roll(image, shifts=6, dims=3)
        x = torch.cat([image, image], dim=1)
        x_moved = torch.cat([moved, image], dim=1)
        relative = {}
        for features in AFFINE_FEATURES:
            net = RegUNet(channels=SMALL, affine=True, affine_features=features)
            captured: list[torch.Tensor] = []
            net.affine_head.register_forward_hook(
                lambda module, inputs, output, into=captured: into.append(inputs[0])
            )
            with torch.no_grad():
                net(x), net(x_moved)
            still, moved_input = captured
            relative[features] = float((moved_input - still).norm() / still.norm())
        assert relative["moments"] > 2 * relative["mean"]


def perturbed_regunet(passes: int, **options) -> RegUNet:
    """A small RegUNet (seed 0) whose output layers are moved off their near-zero start, so that
    each pass moves the image."""
    torch.manual_seed(0)
    net = RegUNet(channels=SMALL, passes=passes, **options)
    with torch.no_grad():
        net.output.weight.normal_(0.0, 0.02)
        if net.affine:
            net.affine_head[-1].weight.normal_(0.0, 0.02)
            net.affine_head[-1].bias.normal_(0.0, 0.05)
    return net


class TestPasses:
    """``RegUNet(passes=k)``: the same network refines its own output k times."""

    def _pair(self, passes: int, **options) -> tuple[RegUNet, RegUNet]:
        net = perturbed_regunet(passes, **options)
        single = RegUNet(channels=SMALL, **options)
        single.load_state_dict(net.state_dict())
        return net, single

    @pytest.mark.parametrize("options", [{}, {"affine": True}, {"diffeomorphic": True}])
    def test_two_passes_equal_the_manual_cascade(self, options):
        net, single = self._pair(2, **options)
        moving, fixed = torch.rand(2, 1, 32, 40), torch.rand(2, 1, 32, 40)
        first = single.decompose(torch.cat([moving, fixed], dim=1))
        second = single.decompose(torch.cat([warp(moving, first.displacement), fixed], dim=1))
        fields = net.decompose(torch.cat([moving, fixed], dim=1))
        expected = second.displacement + warp(first.displacement, second.displacement)
        torch.testing.assert_close(fields.displacement, expected)
        torch.testing.assert_close(fields.residual, first.residual + second.residual)
        assert float(second.displacement.detach().abs().max()) > 1e-2  # the 2nd pass moved

    def test_composed_affine_part_is_exact(self):
        # dense parts zero: the total field is the composition of two affine fields, itself
        # affine with the matrix RegistrationFields.affine reports (bilinear sampling of a
        # linear field is exact wherever the sample stays inside the image)
        net, _ = self._pair(2, affine=True)
        with torch.no_grad():
            net.output.weight.zero_()
        fields = net.decompose(torch.rand(2, 2, 32, 40))
        expected = affine_field_np(fields.affine.detach().double().numpy(), (32, 40))
        got = fields.displacement.detach().double().numpy()
        np.testing.assert_allclose(got[..., 6:-6, 6:-6], expected[..., 6:-6, 6:-6], atol=1e-4)
        assert np.abs(expected).max() > 0.5

    def test_one_pass_is_the_default(self):
        net = RegUNet(channels=SMALL)
        assert net.passes == 1

    def test_errors(self):
        with pytest.raises(ValueError, match="passes must be an integer >= 0, got -1"):
            RegUNet(channels=SMALL, passes=-1)
        with pytest.raises(ValueError, match="passes must be an integer >= 0"):
            RegUNet(channels=SMALL, passes=2.0)
        with pytest.raises(ValueError, match="even in_channels.*got in_channels=3"):
            RegUNet(channels=SMALL, in_channels=3, passes=2)
        net = RegUNet(channels=SMALL, in_channels=3)
        with pytest.raises(ValueError, match="even in_channels"):
            net.passes = 2  # also when changed after construction
        assert net.passes == 1

    def test_passes_can_change_after_training(self):
        net, single = self._pair(2)  # same weights, built with 2 and 1 passes
        x = torch.rand(1, 2, 32, 32)
        with torch.no_grad():
            net.passes, single.passes = 3, 3
            three = net(x)
            torch.testing.assert_close(three, single(x))
            net.passes = 1
            one = net(x)
        assert float((three - one).abs().max()) > 1e-3

    def test_multichannel_3d_and_autocast(self):
        net = RegUNet(spatial_dims=3, in_channels=4, channels=(4, 8, 8), passes=3, affine=True)
        fields = net.decompose(torch.rand(1, 4, 16, 20, 18))
        assert fields.displacement.shape == (1, 3, 16, 20, 18) and fields.affine.shape == (1, 3, 4)
        net2d = RegUNet(channels=SMALL, passes=2, affine=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net2d.decompose(torch.rand(2, 2, 32, 32))
        assert out.displacement.shape == (2, 2, 32, 32) and out.affine.dtype == torch.float32
        assert bool(torch.isfinite(out.displacement).all())

    def test_gradcheck(self):
        torch.manual_seed(0)
        x = torch.rand(1, 2, 8, 8, dtype=torch.float64, requires_grad=True)
        net = RegUNet(channels=(2, 3), bottleneck_blocks=1, affine=True, passes=2).double()
        with torch.no_grad():
            net.output.weight.normal_(0.0, 0.1)
            net.affine_head[-1].weight.normal_(0.0, 0.1)
        assert torch.autograd.gradcheck(net, (x,))


class TestPrealign:
    """``RegUNet(prealign="moments")``: the moment alignment first, the network's passes after."""

    @staticmethod
    def _misaligned(
        size: int = 64,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        image, inside = brain(size)
        centre = torch.tensor([[(size - 1) / 2, (size - 1) / 2]])
        matrix = kornia.geometry.transform.get_rotation_matrix2d(
            centre, torch.tensor([5.0]), torch.full((1, 2), 1.05)
        )
        matrix[:, 0, 2] += 8.0  # + a 10 px translation (8, 6)
        matrix[:, 1, 2] += 6.0
        target = (
            kornia.geometry.transform.warp_affine(
                image + 1, matrix, (size, size), align_corners=True
            )
            - 1
        )  # background -1 outside
        truth = affine_to_displacement(matrix, (size, size))
        inside_target = warp(inside[None, None].float(), truth)[0, 0] > 0.5
        return image, target, truth, inside_target

    @pytest.mark.parametrize("affine", [False, True])
    def test_untrained_net_gives_the_moment_alignment(self, affine):
        image, target, truth, inside = self._misaligned()
        net = RegUNet(channels=SMALL, affine=affine, prealign="moments")
        with torch.no_grad():
            fields = net.decompose(torch.cat([image, target], dim=1))
        expected = affine_to_displacement(moment_alignment(image, target), (64, 64))
        torch.testing.assert_close(fields.displacement, expected, atol=2e-3, rtol=0)
        # a 10 px + 5 degree + 5 % misalignment is absorbed before any training
        assert end_point_error(torch.zeros_like(truth), truth, inside) > 9.5
        assert end_point_error(fields.displacement, truth, inside) < 1.0
        assert float(fields.residual.abs().max()) < 1e-3
        if affine:  # the affine part holds the alignment
            got = affine_field_np(fields.affine.double().numpy(), (64, 64))
            np.testing.assert_allclose(got, expected.double().numpy(), atol=2e-3)
        else:
            assert fields.affine is None

    @pytest.mark.parametrize("affine", [False, True])
    def test_zero_passes_do_not_run_the_network(self, affine, monkeypatch):
        """``passes=0``: the field is the pre-alignment alone (or zero without one)."""
        image, target, _, _ = self._misaligned()
        x = torch.cat([image, target], dim=1)
        net = RegUNet(channels=SMALL, affine=affine, prealign="moments", passes=0)
        monkeypatch.setattr(net, "_one_pass", lambda _x: pytest.fail("the network ran"))
        fields = net.decompose(x)
        expected = affine_to_displacement(moment_alignment(image, target), (64, 64))
        torch.testing.assert_close(fields.displacement, expected, atol=2e-3, rtol=0)
        assert float(fields.residual.abs().max()) == 0.0
        net.prealign = None
        fields = net.decompose(x)
        assert fields.displacement.shape == (1, 2, 64, 64)
        assert float(fields.displacement.abs().max()) == 0.0
        assert float(fields.residual.abs().max()) == 0.0
        if affine:
            assert fields.affine.shape == (1, 2, 3) and float(fields.affine.abs().max()) == 0.0
        else:
            assert fields.affine is None
        assert RegUNet(channels=SMALL, in_channels=3, passes=0).passes == 0

    def test_passes_refine_after_the_alignment(self):
        image, target, _, _ = self._misaligned()
        torch.manual_seed(0)
        net = RegUNet(channels=SMALL, affine=True, prealign="moments", passes=2)
        with torch.no_grad():
            net.output.weight.normal_(0.0, 0.02)
            net.affine_head[-1].bias.normal_(0.0, 0.05)
        plain = RegUNet(channels=SMALL, affine=True)
        plain.load_state_dict(net.state_dict())
        with torch.no_grad():
            fields = net.decompose(torch.cat([image, target], dim=1))
            start = affine_to_displacement(moment_alignment(image, target), (64, 64))
            first = plain.decompose(torch.cat([warp(image, start), target], dim=1))
            after_one = compose(first.displacement, start)
            second = plain.decompose(torch.cat([warp(image, after_one), target], dim=1))
        torch.testing.assert_close(
            fields.displacement, compose(second.displacement, after_one), atol=1e-4, rtol=0
        )
        torch.testing.assert_close(fields.residual, first.residual + second.residual)

    def test_gradients_reach_the_network_not_the_alignment(self):
        image, target, _, _ = self._misaligned(32)
        moving = image.clone().requires_grad_(True)
        net = RegUNet(channels=SMALL, affine=True, prealign="moments")
        loss = correction_loss(warp(moving, net(torch.cat([moving, target], dim=1))), target)
        loss.backward()
        assert all(p.grad is not None for p in net.affine_head.parameters())
        assert moving.grad is not None and float(moving.grad.abs().sum()) > 0

    def test_training_from_the_alignment(self):
        torch.manual_seed(0)
        image, target, truth, inside = self._misaligned()
        net = RegUNet(channels=(16, 32, 32, 32, 32, 32), affine=True, prealign="moments")
        x = torch.cat([image, target], dim=1)
        with torch.no_grad():
            start = end_point_error(net(x), truth, inside)
        fit_registration(net, image, target, steps=40, lr=3e-4)
        with torch.no_grad():
            assert end_point_error(net(x), truth, inside) < min(start, 0.5)

    def test_3d_and_autocast(self):
        net = RegUNet(spatial_dims=3, channels=(4, 8, 8), affine=True, prealign="moments")
        volume = torch.rand(1, 1, 16, 20, 18) * 2 - 1
        fields = net.decompose(torch.cat([volume, torch.roll(volume, 2, dims=3)], dim=1))
        assert fields.displacement.shape == (1, 3, 16, 20, 18) and fields.affine.shape == (1, 3, 4)
        net2d = RegUNet(channels=SMALL, prealign="moments")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net2d(torch.rand(2, 2, 32, 32) * 2 - 1)
        assert out.shape == (2, 2, 32, 32) and bool(torch.isfinite(out).all())

    def test_errors(self):
        with pytest.raises(ValueError, match="prealign must be one of.*got 'com'"):
            RegUNet(channels=SMALL, prealign="com")
        with pytest.raises(ValueError, match="prealign needs an even in_channels.*3"):
            RegUNet(channels=SMALL, in_channels=3, prealign="moments")
        net = RegUNet(channels=SMALL, in_channels=3)
        with pytest.raises(ValueError, match="prealign needs an even in_channels"):
            net.prealign = "moments"  # also when changed after construction
        assert net.prealign is None

    def test_can_be_switched_after_training(self):
        image, target, _, _ = self._misaligned(32)
        x = torch.cat([image, target], dim=1)
        net = RegUNet(channels=SMALL, affine=True, prealign="moments")
        plain = RegUNet(channels=SMALL, affine=True)
        plain.load_state_dict(net.state_dict())  # the option adds no weights
        with torch.no_grad():
            net.prealign = None
            torch.testing.assert_close(net(x), plain(x))

    def test_float64(self):
        image, target, _, _ = self._misaligned(32)
        net = RegUNet(channels=SMALL, affine=True, prealign="moments").double()
        fields = net.decompose(torch.cat([image, target], dim=1).double())
        assert fields.displacement.dtype == torch.float64 and fields.affine.dtype == torch.float64


class TestInitialField:
    """``RegUNet.decompose(x, initial=u0)``: the passes start from a given field and each warps
    the original ``moving`` once."""

    @staticmethod
    def _initial(batch: int = 2, spatial=(32, 40)) -> torch.Tensor:
        theta = torch.tensor([[0.98, 0.05, 1.5], [-0.05, 0.98, -2.0]]).expand(batch, 2, 3)
        return affine_to_displacement(theta, spatial)

    @pytest.mark.parametrize("options", [{}, {"affine": True}])
    def test_two_passes_each_warp_the_original_once(self, options, monkeypatch):
        net = perturbed_regunet(2, **options)
        moving, fixed = torch.rand(2, 1, 32, 40), torch.rand(2, 1, 32, 40)
        initial = self._initial()
        seen: list[torch.Tensor] = []
        one_pass = net._one_pass
        monkeypatch.setattr(net, "_one_pass", lambda x: seen.append(x) or one_pass(x))
        with torch.no_grad():
            fields = net.decompose(torch.cat([moving, fixed], dim=1), initial=initial)
        single = RegUNet(channels=SMALL, **options)
        single.load_state_dict(net.state_dict())
        with torch.no_grad():
            first = single.decompose(torch.cat([warp(moving, initial), fixed], dim=1))
            after_one = compose(first.displacement, initial)
            second = single.decompose(torch.cat([warp(moving, after_one), fixed], dim=1))
        # pass 2 sees the original moving warped once by the composed field, not moving ∘ u0
        # warped again by pass 1's field
        torch.testing.assert_close(seen[1], torch.cat([warp(moving, after_one), fixed], dim=1))
        twice = warp(warp(moving, initial), first.displacement)
        assert float((seen[1][:, :1] - twice).abs().max()) > 1e-3
        torch.testing.assert_close(fields.displacement, compose(second.displacement, after_one))
        torch.testing.assert_close(fields.residual, first.residual + second.residual)
        if options:  # the affine part is the network's own, without u0
            torch.testing.assert_close(fields.affine, _compose_affine(second.affine, first.affine))

    @pytest.mark.parametrize("affine", [False, True])
    def test_zero_passes_return_the_initial_field(self, affine, monkeypatch):
        net = RegUNet(channels=SMALL, affine=affine, passes=0)
        monkeypatch.setattr(net, "_one_pass", lambda _x: pytest.fail("the network ran"))
        initial = self._initial(batch=1)
        fields = net.decompose(torch.rand(3, 2, 32, 40), initial=initial)  # batch-1 field
        torch.testing.assert_close(fields.displacement, initial.expand(3, 2, 32, 40))
        assert float(fields.residual.abs().max()) == 0.0
        assert (fields.affine is not None) == affine
        if affine:
            assert fields.affine.shape == (3, 2, 3) and float(fields.affine.abs().max()) == 0.0

    def test_with_prealign_the_moments_of_the_warped_moving_come_next(self):
        image, target, _, _ = TestPrealign._misaligned()
        net = RegUNet(channels=SMALL, prealign="moments", passes=0)
        initial = self._initial(batch=1, spatial=(64, 64))
        fields = net.decompose(torch.cat([image, target], dim=1), initial=initial)
        moved = warp(image, initial)
        expected = compose(
            affine_to_displacement(moment_alignment(moved, target), (64, 64)), initial
        )
        torch.testing.assert_close(fields.displacement, expected, atol=2e-3, rtol=0)

    def test_gradients_reach_the_network_and_moving_not_the_initial_field(self):
        net = perturbed_regunet(2, affine=True)
        moving = torch.rand(1, 1, 32, 40, requires_grad=True)
        initial = self._initial(batch=1).requires_grad_(True)
        field = net(torch.cat([moving, torch.rand(1, 1, 32, 40)], dim=1), initial=initial)
        field.square().sum().backward()
        assert initial.grad is None
        assert moving.grad is not None and float(moving.grad.abs().sum()) > 0
        assert all(p.grad is not None for p in net.affine_head.parameters())

    def test_3d_float64(self):
        net = RegUNet(spatial_dims=3, channels=(4, 8), passes=1).double()
        initial = torch.full((1, 3, 12, 14, 10), 0.5, dtype=torch.float64)
        fields = net.decompose(torch.rand(1, 2, 12, 14, 10, dtype=torch.float64), initial=initial)
        assert fields.displacement.shape == (1, 3, 12, 14, 10)
        assert fields.displacement.dtype == torch.float64

    def test_errors(self):
        net = RegUNet(channels=SMALL)
        x = torch.rand(2, 2, 32, 40)
        with pytest.raises(ValueError, match=r"initial must have shape \(2 or 1, 2, 32, 40\)"):
            net.decompose(x, initial=torch.zeros(2, 2, 32, 32))
        with pytest.raises(ValueError, match=r"initial must have shape \(2 or 1"):
            net.decompose(x, initial=torch.zeros(3, 2, 32, 40))
        with pytest.raises(ValueError, match="initial of a 2-D field must have 2 channels"):
            net.decompose(x, initial=torch.zeros(2, 3, 32, 40))
        with pytest.raises(TypeError, match="initial"):
            net.decompose(x, initial=torch.zeros(2, 2, 32, 40, dtype=torch.int64))
        odd = RegUNet(channels=SMALL, in_channels=3)
        with pytest.raises(
            ValueError, match="initial needs an even in_channels.*got in_channels=3"
        ):
            odd.decompose(torch.rand(1, 3, 32, 32), initial=torch.zeros(1, 2, 32, 32))


class TestRegistrationRecovery:
    """R alone (identity generator: the moving image is warped itself) learns a known
    misalignment from the correction loss (Eq. 7) and the smoothness loss (Eq. 8)."""

    def test_recovers_translation(self):
        torch.manual_seed(0)
        image, _ = brain(32)
        dy, dx = -2, 3  # target[y, x] = image[y - 2, x + 3]: built by slicing, not by warp
        margin = 4
        padded = F.pad(image, (margin,) * 4, value=-1.0)
        target = padded[..., margin + dy : margin + dy + 32, margin + dx : margin + dx + 32]
        truth = torch.zeros(1, 2, 32, 32)
        truth[:, 0], truth[:, 1] = dy, dx  # warped[p] = image[p + u(p)] = target[p]
        torch.testing.assert_close(warp(image, truth), target)  # the convention, checked
        interior = target[0, 0] > -1
        assert end_point_error(torch.zeros_like(truth), truth, interior) == pytest.approx(
            math.hypot(dy, dx)
        )

        net = RegUNet(channels=SMALL)
        steps = 150
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        x = torch.cat([image, target], dim=1)
        for _ in range(steps):
            displacement = net(x)
            loss = correction_loss(warp(image, displacement), target) + smoothness_loss(
                displacement
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        with torch.no_grad():
            displacement = net(x)
        assert end_point_error(displacement, truth, interior) < 0.5
        assert correction_loss(warp(image, displacement), target) < 0.05

    def test_affine_head_recovers_large_misalignment(self):
        torch.manual_seed(0)
        image, inside = brain(64)
        centre = torch.tensor([[31.5, 31.5]])
        matrix = kornia.geometry.transform.get_rotation_matrix2d(
            centre, torch.tensor([5.0]), torch.ones(1, 2)
        )
        matrix[:, 0, 2] += 8.0  # + a 10 px translation (8, 6)
        matrix[:, 1, 2] += 6.0
        target = kornia.geometry.transform.warp_affine(
            image, matrix, (64, 64), align_corners=True, padding_mode="border"
        )
        truth = affine_to_displacement(matrix, (64, 64))
        assert end_point_error(torch.zeros_like(truth), truth, inside) > 9.5

        net = RegUNet(channels=(16, 32, 32, 32, 32, 32), affine=True)
        # EPE ~0.03 px at the end; lr 1e-3 alone oscillates, hence the cosine decay
        fit_registration(net, image, target, steps=100, lr=1e-3, cosine=True)
        x = torch.cat([image, target], dim=1)
        with torch.no_grad():
            fields = net.decompose(x)
        assert end_point_error(fields.displacement, truth, inside) < 1.0
        # the global head carries the misalignment; the dense residual only refines it
        assert end_point_error(fields.displacement - fields.residual, truth, inside) < 1.0


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_edge_padded_conv_equals_replicate_padding(spatial_dims):
    # R's residual blocks pad by concatenation (torch.compile-friendly); values must equal
    # torch's padding_mode="replicate", and weights load from a replicate-padded conv unchanged.
    from regcorrect.registration.regunet import _EdgePaddedConv2d, _EdgePaddedConv3d

    torch.manual_seed(0)
    conv_type = torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d
    ours_type = _EdgePaddedConv2d if spatial_dims == 2 else _EdgePaddedConv3d
    reference = conv_type(3, 4, 3, padding=1, padding_mode="replicate").double()
    ours = ours_type(3, 4, 3).double()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, *(5, 6, 7)[:spatial_dims], dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(ours(x), reference(x))
    assert torch.autograd.gradcheck(ours, (x,))


class TestInputDtypeAndDevice:
    def test_dtype_must_match_the_weights_outside_autocast(self):
        net = RegUNet(channels=SMALL)
        with pytest.raises(TypeError, match="x has dtype torch.float64 but RegUNet's weights"):
            net(torch.zeros(1, 2, 32, 32, dtype=torch.float64))
        with pytest.raises(TypeError, match="torch.bfloat16"):
            net(torch.zeros(1, 2, 32, 32, dtype=torch.bfloat16))
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts float32 and bf16
            assert net(torch.zeros(1, 2, 32, 32, dtype=torch.bfloat16)).shape == (1, 2, 32, 32)
            with pytest.raises(TypeError, match="float64"):
                net(torch.zeros(1, 2, 32, 32, dtype=torch.float64))
        assert net.double()(torch.zeros(1, 2, 32, 32, dtype=torch.float64)).dtype == torch.float64

    def test_device_must_match_the_weights(self):
        with pytest.raises(ValueError, match="x on meta, weights on cpu"):
            RegUNet(channels=SMALL)(torch.zeros(1, 2, 32, 32, device="meta"))


def test_numpy_and_tensor_integers_are_accepted():
    net = RegUNet(
        np.int64(2), np.int64(2), channels=np.array([8, 16, 16]), image_size=np.array([32, 32])
    )
    assert net.spatial_dims == 2 and net.channels == (8, 16, 16) and type(net.in_channels) is int
    assert type(net.spatial_dims) is int
    assert net(torch.rand(1, 2, 32, 32)).shape == (1, 2, 32, 32)


@pytest.mark.parametrize("affine", [False, True])
def test_fields_are_float32_under_autocast(affine):
    net = RegUNet(channels=SMALL, affine=affine)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fields = net.decompose(torch.rand(1, 2, 32, 32))
    assert fields.displacement.dtype == fields.residual.dtype == torch.float32
