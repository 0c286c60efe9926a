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
            ["no registration (zero field)", "affine+diffeomorphic"],
        ),
    ],
)
def test_quick_run_prints_table(script: str, header: str, rows: list[str]) -> None:
    out = run_quick(script)
    assert header in out
    for row in rows:
        assert any(line.startswith("| ") and row in line for line in out.splitlines()), row
