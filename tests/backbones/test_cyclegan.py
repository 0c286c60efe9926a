"""Tests of the CycleGAN/Pix2Pix networks and backbones (small widths, 32–64 px images)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from regcorrect.backbones.base import GeneratorOutput, TranslationBackbone
from regcorrect.backbones.cyclegan import CycleGAN, PatchDiscriminator, Pix2Pix, ResnetGenerator

SMALL = dict(base_channels=8, num_residual_blocks=2, discriminator_channels=8)


@pytest.fixture(autouse=True, scope="module")
def single_thread() -> Iterator[None]:
    # Tiny convolutions run far faster on one thread, above all on a shared, busy CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def images(batch: int, channels: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, size, size, generator=generator) * 2 - 1


def parameter_count(networks: dict[str, nn.Module]) -> int:
    return sum(p.numel() for network in networks.values() for p in network.parameters())


class TestResnetGenerator:
    def test_smoke(self) -> None:
        generator = ResnetGenerator(base_channels=8, num_residual_blocks=2)
        out = generator(images(2, 1))
        assert out.shape == (2, 1, 32, 32)
        assert out.dtype == torch.float32

    @pytest.mark.parametrize(
        ("in_channels", "out_channels", "downsamplings", "height", "width"),
        [
            (1, 1, 2, 32, 32),
            (3, 2, 2, 32, 48),
            (2, 3, 1, 16, 20),
            (1, 1, 3, 32, 64),
            (1, 1, 0, 8, 12),
        ],
    )
    def test_cardinality(
        self, in_channels: int, out_channels: int, downsamplings: int, height: int, width: int
    ) -> None:
        generator = ResnetGenerator(
            in_channels=in_channels,
            out_channels=out_channels,
            base_channels=4,
            num_residual_blocks=1,
            num_downsamplings=downsamplings,
        )
        out = generator(torch.randn(2, in_channels, height, width))
        assert out.shape == (2, out_channels, height, width)

    def test_values_in_tanh_range(self) -> None:
        generator = ResnetGenerator(base_channels=8, num_residual_blocks=1)
        out = generator(images(1, 1) * 50)  # large input, saturating output
        assert out.abs().max() <= 1.0
        assert out.std() > 0

    def test_architecture(self) -> None:
        generator = ResnetGenerator(base_channels=8, num_residual_blocks=3)
        bottleneck = generator.residual_blocks[0].conv1
        assert (bottleneck.in_channels, bottleneck.padding_mode) == (32, "reflect")
        assert generator.stem.conv.kernel_size == (7, 7)
        assert isinstance(generator.upsampling[0].conv, nn.ConvTranspose2d)
        assert generator.upsampling[0].conv.output_padding == (1, 1)
        norms = [m for m in generator.modules() if isinstance(m, nn.InstanceNorm2d)]
        assert len(norms) == 1 + 2 + 2 * 3 + 2 and not any(m.affine for m in norms)
        assert isinstance(generator.output.act, nn.Tanh)

    def test_init_normal(self) -> None:
        generator = ResnetGenerator()
        weight = generator.residual_blocks[0].conv1.weight
        assert abs(weight.std().item() - 0.02) < 0.002
        assert torch.count_nonzero(generator.stem.conv.bias) == 0

    def test_exception(self) -> None:
        generator = ResnetGenerator(base_channels=4, num_residual_blocks=1)
        with pytest.raises(ValueError, match=r"4-D tensor.*\(1, 32, 32\)"):
            generator(torch.zeros(1, 32, 32))
        with pytest.raises(ValueError, match=r"1 channel.*\(1, 3, 32, 32\)"):
            generator(torch.zeros(1, 3, 32, 32))
        with pytest.raises(ValueError, match=r"divisible by 4.*\(1, 1, 30, 32\)"):
            generator(torch.zeros(1, 1, 30, 32))
        with pytest.raises(ValueError, match="at least 8"):
            generator(torch.zeros(1, 1, 4, 4))
        with pytest.raises(TypeError, match="floating-point"):
            generator(torch.zeros(1, 1, 32, 32, dtype=torch.long))
        with pytest.raises(ValueError, match="num_residual_blocks"):
            ResnetGenerator(num_residual_blocks=-1)
        with pytest.raises(TypeError, match="base_channels"):
            ResnetGenerator(base_channels=8.0)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            ResnetGenerator(1, 1)  # type: ignore[misc]  # keyword-only

    def test_gradcheck(self) -> None:
        generator = ResnetGenerator(
            base_channels=2, num_residual_blocks=1, num_downsamplings=1
        ).double()
        image = torch.randn(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(generator, (image,), eps=1e-6, atol=1e-4)


class TestPatchDiscriminator:
    def test_smoke(self) -> None:
        discriminator = PatchDiscriminator(base_channels=8)
        assert discriminator(images(2, 1, 64)).shape == (2, 1, 6, 6)

    @pytest.mark.parametrize(("num_layers", "field"), [(1, 16), (2, 34), (3, 70), (4, 142)])
    def test_receptive_field(self, num_layers: int, field: int) -> None:
        assert PatchDiscriminator(num_layers=num_layers).receptive_field == field

    def test_default_is_70x70(self) -> None:
        assert PatchDiscriminator().receptive_field == 70

    def test_receptive_field_matches_gradient_support(self) -> None:
        # Without the (globally coupling) instance norms, one score depends on exactly
        # receptive_field × receptive_field input pixels.
        discriminator = PatchDiscriminator(base_channels=4, num_layers=2)
        for block in discriminator.blocks:
            if hasattr(block, "norm"):
                block.norm = nn.Identity()
        image = torch.randn(1, 1, 96, 96, requires_grad=True)
        scores = discriminator(image)
        scores[0, 0, scores.shape[2] // 2, scores.shape[3] // 2].backward()
        support = image.grad[0, 0].abs() > 0
        rows, columns = support.any(dim=1).nonzero(), support.any(dim=0).nonzero()
        assert int(rows.max() - rows.min() + 1) == discriminator.receptive_field == 34
        assert int(columns.max() - columns.min() + 1) == 34

    @pytest.mark.parametrize(
        ("channels", "height", "width"), [(1, 24, 24), (2, 32, 48), (4, 64, 40)]
    )
    def test_cardinality(self, channels: int, height: int, width: int) -> None:
        discriminator = PatchDiscriminator(in_channels=channels, base_channels=4)
        out = discriminator(torch.randn(3, channels, height, width))
        assert out.shape == (3, 1, height // 8 - 2, width // 8 - 2)

    def test_architecture(self) -> None:
        discriminator = PatchDiscriminator()
        widths = [block.conv.out_channels for block in discriminator.blocks]
        assert widths == [64, 128, 256, 512]
        assert [block.conv.stride[0] for block in discriminator.blocks] == [2, 2, 2, 1]
        assert not hasattr(discriminator.blocks[0], "norm")
        assert discriminator.classifier.out_channels == 1

    def test_exception(self) -> None:
        discriminator = PatchDiscriminator(base_channels=4)
        assert discriminator.minimum_size == 24
        with pytest.raises(ValueError, match=r"at least 24.*\(1, 1, 16, 64\)"):
            discriminator(torch.zeros(1, 1, 16, 64))
        with pytest.raises(ValueError, match="1 channel"):
            discriminator(torch.zeros(1, 2, 32, 32))
        with pytest.raises(ValueError, match="num_layers"):
            PatchDiscriminator(num_layers=0)


class TestCycleGAN:
    def test_smoke_and_contract(self) -> None:
        model = CycleGAN(**SMALL)
        assert isinstance(model, TranslationBackbone) and model.method == "cyclegan"
        assert set(model.generators()) == {"generator", "inverse_generator"}
        assert set(model.discriminators()) == {"discriminator", "source_discriminator"}
        out = model.generator_forward(images(2, 1), images(2, 1, seed=1))
        assert isinstance(out, GeneratorOutput)
        assert out.translated.shape == (2, 1, 32, 32) and out.translated.requires_grad
        assert set(out.losses) == {"adversarial", "inverse_adversarial", "cycle"}
        for loss in out.losses.values():
            assert loss.shape == () and loss.dtype == torch.float32 and torch.isfinite(loss)
        assert set(out.fakes) == {"target", "source"}
        assert not any(fake.requires_grad for fake in out.fakes.values())

    def test_noncyclic_builds_only_g_and_dy(self) -> None:
        cyclic, single = CycleGAN(**SMALL), CycleGAN(cyclic=False, **SMALL)
        assert set(single.generators()) == {"generator"}
        assert set(single.discriminators()) == {"discriminator"}
        counted = parameter_count(single.generators()) + parameter_count(single.discriminators())
        assert sum(p.numel() for p in single.parameters()) == counted
        assert 2 * counted == sum(p.numel() for p in cyclic.parameters())
        out = single.generator_forward(images(2, 1), images(2, 1, seed=1))
        assert set(out.losses) == {"adversarial"} and set(out.fakes) == {"target"}
        assert set(single.discriminator_losses(images(2, 1), images(2, 1), out.fakes)) == {
            "discriminator"
        }

    def test_cardinality_channels(self) -> None:
        model = CycleGAN(in_channels=2, out_channels=3, **SMALL)
        source, target = torch.randn(2, 2, 32, 48), torch.randn(2, 3, 32, 48)
        out = model.generator_forward(source, target)
        assert out.fakes["target"].shape == (2, 3, 32, 48)
        assert out.fakes["source"].shape == (2, 2, 32, 48)
        assert model.translate(source).shape == (2, 3, 32, 48)
        assert set(model.discriminator_losses(source, target, out.fakes)) == {
            "discriminator",
            "source_discriminator",
        }

    def test_values(self) -> None:
        torch.manual_seed(0)
        model = CycleGAN(cycle_weight=7.0, adversarial_weight=0.5, **SMALL)
        source, target = images(2, 1), images(2, 1, seed=1)
        out = model.generator_forward(source, target)
        translated, inverse = model.generator(source), model.inverse_generator(target)
        assert torch.allclose(out.translated, translated)
        assert torch.equal(model.translate(source), model.translate(source))
        adversarial = 0.5 * ((model.discriminator(translated) - 1) ** 2).mean()
        cycle = (model.inverse_generator(translated) - source).abs().mean() + (
            model.generator(inverse) - target
        ).abs().mean()
        assert torch.allclose(out.losses["adversarial"], adversarial, atol=1e-6)
        assert torch.allclose(out.losses["cycle"], 7.0 * cycle, atol=1e-5)
        d_losses = model.discriminator_losses(source, target, out.fakes)
        real, fake = model.discriminator(target), model.discriminator(translated)
        expected = 0.5 * 0.5 * (((real - 1) ** 2).mean() + (fake**2).mean())
        assert torch.allclose(d_losses["discriminator"], expected, atol=1e-6)

    def test_identity_loss(self) -> None:
        model = CycleGAN(identity_weight=5.0, **SMALL)
        out = model.generator_forward(images(1, 1), images(1, 1, seed=1))
        assert out.losses["identity"] > 0
        with pytest.raises(ValueError, match="in_channels == out_channels"):
            CycleGAN(in_channels=1, out_channels=2, identity_weight=5.0, **SMALL)

    def test_backward_reaches_both_generators(self) -> None:
        model = CycleGAN(**SMALL)
        out = model.generator_forward(images(1, 1), images(1, 1, seed=1))
        sum(out.losses.values()).backward()
        for network in model.generators().values():
            assert all(p.grad is not None for p in network.parameters())
        d_loss = sum(model.discriminator_losses(images(1, 1), images(1, 1), out.fakes).values())
        model.zero_grad()
        d_loss.backward()
        assert all(p.grad is None for p in model.generator.parameters())
        assert model.discriminator.classifier.weight.grad is not None

    def test_replay_buffer_fakes_are_used(self) -> None:
        model = CycleGAN(cyclic=False, **SMALL)
        source, target = images(2, 1), images(2, 1, seed=1)
        fakes = model.generator_forward(source, target).fakes
        replayed = {"target": images(2, 1, seed=5)}
        assert not torch.allclose(
            model.discriminator_losses(source, target, fakes)["discriminator"],
            model.discriminator_losses(source, target, replayed)["discriminator"],
        )

    def test_autocast_bf16(self) -> None:
        model = CycleGAN(**SMALL)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.generator_forward(images(1, 1), images(1, 1, seed=1))
        assert all(loss.dtype == torch.float32 for loss in out.losses.values())

    def test_exception(self) -> None:
        model = CycleGAN(**SMALL)
        with pytest.raises(ValueError, match=r"source must have 1 channel.*\(2, 3, 32, 32\)"):
            model.generator_forward(torch.zeros(2, 3, 32, 32), images(2, 1))
        with pytest.raises(ValueError, match="target must"):
            model.generator_forward(images(2, 1), torch.zeros(2, 1, 30, 30))
        with pytest.raises(ValueError, match=r"source must have H and W divisible by 4"):
            model.translate(torch.zeros(1, 1, 33, 32))
        with pytest.raises(ValueError, match="'source'"):
            model.discriminator_losses(images(1, 1), images(1, 1), {"target": images(1, 1)})
        with pytest.raises(ValueError, match="gan_mode"):
            CycleGAN(gan_mode="wgan", **SMALL)
        with pytest.raises(ValueError, match="cycle_weight"):
            CycleGAN(cycle_weight=-1.0, **SMALL)


class TestPix2Pix:
    def test_smoke_and_contract(self) -> None:
        model = Pix2Pix(in_channels=2, out_channels=1, **SMALL)
        assert model.method == "pix2pix" and not model.cyclic
        assert set(model.generators()) == {"generator"}
        assert model.discriminators()["discriminator"].in_channels == 3
        source, target = torch.randn(2, 2, 32, 32), images(2, 1)
        out = model.generator_forward(source, target)
        assert set(out.losses) == {"adversarial", "l1"} and set(out.fakes) == {"target", "pair"}
        assert all(loss.dtype == torch.float32 for loss in out.losses.values())
        assert set(model.discriminator_losses(source, target, out.fakes)) == {"discriminator"}
        # the fake is kept with its own condition (a replay buffer keeps the two together)
        torch.testing.assert_close(out.fakes["pair"], torch.cat([source, out.translated], 1))
        torch.testing.assert_close(out.fakes["target"], out.translated)
        assert not out.fakes["pair"].requires_grad

    def test_values(self) -> None:
        model = Pix2Pix(**SMALL)
        source, target = images(2, 1), images(2, 1, seed=1)
        out = model.generator_forward(source, target)
        expected_l1 = 100.0 * (out.translated - target).abs().mean()
        assert torch.allclose(out.losses["l1"], expected_l1)
        judged = model.discriminator(torch.cat([source, out.translated], dim=1))
        assert torch.allclose(out.losses["adversarial"], ((judged - 1) ** 2).mean())
        assert torch.allclose(model.adversarial(source, out.translated), out.losses["adversarial"])

    def test_discriminator_judges_the_stored_pair(self) -> None:
        """LSGAN: real pair cat([x, y]) against 1; the fake pair as given (its own condition),
        or the fake image with the current source."""
        model = Pix2Pix(**SMALL)
        source, target = images(2, 1), images(2, 1, seed=1)
        old_source, fake = images(2, 1, seed=2), images(2, 1, seed=3)
        pair = torch.cat([old_source, fake], dim=1)
        d = model.discriminator
        real = d(torch.cat([source, target], dim=1))
        expected = 0.5 * (((real - 1) ** 2).mean() + (d(pair) ** 2).mean())
        got = model.discriminator_losses(source, target, {"pair": pair})["discriminator"]
        torch.testing.assert_close(got, expected)
        with_source = 0.5 * (
            ((real - 1) ** 2).mean() + (d(torch.cat([source, fake], 1)) ** 2).mean()
        )
        got = model.discriminator_losses(source, target, {"target": fake})["discriminator"]
        torch.testing.assert_close(got, with_source)
        with pytest.raises(ValueError, match=r"fakes\['pair'\].*2 channel"):
            model.discriminator_losses(source, target, {"pair": fake})
        with pytest.raises(
            ValueError, match=r"fakes\[.pair.\] and source must share batch and spatial sizes"
        ):
            model.discriminator_losses(source, target, {"pair": pair[:1]})

    def test_l1_training_fits_aligned_pair(self) -> None:
        torch.manual_seed(0)
        model = Pix2Pix(adversarial_weight=0.0, **SMALL)
        source = images(1, 1)
        target = -source  # an aligned, learnable pair
        optimizer = torch.optim.Adam(model.generator.parameters(), lr=2e-3)
        first = None
        for _ in range(8):
            loss = model.generator_forward(source, target).losses["l1"]
            first = loss.item() if first is None else first
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert loss.item() < 0.8 * first

    def test_exception(self) -> None:
        with pytest.raises(ValueError, match="no cyclic form"):
            Pix2Pix(cyclic=True)
        model = Pix2Pix(**SMALL)
        with pytest.raises(ValueError, match=r"expected \(2, 1, 32, 32\).*\(2, 1, 64, 64\)"):
            model.generator_forward(images(2, 1), images(2, 1, 64))
        with pytest.raises(ValueError, match="l1_weight"):
            Pix2Pix(l1_weight=float("nan"))
        with pytest.raises(ValueError, match="fakes"):
            model.discriminator_losses(images(2, 1), images(2, 1), {})


def test_parameter_counts_at_paper_configuration() -> None:
    # 1 channel, ngf 64, 9 residual blocks, 70×70 PatchGAN with ndf 64 (mode C doubles both)
    generator, discriminator = 11_365_633, 2_762_689
    counts = {
        "C": (2 * generator, 2 * discriminator),
        "NC": (generator, discriminator),
        "pix2pix": (generator, discriminator + 64 * 4 * 4),  # D sees cat([x, y]): 2 channels
    }
    for name, model in [("C", CycleGAN()), ("NC", CycleGAN(cyclic=False)), ("pix2pix", Pix2Pix())]:
        found = (parameter_count(model.generators()), parameter_count(model.discriminators()))
        assert found == counts[name], name


def test_networks_name_a_dtype_or_device_that_does_not_fit() -> None:
    generator = ResnetGenerator(base_channels=4, num_residual_blocks=1)
    with pytest.raises(TypeError, match="image has dtype torch.bfloat16 but ResnetGenerator"):
        generator(torch.rand(1, 1, 8, 8, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="image on meta, weights on cpu"):
        generator(torch.rand(1, 1, 8, 8, device="meta"))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts for the convolutions
        assert generator(torch.rand(1, 1, 8, 8, dtype=torch.bfloat16)).shape == (1, 1, 8, 8)
    assert generator.double()(torch.rand(1, 1, 8, 8, dtype=torch.float64)).dtype == torch.float64
