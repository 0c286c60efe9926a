"""The library on a DEVICE device: values match the CPU, tensors stay on the device, bf16 autocast,
training, checkpoints and the command line. Skipped where no GPU is visible (as in CI); run by
``benchmarks/device_check.py`` on a GPU machine.

Comparisons with the CPU turn TF32 off, so both sides compute in true float32.
``REGCORRECT_TEST_DEVICE=cpu`` runs the same checks on the CPU (a dry run of this file).
"""

from __future__ import annotations

import math
import os

import pytest
import torch
import yaml

from regcorrect import MODES, RegistrationCorrection, RegUNet, build_model, warp
from regcorrect.correction import source_alignment
from regcorrect.losses import (
    bending_energy,
    centered_correction_loss,
    correction_loss,
    smoothness_loss,
)
from regcorrect.metrics import nmae, psnr, ssim
from regcorrect.registration import (
    affine_to_displacement,
    compose,
    folding_fraction,
    integrate_velocity,
    jacobian_determinant,
    moment_alignment,
)

from .test_modes import TINY
from .training.helpers import tiny_settings

DEVICE = torch.device(os.environ.get("REGCORRECT_TEST_DEVICE", "cuda"))
pytestmark = pytest.mark.skipif(
    DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"
)


@pytest.fixture(autouse=True)
def _no_tf32():
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def smooth_field(batch: int, shape: tuple[int, ...], amplitude: float = 3.0) -> torch.Tensor:
    """A smooth random displacement (upsampled coarse noise), pixels."""
    coarse = torch.randn(batch, len(shape), *(4 for _ in shape)) * amplitude
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    return torch.nn.functional.interpolate(coarse, size=shape, mode=mode, align_corners=True)


@pytest.mark.parametrize("shape", [(33, 40), (12, 14, 10)])
@pytest.mark.parametrize("padding_mode", ["border", "zeros"])
def test_warp_matches_cpu_with_gradients(shape, padding_mode) -> None:
    image = torch.randn(2, 3, *shape, requires_grad=True)
    field = smooth_field(2, shape).requires_grad_()
    image_gpu = image.detach().to(DEVICE).requires_grad_()
    field_gpu = field.detach().to(DEVICE).requires_grad_()
    cpu = warp(image, field, padding_mode=padding_mode)
    gpu = warp(image_gpu, field_gpu, padding_mode=padding_mode)
    assert gpu.device.type == DEVICE.type
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)
    weights = torch.randn_like(cpu)
    (cpu * weights).sum().backward()
    (gpu * weights.to(DEVICE)).sum().backward()
    torch.testing.assert_close(image_gpu.grad.cpu(), image.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(field_gpu.grad.cpu(), field.grad, atol=1e-3, rtol=1e-3)


def test_warp_bf16_autocast_samples_in_float32() -> None:
    image = torch.randn(1, 2, 32, 32, device=DEVICE)
    field = smooth_field(1, (32, 32)).to(DEVICE)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        warped = warp(image.bfloat16(), field)
    assert warped.dtype == torch.bfloat16 and warped.device.type == DEVICE.type
    reference = warp(image.bfloat16().float(), field)
    torch.testing.assert_close(warped.float(), reference, atol=1e-2, rtol=1e-2)


def test_fields_match_cpu() -> None:
    u, v = smooth_field(2, (24, 28)), smooth_field(2, (24, 28))
    for function, args in (
        (compose, (u, v)),
        (integrate_velocity, (v,)),
        (jacobian_determinant, (u,)),
    ):
        expected = function(*args)
        result = function(*(a.to(DEVICE) for a in args))
        assert result.device.type == DEVICE.type, function.__name__
        torch.testing.assert_close(result.cpu(), expected, atol=1e-4, rtol=1e-4)
    # a pixel whose determinant is ~0 may fall either side: allow one pixel per image
    difference = (folding_fraction(u.to(DEVICE)).cpu() - folding_fraction(u)).abs()
    assert float(difference.max()) <= 1 / (24 * 28)
    matrix = torch.tensor([[[0.98, -0.17, 2.0], [0.17, 0.98, -1.5]]])
    torch.testing.assert_close(
        affine_to_displacement(matrix.to(DEVICE), (24, 28)).cpu(),
        affine_to_displacement(matrix, (24, 28)),
        atol=1e-4,
        rtol=1e-4,
    )


def test_losses_and_metrics_match_cpu() -> None:
    prediction = torch.rand(2, 1, 40, 36) * 2 - 1
    target = torch.rand(2, 1, 40, 36) * 2 - 1
    target[..., :4, :] = -1.0  # background
    field = smooth_field(2, (40, 36))
    pairs = [
        (correction_loss, (prediction, target)),
        (smoothness_loss, (field,)),
        (bending_energy, (field,)),
        (centered_correction_loss, (prediction, target, field, torch.tensor([0.4, -0.3]))),
        (nmae, (prediction, target)),
        (psnr, (prediction, target)),
        (ssim, (prediction, target)),
    ]
    for function, args in pairs:
        expected = torch.as_tensor(function(*args))
        result = function(*(a.to(DEVICE) for a in args))
        torch.testing.assert_close(
            torch.as_tensor(result).cpu(), expected, atol=1e-4, rtol=1e-4, msg=function.__name__
        )


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_regunet_matches_cpu(spatial_dims) -> None:
    shape = (40, 36) if spatial_dims == 2 else (20, 18, 16)
    net = RegUNet(spatial_dims=spatial_dims, in_channels=2, channels=(8, 16, 16, 16), affine=True)
    net.passes = 2
    with torch.no_grad():  # a non-identity output: perturb the near-zero output layers
        for parameter in net.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    pair = torch.randn(2, 2, *shape)
    expected = net(pair)
    net_gpu = net.to(DEVICE)
    result = net_gpu(pair.to(DEVICE))
    assert result.device.type == DEVICE.type and result.shape == expected.shape
    torch.testing.assert_close(result.cpu(), expected, atol=1e-3, rtol=1e-3)


def test_registration_correction_training_step_under_autocast() -> None:
    generator = torch.nn.Conv2d(1, 1, 3, padding=1).to(DEVICE)
    reg_net = RegUNet(spatial_dims=2, in_channels=2, channels=(8, 16, 16, 16)).to(DEVICE)
    discriminator = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 4, stride=2), torch.nn.Conv2d(4, 1, 3)
    )
    discriminator = discriminator.to(DEVICE)
    model = RegistrationCorrection(generator, reg_net)
    optimizers = {
        "optimizer_g": torch.optim.Adam(generator.parameters(), 1e-3),
        "optimizer_r": torch.optim.Adam(reg_net.parameters(), 1e-3),
        "optimizer_d": torch.optim.Adam(discriminator.parameters(), 1e-3),
    }
    source, target = torch.rand(2, 2, 1, 48, 40, device=DEVICE) * 2 - 1
    before = [p.detach().clone() for p in reg_net.parameters()]
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        result = model.training_step(source, target, discriminator=discriminator, **optimizers)
    assert all(isinstance(v, float) and math.isfinite(v) for v in result.values())
    assert any(not torch.equal(p, b) for p, b in zip(reg_net.parameters(), before, strict=True))
    out = model(source, target)
    assert out.registered.device.type == DEVICE.type and out.displacement.shape == (2, 2, 48, 40)


