"""Every check that needs a GPU, in one command that keeps inside a fixed time.

GPU time comes in short leases, so this script runs, in order and each under its own time limit:

1. the machine (``nvidia-smi``, torch, the GPU's name);
2. the whole test suite with a GPU visible (``tests/test_cuda.py`` runs instead of skipping);
3. ``benchmarks/warp.py --device cuda``;
4. ``benchmarks/step_speed.py --device cuda`` (the paper's networks, 256² and 128², batch 1 and
   4; no ``torch.compile`` variants: compiling each one takes longer than the lease allows);
5. long noise-sweep runs (``benchmarks/noise_sweep.py --device cuda``), all at once: a short
   calibration run of every one of them, at the same time, measures the seconds per step under
   that load; the step count is then the largest multiple of 500 that ends before the deadline
   (at least 800, at most ``--max-steps``). Runs still going at the deadline are stopped.

``--runs pix2pix_r`` trains the Pix2Pix+R set instead of the default (``anchored``), and
``--steps N`` skips the calibration and trains every run for N steps.

Everything is written to ``--out`` (logs, the sweep's JSON lines, ``summary.txt``) and packed
into ``device_check.tar.gz`` beside it at the end.

Usage (on the GPU machine, from the repository root)::

    python benchmarks/device_check.py --out /tmp/device --deadline 540
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "benchmarks" / "noise_sweep.py"
#: Flags of every sweep run: the settings of the recommended CPU sweep
#: (``docs/results/anchored/noise_sweep.md``) that apply to Pix2Pix too.
COMMON = ["--augment", "--ema-decay", "0.99", "--last-evals", "3"]
#: Our recommended R for global misalignment: the source's alignment in closed form, no learned
#: part (``--reg-passes 0``), correction weight 100.
VARIANT = ["--initial-alignment", "source", "--reg-passes", "0", "--correction-weight", "100"]
#: (name, mode, level, seed, extra flags) in order of importance: the level-0 comparison with
#: Pix2Pix (a tie at 1600 CPU steps), then stability across noise.
SWEEP_RUNS = [
    ("anchored_l0_s0", "nc+r", 0, 0, VARIANT),
    ("pix2pix_l0_s0", "pix2pix", 0, 0, []),
    ("anchored_l0_s1", "nc+r", 0, 1, VARIANT),
    ("pix2pix_l0_s1", "pix2pix", 0, 1, []),
    ("anchored_l5_s0", "nc+r", 5, 0, VARIANT),
    ("anchored_l5_s1", "nc+r", 5, 1, VARIANT),
    ("pix2pix_l5_s0", "pix2pix", 5, 0, []),
    ("anchored_l3_s0", "nc+r", 3, 0, VARIANT),
]
#: Pix2Pix+R (conditional D in the source's frame) with the same R, at every level.
PIX2PIX_R_RUNS = [
    (f"pix2pix_r_l{level}_s{seed}", "pix2pix+r", level, seed, VARIANT)
    for level, seed in [(0, 0), (0, 1), (5, 0), (5, 1), (3, 0), (1, 0), (2, 0), (4, 0)]
]
RUN_SETS = {"anchored": SWEEP_RUNS, "pix2pix_r": PIX2PIX_R_RUNS}


def log(out: Path, text: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {text}"
    print(line, flush=True)
    with (out / "summary.txt").open("a") as handle:
        handle.write(line + "\n")


def run_logged(out: Path, name: str, command: list[str], limit: float) -> None:
    """Run ``command`` with its output in ``out/<name>.log``, stopped after ``limit`` s."""
    started = time.perf_counter()
    with (out / f"{name}.log").open("w") as handle:
        try:
            code = subprocess.run(
                command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, timeout=max(limit, 1)
            ).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    log(out, f"{name}: exit {code} after {time.perf_counter() - started:.0f} s")


def sweep_command(run, steps: int, results: Path, device: str) -> list[str]:
    _, mode, level, seed, extra = run
    return [
        sys.executable,
        str(SWEEP),
        "--device",
        device,
        "--amp",
        "--threads",
        "1",
        "--steps",
        str(steps),
        "--eval-every",
        str(max(1, steps // 8)),
        "--modes",
        mode,
        "--levels",
        str(level),
        "--seeds",
        str(seed),
        "--results",
        str(results),
        *COMMON,
        *extra,
    ]


def sweep(
    out: Path,
    deadline: float,
    max_steps: int,
    device: str,
    runs: list | None = None,
    steps: int | None = None,
) -> None:
    """Calibrate, then run every entry of ``runs`` (default ``SWEEP_RUNS``) that calibrated at
    once until the deadline; with ``steps`` given, skip the calibration and run that many."""
    runs = SWEEP_RUNS if runs is None else runs
    if steps is not None:
        run_all(out, deadline, runs, steps, device)
        return
    calibration_steps = 60
    folder = out / "calibration"
    folder.mkdir()
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            sweep_command(run, calibration_steps, folder / f"{run[0]}.jsonl", device),
            cwd=ROOT,
            stdout=(folder / f"{run[0]}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for run in runs
    ]
    for process in processes:
        process.wait(timeout=max(1, deadline - time.perf_counter()))
    startup = time.perf_counter() - started
    per_step, calibrated = [], []
    for run in runs:
        path = folder / f"{run[0]}.jsonl"
        if not path.exists():
            log(out, f"calibration of {run[0]} failed: see calibration/{run[0]}.log")
            continue
        per_step.append(
            json.loads(path.read_text().splitlines()[-1])["seconds"] / calibration_steps
        )
        calibrated.append(run)
    if not calibrated:
        return
    slowest = max(per_step)
    overhead = startup - slowest * calibration_steps  # a process's start: imports, data, CUDA
    budget = deadline - time.perf_counter() - overhead - 20  # 20 s: last evaluation, packing
    # The calibration's seconds include the first steps' set-up (cuDNN autotuning, allocations):
    # on an H100 it measured 0.14 s/step where the long runs then took 0.10, so no extra margin.
    steps = int(budget / slowest // 500 * 500)
    steps = min(max(steps, 800), max_steps)
    log(
        out,
        f"calibration: {len(runs)} runs at once, s/step "
        + ", ".join(f"{s:.3f}" for s in per_step)
        + f"; start-up {overhead:.0f} s; {budget:.0f} s left -> {steps} steps",
    )
    run_all(out, deadline, calibrated, steps, device)


def run_all(out: Path, deadline: float, runs: list, steps: int, device: str) -> None:
    """Train every run of ``runs`` for ``steps`` at once; stop those still going at the
    deadline."""
    results = out / "sweep"
    results.mkdir()
    processes = {
        run[0]: subprocess.Popen(
            sweep_command(run, steps, results / f"gpu_{run[0]}.jsonl", device),
            cwd=ROOT,
            stdout=(results / f"{run[0]}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for run in runs
    }
    while time.perf_counter() < deadline and any(p.poll() is None for p in processes.values()):
        time.sleep(2)
    for name, process in processes.items():
        if process.poll() is None:
            process.kill()
            log(out, f"sweep {name}: stopped at the deadline")
        else:
            log(out, f"sweep {name}: exit {process.returncode}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="folder for logs and results")
    parser.add_argument("--deadline", type=float, default=540, help="seconds for everything")
    parser.add_argument("--max-steps", dest="max_steps", type=int, default=8000)
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of this script")
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["suite", "warp", "step_speed", "sweep"]
    )
    parser.add_argument("--runs", default="anchored", choices=list(RUN_SETS), help="sweep runs")
    parser.add_argument(
        "--steps", type=int, default=None, help="sweep steps (default: calibrated to the deadline)"
    )
    args = parser.parse_args()
    deadline = time.perf_counter() + args.deadline
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env_lines = subprocess.run(
        [
            sys.executable,
            "-c",
            "import torch, kornia; print(torch.__version__, kornia.__version__, "
            "torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).total_memory)",
        ],
        capture_output=True,
        text=True,
    )
    log(out, f"python {sys.version.split()[0]}; torch, kornia, GPU: {env_lines.stdout.strip()}")
    if env_lines.stderr.strip():
        log(out, env_lines.stderr.strip()[-2000:])
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    python, device = sys.executable, args.device
    if "suite" not in args.skip:
        workers = str(min(12, os.cpu_count() or 1))
        run_logged(out, "tests", [python, "-m", "pytest", "-q", "-n", workers, "tests"], 150)
    if "warp" not in args.skip:
        run_logged(out, "warp", [python, "benchmarks/warp.py", "--device", device], 60)
    if "step_speed" not in args.skip:
        variants = ["reference", "ref-no2nd", "ref-cached", "lib", "lib-cl", "lib-bf16"]
        command = [python, "benchmarks/step_speed.py", "--device", device, "--repeats", "20"]
        command += ["--warmup", "3", "--variants", *variants]
        command += ["--json", str(out / "step_speed_cuda.json")]
        run_logged(out, "step_speed", command, 150)
    if "sweep" not in args.skip:
        try:
            sweep(out, deadline, args.max_steps, device, RUN_SETS[args.runs], args.steps)
        except Exception as error:  # keep what the other checks wrote
            log(out, f"sweep failed: {error!r}")
    with tarfile.open(out.parent / "device_check.tar.gz", "w:gz") as archive:
        archive.add(out, arcname=out.name)
    log(out, "packed")


if __name__ == "__main__":
    main()
