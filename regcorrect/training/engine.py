"""The training engine: ``Trainer`` runs a :class:`TrainingConfig` from start (or a checkpoint)
to its last step, evaluating, logging and checkpointing on the way.

.. code-block:: python

    from regcorrect.training import Trainer, TrainingConfig

    trainer = Trainer(TrainingConfig(mode="nc+r", steps=2000, spacing=2.0, size=[112, 96]))
    metrics = trainer.fit()             # {"nmae": ..., "psnr": ..., "ssim": ...}
    trainer = Trainer.resume("runs/regcorrect")   # later: continue bit-identically

Each step takes the batch the :class:`~regcorrect.training.data.StepSampler` assigns to it (a
function of ``(seed, step)``) and calls ``model.train_step``. Every ``eval_every`` steps and at
the end the model is evaluated on the held-out slices; every ``checkpoint_every`` steps, at the
end and on Ctrl-C a checkpoint is written. Evaluation leaves the random state untouched, so
where a run stops and resumes does not change what it computes.
"""

from __future__ import annotations

import functools
import math
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ..data import MisalignedPairs, Misalignment
from .build import CHECKPOINT_NAME, build_from_config, checkpoint_path
from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import ConfigError, TrainingConfig
from .data import StepSampler, TrainingData, collate, load_training_data
from .distributed import (
    Context,
    StopRequest,
    any_rank,
    average_gradients,
    broadcast_module,
    setup,
)
from .evaluate import evaluate_model
from .logs import LOG_FILES, RunLogger

__all__ = ["Trainer", "RUN_KEYS", "DivergenceError"]

#: Config keys a resumed run may change; every other key must match the checkpoint's.
RUN_KEYS = (
    "steps",
    "epochs",
    "eval_every",
    "eval_batch_size",
    "checkpoint_every",
    "log_every",
    "device",
    "amp",
    "out_dir",
    "tensorboard",
)

Callback = Callable[["Trainer", dict[str, float]], None]


class DivergenceError(FloatingPointError):
    """A training step produced a non-finite loss (NaN or infinity): the run has diverged.

    Raised by :meth:`Trainer.fit` right after that step, before it logs, evaluates or writes a
    checkpoint, so the checkpoint on disk still holds the last good weights. Attributes:
    ``step`` (the step that diverged), ``losses`` (its non-finite terms) and ``checkpoint``
    (the path and step of the last checkpoint, or ``None``).
    """

    def __init__(
        self, step: int, losses: dict[str, float], checkpoint: tuple[Path, int] | None
    ) -> None:
        self.step, self.losses, self.checkpoint = step, losses, checkpoint
        terms = ", ".join(f"{name}={value}" for name, value in losses.items())
        remedy = "a lower learning rate, smaller loss weights or amp: false"
        where = (
            f"no checkpoint holds earlier weights: restart with {remedy}"
            if checkpoint is None
            else f"stopped before logging or checkpointing it, so {checkpoint[0]} still holds "
            f"step {checkpoint[1]}: resume from it with {remedy}"
        )
        super().__init__(
            f"training diverged at step {step}: non-finite loss ({terms or 'on another rank'}); "
            f"{where}"
        )


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def prepare_output_dir(
    out_dir: Path, *, force: bool, label: str, hint: str, outputs: tuple[str, ...]
) -> None:
    """Create ``out_dir``; refuse a non-empty one unless ``force``, then remove only ``outputs``.

    Args:
        out_dir: the folder.
        force: overwrite what a previous run wrote there.
        label: how the error names the folder (``"out_dir"``, ``"output folder"``).
        hint: what the user can do instead, appended to the error.
        outputs: the file/folder names this run writes (the only ones removed with ``force``).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{label} {str(out_dir)!r} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise ValueError(f"{label} {str(out_dir)!r} already exists and is not empty; {hint}")
        for name in outputs:
            path = out_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def _changed_settings(config: TrainingConfig, saved: TrainingConfig) -> dict[str, tuple[Any, Any]]:
    """Keys outside :data:`RUN_KEYS` where ``config`` and ``saved`` differ: (ours, theirs)."""
    ours = with_absolute_data_paths(config).to_dict()
    theirs = with_absolute_data_paths(saved).to_dict()
    return {k: (ours[k], theirs[k]) for k in ours if k not in RUN_KEYS and ours[k] != theirs[k]}


def _holds_run_of(out_dir: Path, config: TrainingConfig) -> bool:
    """Whether ``out_dir`` has a readable checkpoint of a run with ``config``'s settings."""
    path = out_dir / CHECKPOINT_NAME
    if not path.is_file():
        return False
    try:
        other = TrainingConfig.from_dict(load_checkpoint(path)["config"])
    except (ValueError, KeyError):  # CheckpointError, ConfigError: not this run's
        return False
    return not _changed_settings(config, other)


