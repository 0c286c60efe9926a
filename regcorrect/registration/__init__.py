"""Registration layer: warping, field operations and the registration network R.

All fields follow one convention (``docs/conventions.md``): ``(B, N, *spatial)``, pixel units,
channels in axis order (``(dy, dx)`` / ``(dz, dy, dx)``), backward mapping
``warped[p] = image[p + u(p)]``, corner-aligned sampling.
"""

from .alignment import MOMENT_WEIGHTS, moment_alignment
from .fields import (
    affine_to_displacement,
    compose,
    folding_fraction,
    integrate_velocity,
    invert_displacement,
    jacobian_determinant,
)
from .regunet import AFFINE_FEATURES, PAPER_CHANNELS, PREALIGNMENTS, RegistrationFields, RegUNet
from .warp import PADDING_MODES, WARP_MODES, Warp, warp

__all__ = [
    "warp",
    "Warp",
    "WARP_MODES",
    "PADDING_MODES",
    "compose",
    "invert_displacement",
    "integrate_velocity",
    "jacobian_determinant",
    "folding_fraction",
    "affine_to_displacement",
    "moment_alignment",
    "MOMENT_WEIGHTS",
    "RegUNet",
    "RegistrationFields",
    "PAPER_CHANNELS",
    "AFFINE_FEATURES",
    "PREALIGNMENTS",
]
