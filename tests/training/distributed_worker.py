"""One process of the 2-process test run (``test_distributed.py`` starts it with torchrun).

Usage: ``python -m torch.distributed.run --standalone --nproc_per_node=2 -m
tests.training.distributed_worker FOLDER STEPS``. Each rank trains the tiny config with
``out_dir=FOLDER/run`` and saves its final weights to ``FOLDER/rank<r>.pt``. With ``diverge``
instead of STEPS each rank trains with lr 1e20 and prints the step it stopped at.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from regcorrect.training import DivergenceError, Trainer

from .helpers import tiny_config, tiny_data


def diverge(folder: str) -> None:
    """Train with lr 1e20 until the losses are NaN: every rank must stop at the same step."""
    torch.set_num_threads(1)
    run = Path(folder) / "run"
    config = tiny_config(run, steps=6, lr=1e20, checkpoint_every=1, eval_every=100)
    trainer = Trainer(config, data=tiny_data(), progress=False)
    try:
        trainer.fit()
    except DivergenceError as error:
        print(f"rank {trainer.context.rank} diverged at step {error.step}", flush=True)
    trainer.close()


def main(folder: str, steps: int) -> None:
    torch.set_num_threads(1)
    trainer = Trainer(
        tiny_config(Path(folder) / "run", steps=steps, eval_every=100),
        data=tiny_data(),
        progress=False,
    )
    context = trainer.context
    assert context.world_size == 2 and context.distributed and context.device.type == "cpu"
    trainer.fit()
    torch.save(trainer.model.state_dict(), Path(folder) / f"rank{context.rank}.pt")
    if context.is_main:
        print("checkpoint written by rank 0")
    trainer.close()


if __name__ == "__main__":
    if sys.argv[2] == "diverge":
        diverge(sys.argv[1])
    else:
        main(sys.argv[1], int(sys.argv[2]))
