"""The ``regcorrect`` command line: ``demo``, ``train``, ``evaluate``, ``translate``.

``regcorrect COMMAND --help`` describes each command. User errors (a missing or corrupt file, a
bad config key, an existing output without ``--force``, ...) print one line
``regcorrect: error: ...`` to stderr and exit with status 2; set ``REGCORRECT_DEBUG=1`` to see
the traceback instead. Ctrl-C during training writes a checkpoint and exits with status 130.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .training import TrainingConfig

__all__ = ["main", "build_parser"]

PROG = "regcorrect"


class _UserError(Exception):
    """An error caused by the command line's input (reported in one line, exit 2)."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _noise_level(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer 0-5, got {text!r}") from None
    if not 0 <= value <= 5:
        raise argparse.ArgumentTypeError(f"expected an integer 0-5, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``regcorrect`` (subcommands ``demo``, ``train``, ``evaluate``,
    ``translate``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="CPU threads for torch (default: torch's choice; 1 is often fastest on busy machines)",
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Registration-corrected image-to-image translation (RegGAN) for misaligned "
        "medical image pairs.",
        epilog="Run 'regcorrect COMMAND --help' for the options of a command; see docs/training.md.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="train RegGAN on the bundled MRI slices and write a report",
        description="Train RegGAN (CycleGAN NC+R) and an NC baseline on the bundled ICBM152 "
        "T1/T2 slices misaligned at noise level 3, evaluate them, the untrained model and a "
        "linear intensity map on the held-out slab, and write report.md, panel.png and "
        "curves.png.",
    )
    from .training.demo import DEFAULT_SIZE, DEFAULT_STEPS

    demo.add_argument(
        "--steps",
        type=_positive_int,
        default=DEFAULT_STEPS,
        help=f"training steps of each model (default {DEFAULT_STEPS}, a few minutes)",
    )
    demo.add_argument(
        "--nc-steps",
        type=_positive_int,
        default=None,
        help="training steps of the NC baseline (default: --steps)",
    )
    demo.add_argument(
        "--size",
        type=_positive_int,
        default=DEFAULT_SIZE,
        help=f"image side in pixels, a multiple of 4 >= 32 (default {DEFAULT_SIZE}: {192 / DEFAULT_SIZE:g} mm pixels)",
    )
    demo.add_argument(
        "--noise-level",
        type=_noise_level,
        default=3,
        help="misalignment level 0-5 of the training pairs (default 3)",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where to train (default auto: CUDA when available)",
    )
    demo.add_argument(
        "--out", default="regcorrect-demo", help="output folder (default ./regcorrect-demo)"
    )
    demo.add_argument(
        "--force", action="store_true", help="overwrite the output folder's demo files"
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bars")

    train = commands.add_parser(
        "train",
        parents=[common],
        help="train a model from a YAML config",
        description="Train from a YAML config (our keys or the official Reg-GAN keys; see "
        "docs/training.md). Under 'torchrun --nproc_per_node=K' the batch is shared by K "
        "processes.",
    )
    train.add_argument("config", help="YAML config file")
    train.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="CHECKPOINT",
        help="continue from CHECKPOINT (default: out_dir/checkpoint.pt)",
    )
    train.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default=None,
        help="override the config's device",
    )
    train.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bfloat16 autocast (overrides the config)",
    )
    train.add_argument("--out-dir", default=None, help="override the config's out_dir")
    train.add_argument(
        "--force",
        action="store_true",
        help="start afresh in a non-empty out_dir (deletes its earlier run files)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    evaluate = commands.add_parser(
        "evaluate",
        parents=[common],
        help="evaluate a checkpoint on held-out slices",
        description="Translate held-out source slices and compare with their aligned targets "
        "(NMAE, PSNR, SSIM; background excluded). Prints the metrics and writes them as JSON.",
    )
    evaluate.add_argument("checkpoint", help="checkpoint file (or a run folder)")
    evaluate.add_argument(
        "--data",
        nargs="+",
        default=None,
        metavar="SOURCE",
        help="'icbm152' (its test split), an A/+B/ .npy folder, or two NIfTI "
        "files SOURCE TARGET (default: the run's held-out data)",
    )
    evaluate.add_argument(
        "--noise-level",
        type=_noise_level,
        default=0,
        help="move each slice (source and target together) by a random "
        "transform of this level first (default 0: as is)",
    )
    evaluate.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    evaluate.add_argument("--batch-size", type=_positive_int, default=8)
    evaluate.add_argument(
        "-o",
        "--output",
        default=None,
        help="metrics JSON to write (default: evaluation.json next to the checkpoint)",
    )
    evaluate.add_argument("--force", action="store_true", help="overwrite the metrics file")

    translate = commands.add_parser(
        "translate",
        parents=[common],
        help="translate a NIfTI volume slice by slice",
        description="Translate a 3-D NIfTI volume slice by slice with a trained model. The "
        "volume is normalised to [-1, 1] (percentiles of its non-zero voxels), each slice is "
        "brought to the model's training grid and back, and the result is written in [0, 1] "
        "(0 = background) with the input's affine and header.",
    )
    translate.add_argument("checkpoint", help="checkpoint file (or a run folder)")
    translate.add_argument("input", help="input volume (.nii or .nii.gz)")
    translate.add_argument("-o", "--output", required=True, help="output volume (.nii or .nii.gz)")
    translate.add_argument(
        "--axis",
        type=int,
        choices=(0, 1, 2),
        default=None,
        help="slicing axis: 0 sagittal, 1 coronal, 2 axial (default: the training config's axis)",
    )
    translate.add_argument(
        "--normalize",
        choices=("percentile", "minmax"),
        default="percentile",
        help="intensity normalisation of the input (default percentile)",
    )
    translate.add_argument(
        "--no-resample",
        action="store_true",
        help="do not resample slices to the training pixel size",
    )
    translate.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    translate.add_argument("--batch-size", type=_positive_int, default=8)
    translate.add_argument("--force", action="store_true", help="overwrite the output file")
    return parser


