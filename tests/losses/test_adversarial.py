"""Tests of the adversarial losses (Eq. 1 / Eq. 9): LSGAN, vanilla (BCE on logits), hinge."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from regcorrect.losses import GAN_MODES, GANLoss, discriminator_loss, generator_loss

REAL = torch.tensor([[[[0.5, 2.0], [1.0, -1.0]]]])  # D(y)
FAKE = torch.tensor([[[[0.0, -0.5], [0.25, 3.0]]]])  # D(G(x))


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


class TestGeneratorLoss:
    def test_smoke(self):
        for mode in GAN_MODES:
            loss = generator_loss(torch.rand(2, 1, 4, 4), mode)
            assert loss.shape == () and loss.dtype == torch.float32

    @pytest.mark.parametrize("shape", [(1,), (2, 1), (2, 1, 6, 6), (3, 1, 4, 5, 6)])
    @pytest.mark.parametrize("mode", GAN_MODES)
    def test_cardinality(self, shape, mode):
        assert generator_loss(torch.randn(shape), mode).shape == ()
        assert generator_loss([torch.randn(shape), torch.randn(shape)], mode).shape == ()

    def test_exception(self):
        with pytest.raises(ValueError, match="mode"):
            generator_loss(FAKE, "wgan")
        with pytest.raises(TypeError, match="fake_prediction"):
            generator_loss([], "lsgan")
        with pytest.raises(TypeError, match="fake_prediction"):
            generator_loss(FAKE.numpy())
        with pytest.raises(TypeError, match=r"fake_prediction\[1\]"):
            generator_loss([FAKE, torch.ones(2, dtype=torch.int64)])

    def test_values(self):
        values = FAKE.flatten().tolist()
        lsgan = sum((v - 1) ** 2 for v in values) / 4  # (1 + 2.25 + 0.5625 + 4) / 4
        assert generator_loss(FAKE, "lsgan").item() == pytest.approx(1.953125)
        assert lsgan == pytest.approx(1.953125)
        vanilla = sum(softplus(-v) for v in values) / 4  # -log(sigmoid(v)), non-saturating
        assert generator_loss(FAKE, "vanilla").item() == pytest.approx(vanilla, rel=1e-6)
        assert generator_loss(FAKE, "hinge").item() == pytest.approx(-0.6875)  # -mean

    def test_vanilla_equals_bce_with_logits(self):
        prediction = torch.randn(3, 1, 7, 7) * 3
        expected = F.binary_cross_entropy_with_logits(prediction, torch.ones_like(prediction))
        torch.testing.assert_close(generator_loss(prediction, "vanilla"), expected)

    @pytest.mark.parametrize("mode", GAN_MODES)
    def test_list_is_mean_over_scales(self, mode):
        scales = [torch.randn(2, 1, 8, 8), torch.randn(2, 1, 4, 4), torch.randn(2, 1, 2, 2)]
        expected = sum(generator_loss(s, mode) for s in scales) / 3
        torch.testing.assert_close(generator_loss(scales, mode), expected)
        torch.testing.assert_close(generator_loss(tuple(scales), mode), expected)
        # not the mean over all pooled pixels (which would weight the large scale more)
        pooled = generator_loss(torch.cat([s.flatten() for s in scales]), mode)
        assert not torch.allclose(generator_loss(scales, mode), pooled)

    def test_bfloat16_gives_float32(self):
        prediction = torch.randn(2, 1, 4, 4).bfloat16()
        for mode in GAN_MODES:
            loss = generator_loss(prediction, mode)
            assert loss.dtype == torch.float32
            torch.testing.assert_close(loss, generator_loss(prediction.float(), mode))

    @pytest.mark.parametrize("mode", GAN_MODES)
    def test_gradcheck(self, mode):
        prediction = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda p: generator_loss(p, mode), (prediction,))


class TestDiscriminatorLoss:
    def test_smoke(self):
        loss = discriminator_loss(torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4))
        assert loss.shape == () and loss.dtype == torch.float32

    @pytest.mark.parametrize("shape", [(1,), (2, 1, 6, 6), (3, 1, 4, 5, 6)])
    @pytest.mark.parametrize("mode", GAN_MODES)
    def test_cardinality(self, shape, mode):
        assert discriminator_loss(torch.randn(shape), torch.randn(shape), mode).shape == ()

    def test_exception(self):
        with pytest.raises(ValueError, match="mode"):
            discriminator_loss(REAL, FAKE, "least-squares")
        with pytest.raises(ValueError, match="same number of scales, got 2 and 1"):
            discriminator_loss([REAL, REAL], [FAKE])
        with pytest.raises(TypeError, match="real_prediction"):
            discriminator_loss((), FAKE)
        with pytest.raises(TypeError, match="fake_prediction"):
            discriminator_loss(REAL, None)

    def test_values(self):
        real, fake = REAL.flatten().tolist(), FAKE.flatten().tolist()
        # lsgan: 0.5 * (mean((D(y) - 1)^2) + mean(D(G(x))^2))
        lsgan = 0.5 * (sum((v - 1) ** 2 for v in real) / 4 + sum(v**2 for v in fake) / 4)
        assert lsgan == pytest.approx(0.5 * ((0.25 + 1 + 0 + 4) / 4 + (0 + 0.25 + 0.0625 + 9) / 4))
        assert discriminator_loss(REAL, FAKE, "lsgan").item() == pytest.approx(lsgan)
        # vanilla: -log(sigmoid(r)) = softplus(-r); -log(1 - sigmoid(f)) = softplus(f)
        vanilla = 0.5 * (sum(softplus(-v) for v in real) / 4 + sum(softplus(v) for v in fake) / 4)
        assert discriminator_loss(REAL, FAKE, "vanilla").item() == pytest.approx(vanilla, rel=1e-6)
        # hinge: relu(1 - r): 0.5, 0, 0, 2 -> 0.625; relu(1 + f): 1, 0.5, 1.25, 4 -> 1.6875
        assert discriminator_loss(REAL, FAKE, "hinge").item() == pytest.approx(
            0.5 * (0.625 + 1.6875)
        )

    def test_vanilla_equals_bce_with_logits(self):
        real, fake = torch.randn(2, 1, 6, 6) * 2, torch.randn(2, 1, 6, 6) * 2
        expected = 0.5 * (
            F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        )
        torch.testing.assert_close(discriminator_loss(real, fake, "vanilla"), expected)

    def test_perfect_discriminator(self):
        assert discriminator_loss(torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)).item() == 0.0
        hinge = discriminator_loss(torch.full((3,), 2.0), torch.full((3,), -1.5), "hinge")
        assert hinge.item() == 0.0

    @pytest.mark.parametrize("mode", GAN_MODES)
    def test_list_is_mean_over_scales(self, mode):
        real = [torch.randn(2, 1, 8, 8), torch.randn(2, 1, 4, 4)]
        fake = [torch.randn(2, 1, 8, 8), torch.randn(2, 1, 4, 4)]
        per_scale = [discriminator_loss(r, f, mode) for r, f in zip(real, fake, strict=True)]
        torch.testing.assert_close(discriminator_loss(real, fake, mode), sum(per_scale) / 2)

    @pytest.mark.parametrize("mode", GAN_MODES)
    def test_gradcheck(self, mode):
        real = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
        fake = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda r, f: discriminator_loss(r, f, mode), (real, fake))


class TestGANLoss:
    def test_smoke(self):
        gan = GANLoss()
        assert gan.mode == "lsgan" and "lsgan" in repr(gan)
        assert gan(torch.ones(2, 1, 4, 4), True).item() == 0.0

    @pytest.mark.parametrize("mode", GAN_MODES)
    def test_module_forms_equal_functions(self, mode):
        gan = GANLoss(mode)
        real, fake = torch.randn(2, 1, 5, 5), torch.randn(2, 1, 5, 5)
        assert torch.equal(gan.generator(fake), generator_loss(fake, mode))
        assert torch.equal(gan.discriminator(real, fake), discriminator_loss(real, fake, mode))
        multi = [fake, fake[:, :, :2, :2]]
        assert torch.equal(gan.generator(multi), generator_loss(multi, mode))
        # forward: the discriminator-side loss against one label; real + fake halves = D loss
        torch.testing.assert_close(
            0.5 * (gan(real, True) + gan(fake, False)), discriminator_loss(real, fake, mode)
        )

    def test_forward_values(self):
        assert GANLoss("lsgan")(FAKE, True).item() == pytest.approx(1.953125)
        assert GANLoss("lsgan")(FAKE, False).item() == pytest.approx((0.25 + 0.0625 + 9) / 4)
        assert GANLoss("hinge")(FAKE, False).item() == pytest.approx(1.6875)
        assert GANLoss("hinge")(REAL, True).item() == pytest.approx(0.625)
        expected = F.binary_cross_entropy_with_logits(FAKE, torch.zeros_like(FAKE))
        torch.testing.assert_close(GANLoss("vanilla")(FAKE, False), expected)

    def test_exception(self):
        with pytest.raises(ValueError, match="mode"):
            GANLoss("wgan-gp")
        for target_is_real in ("real", 1):  # 1 == True, but no bool
            with pytest.raises(ValueError, match="target_is_real"):
                GANLoss()(FAKE, target_is_real)
        with pytest.raises(TypeError, match="prediction"):
            GANLoss()([], True)


def test_target_flags_from_numpy_and_tensors():
    expected = GANLoss()(FAKE, True)
    for flag in (np.True_, torch.tensor(True)):
        assert torch.equal(GANLoss()(FAKE, flag), expected)


def test_discriminator_loss_refuses_mixed_devices():
    with pytest.raises(
        ValueError, match="real_prediction\\[0\\] on cpu, fake_prediction\\[0\\] on meta"
    ):
        discriminator_loss(torch.rand(1, 1, 3, 3), torch.rand(1, 1, 3, 3, device="meta"))
