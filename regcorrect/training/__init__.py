"""Training engine: configs, the ``Trainer`` loop, checkpoints, multi-process training,
evaluation and logs. See ``docs/training.md``.

.. code-block:: python

    from regcorrect.training import Trainer, TrainingConfig, load_config

    trainer = Trainer(load_config("reggan.yaml"))
    metrics = trainer.fit()
"""

from .build import CHECKPOINT_NAME, build_from_config, checkpoint_path, load_model
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import OFFICIAL_KEYS, ConfigError, TrainingConfig, load_config
from .data import StepSampler, TrainingData, load_pairs, load_training_data
from .distributed import Context, average_gradients, resolve_device, setup
from .engine import RUN_KEYS, DivergenceError, Trainer
from .evaluate import METRICS, evaluate_model, evaluate_translation, fit_linear_map
from .logs import RunLogger, read_csv_log

__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointError",
    "ConfigError",
    "Context",
    "DivergenceError",
    "METRICS",
    "OFFICIAL_KEYS",
    "RUN_KEYS",
    "RunLogger",
    "StepSampler",
    "Trainer",
    "TrainingConfig",
    "TrainingData",
    "average_gradients",
    "build_from_config",
    "checkpoint_path",
    "evaluate_model",
    "evaluate_translation",
    "fit_linear_map",
    "load_checkpoint",
    "load_config",
    "load_model",
    "load_pairs",
    "load_training_data",
    "read_csv_log",
    "resolve_device",
    "save_checkpoint",
    "setup",
]
