"""Tests of the NICE-GAN backbone and its layers (tiny widths, 32×32 images)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from regcorrect.backbones._nicegan_layers import (
    AdaLIN,
    LayerInstanceNorm,
    NICEDiscriminator,
    adaptive_layer_instance_norm,
    discriminator_minimum_size,
)
from regcorrect.backbones.nicegan import NICEGANBackbone

MODES = pytest.mark.parametrize("cyclic", [True, False], ids=["C", "NC"])


def tiny(**overrides: object) -> NICEGANBackbone:
    settings: dict[str, object] = {
        "base_channels": 4,
        "num_residual_blocks": 1,
        "discriminator_layers": 5,
    }
    settings.update(overrides)
    return NICEGANBackbone(**settings)  # type: ignore[arg-type]


def images(batch: int = 2, channels: int = 1, height: int = 32, width: int = 32) -> torch.Tensor:
    return torch.rand(batch, channels, height, width) * 2 - 1


def parameters_of(networks: dict[str, nn.Module]) -> list[nn.Parameter]:
    return [p for network in networks.values() for p in network.parameters()]


def encoders_of(model: NICEGANBackbone) -> list[nn.Module]:
    return [network.encoder for network in model.discriminators().values()]


def gradient_norm(module: nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


class TestAdaptiveLayerInstanceNorm:
    def test_rho_one_is_instance_norm(self) -> None:
        x = torch.randn(2, 3, 8, 8) * 3 + 1
        out = adaptive_layer_instance_norm(x, torch.ones(3), torch.ones(3), torch.zeros(3))
        torch.testing.assert_close(out, F.instance_norm(x), atol=1e-5, rtol=1e-5)

    def test_rho_zero_is_layer_norm(self) -> None:
        x = torch.randn(2, 3, 8, 8) * 3 + 1
        out = adaptive_layer_instance_norm(x, torch.zeros(3), torch.ones(3), torch.zeros(3))
        torch.testing.assert_close(out, F.layer_norm(x, x.shape[1:]), atol=1e-5, rtol=1e-5)

    def test_per_channel_mix_and_per_sample_affine(self) -> None:
        x = torch.randn(2, 2, 6, 6)
        rho = torch.tensor([1.0, 0.25])
        scale, shift = (
            torch.tensor([[2.0, 1.0], [0.5, 3.0]]),
            torch.tensor([[1.0, 0.0], [0.0, -1.0]]),
        )
        out = adaptive_layer_instance_norm(x, rho, scale, shift)
        mixed = rho.view(1, 2, 1, 1) * F.instance_norm(x) + (
            1 - rho.view(1, 2, 1, 1)
        ) * F.layer_norm(x, x.shape[1:])
        torch.testing.assert_close(out, mixed * scale[..., None, None] + shift[..., None, None])

    def test_modules_start_near_nicegan_init(self) -> None:
        # softmax((3.2, 1.0))[0] = sigmoid(2.2) ≈ 0.900: AdaLIN starts mostly instance norm, LIN
        # mostly layer norm; with saturated logits AdaLIN is instance norm exactly.
        adalin, lin = AdaLIN(channels=3), LayerInstanceNorm(channels=3)
        torch.testing.assert_close(
            adalin.instance_weight, torch.full((3,), 0.9002495), atol=1e-6, rtol=0
        )
        x = torch.randn(2, 3, 8, 8)
        expected_lin = 0.0997505 * F.instance_norm(x) + 0.9002495 * F.layer_norm(x, x.shape[1:])
        torch.testing.assert_close(lin(x), expected_lin, atol=1e-5, rtol=1e-5)
        with torch.no_grad():
            adalin.mixing_logits.copy_(torch.tensor([50.0, 0.0]).repeat(3, 1))
        out = adalin(x, torch.ones(2, 3), torch.zeros(2, 3))
        torch.testing.assert_close(out, F.instance_norm(x), atol=1e-5, rtol=1e-5)

    def test_gradcheck(self) -> None:
        x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
        rho = torch.tensor([0.3, 0.8], dtype=torch.float64, requires_grad=True)
        scale = torch.randn(1, 2, dtype=torch.float64, requires_grad=True)
        shift = torch.randn(1, 2, dtype=torch.float64, requires_grad=True)
        # Statistics run in float32; compare to float64 finite differences loosely.
        assert torch.autograd.gradcheck(
            lambda *a: adaptive_layer_instance_norm(*a).double(),
            (x, rho, scale, shift),
            eps=1e-3,
            atol=1e-2,
            rtol=1e-2,
        )

    def test_exception(self) -> None:
        x = torch.randn(2, 3, 8, 8)
        with pytest.raises(ValueError, match="instance_weight"):
            adaptive_layer_instance_norm(x, torch.ones(2), torch.ones(3), torch.zeros(3))
        with pytest.raises(ValueError, match="scale"):
            adaptive_layer_instance_norm(x, torch.ones(3), torch.ones(4, 3), torch.zeros(3))
        with pytest.raises(ValueError, match="features"):
            adaptive_layer_instance_norm(x[0], torch.ones(3), torch.ones(3), torch.zeros(3))


class TestNICEDiscriminator:
    @pytest.mark.parametrize("layers", [5, 6, 7])
    def test_cardinality_at_minimum_size(self, layers: int) -> None:
        size = discriminator_minimum_size(layers)
        discriminator = NICEDiscriminator(in_channels=2, base_channels=2, layers=layers)
        local, global_, cam, features = discriminator(torch.randn(1, 2, size, size))
        assert global_.shape == (1, 1, 1, 1)
        assert local.shape[:2] == (1, 1) and local.shape[-1] > 1
        assert cam.shape == (1, 1)
        assert features.shape == (1, 4, size // 4, size // 4)

    def test_nicegan_widths(self) -> None:
        # NICE-GAN, n_dis 7: the local head ends in a 8·ch→1 conv, the global head in a
        # 16·ch→32·ch and a 32·ch→1 conv (2048 channels at ch 64).
        base = 2
        discriminator = NICEDiscriminator(in_channels=1, base_channels=base, layers=7)
        assert discriminator.local_head[-1][1].in_channels == 8 * base
        assert discriminator.global_head[-2][1].in_channels == 16 * base
        assert discriminator.global_head[-1][1].in_channels == 32 * base
        assert discriminator.minimum_size == 96

    def test_exception(self) -> None:
        with pytest.raises(ValueError, match="layers"):
            NICEDiscriminator(in_channels=1, base_channels=4, layers=4)


class TestNICEGANBackbone:
    @MODES
    def test_generator_then_discriminator_step(self, cyclic: bool) -> None:
        torch.manual_seed(0)
        model = tiny(cyclic=cyclic)
        source, target = images(), images()
        generator_params = parameters_of(model.generators())
        discriminator_params = parameters_of(model.discriminators())

        output = model.generator_forward(source, target)
        expected = {"adversarial", "adversarial_cam"} | (
            {"cycle", "reconstruction"} if cyclic else set()
        )
        assert set(output.losses) == expected
        for name, loss in output.losses.items():
            assert loss.dtype == torch.float32 and loss.ndim == 0, name
            assert torch.isfinite(loss), name
        assert output.translated.shape == (2, 1, 32, 32) and output.translated.requires_grad
        assert set(output.fakes) == ({"target", "source"} if cyclic else {"target"})
        assert all(not fake.requires_grad for fake in output.fakes.values())

        sum(output.losses.values()).backward()
        assert all(p.grad is not None for p in generator_params)
        for name, network in model.generators().items():
            assert gradient_norm(network) > 0, name
        # Decoupled training: no discriminator weight — encoders included — is touched.
        assert all(p.grad is None for p in discriminator_params)
        assert all(p.requires_grad for p in discriminator_params)  # flags restored

        model.zero_grad(set_to_none=True)
        losses = model.discriminator_losses(source, target, output.fakes)
        assert set(losses) == {"adversarial", "adversarial_cam"}
        assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values())
        sum(losses.values()).backward()
        assert all(p.grad is None for p in generator_params)
        assert all(p.grad is not None for p in discriminator_params)
        for name, network in model.discriminators().items():
            assert gradient_norm(network) > 0, name
        for encoder in encoders_of(model):
            assert gradient_norm(encoder) > 0

    @MODES
    def test_translated_carries_the_generator_graph(self, cyclic: bool) -> None:
        # The +R modes backpropagate a correction loss through `translated` alone.
        torch.manual_seed(0)
        model = tiny(cyclic=cyclic)
        output = model.generator_forward(images(), images())
        output.translated.square().mean().backward()
        assert gradient_norm(model.generators()["generator_source_to_target"]) > 0
        for encoder in encoders_of(model):
            assert all(p.grad is None for p in encoder.parameters())

    @MODES
    def test_networks_partition_the_parameters(self, cyclic: bool) -> None:
        model = tiny(cyclic=cyclic)
        generator_ids = {id(p) for p in parameters_of(model.generators())}
        discriminator_ids = {id(p) for p in parameters_of(model.discriminators())}
        assert not generator_ids & discriminator_ids
        assert generator_ids | discriminator_ids == {id(p) for p in model.parameters()}
        assert len(model.generators()) == len(model.discriminators()) == (2 if cyclic else 1)

    def test_nc_has_strictly_fewer_parameters(self) -> None:
        def count(model: NICEGANBackbone) -> int:
            return sum(p.numel() for p in model.parameters())

        cyclic, non_cyclic = tiny(cyclic=True), tiny(cyclic=False)
        assert count(non_cyclic) < count(cyclic)
        assert non_cyclic.discriminator_source is None
        assert non_cyclic.generator_target_to_source is None

    @MODES
    @pytest.mark.parametrize("channels", [1, 3])
    @pytest.mark.parametrize("size", [(32, 32), (32, 48)], ids=["square", "32x48"])
    def test_translate_keeps_shape(
        self, cyclic: bool, channels: int, size: tuple[int, int]
    ) -> None:
        model = tiny(cyclic=cyclic, in_channels=channels, out_channels=channels)
        translated = model.translate(images(2, channels, *size))
        assert translated.shape == (2, channels, *size)
        assert translated.abs().max() <= 1

    @MODES
    def test_different_channel_counts(self, cyclic: bool) -> None:
        model = tiny(cyclic=cyclic, in_channels=1, out_channels=3)
        source, target = images(2, 1, 32, 48), images(2, 3, 32, 48)
        output = model.generator_forward(source, target)
        assert output.translated.shape == (2, 3, 32, 48)
        losses = model.discriminator_losses(source, target, output.fakes)
        assert all(torch.isfinite(v) for v in losses.values())

    @MODES
    def test_translate_is_deterministic(self, cyclic: bool) -> None:
        torch.manual_seed(0)
        model = tiny(cyclic=cyclic)
        assert model.training
        source = images()
        first, second = model.translate(source), model.translate(source)
        torch.testing.assert_close(first, second, atol=0, rtol=0)
        assert all(module.training for module in model.modules())  # train flags restored

    @MODES
    def test_bf16_autocast_gives_float32_losses(self, cyclic: bool) -> None:
        torch.manual_seed(0)
        model = tiny(cyclic=cyclic)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = model.generator_forward(images(), images())
        for name, loss in output.losses.items():
            assert loss.dtype == torch.float32 and torch.isfinite(loss), name

    @pytest.mark.parametrize("gan_mode", ["vanilla", "hinge"])
    def test_other_gan_modes(self, gan_mode: str) -> None:
        torch.manual_seed(0)
        model = tiny(cyclic=False, gan_mode=gan_mode)
        source, target = images(), images()
        output = model.generator_forward(source, target)
        losses = {**output.losses, **model.discriminator_losses(source, target, output.fakes)}
        assert all(torch.isfinite(loss) for loss in losses.values())

    def test_full_mlp_fixes_the_image_size(self) -> None:
        model = tiny(image_size=(32, 48))
        assert model.translate(images(1, 1, 32, 48)).shape == (1, 1, 32, 48)
        with pytest.raises(ValueError, match="image_size"):
            model.translate(images(1, 1, 32, 32))
        with pytest.raises(ValueError, match="image_size"):
            tiny(image_size=30)

    @MODES
    def test_exception(self, cyclic: bool) -> None:
        model = tiny(cyclic=cyclic)
        good = images()
        with pytest.raises(ValueError, match=r"source must have 1 channels"):
            model.generator_forward(images(2, 3), good)
        with pytest.raises(ValueError, match="target must be a 4-D tensor"):
            model.generator_forward(good, good[0])
        with pytest.raises(ValueError, match="multiples of 4"):
            model.translate(images(2, 1, 30, 32))
        with pytest.raises(ValueError, match=">= 24 for discriminator_layers=5"):
            model.generator_forward(images(2, 1, 16, 16), images(2, 1, 16, 16))
        with pytest.raises(TypeError, match="floating-point"):
            model.translate(torch.zeros(2, 1, 32, 32, dtype=torch.long))
        with pytest.raises(ValueError, match="'target'"):
            model.discriminator_losses(good, good, {})
        with pytest.raises(ValueError, match=r"fakes\['target'\] must have 1 channels"):
            model.discriminator_losses(good, good, {"target": images(2, 2), "source": good})

    def test_constructor_exception(self) -> None:
        with pytest.raises(ValueError, match="discriminator_layers"):
            tiny(discriminator_layers=4)
        with pytest.raises(ValueError, match="cycle_weight"):
            tiny(cycle_weight=-1.0)
        with pytest.raises(TypeError, match="base_channels"):
            tiny(base_channels=4.0)
        with pytest.raises(ValueError, match="gan_mode"):
            tiny(gan_mode="wgan")
