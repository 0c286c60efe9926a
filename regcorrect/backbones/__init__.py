"""Reference translation backbones (CycleGAN/Pix2Pix, MUNIT, UNIT, NICE-GAN)."""

from .base import GeneratorOutput, TranslationBackbone

__all__ = ["GeneratorOutput", "TranslationBackbone"]