def with_absolute_data_paths(config: TrainingConfig) -> TrainingConfig:
    """``config`` with relative ``data`` / ``test_data`` paths made absolute (from the current
    folder), so that a run's saved config (``regcorrect evaluate RUN_DIR``) finds its data from
    anywhere; ``"icbm152"`` stays as it is."""

    def absolute(value: str | list[str] | None) -> str | list[str] | None:
        if value is None or (isinstance(value, str) and value.lower() == "icbm152"):
            return value
        if isinstance(value, list):
            return [str(Path(v).absolute()) for v in value]
        return str(Path(value).absolute())

    data, test_data = absolute(config.data), absolute(config.test_data)
    if (data, test_data) == (config.data, config.test_data):
        return config
    return config.replace(data=data, test_data=test_data)


class Trainer:
    """Train a model as a :class:`TrainingConfig` says.

    Args:
        config: the run's settings.
        data: the slices (default: :func:`load_training_data` of ``config``).
        progress: show tqdm progress bars (rank 0 only).
        overwrite: allow a fresh run in a non-empty ``out_dir``: the files of an earlier run
            there (checkpoint, logs, ``config.yaml``) are deleted first. Otherwise a non-empty
            ``out_dir`` is an error.
        context: the process/device context (default: :func:`~regcorrect.training.distributed.setup`
            from the environment, which initialises ``torch.distributed`` under ``torchrun``).

    Attributes:
        model: the :class:`~regcorrect.TranslationModel`.
        data: the :class:`TrainingData`.
        total_steps: the step the run ends at.
        train_history, eval_history: the logged rows (dicts with ``step``).
        seconds: wall-clock seconds spent in :meth:`fit` (over resumes).
    """

    def __init__(
        self,
        config: TrainingConfig,
        data: TrainingData | None = None,
        *,
        progress: bool = True,
        overwrite: bool = False,
        context: Context | None = None,
        _resuming: bool = False,
    ) -> None:
        if not isinstance(config, TrainingConfig):
            raise TypeError(f"config must be a TrainingConfig, got {type(config).__name__}")
        config = with_absolute_data_paths(config)  # the saved config works from any folder
        self.config = config
        self.context = context if context is not None else setup(config.device)
        self.progress = progress
        self.data = data if data is not None else load_training_data(config)
        self.image_size = self.data.train.image_size
        self.out_dir = None if config.out_dir is None else Path(config.out_dir)
        self.sampler = StepSampler(
            len(self.data.train),
            config.batch_size,
            seed=config.seed,
            rank=self.context.rank,
            world_size=self.context.world_size,
        )
        per_epoch = self.sampler.steps_per_epoch
        self.total_steps = config.epochs * per_epoch if config.epochs else config.steps
        decay_start = config.decay_start
        if config.decay_start_epoch is not None:
            decay_start = config.decay_start_epoch * per_epoch
        if decay_start is not None and decay_start >= self.total_steps:
            raise ConfigError(
                f"the learning-rate decay starts at step {decay_start}, at or after the last "
                f"step {self.total_steps}"
            )
        _seed_everything(config.seed)
        self.model = build_from_config(
            config,
            self.image_size,
            device=self.context.device,
            total_steps=self.total_steps,
            decay_start=decay_start,
        )
        self._check_slices_fit_the_model()
        if self.context.distributed:
            broadcast_module(self.model)
            self.model.gradient_hook = functools.partial(
                average_gradients, world_size=self.context.world_size
            )
        self.dataset = MisalignedPairs(
            self.data.train,
            misalignment=Misalignment(config.noise_level),
            paired=config.paired,
            seed=config.seed,
            augmentation=config.pair_augmentation(),
        )
        self.train_history: list[dict[str, float]] = []
        self.eval_history: list[dict[str, float]] = []
        self.seconds = 0.0
        self._resumed_at: int | None = None
        self._checkpoint: tuple[Path, int] | None = None  # (path, step) of the last one written
        self._logger: RunLogger | None = None
        if self.out_dir is not None and self.context.is_main:
            # only now that everything is valid: a failed start leaves an earlier run alone
            if not _resuming:
                self._prepare_out_dir(overwrite)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            config.to_yaml(self.out_dir / "config.yaml")  # on resume: the settings now in use

    # ------------------------------------------------------------------ construction
    def _check_slices_fit_the_model(self) -> None:
        """Raise ``ConfigError`` now, before ``out_dir`` is touched, when the networks cannot
        take the training slices (e.g. NICE-GAN's discriminator needs >= 96 px): one no-grad
        generator-side forward of one slice pair in evaluation mode, with the random state put
        back (so a run and its resumption stay identical)."""
        device = self.context.device
        source = self.data.train.source[:1].to(device)
        target = self.data.train.target[:1].to(device)
        model = self.model
        was_training = model.training
        forked = [device] if device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=forked), torch.no_grad():
                model.eval()
                model.backbone.generator_forward(source, target)
        except ValueError as error:
            raise ConfigError(
                f"the training slices ({self.image_size[0]} x {self.image_size[1]} px) do not fit "
                f"method {self.config.method!r}: {error}; set size (or spacing) in the config"
            ) from None
        finally:
            model.train(was_training)

    def _prepare_out_dir(self, overwrite: bool) -> None:
        assert self.out_dir is not None
        prepare_output_dir(
            self.out_dir,
            force=overwrite,
            label="out_dir",
            hint="resume the run (--resume), choose another out_dir, or overwrite it (--force)",
            outputs=(CHECKPOINT_NAME, "config.yaml", *LOG_FILES),
        )

    @classmethod
    def resume(
        cls,
        checkpoint: str | Path,
        config: TrainingConfig | None = None,
        *,
        data: TrainingData | None = None,
        progress: bool = True,
        context: Context | None = None,
    ) -> Trainer:
        """Continue a run from a checkpoint file (or a run folder with ``checkpoint.pt``).

        Args:
            checkpoint: the checkpoint.
            config: the settings to continue with (default: the checkpoint's). Only
                :data:`RUN_KEYS` may differ from the checkpoint's config.
            data, progress, context: as for :class:`Trainer`.

        Raises:
            CheckpointError: unreadable checkpoint.
            ConfigError: ``config`` differs from the checkpoint's in a key outside
                :data:`RUN_KEYS`.
            ValueError: ``config.out_dir`` is another folder than the checkpoint's and is not
                empty (nothing a user had is overwritten).
        """
        source = checkpoint_path(checkpoint)
        state = load_checkpoint(source)
        saved = TrainingConfig.from_dict(state["config"])
        if config is None:
            config = saved
        else:
            changed = _changed_settings(config, saved)
            if changed:
                details = "; ".join(
                    f"{k}: checkpoint {theirs!r}, config {ours!r}"
                    for k, (ours, theirs) in changed.items()
                )
                raise ConfigError(
                    f"the config differs from the checkpoint's in {details}; on resume only "
                    f"{', '.join(RUN_KEYS)} may change"
                )
        # continuing into another folder than the checkpoint's: it must be empty or hold this
        # same run (e.g. resuming from an older copy of its checkpoint), never another run
        out_dir = None if config.out_dir is None else Path(config.out_dir)
        if (
            out_dir is not None
            and out_dir.is_dir()
            and any(out_dir.iterdir())
            and out_dir.resolve() != Path(source).resolve().parent
            and not _holds_run_of(out_dir, config)
        ):
            raise ValueError(
                f"out_dir {str(out_dir)!r} is not empty and holds no checkpoint of this run; "
                f"continue in the checkpoint's own folder ({str(Path(source).parent)!r}) or in an "
                "empty out_dir"
            )
        trainer = cls(config, data, progress=progress, context=context, _resuming=True)
        trainer.load_state_dict(state)
        trainer._checkpoint = (Path(source), trainer.step)
        return trainer

    # ------------------------------------------------------------------ state
    @property
    def step(self) -> int:
        """Completed training steps."""
        return self.model.step

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (the checkpoint's content, see ``checkpoint.py``).

        In multi-process runs this is a collective call (it gathers every rank's replay buffers).
        """
        training = self.model.training_state()
        by_rank: list[Any] = []
        if self.context.distributed:
            by_rank = [None] * self.context.world_size
            dist.all_gather_object(by_rank, training["replay_buffers"])
        return {
            "config": self.config.to_dict(),
            "image_size": list(self.image_size),
            "spacing": [float(s) for s in self.data.train.spacing],
            "spacing_known": bool(self.data.spacing_known),
            "model": self.model.state_dict(),
            "training": training,
            "replay_buffers_by_rank": by_rank,
            "sampling": {**self.sampler.state_dict(), "step": self.step},
            "rng": rng_state(),
            "train_history": self.train_history,
            "eval_history": self.eval_history,
            "seconds": self.seconds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (weights, optimizers, schedulers, buffers, RNG, step)."""
        self.sampler.check_state(state["sampling"])
        if list(state["image_size"]) != list(self.image_size):
            raise ValueError(
                f"the checkpoint was trained on {tuple(state['image_size'])} slices, this data "
                f"has {self.image_size}"
            )
        self.model.load_state_dict(state["model"])
        training = dict(state["training"])
        by_rank = state.get("replay_buffers_by_rank") or []
        if self.context.distributed and by_rank:
            training["replay_buffers"] = by_rank[self.context.rank % len(by_rank)]
        self.model.load_training_state(training)
        set_rng_state(state["rng"])
        self.train_history = [dict(row) for row in state.get("train_history", [])]
        self.eval_history = [dict(row) for row in state.get("eval_history", [])]
        self.seconds = float(state.get("seconds", 0.0))
        self._resumed_at = self.step

    def save_checkpoint(self, path: str | Path | None = None) -> Path | None:
        """Write the checkpoint (rank 0; default ``out_dir/checkpoint.pt``); returns its path.

        Collective in multi-process runs: call it on every rank.
        """
        state = self.state_dict()
        if path is None:
            if self.out_dir is None:
                return None
            path = self.out_dir / CHECKPOINT_NAME
        self._checkpoint = (Path(path), self.step)
        if not self.context.is_main:
            return None
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return save_checkpoint(state, path)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, *, noise_level: int = 0, log: bool = False) -> dict[str, float]:
        """NMAE/PSNR/SSIM on the held-out slices (random state untouched)."""
        with torch.random.fork_rng(devices=[]):
            metrics = evaluate_model(
                self.model,
                self.data.test,
                batch_size=self.config.eval_batch_size,
                noise_level=noise_level,
                seed=self.config.seed,
            )
        if log:
            self.eval_history.append({"step": float(self.step), **metrics})
            logger = self._open_logger()
            if logger is not None:
                logger.log("eval", self.step, metrics)
        return metrics

    def _open_logger(self) -> RunLogger | None:
        if self.context.is_main and self._logger is None:
            self._logger = RunLogger(
                self.out_dir, tensorboard=self.config.tensorboard, resume_step=self._resumed_at
            )
        return self._logger

    # ------------------------------------------------------------------ training
    def _batch(self, step: int) -> dict[str, torch.Tensor]:
        indices = self.sampler.local_batch(step)
        return collate(self.dataset, indices, self.sampler.epoch(step))

    def _mean_losses(self, sums: dict[str, float], count: int) -> dict[str, float]:
        names = sorted(sums)
        values = torch.tensor([sums[n] / count for n in names], dtype=torch.float64)
        if self.context.distributed:
            values = values.to(self.context.device)
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
            values /= self.context.world_size
        return dict(zip(names, values.cpu().tolist(), strict=True))

    def fit(self, until: int | None = None, callback: Callback | None = None) -> dict[str, float]:
        """Train from the current step to ``total_steps`` (or to step ``until``).

        Args:
            until: stop once this many steps are done (the run can be continued later).
            callback: called after every step as ``callback(trainer, losses)``; raising
                ``KeyboardInterrupt`` there stops the run like Ctrl-C (with a checkpoint).

        Returns:
            The last evaluation's metrics (the model is evaluated where it stops).

        Raises:
            KeyboardInterrupt: after Ctrl-C, once the checkpoint is written.
        """
        end = self.total_steps if until is None else min(int(until), self.total_steps)
        main = self.context.is_main
        self._open_logger()
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not (self.progress and main),
            desc=f"{self.config.method} {self.config.mode.upper()}",
            unit="step",
            dynamic_ncols=True,
        )
        sums: dict[str, float] = {}
        count = 0
        in_step = False
        started = time.perf_counter()
        try:
            with StopRequest(self.context) as stop:
                while self.step < end:
                    batch = self._batch(self.step)
                    in_step = True
                    losses = self.model.train_step(batch["source"], batch["target"])
                    in_step = False
                    self._check_finite(losses)
                    for name, value in losses.items():
                        sums[name] = sums.get(name, 0.0) + value
                    count += 1
                    bar.update(1)
                    step = self.step
                    if step % self.config.log_every == 0 or step == end:
                        row = self._log_train_row(step, sums, count)
                        sums, count = {}, 0
                        bar.set_postfix(G=f"{row['G/total']:.3f}", D=f"{row['D/total']:.3f}")
                    if main and (step % self.config.eval_every == 0 or step == end):
                        metrics = self.evaluate(log=True)
                        bar.set_postfix(
                            nmae=f"{metrics['nmae']:.4f}",
                            psnr=f"{metrics['psnr']:.2f}",
                            ssim=f"{metrics['ssim']:.3f}",
                        )
                    if step % self.config.checkpoint_every == 0 and step != end:
                        self._timed_save(started)
                        started = time.perf_counter()
                    if callback is not None:
                        callback(self, losses)
                    if stop.requested():
                        raise KeyboardInterrupt
        except DivergenceError:
            bar.close()
            self.seconds += time.perf_counter() - started
            self._close_logger()
            raise
        except KeyboardInterrupt:
            bar.close()
            self.seconds += time.perf_counter() - started
            if in_step:
                if main:
                    tqdm.write("regcorrect: interrupted inside a step; no checkpoint written")
            else:
                if count:  # the steps since the last row: logged, not lost
                    self._log_train_row(self.step, sums, count)
                path = self.save_checkpoint()
                if main and path is not None:
                    tqdm.write(f"regcorrect: interrupted at step {self.step}; checkpoint {path}")
            self._close_logger()
            raise
        bar.close()
        self._timed_save(started)
        if main and (not self.eval_history or self.eval_history[-1]["step"] != self.step):
            self.evaluate(log=True)
        if self.step >= self.total_steps:
            self._close_logger()
        if not self.eval_history:
            return {}
        return {k: v for k, v in self.eval_history[-1].items() if k != "step"}

    def _log_train_row(self, step: int, sums: dict[str, float], count: int) -> dict[str, float]:
        """Log the mean of ``count`` steps' losses (``sums``) as the row of ``step``."""
        row = self._mean_losses(sums, count)
        self.train_history.append({"step": float(step), **row})
        if self._logger is not None:
            self._logger.log("train", step, row)
        return row

    def _check_finite(self, losses: dict[str, float]) -> None:
        """Raise :class:`DivergenceError` when a loss of this step is not finite on any rank."""
        bad = {name: value for name, value in losses.items() if not math.isfinite(value)}
        if any_rank(bool(bad), self.context):
            raise DivergenceError(self.step, bad, self._checkpoint)

    def _timed_save(self, started: float) -> None:
        self.seconds += time.perf_counter() - started
        self.save_checkpoint()

    def _close_logger(self) -> None:
        if self._logger is not None:
            self._logger.close()
            self._logger = None

    def close(self) -> None:
        """Close the logs and, if this trainer created it, the process group."""
        self._close_logger()
        self.context.close()
