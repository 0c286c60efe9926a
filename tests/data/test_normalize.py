import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from regcorrect.data import normalize_intensity


class TestNormalizeIntensity:
    def test_smoke(self) -> None:
        image = torch.tensor([[0.0, 10.0], [20.0, 30.0]])
        out = normalize_intensity(image)
        assert torch.equal(out, torch.tensor([[-1.0, -1.0], [0.0, 1.0]]))

    @settings(max_examples=40, deadline=None)
    @given(
        image=arrays(
            np.float32,
            (3, 5, 7),
            elements=st.floats(-1e3, 1e3, width=32) | st.just(0.0),
        ),
        method=st.sampled_from(["minmax", "percentile"]),
    )
    def test_range_and_background(self, image: np.ndarray, method: str) -> None:
        x = torch.from_numpy(image)
        out = normalize_intensity(x, method=method)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert bool((out >= -1).all()) and bool((out <= 1).all())
        assert bool((out[x == 0] == -1).all())

    def test_minmax_spans_range(self) -> None:
        x = torch.tensor([0.0, 5.0, 6.0, 9.0, 0.0])
        out = normalize_intensity(x, method="minmax")
        assert torch.allclose(out, torch.tensor([-1.0, -1.0, -1.0 + 2 / 4, 1.0, -1.0]))

    def test_percentile_matches_numpy_and_clips(self) -> None:
        generator = torch.Generator().manual_seed(0)
        x = torch.rand(1000, generator=generator) + 1.0
        x[0] = 1e4  # a hot voxel
        out = normalize_intensity(x, method="percentile", percentiles=(2.0, 98.0))
        low, high = np.percentile(x.numpy(), [2.0, 98.0])
        expected = np.clip((x.numpy() - low) / (high - low), 0, 1) * 2 - 1
        np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
        assert out[0] == 1.0

    def test_mask_sets_background(self) -> None:
        x = torch.arange(1.0, 7.0).reshape(2, 3)
        mask = torch.tensor([[True, True, False], [False, True, True]])
        out = normalize_intensity(x, mask=mask)
        assert bool((out[~mask] == -1).all())
        assert out[mask].min() == -1 and out[mask].max() == 1

    def test_per_sample(self) -> None:
        x = torch.stack([torch.linspace(1, 2, 16), torch.linspace(10, 50, 16)]).reshape(2, 1, 4, 4)
        out = normalize_intensity(x, per_sample=True)
        for row in out:
            assert row.min() == -1 and row.max() == 1
        whole = normalize_intensity(x)
        assert whole[0].max() < -0.9  # one bound over the batch squeezes the first sample

    def test_constant_foreground_and_empty(self) -> None:
        x = torch.tensor([0.0, 3.0, 3.0])
        assert torch.equal(normalize_intensity(x), torch.tensor([-1.0, 1.0, 1.0]))
        assert torch.equal(normalize_intensity(torch.zeros(4)), -torch.ones(4))

    def test_exception(self) -> None:
        x = torch.rand(4, 4)
        with pytest.raises(TypeError, match="image"):
            normalize_intensity(torch.ones(3, dtype=torch.int64))
        with pytest.raises(ValueError, match="method"):
            normalize_intensity(x, method="zscore")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="percentiles"):
            normalize_intensity(x, method="percentile", percentiles=(99.0, 1.0))
        with pytest.raises(ValueError, match="mask"):
            normalize_intensity(x, mask=torch.ones(3, 3, dtype=torch.bool))
        with pytest.raises(TypeError, match="mask"):
            normalize_intensity(x, mask=torch.ones(4, 4))
        with pytest.raises(ValueError, match="finite"):
            normalize_intensity(torch.tensor([1.0, float("nan")]))


def test_empty_batch_and_bad_percentiles():
    assert normalize_intensity(torch.zeros(0, 3), per_sample=True).shape == (0, 3)
    with pytest.raises(ValueError, match="percentiles must be a pair"):
        normalize_intensity(torch.rand(4, 4), method="percentile", percentiles=("a", "b"))
