"""Tests of ``build_model`` / ``TranslationModel``: every method in every mode, with tiny networks
at 32×32 on CPU, plus the replay buffer, the learning-rate decay and checkpoint round trips."""

from __future__ import annotations

import io
import math
import re
from copy import deepcopy as copy_module
from typing import Any

import numpy as np
import pytest
import torch

from regcorrect import MODES, TranslationModel, build_model
from regcorrect.backbones import METHODS, CycleGAN
from regcorrect.losses import centered_correction_loss
from regcorrect.modes import ReplayBuffer
from regcorrect.registration import (
    RegistrationFields,
    affine_to_displacement,
    compose,
    moment_alignment,
    warp,
)

from .registration.test_fields import inverse_affine

TINY: dict[str, dict[str, Any]] = {
    "cyclegan": {"base_channels": 8, "num_residual_blocks": 1, "discriminator_channels": 8},
    "munit": {
        "base_channels": 4,
        "style_dim": 3,
        "num_residual_blocks": 1,
        "mlp_channels": 8,
        "discriminator_channels": 4,
        "discriminator_layers": 3,
        "discriminator_scales": 2,
    },
    "unit": {
        "base_channels": 4,
        "num_residual_blocks": 1,
        "discriminator_channels": 4,
        "discriminator_layers": 3,
        "discriminator_scales": 2,
    },
    "nicegan": {"base_channels": 4, "num_residual_blocks": 1, "discriminator_layers": 5},
}
REGISTRATION = {"channels": (8, 16, 16, 16)}
COMBINATIONS = [(method, mode) for method in TINY for mode in ("c", "c+r", "nc", "nc+r")] + [
    ("cyclegan", "pix2pix"),
    ("cyclegan", "pix2pix+r"),
]


def tiny_model(method: str, mode: str, **options: Any) -> TranslationModel:
    if mode.endswith("+r"):
        options.setdefault("registration", REGISTRATION)
    return build_model(method, mode, seed=0, **{**TINY[method], **options})


def images(batch: int = 2, channels: int = 1, size: int = 32) -> torch.Tensor:
    return torch.rand(batch, channels, size, size) * 2 - 1


def has_inverse_generator(model: TranslationModel) -> bool:
    """Whether the backbone can translate Y→X (the second generator of mode C)."""
    backbone = model.backbone
    if model.method == "unit":
        return "source" in backbone.generator.decoders
    name = {
        "cyclegan": "inverse_generator",
        "pix2pix": "inverse_generator",
        "munit": "source_decoder",
        "nicegan": "generator_target_to_source",
    }[model.method]
    return name in model.networks


def snapshot(model: TranslationModel) -> dict[str, list[torch.Tensor]]:
    return {
        name: [p.detach().clone() for p in net.parameters()] for name, net in model.networks.items()
    }


def test_methods_and_modes_are_the_papers() -> None:
    assert set(METHODS) == {"cyclegan", "munit", "unit", "nicegan"}
    assert MODES == ("c", "c+r", "nc", "nc+r", "pix2pix", "pix2pix+r")


@pytest.mark.parametrize(
    ("method", "mode"), COMBINATIONS, ids=[f"{a}-{b}" for a, b in COMBINATIONS]
)
def test_one_training_step(method: str, mode: str) -> None:
    model = tiny_model(method, mode)
    cyclic, registered = mode in ("c", "c+r"), mode.endswith("+r")
    assert model.mode == mode
    assert ("registration" in model.networks) is registered
    assert ("registration" in model.optimizers) is registered
    assert has_inverse_generator(model) is cyclic
    assert len(model.backbone.discriminators()) == (2 if cyclic else 1)

    before = snapshot(model)
    losses = model.train_step(images(), images())
    assert losses and all(isinstance(v, float) for v in losses.values())
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
    plus_r = {"correction", "smoothness"}
    assert plus_r & set(losses) == (plus_r if registered else set())
    assert ("l1" in losses) is (mode == "pix2pix")
    assert any(name.startswith("D/") for name in losses)
    total = sum(v for k, v in losses.items() if not k.startswith(("D/", "G/")))
    assert losses["G/total"] == pytest.approx(total, rel=1e-5)
    for name, network in model.networks.items():
        after = list(network.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(after, before[name], strict=True)), name
    assert model.step == 1

    translated = model.translate(images(3))
    assert translated.shape == (3, 1, 32, 32) and translated.dtype == torch.float32
    assert translated.abs().max() <= 1.0