# ---------------------------------------------------------------------- commands
def _demo(args: argparse.Namespace) -> int:
    from .training.demo import run_demo

    result = run_demo(
        args.out,
        steps=args.steps,
        size=args.size,
        nc_steps=args.nc_steps,
        noise_level=args.noise_level,
        seed=args.seed,
        device=args.device,
        force=args.force,
        progress=not args.quiet,
    )
    print(_format_metrics(result.metrics))
    print(f"report: {result.out_dir / 'report.md'}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .training import Trainer, load_config

    config = load_config(args.config)
    changes = {}
    if args.device is not None:
        changes["device"] = args.device
    if args.amp is not None:
        changes["amp"] = args.amp
    if args.out_dir is not None:
        changes["out_dir"] = args.out_dir
    if changes:
        config = config.replace(**changes)
    if not args.quiet and os.environ.get("RANK", "0") == "0":  # once under torchrun
        for note in own_data_notes(config):
            print(f"regcorrect: note: {note}", file=sys.stderr)
    if args.resume is not None:
        if args.force:
            raise _UserError("--resume and --force contradict each other; give one")
        checkpoint = args.resume
        if not checkpoint:
            if config.out_dir is None:
                raise _UserError("--resume needs a CHECKPOINT when out_dir is null")
            checkpoint = str(Path(config.out_dir) / "checkpoint.pt")
        trainer = Trainer.resume(checkpoint, config, progress=not args.quiet)
        if trainer.step >= trainer.total_steps and trainer.context.is_main:
            print(
                f"regcorrect: the run is already at step {trainer.step} of "
                f"{trainer.total_steps}; nothing to train (raise steps or epochs to continue)",
                file=sys.stderr,
            )
    else:
        trainer = Trainer(config, progress=not args.quiet, overwrite=args.force)
    try:
        metrics = trainer.fit()
    finally:
        trainer.close()
    if trainer.context.is_main:
        print(_format_metrics({f"step {trainer.step}": metrics}))
        if trainer.out_dir is not None:
            print(f"checkpoint: {trainer.out_dir / 'checkpoint.pt'}")
    return 0


def own_data_notes(config: TrainingConfig) -> list[str]:
    """Hints for a run on the user's own NIfTI pair with settings meant for the bundled,
    perfectly aligned templates (``docs/training.md``, "Your own misaligned scans")."""
    if not isinstance(config.data, list):  # icbm152 or an A/ + B/ folder
        return []
    notes = []
    if config.mode.endswith("+r") and config.initial_alignment is None:
        notes.append(
            "initial_alignment is null (the paper's R): with a misalignment that is the same in "
            "every pair (head motion between the scans), G can learn it and R stay at the "
            "identity; initial_alignment: source avoids that (docs/training.md, 'Your own "
            "misaligned scans')"
        )
    if config.noise_level > 0:
        notes.append(
            f"noise_level {config.noise_level} adds synthetic misalignment on top of your "
            "pair's own; set noise_level: 0 for pairs that are misaligned already"
        )
    if config.test_data is None:
        notes.append(
            "no test_data: the held-out slices are the end of your (misaligned) pair, so the "
            "metrics compare with a misaligned target"
        )
    return notes


def _evaluate(args: argparse.Namespace) -> int:
    from .training import (
        TrainingConfig,
        checkpoint_path,
        evaluate_model,
        load_model,
        load_pairs,
        resolve_device,
    )
    from .training.checkpoint import load_checkpoint
    from .training.data import fit_network, load_training_data

    path = checkpoint_path(args.checkpoint)
    output = Path(args.output) if args.output else path.with_name("evaluation.json")
    _check_output(output, args.force)
    state = load_checkpoint(path)
    config = TrainingConfig.from_dict(state["config"])
    model, _ = load_model(state, device=resolve_device(args.device))
    if args.data is None:
        pairs = load_training_data(config).test
        data = "held-out split of " + (
            config.data if isinstance(config.data, str) else " + ".join(config.data)
        )
    else:
        if len(args.data) > 2:
            raise _UserError("--data takes 'icbm152', one folder, or two NIfTI files")
        source = args.data[0] if len(args.data) == 1 else list(args.data)
        pairs, _ = load_pairs(
            source, split="test", axis=config.axis, spacing=config.spacing, size=config.image_size
        )
        pairs = fit_network(pairs, config)  # as in training: e.g. 23 x 37 slices -> 24 x 40
        data = " ".join(args.data)
    metrics = evaluate_model(
        model, pairs, batch_size=args.batch_size, noise_level=args.noise_level, seed=config.seed
    )
    record = {
        "checkpoint": str(path),
        "step": int(state["training"]["step"]),
        "data": data,
        "slices": len(pairs),
        "noise_level": args.noise_level,
        **metrics,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(
        _format_metrics({f"{config.method} {config.mode.upper()} step {record['step']}": metrics})
    )
    print(f"{len(pairs)} slices of {data}; metrics written to {output}")
    return 0


def _translate(args: argparse.Namespace) -> int:
    import torch

    from .data import normalize_intensity, read_nifti_slices, write_nifti_like
    from .training import TrainingConfig, checkpoint_path, load_model, resolve_device
    from .training.checkpoint import load_checkpoint
    from .training.inference import translate_slices

    output = Path(args.output)
    if not output.name.endswith((".nii", ".nii.gz")):
        raise _UserError(f"output {str(output)!r} must end in .nii or .nii.gz")
    if Path(args.input).resolve() == output.resolve():
        raise _UserError("output must differ from the input")
    _check_output(output, args.force)
    state = load_checkpoint(checkpoint_path(args.checkpoint))
    config = TrainingConfig.from_dict(state["config"])
    axis = config.axis if args.axis is None else args.axis
    scan = read_nifti_slices(args.input, axis=axis)
    foreground = scan.slices != 0
    if not bool(foreground.any()):
        raise _UserError(f"input {args.input!r} holds only zeros")
    slices = normalize_intensity(scan.slices, method=args.normalize, mask=foreground)
    model, _ = load_model(state, device=resolve_device(args.device))
    resample = state.get("spacing_known", False) and not args.no_resample
    translated = translate_slices(
        model.translate,
        slices,
        model_size=tuple(state["image_size"]),
        slice_spacing=scan.spacing if resample else None,
        model_spacing=tuple(state["spacing"]) if resample else None,
        batch_size=args.batch_size,
    )
    volume = torch.where(foreground, (translated + 1.0) / 2.0, torch.zeros_like(translated))
    output.parent.mkdir(parents=True, exist_ok=True)
    write_nifti_like(volume, args.input, output, axis=axis)
    print(
        f"translated {volume.shape[0]} slice{'' if volume.shape[0] == 1 else 's'} "
        f"(axis {axis}) with {config.method} "
        f"{config.mode.upper()} -> {output}"
    )
    return 0


# ---------------------------------------------------------------------- helpers
def _check_output(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise _UserError(f"output {str(path)!r} already exists; pass --force to overwrite it")
    # a missing folder is made when the output is written (after the work succeeded)
    existing = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise _UserError(f"output folder {str(path.parent)!r} is below a file, {str(existing)!r}")


def _format_metrics(results: dict[str, dict[str, float]]) -> str:
    width = max([len(name) for name in results] + [5])
    lines = [f"{'model':<{width}}  {'NMAE':>7}  {'PSNR':>6}  {'SSIM':>6}"]
    for name, metrics in results.items():
        if metrics:
            lines.append(
                f"{name:<{width}}  {metrics['nmae']:7.4f}  {metrics['psnr']:6.2f}  {metrics['ssim']:6.4f}"
            )
    return "\n".join(lines)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


_COMMANDS = {"demo": _demo, "train": _train, "evaluate": _evaluate, "translate": _translate}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 training diverged, 2 user error,
    130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error (argparse prints it)
        return int(exit_.code or 0)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (FloatingPointError, _UserError, ValueError, OSError) as error:
        if os.environ.get("REGCORRECT_DEBUG"):
            raise
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        # a diverged run (regcorrect.training.DivergenceError) is 1, a user error 2
        return 1 if isinstance(error, FloatingPointError) else 2


if __name__ == "__main__":
    sys.exit(main())
