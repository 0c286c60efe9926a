"""Tests of field operations against numpy references and kornia's warp_affine."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from kornia.geometry.transform import get_rotation_matrix2d, warp_affine, warp_affine3d
from scipy.ndimage import gaussian_filter, map_coordinates

from regcorrect.registration import (
    affine_to_displacement,
    compose,
    folding_fraction,
    integrate_velocity,
    invert_displacement,
    jacobian_determinant,
    warp,
)

from .test_warp import smooth_field


class TestCompose:
    @given(seed=st.integers(0, 1000), dims=st.sampled_from([2, 3]))
    def test_warp_twice_equals_warp_by_composition(self, seed, dims):
        shape = (24, 26) if dims == 2 else (12, 13, 14)
        rng = np.random.default_rng(seed)
        axes = np.meshgrid(*[np.linspace(0, 3, s) for s in shape], indexing="ij")
        image = torch.from_numpy(sum(np.sin(a + rng.uniform(0, 3)) for a in axes))[None, None]
        u = smooth_field(shape, 1.5, seed)
        v = smooth_field(shape, 1.5, seed + 1)
        twice = warp(warp(image, v), u)
        once = warp(image, compose(u, v))
        inner = (slice(None), slice(None)) + (slice(4, -4),) * dims
        # interpolation error of two warps vs one: about 1 % of the image range (~3)
        torch.testing.assert_close(once[inner], twice[inner], atol=5e-2, rtol=0)

    def test_constant_fields_add(self):
        u = torch.full((1, 2, 6, 6), 0.5)
        v = torch.full((1, 2, 6, 6), -1.25)
        torch.testing.assert_close(compose(u, v), u + v)

    def test_values_of_shift_after_linear_field(self):
        # u = 3 px in x; v_x(p) = 0.1 x  =>  compose(u, v)_x(p) = 3 + 0.1 (x + 3), exactly (linear).
        x = torch.arange(20.0, dtype=torch.float64)
        u = torch.zeros(1, 2, 10, 20, dtype=torch.float64)
        u[:, 1] = 3.0
        v = torch.zeros_like(u)
        v[:, 1] = 0.1 * x
        composed = compose(u, v)
        torch.testing.assert_close(
            composed[0, 1, :, :15], (3.0 + 0.1 * (x + 3.0))[:15].expand(10, 15)
        )
        torch.testing.assert_close(composed[0, 0], torch.zeros(10, 20, dtype=torch.float64))

    def test_shape_error(self):
        with pytest.raises(ValueError, match="same field shape"):
            compose(torch.zeros(1, 2, 6, 6), torch.zeros(1, 2, 6, 7))

    def test_device_error(self):
        with pytest.raises(ValueError, match="first on cpu, second on meta"):
            compose(torch.zeros(1, 2, 6, 6), torch.zeros(1, 2, 6, 6, device="meta"))

    def test_batch_must_match_or_broadcast(self):
        with pytest.raises(ValueError, match="same batch size, or one of them 1"):
            compose(torch.zeros(2, 2, 6, 6), torch.zeros(3, 2, 6, 6))
        assert compose(torch.zeros(1, 2, 6, 6), torch.ones(3, 2, 6, 6)).shape == (3, 2, 6, 6)


def _similarity(angle_deg: float, scale: float, shift: tuple[float, float], size) -> torch.Tensor:
    """``(1, 2, 3)`` float64 rotation + scale about the image centre, then a shift (x, y)."""
    height, width = size
    center = torch.tensor([[(width - 1) / 2, (height - 1) / 2]], dtype=torch.float64)
    matrix = get_rotation_matrix2d(
        center,
        torch.tensor([angle_deg], dtype=torch.float64),
        torch.full((1, 2), scale, dtype=torch.float64),
    )
    matrix[:, 0, 2] += shift[0]
    matrix[:, 1, 2] += shift[1]
    return matrix


def inverse_affine(matrix: torch.Tensor) -> torch.Tensor:
    """The inverse of ``(B, N, N + 1)`` affine matrices, same layout."""
    n = matrix.shape[-2]
    square = torch.eye(n + 1, dtype=matrix.dtype).repeat(matrix.shape[0], 1, 1)
    square[:, :n] = matrix
    return torch.linalg.inv(square)[:, :n]


def _inside(displacement: torch.Tensor) -> torch.Tensor:
    """``(B, *spatial)``: where ``p + displacement(p)`` lies inside the image."""
    spatial = displacement.shape[2:]
    axes = torch.meshgrid(
        *[torch.arange(s, dtype=displacement.dtype) for s in spatial], indexing="ij"
    )
    inside = torch.ones(displacement.shape[0], *spatial, dtype=torch.bool)
    for i, (axis, size) in enumerate(zip(axes, spatial, strict=True)):
        position = axis + displacement[:, i]
        inside &= (position >= 0) & (position <= size - 1)
    return inside


class TestInvertDisplacement:
    @given(
        angle=st.floats(-10, 10),
        scale=st.floats(0.85, 1.15),
        tx=st.floats(-4, 4),
        ty=st.floats(-4, 4),
        height=st.integers(16, 28),
        width=st.integers(16, 28),
    )
    def test_affine_field_inverted_exactly_inside_the_image(
        self, angle, scale, tx, ty, height, width
    ):
        # independent reference: the field of the inverse matrix (affine_to_displacement)
        matrix = _similarity(angle, scale, (tx, ty), (height, width))
        field = affine_to_displacement(matrix, (height, width))
        expected = affine_to_displacement(inverse_affine(matrix), (height, width))
        inverse = invert_displacement(field)
        inside = _inside(expected).unsqueeze(1).expand_as(expected)
        torch.testing.assert_close(inverse[inside], expected[inside], atol=1e-8, rtol=0)

    def test_3d_affine(self):
        matrix = torch.tensor(
            [[[0.98, -0.1, 0.05, 0.7], [0.1, 1.02, 0.0, -0.4], [0.0, 0.03, 0.97, 0.3]]],
            dtype=torch.float64,
        )
        field = affine_to_displacement(matrix, (9, 10, 11))
        expected = affine_to_displacement(inverse_affine(matrix), (9, 10, 11))
        inverse = invert_displacement(field)
        assert inverse.shape == (1, 3, 9, 10, 11)
        inside = _inside(expected).unsqueeze(1).expand_as(expected)
        assert inside.float().mean() > 0.6
        torch.testing.assert_close(inverse[inside], expected[inside], atol=1e-8, rtol=0)

    @given(seed=st.integers(0, 1000), dims=st.sampled_from([2, 3]))
    def test_forward_map_of_the_inverse_lands_on_each_pixel(self, seed, dims):
        # q = p + w(p) must satisfy q + u(q) = p, with u(q) interpolated by scipy.
        shape = (26, 30) if dims == 2 else (12, 13, 14)
        u = smooth_field(shape, 2.0, seed)
        w = invert_displacement(u)
        grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
        q = grid + w[0].numpy()
        u_at_q = np.stack(
            [map_coordinates(u[0, i].numpy(), q, order=1, mode="nearest") for i in range(dims)]
        )
        inner = (slice(None),) + (slice(4, -4),) * dims
        np.testing.assert_allclose((q + u_at_q)[inner], grid[inner], atol=1e-6)

    @given(seed=st.integers(0, 1000))
    def test_round_trip_of_an_image(self, seed):
        shape = (32, 36)
        axes = np.meshgrid(*[np.linspace(0, 3, s) for s in shape], indexing="ij")
        image = torch.from_numpy(np.sin(axes[0] + seed % 3) * np.cos(axes[1]))[None, None]
        u = smooth_field(shape, 2.5, seed)
        back = warp(warp(image, u), invert_displacement(u))
        # two bilinear resamplings of a smooth image: ~1e-3 of its range (2)
        torch.testing.assert_close(back[..., 5:-5, 5:-5], image[..., 5:-5, 5:-5], atol=5e-3, rtol=0)
        # and a right inverse too, compose(u, w) ~ 0, up to bilinear interpolation of w
        # (< 2 % of the field's 2.5 px amplitude)
        right = compose(u, invert_displacement(u))
        assert float(right[..., 5:-5, 5:-5].abs().max()) < 5e-2

    def test_zero_constant_batch_and_dtype(self):
        zero = torch.zeros(3, 2, 8, 9)
        assert torch.equal(invert_displacement(zero), zero)
        shift = torch.zeros(2, 3, 5, 6, 7, dtype=torch.float64)
        shift[:, 0], shift[:, 2] = 1.25, -0.5
        torch.testing.assert_close(invert_displacement(shift), -shift, atol=1e-12, rtol=0)
        batch = torch.cat([smooth_field((20, 20), 1.0, 0), smooth_field((20, 20), 2.0, 1)]).float()
        inverse = invert_displacement(batch)
        assert inverse.dtype == torch.float32 and inverse.shape == batch.shape
        torch.testing.assert_close(inverse[1:], invert_displacement(batch[1:]))

    def test_more_iterations_converge(self):
        u = smooth_field((24, 24), 3.0, 7)
        errors = [
            float(
                (
                    invert_displacement(u, iterations=k)
                    + warp(u, invert_displacement(u, iterations=k))
                )
                .abs()
                .max()
            )
            for k in (1, 3, 20)
        ]
        assert errors[0] > errors[1] > errors[2]
        assert errors[2] < 1e-4

    def test_gradcheck(self):
        u = (smooth_field((6, 7), 0.8, 3)).requires_grad_(True)
        assert torch.autograd.gradcheck(lambda f: invert_displacement(f, iterations=3), (u,))

    def test_errors(self):
        for bad in (0, -1, 2.5, True):
            with pytest.raises(ValueError, match="iterations must be an int >= 1"):
                invert_displacement(torch.zeros(1, 2, 4, 4), iterations=bad)
        with pytest.raises(ValueError, match="displacement"):
            invert_displacement(torch.zeros(1, 3, 4, 4))
        with pytest.raises(TypeError, match="displacement"):
            invert_displacement(torch.zeros(1, 2, 4, 4, dtype=torch.int64))


class TestIntegrateVelocity:
    def test_zero_steps_returns_velocity(self):
        v = smooth_field((8, 8), 2.0, 0)
        torch.testing.assert_close(integrate_velocity(v, 0), v)

    def test_rotation_velocity_gives_rotation(self):
        # v(p) = A (p - c) with A skew-symmetric is the generator of a rotation: exp(v) rotates.
        size, angle = 33, 0.2
        c = (size - 1) / 2
        y, x = torch.meshgrid(
            torch.arange(size.__float__()), torch.arange(float(size)), indexing="ij"
        )
        velocity = torch.stack([angle * (x - c), -angle * (y - c)])[None].double()
        flow = integrate_velocity(velocity, steps=10)
        dy, dx = y - c, x - c
        expected_y = c + math.cos(angle) * dy + math.sin(angle) * dx - y
        expected_x = c - math.sin(angle) * dy + math.cos(angle) * dx - x
        expected = torch.stack([expected_y, expected_x])[None].double()
        inner = (slice(None), slice(None), slice(10, -10), slice(10, -10))
        torch.testing.assert_close(flow[inner], expected[inner], atol=2e-2, rtol=0)

    def test_large_smooth_velocity_does_not_fold(self):
        rng = np.random.default_rng(7)
        v = gaussian_filter(rng.standard_normal((1, 2, 32, 32)), sigma=(0, 0, 2, 2))
        v = torch.from_numpy(v / np.abs(v).max() * 4.0)
        assert float(folding_fraction(v)) > 0  # the raw field folds ...
        assert float(folding_fraction(integrate_velocity(v, 7))) == 0  # ... its flow does not

    def test_errors(self):
        with pytest.raises(ValueError, match="steps"):
            integrate_velocity(torch.zeros(1, 2, 4, 4), -1)
        with pytest.raises(ValueError, match="steps must be an integer >= 0, got True"):
            integrate_velocity(torch.zeros(1, 2, 4, 4), True)


class TestJacobian:
    @given(seed=st.integers(0, 1000), dims=st.sampled_from([2, 3]))
    def test_matches_numpy_gradient(self, seed, dims):
        shape = (9, 10) if dims == 2 else (6, 7, 8)
        u = smooth_field(shape, 2.0, seed)
        grads = [np.gradient(u[0, i].numpy()) for i in range(dims)]
        jac = np.stack([np.stack(g) for g in grads])  # (i, j, *shape)
        jac = np.moveaxis(jac, (0, 1), (-2, -1)) + np.eye(dims)
        expected = np.linalg.det(jac)
        np.testing.assert_allclose(jacobian_determinant(u)[0].numpy(), expected, atol=1e-10)

    def test_affine_field_has_constant_determinant(self):
        m = get_rotation_matrix2d(
            torch.tensor([[7.0, 7.0]]), torch.tensor([20.0]), torch.full((1, 2), 1.5)
        )
        det = jacobian_determinant(affine_to_displacement(m.double(), (15, 15)))
        # backward map scales areas by 1 / 1.5**2
        torch.testing.assert_close(det, torch.full_like(det, 1 / 2.25))

    def test_folding_fraction_of_flip(self):
        size = 8
        x = torch.arange(float(size))
        u = torch.zeros(1, 2, size, size)
        u[0, 1] = size - 1 - 2 * x  # x -> size-1-x: a mirror, det = -1 everywhere
        assert float(folding_fraction(u)) == 1.0
        mask = torch.zeros(1, size, size, dtype=torch.bool)
        mask[:, :2] = True
        assert float(folding_fraction(u, mask)) == 1.0

    def test_errors(self):
        with pytest.raises(ValueError, match="at least 2"):
            jacobian_determinant(torch.zeros(1, 2, 1, 5))
        with pytest.raises(ValueError, match="mask"):
            folding_fraction(torch.zeros(1, 2, 4, 4), torch.ones(1, 5, 5, dtype=torch.bool))
        with pytest.raises(TypeError, match="mask must be a torch.Tensor"):
            folding_fraction(torch.zeros(1, 2, 4, 4), [[True]])
        with pytest.raises(ValueError, match="mask on meta"):
            folding_fraction(torch.zeros(1, 2, 4, 4), torch.ones(1, 4, 4, device="meta"))

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    @pytest.mark.parametrize("dims", [2, 3])
    def test_half_precision_is_computed_in_float32(self, dtype, dims):
        shape = (9, 10) if dims == 2 else (6, 7, 8)
        u = smooth_field(shape, 2.0, 0).to(dtype)
        det = jacobian_determinant(u)
        assert det.dtype == dtype
        torch.testing.assert_close(det, jacobian_determinant(u.double()).to(dtype))
        assert folding_fraction(u).dtype == dtype

    def test_non_finite_field_gives_nan_fraction(self):
        u = torch.zeros(2, 2, 8, 8)
        u[1, 0, 3, 3] = math.nan  # NaN det around it: folding unknown, not 0
        fraction = folding_fraction(u)
        assert fraction[0] == 0 and fraction[1].isnan()
        mask = torch.zeros(2, 8, 8)
        mask[:, 6:] = 1.0  # a numeric mask counts where non-zero; the NaNs lie outside it
        assert torch.equal(folding_fraction(u, mask), torch.zeros(2))
        mask[:, 3] = 1.0
        assert folding_fraction(u, mask)[1].isnan()


class TestAffineToDisplacement:
    @given(
        angle=st.floats(-30, 30),
        scale=st.floats(0.8, 1.25),
        tx=st.floats(-4, 4),
        ty=st.floats(-4, 4),
        height=st.integers(12, 20),
        width=st.integers(12, 20),
    )
    def test_agrees_with_kornia_warp_affine(self, angle, scale, tx, ty, height, width):
        image = torch.rand(1, 2, height, width, dtype=torch.float64)
        matrix = _similarity(angle, scale, (tx, ty), (height, width))
        expected = warp_affine(
            image, matrix, (height, width), align_corners=True, padding_mode="border"
        )
        field = affine_to_displacement(matrix, (height, width))
        torch.testing.assert_close(warp(image, field), expected, atol=1e-9, rtol=0)

    def test_agrees_with_kornia_warp_affine3d(self):
        image = torch.rand(1, 1, 7, 8, 9, dtype=torch.float64)
        matrix = torch.tensor(
            [[[0.98, -0.1, 0.05, 0.7], [0.1, 1.02, 0.0, -0.4], [0.0, 0.03, 0.97, 0.3]]],
            dtype=torch.float64,
        )
        expected = warp_affine3d(
            image, matrix, (7, 8, 9), align_corners=True, padding_mode="border"
        )
        field = affine_to_displacement(matrix, (7, 8, 9))
        assert field.shape == (1, 3, 7, 8, 9)
        torch.testing.assert_close(warp(image, field), expected, atol=1e-9, rtol=0)

    def test_translation_values(self):
        matrix = torch.tensor([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0]])
        field = affine_to_displacement(matrix, (5, 6))
        assert torch.all(field[0, 0] == 2.0) and torch.all(field[0, 1] == -3.0)

    def test_errors(self):
        with pytest.raises(ValueError, match="matrix"):
            affine_to_displacement(torch.eye(3)[:2, :2], (4, 4))
        with pytest.raises(ValueError, match="spatial_shape"):
            affine_to_displacement(torch.eye(3)[:2], (4, 4, 4))
        collapsed = torch.stack([torch.eye(3)[:2], torch.tensor([[1.0, 2, 0], [0.5, 1, 0]])])
        with pytest.raises(ValueError, match=r"invertible.*batch index \[1\]"):
            affine_to_displacement(collapsed, (4, 4))
        not_finite = torch.eye(3)[:2].clone()
        not_finite[0, 2] = math.nan
        with pytest.raises(ValueError, match="matrix must be finite"):
            affine_to_displacement(not_finite, (4, 4))
        with pytest.raises(TypeError, match="matrix must be a floating-point"):
            affine_to_displacement(torch.eye(3)[:2].to(torch.complex64), (4, 4))

    @pytest.mark.parametrize(
        ("spatial_shape", "error", "message"),
        [
            (8, TypeError, "spatial_shape must be a sequence"),
            ("88", TypeError, "spatial_shape must be a sequence"),
            ((8.7, 8), TypeError, "spatial_shape must hold ints"),
            ((True, 8), TypeError, "spatial_shape must hold ints"),
            ((-1, 8), ValueError, "sizes >= 1"),
            ((0, 8), ValueError, "sizes >= 1"),
        ],
    )
    def test_spatial_shape_errors(self, spatial_shape, error, message):
        with pytest.raises(error, match=message):
            affine_to_displacement(torch.eye(3)[:2], spatial_shape)

    def test_spatial_shape_accepts_size_and_numpy_ints(self):
        expected = affine_to_displacement(torch.eye(3)[:2], (3, 5))
        for shape in (torch.Size([3, 5]), [np.int64(3), np.int64(5)]):
            assert torch.equal(affine_to_displacement(torch.eye(3)[:2], shape), expected)

    @pytest.mark.parametrize("dims", [2, 3])
    def test_autocast_and_half_precision_keep_float32_accuracy(self, dims):
        angle = math.radians(5)
        rotation = [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
        if dims == 2:
            matrix = torch.tensor([[*rotation[0], 3.0], [*rotation[1], -2.0]])
            shape = (128, 128)
        else:
            matrix = torch.tensor(
                [[*rotation[0], 0.0, 3.0], [*rotation[1], 0.0, -2.0], [0.0, 0.0, 1.0, 1.0]]
            )
            shape = (24, 48, 48)
        expected = affine_to_displacement(matrix.double(), shape)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            under_autocast = affine_to_displacement(matrix, shape)
        assert under_autocast.dtype == torch.float32
        # a bfloat16 product was up to 0.5 px off here
        torch.testing.assert_close(under_autocast.double(), expected, atol=1e-4, rtol=0)
        half = affine_to_displacement(matrix.half(), shape)
        assert half.dtype == torch.float16
        torch.testing.assert_close(half.double(), expected, atol=0.05, rtol=1e-3)


def test_spatial_shapes_as_arrays_sizes_and_integral_floats():
    expected = affine_to_displacement(torch.eye(3)[:2], (3, 5))
    for shape in (np.array([3, 5]), torch.tensor([3, 5]), (3.0, 5.0), (np.int32(3), 5)):
        assert torch.equal(affine_to_displacement(torch.eye(3)[:2], shape), expected)
