"""Tests of the correction loss (Eq. 7 of the RegGAN paper) against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from regcorrect.losses import CorrectionLoss, correction_loss


class TestCorrectionLoss:
    def test_smoke(self):
        loss = correction_loss(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8))
        assert loss.shape == () and loss.dtype == torch.float32 and loss >= 0

    def test_device_errors(self):
        image, elsewhere = torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8, device="meta")
        with pytest.raises(ValueError, match="registered on cpu, target on meta"):
            correction_loss(image, elsewhere)
        with pytest.raises(ValueError, match="target on cpu, mask on meta"):
            correction_loss(image, image, torch.ones(1, 1, 8, 8, device="meta"))

    @pytest.mark.parametrize(
        "shape", [(1, 1, 4, 4), (2, 3, 5, 7), (3, 1, 9, 4), (2, 2, 4, 5, 6), (1, 1, 3, 3, 3)]
    )
    def test_cardinality(self, shape):
        registered, target = torch.rand(shape), torch.rand(shape)
        assert correction_loss(registered, target).shape == ()
        mask = torch.rand(shape[0], 1, *shape[2:])
        assert correction_loss(registered, target, mask).shape == ()

    def test_exception(self):
        image = torch.rand(1, 1, 4, 4)
        with pytest.raises(TypeError, match="registered"):
            correction_loss(image.numpy(), image)
        with pytest.raises(TypeError, match="target"):
            correction_loss(image, torch.ones(1, 1, 4, 4, dtype=torch.int64))
        with pytest.raises(ValueError, match=r"registered and target.*\(1, 1, 4, 5\)"):
            correction_loss(image, torch.rand(1, 1, 4, 5))
        with pytest.raises(ValueError, match="mask must have the rank"):
            correction_loss(image, image, torch.ones(4, 4))
        with pytest.raises(ValueError, match="mask of shape"):
            correction_loss(image, image, torch.ones(1, 1, 3, 4))
        with pytest.raises(TypeError, match="mask"):
            correction_loss(image, image, [[1.0]])

    @given(
        batch=st.integers(1, 3),
        channels=st.integers(1, 3),
        height=st.integers(1, 7),
        width=st.integers(1, 7),
        seed=st.integers(0, 2**16),
    )
    def test_values(self, batch, channels, height, width, seed):
        rng = np.random.default_rng(seed)
        registered = rng.uniform(-1, 1, (batch, channels, height, width))
        target = rng.uniform(-1, 1, (batch, channels, height, width))
        expected = np.mean(np.abs(target - registered))
        loss = correction_loss(torch.from_numpy(registered), torch.from_numpy(target))
        assert loss.item() == pytest.approx(expected, rel=1e-12)

    def test_hand_value(self):
        registered = torch.tensor([[[[0.0, 1.0], [2.0, -1.0]]]])
        target = torch.tensor([[[[0.5, 1.0], [0.0, 1.0]]]])
        # |d| = 0.5, 0, 2, 2 -> mean 1.125
        assert correction_loss(registered, target).item() == pytest.approx(1.125)

    @pytest.mark.parametrize("channels", [1, 3])
    def test_mask_weighting(self, channels):
        rng = np.random.default_rng(1)
        registered = rng.uniform(-1, 1, (2, channels, 6, 5))
        target = rng.uniform(-1, 1, (2, channels, 6, 5))
        mask = rng.uniform(0, 1, (2, 1, 6, 5))
        weights = np.broadcast_to(mask, registered.shape)  # weighted mean over the broadcast shape
        expected = np.sum(weights * np.abs(registered - target)) / np.sum(weights)
        loss = correction_loss(
            torch.from_numpy(registered), torch.from_numpy(target), torch.from_numpy(mask)
        )
        assert loss.item() == pytest.approx(expected, rel=1e-12)

    def test_boolean_mask_ignores_masked_pixels(self):
        registered, target = torch.rand(2, 1, 6, 6), torch.rand(2, 1, 6, 6)
        mask = torch.zeros(2, 1, 6, 6, dtype=torch.bool)
        mask[:, :, 1:4, 2:5] = True
        expected = (registered - target).abs()[mask].mean()
        torch.testing.assert_close(correction_loss(registered, target, mask), expected)
        changed = registered.clone()
        changed[~mask] = 100.0  # outside the mask: no effect
        torch.testing.assert_close(correction_loss(changed, target, mask), expected)
        ones = torch.ones(2, 1, 6, 6)
        torch.testing.assert_close(
            correction_loss(registered, target, ones), correction_loss(registered, target)
        )

    def test_bfloat16_inputs_give_float32(self):
        registered = torch.rand(2, 1, 8, 8).bfloat16()
        target = torch.rand(2, 1, 8, 8).bfloat16()
        loss = correction_loss(registered, target)
        assert loss.dtype == torch.float32
        # computed in float32 from the bf16 values (not rounded to bf16 on the way)
        expected = np.mean(np.abs(registered.float().numpy() - target.float().numpy()))
        assert loss.item() == pytest.approx(float(expected), rel=1e-6)
        mask = torch.rand(2, 1, 8, 8).bfloat16()
        assert correction_loss(registered, target, mask).dtype == torch.float32

    def test_float64_is_not_downcast(self):
        registered = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
        target = torch.full((1, 1, 2, 2), 1e-10, dtype=torch.float64) + 1.0
        loss = correction_loss(registered, target)
        assert loss.dtype == torch.float64 and loss.item() == 1.0 + 1e-10

    def test_gradcheck(self):
        registered = torch.rand(2, 2, 5, 4, dtype=torch.float64, requires_grad=True)
        target = (
            registered.detach() + torch.where(torch.rand(2, 2, 5, 4) > 0.5, 0.5, -0.5).double()
        )  # |difference| far from the kink of |.|
        mask = torch.rand(2, 1, 5, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda r: correction_loss(r, target), (registered,))
        assert torch.autograd.gradcheck(
            lambda r, m: correction_loss(r, target, m), (registered, mask)
        )

    def test_module_equals_function(self):
        registered, target = torch.rand(2, 1, 6, 7), torch.rand(2, 1, 6, 7)
        mask = torch.rand(2, 1, 6, 7) > 0.3
        module = CorrectionLoss()
        assert torch.equal(module(registered, target), correction_loss(registered, target))
        assert torch.equal(
            module(registered, target, mask), correction_loss(registered, target, mask)
        )
