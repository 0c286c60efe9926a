"""Multi-process training: 2 CPU processes (gloo) started by torchrun."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from regcorrect.training import Trainer, read_csv_log, resolve_device, setup

from .helpers import tiny_config, tiny_data

DISTRIBUTED_STEPS = 3


REPOSITORY = Path(__file__).resolve().parents[2]


def run_two_ranks(folder: Path, argument: str) -> subprocess.CompletedProcess:
    """``distributed_worker FOLDER ARGUMENT`` in 2 CPU processes under torchrun."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "tests.training.distributed_worker",
        str(folder),
        argument,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=REPOSITORY, timeout=300
    )


@pytest.mark.slow
def test_two_processes_stay_identical_and_match_one_process(tmp_path) -> None:
    result = run_two_ranks(tmp_path, str(DISTRIBUTED_STEPS))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("checkpoint written by rank 0") == 1
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])

    # rank 0 alone wrote the logs: one row per step, with losses averaged over the ranks
    assert [row["step"] for row in read_csv_log(tmp_path / "run" / "train.csv")] == [1, 2, 3]
    assert (tmp_path / "run" / "checkpoint.pt").is_file()

    # The same global batch in one process gives the same model up to rounding. Weights are not
    # bitwise equal (gradients are summed in another order, and Adam turns the ~1e-10 gradients
    # of biases before instance norm into ±lr steps), so compare what the models compute.
    source = tiny_data().test.source[:8]
    single = Trainer(tiny_config(None, steps=DISTRIBUTED_STEPS), data=tiny_data(), progress=False)
    untrained = single.model.translate(source)
    single.fit()
    expected = single.model.translate(source)
    both = Trainer(tiny_config(None), data=tiny_data(), progress=False)
    both.model.load_state_dict(ranks[0])
    assert (both.model.translate(source) - expected).abs().max() < 1e-4
    assert (expected - untrained).abs().max() > 1e-2  # training did move the outputs


@pytest.mark.slow
def test_every_rank_stops_at_the_step_that_diverged(tmp_path) -> None:
    result = run_two_ranks(tmp_path, "diverge")
    assert result.returncode == 0, result.stderr[-3000:]  # no rank hangs or crashes
    steps = sorted(re.findall(r"rank (\d) diverged at step (\d+)", result.stdout))
    assert [rank for rank, _ in steps] == ["0", "1"], result.stdout
    assert steps[0][1] == steps[1][1], result.stdout
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert saved["training"]["step"] == int(steps[0][1]) - 1


def test_single_process_setup_initialises_nothing(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = setup("cpu")
    assert (context.rank, context.world_size, context.is_main, context.distributed) == (
        0,
        1,
        True,
        False,
    )
    assert not torch.distributed.is_initialized()


def test_device_choice() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
