"""Tests of the UNIT backbone (modes C and NC) with tiny networks at 32×32."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from regcorrect.backbones.base import GeneratorOutput, TranslationBackbone
from regcorrect.backbones.unit import SharedLatentGenerator, UNITBackbone, latent_kl_loss

TINY = {
    "base_channels": 8,
    "num_residual_blocks": 2,
    "num_shared_blocks": 1,
    "discriminator_channels": 8,
    "discriminator_layers": 2,
    "discriminator_scales": 3,
}
C_LOSSES = {"adversarial", "reconstruction", "kl", "cycle", "cycle_kl"}


def images(batch: int = 2, channels: int = 1, height: int = 32, width: int = 32) -> torch.Tensor:
    return torch.rand(batch, channels, height, width) * 2 - 1


def parameter_count(networks: dict[str, nn.Module]) -> int:
    return sum(p.numel() for net in networks.values() for p in net.parameters())


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


class TestTrainingStep:
    @pytest.mark.parametrize("cyclic", [True, False])
    def test_generator_and_discriminator_steps(self, cyclic: bool) -> None:
        model = UNITBackbone(cyclic=cyclic, **TINY)
        assert isinstance(model, TranslationBackbone) and model.method == "unit"
        source, target = images(), images()

        out = model.generator_forward(source, target)
        assert isinstance(out, GeneratorOutput)
        assert out.translated.shape == target.shape and out.translated.requires_grad
        assert set(out.losses) == (C_LOSSES if cyclic else {"adversarial"})
        for name, loss in out.losses.items():
            assert loss.dim() == 0 and loss.dtype == torch.float32, name
            assert torch.isfinite(loss), name
        assert set(out.fakes) == ({"source", "target"} if cyclic else {"target"})
        assert all(not fake.requires_grad for fake in out.fakes.values())

        sum(out.losses.values()).backward()
        generator = model.generators()["generator"]
        for name, parameter in generator.named_parameters():
            assert parameter.grad is not None, name
        for name, part in generator.named_children():
            norm = sum(float(p.grad.abs().sum()) for p in part.parameters())
            assert norm > 0, f"no gradient reaches generator.{name}"

        model.zero_grad(set_to_none=True)
        d_losses = model.discriminator_losses(source, target, out.fakes)
        assert set(d_losses) == (
            {"adversarial_source", "adversarial_target"} if cyclic else {"adversarial_target"}
        )
        assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in d_losses.values())
        sum(d_losses.values()).backward()
        for net_name, net in model.discriminators().items():
            for name, parameter in net.named_parameters():
                assert parameter.grad is not None and parameter.grad.abs().sum() > 0, (
                    f"{net_name}.{name}"
                )
        # The fakes are detached: the discriminator step leaves the generator untouched.
        assert all(p.grad is None for p in generator.parameters())

    def test_bf16_autocast_losses_stay_float32(self) -> None:
        model = UNITBackbone(**TINY)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.generator_forward(images(), images())
        assert all(loss.dtype == torch.float32 for loss in out.losses.values())
        assert all(torch.isfinite(loss) for loss in out.losses.values())

    def test_zero_cycle_weights_skip_the_cycle_pass(self) -> None:
        model = UNITBackbone(cycle_weight=0.0, cycle_kl_weight=0.0, **TINY)
        out = model.generator_forward(images(), images())
        assert set(out.losses) == {"adversarial", "reconstruction", "kl"}

    def test_default_discriminator_runs_at_32_pixels(self) -> None:
        # default discriminators: discriminator_layers=4, discriminator_scales=3
        model = UNITBackbone(base_channels=8, num_residual_blocks=2)
        source, target = images(), images()
        out = model.generator_forward(source, target)
        d_losses = model.discriminator_losses(source, target, out.fakes)
        assert all(torch.isfinite(v) for v in [*out.losses.values(), *d_losses.values()])
        # discriminator_layers=4 needs 16 px per scale: 32 and 16 are used, 8×8 is skipped.
        predictions = model.discriminators()["discriminator_target"](target)
        assert [tuple(p.shape) for p in predictions] == [(2, 1, 2, 2), (2, 1, 1, 1)]


class TestTranslate:
    @pytest.mark.parametrize(
        ("in_channels", "out_channels", "height", "width"),
        [(1, 1, 32, 32), (3, 3, 32, 32), (1, 3, 32, 48), (3, 1, 48, 32)],
    )
    @pytest.mark.parametrize("cyclic", [True, False])
    def test_shape(
        self, cyclic: bool, in_channels: int, out_channels: int, height: int, width: int
    ) -> None:
        model = UNITBackbone(
            in_channels=in_channels, out_channels=out_channels, cyclic=cyclic, **TINY
        )
        translated = model.translate(images(2, in_channels, height, width))
        assert translated.shape == (2, out_channels, height, width)
        assert translated.abs().max() <= 1.0

    @pytest.mark.parametrize("cyclic", [True, False])
    def test_deterministic_even_in_training_mode(self, cyclic: bool) -> None:
        model = UNITBackbone(cyclic=cyclic, **TINY).train()
        source = images()
        torch.testing.assert_close(model.translate(source), model.translate(source))

    def test_matches_generator_forward_without_noise(self) -> None:
        model = UNITBackbone(**TINY)
        source, target = images(), images()
        model.train()
        noisy = model.generator_forward(source, target).translated
        assert not torch.allclose(noisy, model.translate(source))
        model.eval()
        torch.testing.assert_close(
            model.generator_forward(source, target).translated, model.translate(source)
        )


class TestArchitecture:
    def test_shared_layers_are_the_same_parameters(self) -> None:
        generator = UNITBackbone(**TINY).generator
        assert isinstance(generator, SharedLatentGenerator)
        shared_encoder = {id(p) for p in generator.shared_encoder.parameters()}
        shared_decoder = {id(p) for p in generator.shared_decoder.parameters()}
        assert shared_encoder and shared_decoder
        encoders = [
            {id(p) for p in generator.encoder(d).parameters()} for d in ("source", "target")
        ]
        decoders = [
            {id(p) for p in generator.decoder(d).parameters()} for d in ("source", "target")
        ]
        assert encoders[0] & encoders[1] == shared_encoder
        assert decoders[0] & decoders[1] == shared_decoder

    def test_nc_builds_only_the_x_to_y_networks(self) -> None:
        model = UNITBackbone(cyclic=False, **TINY)
        assert set(model.generator.encoders) == {"source"}
        assert set(model.generator.decoders) == {"target"}
        assert set(model.discriminators()) == {"discriminator_target"}
        with pytest.raises(ValueError, match="domain"):
            model.generator.encoder("target")

    @pytest.mark.parametrize("config", [TINY, {}], ids=["tiny", "default"])
    def test_nc_has_strictly_fewer_parameters(self, config: dict[str, int]) -> None:
        cyclic, non_cyclic = (
            UNITBackbone(cyclic=True, **config),
            UNITBackbone(cyclic=False, **config),
        )
        c_gen, nc_gen = (
            parameter_count(cyclic.generators()),
            parameter_count(non_cyclic.generators()),
        )
        c_dis = parameter_count(cyclic.discriminators())
        nc_dis = parameter_count(non_cyclic.discriminators())
        assert nc_gen < c_gen and nc_dis < c_dis
        # NC drops exactly E_Y (private part), G_X (private part) and D_X.
        dropped = sum(
            p.numel()
            for net in (cyclic.generator.encoders["target"], cyclic.generator.decoders["source"])
            for p in net.parameters()
        )
        assert c_gen - nc_gen == dropped
        assert c_dis == 2 * nc_dis

    def test_discriminator_scales(self) -> None:
        discriminator = UNITBackbone(**{**TINY, "discriminator_layers": 4}).discriminators()[
            "discriminator_target"
        ]
        assert discriminator.num_active_scales(64, 64) == 3
        assert discriminator.num_active_scales(32, 48) == 2
        assert discriminator.num_active_scales(8, 8) == 0


class TestLossValues:
    def test_latent_kl_loss_by_hand(self) -> None:
        latent_mean = torch.tensor([[1.0, -2.0], [3.0, 0.0]])
        # UNIT's term: mean(mu^2) = (1 + 4 + 9 + 0) / 4 = 3.5. The exact KL of N(mu, I) to N(0, I)
        # is 0.5 * sum(mu^2) = 7, i.e. 1.75 per element: UNIT's term is twice the per-element KL.
        assert latent_kl_loss(latent_mean).item() == pytest.approx(3.5)
        exact_kl_per_element = 0.5 * latent_mean.pow(2).sum() / latent_mean.numel()
        assert latent_kl_loss(latent_mean).item() == pytest.approx(2 * exact_kl_per_element.item())
        assert latent_kl_loss(latent_mean.to(torch.bfloat16)).dtype == torch.float32

    def test_kl_terms_of_the_backbone(self) -> None:
        model = UNITBackbone(kl_weight=0.5, cycle_kl_weight=0.25, **TINY).eval()
        source, target = images(), images()
        losses = model.generator_forward(source, target).losses
        generator = model.generator
        with torch.no_grad():
            mu_x, mu_y = generator.encode(source, "source"), generator.encode(target, "target")
            mu_xy = generator.encode(generator.decode(mu_x, "target"), "target")
            mu_yx = generator.encode(generator.decode(mu_y, "source"), "source")
        by_hand = 0.5 * (mu_x.pow(2).mean() + mu_y.pow(2).mean())
        cycle_by_hand = 0.25 * (mu_xy.pow(2).mean() + mu_yx.pow(2).mean())
        torch.testing.assert_close(losses["kl"].detach(), by_hand)
        torch.testing.assert_close(losses["cycle_kl"].detach(), cycle_by_hand)

    def test_adversarial_term_sums_the_scales(self) -> None:
        model = UNITBackbone(cyclic=False, adversarial_weight=2.0, **TINY).eval()
        source = images()
        out = model.generator_forward(source, images())
        with torch.no_grad():
            predictions = model.discriminators()["discriminator_target"](model.translate(source))
        assert len(predictions) == 3
        by_hand = 2.0 * sum((p - 1).pow(2).mean() for p in predictions)
        torch.testing.assert_close(out.losses["adversarial"].detach(), by_hand)


class TestExceptions:
    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            ({"num_shared_blocks": 3, "num_residual_blocks": 2}, ValueError, "num_shared_blocks"),
            ({"reconstruction_weight": -1.0}, ValueError, "reconstruction_weight"),
            ({"gan_mode": "wgan"}, ValueError, "gan_mode"),
            ({"base_channels": 0}, ValueError, "base_channels"),
            ({"discriminator_layers": 2.0}, TypeError, "discriminator_layers"),
        ],
    )
    def test_constructor(self, kwargs: dict[str, object], error: type, match: str) -> None:
        with pytest.raises(error, match=match):
            UNITBackbone(**{**TINY, **kwargs})

    @pytest.mark.parametrize(
        ("source", "error", "match"),
        [
            (torch.rand(1, 32, 32), ValueError, "source must be a 4-D"),
            (torch.rand(2, 3, 32, 32), ValueError, r"source must have 1 channel"),
            (torch.zeros(2, 1, 32, 32, dtype=torch.int64), TypeError, "source"),
            (torch.rand(2, 1, 30, 32), ValueError, "multiples of 2\\*\\*num_downsamplings=4"),
            (torch.rand(2, 1, 4, 4), ValueError, "at least 8"),
            ([[0.0]], TypeError, "source"),
        ],
    )
    def test_translate_input(self, source: object, error: type, match: str) -> None:
        with pytest.raises(error, match=match):
            UNITBackbone(**TINY).translate(source)  # type: ignore[arg-type]

    def test_pair_input(self) -> None:
        model = UNITBackbone(**TINY)
        with pytest.raises(ValueError, match="target must have 1 channel"):
            model.generator_forward(images(), images(channels=3))
        with pytest.raises(ValueError, match="share batch size and spatial size"):
            model.generator_forward(images(), images(width=48))
        with pytest.raises(ValueError, match="2\\*\\*discriminator_layers=16"):
            UNITBackbone(**{**TINY, "discriminator_layers": 4}).generator_forward(
                images(height=8, width=8), images(height=8, width=8)
            )

    def test_fakes_input(self) -> None:
        model = UNITBackbone(**TINY)
        source, target = images(), images()
        with pytest.raises(ValueError, match="'source'"):
            model.discriminator_losses(source, target, {"target": images()})
        with pytest.raises(ValueError, match=r"fakes\['target'\] must have shape"):
            model.discriminator_losses(
                source, target, {"target": images(width=48), "source": images()}
            )
        with pytest.raises(TypeError, match="fakes must be a dict"):
            model.discriminator_losses(source, target, [images()])  # type: ignore[arg-type]
