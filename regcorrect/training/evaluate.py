"""Evaluation on held-out slices: NMAE, PSNR and SSIM of ``G(x)`` against the aligned target.

The paper's protocol: translate the test source and compare with its *aligned* target, the
background (outside the foreground mask) excluded. With ``noise_level > 0`` every test slice is
first moved by a random transform of that level — the source and its target by the same one, so
they stay aligned — to test robustness to pose.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import check_count
from ..data import AlignedPairs, MisalignedPairs, Misalignment, PairedSlices
from ..data.paired import check_pairs
from ..metrics import nmae, psnr, ssim

__all__ = ["evaluate_translation", "evaluate_model", "fit_linear_map", "METRICS"]

#: Metric names, in report order; lower is better only for ``"nmae"``.
METRICS = ("nmae", "psnr", "ssim")


def _test_batches(
    pairs: PairedSlices, batch_size: int, noise_level: int, seed: int
) -> list[tuple[Tensor, Tensor, Tensor]]:
    if noise_level:
        dataset = MisalignedPairs(pairs, misalignment=Misalignment(noise_level), seed=seed)
    else:
        dataset = AlignedPairs(pairs)
    batches = []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batches.append(
            tuple(
                torch.stack([it[k] for it in items]) for k in ("source", "aligned_target", "mask")
            )
        )
    return batches


@torch.no_grad()
def evaluate_translation(
    translate: Callable[[Tensor], Tensor],
    pairs: PairedSlices,
    *,
    batch_size: int = 8,
    noise_level: int = 0,
    seed: int = 0,
) -> dict[str, float]:
    """Mean NMAE, PSNR and SSIM of ``translate(source)`` against the aligned target.

    Args:
        translate: ``(B, 1, H, W) -> (B, 1, H, W)`` in ``[-1, 1]`` (e.g. ``model.translate``).
        pairs: held-out slices.
        batch_size: slices per call of ``translate``.
        noise_level: 0 evaluates the slices as they are; 1-5 moves each slice (source and
            target together) by a random transform of that level, seeded by ``seed``.
        seed: seed of those transforms.

    Returns:
        ``{"nmae", "psnr", "ssim"}``: means over slices, each computed on the foreground mask.
    """
    if not callable(translate):
        raise TypeError(f"translate must be callable, got {type(translate).__name__}")
    check_pairs(pairs, nonempty=True)
    batch_size = check_count(batch_size, "batch_size", minimum=1)
    values: dict[str, list[Tensor]] = {name: [] for name in METRICS}
    for source, target, mask in _test_batches(pairs, batch_size, noise_level, seed):
        prediction = translate(source).float().cpu().clamp(-1.0, 1.0)
        for name, metric in zip(METRICS, (nmae, psnr, ssim), strict=True):
            values[name].append(metric(prediction, target, mask, reduction="none"))
    return {name: float(torch.cat(parts).mean()) for name, parts in values.items()}


def evaluate_model(
    model: torch.nn.Module, pairs: PairedSlices, **options: object
) -> dict[str, float]:
    """:func:`evaluate_translation` of ``model.translate`` (a :class:`TranslationModel`)."""
    translate = getattr(model, "translate", None)
    if not callable(translate):
        raise TypeError(
            f"model must have a translate method (a TranslationModel), got {type(model).__name__}"
        )
    return evaluate_translation(translate, pairs, **options)  # type: ignore[arg-type]


def fit_linear_map(pairs: PairedSlices) -> tuple[float, float]:
    """Least-squares ``target ≈ a · source + b`` over the foreground pixels of ``pairs``.

    A global intensity map is the simplest possible translation: a baseline any trained model
    must beat.

    Returns:
        ``(a, b)``.

    Raises:
        ValueError: no foreground pixel (an all-false ``pairs.mask``).
    """
    check_pairs(pairs)
    if not bool(pairs.mask.any()):
        raise ValueError("pairs has no foreground pixel (its mask is all false): nothing to fit")
    source = pairs.source[pairs.mask].double()
    target = pairs.target[pairs.mask].double()
    design = torch.stack([source, torch.ones_like(source)], dim=1)
    solution = torch.linalg.lstsq(design, target.unsqueeze(1)).solution[:, 0]
    return float(solution[0]), float(solution[1])
