"""What the Pix2Pix+R probe scripts share: the anchored sweep's settings and the stream of
training pairs (the same random draws, in the same order, as ``noise_sweep.fit`` with
``--augment``)."""

import torch

from regcorrect.backbones import GeneratorOutput
from regcorrect.data import Misalignment, PairAugmentation, compose_affine
from regcorrect.losses import correction_loss, smoothness_loss
from regcorrect.registration import warp

SIZE = (112, 96)


def settings(steps: int):
    """The arguments ``noise_sweep.sweep_model`` reads: the anchored sweep's settings."""

    class Args:
        amp, device, lr, base_channels, residual_blocks = True, "cpu", 2e-4, 32, 6
        reg_channels, affine, affine_features = [16, 32, 32, 32, 32, 32], False, "moments"
        reg_passes, prealign, initial_alignment = 0, None, "source"
        smoothness_weight, correction_weight, centering_weight, ema_decay = 10.0, 100.0, 0.0, 0.99

    Args.steps = steps
    return Args


def to3(matrix: torch.Tensor) -> torch.Tensor:
    """``(B, 2, 3)`` affine matrices as ``(B, 3, 3)``."""
    bottom = torch.tensor([[[0, 0, 1.0]]]).expand(matrix.shape[0], 1, 3)
    return torch.cat([matrix, bottom], 1)


def training_pairs(train, level: int, seed: int, steps: int, batch: int = 4):
    """Yield ``(step, source, target, source_matrix, target_matrix)``: aligned slices and the
    joint augmentation composed with each image's own noise (apply with ``Misalignment.warp``)."""
    noise, augmentation = Misalignment(level), PairAugmentation()
    generator = torch.Generator().manual_seed(10_000 + seed)
    for step in range(1, steps + 1):
        index = torch.randint(len(train.source), (batch,), generator=generator)
        joint = augmentation.matrices(augmentation.sample_params(batch, generator), SIZE)
        source_matrix = compose_affine(noise.matrices(noise.sample_params(batch, generator), SIZE), joint)
        target_matrix = compose_affine(noise.matrices(noise.sample_params(batch, generator), SIZE), joint)
        yield step, train.source[index], train.target[index], source_matrix, target_matrix


def judge_in_target_frame(model) -> None:
    """Give ``model`` (mode ``pix2pix+r``) the mode's first design, which these probes examined:
    D judges ``(x∘φ, G(x)∘φ)`` against ``(x∘φ, ỹ)``, both pairs warped into the target's frame by
    R's detached field. The library's ``pix2pix+r`` judges in the source's frame since
    2026-11-27; this is the code it ran before (commit d2d8df8), so the recorded rows reproduce."""

    def generator_losses(source, target, mask):
        backbone = model.backbone
        with model._autocast():
            translated = backbone.translate(source)
            out = GeneratorOutput(translated=translated, losses={})
            fields = model.register(translated, target, source=source)
            translated = translated.float()
            registered = warp(translated, fields.displacement.float())
            field = fields.displacement.detach().float()
            condition = warp(source, field)
            judged = warp(translated, field) if fields.displacement.requires_grad else registered
            losses = {"adversarial": backbone.adversarial(condition, judged).float()}
            out.fakes["target"] = judged.detach()
            out.fakes["pair"] = torch.cat([condition, judged], dim=1).detach()
            losses["correction"] = model.correction_weight * correction_loss(registered, target, mask)
            losses["smoothness"] = model.smoothness_weight * smoothness_loss(fields.residual.float())
        return out, losses, (condition, target)

    model._generator_losses = generator_losses
