"""Registration accuracy of R on real brain slices with known misalignments.

R is trained **alone** (RegGAN with an identity generator: ``RegistrationCorrection`` with
``nn.Identity()``, i.e. the moving image is registered onto its own misaligned copy with the
correction loss ``20·L1`` and the smoothness loss ``10·‖∇u‖²``) on ICBM152 training slices, then
evaluated on the held-out test slices against the known ground-truth field:

* **affine**: rotation ±5°, translation ±10 %, scale ±10 % (``Misalignment.custom``); ground
  truth ``affine_to_displacement`` of the kornia matrix;
* **elastic**: a smooth random field ``v`` (bicubic interpolation of random control-point
  displacements), the fixed image is ``warp(moving, v)``; ground truth ``v``;
* **affine∘elastic**: the elastic then the affine warp; ground truth
  ``compose(affine field, v)``.

The conventions are checked numerically before training (warping the moving image by the
ground-truth field must reproduce the fixed image; the inverse / swapped composition must not).
Training samples are drawn afresh every step, a third of each kind.

Metrics on the test pairs, inside the brain mask of the fixed image: end-point error
``‖u_R(p) − u_true(p)‖`` in pixels (mean and 95th percentile, pooled over pixels), folding
fraction (``det J ≤ 0``) of R's field in the brain and in the whole image, and, for scale, the
error of the zero field (no registration).

Defaults (chosen for a 2-core CPU budget; results in ``docs/results/registration.md``): ICBM152
at 2 mm padded to 128², R with channels ``(8, 16, 16, 16, 16, 16)`` instead of the paper's
``(32, 64, ...)``, 800 steps of batch 8, Adam with a one-cycle schedule (peak lr 2e-3), elastic
control-point amplitude 6 px, 4 test pairs per test image and kind. R variants (``VARIANTS``):
plain, with the global affine head (moments head, or the older bottleneck-mean head),
diffeomorphic, and 2-pass versions (``RegUNet(passes=2)``: R refines its own field once).

Usage::

    python benchmarks/registration_accuracy.py --threads 1   # every variant: ~1 h on 2 shared cores
    python benchmarks/registration_accuracy.py --threads 1 --variants plain "affine, 2 passes"
    python benchmarks/registration_accuracy.py --quick       # tiny smoke test
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import machine_info, markdown_table
from torch import Tensor, nn

from regcorrect import RegistrationCorrection, RegUNet, warp
from regcorrect.data import Misalignment, icbm152
from regcorrect.registration import affine_to_displacement, compose, folding_fraction
from regcorrect.training.checkpoint import atomic_torch_save

#: R variants: name -> RegUNet options.
VARIANTS: dict[str, dict[str, object]] = {
    "plain": {},
    "affine": {"affine": True},
    "affine (mean-pooled head)": {"affine": True, "affine_features": "mean"},
    "diffeomorphic": {"diffeomorphic": True},
    "affine+diffeomorphic": {"affine": True, "diffeomorphic": True},
    "plain, 2 passes": {"passes": 2},
    "affine, 2 passes": {"affine": True, "passes": 2},
    "affine, 3 passes": {"affine": True, "passes": 3},
    "affine+diffeomorphic, 2 passes": {"affine": True, "diffeomorphic": True, "passes": 2},
}
KINDS = ("affine", "elastic", "affine∘elastic")
AFFINE_RANGES = {"rotation_deg": 5.0, "translation_frac": 0.10, "scale_frac": 0.10}


# ---------------------------------------------------------------------------- misalignments
def elastic_field(
    n: int, shape: tuple[int, int], amplitude: float, generator: torch.Generator
) -> Tensor:
    """Smooth random displacements ``(n, 2, H, W)`` in pixels.

    Random control-point displacements, uniform in ``±amplitude``, on a 5 × 5 grid spanning the
    image, interpolated bicubically: a smooth field whose largest displacement is about
    ``amplitude`` and whose gradient stays well below 1 (no folding for amplitudes of a few
    pixels on images of ~100 pixels).
    """
    control = (torch.rand(n, 2, 5, 5, generator=generator) * 2 - 1) * amplitude
    return F.interpolate(control, size=shape, mode="bicubic", align_corners=True)


def misalign(
    images: Tensor, masks: Tensor, kinds: list[str], amplitude: float, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Misalign each image by its kind; return (fixed images, true fields, fixed-space masks).

    The true field ``u`` is the one R must output: ``warp(moving, u) == fixed``.
    """
    n, _, height, width = images.shape
    affine = Misalignment.custom(**AFFINE_RANGES)
    matrices = affine.matrices(affine.sample_params(n, generator), (height, width))
    affine_fields = affine_to_displacement(matrices, (height, width))
    elastic = elastic_field(n, (height, width), amplitude, generator)
    fields = torch.empty_like(elastic)
    for i, kind in enumerate(kinds):
        if kind == "affine":
            fields[i] = affine_fields[i]
        elif kind == "elastic":
            fields[i] = elastic[i]
        else:  # elastic first, then affine: warp(warp(x, v), a) == warp(x, compose(a, v))
            fields[i] = compose(affine_fields[i : i + 1], elastic[i : i + 1])[0]
    fixed = _warp_background(images, fields)
    fixed_masks = warp(masks.float(), fields, padding_mode="zeros") > 0.5
    return fixed, fields, fixed_masks


