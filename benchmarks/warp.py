"""Forward + backward time of ``regcorrect.warp`` against other ways to warp by a pixel field.

Candidates, all bilinear (trilinear in 3D), border padding, corner-aligned, gradients to both the
image and the field:

* ``grid_sample`` — ``F.grid_sample`` on a **precomputed** normalised sampling grid (the grid is
  the leaf tensor): the floor any pixel-field warp built on ``grid_sample`` can reach;
* ``regcorrect.warp`` — from a ``(B, N, *spatial)`` pixel displacement (converts and samples);
* ``kornia remap`` — ``kornia.geometry.transform.remap`` on pixel-coordinate maps
  ``map_x, map_y`` with ``align_corners=True`` (2D only);
* ``MONAI Warp`` — ``monai.networks.blocks.Warp`` on the same displacement, when MONAI is
  installed (skipped otherwise);
* ``unfused conversion (before)`` — the conversion ``regcorrect.warp`` used before it became one
  autograd node (flip, move channels last, scale, add the identity grid, each op replayed by
  autograd), kept to show what the fused node saves.
* ``Python node, no conversion`` — ``grid_sample`` on the precomputed grid inside a minimal
  ``torch.autograd.Function`` (the sampler and its backward, nothing else): the floor of any
  warp written in Python around ``grid_sample``, i.e. what the per-call cost of a Python
  autograd node alone adds to the baseline (a diagnostic, not a way to warp a pixel field).

Before timing, the outputs and the gradients (converted to the displacement's units) of every
candidate are checked against ``regcorrect.warp``.

Usage::

    python benchmarks/warp.py                  # 1x1x256^2 and 1x1x96^3
    python benchmarks/warp.py --quick          # tiny smoke test
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _common import interleaved_medians, machine_info, markdown_table, median
from einops import rearrange
from torch import Tensor

from regcorrect import warp
from regcorrect.registration.grid import identity_grid, pixel_to_normalized_scale

try:
    from kornia.geometry.transform import remap
except ImportError:  # pragma: no cover - kornia is a dependency
    remap = None

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from monai.networks.blocks import Warp as MonaiWarp
except ImportError:
    MonaiWarp = None

BASELINE = "grid_sample"
UNFUSED = "unfused conversion (before)"
PYTHON_NODE = "Python node, no conversion"


class _SamplerNode(torch.autograd.Function):
    """Bilinear, border, corner-aligned ``grid_sample`` as a bare Python autograd node."""

    @staticmethod
    def forward(ctx, image: Tensor, grid: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(image, grid)
        sample = (
            torch.ops.aten.grid_sampler_2d if grid.ndim == 4 else torch.ops.aten.grid_sampler_3d
        )
        return sample(image, grid, 0, 1, True)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        image, grid = ctx.saved_tensors
        backward = (
            torch.ops.aten.grid_sampler_2d_backward
            if grid.ndim == 4
            else torch.ops.aten.grid_sampler_3d_backward
        )
        return tuple(backward(grad, image, grid, 0, 1, True, [True, True]))


def unfused_warp(image: Tensor, displacement: Tensor) -> Tensor:
    """The textbook conversion regcorrect.warp used before the fused node (flip the channels to
    ``x, y[, z]``, move them last, scale, add the identity grid; autograd replays each op)."""
    spatial = tuple(displacement.shape[2:])
    scale = pixel_to_normalized_scale(spatial, displacement.device, displacement.dtype)
    offsets = rearrange(displacement.flip(1), "b n ... -> b ... n") * scale
    grid = identity_grid(spatial, displacement.device, displacement.dtype) + offsets
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _inputs(shape: tuple[int, ...], device: torch.device, seed: int = 0) -> tuple[Tensor, Tensor]:
    """An image ``(1, 1, *shape)`` and a smooth field of a few pixels ``(1, N, *shape)``."""
    generator = torch.Generator().manual_seed(seed)
    n = len(shape)
    image = torch.rand(1, 1, *shape, generator=generator)
    coarse = torch.randn(1, n, *(4,) * n, generator=generator) * 3.0
    mode = "bilinear" if n == 2 else "trilinear"
    field = F.interpolate(coarse, size=shape, mode=mode, align_corners=True)
    return image.to(device), field.to(device)


def _grad_out(shape: tuple[int, ...], device: torch.device) -> Tensor:
    return torch.rand(1, 1, *shape, generator=torch.Generator().manual_seed(1)).to(device)


def _make_candidates(
    image: Tensor, field: Tensor, grad_out: Tensor, sync: Callable[[], None]
) -> tuple[dict[str, Callable[[], tuple[Tensor, Tensor, Tensor]]], dict[str, Callable]]:
    """name -> callable running forward + backward and returning (output, d image, d leaf);
    plus name -> converter of that result to (output, d image, d field in pixels, axis order)
    for candidates whose leaf is not the pixel field."""
    spatial = tuple(field.shape[2:])
    n = len(spatial)
    scale = pixel_to_normalized_scale(spatial, field.device, field.dtype)
    grid = identity_grid(spatial, field.device, field.dtype)
    grid = (grid + rearrange(field.flip(1), "b n ... -> b ... n") * scale).detach()

    image_leaf = image.clone().requires_grad_(True)
    field_leaf = field.clone().requires_grad_(True)
    grid_leaf = grid.clone().requires_grad_(True)

    def run(forward: Callable[[], Tensor], leaf: Tensor) -> Callable[[], tuple]:
        def step() -> tuple[Tensor, Tensor, Tensor]:
            image_leaf.grad = None
            leaf.grad = None
            output = forward()
            output.backward(grad_out)
            sync()
            return output.detach(), image_leaf.grad, leaf.grad

        return step

    def raw_grid_sample() -> Tensor:
        return F.grid_sample(
            image_leaf, grid_leaf, mode="bilinear", padding_mode="border", align_corners=True
        )

    candidates = {
        BASELINE: run(raw_grid_sample, grid_leaf),
        "regcorrect.warp": run(lambda: warp(image_leaf, field_leaf), field_leaf),
        UNFUSED: run(lambda: unfused_warp(image_leaf, field_leaf), field_leaf),
        PYTHON_NODE: run(lambda: _SamplerNode.apply(image_leaf, grid_leaf), grid_leaf),
    }
    if remap is not None and n == 2:
        axes = torch.meshgrid(
            *[torch.arange(s, device=field.device, dtype=field.dtype) for s in spatial],
            indexing="ij",
        )
        map_y = (axes[0] + field[:, 0]).detach().requires_grad_(True)
        map_x = (axes[1] + field[:, 1]).detach().requires_grad_(True)

        def remap_step() -> tuple[Tensor, Tensor, Tensor]:
            image_leaf.grad = map_x.grad = map_y.grad = None
            output = remap(image_leaf, map_x, map_y, padding_mode="border", align_corners=True)
            output.backward(grad_out)
            sync()
            return output.detach(), image_leaf.grad, torch.stack([map_y.grad, map_x.grad], 1)

        candidates["kornia remap"] = remap_step
    if MonaiWarp is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            monai_warp = MonaiWarp(mode="bilinear", padding_mode="border")
        candidates["MONAI Warp"] = run(lambda: monai_warp(image_leaf, field_leaf), field_leaf)

    def grid_to_field_grad(result: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, ...]:
        output, d_image, d_grid = result  # d_grid (B, *spatial, n) in (x, y[, z]) order
        d_field = rearrange(d_grid * scale, "b ... n -> b n ...").flip(1)
        return output, d_image, d_field

    converters = {BASELINE: grid_to_field_grad, PYTHON_NODE: grid_to_field_grad}
    return candidates, converters


def check_agreement(candidates: dict, converters: dict, atol: float = 1e-4) -> dict[str, float]:
    """Assert every candidate's output and gradients match ``regcorrect.warp``'s.

    Output and image gradient must agree everywhere (relative to their magnitude). The field
    gradient of bilinear sampling jumps where a sample position crosses a pixel boundary, and
    candidates that round the position differently (normalising in another order) land on the
    other side at a handful of points, so there at most 0.1 % of its entries may differ.

    Returns:
        name -> largest absolute output difference.
    """
    reference = tuple(t.clone() for t in candidates["regcorrect.warp"]())
    errors = {}
    for name, step in candidates.items():
        output, d_image, d_field = converters.get(name, lambda r: r)(step())
        for label, mine, theirs in zip(
            ("output", "d image"), (output, d_image), reference[:2], strict=True
        ):
            error = float((mine - theirs).abs().max())
            bound = atol * (1.0 + float(theirs.abs().max()))
            assert error <= bound, f"{name}: {label} differs from regcorrect.warp by {error}"
        bound = atol * (1.0 + float(reference[2].abs().max()))
        off = float(((d_field - reference[2]).abs() > bound).float().mean())
        assert off <= 1e-3, f"{name}: d field differs from regcorrect.warp at {off:.2%} of entries"
        errors[name] = float((output - reference[0]).abs().max())
    return errors


def benchmark(
    shape: tuple[int, ...], device: torch.device, repeats: int, warmup: int, inner: int
) -> list[list[str]]:
    image, field = _inputs(shape, device)
    grad_out = _grad_out(shape, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    candidates, converters = _make_candidates(image, field, grad_out, sync)
    errors = check_agreement(candidates, converters)
    samples = interleaved_medians(candidates, repeats=repeats, warmup=warmup, inner=inner)
    base = median(samples[BASELINE])
    label = "1×1×" + "×".join(str(s) for s in shape)
    rows = []
    for name in (BASELINE, "regcorrect.warp", "kornia remap", "MONAI Warp", UNFUSED, PYTHON_NODE):
        if name not in samples:
            reason = "2D only" if name == "kornia remap" else "not installed"
            rows.append([label, name, "—", "—", "—", reason])
            continue
        times = sorted(samples[name])
        mid = median(times)
        spread = f"{times[len(times) // 4] * 1e3:.3f}–{times[(3 * len(times)) // 4] * 1e3:.3f}"
        rows.append(
            [label, name, f"{mid * 1e3:.3f}", spread, f"{mid / base:.2f}×", f"{errors[name]:.1e}"]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=41, help="interleaved rounds")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per candidate")
    parser.add_argument("--inner", type=int, default=10, help="calls per timed sample, 2D")
    parser.add_argument("--inner3d", type=int, default=1, help="calls per timed sample, 3D")
    parser.add_argument("--size2d", type=int, default=256)
    parser.add_argument("--size3d", type=int, default=96)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 rounds")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.size2d, args.size3d, args.repeats, args.warmup, args.inner = 32, 16, 2, 1, 1
    device = torch.device(args.device)
    torch.manual_seed(0)

    print("machine:", ", ".join(f"{k}: {v}" for k, v in machine_info(args.device).items()))
    print(
        f"settings: repeats={args.repeats} warmup={args.warmup} inner={args.inner} "
        f"inner3d={args.inner3d} threads={torch.get_num_threads()} "
        f"device={device} MONAI={'yes' if MonaiWarp is not None else 'no'}"
    )
    rows = []
    rows += benchmark((args.size2d,) * 2, device, args.repeats, args.warmup, args.inner)
    rows += benchmark((args.size3d,) * 3, device, args.repeats, args.warmup, args.inner3d)
    header = ["input", "method", "median ms", "IQR ms", "vs grid_sample", "max |Δ output| vs warp"]
    print(markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
