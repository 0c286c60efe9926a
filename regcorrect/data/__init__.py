"""Data: bundled ICBM152 MRI slices, file readers, intensity normalisation, misalignment noise,
joint augmentation.

See ``docs/data.md``. Images are ``(N, 1, H, W)`` float32 in ``[-1, 1]`` with the background at
exactly ``-1``.
"""

from regcorrect.data.augmentation import PairAugmentation
from regcorrect.data.datasets import AlignedPairs, MisalignedPairs
from regcorrect.data.icbm152 import ICBM152_TEST_FRACTION, icbm152
from regcorrect.data.misalignment import NOISE_LEVELS, Misalignment, compose_affine
from regcorrect.data.normalize import normalize_intensity
from regcorrect.data.paired import PairedSlices, pad_or_crop_pairs, resample_pairs
from regcorrect.data.readers import (
    NiftiSlices,
    read_nifti_slices,
    read_npy_pairs,
    read_png,
    write_nifti_like,
    write_png,
)

__all__ = [
    "AlignedPairs",
    "ICBM152_TEST_FRACTION",
    "MisalignedPairs",
    "Misalignment",
    "NOISE_LEVELS",
    "NiftiSlices",
    "PairAugmentation",
    "PairedSlices",
    "compose_affine",
    "icbm152",
    "normalize_intensity",
    "pad_or_crop_pairs",
    "read_nifti_slices",
    "read_npy_pairs",
    "read_png",
    "resample_pairs",
    "write_nifti_like",
    "write_png",
]
