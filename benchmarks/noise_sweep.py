"""Table 2 of the RegGAN paper on the bundled ICBM152 T1→T2 data: Pix2Pix, CycleGAN (C) and
RegGAN (NC+R) with the same CycleGAN backbone, at misalignment noise levels 0–5.

Every run trains from scratch with the same steps, batch, learning rate and seeds; source and
target of each training pair are moved independently by ``Misalignment(level)`` (as the official
code does). Evaluation translates the held-out (superior) slab's aligned T1 and compares with its
aligned T2 using the paper's metrics (background excluded). Results are appended, one JSON line
per (mode, level, seed), to ``--results`` so an interrupted sweep resumes where it stopped;
``--report`` turns that file (and every ``<stem>*.jsonl`` beside it) into ``<stem>.md`` and
``<stem>.png`` beside it: ``docs/results/noise_sweep.md`` and ``noise_sweep.png`` by default.

Usage::

    python benchmarks/noise_sweep.py --steps 1500 --levels 0 1 2 3 4 5 --seeds 0 1
    python benchmarks/noise_sweep.py --report
    python benchmarks/noise_sweep.py --quick          # smoke test, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from regcorrect import build_model, warp
from regcorrect.correction import INITIAL_ALIGNMENTS, SOURCE_REFINE_STEPS
from regcorrect.data import Misalignment, PairAugmentation, compose_affine, icbm152
from regcorrect.metrics import nmae, psnr, ssim
from regcorrect.registration import AFFINE_FEATURES, PREALIGNMENTS

ROOT = Path(__file__).resolve().parents[1]
MODES = {
    "pix2pix": "Pix2Pix",
    "c": "CycleGAN (C)",
    "nc": "NC (adversarial only)",
    "nc+r": "RegGAN (NC+R)",
    "pix2pix+r": "Pix2Pix+R (ours: conditional D with R)",
}
VARIANT = "nc+r ours"
#: The options of R (and G's average) that a RegGAN row may vary, with the paper's values (a
#: setting that is absent from a row's settings, or ``None``, is the paper's too).
PAPER_OPTIONS = {
    "affine": False,
    "affine_features": None,
    "reg_passes": 1,
    "prealign": None,
    "initial_alignment": None,
    "correction_weight": 20.0,
    "smoothness_weight": 10.0,
    "centering_weight": 0.0,
    "ema_decay": 0.0,
}
VARIANT_KEYS = tuple(PAPER_OPTIONS)


def _differs(settings: dict, key: str) -> bool:
    """Whether ``settings`` sets ``key`` to something other than the paper's value."""
    return settings.get(key) not in (None, PAPER_OPTIONS[key])


#: Settings that only a run with R uses: rows of modes without R match the table whatever they
#: record for these (the flags are accepted, and ignored, for every mode).
R_ONLY_KEYS = tuple(k for k in VARIANT_KEYS if k != "ema_decay") + ("reg_channels",)


def _equal_except(a: dict, b: dict, ignored: tuple[str, ...]) -> bool:
    """Whether the settings ``a`` and ``b`` agree on every key outside ``ignored``."""
    keys = (set(a) | set(b)) - set(ignored)
    return all(a.get(k) == b.get(k) for k in keys)


def same_settings(row: dict, settings: dict) -> bool:
    """Whether ``row`` ran with the table's ``settings`` (for a mode without R: up to
    :data:`R_ONLY_KEYS`)."""
    if row["mode"].endswith("+r"):
        return row["settings"] == settings
    return _equal_except(row["settings"], settings, R_ONLY_KEYS)


def table_rows(rows: list[dict], settings: dict) -> list[dict]:
    """The rows with the table's ``settings`` (:func:`same_settings`), one per (mode, level,
    seed): the first in file order."""
    chosen: dict[tuple, dict] = {}
    for r in rows:
        if same_settings(r, settings):
            chosen.setdefault((r["mode"], r["level"], r["seed"]), r)
    return list(chosen.values())


def _is_variant(theirs: dict, ours: dict) -> bool:
    """Whether ``theirs`` differs from ``ours`` only in R's options (affine head, centring)."""
    return _equal_except(theirs, ours, VARIANT_KEYS)


