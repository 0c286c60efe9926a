"""Tests of the closed-form moment alignment (``moment_alignment``).

Reference: images rendered analytically in both frames (no interpolation), so the recovered
matrix is compared with the known transform; centroids against ``scipy.ndimage.center_of_mass``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from regcorrect.registration import affine_to_displacement, moment_alignment, warp


def similarity(angle_deg: float, scale: float, shift: tuple[float, ...], n: int = 2) -> np.ndarray:
    """Forward matrix (x, y[, z]) order, about the origin: rotation in the x-y plane."""
    a = math.radians(angle_deg)
    linear = np.eye(n)
    linear[:2, :2] = [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]
    return np.concatenate([scale * linear, np.asarray(shift, dtype=float)[:, None]], axis=1)


def render(spatial: tuple[int, ...], matrix: np.ndarray | None = None) -> torch.Tensor:
    """An anisotropic Gaussian blob, background -1, seen through ``matrix``: the returned
    image at pixel ``p`` shows the reference content at ``matrix @ p`` (so ``matrix`` maps this
    image's positions to the reference's), as ``(1, 1, *spatial)`` float64."""
    n = len(spatial)
    axes = [np.arange(s, dtype=float) for s in spatial]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"))[::-1]  # (x, y[, z]) order
    points = grid.reshape(n, -1)
    if matrix is not None:
        points = matrix[:, :n] @ points + matrix[:, n:]
    centre = np.array([(s - 1) / 2 for s in spatial][::-1])[:, None]
    radii = np.array([0.14, 0.09, 0.11][:n])[:, None] * min(spatial)
    r2 = (((points - centre) / radii) ** 2).sum(0)
    values = 2.0 * np.exp(-r2) - 1.0  # smooth, ~-1 well inside the image border
    return torch.from_numpy(values.reshape(spatial))[None, None]


def to3(matrix: np.ndarray) -> np.ndarray:
    n = matrix.shape[0]
    return np.vstack([matrix, np.eye(n + 1)[-1:]])


def moving_and_fixed(spatial, forward: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """fixed = reference; moving shows it moved so that ``forward`` maps moving to fixed."""
    fixed = render(spatial)
    moving = render(spatial, forward)  # moving[p] = fixed content at forward(p)
    return moving, fixed


def check_recovers(spatial: tuple[int, ...], angle: float, scale: float, shift: tuple) -> tuple:
    """Move the blob by a similarity about the image centre (rotation in the x-y plane), then
    check moment_alignment's matrix (linear part) and field (end-point error where the content
    is) against it. Returns ``(moving, fixed, field)``."""
    n = len(spatial)
    centre = np.array([(s - 1) / 2 for s in spatial][::-1])  # (x, y[, z])
    about = similarity(angle, scale, (0.0,) * n, n=n)
    offset = centre - about[:, :n] @ centre + np.asarray(shift)
    forward = np.concatenate([about[:, :n], offset[:, None]], axis=1)
    moving, fixed = moving_and_fixed(spatial, forward)
    matrix = moment_alignment(moving, fixed)[0].numpy()
    np.testing.assert_allclose(matrix[:, :n], forward[:, :n], atol=0.005)
    field = affine_to_displacement(torch.from_numpy(matrix), spatial)
    truth = affine_to_displacement(torch.from_numpy(forward), spatial)
    content = fixed[0, 0] > -0.9
    assert float((field - truth).norm(dim=1)[0][content].max()) < 0.05
    return moving, fixed, field


class TestMomentAlignment:
    def test_smoke_shape_and_dtype(self) -> None:
        moving, fixed = torch.rand(3, 2, 24, 20) * 2 - 1, torch.rand(3, 2, 24, 20) * 2 - 1
        matrix = moment_alignment(moving, fixed)
        assert matrix.shape == (3, 2, 3) and matrix.dtype == torch.float32
        assert moment_alignment(moving.double(), fixed.double()).dtype == torch.float64
        volume = torch.rand(2, 1, 12, 14, 16) * 2 - 1
        assert moment_alignment(volume, volume).shape == (2, 3, 4)
        half = moment_alignment(moving.bfloat16(), fixed.bfloat16())
        assert half.dtype == torch.float32

    def test_identity_for_equal_images(self) -> None:
        image = render((40, 36))
        matrix = moment_alignment(image, image)
        torch.testing.assert_close(matrix, torch.eye(2, 3, dtype=torch.float64)[None])

    @settings(max_examples=25, deadline=None)
    @given(
        angle=st.floats(-20, 20),
        scale=st.floats(0.9, 1.1),
        shift=st.tuples(st.floats(-5, 5), st.floats(-5, 5)),
    )
    def test_recovers_a_similarity_2d(self, angle: float, scale: float, shift) -> None:
        moving, fixed, field = check_recovers((64, 60), angle, scale, shift)
        assert (warp(moving, field) - fixed).abs().max() < 0.05  # and it aligns the images

    def test_recovers_a_similarity_3d(self) -> None:
        check_recovers((28, 32, 30), 12.0, 1.08, (1.5, -2.0, 1.0))

    @settings(max_examples=20, deadline=None)
    @given(seed=st.integers(0, 2**31 - 1), dy=st.integers(-6, 6), dx=st.integers(-6, 6))
    def test_translation_is_the_centroid_shift(self, seed: int, dy: int, dx: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        fixed = -torch.ones(1, 1, 40, 44, dtype=torch.float64)
        fixed[..., 8:32, 9:35] = torch.rand(24, 26, generator=generator, dtype=torch.float64)
        moving = torch.roll(fixed, shifts=(dy, dx), dims=(2, 3))
        matrix = moment_alignment(moving, fixed, rotation=False)[0]
        torch.testing.assert_close(matrix[:, :2], torch.eye(2, dtype=torch.float64))
        # independent reference: scipy's centres of mass of the weights
        weight = lambda image: (image[0, 0] + 1).numpy()  # noqa: E731
        (my, mx), (fy, fx) = (
            ndimage.center_of_mass(weight(moving)),
            ndimage.center_of_mass(weight(fixed)),
        )
        torch.testing.assert_close(matrix[:, 2], torch.tensor([fx - mx, fy - my]).double())
        assert matrix[:, 2].tolist() == pytest.approx([-dx, -dy], abs=1e-9)

    def test_isotropic_content_gets_no_rotation(self) -> None:
        axis = torch.arange(41.0, dtype=torch.float64)
        yy, xx = torch.meshgrid(axis, axis, indexing="ij")
        inside = (yy - 20) ** 2 + (xx - 20) ** 2 <= 144
        disc = torch.where(inside, 1.0, -1.0).double()[None, None]
        shifted = torch.roll(disc, shifts=(2, 1), dims=(2, 3))
        matrix = moment_alignment(shifted, disc)[0]
        torch.testing.assert_close(
            matrix[:, :2], torch.eye(2, dtype=torch.float64), atol=1e-6, rtol=0
        )

    def test_rotation_beyond_the_limit_is_dropped(self) -> None:
        centre = np.array([29.5, 31.5])  # (x, y) of a 64 x 60 image
        about = similarity(60.0, 1.0, (0.0, 0.0))
        forward = np.concatenate([about[:, :2], (centre - about[:, :2] @ centre)[:, None]], axis=1)
        moving, fixed = moving_and_fixed((64, 60), forward)
        kept = moment_alignment(moving, fixed, max_rotation_deg=90)[0].numpy()
        np.testing.assert_allclose(kept[:, :2], forward[:, :2], atol=0.01)
        dropped = moment_alignment(moving, fixed, max_rotation_deg=45)[0].numpy()
        np.testing.assert_allclose(dropped[:, :2], np.eye(2), atol=0.01)
        without = moment_alignment(moving, fixed, rotation=False)[0].numpy()
        np.testing.assert_allclose(without, dropped, atol=1e-9)

    def test_empty_images_give_the_identity(self) -> None:
        empty = -torch.ones(2, 1, 16, 16)
        image = render((16, 16)).float().expand(2, 1, 16, 16)
        identity = torch.eye(2, 3).expand(2, 2, 3)
        torch.testing.assert_close(moment_alignment(empty, image), identity)
        torch.testing.assert_close(moment_alignment(image, empty), identity)

    def test_batch_items_are_independent_and_channels_sum(self) -> None:
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(3, 2, 30, 30, generator=generator) * 2 - 1
        others = torch.roll(images, shifts=(2, -3), dims=(2, 3))
        together = moment_alignment(images, others)
        for i in range(3):
            torch.testing.assert_close(
                together[i], moment_alignment(images[i : i + 1], others[i : i + 1])[0]
            )
        # the channels' weights add up: two channels weigh like one holding their sum
        single = lambda x: (x + 1).sum(dim=1, keepdim=True) - 1  # noqa: E731
        torch.testing.assert_close(moment_alignment(single(images), single(others)), together)

    def test_background_argument(self) -> None:
        fixed = torch.zeros(1, 1, 30, 30)
        fixed[..., 10:20, 8:24] = 1.0
        moving = torch.roll(fixed, shifts=(1, 2), dims=(2, 3))
        matrix = moment_alignment(moving, fixed, background=0.0)[0]
        torch.testing.assert_close(matrix[:, 2], torch.tensor([-2.0, -1.0]))

    def test_no_gradient(self) -> None:
        moving = torch.rand(1, 1, 20, 20, requires_grad=True)
        assert not moment_alignment(moving, torch.rand(1, 1, 20, 20)).requires_grad

    def test_errors(self) -> None:
        image = torch.zeros(1, 1, 16, 16)
        with pytest.raises(ValueError, match=r"moving.*\(B, C, H, W\)"):
            moment_alignment(torch.zeros(16, 16), image)
        with pytest.raises(ValueError, match="moving.*fixed"):
            moment_alignment(image, torch.zeros(1, 1, 16, 18))
        with pytest.raises(TypeError, match="fixed"):
            moment_alignment(image, torch.zeros(1, 1, 16, 16, dtype=torch.int64))
        with pytest.raises(ValueError, match="moving"):
            moment_alignment(torch.full((1, 1, 16, 16), float("nan")), image)
        with pytest.raises(ValueError, match=r"max_rotation_deg must be in \(0, 180\], got 0"):
            moment_alignment(image, image, max_rotation_deg=0)
        with pytest.raises(ValueError, match="min_anisotropy"):
            moment_alignment(image, image, min_anisotropy=1.0)
        with pytest.raises(TypeError, match="rotation must be a bool"):
            moment_alignment(image, image, rotation=1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="max_rotation_deg must be a number, got str"):
            moment_alignment(image, image, max_rotation_deg="45")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="background"):
            moment_alignment(image, image, background="-1")  # type: ignore[arg-type]
