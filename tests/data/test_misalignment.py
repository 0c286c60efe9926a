import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from regcorrect.data import NOISE_LEVELS, Misalignment, compose_affine


def params(angle: float = 0.0, tx: float = 0.0, ty: float = 0.0, scale: float = 1.0) -> dict:
    return {
        "angle_deg": torch.tensor([angle]),
        "translation_frac": torch.tensor([[tx, ty]]),
        "scale": torch.tensor([scale]),
    }


def dot_image(row: int, col: int, size: tuple[int, int] = (21, 31)) -> torch.Tensor:
    image = -torch.ones(1, 1, *size)
    image[0, 0, row, col] = 1.0
    return image


class TestMisalignment:
    def test_table_2(self) -> None:
        assert NOISE_LEVELS[0] == (0.0, 0.0, 0.0)
        assert NOISE_LEVELS[5] == (5.0, pytest.approx(0.10), pytest.approx(0.10))
        noise = Misalignment(3)
        assert (noise.rotation_deg, noise.translation_frac, noise.scale_frac) == (
            3.0,
            pytest.approx(0.06),
            pytest.approx(0.06),
        )
        table_1 = Misalignment.custom(rotation_deg=5, translation_frac=0.05, scale_frac=0.05)
        assert table_1.level is None and "rotation_deg=±5" in repr(table_1)

    def test_level_0_is_exact_identity(self) -> None:
        images = torch.rand(3, 2, 16, 20) * 2 - 1
        warped, matrices = Misalignment(0)(images, generator=torch.Generator().manual_seed(1))
        assert torch.equal(warped, images) and warped is not images
        assert torch.equal(matrices, torch.eye(2, 3).expand(3, 2, 3))

    @settings(max_examples=30, deadline=None)
    @given(level=st.integers(0, 5), seed=st.integers(0, 2**32 - 1))
    def test_params_within_ranges(self, level: int, seed: int) -> None:
        noise = Misalignment(level)
        drawn = noise.sample_params(64, torch.Generator().manual_seed(seed))
        eps = 1e-6
        assert drawn["angle_deg"].shape == (64,) and drawn["translation_frac"].shape == (64, 2)
        assert bool((drawn["angle_deg"].abs() <= level + eps).all())
        assert bool((drawn["translation_frac"].abs() <= 0.02 * level + eps).all())
        assert bool(((drawn["scale"] - 1).abs() <= 0.02 * level + eps).all())
        if level > 0:  # independent draws: not all equal
            assert drawn["angle_deg"].std() > 0 and drawn["translation_frac"][:, 0].std() > 0

    def test_seeded(self) -> None:
        images = torch.rand(4, 1, 24, 24) * 2 - 1
        noise = Misalignment(4)
        first = noise(images, generator=torch.Generator().manual_seed(7))
        again = noise(images, generator=torch.Generator().manual_seed(7))
        other = noise(images, generator=torch.Generator().manual_seed(8))
        assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
        assert not torch.equal(first[0], other[0])
        replay = noise(images, params=noise.sample_params(4, torch.Generator().manual_seed(7)))
        assert torch.equal(replay[0], first[0])

    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_matches_scipy_affine_transform(self, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        images = torch.rand(2, 1, 40, 50, generator=generator, dtype=torch.float64) * 2 - 1
        warped, matrices = Misalignment(5)(images, generator=generator)
        swap = np.array([[0, 1], [1, 0]])  # (x, y) <-> (row, col)
        for image, out, matrix in zip(images, warped, matrices, strict=True):
            inverse = np.linalg.inv(np.vstack([matrix.numpy().astype(np.float64), [0, 0, 1]]))
            linear, offset = swap @ inverse[:2, :2] @ swap, swap @ inverse[:2, 2]
            expected = ndimage.affine_transform(
                image[0].numpy(), linear, offset=offset, order=1, mode="constant", cval=-1.0
            )
            grid = np.stack(np.meshgrid(np.arange(40), np.arange(50), indexing="ij"))
            src = np.einsum("ij,jrc->irc", linear, grid) + offset[:, None, None]
            interior = (src[0] >= 1) & (src[0] <= 38) & (src[1] >= 1) & (src[1] <= 48)
            outside = (src[0] < -1) | (src[0] > 40) | (src[1] < -1) | (src[1] > 50)
            assert interior.mean() > 0.7
            np.testing.assert_allclose(out[0].numpy()[interior], expected[interior], atol=1e-6)
            assert bool((out[0].numpy()[outside] == -1).all())

    def test_convention(self) -> None:
        noise = Misalignment(1)
        # centre (15, 10); a dot 5 px right of it, turned +90 degrees, goes 5 px up
        warped, _ = noise(dot_image(10, 20), params=params(angle=90.0))
        assert torch.equal((warped[0, 0] > 0).nonzero(), torch.tensor([[5, 15]]))
        warped, _ = noise(dot_image(10, 20), params=params(tx=2 / 31, ty=-3 / 21))
        assert torch.equal((warped[0, 0] > 0).nonzero(), torch.tensor([[7, 22]]))
        warped, matrices = noise(dot_image(10, 20), params=params(scale=1.2))
        assert torch.equal((warped[0, 0] > 0).nonzero(), torch.tensor([[10, 21]]))
        assert torch.allclose(matrices[0, :, :2], 1.2 * torch.eye(2))

    def test_fill_outside_is_minus_one(self) -> None:
        images = torch.ones(1, 3, 20, 30)
        warped, _ = Misalignment(5)(images, params=params(tx=0.1))
        assert bool((warped[..., :2] == -1).all())  # 3 px shift: columns 0-1 come from outside
        assert torch.allclose(warped[..., 4:], torch.ones(1, 3, 20, 26))

    def test_matrices_identity_exact(self) -> None:
        assert torch.equal(Misalignment.matrices(params(), (8, 9)), torch.eye(2, 3)[None])
        assert torch.equal(
            Misalignment.matrices(Misalignment.identity_params(2), (8, 9))[1], torch.eye(2, 3)
        )

    def test_warp_is_the_resampling_of_call(self) -> None:
        images = torch.rand(3, 2, 17, 23) * 2 - 1
        warped, matrices = Misalignment(4)(images, generator=torch.Generator().manual_seed(1))
        assert torch.equal(Misalignment.warp(images, matrices), warped)
        identity = torch.eye(2, 3).repeat(3, 1, 1)
        copy = Misalignment.warp(images, identity)
        assert torch.equal(copy, images) and copy.data_ptr() != images.data_ptr()

    @settings(max_examples=25, deadline=None)
    @given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3))
    def test_compose_affine_is_the_homogeneous_product(self, seed: int, n: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        outer, inner = torch.randn(2, n, 2, 3, generator=generator, dtype=torch.float64)
        bottom = np.array([[0.0, 0.0, 1.0]])
        for i in range(n):
            expected = np.vstack([outer[i].numpy(), bottom]) @ np.vstack([inner[i].numpy(), bottom])
            np.testing.assert_allclose(compose_affine(outer, inner)[i].numpy(), expected[:2])
        # one matrix broadcasts over a batch
        single = compose_affine(outer[:1], inner)
        assert single.shape == (n, 2, 3)
        torch.testing.assert_close(single[-1], compose_affine(outer[:1], inner[-1:])[0])

    def test_warping_with_a_composition_is_warping_twice(self) -> None:
        # One interpolation with "inner, then outer" equals two in the interior, up to the
        # blur of the second interpolation: exact for a linear ramp (bilinear reproduces it).
        rows, cols = torch.meshgrid(torch.arange(40.0), torch.arange(44.0), indexing="ij")
        ramp = ((0.02 * rows - 0.015 * cols) * 0.5).view(1, 1, 40, 44).double()
        noise = Misalignment(3)
        generator = torch.Generator().manual_seed(4)
        inner = noise.matrices(noise.sample_params(1, generator), (40, 44)).double()
        outer = noise.matrices(noise.sample_params(1, generator), (40, 44)).double()
        once = Misalignment.warp(ramp, compose_affine(outer, inner))
        twice = Misalignment.warp(Misalignment.warp(ramp, inner), outer)
        interior = (slice(None), slice(None), slice(8, -8), slice(8, -8))
        torch.testing.assert_close(once[interior], twice[interior], rtol=0, atol=1e-7)
        # on a random image the single interpolation keeps more detail (less blur)
        image = torch.rand(1, 1, 40, 44, generator=generator, dtype=torch.float64) * 2 - 1
        once = Misalignment.warp(image, compose_affine(outer, inner))
        twice = Misalignment.warp(Misalignment.warp(image, inner), outer)
        assert once[interior].std() > twice[interior].std()

    def test_gradcheck(self) -> None:
        images = torch.rand(1, 1, 5, 6, dtype=torch.float64, requires_grad=True)
        fixed = params(angle=3.0, tx=0.05, scale=1.05)
        fixed = {key: value.double() for key, value in fixed.items()}
        assert torch.autograd.gradcheck(lambda x: Misalignment(3)(x, params=fixed)[0], (images,))

    def test_warp_and_compose_exceptions(self) -> None:
        images = torch.zeros(2, 1, 8, 8)
        with pytest.raises(ValueError, match=r"matrices must have shape \(2, 2, 3\).*\(1, 2, 3\)"):
            Misalignment.warp(images, torch.eye(2, 3)[None])
        with pytest.raises(TypeError, match="matrices"):
            Misalignment.warp(images, torch.zeros(2, 2, 3, dtype=torch.int64))
        with pytest.raises(ValueError, match="matrices"):
            Misalignment.warp(images, torch.full((2, 2, 3), float("nan")))
        with pytest.raises(ValueError, match=r"images.*\(N, C, H, W\)"):
            Misalignment.warp(torch.zeros(1, 8, 8), torch.eye(2, 3)[None])
        with pytest.raises(ValueError, match=r"inner must have shape \(N, 2, 3\), got \(3, 3\)"):
            compose_affine(torch.eye(2, 3)[None], torch.eye(3))
        with pytest.raises(TypeError, match="outer"):
            compose_affine([[1, 0, 0], [0, 1, 0]], torch.eye(2, 3)[None])  # type: ignore[arg-type]

    def test_exception(self) -> None:
        with pytest.raises(ValueError, match="level"):
            Misalignment(6)
        with pytest.raises(TypeError, match="level"):
            Misalignment("3")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="rotation_deg"):
            Misalignment.custom(rotation_deg=-1, translation_frac=0.1, scale_frac=0.1)
        with pytest.raises(ValueError, match="scale_frac"):
            Misalignment.custom(rotation_deg=1, translation_frac=0.1, scale_frac=1.0)
        with pytest.raises(ValueError, match="rotation_deg"):  # at construction, not at sampling
            Misalignment.custom(rotation_deg=float("inf"), translation_frac=0, scale_frac=0)
        noise = Misalignment(2)
        for generator in (0, np.random.default_rng(0)):
            with pytest.raises(TypeError, match="generator must be None or a CPU torch.Generator"):
                noise(torch.zeros(1, 1, 4, 4), generator=generator)
        with pytest.raises(TypeError, match="images"):
            noise(torch.ones(1, 1, 4, 4, dtype=torch.int64))
        with pytest.raises(ValueError, match="images"):
            noise(torch.ones(1, 4, 4))
        with pytest.raises(ValueError, match="params"):
            noise(torch.ones(2, 1, 4, 4), params=params())
        with pytest.raises(ValueError, match="keys"):
            noise(torch.ones(1, 1, 4, 4), params={"angle_deg": torch.zeros(1)})
        with pytest.raises(ValueError, match="size"):
            Misalignment.matrices(params(), (0, 4))


def test_compose_affine_and_warp_errors():
    identity = torch.eye(2, 3).expand(2, 2, 3)
    with pytest.raises(ValueError, match="same batch size, or one of them 1"):
        compose_affine(identity, torch.eye(2, 3).expand(3, 2, 3))
    mixed = compose_affine(identity.half(), identity.double())  # promoted
    assert mixed.dtype == torch.float64
    with pytest.raises(ValueError, match="outer on cpu, inner on meta"):
        compose_affine(identity, identity.to("meta"))
    with pytest.raises(ValueError, match=r"matrices must be invertible.*index \[0\]"):
        Misalignment.warp(torch.rand(1, 1, 6, 6), torch.zeros(1, 2, 3))  # was all NaN


def test_numpy_float32_options_are_numbers():
    noise = Misalignment.custom(rotation_deg=np.float32(2), translation_frac=0.01, scale_frac=0.01)
    assert noise(torch.zeros(1, 1, 8, 8), generator=torch.Generator().manual_seed(0))[0].shape == (
        1,
        1,
        8,
        8,
    )
