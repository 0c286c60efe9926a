"""``TrainingConfig``: every setting of a training run, and its YAML form.

A config is a flat dataclass; :func:`load_config` reads it from YAML with ``yaml.safe_load``.
Unknown keys are an error that lists the valid ones. The keys of the official Reg-GAN YAML files
(``Adv_lamda``, ``Cyc_lamda``, ``Corr_lamda``, ``Smooth_lamda``, ``bidirect``, ``regist``,
``noise_level``, ``lr``, ``batchSize``, ``size``, ``name``, MUNIT/UNIT ``gen``/``dis``, ...) are
accepted and mapped onto ours (:data:`OFFICIAL_KEYS`, ``docs/training.md``), so an official
config trains as it is.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..backbones import METHODS
from ..correction import INITIAL_ALIGNMENTS
from ..data import NOISE_LEVELS, PairAugmentation
from ..modes import MODES

__all__ = ["TrainingConfig", "ConfigError", "load_config", "OFFICIAL_KEYS", "DEVICES"]

#: Accepted values of ``device``.
DEVICES = ("auto", "cpu", "cuda")

#: Official Reg-GAN YAML key -> our key. ``bidirect`` and ``regist`` together choose ``mode``;
#: ``cuda`` chooses ``device``; the keys mapped to ``None`` are accepted and ignored.
OFFICIAL_KEYS: dict[str, str | None] = {
    "Adv_lamda": "adversarial_weight",
    "Cyc_lamda": "cycle_weight",
    "Corr_lamda": "correction_weight",
    "Smooth_lamda": "smoothness_weight",
    "bidirect": "mode",
    "regist": "mode",
    "noise_level": "noise_level",
    "lr": "lr",
    "batchSize": "batch_size",
    "size": "size",
    "n_epochs": "epochs",
    "decay_epoch": "decay_start_epoch",
    "dataroot": "data",
    "val_dataroot": "test_data",
    "save_root": "out_dir",
    "cuda": "device",
    "P2P_lamda": "backbone",
    "Recon_kl_lamda": "backbone",
    "gen": "backbone",
    "dis": "backbone",
    "name": "method",
    "input_nc": None,
    "output_nc": None,
    "input_dim_a": None,
    "input_dim_b": None,
    "epoch": None,
    "port": None,
    "image_save": None,
    "display_size": None,
    "n_cpu": None,
}

#: The official ``name`` (which picks the trainer in its ``train.py``) -> (method, mode or None).
#: Other names (an experiment's own) are ignored.
OFFICIAL_NAMES: dict[str, tuple[str, str | None]] = {
    "cyclegan": ("cyclegan", None),
    "munit": ("munit", None),
    "unit": ("unit", None),
    "nice": ("nicegan", None),
    "nicegan": ("nicegan", None),
    "p2p": ("cyclegan", "pix2pix"),
}

#: The official MUNIT / UNIT ``gen`` and ``dis`` sub-keys -> backbone option (``None``: only
#: the value our networks implement is accepted, :data:`_FIXED_ARCHITECTURE`).
_ARCHITECTURE_KEYS: dict[str, dict[str, str | None]] = {
    "gen": {
        "dim": "base_channels",
        "mlp_dim": "mlp_channels",
        "style_dim": "style_dim",
        "n_downsample": "num_downsamplings",
        "n_res": "num_residual_blocks",
        "activ": None,
        "pad_type": None,
    },
    "dis": {
        "dim": "discriminator_channels",
        "n_layer": "discriminator_layers",
        "num_scales": "discriminator_scales",
        "gan_type": "gan_mode",
        "norm": None,
        "activ": None,
        "pad_type": None,
    },
}
_FIXED_ARCHITECTURE = {
    ("gen", "activ"): "relu",
    ("gen", "pad_type"): "reflect",
    ("dis", "norm"): "none",
    ("dis", "activ"): "lrelu",
    ("dis", "pad_type"): "reflect",
}
_GAN_TYPES = {"lsgan": "lsgan", "nsgan": "vanilla"}


class ConfigError(ValueError):
    """A config value or key is invalid; the message names it and what is allowed."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class TrainingConfig:
    """Settings of one training run (see ``docs/training.md`` for every key).

    Model:
        method: ``"cyclegan"``, ``"munit"``, ``"unit"`` or ``"nicegan"``.
        mode: ``"c"``, ``"c+r"``, ``"nc"``, ``"nc+r"`` (RegGAN), ``"pix2pix"`` or
            ``"pix2pix+r"`` (Pix2Pix's conditional discriminator with R, ours).
        backbone: extra keyword arguments of the backbone (widths, depths, its own weights).
        registration: keyword arguments of :class:`~regcorrect.registration.RegUNet` (+R modes;
            ignored otherwise).
        gan_mode: ``"lsgan"`` (paper), ``"vanilla"`` or ``"hinge"``.
        adversarial_weight, cycle_weight: the method's adversarial and cycle weights
            (``None``: the method's default).
        correction_weight, smoothness_weight: the +R loss weights (paper: 20, 10).
        centering_weight: weight of the centred correction loss (+R modes; ``G`` also matched to
            the target under R's field minus its running mean; 0, the default and the paper,
            turns it off; see ``docs/training.md``).
        initial_alignment: ``null`` (default, the paper) or ``"source"`` (+R modes): R's field
            starts from the source's foreground aligned onto the target's (see
            :func:`~regcorrect.build_model`).
        ema_decay: decay of an exponential moving average of the generators' weights, used to
            evaluate and translate (0, the default, keeps none; e.g. 0.999).
        replay_buffer_size: discriminator history (official code: 50; 0 = off).

    Data:
        data: ``"icbm152"`` (bundled), a folder in the official ``A/`` + ``B/`` ``.npy`` layout,
            or a list ``[source.nii.gz, target.nii.gz]`` of two volumes of the same shape and
            pixel size, paired voxel by voxel (they may be misaligned: see ``docs/training.md``).
        test_data: held-out data of the same kinds; default: the ``"test"`` slab of icbm152,
            else the last ``test_fraction`` of the slices.
        test_fraction: share of the slices held out when ``test_data`` is not given.
        axis: slicing axis of NIfTI volumes (0 sagittal, 1 coronal, 2 axial).
        spacing: pixel size in mm to resample to (``None``: keep the data's).
        size: ``H`` (square) or ``[H, W]`` to centre-pad or crop to, after resampling.
        noise_level: misalignment level 0-5 of the paper's Table 2.
        paired: ``False`` for the unpaired setting (targets from other slices).
        augmentation: ``null`` (default: none) or keyword arguments of
            :class:`~regcorrect.data.PairAugmentation` (``{}`` for its defaults: flip, ±10°,
            ±5 %, scale 0.55–1.05), one random transform shared by source and target before the
            misalignment noise.

    Optimisation:
        steps: training steps (one batch each); ``epochs`` overrides it when given.
        epochs: passes over the training slices (``floor(N / batch_size)`` steps each).
        batch_size: slices per step, over all processes together.
        lr, betas: Adam settings.
        decay_start, decay_start_epoch: step (or epoch) from which the learning rate decays
            linearly to 0 at the last step; ``None`` keeps it constant.
        seed: seeds initialisation, sampling and noise.

    Run:
        eval_every, eval_batch_size: evaluate on the held-out data every so many steps.
        checkpoint_every: write ``out_dir/checkpoint.pt`` every so many steps (and at the end).
        log_every: average the losses over so many steps per log row.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        amp: bfloat16 autocast for the networks.
        out_dir: folder for logs and checkpoints; ``None`` writes nothing.
        tensorboard: also log to TensorBoard when the ``tensorboard`` package is installed.
    """

    method: str = "cyclegan"
    mode: str = "nc+r"
    backbone: dict[str, Any] = field(default_factory=dict)
    registration: dict[str, Any] = field(default_factory=dict)
    gan_mode: str = "lsgan"
    adversarial_weight: float | None = None
    cycle_weight: float | None = None
    correction_weight: float = 20.0
    smoothness_weight: float = 10.0
    centering_weight: float = 0.0
    initial_alignment: str | None = None
    ema_decay: float = 0.0
    replay_buffer_size: int = 50
    data: str | list[str] = "icbm152"
    test_data: str | list[str] | None = None
    test_fraction: float = 0.2
    axis: int = 2
    spacing: float | None = None
    size: int | list[int] | None = None
    noise_level: int = 1
    paired: bool = True
    augmentation: dict[str, Any] | None = None
    steps: int = 20000
    epochs: int | None = None
    batch_size: int = 1
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    decay_start: int | None = None
    decay_start_epoch: int | None = None
    seed: int = 0
    eval_every: int = 500
    eval_batch_size: int = 8
    checkpoint_every: int = 1000
    log_every: int = 10
    device: str = "auto"
    amp: bool = False
    out_dir: str | None = "runs/regcorrect"
    tensorboard: bool = True

    def __post_init__(self) -> None:
        self._normalise()
        self._validate()

    # ------------------------------------------------------------------ validation
    def _normalise(self) -> None:
        for item in dataclasses.fields(self):  # numpy scalars (e.g. from np.load) as Python's
            value = getattr(self, item.name)
            if isinstance(value, np.generic):
                setattr(self, item.name, value.item())
        for name in ("method", "mode", "gan_mode", "device"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, value.lower())
        for name in ("out_dir", "data", "test_data"):
            value = getattr(self, name)
            if isinstance(value, Path):
                setattr(self, name, str(value))
            elif isinstance(value, (list, tuple)):
                setattr(self, name, [str(v) if isinstance(v, Path) else v for v in value])
        for name in ("size", "betas"):
            value = getattr(self, name)
            if isinstance(value, tuple):
                setattr(self, name, list(value))
        if isinstance(self.augmentation, dict) and "scale_range" in self.augmentation:
            self.augmentation["scale_range"] = _as_list(self.augmentation["scale_range"])
        for name in ("backbone", "registration"):
            value = getattr(self, name)
            if value is None:
                setattr(self, name, {})
            elif isinstance(value, dict) and "channels" in value:
                value["channels"] = _as_list(value["channels"])
        if _is_number(self.spacing):
            self.spacing = float(self.spacing)

    def _validate(self) -> None:
        _choice(self.method, "method", tuple(METHODS))
        _choice(self.mode, "mode", MODES)
        _choice(self.gan_mode, "gan_mode", ("lsgan", "vanilla", "hinge"))
        _choice(self.device, "device", DEVICES)
        _choice(self.noise_level, "noise_level", tuple(NOISE_LEVELS))
        _choice(self.initial_alignment, "initial_alignment", (None, *INITIAL_ALIGNMENTS))
        for name in ("backbone", "registration"):
            value = getattr(self, name)
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise ConfigError(
                    f"{name} must be a mapping of option names to values, got {value!r}"
                )
        for name in (
            "correction_weight",
            "smoothness_weight",
            "centering_weight",
            "adversarial_weight",
            "cycle_weight",
        ):
            value = getattr(self, name)
            if value is None and name in ("adversarial_weight", "cycle_weight"):
                continue
            if not _is_number(value) or not 0 <= value < math.inf:
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        positive = ("steps", "batch_size", "eval_every", "eval_batch_size", "checkpoint_every")
        for name in (*positive, "log_every"):
            _integer(getattr(self, name), name, minimum=1)
        if not _is_number(self.ema_decay) or not 0 <= self.ema_decay < 1:
            raise ConfigError(
                f"ema_decay must be a number in [0, 1) (0: off), got {self.ema_decay!r}"
            )
        _integer(self.replay_buffer_size, "replay_buffer_size", minimum=0)
        _integer(self.seed, "seed", minimum=0, maximum=2**63 - 1)  # torch's generator seeds
        for name, minimum in (("epochs", 1), ("decay_start", 0), ("decay_start_epoch", 0)):
            if getattr(self, name) is not None:
                _integer(getattr(self, name), name, minimum=minimum)
        if self.decay_start is not None and self.decay_start_epoch is not None:
            raise ConfigError("give decay_start (steps) or decay_start_epoch, not both")
        _choice(self.axis, "axis", (0, 1, 2))
        for name in ("paired", "amp", "tensorboard"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not _is_number(self.lr) or not 0 < self.lr < math.inf:
            raise ConfigError(f"lr must be a finite number > 0, got {self.lr!r}")
        if (
            not isinstance(self.betas, list)
            or len(self.betas) != 2
            or not all(_is_number(b) and 0 <= b < 1 for b in self.betas)
        ):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if not _is_number(self.test_fraction) or not 0 < self.test_fraction < 1:
            raise ConfigError(f"test_fraction must be in (0, 1), got {self.test_fraction!r}")
        if self.spacing is not None and (
            not _is_number(self.spacing) or not 0 < self.spacing < math.inf
        ):
            raise ConfigError(f"spacing must be a number > 0 (mm) or null, got {self.spacing!r}")
        _check_size(self.size)
        self.pair_augmentation()  # raises ConfigError on bad options
        _check_source(self.data, "data", optional=False)
        _check_source(self.test_data, "test_data", optional=True)
        if self.out_dir is not None and not isinstance(self.out_dir, str):
            raise ConfigError(f"out_dir must be a folder path or null, got {self.out_dir!r}")

    # ------------------------------------------------------------------ conversions
    @property
    def image_size(self) -> tuple[int, int] | None:
        """``size`` as ``(H, W)``, or ``None``."""
        if self.size is None:
            return None
        if _is_int(self.size):
            return (self.size, self.size)
        return (int(self.size[0]), int(self.size[1]))

    def pair_augmentation(self) -> PairAugmentation | None:
        """The :class:`~regcorrect.data.PairAugmentation` that ``augmentation`` describes, or
        ``None``."""
        if self.augmentation is None:
            return None
        if not isinstance(self.augmentation, dict) or not all(
            isinstance(k, str) for k in self.augmentation
        ):
            raise ConfigError(
                "augmentation must be null or a mapping of PairAugmentation options "
                f"(rotation_deg, translation_frac, scale_range, flip_probability), got "
                f"{self.augmentation!r}"
            )
        try:
            return PairAugmentation(**self.augmentation)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"augmentation: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (lists, dicts, str, numbers), for YAML, JSON and checkpoints."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingConfig:
        """Build from a mapping of our keys and/or official Reg-GAN keys (see module doc)."""
        return cls(**_map_keys(values))

    def replace(self, **changes: Any) -> TrainingConfig:
        """A validated copy with some of our keys changed."""
        return TrainingConfig.from_dict({**self.to_dict(), **changes})

    def to_yaml(self, path: str | Path) -> Path:
        """Write the config as YAML (all keys, our names)."""
        path = Path(path)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
        return path


def valid_keys() -> list[str]:
    """Our config keys, in declaration order."""
    return [f.name for f in dataclasses.fields(TrainingConfig)]


def load_config(path: str | Path) -> TrainingConfig:
    """Read a YAML config file (``yaml.safe_load``); an empty file gives the defaults.

    Raises:
        ConfigError: missing or unreadable file, not a mapping, unknown keys (the message lists
            the valid ones), a key given twice under two names, or an invalid value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist or is not a file")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        reason = str(error).replace("\n", " ")
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {reason}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of keys to values, "
            f"got {type(values).__name__}"
        )
    try:
        return TrainingConfig.from_dict(values)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


# ---------------------------------------------------------------------- helpers
def _map_keys(values: dict[str, Any]) -> dict[str, Any]:
    """Check the keys, translate official ones, return keyword arguments of the dataclass."""
    ours = set(valid_keys())
    bad = [
        str(k)
        for k in values
        if not isinstance(k, str) or (k not in ours and k not in OFFICIAL_KEYS)
    ]
    if bad:
        hints = []
        for key in bad:
            close = difflib.get_close_matches(key, [*ours, *OFFICIAL_KEYS], n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(
            f"unknown config key(s) {', '.join(hints)}; valid keys: {', '.join(valid_keys())}; "
            f"official Reg-GAN keys: {', '.join(OFFICIAL_KEYS)}"
        )
    result: dict[str, Any] = {}
    origin: dict[str, str] = {}

    def put(key: str, value: Any, source: str) -> None:
        if key in result:
            raise ConfigError(f"{source!r} and {origin[key]!r} both set {key!r}; give only one")
        result[key] = value
        origin[key] = source

    for key, value in values.items():
        if key in ours:
            put(key, value, key)
    official = {k: v for k, v in values.items() if k in OFFICIAL_KEYS and k not in ours}
    for key, value in official.items():
        target = OFFICIAL_KEYS[key]
        if target in (None, "mode", "backbone", "method"):
            continue
        if key == "cuda":
            if not isinstance(value, bool):
                raise ConfigError(f"cuda must be true or false, got {value!r}")
            value = "cuda" if value else "cpu"
        put(target, value, key)
    for key in ("input_nc", "output_nc", "input_dim_a", "input_dim_b"):
        if key in official and official[key] != 1:
            raise ConfigError(f"{key} must be 1 (single-channel slices), got {official[key]!r}")
    named_mode = _official_name(official, result, put) if "name" in official else None
    _official_backbone(official, result, put)
    if official.get("epoch", 0) not in (0, None):
        raise ConfigError(
            f"epoch (the official starting epoch) must be 0, got {official['epoch']!r}; "
            "continue a run with `regcorrect train CONFIG --resume` instead"
        )
    if "bidirect" in official or "regist" in official:
        for key in ("bidirect", "regist"):
            if key in official and not isinstance(official[key], bool):
                raise ConfigError(f"{key} must be true or false, got {official[key]!r}")
        base = str(result.get("mode", TrainingConfig.mode)).lower()
        if "mode" in result:
            raise ConfigError(
                "'mode' and the official 'bidirect'/'regist' both set the mode; give only one"
            )
        cyclic = official.get("bidirect", base in ("c", "c+r"))
        registered = official.get("regist", base.endswith("+r"))
        result["mode"] = ("c" if cyclic else "nc") + ("+r" if registered else "")
    elif named_mode is not None and "mode" not in result:
        result["mode"] = named_mode
    return result


def _official_name(
    official: dict[str, Any], result: dict[str, Any], put: Callable[[str, Any, str], None]
) -> str | None:
    """Set ``method`` from the official ``name`` (its trainer); return the mode it implies."""
    name = official["name"]
    known = OFFICIAL_NAMES.get(str(name).lower()) if isinstance(name, str) else None
    if known is None:
        return None  # an experiment's own name
    method, mode = known
    given = result.get("method")
    if not (isinstance(given, str) and given.lower() == method):  # the same method twice is fine
        put("method", method, "name")
    return mode


def _official_backbone(
    official: dict[str, Any], result: dict[str, Any], put: Callable[[str, Any, str], None]
) -> None:
    """Merge the official loss weights and MUNIT / UNIT ``gen`` / ``dis`` settings into
    ``backbone`` (and ``gan_mode``); a value our networks do not implement is an error."""
    options: dict[str, tuple[Any, str]] = {}
    if "P2P_lamda" in official:
        options["l1_weight"] = (official["P2P_lamda"], "P2P_lamda")
    if "Recon_kl_lamda" in official:
        options["kl_weight"] = (official["Recon_kl_lamda"], "Recon_kl_lamda")
    for section, keys in _ARCHITECTURE_KEYS.items():
        if section not in official:
            continue
        values = official[section]
        if not isinstance(values, dict):
            raise ConfigError(f"{section} must be a mapping (the official MUNIT/UNIT layout)")
        unknown = sorted(str(k) for k in values if k not in keys)
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(unknown)} in {section}; accepted: {', '.join(keys)}"
            )
        for key, value in values.items():
            where = f"{section}.{key}"
            option = keys[key]
            if option is None:
                expected = _FIXED_ARCHITECTURE[(section, key)]
                if value != expected:
                    raise ConfigError(
                        f"{where} must be {expected!r} (what regcorrect's networks implement), "
                        f"got {value!r}"
                    )
            elif option == "gan_mode":
                if value not in _GAN_TYPES:
                    raise ConfigError(f"{where} must be one of {list(_GAN_TYPES)}, got {value!r}")
                put("gan_mode", _GAN_TYPES[value], where)
            else:
                options[option] = (value, where)
    if not options:
        return
    backbone = result.get("backbone", {})
    backbone = dict(backbone) if isinstance(backbone, dict) else backbone
    if not isinstance(backbone, dict):
        return  # _validate reports the bad 'backbone'
    for option, (value, where) in options.items():
        if option in backbone:
            raise ConfigError(f"{where!r} and 'backbone.{option}' both set {option!r}; give one")
        backbone[option] = value
    result["backbone"] = backbone


def _choice(value: object, name: str, choices: tuple[object, ...]) -> None:
    # by type too: 3.0 == 3 and True == 1, but neither is a noise level
    if value not in choices or type(value) not in {type(c) for c in choices}:
        raise ConfigError(f"{name} must be one of {list(choices)!r}, got {value!r}")


def _integer(value: object, name: str, *, minimum: int, maximum: int | None = None) -> None:
    if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"{name} must be an integer {bound}, got {value!r}")


def _check_size(size: object) -> None:
    ok = size is None or (_is_int(size) and size > 0)
    if isinstance(size, list):
        ok = len(size) == 2 and all(_is_int(s) and s > 0 for s in size)
    if not ok:
        raise ConfigError(
            f"size must be a positive integer, a pair [H, W] of them, or null, got {size!r}"
        )


def _check_source(value: object, name: str, *, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, str) and value:
        return
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) and v for v in value):
        return
    raise ConfigError(
        f"{name} must be 'icbm152', a folder with A/ and B/ .npy slices, or a list of two NIfTI "
        f"files [source, target]{' or null' if optional else ''}, got {value!r}"
    )


def _as_list(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
