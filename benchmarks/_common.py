"""Helpers shared by the benchmark scripts: interleaved timing, machine description, tables.

The benchmark machines are often shared and noisy, so every comparison here is measured
**interleaved**: one sample of each candidate per round, the order rotating from round to round,
after a warm-up; the reported figure is the median over rounds, and comparisons are ratios of
medians taken in the same run.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence

import torch

__all__ = ["interleaved_medians", "machine_info", "markdown_table", "median"]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def interleaved_medians(
    candidates: dict[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int = 1,
    inner: int = 1,
) -> dict[str, list[float]]:
    """Time every candidate ``repeats`` times, interleaved; return seconds per call per round.

    Args:
        candidates: name -> zero-argument callable doing one unit of work (it must synchronise
            the device itself if it runs asynchronously).
        repeats: rounds; in round ``r`` the candidates run in an order rotated by ``r``.
        warmup: untimed calls of each candidate before the first round.
        inner: calls per sample (a sample is their mean), for work that is too short to time once.

    Returns:
        name -> list of ``repeats`` samples (seconds per call).
    """
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            function = candidates[name]
            start = time.perf_counter()
            for _ in range(inner):
                function()
            samples[name].append((time.perf_counter() - start) / inner)
    return samples


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info(device: str = "cpu") -> dict[str, str]:
    """What a results page needs to say about where a number was measured."""
    info = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "cpu capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "load average (1 min) at start": f"{os.getloadavg()[0]:.2f}",
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table (also readable as plain text)."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
