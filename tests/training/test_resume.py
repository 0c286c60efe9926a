"""Resuming is bit-identical; Ctrl-C and interruptions write a checkpoint first."""

from __future__ import annotations

import os
import shutil
import signal

import pytest

from regcorrect.training import ConfigError, Trainer, read_csv_log

from .helpers import tiny_config, tiny_data, tiny_resume, tiny_trainer, weights_equal


def train_in_two_halves(tmp_path, **changes) -> Trainer:
    """N steps, checkpoint, forget everything, fresh objects resume from the file, N steps."""
    first = tiny_trainer(tmp_path / "halves", **changes)
    first.fit(until=first.total_steps // 2)
    assert first.step == first.total_steps // 2
    del first
    second = tiny_resume(tmp_path / "halves")
    second.fit()
    return second


@pytest.mark.parametrize(
    "changes",
    [
        # RegGAN with replay buffer, learning-rate decay, unpaired targets
        {"mode": "nc+r", "steps": 6, "decay_start": 2, "paired": False},
        # cyclic mode: two generators, two discriminators, two replay buffers
        {"mode": "c+r", "steps": 4},
        # the centred correction's running mean is state too
        {"mode": "nc+r", "steps": 4, "centering_weight": 5.0},
        # the generators' moving average is state too, and the evaluations use it
        {"mode": "c", "steps": 4, "ema_decay": 0.5},
        # conditional D with R from the source: the replay buffer holds (condition, fake) pairs
        {"mode": "pix2pix+r", "steps": 4, "initial_alignment": "source"},
    ],
    ids=["nc+r", "c+r", "nc+r-centred", "c-ema", "pix2pix+r"],
)
def test_resume_is_bit_identical(tmp_path, changes) -> None:
    whole = tiny_trainer(tmp_path / "whole", **changes)
    whole.fit()
    resumed = train_in_two_halves(tmp_path, **changes)
    assert resumed.step == whole.step == changes["steps"]
    assert weights_equal(whole.model, resumed.model)
    for name, optimizer in whole.model.optimizers.items():
        ours = optimizer.state_dict()["state"]
        theirs = resumed.model.optimizers[name].state_dict()["state"]
        assert all((ours[k]["exp_avg"] == theirs[k]["exp_avg"]).all() for k in ours), (
            f"Adam moments of {name} differ"
        )
    # the logs hold the same rows: the losses of every step were the same
    assert read_csv_log(tmp_path / "whole" / "train.csv") == read_csv_log(
        tmp_path / "halves" / "train.csv"
    )


def test_epoch_boundaries_are_crossed_identically(tmp_path) -> None:
    # 3 training slices, batch 2: one step per epoch, so every step starts a new epoch
    changes = {"steps": 4, "test_data": None}
    data = tiny_data()
    small = type(data)(train=data.train[:3], test=data.test, spacing_known=True)
    whole = Trainer(tiny_config(tmp_path / "w3", **changes), data=small, progress=False)
    assert whole.sampler.steps_per_epoch == 1
    whole.fit()
    first = Trainer(tiny_config(tmp_path / "h3", **changes), data=small, progress=False)
    first.fit(until=1)
    second = Trainer.resume(tmp_path / "h3", data=small, progress=False)
    second.fit()
    assert weights_equal(whole.model, second.model)


def test_keyboard_interrupt_between_steps_saves_and_resume_finishes_identically(tmp_path) -> None:
    def interrupt_at_3(trainer: Trainer, losses: dict) -> None:
        if trainer.step == 3:
            raise KeyboardInterrupt

    run = tmp_path / "run"
    trainer = tiny_trainer(run, steps=5, checkpoint_every=100)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(callback=interrupt_at_3)
    resumed = tiny_resume(run)
    assert resumed.step == 3
    resumed.fit()
    whole = tiny_trainer(tmp_path / "whole", steps=5)
    whole.fit()
    assert weights_equal(whole.model, resumed.model)


def test_interrupt_logs_the_steps_since_the_last_row(tmp_path) -> None:
    def interrupt_at_3(trainer: Trainer, losses: dict) -> None:
        if trainer.step == 3:
            raise KeyboardInterrupt

    run = tmp_path / "run"
    trainer = tiny_trainer(run, steps=6, log_every=2, checkpoint_every=100)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(callback=interrupt_at_3)
    # step 3's losses were dropped: no row held them
    assert [row["step"] for row in read_csv_log(run / "train.csv")] == [2, 3]
    resumed = tiny_resume(run)
    resumed.fit()
    assert [row["step"] for row in read_csv_log(run / "train.csv")] == [2, 3, 4, 6]


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_finishes_the_step_then_saves(tmp_path, number) -> None:
    # SIGTERM: what kill, SLURM at its time limit and docker stop send (it killed the run at once)
    def send(trainer: Trainer, losses: dict) -> None:
        if trainer.step == 2:
            os.kill(os.getpid(), number)

    run = tmp_path / "run"
    trainer = tiny_trainer(run, steps=6, checkpoint_every=100)
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(callback=send)
    assert {s: signal.getsignal(s) for s in previous} == previous  # the handlers are put back
    assert trainer.step == 2
    assert tiny_resume(run).step == 2


def test_resume_drops_log_rows_written_after_the_checkpoint(tmp_path) -> None:
    run = tmp_path / "run"

    def keep_step_2(trainer: Trainer, losses: dict) -> None:
        if trainer.step == 2:
            shutil.copy(run / "checkpoint.pt", tmp_path / "step2.pt")

    tiny_trainer(run, steps=4).fit(callback=keep_step_2)
    assert [row["step"] for row in read_csv_log(run / "train.csv")] == [1, 2, 3, 4]
    resumed = tiny_resume(tmp_path / "step2.pt")
    assert resumed.step == 2
    resumed.fit()
    assert [row["step"] for row in read_csv_log(run / "train.csv")] == [1, 2, 3, 4]
    assert [row["step"] for row in read_csv_log(run / "eval.csv")] == [2, 4]
    lines = (run / "log.jsonl").read_text().splitlines()
    assert len(lines) == 4 + 2


def test_resume_may_change_run_settings_only(tmp_path) -> None:
    run = tmp_path / "run"
    tiny_trainer(run, steps=2).fit()
    longer = tiny_resume(run, tiny_config(run, steps=3, eval_every=3))
    longer.fit()
    assert longer.step == 3
    with pytest.raises(ConfigError, match=r"lr: checkpoint 0.0001, config 0.001"):
        tiny_resume(run, tiny_config(run, steps=5, lr=1e-3))


def test_resume_checks_the_data_order(tmp_path) -> None:
    run = tmp_path / "run"
    tiny_trainer(run, steps=1).fit()
    other = tiny_config(run, steps=2)
    data = tiny_data()
    fewer = type(data)(train=data.train[:50], test=data.test, spacing_known=True)
    with pytest.raises(ValueError, match="num_items"):
        Trainer.resume(run, other, data=fewer, progress=False)
