"""One process of the 2-process test run (``test_distributed.py`` starts it with torchrun).

Usage: ``python -m torch.distributed.run --standalone --nproc_per_node=2 -m
tests.training.distributed_worker FOLDER STEPS``. Each rank trains the tiny config with
``out_dir=FOLDER/run`` and saves its final weights to ``FOLDER/rank<r>.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from regcorrect.training import Trainer

from .helpers import tiny_config, tiny_data


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
    main(sys.argv[1], int(sys.argv[2]))
