from importlib import resources

import pytest
import torch

from regcorrect.data import PairedSlices, icbm152


@pytest.fixture(scope="module")
def splits() -> dict[str, PairedSlices]:
    return {split: icbm152(split) for split in ("train", "test", "all")}


class TestIcbm152:
    def test_bundled_files(self) -> None:
        folder = resources.files("regcorrect.data")
        npz = folder.joinpath("icbm152.npz")
        assert npz.is_file()
        assert len(npz.read_bytes()) < 10_000_000
        assert "Louis Collins" in folder.joinpath("COPYING.icbm152.txt").read_text()

    def test_cardinality(self, splits: dict[str, PairedSlices]) -> None:
        assert [len(splits[s]) for s in ("train", "test", "all")] == [110, 27, 137]
        pairs = splits["all"]
        assert pairs.source.shape == (137, 1, 229, 193)
        assert pairs.source.dtype == pairs.target.dtype == torch.float32
        assert pairs.mask.dtype == torch.bool and pairs.mask.shape == pairs.source.shape
        assert pairs.spacing == (1.0, 1.0)

    def test_values(self, splits: dict[str, PairedSlices]) -> None:
        pairs = splits["all"]
        for image in (pairs.source, pairs.target):
            assert image.min() == -1 and image.max() == 1
            assert bool((image[~pairs.mask] == -1).all())
            assert bool((image[pairs.mask] > -1).all())
        # every stored slice has more than 5 % brain
        assert bool((pairs.mask.float().mean(dim=(1, 2, 3)) > 0.05).all())

    def test_splits(self, splits: dict[str, PairedSlices]) -> None:
        train = set(splits["train"].slice_index.tolist())
        test = set(splits["test"].slice_index.tolist())
        assert not train & test
        assert train | test == set(splits["all"].slice_index.tolist())
        # the test slab is the contiguous block of the most superior slices
        assert min(test) > max(train)
        assert sorted(test) == list(range(min(test), max(test) + 1))
        assert torch.equal(splits["test"].source, splits["all"].source[110:])

    def test_orientation(self, splits: dict[str, PairedSlices]) -> None:
        # An inferior slice holds cerebellum and brainstem: posterior, so in the lower half.
        pairs = splits["all"]
        inferior = pairs.mask[int((pairs.slice_index == 30).nonzero())][0].float()
        rows = torch.arange(inferior.shape[0], dtype=torch.float32)
        centroid = (inferior.sum(dim=1) * rows).sum() / inferior.sum()
        assert centroid > inferior.shape[0] / 2
        # the template is left-right symmetric: columns mirror
        middle = pairs.mask[68, 0]
        assert (middle != middle.flip(-1)).float().mean() < 0.02

    def test_spacing_and_size(self, splits: dict[str, PairedSlices]) -> None:
        half = icbm152("test", spacing=2.0)
        assert half.source.shape == (27, 1, 115, 97)
        assert half.spacing == pytest.approx((229 / 115, 193 / 97))
        assert bool((half.source[~half.mask] == -1).all())
        assert half.source.min() >= -1 and half.source.max() <= 1
        padded = icbm152("test", size=256)
        assert padded.source.shape == (27, 1, 256, 256)
        top, left = (256 - 229) // 2, (256 - 193) // 2
        assert torch.equal(
            padded.source[..., top : top + 229, left : left + 193], splits["test"].source
        )
        assert not bool(padded.mask[..., :top, :].any())
        cropped = icbm152("test", size=(200, 180))
        assert cropped.source.shape == (27, 1, 200, 180)
        assert icbm152("test", spacing=2.0, size=(128, 96)).source.shape == (27, 1, 128, 96)

    def test_exception(self) -> None:
        with pytest.raises(ValueError, match="split"):
            icbm152("val")
        with pytest.raises(ValueError, match="spacing"):
            icbm152(spacing=0.0)
        with pytest.raises(ValueError, match="size"):
            icbm152(size=(0, 4))
