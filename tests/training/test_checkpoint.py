"""Checkpoints: atomic writes, safe (weights-only) loading, RNG states, content of a run's file."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from regcorrect.training import CheckpointError, load_checkpoint, save_checkpoint
from regcorrect.training.checkpoint import atomic_torch_save, rng_state, set_rng_state

from .helpers import tiny_trainer

MARKER: list[str] = []


def _record(text: str) -> str:
    MARKER.append(text)
    return text


class Payload:
    """Pickling this runs ``_record`` on load — what a weights-only load must refuse to do."""

    def __reduce__(self):
        return (_record, ("code ran while loading",))


def minimal_state() -> dict:
    return {
        "config": {},
        "image_size": [32, 32],
        "model": {"w": torch.ones(2)},
        "training": {"step": 0},
        "sampling": {},
        "rng": rng_state(),
    }


class TestAtomicWrite:
    def test_round_trip(self, tmp_path) -> None:
        path = save_checkpoint(minimal_state(), tmp_path / "c.pt")
        state = load_checkpoint(path)
        assert torch.equal(state["model"]["w"], torch.ones(2))
        assert (state["format"], state["version"]) == ("regcorrect-checkpoint", 1)

    def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(
        self, tmp_path, monkeypatch
    ) -> None:
        path = save_checkpoint(minimal_state(), tmp_path / "c.pt")
        before = path.read_bytes()

        def broken_save(obj, stream):
            stream.write(b"half a checkpoint")
            raise OSError("disk full")

        monkeypatch.setattr(torch, "save", broken_save)
        with pytest.raises(OSError, match="disk full"):
            atomic_torch_save({"x": 1}, path)
        assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]

    def test_interrupted_write_keeps_the_old_file(self, tmp_path, monkeypatch) -> None:
        path = save_checkpoint(minimal_state(), tmp_path / "c.pt")

        def interrupted(obj, stream):
            raise KeyboardInterrupt

        monkeypatch.setattr(torch, "save", interrupted)
        with pytest.raises(KeyboardInterrupt):
            atomic_torch_save({"x": 1}, path)
        assert load_checkpoint(path)["image_size"] == [32, 32]
        assert len(list(tmp_path.iterdir())) == 1

    def test_file_mode_follows_the_umask(self, tmp_path) -> None:
        path = save_checkpoint(minimal_state(), tmp_path / "c.pt")
        assert path.stat().st_mode & 0o044  # readable by group/others under a usual umask


class TestSafeLoading:
    def test_pickled_code_is_refused_and_not_run(self, tmp_path) -> None:
        path = tmp_path / "evil.pt"
        torch.save(
            {**minimal_state(), "format": "regcorrect-checkpoint", "version": 1, "x": Payload()},
            path,
        )
        MARKER.clear()
        with pytest.raises(CheckpointError, match="corrupt or not a torch file"):
            load_checkpoint(path)
        assert MARKER == []

    @pytest.mark.parametrize(
        ("content", "match"),
        [
            (b"", "corrupt"),
            (b"\x00\x01garbage" * 50, "corrupt"),
        ],
    )
    def test_corrupt_files(self, tmp_path, content: bytes, match: str) -> None:
        path = tmp_path / "bad.pt"
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match=match):
            load_checkpoint(path)

    def test_truncated_file(self, tmp_path) -> None:
        path = save_checkpoint(minimal_state(), tmp_path / "c.pt")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.raises(CheckpointError, match="corrupt"):
            load_checkpoint(path)

    def test_missing_file(self, tmp_path) -> None:
        with pytest.raises(CheckpointError, match="does not exist"):
            load_checkpoint(tmp_path / "absent.pt")

    def test_foreign_torch_file(self, tmp_path) -> None:
        torch.save({"weight": torch.zeros(1)}, tmp_path / "model.pt")
        with pytest.raises(CheckpointError, match="not a regcorrect checkpoint"):
            load_checkpoint(tmp_path / "model.pt")

    def test_unknown_version_and_missing_entries(self, tmp_path) -> None:
        save_checkpoint(minimal_state(), tmp_path / "c.pt")
        state = torch.load(tmp_path / "c.pt", weights_only=True)
        torch.save({**state, "version": 99}, tmp_path / "v.pt")
        with pytest.raises(CheckpointError, match="version 99"):
            load_checkpoint(tmp_path / "v.pt")
        del state["model"]
        torch.save(state, tmp_path / "m.pt")
        with pytest.raises(CheckpointError, match="lacks model"):
            load_checkpoint(tmp_path / "m.pt")


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.standard_normal()  # leave a cached gaussian in numpy's state
    save_checkpoint({**minimal_state(), "rng": rng_state()}, tmp_path / "c.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random(), np.random.standard_normal())
    torch.manual_seed(9)
    np.random.seed(9)
    random.seed(9)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random(), np.random.standard_normal())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2:] == again[2:]


def test_a_runs_checkpoint_holds_every_part(tmp_path) -> None:
    trainer = tiny_trainer(tmp_path / "run", mode="c+r", steps=2)
    trainer.fit()
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    networks = {key.split(".")[1] for key in state["model"] if key.startswith("backbone.")}
    assert {"generator", "inverse_generator", "discriminator", "source_discriminator"} <= networks
    assert any(key.startswith("registration.") for key in state["model"])
    training = state["training"]
    assert set(training["optimizers"]) == {"generator", "discriminator", "registration"}
    assert all(opt["state"] for opt in training["optimizers"].values())  # Adam moments
    assert set(training["schedulers"]) == set(training["optimizers"])
    assert set(training["replay_buffers"]) == {"target", "source"}
    assert training["step"] == 2 and state["sampling"]["step"] == 2
    assert state["sampling"]["num_items"] == len(trainer.data.train)
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert state["config"] == trainer.config.to_dict() and state["image_size"] == [32, 32]
