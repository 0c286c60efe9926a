import numpy as np
import pytest
import torch

from regcorrect.data import PairedSlices, pad_or_crop_pairs, resample_pairs


def make_pairs(n: int = 4, size: tuple[int, int] = (10, 12)) -> PairedSlices:
    source = -torch.ones(n, 1, *size)
    source[:, :, 3:7, 4:9] = torch.linspace(0, 1, n).view(n, 1, 1, 1)
    return PairedSlices.from_tensors(source=source, target=(source + 1) * 0.5 - 1)


class TestPairedSlices:
    def test_from_tensors(self) -> None:
        pairs = make_pairs()
        assert len(pairs) == 4 and pairs.image_size == (10, 12)
        assert int(pairs.mask.sum()) == 4 * 4 * 5
        assert torch.equal(pairs.slice_index, torch.arange(4))

    def test_indexing_keeps_rank(self) -> None:
        pairs = PairedSlices(**{**make_pairs().__dict__, "names": ("a", "b", "c", "d")})
        assert pairs[2].source.shape == (1, 1, 10, 12) and pairs[2].names == ("c",)
        assert pairs[-1].names == ("d",)
        assert pairs[1:3].names == ("b", "c")
        picked = pairs[[3, 0]]
        assert picked.names == ("d", "a") and torch.equal(picked.slice_index, torch.tensor([3, 0]))
        with pytest.raises(IndexError):
            pairs[4]

    def test_exception(self) -> None:
        pairs = make_pairs()
        with pytest.raises(ValueError, match="target"):
            PairedSlices.from_tensors(source=pairs.source, target=pairs.target[:, :, :5])
        with pytest.raises(ValueError, match="source"):
            PairedSlices.from_tensors(source=torch.zeros(2, 10, 12), target=torch.zeros(2, 10, 12))
        with pytest.raises(TypeError, match="mask"):
            PairedSlices(pairs.source, pairs.target, pairs.mask.float(), pairs.slice_index)
        with pytest.raises(ValueError, match="names"):
            PairedSlices(pairs.source, pairs.target, pairs.mask, pairs.slice_index, names=("a",))


class TestGridChanges:
    def test_pad_then_crop_is_identity(self) -> None:
        pairs = make_pairs()
        padded = pad_or_crop_pairs(pairs, size=(15, 17))
        assert padded.source.shape == (4, 1, 15, 17)
        assert bool((padded.source[~padded.mask] == -1).all())
        back = pad_or_crop_pairs(padded, size=(10, 12))
        assert torch.equal(back.source, pairs.source) and torch.equal(back.mask, pairs.mask)

    def test_resample(self) -> None:
        pairs = make_pairs(size=(20, 24))
        half = resample_pairs(pairs, factor=2.0)
        assert half.source.shape == (4, 1, 10, 12) and half.spacing == (2.0, 2.0)
        assert bool((half.source[~half.mask] == -1).all())
        assert resample_pairs(pairs, factor=1.0) is pairs
        with pytest.raises(ValueError, match="factor"):
            resample_pairs(pairs, factor=-1.0)
        with pytest.raises(TypeError, match="factor must be a number or a pair"):
            resample_pairs(pairs, factor=(1.0, 2.0, 3.0))

    def test_resample_per_axis(self) -> None:
        pairs = make_pairs(size=(20, 24))
        anisotropic = resample_pairs(pairs, factor=(2.0, 0.5))
        assert anisotropic.source.shape == (4, 1, 10, 48) and anisotropic.spacing == (2.0, 0.5)
        assert resample_pairs(pairs, factor=(1.0, 1.0)) is pairs
        with pytest.raises(ValueError, match="size"):
            pad_or_crop_pairs(pairs, size=(3,))  # type: ignore[arg-type]


def test_zero_dim_indices_and_type_errors() -> None:
    pairs = make_pairs()
    for key in (np.int64(1), torch.tensor(1)):
        assert torch.equal(pairs[key].source, pairs[1].source)
    with pytest.raises(TypeError, match="pairs must be a PairedSlices .*got Tensor"):
        pad_or_crop_pairs(torch.zeros(1, 1, 4, 4), size=4)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pairs must be a PairedSlices"):
        resample_pairs(torch.zeros(1, 1, 4, 4), factor=2.0)  # type: ignore[arg-type]


def test_boolean_indices_pick_the_true_slices() -> None:
    pairs = make_pairs()
    picked = pairs[torch.tensor([False, True, False, True])]
    assert torch.equal(picked.source, pairs.source[[1, 3]])  # was slices 0, 1, 0, 1
    assert torch.equal(pairs[[True, False, False, True]].source, pairs.source[[0, 3]])
    with pytest.raises(IndexError, match=r"boolean index must have shape \(4,\)"):
        pairs[torch.tensor([True, False])]
    with pytest.raises(IndexError, match="integers or booleans"):
        pairs[torch.tensor([0.5])]
    with pytest.raises(ValueError, match="spacing must be a pair"):
        PairedSlices.from_tensors(source=pairs.source, target=pairs.target).__class__(
            **{**pairs.__dict__, "spacing": "ab"}
        )


def test_empty_indices_and_array_spacing() -> None:
    pairs = make_pairs()
    for key in ([], np.array([], dtype=np.int64), np.array([])):
        assert len(pairs[key]) == 0
    spaced = PairedSlices.from_tensors(source=pairs.source, target=pairs.target)
    spaced = type(spaced)(**{**spaced.__dict__, "spacing": np.array([1.5, 2.0])})
    assert spaced.spacing == (1.5, 2.0) and type(spaced.spacing[0]) is float


def test_tensors_on_different_devices_are_refused() -> None:
    pairs = make_pairs()
    with pytest.raises(ValueError, match="target on meta"):
        PairedSlices(
            source=pairs.source,
            target=pairs.target.to("meta"),
            mask=pairs.mask,
            slice_index=pairs.slice_index,
        )