def check_conventions(images: Tensor, amplitude: float) -> dict[str, float]:
    """Check numerically that the true fields reproduce the misalignments; return the errors."""
    generator = torch.Generator().manual_seed(123)
    n, _, height, width = images.shape
    errors = {}
    # affine: warp by affine_to_displacement(M) == kornia's warp_affine by M (Misalignment)
    affine = Misalignment.custom(**AFFINE_RANGES)
    moved, matrices = affine(images, generator=generator)
    field = affine_to_displacement(matrices, (height, width))
    inverse = affine_to_displacement(torch.linalg.inv(_square(matrices))[:, :2], (height, width))
    errors["affine: warp(x, u_true) vs Misalignment"] = _mae(_warp_background(images, field), moved)
    errors["affine: same with the inverse matrix (must be worse)"] = _mae(
        _warp_background(images, inverse), moved
    )
    # elastic + composition: the image warped twice vs once by the composed field
    elastic = elastic_field(n, (height, width), amplitude, generator)
    twice = _warp_background(_warp_background(images, elastic), field)
    errors["affine∘elastic: warp(x, compose(a, v)) vs warp(warp(x, v), a)"] = _mae(
        _warp_background(images, compose(field, elastic)), twice
    )
    errors["affine∘elastic: swapped compose(v, a) (must be worse)"] = _mae(
        _warp_background(images, compose(elastic, field)), twice
    )
    errors["elastic: folding fraction of the true fields"] = float(folding_fraction(elastic).max())
    assert errors["affine: warp(x, u_true) vs Misalignment"] < 1e-3, errors
    assert errors["affine: same with the inverse matrix (must be worse)"] > 10 * max(
        errors["affine: warp(x, u_true) vs Misalignment"], 1e-4
    ), errors
    composed = errors["affine∘elastic: warp(x, compose(a, v)) vs warp(warp(x, v), a)"]
    assert composed < 0.5 * errors["affine∘elastic: swapped compose(v, a) (must be worse)"], errors
    assert errors["elastic: folding fraction of the true fields"] == 0.0, errors
    return errors


def _warp_background(images: Tensor, fields: Tensor) -> Tensor:
    """Warp with the background value ``-1`` outside the image, as ``Misalignment`` does."""
    return warp(images + 1.0, fields, padding_mode="zeros") - 1.0


def _square(matrices: Tensor) -> Tensor:
    bottom = torch.tensor([0.0, 0.0, 1.0]).expand(matrices.shape[0], 1, 3)
    return torch.cat([matrices, bottom], dim=1)


def _mae(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().mean())


