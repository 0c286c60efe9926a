"""Loss functions of RegGAN: correction (Eq. 7), smoothness (Eq. 8), adversarial (Eq. 1/9), cycle,
and the centred correction (ours, opt-in)."""

from .adversarial import GAN_MODES, GANLoss, discriminator_loss, generator_loss
from .centering import (
    CenteredCorrection,
    batch_mean_displacement,
    centered_correction_loss,
    target_foreground,
)
from .correction import CorrectionLoss, correction_loss
from .cycle import CycleLoss, cycle_loss
from .smoothness import BendingEnergy, SmoothnessLoss, bending_energy, smoothness_loss

__all__ = [
    "correction_loss",
    "CorrectionLoss",
    "smoothness_loss",
    "SmoothnessLoss",
    "bending_energy",
    "BendingEnergy",
    "GAN_MODES",
    "GANLoss",
    "generator_loss",
    "discriminator_loss",
    "cycle_loss",
    "CycleLoss",
    "centered_correction_loss",
    "CenteredCorrection",
    "batch_mean_displacement",
    "target_foreground",
]
