"""Bundled real MRI: T1/T2 axial slices of the ICBM 2009c symmetric brain template.

The file ``regcorrect/data/icbm152.npz`` ships inside the package (about 3.3 MB), so this loader
needs neither network nor extra packages. It is derived by ``scripts/make_icbm152.py``; origin,
license (``regcorrect/data/COPYING.icbm152.txt``) and derivation are in ``docs/data.md``.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np
import torch

from regcorrect._checks import as_scalar, check_choice, check_positive, is_real
from regcorrect.data.paired import PairedSlices, pad_or_crop_pairs, resample_pairs

__all__ = ["icbm152", "ICBM152_TEST_FRACTION"]

ICBM152_TEST_FRACTION = 0.2
"""Share of the stored slices, the most superior ones, that form the ``"test"`` split."""

_SPLITS = ("train", "test", "all")


@lru_cache(maxsize=1)
def _load() -> dict[str, np.ndarray]:
    with resources.files("regcorrect.data").joinpath("icbm152.npz").open("rb") as handle:
        with np.load(handle) as archive:
            return {key: archive[key] for key in archive.files}


def _split_rows(count: int, split: str) -> slice:
    n_test = round(ICBM152_TEST_FRACTION * count)
    return {"train": slice(0, count - n_test), "test": slice(count - n_test, count)}.get(
        split, slice(0, count)
    )


def icbm152(
    split: str = "train",
    *,
    size: int | tuple[int, int] | None = None,
    spacing: float = 1.0,
) -> PairedSlices:
    """Load paired T1 (source) / T2 (target) axial slices of the ICBM 2009c template.

    The 137 stored slices are those whose brain mask covers more than 5 % of the
    ``229 x 193`` slice (axial voxel indices 18 to 154 at 1 mm). They are split by slab, because
    the template is left-right symmetric and neighbouring slices are nearly identical:
    ``"test"`` is the most superior 20 % (27 slices, a contiguous block), ``"train"`` the 110
    slices below it, ``"all"`` both.

    Convention:
        Slices are shown with anterior at the top and the patient's left on the image's left
        (neurological convention). Each modality is scaled by its 99.9th brain percentile:
        ``0`` (background) maps to ``-1`` and that percentile to ``1`` (brighter voxels are
        clipped). Inside the mask every value is above ``-1`` at the native grid; outside it is
        exactly ``-1``. Intensities are quantised to 8 bits (steps of ``2 / 255``).

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.
        size: optional output ``(H, W)`` (or one ``int`` for a square), reached by centred
            padding with background / centred cropping *after* resampling, never by resizing,
            so the pixel size stays ``spacing`` mm.
        spacing: pixel size in mm ``> 0``; ``2.0`` halves the resolution (``115 x 97``) by
            antialiased bilinear resampling, the mask is resampled and thresholded at 0.5.

    Returns:
        :class:`PairedSlices` with ``source`` (T1) and ``target`` (T2) float32 ``(N, 1, H, W)``
        in ``[-1, 1]``, ``mask`` bool ``(N, 1, H, W)``, ``slice_index`` the axial voxel index
        (inferior to superior, increasing) and ``spacing`` the pixel size in mm.

    Raises:
        ValueError: unknown ``split``, ``spacing <= 0`` or a bad ``size``.

    Example:
        >>> pairs = icbm152("test", spacing=2.0, size=128)
        >>> pairs.source.shape
        torch.Size([27, 1, 128, 128])
    """
    check_choice(split, "split", _SPLITS)
    spacing = as_scalar(spacing)  # type: ignore[assignment]
    if not is_real(spacing):
        raise TypeError(f"spacing must be a number, got {type(spacing).__name__}")
    check_positive(float(spacing), "spacing")
    if spacing < 0.25:  # 4x the template's resolution: 916 x 772 slices already
        raise ValueError(
            f"spacing is a pixel size in mm, at least 0.25 for these 1 mm templates, got {spacing!r}"
        )
    arrays = _load()
    rows = _split_rows(len(arrays["slice_index"]), split)
    mask = torch.from_numpy(arrays["mask"][rows].copy()).unsqueeze(1)

    def to_unit_range(levels: np.ndarray) -> torch.Tensor:
        image = torch.from_numpy(levels[rows].astype(np.float32)).unsqueeze(1) / 127.5 - 1.0
        return image.masked_fill_(~mask, -1.0)

    voxel = arrays["voxel_size"]
    pairs = PairedSlices(
        source=to_unit_range(arrays["t1"]),
        target=to_unit_range(arrays["t2"]),
        mask=mask,
        slice_index=torch.from_numpy(arrays["slice_index"][rows].astype(np.int64)),
        spacing=(float(voxel[1]), float(voxel[0])),
    )
    pairs = resample_pairs(pairs, factor=spacing / float(voxel[0]))
    if size is not None:
        pairs = pad_or_crop_pairs(pairs, size=size)
    return pairs
