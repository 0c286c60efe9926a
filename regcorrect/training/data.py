"""Loading a config's training and held-out slices, and the step -> batch sampling rule.

Sampling is a pure function of ``(seed, step)``: step ``s`` belongs to epoch
``s // steps_per_epoch``; each epoch shuffles the slices with a generator seeded by
``(seed, epoch)`` and cuts the permutation into global batches (the last incomplete batch is
dropped); a process of rank ``r`` among ``K`` takes every ``K``-th slice of the global batch. The
misalignment of each slice comes from :class:`~regcorrect.data.MisalignedPairs`, seeded by
``(seed, epoch, index)``. A resumed run therefore sees exactly the batches it would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .._checks import check_count
from ..data import (
    MisalignedPairs,
    PairedSlices,
    icbm152,
    normalize_intensity,
    pad_or_crop_pairs,
    read_nifti_slices,
    read_npy_pairs,
    resample_pairs,
)
from .config import TrainingConfig
from .inference import _round_up

__all__ = ["TrainingData", "load_training_data", "load_pairs", "StepSampler", "MIN_FOREGROUND"]

#: NIfTI slices whose foreground covers less than this share of the slice are skipped.
MIN_FOREGROUND = 0.05


@dataclass(frozen=True)
class TrainingData:
    """The slices of a run: ``train`` (misaligned during training) and ``test`` (aligned).

    Attributes:
        train, test: :class:`~regcorrect.data.PairedSlices` on the same grid.
        spacing_known: whether ``train.spacing`` is a real pixel size (icbm152 and NIfTI data;
            ``.npy`` slices carry none).
    """

    train: PairedSlices
    test: PairedSlices
    spacing_known: bool


def _read_source(source: str | list[str], axis: int) -> tuple[PairedSlices, bool]:
    if isinstance(source, list):
        return _read_nifti_pair(source[0], source[1], axis), True
    path = Path(source)
    if path.is_dir():
        return read_npy_pairs(path), False
    if path.name.endswith((".nii", ".nii.gz")):
        raise ValueError(
            f"data {source!r} is one NIfTI file; give a list of two volumes of the same shape, "
            "[source.nii.gz, target.nii.gz]"
        )
    raise ValueError(
        f"data {source!r} is neither 'icbm152' nor an existing folder with A/ and B/ .npy slices"
    )


def _read_nifti_pair(source_path: str, target_path: str, axis: int) -> PairedSlices:
    source = read_nifti_slices(source_path, axis=axis)
    target = read_nifti_slices(target_path, axis=axis)
    # paired voxel by voxel: other voxel sizes would put the two contrasts at different scales
    # (checked first: it is the likelier cause of different shapes, and its fix is the same)
    pixel_sizes = zip(source.spacing, target.spacing, strict=True)
    if any(abs(a - b) > 1e-3 * max(a, b) for a, b in pixel_sizes):
        raise ValueError(
            f"source {source_path!r} and target {target_path!r} must have the same in-plane "
            f"pixel size, got {tuple(source.spacing)} and {tuple(target.spacing)} mm; resample "
            "one onto the other's grid first"
        )
    if source.slices.shape != target.slices.shape:
        raise ValueError(
            f"source {source_path!r} and target {target_path!r} must be on the same grid, got "
            f"slices {tuple(source.slices.shape)} and {tuple(target.slices.shape)}; resample one "
            "onto the other's grid first"
        )
    mask = (source.slices != 0) | (target.slices != 0)
    keep = mask.flatten(1).float().mean(1) > MIN_FOREGROUND
    if not bool(keep.any()):
        raise ValueError(
            f"no slice of {source_path!r} has more than {MIN_FOREGROUND:.0%} non-zero voxels"
        )
    images = [
        normalize_intensity(volume.slices, method="percentile", mask=mask)
        for volume in (source, target)
    ]
    return PairedSlices(
        source=images[0][keep],
        target=images[1][keep],
        mask=mask[keep],
        slice_index=source.slice_index[keep],
        spacing=source.spacing,
    )


def load_pairs(
    source: str | list[str],
    *,
    split: str = "all",
    axis: int = 2,
    spacing: float | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[PairedSlices, bool]:
    """Load slices from ``"icbm152"`` (its ``split``), an ``A/``+``B/`` folder or a NIfTI pair.

    Args:
        source: ``"icbm152"``, a folder path, or ``[source.nii.gz, target.nii.gz]``.
        split: the icbm152 split (``"train"``, ``"test"``, ``"all"``); other data is read whole.
        axis: NIfTI slicing axis.
        spacing: pixel size in mm to resample to (``None``: keep it).
        size: ``(H, W)`` to centre-pad or crop to, after resampling.

    Returns:
        The pairs and whether their pixel size is known.
    """
    if isinstance(source, str) and source.lower() == "icbm152":
        return icbm152(split, spacing=1.0 if spacing is None else spacing, size=size), True
    pairs, spacing_known = _read_source(source, axis)
    if spacing is not None:  # per axis: anisotropic pixels become square
        factors = (spacing / pairs.spacing[0], spacing / pairs.spacing[1])
        pairs = resample_pairs(pairs, factor=factors)
    if size is not None:
        pairs = pad_or_crop_pairs(pairs, size=size)
    return pairs, spacing_known


def load_training_data(config: TrainingConfig) -> TrainingData:
    """The train and held-out slices of ``config`` (see :class:`TrainingConfig` ``data``)."""
    grid = dict(axis=config.axis, spacing=config.spacing, size=config.image_size)
    train, known = load_pairs(config.data, split="train", **grid)
    if config.test_data is not None:
        test, _ = load_pairs(config.test_data, split="test", **grid)
    elif isinstance(config.data, str) and config.data.lower() == "icbm152":
        test, _ = load_pairs(config.data, split="test", **grid)
    else:
        n_test = max(1, round(config.test_fraction * len(train)))
        if n_test >= len(train):
            raise ValueError(
                f"data holds {len(train)} slice(s): too few to hold out a test split "
                f"(test_fraction={config.test_fraction}); give test_data"
            )
        train, test = train[: len(train) - n_test], train[len(train) - n_test :]
    if test.image_size != train.image_size:
        raise ValueError(
            f"test slices {test.image_size} and training slices {train.image_size} differ in "
            "size; set size in the config"
        )
    return TrainingData(
        train=fit_network(train, config), test=fit_network(test, config), spacing_known=known
    )


def fit_network(pairs: PairedSlices, config: TrainingConfig) -> PairedSlices:
    """``pairs`` centre-padded with background to :func:`network_size` (unchanged if they fit)."""
    padded = network_size(pairs.image_size, config)
    return pairs if padded == pairs.image_size else pad_or_crop_pairs(pairs, size=padded)


def network_size(size: tuple[int, int], config: TrainingConfig) -> tuple[int, int]:
    """``size`` rounded up to what the generators take: multiples of ``2**num_downsamplings``
    (the backbone option, 2 by default: multiples of 4). ``Trainer`` and ``regcorrect evaluate
    --data`` centre-pad their slices to it with background (also after a ``size`` that is no
    such multiple); a translated volume is cropped back.
    """
    depth = config.backbone.get("num_downsamplings", 2)
    valid = isinstance(depth, int) and not isinstance(depth, bool) and 0 <= depth <= 8
    multiple = 2**depth if valid else 4  # an invalid value: the backbone's own error follows
    return (_round_up(size[0], multiple), _round_up(size[1], multiple))


class StepSampler:
    """Which slices make up the batch of each step: a pure function of ``(seed, step)``.

    Args:
        num_items: training slices ``N``.
        batch_size: global batch ``B <= N``, divisible by ``world_size``.
        seed: base seed.
        rank, world_size: this process and the number of processes.
    """

    def __init__(
        self, num_items: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        num_items = check_count(num_items, "num_items", minimum=1)
        batch_size = check_count(batch_size, "batch_size", minimum=1)
        seed = check_count(seed, "seed")
        world_size = check_count(world_size, "world_size", minimum=1)
        rank = check_count(rank, "rank")
        if rank >= world_size:
            raise ValueError(f"rank must be < world_size={world_size}, got {rank}")
        if batch_size > num_items:
            raise ValueError(
                f"batch_size={batch_size} is larger than the {num_items} training slices"
            )
        if batch_size % world_size:
            raise ValueError(
                f"batch_size={batch_size} must be divisible by the number of processes "
                f"({world_size})"
            )
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.steps_per_epoch = num_items // batch_size
        self._cache: tuple[int, Tensor] | None = None

    def epoch(self, step: int) -> int:
        """The epoch step ``step`` (0-based) belongs to."""
        return check_count(step, "step") // self.steps_per_epoch

    def permutation(self, epoch: int) -> Tensor:
        """The shuffled slice order of ``epoch``."""
        if self._cache is None or self._cache[0] != epoch:
            state = np.random.SeedSequence([self.seed, epoch, 0x5A4D]).generate_state(1, np.uint64)
            generator = torch.Generator().manual_seed(int(state[0]))
            self._cache = (epoch, torch.randperm(self.num_items, generator=generator))
        return self._cache[1]

    def global_batch(self, step: int) -> list[int]:
        """Slice indices of the whole batch of ``step`` (all processes)."""
        position = check_count(step, "step") % self.steps_per_epoch
        order = self.permutation(self.epoch(step))
        return order[position * self.batch_size : (position + 1) * self.batch_size].tolist()

    def local_batch(self, step: int) -> list[int]:
        """This process's share of :meth:`global_batch`."""
        return self.global_batch(step)[self.rank :: self.world_size]

    def state_dict(self) -> dict[str, int]:
        return {
            "num_items": self.num_items,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "world_size": self.world_size,
            "steps_per_epoch": self.steps_per_epoch,
        }

    def check_state(self, state: dict[str, int]) -> None:
        """Raise ``ValueError`` if a checkpoint's sampling differs from this one."""
        for key in ("num_items", "batch_size", "seed"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"the checkpoint was trained with {key}={state[key]}, this run has "
                    f"{key}={getattr(self, key)}; resuming would change the data order"
                )


def collate(dataset: MisalignedPairs, indices: list[int], epoch: int) -> dict[str, Tensor]:
    """Stack the items ``indices`` of ``dataset`` at ``epoch`` into ``(B, 1, H, W)`` tensors."""
    dataset.set_epoch(epoch)
    items = [dataset[i] for i in indices]
    return {
        key: torch.stack([item[key] for item in items])
        for key in ("source", "target", "aligned_target", "mask")
    }
