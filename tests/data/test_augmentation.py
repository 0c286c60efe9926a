import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from regcorrect.data import Misalignment, PairAugmentation


def params(flip: bool = False, angle: float = 0.0, scale: float = 1.0, n: int = 1) -> dict:
    return {
        "flip": torch.full((n,), flip),
        "angle_deg": torch.full((n,), angle),
        "translation_frac": torch.zeros(n, 2),
        "scale": torch.full((n,), scale),
    }


class TestPairAugmentation:
    def test_shape_dtype_and_repr(self) -> None:
        images = torch.rand(3, 2, 20, 24, dtype=torch.float64) * 2 - 1
        out = PairAugmentation()(images, generator=torch.Generator().manual_seed(0))
        assert out.shape == images.shape and out.dtype == torch.float64
        assert "scale_range=(0.55, 1.05)" in repr(PairAugmentation())

    @settings(max_examples=20, deadline=None)
    @given(seed=st.integers(0, 2**32 - 1), channels=st.integers(1, 3))
    def test_channels_move_alike(self, seed: int, channels: int) -> None:
        # Source and target of one pair get one transform: equal channels stay equal.
        image = torch.rand(2, 1, 18, 22, generator=torch.Generator().manual_seed(seed)) * 2 - 1
        stack = image.repeat(1, channels, 1, 1)
        out = PairAugmentation()(stack, generator=torch.Generator().manual_seed(seed))
        for c in range(1, channels):
            assert torch.equal(out[:, c], out[:, 0])

    def test_flip_only_is_exact_mirror(self) -> None:
        images = torch.rand(2, 2, 9, 13) * 2 - 1
        augment = PairAugmentation(rotation_deg=0, translation_frac=0, scale_range=(1, 1))
        flipped = augment(images, params=params(flip=True, n=2))
        assert torch.equal(flipped, images.flip(-1))
        assert torch.equal(augment(images, params=params(flip=False, n=2)), images)

    def test_probability_zero_and_unit_ranges_are_identity(self) -> None:
        images = torch.rand(4, 1, 16, 16) * 2 - 1
        augment = PairAugmentation(
            rotation_deg=0, translation_frac=0, scale_range=(1, 1), flip_probability=0
        )
        assert torch.equal(augment(images, generator=torch.Generator().manual_seed(3)), images)

    def test_zoom_out_moves_a_dot_towards_the_centre(self) -> None:
        # Scale 0.5 about the centre (10, 10): a dot 8 px right of it lands 4 px right of it.
        image = -torch.ones(1, 1, 21, 21)
        image[0, 0, 10, 18] = 1.0
        out = PairAugmentation()(image, params=params(scale=0.5))
        assert out[0, 0, 10, 14] > 0 and out[0, 0, 10, 18] == pytest.approx(-1.0)
        # flipped first, then zoomed: the dot ends up 4 px left of the centre
        out = PairAugmentation()(image, params=params(flip=True, scale=0.5))
        assert out[0, 0, 10, 6] > 0

    def test_affine_part_is_misalignments_transform(self) -> None:
        images = torch.rand(2, 2, 20, 18) * 2 - 1
        drawn = PairAugmentation().sample_params(2, torch.Generator().manual_seed(5))
        drawn["flip"] = torch.tensor([True, False])
        out = PairAugmentation()(images, params=drawn)
        affine = {k: v for k, v in drawn.items() if k != "flip"}
        flipped = torch.stack([images[0].flip(-1), images[1]])
        expected, _ = Misalignment(0)(flipped, params=affine)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)

    def test_matrices_are_the_whole_transform(self) -> None:
        augment = PairAugmentation()
        images = torch.rand(4, 2, 20, 18, dtype=torch.float64) * 2 - 1
        drawn = augment.sample_params(4, torch.Generator().manual_seed(6))
        drawn["flip"] = torch.tensor([True, False, True, False])
        matrices = augment.matrices(drawn, (20, 18))
        assert matrices.shape == (4, 2, 3)
        # one interpolation with the matrices = the flip (exact) then the affine interpolation
        torch.testing.assert_close(
            Misalignment.warp(images, matrices.double()),
            augment(images, params=drawn),
            rtol=0,
            atol=1e-5,
        )
        # the flip alone: x -> W - 1 - x
        mirror = augment.matrices(params(flip=True), (20, 18))[0]
        assert torch.equal(mirror, torch.tensor([[-1.0, 0.0, 17.0], [0.0, 1.0, 0.0]]))
        assert torch.equal(augment.matrices(params(), (20, 18))[0], torch.eye(2, 3))

    def test_matrices_bad_params(self) -> None:
        augment = PairAugmentation()
        bad = params(n=2)
        bad["flip"] = torch.ones(3, dtype=torch.bool)
        with pytest.raises(ValueError, match=r"params\['flip'\].*\(2,\)"):
            augment.matrices(bad, (8, 8))
        with pytest.raises(ValueError, match="keys"):
            augment.matrices({"flip": torch.ones(1, dtype=torch.bool)}, (8, 8))
        with pytest.raises(ValueError, match="size"):
            augment.matrices(params(), (8,))  # type: ignore[arg-type]

    @settings(max_examples=20, deadline=None)
    @given(seed=st.integers(0, 2**32 - 1))
    def test_params_within_ranges(self, seed: int) -> None:
        augment = PairAugmentation(
            rotation_deg=7, translation_frac=0.1, scale_range=(0.6, 0.9), flip_probability=0.3
        )
        drawn = augment.sample_params(256, torch.Generator().manual_seed(seed))
        assert drawn["flip"].dtype == torch.bool and drawn["flip"].shape == (256,)
        assert 0 < drawn["flip"].float().mean() < 0.6
        assert bool((drawn["angle_deg"].abs() <= 7 + 1e-5).all())
        assert bool((drawn["translation_frac"].abs() <= 0.1 + 1e-6).all())
        assert bool(((drawn["scale"] >= 0.6) & (drawn["scale"] <= 0.9)).all())

    def test_seeded(self) -> None:
        images = torch.rand(3, 1, 16, 16) * 2 - 1
        augment = PairAugmentation()
        first = augment(images, generator=torch.Generator().manual_seed(11))
        again = augment(images, generator=torch.Generator().manual_seed(11))
        other = augment(images, generator=torch.Generator().manual_seed(12))
        assert torch.equal(first, again) and not torch.equal(first, other)

    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            (dict(scale_range=(1.2, 0.8)), ValueError, "scale_range"),
            (dict(scale_range=(0, 1)), ValueError, "scale_range"),
            (dict(scale_range=1.0), TypeError, "scale_range"),
            (dict(flip_probability=1.5), ValueError, "flip_probability"),
            (dict(rotation_deg=-1), ValueError, "rotation_deg"),
            (dict(translation_frac=1.0), ValueError, "translation_frac"),
            (dict(rotation_deg=float("inf")), ValueError, "rotation_deg"),
            (dict(scale_range=(0.5, float("inf"))), ValueError, "scale_range"),
        ],
    )
    def test_bad_settings(self, kwargs: dict, error: type, match: str) -> None:
        with pytest.raises(error, match=match):
            PairAugmentation(**kwargs)

    def test_bad_input(self) -> None:
        augment = PairAugmentation()
        with pytest.raises(ValueError, match=r"images.*\(N, C, H, W\)"):
            augment(torch.zeros(1, 8, 8))
        with pytest.raises(TypeError, match="images"):
            augment(torch.zeros(1, 1, 8, 8, dtype=torch.int64))
        bad = params(n=2)
        del bad["flip"]
        with pytest.raises(ValueError, match="keys"):
            augment(torch.zeros(2, 1, 8, 8), params=bad)
        bad = params(n=2)
        bad["flip"] = torch.ones(3, dtype=torch.bool)
        with pytest.raises(ValueError, match=r"params\['flip'\].*\(2,\)"):
            augment(torch.zeros(2, 1, 8, 8), params=bad)
        with pytest.raises(ValueError, match="n must be"):
            augment.sample_params(-1)
