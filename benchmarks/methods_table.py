"""Table 1 of the RegGAN paper on the bundled ICBM152 T1→T2 data: CycleGAN, MUNIT, UNIT and
NICE-GAN, each in modes C, C+R, NC and NC+R, at the paper's misalignment (±5°, ±5 %, ±5 %).

Same protocol as ``noise_sweep.py`` (independent misalignment of source and target, evaluation on
the held-out superior slab against its aligned T2, background excluded). Results go to a JSON-lines
file, one line per (method, mode, seed), so an interrupted run resumes; ``--report`` writes
``docs/results/methods_table.md`` with the differences that +R makes.

Usage::

    python benchmarks/methods_table.py --steps 1000
    python benchmarks/methods_table.py --report
    python benchmarks/methods_table.py --quick
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from noise_sweep import baselines, fit, load_data  # noqa: E402

from regcorrect import build_model  # noqa: E402
from regcorrect.data import Misalignment  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("cyclegan", "munit", "unit", "nicegan")
MODES = ("c", "c+r", "nc", "nc+r")

#: Reduced widths so that the 16 runs fit a CPU; everything else is each method's default.
OPTIONS = {
    "cyclegan": dict(base_channels=32, num_residual_blocks=6, discriminator_channels=32),
    "munit": dict(
        base_channels=32,
        num_residual_blocks=4,
        mlp_channels=128,
        discriminator_channels=32,
        discriminator_scales=2,
    ),
    "unit": dict(
        base_channels=32, num_residual_blocks=4, discriminator_channels=32, discriminator_scales=2
    ),
    "nicegan": dict(base_channels=16, num_residual_blocks=4, discriminator_layers=6),
}
TINY = {
    "cyclegan": dict(base_channels=8, num_residual_blocks=1, discriminator_channels=8),
    "munit": dict(
        base_channels=8,
        num_residual_blocks=1,
        mlp_channels=16,
        discriminator_channels=8,
        discriminator_layers=2,
        discriminator_scales=2,
    ),
    "unit": dict(
        base_channels=8,
        num_residual_blocks=2,
        discriminator_channels=8,
        discriminator_layers=2,
        discriminator_scales=2,
    ),
    "nicegan": dict(base_channels=8, num_residual_blocks=1, discriminator_layers=5),
}


def train_one(args, method: str, mode: str, seed: int, train, test, options: dict) -> dict:
    size = tuple(train.source.shape[2:])
    model = build_model(
        method,
        mode,
        image_size=size,
        amp=args.amp,
        seed=seed,
        learning_rate=args.lr,
        total_steps=args.steps,
        registration={"channels": tuple(args.reg_channels), "affine": args.affine}
        if mode.endswith("+r")
        else None,
        **options,
    )
    noise = Misalignment.custom(rotation_deg=5.0, translation_frac=0.05, scale_frac=0.05)
    history, final, seconds = fit(
        model,
        noise,
        train,
        test,
        steps=args.steps,
        batch=args.batch,
        seed=seed,
        eval_every=args.eval_every,
        last_evals=args.last_evals,
        label=f"{method:8s} {mode:5s} seed {seed}",
    )
    row = {
        "method": method,
        "mode": mode,
        "seed": seed,
        "seconds": seconds,
        "parameters": model.parameter_count(),
        "final": final,
        "history": history,
        "settings": settings_of(args),
    }
    print(f"{method:8s} {mode:5s} seed {seed}: {row['final']} ({row['seconds']} s)", flush=True)
    return row


def settings_of(args) -> dict:
    keys = (
        "steps",
        "batch",
        "lr",
        "spacing",
        "size",
        "reg_channels",
        "eval_every",
        "last_evals",
        "amp",
        "affine",
        "quick",
    )
    return {k: getattr(args, k) for k in keys}


def run(args) -> None:
    train, test = load_data(args.spacing, tuple(args.size))
    torch.set_num_threads(args.threads)
    path = Path(args.results)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row["settings"] == settings_of(args):
                done.add((row["method"], row["mode"], row["seed"]))
    table = TINY if args.quick else OPTIONS
    for seed in args.seeds:
        for method in args.methods:
            for mode in MODES:
                if (method, mode, seed) in done:
                    continue
                row = train_one(args, method, mode, seed, train, test, table[method])
                with path.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")


def report(args) -> None:
    rows = [json.loads(line) for line in Path(args.results).read_text().splitlines()]
    settings = rows[-1]["settings"]
    rows = [r for r in rows if r["settings"] == settings]
    train, test = load_data(settings["spacing"], tuple(settings["size"]))

    def mean(method, mode, key):
        values = [r["final"][key] for r in rows if r["method"] == method and r["mode"] == mode]
        return float(np.mean(values)) if values else None

    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    lines = [
        "# Methods × modes — Table 1 of the paper on bundled ICBM152 T1→T2",
        "",
        "Generated by `benchmarks/methods_table.py` (do not edit by hand). Misalignment ±5°, ±5 %",
        "translation, ±5 % scaling applied independently to source and target; evaluation on the",
        f"{len(test.source)} held-out superior slices against the aligned T2, background excluded;",
        f"mean of the last {settings['last_evals']} evaluations. In brackets: the change +R makes.",
        "",
        "| Metric | Mode | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for key, label, digits in (("nmae", "NMAE ↓", 4), ("psnr", "PSNR ↑", 2), ("ssim", "SSIM ↑", 3)):
        for mode in MODES:
            cells = []
            for method in methods:
                value = mean(method, mode, key)
                if value is None:
                    cells.append("–")
                    continue
                text = f"{value:.{digits}f}"
                if mode.endswith("+r"):
                    base = mean(method, mode[:-2], key)
                    if base is not None:
                        text = f"({value - base:+.{digits}f}) {text}"
                cells.append(text)
            lines.append(f"| {label} | {mode.upper()} | " + " | ".join(cells) + " |")
    lines += ["", "What +R changes (the paper: +R improves every method in both C and NC):", ""]
    for key, label, better in (("nmae", "NMAE", -1), ("psnr", "PSNR", 1), ("ssim", "SSIM", 1)):
        pairs = [
            (mean(m, base + "+r", key), mean(m, base, key))
            for m in methods
            for base in ("c", "nc")
            if mean(m, base + "+r", key) is not None and mean(m, base, key) is not None
        ]
        improved = sum(1 for with_r, without in pairs if better * (with_r - without) > 0)
        lines.append(
            f"- {label}: better with +R in {improved} of {len(pairs)} method × mode pairs."
        )
    seeds = sorted({r["seed"] for r in rows})
    lines.append(f"- Seeds: {seeds} (single evaluations swing by about ±0.01 NMAE).")
    lines += [
        "",
        "Trivial baselines:",
        "",
        "| Baseline | NMAE | PSNR | SSIM |",
        "|---|---|---|---|",
    ]
    for name, m in baselines(train, test).items():
        lines.append(f"| {name} | {m['nmae']:.4f} | {m['psnr']:.2f} | {m['ssim']:.3f} |")
    lines += [
        "",
        "Trainable parameters at these reduced widths:",
        "",
        "| Method | " + " | ".join(m.upper() for m in MODES) + " |",
        "|---|" + "---|" * len(MODES),
    ]
    for method in methods:
        counts = []
        for mode in MODES:
            found = [r["parameters"] for r in rows if r["method"] == method and r["mode"] == mode]
            counts.append(f"{found[0]:,}" if found else "–")
        lines.append(f"| {method} | " + " | ".join(counts) + " |")
    seconds = sum(r["seconds"] for r in rows)
    lines += [
        "",
        "## Settings",
        "",
        f"- Command: `python benchmarks/methods_table.py --steps {settings['steps']} --spacing "
        f"{settings['spacing']} --size {' '.join(map(str, settings['size']))} --reg-channels "
        f"{' '.join(map(str, settings['reg_channels']))} --eval-every {settings['eval_every']} "
        f"--last-evals {settings['last_evals']}{' --amp' if settings['amp'] else ''}"
        f"{' --affine' if settings.get('affine') else ''}` then `--report`.",
        f"- {settings['steps']} steps, batch {settings['batch']}, Adam lr {settings['lr']}, "
        f"linear decay over the second half, bf16 autocast: {settings['amp']}; widths reduced "
        f"for CPU (see `OPTIONS` in the script); R = RegUNet(affine="
        f"{settings.get('affine', True)}, channels={tuple(settings['reg_channels'])}).",
        f"- Data: ICBM152 2009c at {settings['spacing']} mm, {tuple(settings['size'])}.",
        f"- Total training time {seconds / 60:.0f} min on {platform.machine()}, torch "
        f"{torch.__version__}. {args.machine}",
    ]
    out = ROOT / "docs" / "results" / "methods_table.md"
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--spacing", type=float, default=2.0)
    parser.add_argument("--size", type=int, nargs=2, default=[112, 96])
    parser.add_argument(
        "--reg-channels", dest="reg_channels", type=int, nargs="+", default=[16, 32, 32, 32, 32, 32]
    )
    parser.add_argument("--eval-every", dest="eval_every", type=int, default=250)
    parser.add_argument("--last-evals", dest="last_evals", type=int, default=2)
    parser.add_argument("--amp", action="store_true")
    parser.add_argument(
        "--affine", action="store_true", help="give R its global affine head (default: paper's R)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", default=str(ROOT / "docs" / "results" / "methods_table.jsonl"))
    parser.add_argument("--report", action="store_true")
    parser.add_argument(
        "--machine", default="", help="free text on the machine/threads, added to the report"
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run into a temp file")
    args = parser.parse_args()
    if args.quick:
        import tempfile

        args.steps, args.eval_every, args.last_evals, args.spacing = 2, 1, 1, 4.0
        args.size, args.reg_channels = [48, 48], [8, 16, 16, 16]
        args.results = str(Path(tempfile.mkdtemp()) / "methods.jsonl")
    if args.report:
        report(args)
    else:
        run(args)
        if args.quick:
            report_path = Path(args.results)
            print(report_path.read_text()[:200])


if __name__ == "__main__":
    main()
