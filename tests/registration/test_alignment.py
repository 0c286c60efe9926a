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


def render_contrast(spatial: tuple[int, ...], contrast: float, matrix=None) -> torch.Tensor:
    """An ellipse with a smaller lobe off its diagonal (an outline without symmetries, as an
    anatomy's: an affine can then be read from the outline alone) whose *outline* is the same for
    every ``contrast`` (a rim 0.3 above the background and an edge over 2-3 pixels, background
    -1) but whose inside runs from dark to bright along x (``contrast=1``) or the other way
    (``contrast=-1``): two "modalities" of one anatomy. ``matrix`` as in :func:`render`;
    ``(1, 1, *spatial)`` float64."""
    n = len(spatial)
    axes = [np.arange(s, dtype=float) for s in spatial]
    points = np.stack(np.meshgrid(*axes, indexing="ij"))[::-1].reshape(n, -1)
    if matrix is not None:
        points = matrix[:, :n] @ points + matrix[:, n:]
    centre = np.array([(s - 1) / 2 for s in spatial][::-1])[:, None]
    radii = np.array([0.14, 0.09, 0.11][:n])[:, None] * min(spatial)
    r2 = (((points - centre) / radii) ** 2).sum(0)
    lobe = centre + np.array([1.0, 1.0, 0.0][:n])[:, None] * radii
    lobe_r2 = (((points - lobe) / (0.5 * radii)) ** 2).sum(0)
    # 1 inside, a smooth edge (1.5 < r2 < 2.5), 0 outside
    inside = np.clip(2.5 - np.minimum(r2, lobe_r2), 0, 1)
    rim = np.clip((r2 - 0.8) / 0.7, 0, 1)  # 1 near the outline (and in the lobe)
    along = np.tanh((points[0] - centre[0]) / radii[0])  # -1 .. 1 across the ellipse
    core = 1.1 + 0.8 * contrast * along  # 0.3 .. 1.9 above the background
    values = -1.0 + inside * (rim * 0.3 + (1 - rim) * core)
    return torch.from_numpy(values.reshape(spatial))[None, None]


def contrast_pair(spatial: tuple[int, ...], linear: np.ndarray, shift) -> tuple:
    """A "T1" moving image and a "T2" fixed one (:func:`render_contrast`): the moving one shows
    the outline moved by ``linear`` about the image centre plus ``shift`` (``(x, y[, z])``).
    Returns ``(moving, fixed, forward, truth)``: the true moving→fixed matrix and its field."""
    centre = np.array([(s - 1) / 2 for s in spatial][::-1])
    offset = centre - linear @ centre + np.asarray(shift, dtype=float)
    forward = np.concatenate([linear, offset[:, None]], axis=1)
    moving, fixed = render_contrast(spatial, 1.0, forward), render_contrast(spatial, -1.0)
    return moving, fixed, forward, affine_to_displacement(torch.from_numpy(forward), spatial)