def variant_label(settings: dict) -> str:
    parts = []
    if settings.get("affine"):
        # rows from before the option used the bottleneck-mean head
        head = settings.get("affine_features", "mean")
        parts.append("affine R" + (" (mean-pooled head)" if head == "mean" else ""))
    if settings.get("initial_alignment"):
        parts.append(f"{settings['initial_alignment']} initial alignment")
    if settings.get("prealign"):
        parts.append(f"{settings['prealign']} pre-alignment")
    if _differs(settings, "reg_passes"):
        passes = settings["reg_passes"]
        parts.append("no learned R" if passes == 0 else f"{passes} passes of R")
    if _differs(settings, "correction_weight"):
        parts.append(f"correction {settings['correction_weight']:g}")
    if _differs(settings, "smoothness_weight"):
        parts.append(f"smoothness {settings['smoothness_weight']:g}")
    if settings.get("centering_weight"):
        parts.append(f"centred correction {settings['centering_weight']:g}")
    if settings.get("ema_decay"):
        parts.append(f"EMA of G {settings['ema_decay']:g}")
    return "RegGAN + " + " + ".join(parts) if parts else "RegGAN (variant)"


def model_flags(settings: dict, *, centering: bool = False) -> str:
    """The command-line options of R and G that ``settings`` records (those of
    :data:`VARIANT_KEYS`); ``centering=True`` always names the centring weight."""
    flags = ""
    if settings.get("affine"):
        # rows from before the option used the bottleneck-mean head
        flags += f" --affine --affine-features {settings.get('affine_features', 'mean')}"
    if settings.get("initial_alignment"):
        flags += f" --initial-alignment {settings['initial_alignment']}"
    if settings.get("prealign"):
        flags += f" --prealign {settings['prealign']}"
    if _differs(settings, "reg_passes"):
        flags += f" --reg-passes {settings['reg_passes']}"
    if _differs(settings, "correction_weight"):
        flags += f" --correction-weight {settings['correction_weight']:g}"
    if _differs(settings, "smoothness_weight"):
        flags += f" --smoothness-weight {settings['smoothness_weight']:g}"
    if centering or settings.get("centering_weight"):
        flags += f" --centering-weight {settings.get('centering_weight', 0):g}"
    if settings.get("ema_decay"):
        flags += f" --ema-decay {settings['ema_decay']:g}"
    return flags


def registration_text(settings: dict) -> str:
    """What R of the table's runs is, in words."""
    net = f"RegUNet(affine={settings['affine']}, channels={tuple(settings['reg_channels'])})"
    start = settings.get("initial_alignment")
    if start and settings.get("reg_passes") == 0:
        return (
            f"R = the {start}'s foreground alignment alone (`--initial-alignment {start} "
            f"--reg-passes 0`: moments + {SOURCE_REFINE_STEPS} refinement steps, no learned part)"
        )
    if start:
        return f"R = {net}, started from the {start}'s foreground alignment"
    return f"R = {net}"


def table_settings(rows: list[dict]) -> dict:
    """The settings the table is made of: those most runs with the paper's R options share (so a
    file of mostly variant runs still tables Pix2Pix and C), else the most common ones."""
    plain = [r for r in rows if not any(_differs(r["settings"], k) for k in VARIANT_KEYS)]
    groups = Counter(json.dumps(r["settings"], sort_keys=True) for r in plain or rows)
    return json.loads(groups.most_common(1)[0][0])


def group_variants(rows: list[dict], settings: dict) -> tuple[dict[str, dict], list[dict]]:
    """The NC+R rows that differ from the table's ``settings`` only in R's options.

    Returns ``{mode key: settings}`` (keys ``"nc+r ours 1"``, ``"nc+r ours 2"``, … in order of
    first appearance) and those rows with ``mode`` set to their key.
    """
    variants: dict[str, dict] = {}
    variant_rows = []
    for r in rows:
        if r["mode"] != "nc+r" or r["settings"] == settings:
            continue
        if not _is_variant(r["settings"], settings):
            continue
        key = next((k for k, v in variants.items() if v == r["settings"]), None)
        if key is None:
            key = f"{VARIANT} {len(variants) + 1}"
            variants[key] = r["settings"]
        variant_rows.append(dict(r, mode=key))
    return variants, variant_rows