def test_three_channels() -> None:
    model = tiny_model("cyclegan", "c+r", in_channels=3, out_channels=3)
    assert model.registration is not None
    assert model.registration(torch.zeros(1, 6, 32, 32)).shape == (1, 2, 32, 32)
    losses = model.train_step(images(channels=3), images(channels=3))
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert model.translate(images(1, channels=3)).shape == (1, 3, 32, 32)


def test_refining_affine_r_trains_with_three_channels() -> None:
    # R's options pass through build_model: two passes (moving = the 3 translated channels)
    registration = {"channels": (8, 16, 16, 16), "affine": True, "passes": 2}
    model = tiny_model("cyclegan", "nc+r", in_channels=3, out_channels=3, registration=registration)
    assert model.registration.passes == 2 and model.registration.affine_features == "moments"
    before = [p.detach().clone() for p in model.registration.parameters()]
    losses = model.train_step(images(channels=3), images(channels=3))
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    after = list(model.registration.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_nc_plus_r_has_fewer_parameters_than_c() -> None:
    # The paper's claim: RegGAN (NC+R) trains fewer parameters than the cycle-consistent mode C.
    # Paper configuration (CycleGAN defaults, 1 channel, default R); no step needs to run.
    with torch.device("meta"):
        cyclic = build_model("cyclegan", "c")
        reggan = build_model("cyclegan", "nc+r")
    generators = reggan.parameter_count("generator")
    assert reggan.parameter_count("registration") > 0
    assert reggan.parameter_count() == (
        generators
        + reggan.parameter_count("discriminator")
        + reggan.parameter_count("registration")
    )
    assert 2 * generators == cyclic.parameter_count("generator")
    assert reggan.parameter_count() < cyclic.parameter_count()


def test_float64_model_takes_float32_inputs() -> None:
    model = tiny_model("cyclegan", "nc+r").double()
    assert model.input_dtype == torch.float64
    losses = model.train_step(images(), images())
    assert all(math.isfinite(v) for v in losses.values())
    translated = model.translate(images())
    assert translated.dtype == torch.float64 and translated.shape == (2, 1, 32, 32)


def test_amp_step_gives_float_losses() -> None:
    model = tiny_model("cyclegan", "nc+r", amp=True)
    losses = model.train_step(images(), images())
    assert all(type(v) is float and torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert model.translate(images(1)).dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())


class TestOptimizers:
    def test_fused_adam_where_torch_has_it(self) -> None:
        model = tiny_model("cyclegan", "nc+r")
        fused = [opt.defaults["fused"] for opt in model.optimizers.values()]
        major, minor = (int(v) for v in torch.__version__.split(".")[:2])
        if (major, minor) >= (2, 4):  # fused CPU Adam exists from torch 2.4
            assert fused == [True, True, True]

    def test_loop_adam_when_fused_is_refused_and_both_train_alike(self, monkeypatch) -> None:
        fused = tiny_model("cyclegan", "nc+r")
        original = torch.optim.Adam

        def no_fused(params, *args, fused=None, **kwargs):
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be ...")
            return original(params, *args, **kwargs)

        monkeypatch.setattr(torch.optim, "Adam", no_fused)
        loop = tiny_model("cyclegan", "nc+r")
        assert all(not opt.defaults.get("fused") for opt in loop.optimizers.values())
        source, target = images(), images()
        for model in (fused, loop):
            losses = model.train_step(source, target)
            assert all(isinstance(v, float) for v in losses.values())
        # the same update up to rounding, from the same initial weights
        for (name, a), b in zip(fused.named_parameters(), loop.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


class TestReplayBuffer:
    def test_in_a_model(self) -> None:
        model = tiny_model("cyclegan", "c", replay_buffer_size=50)
        for _ in range(2):
            losses = model.train_step(images(), images())
        assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
        assert set(model.replay_buffers) == {"target", "source"}
        assert all(len(buffer.images) == 4 for buffer in model.replay_buffers.values())
        assert all(buffer.capacity == 50 for buffer in model.replay_buffers.values())

    def test_first_capacity_images_pass_through(self) -> None:
        buffer = ReplayBuffer(6, seed=0)
        first, second = torch.randn(4, 1, 2, 2), torch.randn(2, 1, 2, 2)
        torch.testing.assert_close(buffer.query(first), first, rtol=0, atol=0)
        torch.testing.assert_close(buffer.query(second), second, rtol=0, atol=0)
        torch.testing.assert_close(torch.cat(buffer.images), torch.cat([first, second]))

    def test_later_half_are_swapped_for_stored_images(self) -> None:
        capacity, batches, batch = 10, 200, 8
        buffer = ReplayBuffer(capacity, seed=3)
        buffer.query(-torch.arange(1.0, capacity + 1).view(-1, 1, 1, 1))  # stored: -1 ... -10
        swapped, seen = 0, set(range(-capacity, 0))
        for index in range(batches):
            new = torch.arange(index * batch, (index + 1) * batch, dtype=torch.float32)
            out = buffer.query(new.view(-1, 1, 1, 1)).flatten()
            assert out.shape == new.shape
            for position, (returned, given) in enumerate(
                zip(out.tolist(), new.tolist(), strict=True)
            ):
                if returned != given:
                    swapped += 1
                    # a swapped-in image was queried before: in an earlier batch or earlier in
                    # this one (it was stored when it arrived), never one still to come
                    assert int(returned) in seen | {int(v) for v in new[:position]}
            seen |= {int(v) for v in new}
            assert len(buffer.images) == capacity
        fraction = swapped / (batches * batch)
        assert 0.45 < fraction < 0.55

    def test_state_dict_round_trip(self) -> None:
        buffer = ReplayBuffer(4, seed=1)
        buffer.query(torch.randn(6, 1, 2, 2))
        state = buffer.state_dict()
        queries = [torch.randn(3, 1, 2, 2) for _ in range(5)]
        expected = [buffer.query(q) for q in queries]
        restored = ReplayBuffer(4, seed=99)
        restored.load_state_dict(state)
        for query, out in zip(queries, expected, strict=True):
            torch.testing.assert_close(restored.query(query), out, rtol=0, atol=0)

    def test_disabled_and_invalid(self) -> None:
        images_ = torch.randn(3, 1, 2, 2)
        assert ReplayBuffer(0).query(images_) is images_
        with pytest.raises(ValueError, match="capacity"):
            ReplayBuffer(-1)
        with pytest.raises(ValueError, match="replay_buffer_size must be an int >= 0, got -1"):
            tiny_model("cyclegan", "nc", replay_buffer_size=-1)

    def test_a_new_image_size_starts_a_new_history(self) -> None:
        buffer = ReplayBuffer(4, seed=0)
        buffer.query(torch.randn(4, 1, 2, 2))
        larger = torch.randn(3, 1, 3, 3)
        torch.testing.assert_close(buffer.query(larger), larger, rtol=0, atol=0)  # stored anew
        assert [tuple(i.shape) for i in buffer.images] == [(1, 1, 3, 3)] * 3
        model = tiny_model("cyclegan", "nc", replay_buffer_size=2)
        model.train_step(images(), images())
        for _ in range(3):  # crashed in torch.cat (sizes 36 and 32)
            losses = model.train_step(images(size=36), images(size=36))
        assert all(math.isfinite(v) for v in losses.values())


class TestLearningRateDecay:
    def test_constant_then_linear_to_zero(self) -> None:
        model = tiny_model("cyclegan", "nc+r", learning_rate=2e-4, total_steps=4, decay_start=2)
        source, target = images(1), images(1)

        def rates() -> set[float]:
            return {g["lr"] for o in model.optimizers.values() for g in o.param_groups}

        (initial,) = rates()
        assert initial == pytest.approx(2e-4)
        seen = []
        for _ in range(4):
            model.train_step(source, target)
            (rate,) = rates()
            seen.append(rate)
        # the rate used by step k is 2e-4 * factor(k): 1, 1, 0.5, 0 — set after step k - 1
        assert seen == pytest.approx([2e-4, 2e-4, 1e-4, 0.0])

    def test_default_start_and_constant(self) -> None:
        model = tiny_model("cyclegan", "nc", total_steps=4)  # decay_start = 2
        for _ in range(3):
            model.train_step(images(1), images(1))
        assert model.optimizers["generator"].param_groups[0]["lr"] == pytest.approx(0.5e-4)
        constant = tiny_model("cyclegan", "nc")
        constant.train_step(images(1), images(1))
        assert constant.optimizers["discriminator"].param_groups[0]["lr"] == pytest.approx(1e-4)

    def test_bad_decay_start(self) -> None:
        with pytest.raises(ValueError, match="decay_start"):
            tiny_model("cyclegan", "nc", total_steps=4, decay_start=4)


@pytest.mark.parametrize(("method", "mode"), [("cyclegan", "c+r"), ("munit", "nc+r")])
def test_checkpoint_round_trip_is_bit_identical(method: str, mode: str) -> None:
    # a buffer that is full after the first step, so that its random swaps matter
    options = {"replay_buffer_size": 3, "total_steps": 6, "decay_start": 1}
    trained = tiny_model(method, mode, **options)
    for step in range(2):
        torch.manual_seed(step)
        trained.train_step(images(), images())
    file = io.BytesIO()
    torch.save({"weights": trained.state_dict(), "state": trained.training_state()}, file)
    file.seek(0)
    checkpoint = torch.load(file, weights_only=True)

    resumed = tiny_model(method, mode, **options)
    assert not all(
        torch.equal(a, b) for a, b in zip(resumed.parameters(), trained.parameters(), strict=True)
    )
    resumed.load_state_dict(checkpoint["weights"])
    resumed.load_training_state(checkpoint["state"])
    assert resumed.step == 2
    for step in (2, 3):
        batch = images(), images()
        torch.manual_seed(step)
        expected = trained.train_step(*batch)
        torch.manual_seed(step)
        assert resumed.train_step(*batch) == expected
    for a, b in zip(resumed.parameters(), trained.parameters(), strict=True):
        assert torch.equal(a, b)
    for name, optimizer in trained.optimizers.items():
        assert resumed.optimizers[name].param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


class TestErrors:
    def test_unknown_method_and_mode(self) -> None:
        with pytest.raises(ValueError, match="method must be one of"):
            build_model("pix2pixhd", "nc")
        with pytest.raises(ValueError, match="mode must be one of"):
            build_model("cyclegan", "r")

    def test_pix2pix_needs_cyclegan(self) -> None:
        for mode in ("pix2pix", "pix2pix+r"):
            with pytest.raises(
                ValueError, match=re.escape(f"mode '{mode}' uses the CycleGAN backbone")
            ):
                build_model("munit", mode, **TINY["munit"])
        with pytest.raises(ValueError, match="'pix2pix\\+r' needs a Pix2Pix backbone"):
            TranslationModel(CycleGAN(cyclic=False, **TINY["cyclegan"]), mode="pix2pix+r")

    @pytest.mark.parametrize("mode", ["c", "nc", "pix2pix"])
    def test_registration_options_need_an_r_mode(self, mode: str) -> None:
        with pytest.raises(ValueError, match="registration"):
            build_model("cyclegan", mode, registration=REGISTRATION, **TINY["cyclegan"])

    def test_registration_network_must_match_the_mode(self) -> None:
        backbone = CycleGAN(cyclic=False, **TINY["cyclegan"])
        with pytest.raises(ValueError, match="needs registration"):
            TranslationModel(backbone, mode="nc+r")

    @pytest.mark.parametrize("target", [images(size=64), images(batch=3)], ids=["spatial", "batch"])
    def test_source_target_mismatch(self, target: torch.Tensor) -> None:
        model = tiny_model("cyclegan", "nc+r")
        with pytest.raises(ValueError, match="share batch and spatial sizes"):
            model.train_step(images(), target)
        assert model.step == 0

    @pytest.mark.parametrize("mode", ["nc", "nc+r", "pix2pix+r"])
    @pytest.mark.parametrize("bad", [math.nan, math.inf])
    def test_non_finite_inputs_are_refused_before_any_update(self, mode: str, bad: float) -> None:
        model = tiny_model("cyclegan", mode)
        before = copy_module(model.state_dict())
        for name in ("source", "target"):
            pair = {"source": images(), "target": images()}
            pair[name][0, 0, 3, 4] = bad
            with pytest.raises(ValueError, match=f"{name} must be finite"):
                model.train_step(pair["source"], pair["target"])
        assert model.step == 0
        for key, value in model.state_dict().items():
            assert torch.equal(value, before[key]), key

    def test_pix2pix_plus_r_names_a_wrong_target(self) -> None:
        model = tiny_model("cyclegan", "pix2pix+r")
        with pytest.raises(ValueError, match=r"target must have 1 channel\(s\)"):
            model.train_step(images(), images(channels=3))

    @pytest.mark.parametrize("mode", ["nc", "pix2pix", "nc+r"])
    def test_mask_must_broadcast_in_every_mode(self, mode: str) -> None:
        model = tiny_model("cyclegan", mode)
        with pytest.raises(ValueError, match=r"mask of shape \(1, 1, 16, 16\) must broadcast"):
            model.train_step(images(), images(), mask=torch.ones(1, 1, 16, 16))
        with pytest.raises(TypeError, match="mask must be a torch.Tensor"):
            model.train_step(images(), images(), mask=[[1.0]])
        assert model.step == 0
        model.train_step(images(), images(), mask=torch.ones(1, 1, 32, 32))

    def test_empty_batch_device_and_weights_are_checked(self) -> None:
        model = tiny_model("cyclegan", "nc")
        empty = torch.zeros(0, 1, 32, 32)
        with pytest.raises(ValueError, match="must hold at least one image"):
            model.train_step(empty, empty)  # was all-NaN losses and a step taken
        assert model.step == 0
        with pytest.raises(ValueError, match="device must name a torch device.*'nonsense'"):
            tiny_model("cyclegan", "nc", device="nonsense")
        for name, value in (("correction_weight", -1.0), ("smoothness_weight", math.nan)):
            with pytest.raises(ValueError, match=f"{name} must be >= 0"):
                tiny_model("cyclegan", "nc+r", **{name: value})

    def test_unknown_backbone_option(self) -> None:
        with pytest.raises(TypeError, match="residual_blocks"):
            build_model("nicegan", "nc", residual_blocks=1)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's own jit import inside dynamo
@pytest.mark.parametrize("method", list(TINY))
def test_compile_wraps_every_trained_network_and_keeps_weights(method: str) -> None:
    # Compilation itself is lazy (it happens at the first step; benchmarks/step_speed.py runs
    # compiled steps); here: every network is wrapped, nothing about the weights changes.
    model = tiny_model(method, "nc+r")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.compile() is model
    for name, net in model.networks.items():
        if name == "registration":
            assert hasattr(net.decompose, "_torchdynamo_orig_callable"), name
        else:
            assert net._compiled_call_impl is not None, name
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


class TestCentering:
    def test_opt_in_keeps_the_default_state_dict(self) -> None:
        plain = tiny_model("cyclegan", "nc+r")
        assert plain.centering is None
        assert "centering" not in plain.train_step(images(), images())
        assert not any(key.startswith("centering") for key in plain.state_dict())
        model = tiny_model("cyclegan", "nc+r", centering_weight=5.0)
        assert "centering.running_mean" in model.state_dict()
        assert tiny_model("cyclegan", "nc", centering_weight=5.0).centering is None  # no R

    def test_term_is_the_weighted_centred_loss_and_tracks_the_foreground(self) -> None:
        model = tiny_model("cyclegan", "nc+r", centering_weight=5.0)
        model.centering.running_mean.copy_(torch.tensor([0.4, -0.2]))
        seen: list[tuple[torch.Tensor, ...]] = []
        model.centering.register_forward_hook(lambda _m, args, _out: seen.append(args))
        target = images()
        target[:, :, :8] = -1.0  # background rows: outside the running mean
        losses = model.train_step(images(), target)
        translated, _, field, weights, _ = (a.detach() if a is not None else a for a in seen[0])
        torch.testing.assert_close(weights, target != -1.0)
        offset = torch.tensor([0.4, -0.2])
        expected = 5.0 * centered_correction_loss(translated, target, field, offset)
        assert losses["centering"] == pytest.approx(float(expected), rel=1e-5)
        momentum = model.centering.momentum
        batch_mean = field[:, :, 8:].mean(dim=(0, 2, 3))
        torch.testing.assert_close(
            model.centering.running_mean, (1 - momentum) * offset + momentum * batch_mean
        )

    def test_gives_the_generator_gradient_and_r_none(self) -> None:
        """The centred term alone: gradients in G, none in R (its field is detached)."""
        model = tiny_model("cyclegan", "nc+r", centering_weight=1.0)
        source, target = images(), images()
        _, losses, _ = model._generator_losses(source, target, None)
        losses["centering"].backward()
        generator = model.backbone.generators()["generator"]
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.parameters())
        assert all(p.grad is None for p in model.registration.parameters())

    def test_negative_weight_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="centering_weight"):
            tiny_model("cyclegan", "nc+r", centering_weight=-1.0)