# ---------------------------------------------------------------------------- data
def load(split: str, size: int, slices: int | None = None) -> tuple[Tensor, Tensor]:
    """T1 and T2 slices of a split at 2 mm, padded to ``size``: images, masks ``(2N, 1, H, W)``."""
    pairs = icbm152(split, spacing=2.0, size=size)
    keep = slice(None) if slices is None else slice(0, slices)
    images = torch.cat([pairs.source[keep], pairs.target[keep]])
    masks = torch.cat([pairs.mask[keep], pairs.mask[keep]])
    return images, masks


# ---------------------------------------------------------------------------- train / evaluate
def train(
    reg_net: RegUNet,
    images: Tensor,
    masks: Tensor,
    *,
    steps: int,
    batch: int,
    lr: float,
    amplitude: float,
    seed: int,
) -> float:
    """Train R alone; return the final loss (mean of the last 10 % of steps)."""
    model = RegistrationCorrection(nn.Identity(), reg_net)
    optimizer = torch.optim.Adam(reg_net.parameters(), lr=lr)
    # warm up over the first 5 % of the steps, then anneal to ~0 (cosine): a short run ends
    # close to its optimum instead of oscillating around it.
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=max(steps, 2), pct_start=0.05
    )
    generator = torch.Generator().manual_seed(seed)
    losses = []
    reg_net.train()
    for _ in range(steps):
        rows = torch.randint(images.shape[0], (batch,), generator=generator)
        kinds = [KINDS[int(k)] for k in torch.randint(len(KINDS), (batch,), generator=generator)]
        moving = images[rows]
        fixed, _, _ = misalign(moving, masks[rows], kinds, amplitude, generator)
        optimizer.zero_grad(set_to_none=True)
        out = model(moving, fixed)
        out.total.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(out.total.detach()))
    tail = losses[-max(1, steps // 10) :]
    return sum(tail) / len(tail)


@torch.no_grad()
def evaluate(
    reg_net: nn.Module | None,
    images: Tensor,
    masks: Tensor,
    *,
    pairs_per_image: int,
    amplitude: float,
    seed: int,
) -> dict[str, dict[str, float]]:
    """EPE and folding per misalignment kind on fixed test pairs (the same for every R)."""
    if reg_net is not None:
        reg_net.eval()
    generator = torch.Generator().manual_seed(seed)
    results = {}
    for kind in KINDS:
        epe_all, folding_brain, folding_all = [], [], []
        for _ in range(pairs_per_image):
            fixed, truth, fixed_masks = misalign(
                images, masks, [kind] * images.shape[0], amplitude, generator
            )
            if reg_net is None:
                predicted = torch.zeros_like(truth)
            else:
                predicted = reg_net(torch.cat([images, fixed], dim=1))
            epe = (predicted - truth).norm(dim=1)  # (N, H, W)
            epe_all.append(epe[fixed_masks.squeeze(1)])
            folding_brain.append(folding_fraction(predicted, fixed_masks))
            folding_all.append(folding_fraction(predicted))
        epe = torch.cat(epe_all)
        results[kind] = {
            "epe_mean": float(epe.mean()),
            "epe_p95": float(torch.quantile(epe, 0.95)),
            "fold_brain": float(torch.cat(folding_brain).mean()),
            "fold_brain_max": float(torch.cat(folding_brain).max()),
            "fold_image": float(torch.cat(folding_all).mean()),
        }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=800, help="training steps per R")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak of a one-cycle schedule")
    parser.add_argument(
        "--channels", type=int, nargs="+", default=[8, 16, 16, 16, 16, 16], help="R widths"
    )
    parser.add_argument("--size", type=int, default=128, help="slices (115×97 at 2 mm) padded")
    parser.add_argument("--amplitude", type=float, default=6.0, help="elastic, pixels")
    parser.add_argument("--pairs-per-image", type=int, default=4, help="test pairs per slice/kind")
    parser.add_argument("--test-slices", type=int, help="use only the first N test slices")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--eval-passes",
        dest="eval_passes",
        type=int,
        nargs="*",
        default=[],
        help="also evaluate each trained R with these numbers of passes (same weights)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument(
        "--save", help="write each trained R's state dict to this folder (<variant>_<steps>.pt)"
    )
    parser.add_argument(
        "--load", help="evaluate the state dicts a --save run wrote here instead of training"
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke test (few steps)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.batch, args.channels = 3, 2, [8, 16, 16]
        args.pairs_per_image, args.variants = 1, ["plain", "affine+diffeomorphic, 2 passes"]
        args.test_slices, args.threads = 4, args.threads or 1
        args.eval_passes = args.eval_passes or [1]
    if args.threads:
        torch.set_num_threads(args.threads)

    print("machine:", ", ".join(f"{k}: {v}" for k, v in machine_info().items()))
    print(
        f"settings: steps={args.steps} batch={args.batch} lr={args.lr} channels={args.channels} "
        f"size={args.size} (2 mm) amplitude={args.amplitude}px "
        f"pairs_per_image={args.pairs_per_image} seed={args.seed} affine ranges={AFFINE_RANGES}",
        flush=True,
    )
    train_images, train_masks = load("train", args.size)
    test_images, test_masks = load("test", args.size, args.test_slices)
    print(
        f"data: {train_images.shape[0]} train / {test_images.shape[0]} test images "
        f"(T1 and T2 of {train_images.shape[0] // 2} / {test_images.shape[0] // 2} slices), "
        f"{tuple(train_images.shape[2:])}"
    )
    errors = check_conventions(test_images[:8], args.amplitude)
    print(
        markdown_table(["convention check", "value"], [[k, f"{v:.2e}"] for k, v in errors.items()])
    )

    eval_options = dict(pairs_per_image=args.pairs_per_image, amplitude=args.amplitude)
    results = {
        "no registration (zero field)": evaluate(
            None, test_images, test_masks, seed=args.seed + 1, **eval_options
        )
    }
    timing = {}
    for name in args.variants:
        torch.manual_seed(args.seed)
        reg_net = RegUNet(spatial_dims=2, in_channels=2, channels=args.channels, **VARIANTS[name])
        weights = re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_") + f"_{args.steps}.pt"
        start = time.perf_counter()
        if args.load:
            reg_net.load_state_dict(torch.load(Path(args.load) / weights, weights_only=True))
            final_loss = float("nan")  # not trained here
        else:
            final_loss = train(
                reg_net,
                train_images,
                train_masks,
                steps=args.steps,
                batch=args.batch,
                lr=args.lr,
                amplitude=args.amplitude,
                seed=args.seed,
            )
        if args.save:
            Path(args.save).mkdir(parents=True, exist_ok=True)
            atomic_torch_save(reg_net.state_dict(), Path(args.save) / weights)
        timing[name] = (time.perf_counter() - start, final_loss)
        results[name] = evaluate(
            reg_net, test_images, test_masks, seed=args.seed + 1, **eval_options
        )
        print(f"  trained {name}: {timing[name][0]:.0f} s, final loss {final_loss:.3f}", flush=True)
        trained_passes = reg_net.passes
        for passes in args.eval_passes:
            if passes == trained_passes:
                continue
            reg_net.passes = passes  # the same weights, applied more (or fewer) times
            label = f"{name}, evaluated with {passes} pass{'es' if passes > 1 else ''}"
            results[label] = evaluate(
                reg_net, test_images, test_masks, seed=args.seed + 1, **eval_options
            )
        reg_net.passes = trained_passes

    rows = []
    for name, per_kind in results.items():
        for kind, r in per_kind.items():
            rows.append(
                [
                    name,
                    kind,
                    f"{r['epe_mean']:.2f}",
                    f"{r['epe_p95']:.2f}",
                    f"{100 * r['fold_brain']:.3f}",
                    f"{100 * r['fold_brain_max']:.3f}",
                    f"{100 * r['fold_image']:.3f}",
                ]
            )
    header = [
        "R",
        "misalignment",
        "mean EPE px (brain)",
        "p95 EPE px (brain)",
        "folding % (brain)",
        "max folding % of a pair (brain)",
        "folding % (image)",
    ]
    print(markdown_table(header, rows))
    print(
        markdown_table(
            ["R", "training s", "final training loss"],
            [[n, f"{t:.0f}", f"{loss:.3f}"] for n, (t, loss) in timing.items()],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
