"""What the Pix2Pix+R probe scripts share: the anchored sweep's settings and the stream of
training pairs (the same random draws, in the same order, as ``noise_sweep.fit`` with
``--augment``)."""

import torch

from regcorrect.data import Misalignment, PairAugmentation, compose_affine

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
