"""Reference translation backbones (CycleGAN/Pix2Pix, MUNIT, UNIT, NICE-GAN).

Each method is a :class:`TranslationBackbone` in cyclic (mode C) or non-cyclic (mode NC) form;
:func:`regcorrect.build_model` adds the registration network for the +R modes.
"""

from .base import GeneratorOutput, TranslationBackbone
from .convert import convert_official_generator, load_official_generator
from .cyclegan import CycleGAN, PatchDiscriminator, Pix2Pix, ResnetGenerator
from .munit import MUNITBackbone
from .nicegan import NICEGANBackbone
from .unit import UNITBackbone

#: Method name -> backbone class, for :func:`regcorrect.build_model`.
METHODS: dict[str, type[TranslationBackbone]] = {
    "cyclegan": CycleGAN,
    "munit": MUNITBackbone,
    "unit": UNITBackbone,
    "nicegan": NICEGANBackbone,
}

__all__ = [
    "METHODS",
    "GeneratorOutput",
    "TranslationBackbone",
    "CycleGAN",
    "Pix2Pix",
    "ResnetGenerator",
    "PatchDiscriminator",
    "MUNITBackbone",
    "UNITBackbone",
    "NICEGANBackbone",
    "convert_official_generator",
    "load_official_generator",
]