class TestInitialAlignment:
    def test_default_is_the_papers_identity_start(self) -> None:
        assert tiny_model("cyclegan", "nc+r").initial_alignment is None

    def test_training_and_register_use_the_source(self) -> None:
        model = tiny_model("cyclegan", "nc+r", initial_alignment="source")
        source, target = images(), images()
        target[..., :6, :] = -1.0  # some background, so that the outlines differ
        seen: list[torch.Tensor] = []
        one_pass = model.registration._one_pass
        model.registration._one_pass = lambda x: seen.append(x) or one_pass(x)
        losses = model.train_step(source, target)
        assert len(seen) == 1
        assert set(losses) >= {"correction", "smoothness"}
        # R's pass saw G(x) already moved by the source's alignment onto the target
        start = affine_to_displacement(
            moment_alignment(source, target, weights="foreground", refine_steps=5), (32, 32)
        )
        assert float(start.abs().max()) > 0.5
        with torch.no_grad():
            translated = model.backbone.translate(source)
            fields = model.register(translated, target, source=source)
        torch.testing.assert_close(seen[-1][:, :1], warp(translated, start), atol=1e-5, rtol=0)
        torch.testing.assert_close(fields.displacement, compose(fields.residual, start))
        with pytest.raises(ValueError, match="source must be given"):
            model.register(translated, target)

    def test_needs_an_r_and_a_known_name(self) -> None:
        with pytest.raises(ValueError, match="initial_alignment='source' needs an R"):
            tiny_model("cyclegan", "nc", initial_alignment="source")
        with pytest.raises(ValueError, match="initial_alignment must be one of"):
            tiny_model("cyclegan", "nc+r", initial_alignment="moments")


