"""Smoke tests of the benchmark scripts: each runs in ``--quick`` mode and prints its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_quick(script: str) -> str:
    environment = dict(os.environ, PYTHONWARNINGS="ignore")
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick"],
        capture_output=True,
        text=True,
        cwd=BENCHMARKS,
        env=environment,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    return completed.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "header", "rows"),
    [
        ("warp.py", "| input | method | median ms |", ["regcorrect.warp", "grid_sample"]),
        (
            "step_speed.py",
            "| size | batch | variant | median s/step |",
            ["reference (published loop)", "build_model fp32", "build_model amp=True (bf16)"],
        ),
        (
            "registration_accuracy.py",
            "| R | misalignment | mean EPE px (brain) |",
            [
                "no registration (zero field)",
                "affine+diffeomorphic, 2 passes",
                "affine+diffeomorphic, 2 passes, evaluated with 1 pass",
            ],
        ),
    ],
)
def test_quick_run_prints_table(script: str, header: str, rows: list[str]) -> None:
    out = run_quick(script)
    assert header in out
    for row in rows:
        assert any(line.startswith("| ") and row in line for line in out.splitlines()), row


def test_noise_sweep_claims_are_checked_both_ways() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from noise_sweep import claims
    finally:
        sys.path.remove(str(BENCHMARKS))
    levels = [0, 1, 2]
    holding = {
        ("nc+r", "nmae"): [0.070, 0.071, 0.072],
        ("pix2pix", "nmae"): [0.075, 0.10, 0.15],
        ("c", "nmae"): [0.08, 0.08, 0.09],
    }
    text = "\n".join(claims(holding, levels, "nc+r", "RegGAN (NC+R)"))
    assert "does not hold" not in text and text.count("holds") == 5
    failing = {
        ("nc+r", "nmae"): [0.090, 0.071, 0.120],  # unstable, worse at 0, worse than C at 2
        ("pix2pix", "nmae"): [0.075, 0.10, 0.15],
        ("c", "nmae"): [0.08, 0.08, 0.11],
    }
    lines = claims(failing, levels, "nc+r", "RegGAN (NC+R)")
    verdicts = {line.split(":")[0]: line.rsplit("—", 1)[1].strip(" .") for line in lines[3:]}
    assert verdicts == {
        "- RegGAN stable across noise (paper": "does not hold (criterion: spread ≤ 10 %)",
        "- Pix2Pix degrades with noise (paper": "holds",
        "- RegGAN ≤ Pix2Pix at Noise.0": "does not hold",
        "- RegGAN better than Pix2Pix at every level ≥ 1": "holds",
        "- RegGAN better than CycleGAN (C) at every level": "does not hold",
    }


def test_noise_sweep_variant_rows_are_checked_under_their_own_label() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from noise_sweep import (
            _is_variant,
            claims,
            group_variants,
            model_flags,
            registration_text,
            table_settings,
            variant_label,
        )
    finally:
        sys.path.remove(str(BENCHMARKS))
    base = {"steps": 800, "affine": False, "lr": 2e-4}
    ours = {"steps": 800, "affine": True, "lr": 2e-4, "centering_weight": 10.0}
    moments = dict(ours, affine_features="moments")
    assert _is_variant(ours, base) and _is_variant(base, base) and _is_variant(moments, base)
    assert not _is_variant(dict(ours, steps=400), base)  # another protocol is not a variant
    # rows from before --affine-features used the bottleneck-mean head
    assert variant_label(ours) == "RegGAN + affine R (mean-pooled head) + centred correction 10"
    assert variant_label(moments) == "RegGAN + affine R + centred correction 10"
    cascade = dict(moments, reg_passes=2)
    assert _is_variant(cascade, base)
    assert variant_label(cascade) == "RegGAN + affine R + 2 passes of R + centred correction 10"
    prealigned = dict(cascade, prealign="moments", smoothness_weight=100.0)
    assert _is_variant(prealigned, base)
    assert variant_label(prealigned) == (
        "RegGAN + affine R + moments pre-alignment + 2 passes of R + smoothness 100 "
        "+ centred correction 10"
    )
    # the report's commands name every option the rows were run with
    assert model_flags(prealigned) == (
        " --affine --affine-features moments --prealign moments --reg-passes 2 "
        "--smoothness-weight 100 --centering-weight 10"
    )
    anchored = dict(base, initial_alignment="source", reg_passes=0, correction_weight=100.0)
    assert _is_variant(anchored, dict(base, correction_weight=20.0))
    assert variant_label(anchored) == (
        "RegGAN + source initial alignment + no learned R + correction 100"
    )
    assert model_flags(anchored) == (
        " --initial-alignment source --reg-passes 0 --correction-weight 100"
    )
    assert model_flags(base) == "" and model_flags(base, centering=True) == " --centering-weight 0"
    assert model_flags(ours) == " --affine --affine-features mean --centering-weight 10"
    rows = [
        {"mode": "nc+r", "settings": base, "level": 0},
        {"mode": "pix2pix", "settings": ours, "level": 0},  # not NC+R: not a variant
        {"mode": "nc+r", "settings": ours, "level": 0},
        {"mode": "nc+r", "settings": moments, "level": 0},
        {"mode": "nc+r", "settings": ours, "level": 1},
        {"mode": "nc+r", "settings": dict(ours, steps=400), "level": 0},
    ]
    variants, variant_rows = group_variants(rows, base)
    assert variants == {"nc+r ours 1": ours, "nc+r ours 2": moments}
    assert [(r["mode"], r["level"]) for r in variant_rows] == [
        ("nc+r ours 1", 0),
        ("nc+r ours 2", 0),
        ("nc+r ours 1", 1),
    ]
    means = {("nc+r ours 2", "nmae"): [0.07, 0.071], ("pix2pix", "nmae"): [0.075, 0.1]}
    lines = claims(means, [0, 1], "nc+r ours 2", variant_label(moments))
    assert lines[1] == "## The paper's claims, checked on NMAE: " + variant_label(moments)
    assert claims(means, [0, 1], "nc+r", "RegGAN") == []  # no rows of that mode
    # the table is made of the paper-option runs even when variant runs outnumber them, and
    # recorded paper values (correction 20, smoothness 10, affine off) do not make a variant
    paper = dict(base, correction_weight=20.0, smoothness_weight=10.0)
    many = [{"mode": "nc+r", "settings": ours}] * 3 + [{"mode": "pix2pix", "settings": paper}]
    assert table_settings(many) == paper
    assert table_settings([{"mode": "nc+r", "settings": ours}]) == ours
    # Pix2Pix run at level 0 only: the level-0 claim is checked, the others are not claimed
    partial = {("nc+r", "nmae"): [0.058, 0.061, 0.062], ("pix2pix", "nmae"): [0.059, None, None]}
    lines = claims(partial, [0, 1, 2], "nc+r", "RegGAN")
    assert "- RegGAN ≤ Pix2Pix at Noise.0: 0.0580 vs 0.0590 — holds." in lines
    assert not any("degrades" in line or "every level ≥ 1" in line for line in lines)
    partial[("pix2pix", "nmae")] = [0.057, 0.09, None]
    lines = claims(partial, [0, 1, 2], "nc+r", "RegGAN")
    assert "- RegGAN ≤ Pix2Pix at Noise.0: 0.0580 vs 0.0570 — does not hold." in lines
    assert any("better at 1 of 1 levels — holds" in line for line in lines)
    # what R is, in the settings line
    assert registration_text(dict(base, reg_channels=[8], **anchored)).startswith(
        "R = the source's foreground alignment alone"
    )
    assert (
        registration_text(dict(base, reg_channels=[8]))
        == "R = RegUNet(affine=False, channels=(8,))"
    )


def test_noise_sweep_table_rows_ignore_r_settings_of_runs_without_r() -> None:
    """A Pix2Pix run launched with R's flags (accepted, unused) belongs to the table; an NC+R
    run must match exactly; one row per (mode, level, seed)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from noise_sweep import same_settings, table_rows
    finally:
        sys.path.remove(str(BENCHMARKS))
    table = {"steps": 800, "initial_alignment": "source", "reg_passes": 0, "ema_decay": 0.99}
    plain_flags = {"steps": 800, "initial_alignment": None, "reg_passes": None, "ema_decay": 0.99}
    pix2pix = {"mode": "pix2pix", "settings": plain_flags, "level": 0, "seed": 0}
    assert same_settings(pix2pix, table)
    assert not same_settings(dict(pix2pix, mode="nc+r"), table)  # R's settings matter with R
    other_ema = dict(pix2pix, settings=dict(plain_flags, ema_decay=0.0))
    assert not same_settings(other_ema, table)  # the generator's average applies to every mode
    other_steps = dict(pix2pix, settings=dict(plain_flags, steps=400))
    assert not same_settings(other_steps, table)
    first = dict(pix2pix, final=1)
    again = dict(pix2pix, settings=table, final=2)  # the same run with the table's flags
    ours = {"mode": "nc+r", "settings": table, "level": 0, "seed": 0}
    assert table_rows([first, other_ema, again, ours], table) == [first, ours]


