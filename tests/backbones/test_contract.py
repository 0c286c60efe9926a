"""What every backbone shares: harmonised option names, and adversarial terms summed over the
discriminator scales and heads (the rule of ``docs/backbones.md``)."""

from __future__ import annotations

import inspect

import pytest
import torch

from regcorrect.backbones import METHODS, CycleGAN, Pix2Pix
from regcorrect.backbones.munit import MUNITBackbone
from regcorrect.backbones.nicegan import NICEGANBackbone
from regcorrect.backbones.unit import UNITBackbone

#: The option names ``build_model(method, mode, **options)`` uses for every method that has them.
COMMON = {"adversarial_weight", "cycle_weight", "base_channels", "num_residual_blocks"}
SHARED_NAMES = COMMON | {
    "num_downsamplings",
    "discriminator_channels",
    "discriminator_layers",
    "discriminator_scales",
}
#: Upstream spellings that must not come back.
RETIRED = {
    "gan_w",
    "recon_x_w",
    "recon_kl_w",
    "recon_x_cyc_w",
    "recon_kl_cyc_w",
    "dim",
    "n_downsample",
    "n_res",
    "n_shared",
    "discriminator_dim",
    "n_layer",
    "num_scales",
    "num_downsampling",
    "residual_blocks",
}
#: Which of SHARED_NAMES each backbone accepts (NICE-GAN's encoder is fixed at two
#: downsamplings and lives in its discriminator, whose width is ``base_channels``).
ACCEPTED = {
    CycleGAN: SHARED_NAMES - {"discriminator_scales"},
    Pix2Pix: SHARED_NAMES - {"discriminator_scales", "cycle_weight"},
    MUNITBackbone: SHARED_NAMES,
    UNITBackbone: SHARED_NAMES,
    NICEGANBackbone: COMMON | {"discriminator_layers"},
}


def images(batch: int = 2, channels: int = 1, size: int = 32) -> torch.Tensor:
    return torch.rand(batch, channels, size, size) * 2 - 1


def lsgan_generator(prediction: torch.Tensor) -> torch.Tensor:
    return (prediction - 1).pow(2).mean()