class TestPix2PixPlusR:
    """Mode ``"pix2pix+r"``: Pix2Pix's conditional D on pairs in the source's frame — ``(x, G(x))``
    against ``(x, ỹ ∘ φ⁻¹)`` — and the correction loss instead of L1."""

    @staticmethod
    def _fixed_field(model: TranslationModel, field: torch.Tensor, monkeypatch) -> None:
        fields = RegistrationFields(displacement=field, residual=torch.zeros_like(field))
        monkeypatch.setattr(model, "register", lambda *args, **kwargs: fields)

    def test_terms_and_discriminator_update_by_hand(self, monkeypatch) -> None:
        model = tiny_model("cyclegan", "pix2pix+r", correction_weight=100.0)
        assert model.backbone.discriminator.in_channels == 2  # conditional: cat([x, image])
        source, target = images(), images()
        # R's field: an exact 1.5 px / -0.75 px shift, whose inverse is the opposite shift
        field = torch.zeros(2, 2, 32, 32)
        field[:, 0], field[:, 1] = 1.5, -0.75
        self._fixed_field(model, field, monkeypatch)
        before = copy_module(model)
        losses = model.train_step(source, target)
        g, d = before.backbone.generator, before.backbone.discriminator
        with torch.no_grad():
            translated = g(source)
            registered = warp(translated, field)
            pulled_back = warp(target, -field)
            judged = d(torch.cat([source, translated], 1))
            real = d(torch.cat([source, pulled_back], 1))
        assert losses["adversarial"] == pytest.approx(float(((judged - 1) ** 2).mean()), rel=1e-5)
        expected = 100.0 * float((registered - target).abs().mean())
        assert losses["correction"] == pytest.approx(expected, rel=1e-5)
        assert "l1" not in losses
        expected_d = 0.5 * float(((real - 1) ** 2).mean() + (judged**2).mean())
        assert losses["D/discriminator"] == pytest.approx(expected_d, rel=1e-5)

    def test_real_image_is_the_target_pulled_back_by_the_inverse(self, monkeypatch) -> None:
        # an affine field (rotation + scale + shift): the real image D sees is the target warped
        # by the exact inverse affine (affine_to_displacement of the inverse matrix) inside.
        model = tiny_model("cyclegan", "pix2pix+r")
        matrix = torch.tensor([[[1.05, -0.09, 1.2], [0.09, 1.05, -2.0]]])
        inverse_matrix = inverse_affine(matrix)
        field = affine_to_displacement(matrix, (32, 32)).expand(2, -1, -1, -1)
        self._fixed_field(model, field, monkeypatch)
        source, target = images(), images()
        _, _, (condition, real) = model._generator_losses(source, target, None)
        assert condition is source
        expected = warp(target, affine_to_displacement(inverse_matrix, (32, 32)))
        torch.testing.assert_close(real[..., 4:-4, 4:-4], expected[..., 4:-4, 4:-4])
        assert not real.requires_grad

    def test_with_a_zero_field_it_is_pix2pix(self, monkeypatch) -> None:
        registered = tiny_model("cyclegan", "pix2pix+r", correction_weight=100.0)
        plain = tiny_model("cyclegan", "pix2pix")
        plain.backbone.load_state_dict(registered.backbone.state_dict())
        self._fixed_field(registered, torch.zeros(2, 2, 32, 32), monkeypatch)
        source, target = images(), images()
        a, b = registered.train_step(source, target), plain.train_step(source, target)
        assert a["adversarial"] == pytest.approx(b["adversarial"], rel=1e-5)
        assert a["correction"] == pytest.approx(b["l1"], rel=1e-5)
        assert a["D/discriminator"] == pytest.approx(b["D/discriminator"], rel=1e-5)
        torch.testing.assert_close(
            registered.translate(source), plain.translate(source), atol=1e-5, rtol=1e-5
        )

    def test_adversarial_term_trains_g_not_r(self) -> None:
        model = tiny_model("cyclegan", "pix2pix+r")
        _, losses, (condition, real) = model._generator_losses(images(), images(), None)
        assert not condition.requires_grad and not real.requires_grad
        r_params = list(model.registration.parameters())
        g_params = list(model.backbone.generator.parameters())
        r_grads = torch.autograd.grad(
            losses["adversarial"], r_params, retain_graph=True, allow_unused=True
        )
        assert all(grad is None for grad in r_grads)
        g_grads = torch.autograd.grad(losses["adversarial"], g_params, allow_unused=True)
        assert any(grad is not None and float(grad.abs().sum()) > 0 for grad in g_grads)

    @pytest.mark.parametrize(("channels", "amp"), [((3, 1), False), ((1, 2), True)])
    def test_other_channel_counts_and_bf16(self, channels: tuple[int, int], amp: bool) -> None:
        c_in, c_out = channels
        model = tiny_model("cyclegan", "pix2pix+r", in_channels=c_in, out_channels=c_out, amp=amp)
        assert model.backbone.discriminator.in_channels == c_in + c_out
        source, target = torch.rand(3, c_in, 40, 48) * 2 - 1, torch.rand(3, c_out, 40, 48) * 2 - 1
        losses = model.train_step(source, target)
        assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
        assert model.translate(source).shape == (3, c_out, 40, 48)

    def test_source_alignment_and_replay_keep_pairs(self) -> None:
        model = tiny_model(
            "cyclegan",
            "pix2pix+r",
            initial_alignment="source",
            registration={**REGISTRATION, "passes": 0},
            replay_buffer_size=3,
        )
        for _ in range(2):
            losses = model.train_step(images(), images())
        assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
        # the buffer stores (condition, fake) pairs: 1 + 1 channels
        assert set(model.replay_buffers) == {"target", "pair"}
        assert all(image.shape == (1, 2, 32, 32) for image in model.replay_buffers["pair"].images)