def test_generator_drift_finds_a_known_shift() -> None:
    import torch

    sys.path.insert(0, str(BENCHMARKS))
    try:
        from noise_sweep import best_shift
    finally:
        sys.path.remove(str(BENCHMARKS))
    from regcorrect import warp
    from regcorrect.data import icbm152

    target = icbm152("test", spacing=4.0, size=(48, 48)).target[:4]
    field = torch.zeros(1, 2, 48, 48)
    field[:, 0], field[:, 1] = 1.0, -1.0  # the "generator" output sits off by this much
    drifted = warp(target, field)
    value, dy, dx = best_shift(drifted, target, max_shift=1.5, step=0.25)
    assert (dy, dx) == (-1.0, 1.0)  # moving it back is the best global shift
    assert value < 0.2 * float(regcorrect_nmae(drifted, target))
    # Sub-pixel: interpolating twice blurs, so the recovered shift is exact to one grid step.
    field[:, 0], field[:, 1] = 0.5, -0.75
    value, dy, dx = best_shift(warp(target, field), target, max_shift=1.5, step=0.25)
    assert abs(dy + 0.5) <= 0.25 and abs(dx - 0.75) <= 0.25


def regcorrect_nmae(prediction, target):
    from regcorrect.metrics import nmae

    return nmae(prediction, target)


@pytest.mark.slow
def test_generator_drift_quick_run_reports_both_modes() -> None:
    import json

    out = run_quick("generator_drift.py")
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [row["mode"] for row in rows] == ["nc+r", "pix2pix"]
    assert all(row["nmae_after_best_shift"] <= row["nmae"] for row in rows)


def test_device_check_logs_and_packs(tmp_path) -> None:
    """The GPU-lease script's frame on the CPU: environment line, summary and archive."""
    out = tmp_path / "device"
    completed = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "device_check.py"),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--deadline",
            "60",
            "--skip",
            "suite",
            "warp",
            "step_speed",
            "sweep",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    summary = (out / "summary.txt").read_text()
    assert "torch, kornia, GPU" in summary
    assert (tmp_path / "device_check.tar.gz").stat().st_size > 0
