"""Tests of regcorrect.registration.warp against independent references (scipy, torch.roll)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.ndimage import gaussian_filter, map_coordinates

from regcorrect.registration import Warp, warp
from regcorrect.registration.grid import identity_axes, identity_grid
from regcorrect.registration.warp import sampler_has_double_backward


def smooth_field(shape, amplitude, seed, batch=1):
    """Random smooth displacement (B, N, *shape) in pixels."""
    rng = np.random.default_rng(seed)
    n = len(shape)
    field = rng.standard_normal((batch, n, *shape))
    sigma = (0, 0) + (max(shape) / 6,) * n
    field = gaussian_filter(field, sigma=sigma)
    field = field / (np.abs(field).max() + 1e-12) * amplitude
    return torch.from_numpy(field)


class TestWarp:
    def test_smoke(self):
        out = warp(torch.rand(2, 3, 8, 9), torch.zeros(2, 2, 8, 9))
        assert out.shape == (2, 3, 8, 9)

    @given(
        dims=st.sampled_from([2, 3]),
        size=st.lists(st.integers(1, 9), min_size=3, max_size=3),
        channels=st.integers(1, 4),
        batch=st.integers(1, 3),
    )
    def test_zero_field_is_identity(self, dims, size, channels, batch):
        shape = tuple(size[:dims])
        image = torch.rand(batch, channels, *shape, dtype=torch.float64)
        out = warp(image, torch.zeros(batch, dims, *shape, dtype=torch.float64))
        torch.testing.assert_close(out, image, atol=1e-12, rtol=0)

    @given(
        dy=st.integers(-3, 3),
        dx=st.integers(-3, 3),
        height=st.integers(8, 14),
        width=st.integers(8, 14),
    )
    def test_integer_shift_equals_roll_in_interior(self, dy, dx, height, width):
        image = torch.rand(1, 2, height, width, dtype=torch.float64)
        field = torch.zeros(1, 2, height, width, dtype=torch.float64)
        field[:, 0], field[:, 1] = dy, dx
        out = warp(image, field)
        rolled = torch.roll(image, shifts=(-dy, -dx), dims=(2, 3))
        inner = (slice(None), slice(None), slice(3, height - 3), slice(3, width - 3))
        torch.testing.assert_close(out[inner], rolled[inner], atol=1e-12, rtol=0)

    def test_integer_shift_3d_equals_roll(self):
        image = torch.rand(1, 1, 9, 10, 11, dtype=torch.float64)
        field = torch.zeros(1, 3, 9, 10, 11, dtype=torch.float64)
        field[:, 0], field[:, 1], field[:, 2] = 1, -2, 2
        out = warp(image, field)
        rolled = torch.roll(image, shifts=(-1, 2, -2), dims=(2, 3, 4))
        inner = (slice(None), slice(None), slice(3, -3), slice(3, -3), slice(3, -3))
        torch.testing.assert_close(out[inner], rolled[inner], atol=1e-12, rtol=0)

    @given(seed=st.integers(0, 10_000), dims=st.sampled_from([2, 3]))
    def test_matches_scipy_map_coordinates(self, seed, dims):
        shape = (12, 14) if dims == 2 else (7, 8, 9)
        rng = np.random.default_rng(seed)
        image = rng.standard_normal(shape)
        field = smooth_field(shape, amplitude=2.5, seed=seed)
        out = warp(torch.from_numpy(image)[None, None], field)[0, 0].numpy()
        grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
        coords = grid + field[0].numpy()
        expected = map_coordinates(image, coords, order=1, mode="nearest")
        np.testing.assert_allclose(out, expected, atol=1e-10)

    def test_padding_modes(self):
        image = torch.ones(1, 1, 6, 6, dtype=torch.float64)
        field = torch.full((1, 2, 6, 6), 20.0, dtype=torch.float64)  # everything outside
        assert warp(image, field, padding_mode="zeros").abs().max() == 0
        torch.testing.assert_close(warp(image, field, padding_mode="border"), image)

    def test_nearest_mode_picks_pixels(self):
        image = torch.arange(16.0).reshape(1, 1, 4, 4)
        field = torch.full((1, 2, 4, 4), 0.4)
        torch.testing.assert_close(warp(image, field, mode="nearest"), image)

    def test_batch_broadcast(self):
        images = torch.rand(3, 1, 8, 8, dtype=torch.float64)
        field = smooth_field((8, 8), 1.5, seed=1)
        out = warp(images, field)
        for i in range(3):
            torch.testing.assert_close(out[i : i + 1], warp(images[i : i + 1], field))
        fields = torch.cat([field, -field])
        assert warp(images[:1], fields).shape == (2, 1, 8, 8)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
    def test_dtype_follows_input(self, dtype):
        image = torch.rand(1, 1, 8, 8).to(dtype)
        out = warp(image, torch.zeros(1, 2, 8, 8, dtype=dtype))
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), image.float())

    def test_under_autocast_samples_in_float32(self):
        image = torch.rand(1, 1, 8, 8)
        field = smooth_field((8, 8), 1.0, seed=2).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = warp(image, field)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, warp(image, field))

    def test_meta_device_gives_shapes(self):
        # e.g. for shape inference; autocast has no meta device type
        out = warp(torch.empty(2, 3, 6, 7, device="meta"), torch.empty(1, 2, 6, 7, device="meta"))
        assert out.shape == (2, 3, 6, 7) and out.device.type == "meta"

    def test_gradcheck(self):
        image = torch.rand(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
        # Keep samples away from pixel borders where bilinear interpolation is not differentiable.
        field = (torch.rand(1, 2, 5, 6, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
        assert torch.autograd.gradcheck(lambda i, f: warp(i, f), (image, field))

    def test_gradcheck_3d(self):
        image = torch.rand(1, 1, 4, 4, 4, dtype=torch.float64, requires_grad=True)
        field = (torch.rand(1, 3, 4, 4, 4, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
        assert torch.autograd.gradcheck(lambda i, f: warp(i, f), (image, field))

    @pytest.mark.parametrize("spatial", [(5, 6), (3, 4, 4)])
    def test_gradgradcheck(self, spatial):
        # The fused backward recomputes itself from differentiable ops under create_graph=True;
        # on a torch whose grid_sample has no double backward, a clear error instead.
        n = len(spatial)
        image = torch.rand(2, 1, *spatial, dtype=torch.float64, requires_grad=True)
        field = (torch.rand(2, n, *spatial, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
        if sampler_has_double_backward("cpu", n):
            assert torch.autograd.gradgradcheck(lambda i, f: warp(i, f), (image, field))
        else:
            with pytest.raises(NotImplementedError, match="double backward through warp"):
                torch.autograd.grad(warp(image, field).sum(), field, create_graph=True)

    def test_devices_must_match(self):
        image = torch.zeros(1, 1, 8, 8)
        with pytest.raises(ValueError, match="image on cpu, displacement on meta"):
            warp(image, torch.zeros(1, 2, 8, 8, device="meta"))

    @pytest.mark.parametrize(
        "mode, padding_mode",
        [
            ("bilinear", "border"),
            ("bilinear", "zeros"),
            ("bicubic", "reflection"),
            ("nearest", "border"),
        ],
    )
    def test_gradcheck_modes_and_broadcast(self, mode, padding_mode):
        # One field for a batch of images and one image for a batch of fields.
        images = torch.rand(3, 2, 5, 6, dtype=torch.float64, requires_grad=True)
        field = (torch.rand(1, 2, 5, 6, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
        image = torch.rand(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
        fields = (torch.rand(3, 2, 5, 6, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()

        def fn(i, f):
            return warp(i, f, mode=mode, padding_mode=padding_mode)

        assert torch.autograd.gradcheck(fn, (images, field))
        assert torch.autograd.gradcheck(fn, (image, fields))

    @pytest.mark.parametrize("shape", [(9, 14), (5, 7, 6)])
    def test_fused_gradients_equal_plain_autograd(self, shape):
        # Reference: the textbook conversion (flip to x, y[, z], scale, add the identity grid)
        # differentiated by autograd op by op.
        n = len(shape)
        gen = torch.Generator().manual_seed(4)
        image = torch.rand(2, 3, *shape, generator=gen, dtype=torch.float64)
        field = torch.randn(2, n, *shape, generator=gen, dtype=torch.float64) * 2.0
        grad_out = torch.rand(2, 3, *shape, generator=gen, dtype=torch.float64)
        results = []
        for fused in (True, False):
            i = image.clone().requires_grad_()
            f = field.clone().requires_grad_()
            if fused:
                out = warp(i, f)
            else:
                scale = torch.tensor([2.0 / (s - 1) for s in reversed(shape)], dtype=f.dtype)
                grid = identity_grid(shape, f.device, f.dtype) + f.flip(1).movedim(1, -1) * scale
                out = torch.nn.functional.grid_sample(
                    i, grid, mode="bilinear", padding_mode="border", align_corners=True
                )
            out.backward(grad_out)
            results.append((out, i.grad, f.grad))
        for mine, theirs in zip(results[0], results[1], strict=True):
            torch.testing.assert_close(mine, theirs)

    @pytest.mark.parametrize("which", ["image", "field"])
    def test_gradient_to_one_input_only(self, which):
        image = torch.rand(1, 1, 8, 8, requires_grad=which == "image")
        field = smooth_field((8, 8), 1.0, seed=5).float().requires_grad_(which == "field")
        warp(image, field).sum().backward()
        assert (image.grad is not None) == (which == "image")
        assert (field.grad is not None) == (which == "field")

    def test_identity_grid_is_cached(self):
        a = identity_grid((7, 9), torch.device("cpu"), torch.float32)
        b = identity_grid((7, 9), torch.device("cpu"), torch.float32)
        assert a is b
        assert a.shape == (1, 7, 9, 2)
        assert a[0, 0, -1].tolist() == [1.0, -1.0]  # (x, y) of the top-right corner

    @pytest.mark.parametrize("shape", [(5, 7), (1, 6), (3, 4, 5), (1, 1, 4)])
    def test_identity_axes_broadcast_to_the_identity_grid(self, shape):
        axes = identity_axes(shape, torch.device("cpu"), torch.float64)
        assert [a.ndim for a in axes] == [len(shape) + 1] * len(shape)
        assert all(a.numel() == shape[len(shape) - 1 - i] for i, a in enumerate(axes))
        full = torch.stack(torch.broadcast_tensors(*axes), dim=-1)
        assert torch.equal(full, identity_grid(shape, torch.device("cpu"), torch.float64))

    def test_identity_grid_3d_channel_order(self):
        grid = identity_grid((3, 4, 5), torch.device("cpu"), torch.float64)
        assert grid.shape == (1, 3, 4, 5, 3)
        assert grid[0, 0, 0, -1].tolist() == [1.0, -1.0, -1.0]  # x varies along the last axis
        assert grid[0, -1, 0, 0].tolist() == [-1.0, -1.0, 1.0]  # z along the first

    @pytest.mark.parametrize(
        "mode, padding_mode, shape",
        [
            ("bilinear", "border", (24, 20)),  # torch's CPU backward crashed on these two
            ("bilinear", "reflection", (24, 20)),
            ("bilinear", "zeros", (24, 20)),
            ("nearest", "border", (24, 20)),
            ("bicubic", "reflection", (24, 20)),
            ("bilinear", "border", (6, 7, 5)),
            ("nearest", "reflection", (6, 7, 5)),
        ],
    )
    def test_non_finite_displacement_gives_nan_there_and_nowhere_else(
        self, mode, padding_mode, shape
    ):
        n = len(shape)
        gen = torch.Generator().manual_seed(6)
        image = torch.rand(2, 3, *shape, generator=gen, dtype=torch.float64)
        field = torch.randn(2, n, *shape, generator=gen, dtype=torch.float64) * 3.0
        bad_field = field.clone()
        bad_field[0, :, 2:5] = float("nan")  # every coordinate: grid_sample reads another pixel
        bad_field[0, 0, 5] = float("nan")  # one coordinate
        bad_field[1, -1, 3] = float("inf")
        bad_field[1, 0, 1] = -float("inf")
        bad = (~torch.isfinite(bad_field)).any(1, keepdim=True)  # (B, 1, *spatial)
        assert bad.any() and not bad.all()

        image_in = image.clone().requires_grad_()
        field_in = bad_field.clone().requires_grad_()
        warped = warp(image_in, field_in, mode=mode, padding_mode=padding_mode)
        assert warped.isnan().equal(bad.expand_as(warped))
        # Elsewhere the values are those of the same warp with the bad positions repaired.
        expected = warp(
            image, torch.where(bad, field, bad_field), mode=mode, padding_mode=padding_mode
        )
        torch.testing.assert_close(warped[~bad.expand_as(warped)], expected[~bad.expand_as(warped)])

        # Backward (torch's own bilinear CPU backward segfaults on NaN positions): NaN field
        # gradient exactly at the bad positions, and the image gradient of the finite outputs.
        upstream = torch.rand(warped.shape, generator=gen, dtype=torch.float64)
        warped.backward(upstream)
        assert field_in.grad.isnan().equal(bad.expand_as(field_in.grad))
        reference = image.clone().requires_grad_()
        repaired = warp(
            reference, torch.where(bad, field, bad_field), mode=mode, padding_mode=padding_mode
        )
        repaired.backward(upstream.masked_fill(bad, 0.0))
        torch.testing.assert_close(image_in.grad, reference.grad)

    @pytest.mark.skipif(
        not sampler_has_double_backward("cpu", 2), reason="this torch's grid_sample lacks it"
    )
    def test_non_finite_displacement_double_backward(self):
        gen = torch.Generator().manual_seed(7)
        image = torch.rand(1, 2, 12, 10, generator=gen, dtype=torch.float64, requires_grad=True)
        good = torch.randn(1, 2, 12, 10, generator=gen, dtype=torch.float64)
        bad_field = good.clone()
        bad_field[0, :, 3, 4] = float("nan")
        field = bad_field.clone().requires_grad_()
        upstream = torch.rand(1, 2, 12, 10, generator=gen, dtype=torch.float64)
        grads = torch.autograd.grad(warp(image, field), (image, field), upstream, create_graph=True)
        first_order = torch.autograd.grad(warp(image, field), (image, field), upstream)
        bad = torch.zeros(1, 2, 12, 10, dtype=torch.bool)
        bad[0, :, 3, 4] = True
        assert grads[1].isnan().equal(bad) and torch.isfinite(grads[0]).all()
        for double, single in zip(grads, first_order, strict=True):
            torch.testing.assert_close(double, single, equal_nan=True)
        grads[0].sum().backward()  # the image gradient depends on the field: no crash there
        assert field.grad is not None and torch.isfinite(field.grad).all()

    @pytest.mark.slow
    @pytest.mark.filterwarnings("error::UserWarning")  # e.g. dynamo skipping the grid caches
    @pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's own jit import in dynamo
    def test_compiles_without_graph_breaks_and_marks_non_finite_positions(self):
        compiled = torch.compile(warp, fullgraph=True)  # fullgraph: a graph break is an error
        gen = torch.Generator().manual_seed(8)
        image = torch.rand(1, 2, 16, 12, generator=gen)
        field = torch.randn(1, 2, 16, 12, generator=gen)
        field[0, :, 3, 3] = float("nan")
        field[0, 1, 5, 5] = float("inf")
        image_in, field_in = image.clone().requires_grad_(), field.clone().requires_grad_()
        warped = compiled(image_in, field_in)
        expected = warp(image, field)
        assert warped.isnan().equal(expected.isnan()) and warped.isnan().sum() == 4
        torch.testing.assert_close(warped.nan_to_num(), expected.nan_to_num())
        warped.nan_to_num().sum().backward()
        assert field_in.grad.isnan().sum() == 4 and torch.isfinite(image_in.grad).all()

    def test_non_finite_displacement_without_autograd(self):
        field = torch.zeros(1, 2, 16, 16)
        field[0, :, 4, 5] = float("nan")
        warped = warp(torch.rand(1, 2, 16, 16), field)
        assert warped.isnan().sum() == 2 and warped[0, :, 4, 5].isnan().all()

    def test_works_in_inference_mode_then_training(self):
        with torch.inference_mode():
            warp(torch.rand(1, 1, 11, 13), torch.zeros(1, 2, 11, 13))
        image = torch.rand(1, 1, 11, 13, requires_grad=True)
        field = torch.zeros(1, 2, 11, 13, requires_grad=True)
        warp(image, field).sum().backward()
        assert image.grad is not None and field.grad is not None

    def test_module(self):
        warper = Warp(padding_mode="zeros")
        image, field = torch.rand(2, 1, 8, 8), smooth_field((8, 8), 1.0, 3, batch=2).float()
        torch.testing.assert_close(warper(image, field), warp(image, field, padding_mode="zeros"))
        assert "zeros" in repr(warper)

    @pytest.mark.parametrize(
        ("image", "field", "match"),
        [
            (torch.rand(1, 1, 8, 8), torch.zeros(1, 3, 8, 8), "channels"),
            (torch.rand(1, 1, 8, 8), torch.zeros(1, 2, 8), "4-D or 5-D"),
            (torch.rand(1, 8, 8), torch.zeros(1, 2, 8, 8), "image must be a 4-D"),
            (torch.rand(1, 1, 8, 9), torch.zeros(1, 2, 8, 8), "spatial shape"),
            (torch.rand(2, 1, 8, 8), torch.zeros(3, 2, 8, 8), "batch"),
            (torch.rand(1, 1, 0, 8), torch.zeros(1, 2, 0, 8), "at least 1 sample"),
        ],
    )
    def test_shape_errors(self, image, field, match):
        with pytest.raises(ValueError, match=match):
            warp(image, field)

    def test_type_and_option_errors(self):
        with pytest.raises(TypeError, match="image"):
            warp(torch.zeros(1, 1, 4, 4, dtype=torch.long), torch.zeros(1, 2, 4, 4))
        with pytest.raises(TypeError, match="displacement"):
            warp(torch.zeros(1, 1, 4, 4), np.zeros((1, 2, 4, 4)))
        with pytest.raises(ValueError, match="mode"):
            warp(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 4), mode="cubic")
        with pytest.raises(ValueError, match="padding_mode"):
            warp(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 4), padding_mode="wrap")
        with pytest.raises(ValueError, match="bicubic"):
            warp(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 3, 4, 4, 4), mode="bicubic")


@pytest.mark.parametrize("dims", [2, 3])
def test_empty_batch_broadcasts_against_batch_one(dims):
    spatial = (5, 6, 7)[:dims]
    empty_images = warp(torch.rand(0, 2, *spatial), torch.zeros(1, dims, *spatial))
    empty_fields = warp(torch.rand(1, 2, *spatial), torch.zeros(0, dims, *spatial))
    assert empty_images.shape == empty_fields.shape == (0, 2, *spatial)
