"""Tests of ``RegistrationCorrection``: G followed by R, the correction (Eq. 7) and smoothness
(Eq. 8) losses, and the full RegGAN update (Eq. 9)."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from regcorrect import CorrectionOutput, RegistrationCorrection, RegUNet, warp
from regcorrect.correction import run_registration, source_alignment
from regcorrect.losses import (
    centered_correction_loss,
    correction_loss,
    discriminator_loss,
    generator_loss,
    smoothness_loss,
)
from regcorrect.registration import (
    RegistrationFields,
    affine_to_displacement,
    compose,
    moment_alignment,
)

from .registration.test_alignment import contrast_pair, outline_error, similarity

README = Path(__file__).resolve().parents[1] / "README.md"
SMALL = (8, 16, 16, 16)


def tiny_generator() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 3, padding=1), nn.Tanh()
    )


class TinyPatchGAN(nn.Module):
    """A PatchGAN-like discriminator: strided conv, LeakyReLU, a 1-channel score map."""

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 8, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(8, 1, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SpyRegNet(nn.Module):
    """Records its input and returns a fixed field (tensor) or the given output."""

    def __init__(self, field=None, output=None) -> None:
        super().__init__()
        self.field, self.output, self.inputs = field, output, []

    def forward(self, x):
        self.inputs.append(x)
        if self.output is not None:
            return self.output
        return self.field.expand(x.shape[0], *self.field.shape[1:])


def constant_field(dy: float, dx: float, size=(16, 16)) -> torch.Tensor:
    field = torch.zeros(1, 2, *size)
    field[:, 0], field[:, 1] = dy, dx
    return field


def images(batch=2, size=(32, 32), channels=1):
    return torch.rand(batch, channels, *size) * 2 - 1, torch.rand(batch, channels, *size) * 2 - 1


class TestRegistrationCorrection:
    def test_readme_snippet(self):
        text = README.read_text()
        blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
        quickstart = [b for b in blocks if "RegistrationCorrection(my_generator" in b]
        assert len(quickstart) == 1
        namespace: dict = {}
        exec(compile(quickstart[0], str(README), "exec"), namespace)  # verbatim
        out, generator = namespace["out"], namespace["my_generator"]
        assert isinstance(out, CorrectionOutput) and out.total.shape == ()
        assert out.displacement.shape == (2, 2, 64, 64)
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.parameters())

    def test_smoke(self):
        my_generator = tiny_generator()
        source, target = images()
        model = RegistrationCorrection(my_generator, RegUNet(spatial_dims=2, in_channels=2))
        out = model(source, target)
        out.total.backward()
        assert out.translated.shape == out.registered.shape == target.shape
        assert out.displacement.shape == out.residual.shape == (2, 2, 32, 32)
        assert sorted(out.losses) == ["correction", "smoothness"]
        assert out.total.shape == () and bool(torch.isfinite(out.total))

    @pytest.mark.parametrize("batch", [1, 3])
    @pytest.mark.parametrize("size", [(32, 32), (40, 36)])
    def test_cardinality(self, batch, size):
        model = RegistrationCorrection(tiny_generator(), RegUNet(channels=SMALL))
        out = model(*images(batch, size))
        assert out.registered.shape == (batch, 1, *size)
        assert out.displacement.shape == (batch, 2, *size)

    def test_reg_net_receives_translated_then_target(self):
        generator = tiny_generator()
        spy = SpyRegNet(constant_field(0.0, 0.0, (32, 32)))
        model = RegistrationCorrection(generator, spy)
        source, target = images()
        out = model(source, target)
        assert len(spy.inputs) == 1
        expected = torch.cat([generator(source), target], dim=1)
        torch.testing.assert_close(spy.inputs[0], expected)
        torch.testing.assert_close(out.translated, generator(source))

    def test_generator_gets_gradient_through_the_warp(self):
        generator = tiny_generator()
        field = constant_field(0.4, -1.3)  # fixed, non-zero, sub-pixel
        model = RegistrationCorrection(generator, SpyRegNet(field), smoothness_weight=10.0)
        source, target = images(size=(16, 16))
        out = model(source, target)
        assert out.losses["smoothness"].item() == 0.0  # constant field
        out.total.backward()
        grads = [p.grad.clone() for p in generator.parameters()]
        assert all(g.abs().sum() > 0 for g in grads)
        # the same gradient as the correction loss on the warped translation, by hand
        generator.zero_grad()
        field2 = field.expand(2, -1, -1, -1)
        (20.0 * correction_loss(warp(generator(source), field2), target)).backward()
        for got, expected in zip(grads, generator.parameters(), strict=True):
            torch.testing.assert_close(got, expected.grad)
        # and the warp does move the image: registered != translated
        assert not torch.allclose(out.registered, out.translated)

    @pytest.mark.parametrize("weights", [(20.0, 10.0), (3.0, 0.5), (1.0, 0.0)])
    def test_losses_equal_weights_times_loss_functions(self, weights):
        torch.manual_seed(0)
        reg_net = RegUNet(channels=SMALL)
        with torch.no_grad():
            reg_net.output.weight.normal_(0.0, 0.05)  # a non-trivial field
        generator = tiny_generator()
        model = RegistrationCorrection(
            generator, reg_net, correction_weight=weights[0], smoothness_weight=weights[1]
        )
        source, target = images()
        mask = (torch.rand(2, 1, 32, 32) > 0.3).float()
        for m in (None, mask):
            out = model(source, target, mask=m)
            translated = generator(source)
            displacement = reg_net(torch.cat([translated, target], dim=1))
            registered = warp(translated, displacement)
            correction = weights[0] * correction_loss(registered, target, m)
            smoothness = weights[1] * smoothness_loss(displacement)
            torch.testing.assert_close(out.losses["correction"], correction)
            torch.testing.assert_close(out.losses["smoothness"], smoothness)
            torch.testing.assert_close(out.total, correction + smoothness)
            torch.testing.assert_close(out.registered, registered)
        assert out.losses["correction"].item() > 0
        if weights[1] > 0:
            assert out.losses["smoothness"].item() > 0

    def test_l1_penalty_and_padding_mode(self):
        field = torch.randn(1, 2, 16, 16)
        model = RegistrationCorrection(
            tiny_generator(), SpyRegNet(field), smoothness_penalty="l1", padding_mode="zeros"
        )
        source, target = images(1, (16, 16))
        out = model(source, target)
        torch.testing.assert_close(out.losses["smoothness"], 10.0 * smoothness_loss(field, "l1"))
        torch.testing.assert_close(
            out.registered, warp(out.translated, field, padding_mode="zeros")
        )

    def test_translated_path_without_generator(self):
        reg_net = RegUNet(channels=SMALL)
        model = RegistrationCorrection(None, reg_net)
        assert model.generator is None
        translated = (torch.rand(2, 1, 32, 32) * 2 - 1).requires_grad_()
        target = torch.rand(2, 1, 32, 32)
        out = model(None, target, translated=translated)
        assert out.translated is translated
        out.total.backward()
        assert translated.grad is not None and translated.grad.abs().sum() > 0

    def test_translated_overrides_generator(self):
        def must_not_run(x):
            raise AssertionError("the generator must not be called")

        model = RegistrationCorrection(must_not_run, RegUNet(channels=SMALL))
        source, target = images()
        translated = torch.rand(2, 1, 32, 32)
        out = model(source, target, translated=translated)
        assert out.translated is translated

    def test_plain_callable_generator(self):
        model = RegistrationCorrection(lambda x: torch.tanh(2 * x), RegUNet(channels=SMALL))
        source, target = images()
        out = model(source, target)
        torch.testing.assert_close(out.translated, torch.tanh(2 * source))
        out.total.backward()
        assert all(p.grad is not None for p in model.reg_net.parameters())
        assert {name.split(".")[0] for name, _ in model.named_parameters()} == {"reg_net"}

    def test_reg_net_returning_tensor_vs_affine_regunet(self):
        source, target = images()
        # a plain tensor: smoothness on the whole displacement
        field = torch.randn(1, 2, 32, 32) * 0.5
        model = RegistrationCorrection(tiny_generator(), SpyRegNet(field))
        out = model(source, target)
        assert out.residual is out.displacement
        torch.testing.assert_close(out.losses["smoothness"], 10.0 * smoothness_loss(field))

        # RegUNet(affine=True): smoothness on the dense residual only
        torch.manual_seed(0)
        reg_net = RegUNet(channels=SMALL, affine=True)
        with torch.no_grad():
            reg_net.affine_head[-1].bias.copy_(torch.tensor([0.1, 0.05, 0.2, -0.05, 0.1, 0.0]))
            reg_net.output.weight.normal_(0.0, 0.05)
        model = RegistrationCorrection(tiny_generator(), reg_net)
        out = model(source, target)
        fields = reg_net.decompose(torch.cat([out.translated, target], dim=1))
        torch.testing.assert_close(out.residual, fields.residual)
        torch.testing.assert_close(out.displacement, fields.displacement)
        torch.testing.assert_close(out.losses["smoothness"], 10.0 * smoothness_loss(out.residual))
        assert not math.isclose(
            out.losses["smoothness"].item(),
            10.0 * smoothness_loss(out.displacement).item(),
            rel_tol=0.1,
        )  # the affine part is not penalised
        torch.testing.assert_close(out.registered, warp(out.translated, fields.displacement))

    def test_reg_net_returning_registration_fields(self):
        displacement = torch.randn(2, 2, 16, 16)
        residual = torch.randn(2, 2, 16, 16) * 0.1
        spy = SpyRegNet(output=RegistrationFields(displacement=displacement, residual=residual))
        model = RegistrationCorrection(tiny_generator(), spy)
        out = model(*images(size=(16, 16)))
        assert out.displacement is displacement and out.residual is residual
        torch.testing.assert_close(out.losses["smoothness"], 10.0 * smoothness_loss(residual))

    def test_exception(self):
        generator = tiny_generator()
        model = RegistrationCorrection(generator, RegUNet(channels=SMALL))
        source, target = images()
        with pytest.raises(ValueError, match="source and target must share"):
            model(source, torch.rand(2, 1, 32, 40))
        with pytest.raises(ValueError, match="source and target must share"):
            model(torch.rand(3, 1, 32, 32), target)
        with pytest.raises(ValueError, match="source must be a 4-D tensor"):
            model(torch.rand(2, 1, 4, 32, 32), target)
        with pytest.raises(TypeError, match="source"):
            model(None, target)
        with pytest.raises(ValueError, match="source on cpu, target on meta"):
            model(source, target.to("meta"))
        with pytest.raises(ValueError, match="translated on meta, target on cpu"):
            model(None, target, translated=torch.rand(2, 1, 32, 32, device="meta"))
        for weight in (None, True, "a", math.inf):
            with pytest.raises(ValueError, match="correction_weight must be >= 0"):
                RegistrationCorrection(generator, RegUNet(channels=SMALL), correction_weight=weight)
        with pytest.raises(TypeError, match="target"):
            model(source, target.long())
        with pytest.raises(ValueError, match="target must be a 4-D or 5-D"):
            model(source, target[0])
        with pytest.raises(ValueError, match=r"translated \(the generator's output\)"):
            RegistrationCorrection(nn.Conv2d(1, 2, 1), RegUNet(channels=SMALL))(source, target)
        with pytest.raises(ValueError, match="translated"):
            model(source, target, translated=torch.rand(2, 1, 16, 16))
        with pytest.raises(ValueError, match="translated must be given"):
            RegistrationCorrection(None, RegUNet(channels=SMALL))(source, target)
        wrong_field = SpyRegNet(torch.zeros(1, 2, 16, 16))
        with pytest.raises(ValueError, match=r"reg_net must return a displacement of shape"):
            RegistrationCorrection(generator, wrong_field)(source, target)
        wrong_channels = SpyRegNet(torch.zeros(1, 3, 32, 32))
        with pytest.raises(ValueError, match=r"\(2, 2, 32, 32\)"):
            RegistrationCorrection(generator, wrong_channels)(source, target)
        with pytest.raises(TypeError, match="reg_net must return"):
            RegistrationCorrection(generator, SpyRegNet(output=[1, 2]))(source, target)
        with pytest.raises(TypeError, match="generator"):
            RegistrationCorrection("unet", RegUNet(channels=SMALL))
        with pytest.raises(TypeError, match="reg_net"):
            RegistrationCorrection(generator, None)
        with pytest.raises(ValueError, match="correction_weight"):
            RegistrationCorrection(generator, RegUNet(channels=SMALL), correction_weight=-1)
        with pytest.raises(ValueError, match="smoothness_penalty"):
            RegistrationCorrection(generator, RegUNet(channels=SMALL), smoothness_penalty="l3")
        with pytest.raises(ValueError, match="padding_mode"):
            RegistrationCorrection(generator, RegUNet(channels=SMALL), padding_mode="wrap")

    def test_batch_items_are_independent(self):
        model = RegistrationCorrection(tiny_generator(), RegUNet(channels=SMALL))
        with torch.no_grad():
            model.reg_net.output.weight.normal_(0.0, 0.05)
        source, target = images(3)
        out = model(source, target)
        for i in range(3):
            single = model(source[i : i + 1], target[i : i + 1])
            torch.testing.assert_close(single.registered, out.registered[i : i + 1])
            torch.testing.assert_close(single.displacement, out.displacement[i : i + 1])
        per_item = [correction_loss(out.registered[i : i + 1], target[i : i + 1]) for i in range(3)]
        torch.testing.assert_close(out.losses["correction"], 20.0 * torch.stack(per_item).mean())

    def test_3d(self):
        generator = nn.Conv3d(1, 1, 3, padding=1)
        model = RegistrationCorrection(generator, RegUNet(spatial_dims=3, channels=(4, 8)))
        source, target = torch.rand(2, 1, 8, 10, 12), torch.rand(2, 1, 8, 10, 12)
        out = model(source, target)
        assert out.displacement.shape == (2, 3, 8, 10, 12)
        out.total.backward()
        assert generator.weight.grad is not None

    def test_autocast_bfloat16_forward(self):
        model = RegistrationCorrection(tiny_generator(), RegUNet(channels=SMALL, affine=True))
        source, target = images()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(source, target)
        assert out.total.dtype == torch.float32 and bool(torch.isfinite(out.total))
        assert out.registered.dtype == out.translated.dtype
        out.total.backward()
        assert all(p.grad is not None for p in model.generator.parameters())

    def test_centering_weight_adds_the_centred_term(self):
        reg_net = RegUNet(channels=SMALL)
        model = RegistrationCorrection(tiny_generator(), reg_net, centering_weight=3.0)
        assert RegistrationCorrection(tiny_generator(), reg_net).centering is None
        model.centering.running_mean.copy_(torch.tensor([0.5, -0.25]))
        source, target = images()
        target[:, :, :4] = -1.0  # background rows are left out of the running mean
        out = model(source, target)
        expected = 3.0 * centered_correction_loss(
            out.translated, target, out.displacement, torch.tensor([0.5, -0.25])
        )
        torch.testing.assert_close(out.losses["centering"], expected)
        torch.testing.assert_close(
            out.total, out.losses["correction"] + out.losses["smoothness"] + expected
        )
        foreground = out.displacement.detach()[:, :, 4:].mean(dim=(0, 2, 3))
        torch.testing.assert_close(
            model.centering.running_mean,
            0.98 * torch.tensor([0.5, -0.25]) + 0.02 * foreground,
        )
        model.zero_grad()
        out.losses["centering"].backward()
        assert all(p.grad is None for p in reg_net.parameters())  # G only
        assert all(p.grad is not None for p in model.generator.parameters())

    def test_centering_in_3d_and_errors(self):
        model = RegistrationCorrection(
            nn.Conv3d(1, 1, 3, padding=1),
            RegUNet(spatial_dims=3, channels=(4, 8)),
            centering_weight=1.0,
        )
        out = model(torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 8))
        assert model.centering.running_mean.shape == (3,)
        out.total.backward()
        with pytest.raises(ValueError, match="centering_weight"):
            RegistrationCorrection(tiny_generator(), RegUNet(channels=SMALL), centering_weight=-1)


def two_contrasts(angle=6.0, scale=1.05, shift=(3.0, -2.0), size=(64, 60)):
    """A "T1" source moved by a similarity and a "T2" target in place: one outline, opposite
    contrasts. Returns ``(source, target, truth)`` (float32; ``truth``: the field that aligns
    the source's geometry onto the target's)."""
    linear = similarity(angle, scale, (0.0, 0.0))[:, :2]
    source, target, _, truth = contrast_pair(size, linear, shift)
    return source.float(), target.float(), truth.float()


class TestInitialAlignment:
    """``initial_alignment="source"``: R starts from the source's foreground aligned onto the
    target's."""

    def test_reg_net_sees_the_aligned_translation_and_the_fields_compose(self):
        source, target, _ = two_contrasts()
        translated = torch.rand_like(source) * 2 - 1
        field = constant_field(0.5, -0.25, size=(64, 60))
        spy = SpyRegNet(field)
        fields = run_registration(
            spy, translated, target, initial_alignment="source", source=source
        )
        # as documented: the foreground moments, refined by 5 Levenberg-Marquardt steps
        start = affine_to_displacement(
            moment_alignment(source, target, weights="foreground", refine_steps=5), (64, 60)
        )
        torch.testing.assert_close(spy.inputs[0], torch.cat([warp(translated, start), target], 1))
        torch.testing.assert_close(fields.displacement, compose(field, start))
        torch.testing.assert_close(fields.residual, field)
        # without it: the paper's R, from the identity
        plain = run_registration(spy, translated, target)
        torch.testing.assert_close(plain.displacement, field)

    def test_a_regunet_starts_its_passes_from_the_alignment(self, monkeypatch):
        """RegUNet gets S as its initial field: each pass warps G(x) itself once, and with
        passes=0 the field is S without any warp of G(x)."""
        source, target, _ = two_contrasts(size=(32, 32))
        translated = torch.rand_like(source) * 2 - 1
        start = source_alignment(source, target)
        net = RegUNet(channels=SMALL, passes=2)
        calls: list[dict] = []
        decompose = net.decompose
        monkeypatch.setattr(
            net, "decompose", lambda x, **kw: calls.append(kw) or decompose(x, **kw)
        )
        fields = run_registration(
            net, translated, target, initial_alignment="source", source=source
        )
        torch.testing.assert_close(calls[0]["initial"], start)
        torch.testing.assert_close(
            fields.displacement,
            decompose(torch.cat([translated, target], 1), initial=start).displacement,
        )
        closed_form = RegUNet(channels=SMALL, passes=0)
        monkeypatch.setattr(
            "regcorrect.registration.regunet.warp", lambda *a, **k: pytest.fail("warped")
        )
        fields = run_registration(
            closed_form, translated, target, initial_alignment="source", source=source
        )
        torch.testing.assert_close(fields.displacement, start)

    def test_an_untrained_r_already_aligns_two_contrasts(self):
        """R's output starts near zero, so the field is the source's alignment: the true
        similarity within a tenth of a pixel, though G(x) (here: the source) has the other
        contrast, which moves intensity-weighted moments by pixels."""
        source, target, truth = two_contrasts()
        model = RegistrationCorrection(
            nn.Identity(), RegUNet(channels=SMALL), initial_alignment="source"
        )
        out = model(source, target)
        assert outline_error(out.displacement, truth, target) < 0.1
        plain = RegistrationCorrection(nn.Identity(), RegUNet(channels=SMALL))(source, target)
        assert outline_error(plain.displacement, truth, target) > 3.0
        # registered = G(x) warped onto the target: the outline now matches
        outline = lambda image: (image.detach()[0, 0] > -0.9).float()  # noqa: E731
        assert float((outline(out.registered) - outline(target)).abs().mean()) < 0.01

    def test_3d(self):
        spatial = (30, 34, 32)
        linear = np.eye(3) + np.array([[0.04, 0.02, 0.0], [-0.02, 0.04, 0.01], [0.0, 0.0, 0.03]])
        source, target, _, truth = contrast_pair(spatial, linear, (1.5, -1.0, 0.5))
        model = RegistrationCorrection(
            nn.Identity(),
            RegUNet(spatial_dims=3, channels=(4, 8), passes=0),
            initial_alignment="source",
        )
        out = model(source.float(), target.float())
        assert outline_error(out.displacement, truth, target) < 0.1

    def test_gradients_reach_g_and_r(self):
        source, target, _ = two_contrasts(size=(32, 32))
        generator = tiny_generator()
        model = RegistrationCorrection(
            generator, RegUNet(channels=SMALL), initial_alignment="source"
        )
        model(source, target).total.backward()
        for net in (generator, model.reg_net):
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())

    def test_translated_path_and_register_need_the_source(self):
        source, target, _ = two_contrasts(size=(32, 32))
        model = RegistrationCorrection(None, RegUNet(channels=SMALL), initial_alignment="source")
        translated = torch.rand_like(target) * 2 - 1
        with pytest.raises(ValueError, match=r"source must be given.*initial_alignment='source'"):
            model(None, target, translated=translated)
        with pytest.raises(ValueError, match="source must be given"):
            model.register(translated, target)
        out = model(source, target, translated=translated)
        torch.testing.assert_close(
            out.displacement, model.register(translated, target, source=source).displacement
        )

    def test_errors(self):
        with pytest.raises(ValueError, match="initial_alignment must be one of"):
            RegistrationCorrection(nn.Identity(), RegUNet(channels=SMALL), initial_alignment="x")
        source, target, _ = two_contrasts(size=(32, 32))
        with pytest.raises(ValueError, match="source and target must share"):
            run_registration(
                SpyRegNet(constant_field(0, 0, (32, 32))),
                target,
                target,
                initial_alignment="source",
                source=source[:, :, :16],
            )