def load_data(spacing: float, size: tuple[int, int]):
    train = icbm152("train", spacing=spacing, size=size)
    test = icbm152("test", spacing=spacing, size=size)
    return train, test


def translate_all(model, images: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """``model.translate`` over ``images`` in batches, clamped to [-1, 1], on the CPU."""
    outputs = [model.translate(images[i : i + batch]).cpu() for i in range(0, len(images), batch)]
    return torch.cat(outputs).clamp(-1, 1)


def evaluate(model, test, batch: int = 16) -> dict[str, float]:
    return metrics_of(translate_all(model, test.source, batch), test.target)


def metrics_of(prediction: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    return {
        "nmae": float(nmae(prediction, target)),
        "psnr": float(psnr(prediction, target)),
        "ssim": float(ssim(prediction, target)),
    }


def best_shift(prediction: torch.Tensor, target: torch.Tensor, max_shift: float, step: float):
    """Lowest NMAE of ``prediction`` moved by one global ``(dy, dx)`` (pixels) onto ``target``.

    Returns:
        ``(nmae, dy, dx)``; ``(nmae without shift, 0, 0)`` if no shift is better.
    """
    count = int(round(max_shift / step))
    offsets = [k * step for k in range(-count, count + 1)]
    best = (float(nmae(prediction, target)), 0.0, 0.0)
    field = torch.zeros(1, 2, *prediction.shape[2:], dtype=prediction.dtype)
    for dy in offsets:
        for dx in offsets:
            field[:, 0], field[:, 1] = dy, dx
            value = float(nmae(warp(prediction, field), target))
            if value < best[0]:
                best = (value, dy, dx)
    return best


def baselines(train, test) -> dict[str, dict[str, float]]:
    """A global linear intensity map T2 ≈ a·T1 + b (least squares on training brain pixels), −T1."""
    brain = train.mask
    t1, t2 = train.source[brain].double().numpy(), train.target[brain].double().numpy()
    a, b = np.polyfit(t1, t2, 1)
    linear = torch.where(test.mask, a * test.source + b, torch.full_like(test.source, -1.0))
    negated = torch.where(test.mask, -test.source, torch.full_like(test.source, -1.0))
    return {
        f"linear map (a={a:.3f}, b={b:.3f})": metrics_of(linear.float().clamp(-1, 1), test.target),
        "−T1": metrics_of(negated, test.target),
    }


def sweep_model(args, mode: str, seed: int, size: tuple[int, int]):
    """The CycleGAN-backbone model of one sweep run, from the sweep's settings in ``args``."""
    return build_model(
        "cyclegan",
        mode,
        image_size=size,
        amp=args.amp,
        device=args.device,
        seed=seed,
        learning_rate=args.lr,
        total_steps=args.steps,
        decay_start=args.steps // 2,
        base_channels=args.base_channels,
        num_residual_blocks=args.residual_blocks,
        discriminator_channels=args.base_channels,
        registration={
            "channels": tuple(args.reg_channels),
            "affine": args.affine,
            "affine_features": args.affine_features,
            "passes": args.reg_passes,
            "prealign": args.prealign,
        }
        if mode.endswith("+r")
        else None,
        smoothness_weight=args.smoothness_weight,
        correction_weight=args.correction_weight,
        centering_weight=args.centering_weight,
        initial_alignment=args.initial_alignment if mode.endswith("+r") else None,
        ema_decay=args.ema_decay,
    )


def current_environment(device: str) -> dict[str, str]:
    """The torch version and the device name (GPU model or CPU architecture) of a run."""
    name = platform.machine()
    if torch.device(device).type == "cuda":
        name = torch.cuda.get_device_name(torch.device(device))
    return {"torch": torch.__version__, "device": name}


def environment(row: dict) -> dict[str, str]:
    """A result row's environment; rows from before it was recorded ran on this machine's CPU."""
    return row.get("environment") or current_environment("cpu")


def train_one(args, mode: str, level: int, seed: int, train, test) -> dict:
    model = sweep_model(args, mode, seed, tuple(train.source.shape[2:]))
    history, final, seconds = fit(
        model,
        Misalignment(level),
        train,
        test,
        augmentation=PairAugmentation() if args.augment else None,
        steps=args.steps,
        batch=args.batch,
        seed=seed,
        eval_every=args.eval_every,
        last_evals=args.last_evals,
        label=f"{mode:8s} level {level} seed {seed}",
    )
    # Generator drift: the final translation's NMAE after the best global sub-pixel shift.
    value, dy, dx = best_shift(translate_all(model, test.source), test.target, 1.0, 0.25)
    return {
        "mode": mode,
        "level": level,
        "seed": seed,
        "steps": args.steps,
        "seconds": seconds,
        "final": final,
        "final_drift": {"nmae_after_best_shift": value, "best_shift_dy_dx": [dy, dx]},
        "history": history,
        "settings": settings_of(args),
        "environment": current_environment(args.device),
    }


def fit(
    model,
    noise,
    train,
    test,
    *,
    steps,
    batch,
    seed,
    eval_every,
    last_evals,
    label,
    augmentation: PairAugmentation | None = None,
):
    """Train ``model`` on independently misaligned pairs; evaluate every ``eval_every`` steps.

    With an ``augmentation``, each aligned pair is first moved by one joint random transform
    (drawn before the noise, from the same generator), composed with the noise so that each
    image is interpolated once.

    Returns:
        (history of evaluations with the losses of that step, mean metrics of the last
        ``last_evals`` evaluations, training seconds).
    """
    generator = torch.Generator().manual_seed(10_000 + seed)
    history = []
    start = time.perf_counter()
    for step in range(1, steps + 1):
        index = torch.randint(len(train.source), (batch,), generator=generator)
        source, target = train.source[index], train.target[index]
        size = (source.shape[-2], source.shape[-1])
        joint = None
        if augmentation is not None:
            joint = augmentation.matrices(augmentation.sample_params(batch, generator), size)
        moved = []
        for image in (source, target):
            matrix = noise.matrices(noise.sample_params(batch, generator), size)
            if joint is not None:  # augmentation then noise, one interpolation
                matrix = compose_affine(matrix, joint)
            moved.append(Misalignment.warp(image, matrix))
        source, target = moved
        losses = model.train_step(source, target)
        if step % eval_every == 0 or step == steps:
            metrics = evaluate(model, test)
            history.append({"step": step, **metrics, **{k: round(v, 5) for k, v in losses.items()}})
            print(
                f"  {label} step {step:5d}: NMAE {metrics['nmae']:.4f} "
                f"PSNR {metrics['psnr']:.2f} SSIM {metrics['ssim']:.3f}",
                flush=True,
            )
    last = history[-last_evals:]
    final = {k: float(np.mean([h[k] for h in last])) for k in ("nmae", "psnr", "ssim")}
    return history, final, round(time.perf_counter() - start, 1)


def settings_of(args) -> dict:
    keys = (
        "steps",
        "batch",
        "lr",
        "spacing",
        "size",
        "base_channels",
        "residual_blocks",
        "reg_channels",
        "eval_every",
        "last_evals",
        "amp",
        "smoothness_weight",
        "correction_weight",
        "affine",
    )
    settings = {k: getattr(args, k) for k in keys}
    # only when used, so rows from before these options still match
    if args.affine:
        settings["affine_features"] = args.affine_features
    if args.reg_passes != 1:
        settings["reg_passes"] = args.reg_passes
    if args.prealign:
        settings["prealign"] = args.prealign
    if args.initial_alignment:
        settings["initial_alignment"] = args.initial_alignment
    if args.centering_weight:
        settings["centering_weight"] = args.centering_weight
    if args.ema_decay:
        settings["ema_decay"] = args.ema_decay
    if args.device != "cpu":
        settings["device"] = args.device
    if args.augment:
        # since 2026-11-27 augmentation and noise are one interpolation (two before)
        settings["augment"] = repr(PairAugmentation()) + ", composed with the noise"
    return settings


def run(args) -> None:
    train, test = load_data(args.spacing, tuple(args.size))
    results_path = Path(args.results)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            row = json.loads(line)
            if row.get("settings") == settings_of(args):
                done.add((row["mode"], row["level"], row["seed"]))
    torch.set_num_threads(args.threads)
    print(
        f"train {tuple(train.source.shape)}, test {tuple(test.source.shape)}; "
        f"{len(done)} runs already done",
        flush=True,
    )
    for seed in args.seeds:
        for level in args.levels:
            for mode in args.modes:
                if (mode, level, seed) in done:
                    continue
                row = train_one(args, mode, level, seed, train, test)
                with results_path.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(
                    f"{mode} level {level} seed {seed}: {row['final']} in {row['seconds']} s",
                    flush=True,
                )


def report(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = Path(args.results)
    stem = results.stem.split("_seed")[0]  # the family: noise_sweep.jsonl, noise_sweep_seed0.jsonl…
    files = sorted(results.parent.glob(stem + "*.jsonl"))
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    if not rows:
        raise SystemExit("no results")
    # runs that differ only in --amp are compared with their counterparts in a separate section
    settings = table_settings(rows)
    other_precision = dict(settings, amp=not settings["amp"])
    precision_rows = table_rows(rows, other_precision)
    # NC+R runs that differ from the table's settings only in R's options (affine head, passes,
    # centred correction) are our variants: a row each, checked like RegGAN.
    variants, variant_rows = group_variants(rows, settings)
    rows = table_rows(rows, settings) + variant_rows
    train, test = load_data(settings["spacing"], tuple(settings["size"]))
    trivial = baselines(train, test)
    levels = sorted({r["level"] for r in rows})
    labels = dict(MODES)
    labels.update({key: variant_label(v) for key, v in variants.items()})
    modes = [m for m in labels if any(r["mode"] == m for r in rows)]

    def cell(mode, level, key):
        values = [r["final"][key] for r in rows if r["mode"] == mode and r["level"] == level]
        if not values:
            return "–", None
        mean, spread = float(np.mean(values)), (max(values) - min(values)) / 2
        digits = 2 if key == "psnr" else (3 if key == "ssim" else 4)
        text = f"{mean:.{digits}f}" + (f" ± {spread:.{digits}f}" if len(values) > 1 else "")
        return text, mean

    results_option = ""  # the command names a results file outside docs/results
    if results.resolve().parent != ROOT / "docs" / "results":
        results_option = f" --results {os.path.relpath(results, ROOT)}"
    lines = [
        "# Noise sweep — Table 2 of the paper on bundled ICBM152 T1→T2"
        + (" (training pairs jointly augmented)" if settings.get("augment") else ""),
        "",
        "Generated by `benchmarks/noise_sweep.py` (do not edit by hand). Each cell: mean over seeds",
        f"(± half the range) of the mean of the last {settings['last_evals']} evaluations, on the",
        f"{len(test.source)} held-out superior slices, background (−1) excluded.",
        "",
        "| Mode | Metric | " + " | ".join(f"Noise.{lv}" for lv in levels) + " |",
        "|---|---|" + "---|" * len(levels),
    ]
    means: dict[tuple[str, str], list] = {}
    for mode in modes:
        for key, label in (("nmae", "NMAE ↓"), ("psnr", "PSNR ↑"), ("ssim", "SSIM ↑")):
            cells = [cell(mode, lv, key) for lv in levels]
            means[(mode, key)] = [c[1] for c in cells]
            lines.append(f"| {labels[mode]} | {label} | " + " | ".join(c[0] for c in cells) + " |")
    lines += [
        "",
        "Trivial baselines (no training, independent of noise level):",
        "",
        "| Baseline | NMAE | PSNR | SSIM |",
        "|---|---|---|---|",
    ]
    for name, m in trivial.items():
        lines.append(f"| {name} | {m['nmae']:.4f} | {m['psnr']:.2f} | {m['ssim']:.3f} |")
    seeds = sorted({r["seed"] for r in rows})
    seconds = sum(r["seconds"] for r in rows)
    lines += [
        "",
        "## Settings",
        "",
        f"- Command: `python benchmarks/noise_sweep.py --steps {settings['steps']} --levels "
        f"{' '.join(map(str, levels))} --seeds {' '.join(map(str, seeds))} --modes "
        f"{' '.join(m for m in modes if m not in variants)}"
        f" --eval-every {settings['eval_every']} --last-evals {settings['last_evals']}"
        f"{' --amp' if settings['amp'] else ''}{model_flags(settings)}"
        f"{' --augment' if settings.get('augment') else ''}"
        f"{results_option}"
        f"{' --device ' + settings['device'] if 'device' in settings else ''}`"
        " then `--report`"
        + "".join(
            f"; the row {labels[key]}: the same command with `--modes nc+r"
            + model_flags(v, centering=True)
            + "`"
            for key, v in variants.items()
        )
        + (
            " (R with the global affine head, `build_model(..., centering_weight=...)`; rows "
            "run before `--affine-features` existed used the bottleneck-mean head, `mean`)"
            if variants
            else ""
        ),
        f"- Data: ICBM152 2009c, spacing {settings['spacing']} mm, padded/cropped to "
        f"{tuple(settings['size'])}; {len(train.source)} training / {len(test.source)} test slices"
        + (
            f"; every training pair first moved by one joint {settings['augment']} "
            "(the same transform for source and target, before the noise)."
            if settings.get("augment")
            else "."
        ),
        f"- CycleGAN ResNet generator, base channels {settings['base_channels']}, "
        f"{settings['residual_blocks']} residual blocks; PatchGAN with {settings['base_channels']} "
        f"channels; {registration_text(settings)}.",
        f"- {settings['steps']} steps, batch {settings['batch']}, Adam lr {settings['lr']} "
        "(β = 0.5, 0.999), linear decay over the second half; LSGAN; weights Adv 1, "
        f"Corr {settings['correction_weight']}, Smooth {settings['smoothness_weight']}, Pix2Pix L1 100, "
        f"Cyc 10; bf16 autocast: {settings['amp']}.",
        f"- Seeds {seeds}; total training time {seconds / 60:.0f} min (sum over runs), "
        f"torch {', '.join(sorted({environment(r)['torch'] for r in rows}))}, "
        f"{', '.join(sorted({environment(r)['device'] for r in rows}))}. {args.machine}",
    ]
    lines += claims(means, levels, "nc+r", MODES["nc+r"])
    lines += claims(means, levels, "pix2pix+r", MODES["pix2pix+r"])
    for key in variants:
        lines += claims(means, levels, key, labels[key])
    lines += drift_table(rows, labels)
    lines += precision_check(rows, precision_rows, settings["amp"])
    out = results.parent
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4))
    for ax, (key, label) in zip(
        axes, (("nmae", "NMAE ↓"), ("psnr", "PSNR ↑"), ("ssim", "SSIM ↑")), strict=True
    ):
        for mode in modes:
            ys = means[(mode, key)]
            ax.plot(
                levels, [np.nan if y is None else y for y in ys], marker="o", label=labels[mode]
            )
        linear = next(iter(trivial.values()))[key]
        ax.axhline(linear, color="grey", linestyle="--", label="linear map")
        ax.set_xlabel("noise level")
        ax.set_title(label)
    handles, names = axes[0].get_legend_handles_labels()  # one legend, below the plots
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(out / f"{stem}.png", dpi=110)
    print((out / f"{stem}.md").read_text())


def claims(
    means: dict[tuple[str, str], list], levels: list[int], mode: str, label: str
) -> list[str]:
    """The paper's Table 2 claims for ``mode``, checked on the mean NMAE per level (lower is
    better)."""
    nmae = {m: values for (m, key), values in means.items() if key == "nmae"}
    ours = nmae.get(mode)
    if ours is None or None in ours:
        return []
    lines = ["", f"## The paper's claims, checked on NMAE: {label}", ""]
    spread = (max(ours) - min(ours)) / float(np.mean(ours))
    lines.append(
        f"- RegGAN stable across noise (paper: 0.071–0.073): NMAE {min(ours):.4f}–{max(ours):.4f}, "
        f"spread {spread:.0%} of its mean — {'holds' if spread <= 0.10 else 'does not hold'} "
        "(criterion: spread ≤ 10 %)."
    )
    pix = nmae.get("pix2pix")
    if pix is not None and None not in pix:
        rising = all(b >= a for a, b in zip(pix, pix[1:], strict=False))
        lines.append(
            f"- Pix2Pix degrades with noise (paper: 0.075 → 0.181): {pix[0]:.4f} → {pix[-1]:.4f}, "
            f"{'monotonic' if rising else 'not monotonic'} — "
            f"{'holds' if pix[-1] > pix[0] else 'does not hold'}."
        )
    if pix is not None:  # each claim on the levels Pix2Pix was run at
        if 0 in levels and pix[levels.index(0)] is not None:
            i = levels.index(0)
            lines.append(
                f"- RegGAN ≤ Pix2Pix at Noise.0: {ours[i]:.4f} vs {pix[i]:.4f} — "
                f"{'holds' if ours[i] <= pix[i] else 'does not hold'}."
            )
        others = [
            (lv, o, p)
            for lv, o, p in zip(levels, ours, pix, strict=True)
            if lv != 0 and p is not None
        ]
        better = [lv for lv, o, p in others if o < p]
        if others:
            lines.append(
                f"- RegGAN better than Pix2Pix at every level ≥ 1: better at {len(better)} of "
                f"{len(others)} levels — "
                f"{'holds' if len(better) == len(others) else 'does not hold'}."
            )
    cyc = nmae.get("c")
    if cyc is not None and None not in cyc:
        better = [lv for lv, o, c in zip(levels, ours, cyc, strict=True) if o < c]
        lines.append(
            f"- RegGAN better than CycleGAN (C) at every level: better at {len(better)} of "
            f"{len(levels)} levels — {'holds' if len(better) == len(levels) else 'does not hold'}."
        )
    return lines


def drift_table(rows: list[dict], labels: dict[str, str]) -> list[str]:
    """The final models' NMAE before and after the best global sub-pixel shift (runs that
    recorded it): how much of the error is a geometric drift of the generator."""
    recorded = [r for r in rows if "final_drift" in r]
    if not recorded:
        return []
    lines = [
        "",
        "## Generator drift",
        "",
        "The final model's held-out NMAE as it is and after moving its translations by the best",
        "global shift (0.25 px grid, up to 1 px; `best_shift`), mean over seeds; shifts `(dy, dx)`",
        "per seed. A generator that keeps the source's geometry gains nothing.",
        "",
        "| Mode | Level | NMAE | after best shift | shifts |",
        "|---|---|---|---|---|",
    ]
    for mode in labels:
        for level in sorted({r["level"] for r in recorded}):
            group = [r for r in recorded if r["mode"] == mode and r["level"] == level]
            if not group:
                continue
            before = np.mean([r["history"][-1]["nmae"] for r in group])
            after = np.mean([r["final_drift"]["nmae_after_best_shift"] for r in group])
            shifts = ", ".join(
                "({:+.2f}, {:+.2f})".format(*r["final_drift"]["best_shift_dy_dx"]) for r in group
            )
            lines.append(f"| {labels[mode]} | {level} | {before:.4f} | {after:.4f} | {shifts} |")
    return lines


def precision_check(rows: list[dict], other: list[dict], amp: bool) -> list[str]:
    """Runs repeated with the other ``--amp`` setting, side by side with their counterparts."""
    if not other:
        return []
    name, other_name = ("bf16", "float32") if amp else ("float32", "bf16")
    lines = [
        "",
        f"## {name} against {other_name}",
        "",
        "Runs repeated with only `--amp` changed (same seeds, steps, data; the table's command with",
        f"`--amp` {'dropped' if amp else 'added'} and the levels/seeds listed), mean over those",
        "seeds. The s/run columns are wall times of runs made under different machine loads, not a",
        "speed comparison (that is `step_speed.py`).",
        "",
        f"| Mode | Level | Seeds | NMAE {name} | NMAE {other_name} | SSIM {name} | "
        f"SSIM {other_name} | s/run {name} | s/run {other_name} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["mode"], r["level"]) for r in other}, key=lambda k: (k[0], k[1]))
    for mode, level in keys:
        theirs = [r for r in other if r["mode"] == mode and r["level"] == level]
        seeds = sorted({r["seed"] for r in theirs})
        ours = [r for r in rows if r["mode"] == mode and r["level"] == level and r["seed"] in seeds]
        if not ours:
            continue

        def avg(group, key):
            return float(np.mean([r["final"][key] for r in group]))

        def secs(group):
            return float(np.mean([r["seconds"] for r in group]))

        lines.append(
            f"| {MODES[mode]} | {level} | {seeds} | {avg(ours, 'nmae'):.4f} | "
            f"{avg(theirs, 'nmae'):.4f} | {avg(ours, 'ssim'):.3f} | {avg(theirs, 'ssim'):.3f} | "
            f"{secs(ours):.0f} | {secs(theirs):.0f} |"
        )
    return lines


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The data, network and loss options that :func:`sweep_model` and :func:`fit` read."""
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument(
        "--device",
        default="cpu",
        help="where to train (data, noise and metrics stay on the CPU); recorded in the sweep's "
        "settings when not cpu",
    )
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--spacing", type=float, default=2.0)
    parser.add_argument("--size", type=int, nargs=2, default=[112, 96])
    parser.add_argument("--base-channels", dest="base_channels", type=int, default=32)
    parser.add_argument("--residual-blocks", dest="residual_blocks", type=int, default=6)
    parser.add_argument(
        "--reg-channels", dest="reg_channels", type=int, nargs="+", default=[16, 32, 32, 32, 32, 32]
    )
    for key in ("correction_weight", "smoothness_weight"):
        parser.add_argument(
            "--" + key.replace("_", "-"), dest=key, type=float, default=PAPER_OPTIONS[key]
        )
    parser.add_argument(
        "--centering-weight",
        dest="centering_weight",
        type=float,
        default=0.0,
        help="weight of the centred correction loss (build_model's centering_weight; 0: off)",
    )
    parser.add_argument(
        "--affine-features",
        dest="affine_features",
        choices=AFFINE_FEATURES,
        default="moments",
        help="what R's affine head reads (RegUNet's affine_features; only with --affine)",
    )
    parser.add_argument(
        "--ema-decay",
        dest="ema_decay",
        type=float,
        default=0.0,
        help="evaluate an exponential moving average of G's weights (build_model's ema_decay; 0: off)",
    )
    parser.add_argument(
        "--augment",
        action="store_true",
        help="move each aligned training pair by one joint random flip and affine "
        "(PairAugmentation's defaults) before the noise, for every mode alike",
    )
    parser.add_argument(
        "--reg-passes",
        dest="reg_passes",
        type=int,
        default=1,
        help="times R refines its own field (RegUNet's passes; 1: the paper's R; 0: R's "
        "network is not run, the field is the closed-form alignment alone)",
    )
    parser.add_argument(
        "--prealign",
        choices=PREALIGNMENTS,
        default=None,
        help="R starts from a closed-form alignment (RegUNet's prealign; default: none)",
    )
    parser.add_argument(
        "--initial-alignment",
        dest="initial_alignment",
        choices=INITIAL_ALIGNMENTS,
        default=None,
        help="R starts from the source's foreground aligned onto the target's (build_model's "
        "initial_alignment; default: none)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--levels", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--modes", nargs="+", default=["pix2pix", "c", "nc+r"], choices=list(MODES))
    add_model_arguments(parser)
    parser.add_argument("--eval-every", dest="eval_every", type=int, default=250)
    parser.add_argument("--last-evals", dest="last_evals", type=int, default=3)
    parser.add_argument("--amp", action="store_true")
    parser.add_argument(
        "--affine", action="store_true", help="give R its global affine head (default: paper's R)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--results",
        default=str(ROOT / "docs" / "results" / "noise_sweep.jsonl"),
        help="JSON-lines file to append to; --report reads every <stem>*.jsonl beside it "
        "(e.g. noise_sweep_seed0.jsonl, noise_sweep_seed1.jsonl from parallel runs)",
    )
    parser.add_argument("--report", action="store_true", help="write the markdown table and plot")
    parser.add_argument(
        "--machine", default="", help="free text on the machine/threads, added to the report"
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run into a temp file")
    args = parser.parse_args()
    if args.quick:
        import tempfile

        args.steps, args.eval_every, args.levels, args.size = 2, 1, [0, 5], [48, 48]
        args.base_channels, args.residual_blocks, args.reg_channels = 8, 1, [8, 16, 16, 16]
        args.spacing, args.last_evals = 4.0, 1
        args.results = str(Path(tempfile.mkdtemp()) / "sweep.jsonl")
    if args.report:
        report(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
