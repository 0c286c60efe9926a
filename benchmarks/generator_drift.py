"""Does the generator drift geometrically when R can compensate?

In NC+R nothing but the network's inductive bias ties the position of ``G(x)`` to ``x``: a
generator whose output sits a fraction of a pixel off costs nothing if R shifts it back. This
script trains a model exactly like ``noise_sweep.py`` (same data, networks, steps and seed), then
translates the held-out slab and reports its NMAE against the aligned T2 as is, and after the
best global shift ``(dy, dx)`` on a grid of ``--shift-step`` px up to ``--max-shift`` px. A
generator that keeps the source geometry gains nothing from the shift.

Usage::

    python benchmarks/generator_drift.py --modes nc+r pix2pix --level 0 --seed 0
    python benchmarks/generator_drift.py --quick        # smoke test, seconds
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from noise_sweep import (
    add_model_arguments,
    best_shift,
    fit,
    load_data,
    sweep_model,
    translate_all,
)  # noqa: E402

from regcorrect.data import Misalignment  # noqa: E402
from regcorrect.metrics import nmae  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modes", nargs="+", default=["nc+r", "pix2pix"])
    parser.add_argument("--level", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=800)
    add_model_arguments(parser)
    parser.set_defaults(amp=True, affine=False)  # as the committed sweep: bf16, paper R
    parser.add_argument("--max-shift", dest="max_shift", type=float, default=2.0)
    parser.add_argument("--shift-step", dest="shift_step", type=float, default=0.25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.size, args.spacing = 2, [48, 48], 4.0
        args.base_channels, args.residual_blocks, args.reg_channels = 8, 1, [8, 16, 16, 16]
        args.max_shift, args.shift_step = 0.5, 0.5
    torch.set_num_threads(args.threads)
    train, test = load_data(args.spacing, tuple(args.size))
    for mode in args.modes:
        model = sweep_model(args, mode, args.seed, tuple(args.size))
        fit(
            model,
            Misalignment(args.level),
            train,
            test,
            steps=args.steps,
            batch=args.batch,
            seed=args.seed,
            eval_every=max(1, args.steps // 4),
            last_evals=1,
            label=f"{mode:8s} level {args.level} seed {args.seed}",
        )
        prediction = translate_all(model, test.source)
        value, dy, dx = best_shift(prediction, test.target, args.max_shift, args.shift_step)
        row = {
            "mode": mode,
            "level": args.level,
            "seed": args.seed,
            "steps": args.steps,
            "nmae": float(nmae(prediction, test.target)),
            "nmae_after_best_shift": value,
            "best_shift_dy_dx": [dy, dx],
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
