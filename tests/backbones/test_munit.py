"""Tests of the MUNIT backbone (modes C and NC) and of its AdaIN / multi-scale D layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from regcorrect.backbones._munit_layers import (
    AdaptiveInstanceNorm2d,
    LayerNorm2d,
    MultiScaleDiscriminator,
    adaptive_instance_norm,
)
from regcorrect.backbones.base import TranslationBackbone
from regcorrect.backbones.munit import MUNITBackbone

TINY = {
    "base_channels": 4,
    "style_dim": 3,
    "num_residual_blocks": 1,
    "mlp_channels": 8,
    "discriminator_channels": 4,
    # MUNIT's discriminator depth and scales, to exercise the 32×32 / 3-scale case
    "discriminator_layers": 4,
    "discriminator_scales": 3,
}


def tiny(**overrides: object) -> MUNITBackbone:
    torch.manual_seed(0)
    return MUNITBackbone(**{**TINY, **overrides})


def images(batch: int, channels: int, height: int = 32, width: int = 32) -> torch.Tensor:
    return torch.rand(batch, channels, height, width) * 2 - 1


def grad_norm(network: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in network.parameters() if p.grad is not None)


class TestAdaptiveInstanceNorm:
    def test_values(self) -> None:
        torch.manual_seed(0)
        features = torch.randn(2, 3, 8, 8) * 4 + 7
        scale = torch.tensor([[2.0, 0.5, 1.0], [3.0, 1.5, 0.25]])
        shift = torch.tensor([[1.0, -2.0, 0.0], [0.5, 4.0, -1.0]])
        out = adaptive_instance_norm(features, scale, shift, eps=0.0)
        torch.testing.assert_close(out.mean(dim=(2, 3)), shift, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.std(dim=(2, 3), unbiased=False), scale, atol=1e-5, rtol=0)
        # every (sample, channel) is normalised with its own statistics
        mean = features.mean(dim=(2, 3), keepdim=True)
        std = features.std(dim=(2, 3), unbiased=False, keepdim=True)
        expected = (features - mean) / std * scale[..., None, None] + shift[..., None, None]
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)

    def test_identity_affine_is_instance_norm(self) -> None:
        features = torch.randn(2, 4, 6, 5)
        out = AdaptiveInstanceNorm2d(4)(features, torch.ones(2, 4), torch.zeros(2, 4))
        torch.testing.assert_close(out, F.instance_norm(features))

    def test_bfloat16_keeps_dtype(self) -> None:
        features = torch.randn(1, 2, 4, 4).bfloat16()
        out = adaptive_instance_norm(features, torch.ones(1, 2), torch.zeros(1, 2))
        assert out.dtype == torch.bfloat16

    def test_exception(self) -> None:
        with pytest.raises(ValueError, match="scale must have shape"):
            adaptive_instance_norm(torch.randn(2, 3, 4, 4), torch.ones(2, 4), torch.zeros(2, 3))
        with pytest.raises(ValueError, match="features must be a 4-D"):
            adaptive_instance_norm(torch.randn(3, 4, 4), torch.ones(1, 3), torch.zeros(1, 3))
        with pytest.raises(ValueError, match="3 channels"):
            AdaptiveInstanceNorm2d(3)(torch.randn(1, 2, 4, 4), torch.ones(1, 2), torch.zeros(1, 2))

    def test_gradcheck(self) -> None:
        inputs = (
            torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True),
            torch.randn(1, 2, dtype=torch.float64, requires_grad=True),
            torch.randn(1, 2, dtype=torch.float64, requires_grad=True),
        )
        assert torch.autograd.gradcheck(adaptive_instance_norm, inputs)


def test_layer_norm_normalises_each_sample() -> None:
    norm = LayerNorm2d(3)
    with torch.no_grad():
        norm.gamma.fill_(1.0)
    out = norm(torch.randn(2, 3, 5, 5) * 3 + 2)
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(1, 2, 3)), torch.ones(2), atol=1e-4, rtol=0)


class TestMultiScaleDiscriminator:
    def test_small_images_with_three_scales(self) -> None:
        discriminator = MultiScaleDiscriminator(in_channels=1, base_channels=4)
        outputs = discriminator(images(2, 1, 32, 48))
        # 32×48 → 16×24 → (8×12 is below 2**4, so the third scale sees 16×24 again)
        assert [tuple(o.shape) for o in outputs] == [(2, 1, 2, 3), (2, 1, 1, 1), (2, 1, 1, 1)]

    def test_standard_pyramid(self) -> None:
        discriminator = MultiScaleDiscriminator(in_channels=1, base_channels=2, num_layers=2)
        outputs = discriminator(images(1, 1, 32, 32))
        assert [o.shape[-1] for o in outputs] == [8, 4, 2]

    def test_too_small(self) -> None:
        with pytest.raises(ValueError, match="at least 16×16"):
            MultiScaleDiscriminator(in_channels=1, base_channels=4)(images(1, 1, 8, 8))


@pytest.mark.parametrize("cyclic", [True, False])
class TestMUNITTraining:
    def test_generator_and_discriminator_steps(self, cyclic: bool) -> None:
        model = tiny(cyclic=cyclic)
        source, target = images(2, 1), images(2, 1)
        output = model.generator_forward(source, target)
        assert output.translated.shape == target.shape and output.translated.requires_grad
        expected_terms = {"adversarial_target"}
        if cyclic:
            expected_terms |= {"adversarial_source"} | {
                f"{kind}_reconstruction_{domain}"
                for kind in ("image", "style", "content")
                for domain in ("source", "target")
            }
        assert set(output.losses) == expected_terms
        for name, loss in output.losses.items():
            assert loss.dtype == torch.float32 and loss.ndim == 0, name
            assert torch.isfinite(loss), name
        assert set(output.fakes) == ({"source", "target"} if cyclic else {"target"})
        assert all(not fake.requires_grad for fake in output.fakes.values())

        # what the +R engine does: sum, plus an L1 correction through `translated`
        total = sum(output.losses.values()) + (output.translated - target).abs().mean()
        total.backward()
        for name, network in model.generators().items():
            assert grad_norm(network) > 0, name

        model.zero_grad()
        d_losses = model.discriminator_losses(source, target, output.fakes)
        assert set(d_losses) == (
            {"discriminator_source", "discriminator_target"} if cyclic else {"discriminator_target"}
        )
        assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in d_losses.values())
        sum(d_losses.values()).backward()
        for name, network in model.discriminators().items():
            assert grad_norm(network) > 0, name
        for name, network in model.generators().items():
            assert grad_norm(network) == 0, name

    def test_bf16_autocast_gives_float32_losses(self, cyclic: bool) -> None:
        model = tiny(cyclic=cyclic)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = model.generator_forward(images(1, 1), images(1, 1))
        assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in output.losses.values())

    @pytest.mark.parametrize(
        ("in_channels", "out_channels", "size"),
        [(1, 1, (32, 32)), (3, 3, (32, 48)), (3, 1, (48, 32))],
    )
    def test_translate_shape(
        self, cyclic: bool, in_channels: int, out_channels: int, size: tuple[int, int]
    ) -> None:
        model = tiny(cyclic=cyclic, in_channels=in_channels, out_channels=out_channels)
        translated = model.translate(images(2, in_channels, *size))
        assert translated.shape == (2, out_channels, *size)
        assert translated.abs().max() <= 1

    def test_translate_is_deterministic(self, cyclic: bool) -> None:
        model = tiny(cyclic=cyclic)
        source = images(2, 1)
        with torch.no_grad():
            first, second = model.translate(source), model.translate(source)
            torch.testing.assert_close(first, second, rtol=0, atol=0)
            # the default style is the prior mean; another style gives another image
            zero = model.translate(source, style=torch.zeros(2, model.style_dim))
            other = model.translate(source, style=torch.full((2, model.style_dim), 2.0))
        torch.testing.assert_close(first, zero, rtol=0, atol=0)
        assert not torch.allclose(first, other)

    def test_bad_input(self, cyclic: bool) -> None:
        model = tiny(cyclic=cyclic)
        good = images(2, 1)
        with pytest.raises(ValueError, match="source must have 1 channels"):
            model.translate(images(2, 3))
        with pytest.raises(ValueError, match="multiples of 2\\*\\*num_downsamplings = 4"):
            model.translate(images(2, 1, 32, 34))
        with pytest.raises(ValueError, match="at least 16"):
            model.translate(images(2, 1, 8, 8))
        with pytest.raises(ValueError, match="source must be a 4-D"):
            model.translate(torch.rand(1, 32, 32))
        with pytest.raises(TypeError, match="source must be a torch.Tensor"):
            model.translate(good.numpy())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="style must have shape"):
            model.translate(good, style=torch.zeros(2, model.style_dim + 1))
        with pytest.raises(ValueError, match="same batch size and spatial size"):
            model.generator_forward(good, images(2, 1, 32, 48))
        with pytest.raises(ValueError, match="target must have 1 channels"):
            model.generator_forward(good, images(2, 2))
        with pytest.raises(ValueError, match="fakes must hold the key 'target'"):
            model.discriminator_losses(good, good, {"fake": good})
        with pytest.raises(ValueError, match="fakes\\['target'\\] must have 1 channels"):
            model.discriminator_losses(good, good, {"target": images(2, 3), "source": good})


def test_nc_builds_only_the_x_to_y_generator_and_one_discriminator() -> None:
    cyclic, non_cyclic = tiny(cyclic=True), tiny(cyclic=False)
    assert isinstance(non_cyclic, TranslationBackbone) and non_cyclic.method == "munit"
    assert set(non_cyclic.generators()) == {"source_content_encoder", "target_decoder"}
    assert set(non_cyclic.discriminators()) == {"target_discriminator"}
    assert set(cyclic.generators()) == {
        f"{domain}_{part}"
        for domain in ("source", "target")
        for part in ("content_encoder", "style_encoder", "decoder")
    }
    assert set(cyclic.discriminators()) == {"source_discriminator", "target_discriminator"}
    # nothing else is hidden in the module: every parameter belongs to a listed network
    for model in (cyclic, non_cyclic):
        listed = {**model.generators(), **model.discriminators()}
        assert sum(p.numel() for p in model.parameters()) == sum(
            p.numel() for network in listed.values() for p in network.parameters()
        )
    assert sum(p.numel() for p in non_cyclic.parameters()) < sum(
        p.numel() for p in cyclic.parameters()
    )


def test_nc_translates_with_the_image_the_discriminator_judges() -> None:
    output = tiny(cyclic=False).generator_forward(images(2, 1), images(2, 1))
    torch.testing.assert_close(output.fakes["target"], output.translated.detach())


def test_c_translates_with_the_target_style() -> None:
    model = tiny(cyclic=True)
    source, target = images(2, 1), images(2, 1)
    output = model.generator_forward(source, target)
    with torch.no_grad():
        expected = model.translate(source, style=model.encode_target_style(target))
    torch.testing.assert_close(output.translated.detach(), expected)
    with pytest.raises(ValueError, match="needs cyclic=True"):
        tiny(cyclic=False).encode_target_style(target)


def test_loss_weights_scale_the_terms() -> None:
    source, target = images(2, 1), images(2, 1)
    # tiny() re-seeds before building, so both models draw the same prior styles
    unit = tiny(image_reconstruction_weight=1.0).generator_forward(source, target).losses
    default = tiny().generator_forward(source, target).losses
    for domain in ("source", "target"):
        name = f"image_reconstruction_{domain}"
        torch.testing.assert_close(default[name], 10 * unit[name])
    torch.testing.assert_close(default["adversarial_target"], unit["adversarial_target"])


def test_cycle_term_only_when_weighted() -> None:
    losses = tiny(cycle_weight=10.0).generator_forward(images(1, 1), images(1, 1)).losses
    assert {"cycle_source", "cycle_target"} <= set(losses)
    assert all(torch.isfinite(losses[name]) for name in ("cycle_source", "cycle_target"))
    losses = tiny(style_reconstruction_weight=0.0).generator_forward(images(1, 1), images(1, 1))
    assert not any(name.startswith(("cycle", "style")) for name in losses.losses)


def test_follows_input_dtype() -> None:
    model = tiny(cyclic=False).double()
    output = model.generator_forward(images(1, 1).double(), images(1, 1).double())
    assert output.translated.dtype == torch.float64


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("gan_mode", "wgan", "gan_mode must be one of"),
        ("padding_mode", "circular", "padding_mode must be one of"),
        ("image_reconstruction_weight", -1.0, "image_reconstruction_weight must be >= 0"),
        ("adversarial_weight", 0.0, "adversarial_weight must be > 0"),
        ("style_dim", 0, "style_dim must be > 0"),
        ("num_downsamplings", -1, "num_downsamplings must be >= 0"),
    ],
)
def test_bad_constructor_arguments(argument: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MUNITBackbone(**{**TINY, argument: value})
