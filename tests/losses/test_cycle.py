"""Tests of the cycle-consistency loss (Eq. 3 of the RegGAN paper)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from regcorrect.losses import CycleLoss, cycle_loss


class TestCycleLoss:
    def test_smoke(self):
        loss = cycle_loss(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8))
        assert loss.shape == () and loss.dtype == torch.float32 and loss > 0

    @pytest.mark.parametrize("shape", [(1, 1, 4, 4), (2, 3, 5, 7), (2, 1, 4, 5, 6)])
    def test_cardinality(self, shape):
        assert cycle_loss(torch.rand(shape), torch.rand(shape)).shape == ()

    def test_exception(self):
        image = torch.rand(1, 1, 4, 4)
        with pytest.raises(TypeError, match="reconstructed"):
            cycle_loss(image.numpy(), image)
        with pytest.raises(TypeError, match="original"):
            cycle_loss(image, image.long())
        with pytest.raises(ValueError, match=r"reconstructed and original.*\(1, 2, 4, 4\)"):
            cycle_loss(image, torch.rand(1, 2, 4, 4))

    def test_values(self):
        rng = np.random.default_rng(0)
        reconstructed, original = rng.uniform(-1, 1, (2, 3, 6, 5)), rng.uniform(-1, 1, (2, 3, 6, 5))
        expected = np.mean(np.abs(reconstructed - original))
        loss = cycle_loss(torch.from_numpy(reconstructed), torch.from_numpy(original))
        assert loss.dtype == torch.float64 and loss.item() == pytest.approx(expected, rel=1e-12)
        assert cycle_loss(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)).item() == 1.0
        same = torch.rand(1, 1, 5, 5)
        assert cycle_loss(same, same).item() == 0.0

    def test_bfloat16_gives_float32(self):
        a, b = torch.rand(1, 1, 8, 8).bfloat16(), torch.rand(1, 1, 8, 8).bfloat16()
        loss = cycle_loss(a, b)
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss, (a.float() - b.float()).abs().mean())

    def test_gradcheck(self):
        reconstructed = torch.rand(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
        original = reconstructed.detach() + 0.5
        assert torch.autograd.gradcheck(lambda r: cycle_loss(r, original), (reconstructed,))

    def test_module_equals_function(self):
        a, b = torch.rand(2, 1, 6, 6), torch.rand(2, 1, 6, 6)
        assert torch.equal(CycleLoss()(a, b), cycle_loss(a, b))
