"""regcorrect: registration-corrected image-to-image translation (RegGAN) in PyTorch.

Wrap any generator with a registration network so that it can be trained on misaligned pairs::

    model = RegistrationCorrection(my_generator, RegUNet(spatial_dims=2, in_channels=2))
    out = model(source, target)
    out.total.backward()
"""

from . import losses, metrics, registration
from .correction import CorrectionOutput, RegistrationCorrection
from .modes import MODES, TranslationModel, build_model
from .registration import RegUNet, Warp, warp

__version__ = "0.1.0"

__all__ = [
    "RegistrationCorrection",
    "build_model",
    "TranslationModel",
    "MODES",
    "CorrectionOutput",
    "RegUNet",
    "Warp",
    "warp",
    "losses",
    "metrics",
    "registration",
    "__version__",
]