class TestTrainingStep:
    def setup_parts(self, batch=2):
        torch.manual_seed(0)
        generator, reg_net, discriminator = (
            tiny_generator(),
            RegUNet(channels=SMALL),
            TinyPatchGAN(),
        )
        model = RegistrationCorrection(generator, reg_net)
        optimizers = {
            "optimizer_g": torch.optim.Adam(generator.parameters(), lr=1e-3),
            "optimizer_r": torch.optim.Adam(reg_net.parameters(), lr=1e-3),
            "optimizer_d": torch.optim.Adam(discriminator.parameters(), lr=1e-3),
        }
        return model, discriminator, optimizers, images(batch)

    def test_smoke_and_values(self):
        model, discriminator, optimizers, (source, target) = self.setup_parts()
        # the same computation by hand, on copies taken before the update
        g0, r0, d0 = (copy.deepcopy(m) for m in (model.generator, model.reg_net, discriminator))
        result = model.training_step(source, target, discriminator=discriminator, **optimizers)
        assert set(result) == {"correction", "smoothness", "adversarial", "discriminator", "total"}
        assert all(isinstance(v, float) and math.isfinite(v) for v in result.values())

        translated = g0(source)
        displacement = r0(torch.cat([translated, target], dim=1))
        correction = 20.0 * correction_loss(warp(translated, displacement), target)
        smoothness = 10.0 * smoothness_loss(displacement)
        adversarial = generator_loss(d0(translated), "lsgan")
        total = correction + smoothness + adversarial
        assert result["correction"] == pytest.approx(correction.item(), rel=1e-5)
        assert result["smoothness"] == pytest.approx(smoothness.item(), rel=1e-4, abs=1e-9)
        assert result["adversarial"] == pytest.approx(adversarial.item(), rel=1e-5)
        assert result["total"] == pytest.approx(total.item(), rel=1e-5)
        d_loss = discriminator_loss(d0(target), d0(translated.detach()), "lsgan")
        assert result["discriminator"] == pytest.approx(d_loss.item(), rel=1e-5)

    @pytest.mark.parametrize("name", ["source", "target"])
    def test_non_finite_input_is_refused_before_any_update(self, name):
        model, discriminator, optimizers, (source, target) = self.setup_parts()
        pair = {"source": source.clone(), "target": target.clone()}
        pair[name][1, 0, 5, 6] = math.nan
        before = [p.detach().clone() for p in [*model.parameters(), *discriminator.parameters()]]
        with pytest.raises(ValueError, match=f"{name} must be finite"):
            model.training_step(*pair.values(), discriminator=discriminator, **optimizers)
        after = [*model.parameters(), *discriminator.parameters()]
        assert all(torch.equal(p, old) for p, old in zip(after, before, strict=True))

    def test_all_parameters_change(self):
        model, discriminator, optimizers, (source, target) = self.setup_parts()
        parts = {"G": model.generator, "R": model.reg_net, "D": discriminator}
        before = {k: [p.detach().clone() for p in m.parameters()] for k, m in parts.items()}
        model.training_step(source, target, discriminator=discriminator, **optimizers)
        for key, module in parts.items():
            unchanged = [
                name
                for (name, p), old in zip(module.named_parameters(), before[key], strict=True)
                if torch.equal(p, old)
            ]
            assert unchanged == [], f"{key}: {unchanged}"

    def test_discriminator_gets_no_gradient_from_the_generator_step(self):
        model, discriminator, optimizers, (source, target) = self.setup_parts()
        g0, r0, d0 = (copy.deepcopy(m) for m in (model.generator, model.reg_net, discriminator))
        seen = {}
        step_g = optimizers["optimizer_g"].step

        def spy_step(*args, **kwargs):  # runs right after the generator-side backward
            seen["d_grads"] = [p.grad for p in discriminator.parameters()]
            seen["g_grads"] = [p.grad.clone() for p in model.generator.parameters()]
            return step_g(*args, **kwargs)

        optimizers["optimizer_g"].step = spy_step
        model.training_step(source, target, discriminator=discriminator, **optimizers)
        assert seen["d_grads"] == [None] * len(seen["d_grads"])
        assert all(p.requires_grad for p in discriminator.parameters())  # unfrozen again

        # G's gradient: the full Eq. 9 objective, adversarial term included
        translated = g0(source)
        displacement = r0(torch.cat([translated, target], dim=1))
        total = (
            20.0 * correction_loss(warp(translated, displacement), target)
            + 10.0 * smoothness_loss(displacement)
            + generator_loss(d0(translated))
        )
        total.backward()
        for got, expected in zip(seen["g_grads"], g0.parameters(), strict=True):
            torch.testing.assert_close(got, expected.grad, rtol=1e-4, atol=1e-7)

        # D's gradient after the step: exactly its own loss on the detached translation
        d0.zero_grad()
        discriminator_loss(d0(target), d0(g0(source).detach())).backward()
        for got, expected in zip(discriminator.parameters(), d0.parameters(), strict=True):
            torch.testing.assert_close(got.grad, expected.grad, rtol=1e-4, atol=1e-7)

    def test_without_discriminator(self):
        model, _, optimizers, (source, target) = self.setup_parts()
        del optimizers["optimizer_d"]
        result = model.training_step(source, target, **optimizers)
        assert set(result) == {"correction", "smoothness", "total"}
        assert result["total"] == pytest.approx(result["correction"] + result["smoothness"])

    def test_one_optimizer_for_g_and_r(self):
        model, discriminator, optimizers, (source, target) = self.setup_parts()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        before = model.reg_net.output.weight.detach().clone()
        model.training_step(
            source,
            target,
            optimizer_g=optimizer,
            discriminator=discriminator,
            optimizer_d=optimizers["optimizer_d"],
            gan_mode="hinge",
            adversarial_weight=0.5,
        )
        assert not torch.equal(model.reg_net.output.weight, before)

    def test_exception(self):
        model, discriminator, optimizers, (source, target) = self.setup_parts()
        with pytest.raises(ValueError, match="discriminator and optimizer_d"):
            model.training_step(
                source, target, optimizer_g=optimizers["optimizer_g"], discriminator=discriminator
            )
        with pytest.raises(ValueError, match="gan_mode"):
            model.training_step(source, target, gan_mode="wgan", **optimizers)

    def test_autocast_bfloat16(self):
        model, discriminator, optimizers, (source, target) = self.setup_parts()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            result = model.training_step(source, target, discriminator=discriminator, **optimizers)
        assert set(result) == {"correction", "smoothness", "adversarial", "discriminator", "total"}
        assert all(math.isfinite(v) for v in result.values())

    def test_losses_decrease_over_steps(self):
        model, _, optimizers, _ = self.setup_parts()
        optimizer_g = torch.optim.Adam(model.generator.parameters(), lr=1e-2)
        source = torch.rand(2, 1, 32, 32) * 2 - 1
        target = -source  # a learnable translation (inversion), aligned
        step = {"optimizer_g": optimizer_g, "optimizer_r": optimizers["optimizer_r"]}
        first = model.training_step(source, target, **step)
        for _ in range(40):
            last = model.training_step(source, target, **step)
        assert last["correction"] < 0.5 * first["correction"]
