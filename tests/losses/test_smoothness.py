"""Tests of the smoothness loss (Eq. 8) and the bending energy against independent numpy code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from regcorrect.losses import BendingEnergy, SmoothnessLoss, bending_energy, smoothness_loss


def reggan_smoothness_np(u: np.ndarray, penalty: str = "l2") -> float:
    """Eq. 8 as the official Reg-GAN ``smooothing_loss`` computes it (written out for 2D/3D):
    ``dy = |u[:, :, 1:] - u[:, :, :-1]|``, ``dx = ...``, squared, ``mean(dx) + mean(dy)``."""
    total = 0.0
    for axis in range(2, u.ndim):
        head = [slice(None)] * u.ndim
        tail = [slice(None)] * u.ndim
        head[axis], tail[axis] = slice(1, None), slice(None, -1)
        difference = np.abs(u[tuple(head)] - u[tuple(tail)])
        total += np.mean(difference * difference if penalty == "l2" else difference)
    return float(total)


def voxelmorph_grad_np(y_pred: np.ndarray, penalty: str = "l2") -> float:
    """VoxelMorph's ``Grad(penalty).loss(_, y_pred)`` (voxelmorph/torch/losses.py), in numpy:
    forward differences per spatial axis, squared (l2) or absolute (l1), the mean over every
    axis but the batch, the **mean over the spatial axes**, and the mean over the batch."""
    ndims = y_pred.ndim - 2
    dif = []
    for i in range(ndims):
        d = i + 2
        y = np.moveaxis(y_pred, d, 0)
        dfi = y[1:, ...] - y[:-1, ...]
        dif.append(np.moveaxis(dfi, 0, d))
    dif = [f * f if penalty == "l2" else np.abs(f) for f in dif]
    df = [np.mean(f.reshape(f.shape[0], -1), axis=-1) for f in dif]
    grad = sum(df) / len(df)
    return float(np.mean(grad))


def bending_energy_np(u: np.ndarray) -> float:
    """Independent bending energy, pixel by pixel: [1, -2, 1] pure and 4-point mixed second
    differences at every interior pixel, mixed terms twice (MONAI >= 1.6's stencils)."""
    n = u.ndim - 2
    interior = [range(1, size - 1) for size in u.shape[2:]]
    total, count = 0.0, 0
    for b in range(u.shape[0]):
        for c in range(u.shape[1]):
            for p in np.ndindex(*[len(r) for r in interior]):
                p = tuple(r[k] for r, k in zip(interior, p, strict=True))
                value = u[b, c]
                for i in range(n):
                    for j in range(n):
                        step_i = np.eye(n, dtype=int)[i]
                        step_j = np.eye(n, dtype=int)[j]
                        if i == j:
                            d2 = value[tuple(p + step_i)] - 2 * value[p] + value[tuple(p - step_i)]
                        else:
                            d2 = (
                                value[tuple(p + step_i + step_j)]
                                - value[tuple(p + step_i - step_j)]
                                - value[tuple(p - step_i + step_j)]
                                + value[tuple(p - step_i - step_j)]
                            ) / 4
                        total += d2**2
                count += 1
    return total / count


def random_field(shape, seed, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


class TestSmoothnessLoss:
    def test_smoke(self):
        loss = smoothness_loss(torch.rand(2, 2, 8, 8))
        assert loss.shape == () and loss.dtype == torch.float32 and loss > 0

    @pytest.mark.parametrize(
        "shape", [(1, 2, 2, 2), (2, 2, 5, 7), (3, 2, 16, 9), (1, 3, 2, 3, 4), (2, 3, 6, 5, 4)]
    )
    @pytest.mark.parametrize("penalty", ["l2", "l1"])
    def test_cardinality(self, shape, penalty):
        assert smoothness_loss(torch.rand(shape), penalty).shape == ()

    def test_exception(self):
        with pytest.raises(ValueError, match="displacement.*2 channels"):
            smoothness_loss(torch.rand(1, 3, 8, 8))
        with pytest.raises(ValueError, match="displacement.*3 channels"):
            smoothness_loss(torch.rand(1, 2, 4, 4, 4))
        with pytest.raises(ValueError, match="displacement must be a 4-D or 5-D"):
            smoothness_loss(torch.rand(2, 8, 8))
        with pytest.raises(TypeError, match="displacement"):
            smoothness_loss(torch.zeros(1, 2, 4, 4, dtype=torch.int32))
        with pytest.raises(TypeError, match="displacement"):
            smoothness_loss(np.zeros((1, 2, 4, 4)))
        with pytest.raises(ValueError, match="at least 2 samples"):
            smoothness_loss(torch.rand(1, 2, 1, 8))
        with pytest.raises(ValueError, match="penalty"):
            smoothness_loss(torch.rand(1, 2, 4, 4), penalty="l3")
        with pytest.raises(ValueError, match="penalty"):
            SmoothnessLoss(penalty="tv")

    def test_docstring_value(self):
        u = torch.zeros(1, 2, 3, 3)
        u[:, :, :, 2] = 1.0
        # x-differences: 1 on 3 of the 6 (row, pair) positions of each channel -> 0.5; y: 0
        assert smoothness_loss(u).item() == pytest.approx(0.5)
        assert smoothness_loss(u, "l1").item() == pytest.approx(0.5)
        u[:, :, :, 2] = 2.0
        assert smoothness_loss(u).item() == pytest.approx(2.0)  # squared: 4 * 0.5
        assert smoothness_loss(u, "l1").item() == pytest.approx(1.0)

    @pytest.mark.parametrize(
        "shape", [(1, 2, 7, 9), (3, 2, 16, 16), (2, 3, 5, 6, 7), (1, 3, 3, 8, 4)]
    )
    @pytest.mark.parametrize("penalty", ["l2", "l1"])
    def test_values_equal_official_reggan(self, shape, penalty):
        u = random_field(shape, seed=sum(shape))
        expected = reggan_smoothness_np(u, penalty)
        assert smoothness_loss(torch.from_numpy(u), penalty).item() == pytest.approx(
            expected, rel=1e-12
        )

    @pytest.mark.parametrize("shape", [(1, 2, 7, 9), (4, 2, 12, 10), (2, 3, 5, 6, 7)])
    @pytest.mark.parametrize("penalty", ["l2", "l1"])
    def test_equals_n_times_voxelmorph_grad(self, shape, penalty):
        u = random_field(shape, seed=len(shape) + shape[0])
        n = len(shape) - 2  # 2x VoxelMorph in 2D, 3x in 3D
        expected = n * voxelmorph_grad_np(u, penalty)
        loss = smoothness_loss(torch.from_numpy(u), penalty).item()
        assert loss == pytest.approx(expected, rel=1e-12)
        assert loss != pytest.approx(voxelmorph_grad_np(u, penalty), rel=1e-3)

    def test_float32_close_to_float64(self):
        u = random_field((2, 2, 20, 24), seed=3)
        loss32 = smoothness_loss(torch.from_numpy(u.astype(np.float32)))
        assert loss32.dtype == torch.float32
        assert loss32.item() == pytest.approx(reggan_smoothness_np(u), rel=1e-5)

    def test_bfloat16_field_gives_float32(self):
        u = torch.rand(1, 2, 8, 8).bfloat16()
        loss = smoothness_loss(u)
        assert loss.dtype == torch.float32
        assert loss.item() == pytest.approx(reggan_smoothness_np(u.double().numpy()), rel=1e-6)

    @given(
        dims=st.sampled_from([2, 3]),
        size=st.lists(st.integers(2, 7), min_size=3, max_size=3),
        batch=st.integers(1, 3),
        values=st.lists(st.floats(-50, 50, allow_nan=False), min_size=3, max_size=3),
        penalty=st.sampled_from(["l2", "l1"]),
    )
    def test_zero_for_constant_fields(self, dims, size, batch, values, penalty):
        shape = tuple(size[:dims])
        field = torch.tensor(values[:dims]).reshape(1, dims, *([1] * dims))
        field = field.expand(batch, dims, *shape).contiguous()
        assert smoothness_loss(field, penalty).item() == 0.0

    def test_gradcheck(self):
        u = torch.rand(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(smoothness_loss, (u,))
        assert torch.autograd.gradcheck(lambda v: smoothness_loss(v, "l1"), (u,))
        v = torch.rand(1, 3, 3, 4, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(smoothness_loss, (v,))

    def test_module_equals_function(self):
        u = torch.rand(2, 2, 9, 8)
        assert torch.equal(SmoothnessLoss()(u), smoothness_loss(u))
        assert torch.equal(SmoothnessLoss("l1")(u), smoothness_loss(u, "l1"))
        assert "l1" in repr(SmoothnessLoss("l1"))


class TestBendingEnergy:
    def test_smoke(self):
        energy = bending_energy(torch.rand(2, 2, 8, 8))
        assert energy.shape == () and energy.dtype == torch.float32 and energy > 0

    @pytest.mark.parametrize("shape", [(1, 2, 3, 3), (2, 2, 9, 12), (1, 3, 3, 6, 7)])
    def test_cardinality(self, shape):
        assert bending_energy(torch.rand(shape)).shape == ()

    def test_exception(self):
        with pytest.raises(ValueError, match="at least 3 samples"):
            bending_energy(torch.rand(1, 2, 2, 8))
        with pytest.raises(ValueError, match="displacement.*3 channels"):
            bending_energy(torch.rand(1, 2, 6, 6, 6))
        with pytest.raises(TypeError, match="displacement"):
            bending_energy(torch.zeros(1, 2, 6, 6, dtype=torch.int64))

    @given(
        dims=st.sampled_from([2, 3]),
        size=st.lists(st.integers(3, 9), min_size=3, max_size=3),
        seed=st.integers(0, 2**16),
    )
    def test_zero_for_affine_fields(self, dims, size, seed):
        rng = np.random.default_rng(seed)
        shape = tuple(size[:dims])
        matrix, offset = rng.uniform(-2, 2, (dims, dims)), rng.uniform(-5, 5, dims)
        grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
        field = np.einsum("ij,j...->i...", matrix, grid) + offset.reshape(dims, *[1] * dims)
        energy = bending_energy(torch.from_numpy(field[None]))
        assert energy.dtype == torch.float64 and energy.item() < 1e-20
        assert bending_energy(torch.from_numpy(field[None]).float()).item() < 1e-8

    def test_quadratic_field_2d(self):
        y, x = np.meshgrid(np.arange(11.0), np.arange(13.0), indexing="ij")
        a, b = 0.5, 0.3
        field = np.stack([a * y**2, b * x * y])[None]  # d2/dy2 u_y = 2a, d2/dxdy u_x = b
        energy = bending_energy(torch.from_numpy(field)).item()
        assert energy > 0
        assert energy == pytest.approx(bending_energy_np(field), rel=1e-12)
        # interior is exact for a quadratic: (channel y: (2a)^2 + channel x: 2 b^2) / 2 channels
        assert energy == pytest.approx(((2 * a) ** 2 + 2 * b**2) / 2, rel=1e-12)

    def test_quadratic_field_3d(self):
        z, y, x = np.meshgrid(np.arange(7.0), np.arange(8.0), np.arange(9.0), indexing="ij")
        field = np.stack([0.2 * x * z, 0.1 * y**2 - 0.3 * x * y, 0.4 * z**2])[None]
        energy = bending_energy(torch.from_numpy(field)).item()
        expected = (2 * 0.2**2 + (0.2**2 + 2 * 0.3**2) + 0.8**2) / 3
        assert energy == pytest.approx(bending_energy_np(field), rel=1e-12)
        assert energy == pytest.approx(expected, rel=1e-12)

    def test_random_field_matches_numpy(self):
        field = random_field((2, 2, 9, 10), seed=5)
        assert bending_energy(torch.from_numpy(field)).item() == pytest.approx(
            bending_energy_np(field), rel=1e-12
        )

    def test_random_3d_field_matches_numpy(self):
        field = random_field((1, 3, 5, 6, 4), seed=6)
        assert bending_energy(torch.from_numpy(field)).item() == pytest.approx(
            bending_energy_np(field), rel=1e-12
        )

    def test_sine_matches_the_analytic_second_derivative(self):
        # u_x = sin(x / 2): d²/dx² = -sin(x / 2) / 4; the [1, -2, 1] stencil gives exactly
        # (2 cos(1/2) - 2) sin(x / 2), 2 % below in amplitude (the wide stencil: 8 % below)
        y, x = np.meshgrid(np.arange(40.0), np.arange(41.0), indexing="ij")
        field = np.stack([np.zeros_like(x), np.sin(x / 2)])[None]
        sine = np.sin(x[1:-1, 1:-1] / 2)
        discrete = np.mean(((2 * np.cos(0.5) - 2) * sine) ** 2) / 2  # 2 channels, 1 non-zero
        energy = bending_energy(torch.from_numpy(field)).item()
        assert energy == pytest.approx(discrete, rel=1e-10)
        assert energy == pytest.approx(np.mean((sine / 4) ** 2) / 2, rel=0.05)

    def test_gradcheck(self):
        u = torch.rand(1, 2, 6, 7, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(bending_energy, (u,))

    def test_module_equals_function(self):
        u = torch.rand(2, 2, 9, 8)
        assert torch.equal(BendingEnergy()(u), bending_energy(u))