def outline_error(field: torch.Tensor, truth: torch.Tensor, fixed: torch.Tensor) -> float:
    """Mean end-point error of ``field`` against ``truth`` inside ``fixed``'s outline."""
    inside = fixed[0, 0] > -0.9
    return float((field.detach().to(truth.dtype) - truth).norm(dim=1)[0][inside].mean())


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
        torch.testing.assert_close(moment_alignment(empty, empty, refine_steps=3), identity)
        # refinement keeps it too (it used to shrink the image towards the empty one), and a
        # batch mixing empty and non-empty items refines only the latter
        for weights in ("intensity", "foreground"):
            for pair in ((image, empty), (empty, image)):
                refined = moment_alignment(*pair, weights=weights, refine_steps=3)
                torch.testing.assert_close(refined, identity)
        shifted = torch.roll(image[:1], shifts=(2, 1), dims=(2, 3))
        mixed = moment_alignment(
            torch.cat([image[:1], image[:1]]), torch.cat([shifted, empty[:1]]), refine_steps=3
        )
        torch.testing.assert_close(mixed[1], identity[0])
        torch.testing.assert_close(
            mixed[0], moment_alignment(image[:1], shifted, refine_steps=3)[0]
        )
        assert (mixed[0, :, 2] - torch.tensor([1.0, 2.0])).abs().max() < 0.5  # (x, y) shift

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

    @settings(max_examples=15, deadline=None)
    @given(
        angle=st.floats(-10, 10),
        scale=st.floats(0.92, 1.08),
        shift=st.tuples(st.floats(-5, 5), st.floats(-5, 5)),
    )
    def test_foreground_weights_align_two_contrasts(self, angle, scale, shift) -> None:
        linear = similarity(angle, scale, (0.0, 0.0))[:, :2]
        moving, fixed, forward, truth = contrast_pair((64, 60), linear, shift)
        error = lambda m: outline_error(affine_to_displacement(m, (64, 60)), truth, fixed)  # noqa: E731
        outline = moment_alignment(moving, fixed, weights="foreground")
        assert error(outline) < 0.1
        np.testing.assert_allclose(outline[0, :, :2].numpy(), forward[:, :2], atol=0.01)
        # intensity weights follow the contrast (bright side left vs right) and miss
        assert error(moment_alignment(moving, fixed)) > 1.0

    @pytest.mark.parametrize("spatial", [(64, 60), (30, 34, 32)])
    def test_refinement_recovers_an_affine(self, spatial) -> None:
        """An affine (shear and unequal scales, beyond the similarity family) between two
        contrasts: the refined estimate finds it, the closed form alone cannot."""
        n = len(spatial)
        shear = np.array([[0.06, 0.05, 0.02], [-0.03, -0.05, 0.01], [0.0, 0.02, 0.03]])
        linear = np.eye(n) + shear[:n, :n]
        moving, fixed, _, truth = contrast_pair(spatial, linear, [1.5, -2.0, 1.0][:n])
        error = lambda m: outline_error(affine_to_displacement(m, spatial), truth, fixed)  # noqa: E731
        closed = moment_alignment(moving, fixed, weights="foreground")
        refined = moment_alignment(moving, fixed, weights="foreground", refine_steps=10)
        assert error(closed) > 0.15
        assert error(refined) < 0.05
        np.testing.assert_allclose(refined[0, :, :n].numpy(), linear, atol=0.01)

    @settings(max_examples=15, deadline=None)
    @given(seed=st.integers(0, 2**31 - 1), steps=st.integers(1, 4))
    def test_refinement_never_raises_the_difference(self, seed: int, steps: int) -> None:
        """Random images (no good answer): each refinement step is kept only if it lowers the
        squared difference of the weight maps, so the result is never worse than the start."""
        generator = torch.Generator().manual_seed(seed)
        moving = torch.rand(2, 1, 24, 28, generator=generator, dtype=torch.float64) * 2 - 1
        fixed = torch.rand(2, 1, 24, 28, generator=generator, dtype=torch.float64) * 2 - 1

        def difference(matrix: torch.Tensor) -> torch.Tensor:
            aligned = warp(moving + 1, affine_to_displacement(matrix, (24, 28)))
            return ((aligned - (fixed + 1)) ** 2).sum(dim=(1, 2, 3))

        start = difference(moment_alignment(moving, fixed))
        refined = difference(moment_alignment(moving, fixed, refine_steps=steps))
        assert bool((refined <= start + 1e-9).all())

    def test_foreground_weights_values_and_channels(self) -> None:
        generator = torch.Generator().manual_seed(3)
        fixed = torch.rand(2, 1, 30, 34, generator=generator, dtype=torch.float64) * 2 - 1
        moving = torch.roll(fixed, shifts=(2, -1), dims=(2, 3))
        matrix = moment_alignment(moving, fixed, weights="foreground", foreground_ramp=0.5)
        # independent reference: scipy's centres of mass of clip((x + 1) / ramp, 0, 1)
        weight = lambda image: np.clip((image.numpy() + 1) / 0.5, 0, 1)  # noqa: E731
        for i in range(2):
            my, mx = ndimage.center_of_mass(weight(moving[i, 0]))
            fy, fx = ndimage.center_of_mass(weight(fixed[i, 0]))
            uncentred = matrix[i, :, :2] @ torch.tensor([mx, my]).double() + matrix[i, :, 2]
            torch.testing.assert_close(uncentred, torch.tensor([fx, fy]).double())
        # channels: the largest of them counts; fixed and moving may have different counts
        three = torch.cat([fixed, fixed - 0.5, -torch.ones_like(fixed)], dim=1)
        torch.testing.assert_close(
            moment_alignment(moving, three, weights="foreground", foreground_ramp=0.5), matrix
        )

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
        with pytest.raises(ValueError, match="refine_steps must be an int >= 0, got -1"):
            moment_alignment(image, image, refine_steps=-1)
        with pytest.raises(ValueError, match="weights must be one of"):
            moment_alignment(image, image, weights="mask")
        with pytest.raises(ValueError, match="foreground_ramp must be > 0, got 0"):
            moment_alignment(image, image, weights="foreground", foreground_ramp=0)
        with pytest.raises(ValueError, match=r"batch and spatial.*\(2, 1, 16, 16\)"):
            moment_alignment(image, torch.zeros(2, 1, 16, 16))


def test_refinement_needs_two_pixels_per_axis_and_finite_options():
    image = torch.rand(1, 1, 1, 9)
    assert moment_alignment(image, image).shape == (1, 2, 3)  # the closed form works
    with pytest.raises(ValueError, match="refine_steps > 0 needs at least 2 pixels"):
        moment_alignment(image, image, refine_steps=1)
    with pytest.raises(ValueError, match="background must be finite"):
        moment_alignment(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8), background=math.nan)
