import pytest
import torch
from torch.utils.data import DataLoader

from regcorrect.data import (
    AlignedPairs,
    MisalignedPairs,
    Misalignment,
    PairAugmentation,
    PairedSlices,
    compose_affine,
    icbm152,
)

KEYS = {"source", "target", "aligned_target", "mask", "index"}


def make_pairs(n: int = 6, size: int = 24) -> PairedSlices:
    generator = torch.Generator().manual_seed(0)
    source = -torch.ones(n, 1, size, size)
    source[..., 4:-4, 6:-6] = torch.rand(n, 1, size - 8, size - 12, generator=generator)
    target = -torch.ones_like(source)
    target[..., 4:-4, 6:-6] = -source[..., 4:-4, 6:-6] * 0.5
    return PairedSlices.from_tensors(source=source, target=target)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a
    )


class TestMisalignedPairs:
    def test_smoke(self) -> None:
        data = MisalignedPairs(make_pairs(), misalignment=Misalignment(3))
        item = data[2]
        assert KEYS <= item.keys() and item["index"] == 2 and len(data) == 6
        for key in ("source", "target", "aligned_target", "mask"):
            assert item[key].shape == (1, 24, 24)
        assert item["mask"].dtype == torch.bool and item["source_matrix"].shape == (2, 3)
        assert bool((item["source"] >= -1).all()) and bool((item["source"] <= 1).all())

    def test_reproducible_per_seed_epoch_index(self) -> None:
        pairs = make_pairs()
        first = MisalignedPairs(pairs, misalignment=Misalignment(4), seed=5, paired=False)
        second = MisalignedPairs(pairs, misalignment=Misalignment(4), seed=5, paired=False)
        first.set_epoch(3)
        second.set_epoch(3)
        forward = [first[i] for i in range(6)]
        backward = [second[i] for i in reversed(range(6))][::-1]  # other access order
        assert all(same(a, b) for a, b in zip(forward, backward, strict=True))
        first.set_epoch(4)
        assert not torch.equal(first[0]["source"], forward[0]["source"])
        first.set_epoch(3)
        assert same(first[0], forward[0])  # a resumed run sees the same samples
        other_seed = MisalignedPairs(pairs, misalignment=Misalignment(4), seed=6, paired=False)
        other_seed.set_epoch(3)
        assert not torch.equal(other_seed[0]["source"], forward[0]["source"])

    def test_source_and_target_noise_independent(self) -> None:
        data = MisalignedPairs(make_pairs(), misalignment=Misalignment(5))
        item = data[0]
        assert not torch.equal(item["source_matrix"], item["target_matrix"])
        assert not torch.equal(item["target"], item["aligned_target"])

    def test_aligned_target_follows_source(self) -> None:
        pairs = make_pairs()
        twins = PairedSlices.from_tensors(source=pairs.source, target=pairs.source.clone())
        data = MisalignedPairs(twins, misalignment=Misalignment(5))
        for i in range(3):
            item = data[i]
            assert torch.equal(item["aligned_target"], item["source"])

    def test_level_0_equals_aligned(self) -> None:
        pairs = make_pairs()
        noisy = MisalignedPairs(pairs, misalignment=Misalignment(0))
        clean = AlignedPairs(pairs)
        for i in range(len(pairs)):
            a, b = noisy[i], clean[i]
            assert all(torch.equal(a[k], b[k]) for k in KEYS - {"index"})

    def test_unpaired(self) -> None:
        pairs = make_pairs()
        data = MisalignedPairs(pairs, misalignment=Misalignment(0), paired=False, seed=1)
        partners = []
        for i in range(len(pairs)):
            item = data[i]
            assert item["target_index"] != i
            assert torch.equal(item["target"], pairs.target[item["target_index"]])
            assert torch.equal(item["aligned_target"], pairs.target[i])
            partners.append(item["target_index"])
        assert len(set(partners)) > 1

    def test_warp_source_false(self) -> None:
        pairs = make_pairs()
        item = MisalignedPairs(pairs, misalignment=Misalignment(5), warp_source=False)[1]
        assert torch.equal(item["source"], pairs.source[1])
        assert torch.equal(item["mask"], pairs.mask[1])
        assert not torch.equal(item["target"], pairs.target[1])

    def test_augmentation_moves_the_pair_alike(self) -> None:
        pairs = make_pairs()
        augment = PairAugmentation()
        plain = MisalignedPairs(pairs, misalignment=Misalignment(0), seed=2)
        data = MisalignedPairs(pairs, misalignment=Misalignment(0), seed=2, augmentation=augment)
        for i in range(3):
            item, reference = data[i], plain[i]
            # the augmentation draws after the noise, from the item's generator
            generator = data.generator(i)
            for _ in range(2):
                Misalignment(0).sample_params(1, generator)
            drawn = augment.sample_params(1, generator)
            stack = torch.cat([pairs.source[i], pairs.target[i]]).unsqueeze(0)
            expected = augment(stack, params=drawn)[0]
            torch.testing.assert_close(item["source"], expected[:1], rtol=0, atol=1e-4)
            torch.testing.assert_close(item["target"], expected[1:], rtol=0, atol=1e-4)
            assert torch.equal(item["aligned_target"], item["target"])  # still aligned
            assert not torch.equal(item["source"], reference["source"])
        # with noise the matrices (the misalignment) are those of the plain dataset
        noisy = MisalignedPairs(pairs, misalignment=Misalignment(4), seed=2, augmentation=augment)
        plain = MisalignedPairs(pairs, misalignment=Misalignment(4), seed=2)
        assert torch.equal(noisy[1]["target_matrix"], plain[1]["target_matrix"])
        assert torch.equal(noisy[1]["source_matrix"], plain[1]["source_matrix"])

    def test_augmentation_and_noise_are_one_interpolation(self) -> None:
        pairs = make_pairs()
        augment = PairAugmentation()
        data = MisalignedPairs(pairs, misalignment=Misalignment(5), seed=3, augmentation=augment)
        item = data[2]
        generator = data.generator(2)
        for _ in range(2):
            Misalignment(5).sample_params(1, generator)
        drawn = augment.sample_params(1, generator)
        joint = augment.matrices(drawn, pairs.source.shape[-2:])
        for key, matrix_key, slice_ in (
            ("target", "target_matrix", pairs.target[2]),
            ("aligned_target", "source_matrix", pairs.target[2]),
            ("source", "source_matrix", pairs.source[2]),
        ):
            applied = compose_affine(item[matrix_key][None], joint)
            expected = Misalignment.warp(slice_[None], applied)[0]
            assert torch.equal(item[key], expected), key
            # not the augmentation's interpolation followed by the noise's
            twice = Misalignment.warp(augment(slice_[None], params=drawn), item[matrix_key][None])
            assert not torch.allclose(item[key], twice[0], atol=1e-3)

    def test_dataloader_on_icbm152(self) -> None:
        data = MisalignedPairs(icbm152("test", spacing=4.0), misalignment=Misalignment(2))
        batch = next(iter(DataLoader(data, batch_size=4)))
        assert batch["source"].shape == (4, 1, 57, 48) and batch["index"].tolist() == [0, 1, 2, 3]
        assert bool((batch["source"][~batch["mask"]] <= 0).all())  # background stays dark

    def test_exception(self) -> None:
        pairs = make_pairs()
        with pytest.raises(TypeError, match="pairs"):
            MisalignedPairs(pairs.source, misalignment=Misalignment(1))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="misalignment"):
            MisalignedPairs(pairs, misalignment=3)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unpaired"):
            MisalignedPairs(pairs[0], misalignment=Misalignment(1), paired=False)
        with pytest.raises(ValueError, match="seed"):
            MisalignedPairs(pairs, misalignment=Misalignment(1), seed=-1)
        with pytest.raises(TypeError, match="augmentation must be a PairAugmentation"):
            MisalignedPairs(pairs, misalignment=Misalignment(1), augmentation={"flip": 1})  # type: ignore[arg-type]
        data = MisalignedPairs(pairs, misalignment=Misalignment(1))
        with pytest.raises(ValueError, match="epoch"):
            data.set_epoch(-1)
        with pytest.raises(IndexError):
            data[6]


class TestAlignedPairs:
    def test_values(self) -> None:
        pairs = make_pairs()
        item = AlignedPairs(pairs)[-1]
        assert item["index"] == 5 and set(item) == KEYS
        assert torch.equal(item["source"], pairs.source[5])
        assert torch.equal(item["target"], item["aligned_target"])