class TestGeneratorAverage:
    @pytest.mark.parametrize("method", list(TINY))
    def test_average_is_the_papers_ema_of_every_generator(self, method: str) -> None:
        decay = 0.6
        model = tiny_model(method, "c", ema_decay=decay)
        generators = model.backbone.generators()
        history = []
        for _ in range(3):
            model.train_step(images(), images())
            history.append(
                {
                    f"{key}.{name}": p.detach().clone()
                    for key, net in generators.items()
                    for name, p in net.named_parameters()
                }
            )
        expected = dict(history[0])  # the first update copies, later ones average
        for weights in history[1:]:
            expected = {k: decay * expected[k] + (1 - decay) * weights[k] for k in expected}
        averaged = dict(model.generator_average.module.named_parameters())
        assert set(averaged) == set(expected)
        for name, value in expected.items():
            torch.testing.assert_close(averaged[name], value, msg=name)
        assert int(model.generator_average.n_averaged) == 3

    @pytest.mark.parametrize("method", list(TINY))
    def test_translate_uses_the_average_unless_told(self, method: str) -> None:
        model = tiny_model(method, "nc", ema_decay=0.5)
        source = images()
        before = model.translate(source)
        torch.testing.assert_close(before, model.translate(source, average=False))  # step 0
        for _ in range(2):
            model.train_step(images(), images())
        copy = copy_module(model.backbone)
        for key, generator in copy.generators().items():
            generator.load_state_dict(model.generator_average.module[key].state_dict())
        copy.eval()
        with torch.no_grad():
            expected = copy.translate(source)
            trained = model.backbone.eval().translate(source)
        torch.testing.assert_close(model.translate(source), expected)
        torch.testing.assert_close(model.translate(source, average=False), trained)
        assert not torch.allclose(expected, trained)

    def test_off_by_default_and_state_dict_round_trip(self) -> None:
        plain = tiny_model("cyclegan", "nc+r")
        assert plain.generator_average is None
        assert not any(key.startswith("generator_average") for key in plain.state_dict())
        model = tiny_model("cyclegan", "nc+r", ema_decay=0.9)
        model.train_step(images(), images())
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        buffer.seek(0)
        other = tiny_model("cyclegan", "nc+r", ema_decay=0.9)
        other.load_state_dict(torch.load(buffer, weights_only=True))
        source = images()
        torch.testing.assert_close(other.translate(source), model.translate(source))

    @pytest.mark.parametrize("decay", [1.0, -0.1, "0.9", float("nan")])
    def test_bad_decay(self, decay: Any) -> None:
        with pytest.raises(ValueError, match=r"ema_decay must be in \[0, 1\)"):
            tiny_model("cyclegan", "nc", ema_decay=decay)


def test_numpy_and_tensor_options_are_accepted() -> None:
    model = tiny_model(
        "cyclegan",
        "nc+r",
        correction_weight=torch.tensor(20.0),
        smoothness_weight=np.float32(10),
        replay_buffer_size=np.int64(2),
    )
    assert (model.correction_weight, model.smoothness_weight) == (20.0, 10.0)
    assert all(math.isfinite(v) for v in model.train_step(images(), images()).values())