@pytest.mark.parametrize("method", list(TINY))
@pytest.mark.parametrize("amp", [False, True])
def test_build_model_every_mode_trains_on_cuda(method, amp) -> None:
    for mode in MODES:
        if mode.startswith("pix2pix") and method != "cyclegan":
            continue
        options = {"registration": {"channels": (8, 16, 16, 16)}} if mode.endswith("+r") else {}
        model = build_model(
            method, mode, seed=0, device=DEVICE.type, amp=amp, **TINY[method], **options
        )
        source, target = torch.rand(2, 2, 1, 32, 32) * 2 - 1  # on the CPU: moved by the model
        losses = model.train_step(source, target)
        assert all(math.isfinite(v) for v in losses.values()), (mode, losses)
        translated = model.translate(source)
        assert translated.device.type == DEVICE.type and translated.dtype == torch.float32, mode
        assert all(p.device.type == DEVICE.type for p in model.parameters()), mode


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_moment_alignment_matches_cpu(spatial_dims) -> None:
    """Foreground moments + Levenberg-Marquardt refinement give the CPU's matrices."""
    torch.manual_seed(0)
    spatial = (40, 36) if spatial_dims == 2 else (18, 20, 16)
    moving = smooth_field(2, spatial, amplitude=1.0)[:, :1].clamp(-1, 1)
    fixed = torch.roll(moving, 2, dims=-1)
    cpu = moment_alignment(moving, fixed, weights="foreground", refine_steps=3)
    gpu = moment_alignment(
        moving.to(DEVICE), fixed.to(DEVICE), weights="foreground", refine_steps=3
    )
    assert gpu.device.type == DEVICE.type
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("passes", [0, 2])
def test_initial_alignment_source_trains_on_cuda(passes) -> None:
    model = build_model(
        "cyclegan",
        "nc+r",
        seed=0,
        device=DEVICE.type,
        amp=True,
        initial_alignment="source",
        registration={"channels": (8, 16, 16, 16), "passes": passes},
        **TINY["cyclegan"],
    )
    source, target = torch.rand(2, 2, 1, 32, 32) * 2 - 1
    losses = model.train_step(source, target)
    assert all(math.isfinite(v) for v in losses.values()), losses
    with torch.no_grad():
        fields = model.register(
            model.translate(source), target.to(DEVICE), source=source.to(DEVICE)
        )
    assert fields.displacement.device.type == DEVICE.type
    cpu_start = source_alignment(source, target)
    if passes == 0:  # the closed-form field alone, as on the CPU
        torch.testing.assert_close(fields.displacement.cpu(), cpu_start, atol=1e-3, rtol=0)


def test_checkpoint_from_cuda_loads_on_cpu() -> None:
    model = build_model("cyclegan", "nc+r", seed=0, device=DEVICE.type, **TINY["cyclegan"])
    model.train_step(*(torch.rand(2, 2, 1, 32, 32) * 2 - 1))
    state = model.state_dict()
    on_cpu = build_model("cyclegan", "nc+r", seed=1, **TINY["cyclegan"])
    on_cpu.load_state_dict(state)
    source = torch.rand(2, 1, 32, 32) * 2 - 1
    torch.testing.assert_close(
        on_cpu.translate(source), model.translate(source).cpu(), atol=1e-4, rtol=1e-4
    )


def test_cli_train_resume_evaluate_on_cuda(tmp_path) -> None:
    from regcorrect.cli import main
    from regcorrect.training import load_checkpoint

    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(tiny_settings(tmp_path / "run", steps=2, device=DEVICE.type, amp=True))
    )
    assert main(["train", str(config), "--quiet"]) == 0
    config.write_text(
        yaml.safe_dump(tiny_settings(tmp_path / "run", steps=3, device=DEVICE.type, amp=True))
    )
    assert main(["train", str(config), "--quiet", "--resume"]) == 0
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["training"]["step"] == 3
    output = tmp_path / "metrics.json"
    assert (
        main(["evaluate", str(tmp_path / "run"), "--device", DEVICE.type, "-o", str(output)]) == 0
    )
    assert output.exists()