def lsgan_discriminator(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((real - 1).pow(2).mean() + fake.pow(2).mean())


class TestOptionNames:
    @pytest.mark.parametrize("backbone", list(ACCEPTED), ids=lambda cls: cls.__name__)
    def test_keyword_only_and_harmonised(self, backbone: type) -> None:
        parameters = inspect.signature(backbone.__init__).parameters
        names = set(parameters) - {"self"}
        assert all(parameters[n].kind is inspect.Parameter.KEYWORD_ONLY for n in names)
        assert names & SHARED_NAMES == ACCEPTED[backbone]
        assert not names & RETIRED

    def test_every_method_is_covered(self) -> None:
        assert set(METHODS.values()) <= set(ACCEPTED)

    def test_unit_stores_the_new_names(self) -> None:
        model = UNITBackbone(
            base_channels=4,
            num_residual_blocks=1,
            discriminator_channels=4,
            discriminator_layers=2,
            adversarial_weight=2.0,
            reconstruction_weight=3.0,
            kl_weight=0.5,
            cycle_weight=4.0,
            cycle_kl_weight=0.25,
        )
        weights = (
            model.adversarial_weight,
            model.reconstruction_weight,
            model.kl_weight,
            model.cycle_weight,
            model.cycle_kl_weight,
        )
        assert weights == (2.0, 3.0, 0.5, 4.0, 0.25)


class TestSummedOverScales:
    def test_helpers_sum_and_check(self) -> None:
        backbone = CycleGAN(cyclic=False, base_channels=4, num_residual_blocks=0)
        real = [torch.full((1, 1, 4, 4), 1.0), torch.full((1, 1, 2, 2), 0.5)]
        fake = [torch.full((1, 1, 4, 4), 0.0), torch.full((1, 1, 2, 2), 1.0)]
        # generator: (0 - 1)^2 + (1 - 1)^2 = 1; a single tensor is one scale
        assert backbone.gan_generator_loss(fake).item() == pytest.approx(1.0)
        assert backbone.gan_generator_loss(fake[0]).item() == pytest.approx(1.0)
        # discriminator: 0.5 (0 + 0) + 0.5 (0.25 + 1) = 0.625
        assert backbone.gan_discriminator_loss(real, fake).item() == pytest.approx(0.625)
        with pytest.raises(ValueError, match="same number of scales"):
            backbone.gan_discriminator_loss(real, fake[:1])
        with pytest.raises(TypeError, match="non-empty list"):
            backbone.gan_generator_loss([])

    @pytest.mark.parametrize("cyclic", [True, False], ids=["C", "NC"])
    def test_munit(self, cyclic: bool) -> None:
        torch.manual_seed(0)
        model = MUNITBackbone(
            cyclic=cyclic,
            adversarial_weight=2.0,
            base_channels=4,
            style_dim=3,
            num_residual_blocks=1,
            mlp_channels=8,
            discriminator_channels=4,
            discriminator_layers=3,
            discriminator_scales=3,
        ).eval()
        source, target = images(), images()
        out = model.generator_forward(source, target)
        judge = model.target_discriminator
        with torch.no_grad():
            on_fake, on_real = judge(out.fakes["target"]), judge(target)
            assert len(on_fake) == 3
            generator_side = 2.0 * sum(lsgan_generator(p) for p in on_fake)
            discriminator_side = 2.0 * sum(
                lsgan_discriminator(r, f) for r, f in zip(on_real, on_fake, strict=True)
            )
            d_losses = model.discriminator_losses(source, target, out.fakes)
        torch.testing.assert_close(out.losses["adversarial_target"].detach(), generator_side)
        torch.testing.assert_close(d_losses["discriminator_target"], discriminator_side)

    def test_unit_discriminator_side(self) -> None:
        torch.manual_seed(0)
        model = UNITBackbone(
            cyclic=False,
            adversarial_weight=3.0,
            base_channels=4,
            num_residual_blocks=1,
            discriminator_channels=4,
            discriminator_layers=2,
            discriminator_scales=3,
        ).eval()
        source, target = images(), images()
        fake = model.generator_forward(source, target).fakes["target"]
        judge = model.discriminators()["discriminator_target"]
        with torch.no_grad():
            pairs = list(zip(judge(target), judge(fake), strict=True))
            assert len(pairs) == 3
            by_hand = 3.0 * sum(lsgan_discriminator(r, f) for r, f in pairs)
            losses = model.discriminator_losses(source, target, {"target": fake})
        torch.testing.assert_close(losses["adversarial_target"], by_hand)

    def test_nicegan_heads(self) -> None:
        torch.manual_seed(0)
        model = NICEGANBackbone(
            cyclic=False, base_channels=4, num_residual_blocks=1, discriminator_layers=5
        ).eval()  # eval: the spectral norms take no power-iteration step between the calls
        source, target = images(), images()
        out = model.generator_forward(source, target)
        with torch.no_grad():
            fake, real = (
                model.discriminator_target(out.fakes["target"]),
                model.discriminator_target(target),
            )
            patch = lsgan_generator(fake.local_logits) + lsgan_generator(fake.global_logits)
            d_patch = lsgan_discriminator(real.local_logits, fake.local_logits) + (
                lsgan_discriminator(real.global_logits, fake.global_logits)
            )
            d_cam = lsgan_discriminator(real.cam_logits, fake.cam_logits)
            d_losses = model.discriminator_losses(source, target, out.fakes)
        torch.testing.assert_close(out.losses["adversarial"].detach(), patch)
        torch.testing.assert_close(
            out.losses["adversarial_cam"].detach(), lsgan_generator(fake.cam_logits)
        )
        torch.testing.assert_close(d_losses["adversarial"], d_patch)
        torch.testing.assert_close(d_losses["adversarial_cam"], d_cam)
