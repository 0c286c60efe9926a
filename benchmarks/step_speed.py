"""Time per NC+R training step and peak memory: ``build_model`` against the published loop.

The model is the paper's CycleGAN NC+R: ResnetGenerator (64 base channels, 9 residual blocks),
70×70 PatchGAN, and the paper-sized registration U-Net R (``registration={"affine": False}``, the
library's default; the opt-in affine R is a separate variant). The **reference step** is written here from
the published Reg-GAN training loop, literally:

1. generator side: ``G(x)``, ``R(cat[G(x), ỹ])``, a spatial transformer that rebuilds its
   identity grid (meshgrid + normalisation) on every call, the loss
   ``adv + 20·L1(warped, ỹ) + 10·smoothness`` with the discriminator *not* frozen, one backward,
   G and R optimizers step;
2. discriminator side: a **second, no-grad** ``G(x)`` forward, then the LSGAN D loss on it and on
   ``ỹ``, backward, D optimizer step;

float32 throughout, Adam(1e-4, (0.5, 0.999)) for G, R and D. It uses the very same networks
(same initial weights) as the library model. Ablations remove one published inefficiency at a
time; library variants add one option at a time (channels-last, ``torch.compile``, bfloat16
autocast, glibc allocator settings).

Each variant runs in its **own subprocess** (so peak RSS, ``ru_maxrss``, is that variant's
alone; on CUDA ``torch.cuda.max_memory_allocated``), all alive at once; the parent asks them for
one step at a time in rotating order, so every variant sees the same machine load.

All variants of one (size, batch) are alive at once and each keeps about its peak memory (about
3.6 GB at 256², batch 4), so choose ``--variants`` to fit the RAM. On a shared machine, small
groups of variants (short rounds) and ``--threads 1`` give the most stable ratios; the groups
used for ``docs/results/step_speed.md`` are listed there.

Usage::

    python benchmarks/step_speed.py                            # 256² and 128², batch 1 and 4
    python benchmarks/step_speed.py --sizes 256 --batches 1 --repeats 9 --threads 1 \
        --variants reference lib lib-bf16                      # names: see VARIANTS
    python benchmarks/step_speed.py --render results.json      # tables of a --json file
    python benchmarks/step_speed.py --quick                    # tiny smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from _common import machine_info, markdown_table, median
from torch import Tensor, nn

PROTOCOL = "@@"  # prefix of the worker's protocol lines on stdout

#: glibc settings that keep freed memory in the process instead of returning it to the kernel
#: (on some VMs each munmap/trim of a few hundred kB costs milliseconds).
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "1000000000", "MALLOC_TRIM_THRESHOLD_": "100000000000"}


@dataclass(frozen=True)
class Variant:
    """One way of running the NC+R step."""

    label: str
    reference: bool = False  # the published loop (else TranslationModel.train_step)
    second_forward: bool = True  # reference: recompute G(x) without grad for D
    freeze_discriminator: bool = False  # reference: D.requires_grad_(False) in the G step
    cached_grid: bool = False  # reference: regcorrect.warp instead of the per-call grid
    affine: bool = False  # library: R with the (opt-in) affine head
    amp: bool = False  # library: bfloat16 autocast
    channels_last: bool = False
    compile: str = ""  # letters of the networks to torch.compile: "g", "d", "r"
    tuned_malloc: bool = False
    generator_forward_only: bool = False  # time only G(x) without grad (the 2nd G forward)


VARIANTS: dict[str, Variant] = {
    "reference": Variant("reference (published loop)", reference=True),
    "ref-no2nd": Variant("ref − 2nd G forward", reference=True, second_forward=False),
    "ref-frozenD": Variant(
        "ref − 2nd fwd, D frozen", reference=True, second_forward=False, freeze_discriminator=True
    ),
    "ref-cached": Variant(
        "ref − 2nd fwd, D frozen, cached grid",
        reference=True,
        second_forward=False,
        freeze_discriminator=True,
        cached_grid=True,
    ),
    "lib": Variant("build_model fp32"),
    "lib-affine": Variant("build_model fp32, affine R (opt-in)", affine=True),
    "lib-cl": Variant("build_model fp32 + channels-last", channels_last=True),
    "lib-compile": Variant("build_model fp32 + torch.compile of G and D", compile="gd"),
    "lib-compile-R": Variant("build_model fp32 + torch.compile of R", compile="r"),
    "lib-compile-all": Variant("build_model fp32 + model.compile() (G, D and R)", compile="gdr"),
    "lib-malloc": Variant("build_model fp32 + tuned malloc", tuned_malloc=True),
    "lib-bf16": Variant("build_model amp=True (bf16)", amp=True),
    "lib-bf16-cl": Variant("build_model bf16 + channels-last", amp=True, channels_last=True),
    "lib-bf16-affine": Variant("build_model bf16, affine R (opt-in)", amp=True, affine=True),
    "lib-bf16-compile": Variant(
        "build_model bf16 + model.compile() (G, D and R)", amp=True, compile="gdr"
    ),
    "g-forward": Variant(
        "G(x) alone, no grad (the reference's redundant work)", generator_forward_only=True
    ),
}

#: Effect of one option = time(without) / time(with), both measured in the same run.
EFFECTS: list[tuple[str, str, str]] = [
    ("no redundant G forward", "reference", "ref-no2nd"),
    ("D frozen during the G step", "ref-no2nd", "ref-frozenD"),
    ("cached identity grid (regcorrect.warp)", "ref-frozenD", "ref-cached"),
    ("build_model vs. the ablated reference (should be ≈1)", "ref-cached", "lib"),
    ("channels-last (fp32)", "lib", "lib-cl"),
    ("torch.compile of G and D (fp32)", "lib", "lib-compile"),
    ("torch.compile of R (fp32)", "lib", "lib-compile-R"),
    ("torch.compile of G, D and R (fp32)", "lib", "lib-compile-all"),
    ("tuned glibc malloc (fp32)", "lib", "lib-malloc"),
    ("bf16 autocast", "lib", "lib-bf16"),
    ("bf16 autocast + channels-last", "lib", "lib-bf16-cl"),
    ("torch.compile of G, D and R (bf16)", "lib-bf16", "lib-bf16-compile"),
    ("affine head (fp32), cost", "lib", "lib-affine"),
]

QUICK_VARIANTS = ["reference", "lib", "lib-bf16"]


# ---------------------------------------------------------------------------- reference step
def _rebuilt_grid_warp(image: Tensor, displacement: Tensor) -> Tensor:
    """Spatial transformer as published: builds the identity grid anew on every call.

    ``displacement`` ``(B, 2, H, W)`` in pixels, ``(dy, dx)``; ``warped[p] = image[p + u(p)]``.
    """
    spatial = displacement.shape[2:]
    axes = [torch.arange(s, device=displacement.device, dtype=displacement.dtype) for s in spatial]
    identity = torch.stack(torch.meshgrid(*axes, indexing="ij")).unsqueeze(0)
    positions = identity + displacement
    normalised = [2.0 * (positions[:, i] / (s - 1) - 0.5) for i, s in enumerate(spatial)]
    grid = torch.stack(normalised[::-1], dim=-1)  # (B, H, W, 2) as (x, y)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def check_reference_warp() -> float:
    """Assert that the published transformer warps exactly like ``regcorrect.warp``."""
    from regcorrect import warp

    generator = torch.Generator().manual_seed(0)
    image = torch.rand(2, 1, 24, 20, generator=generator)
    displacement = torch.randn(2, 2, 24, 20, generator=generator) * 3
    error = float((_rebuilt_grid_warp(image, displacement) - warp(image, displacement)).abs().max())
    assert error < 1e-5, f"reference transformer differs from regcorrect.warp by {error}"
    return error


def _smoothness(displacement: Tensor) -> Tensor:
    dy = displacement[:, :, 1:, :] - displacement[:, :, :-1, :]
    dx = displacement[:, :, :, 1:] - displacement[:, :, :, :-1]
    return dy.square().mean() + dx.square().mean()


class ReferenceStep:
    """The published NC+R training loop on given networks (see the module docstring)."""

    def __init__(
        self, generator: nn.Module, registration: nn.Module, discriminator: nn.Module, v: Variant
    ) -> None:
        self.generator, self.registration, self.discriminator = (
            generator,
            registration,
            discriminator,
        )
        self.variant = v

        def adam(module: nn.Module) -> torch.optim.Adam:
            return torch.optim.Adam(module.parameters(), lr=1e-4, betas=(0.5, 0.999))

        self.optimizer_g = adam(generator)
        self.optimizer_r = adam(registration)
        self.optimizer_d = adam(discriminator)
        if v.cached_grid:
            from regcorrect import warp

            self.transform: Callable[[Tensor, Tensor], Tensor] = warp
        else:
            self.transform = _rebuilt_grid_warp

    def __call__(self, source: Tensor, target: Tensor) -> None:
        v = self.variant
        self.optimizer_g.zero_grad()
        self.optimizer_r.zero_grad()
        if v.freeze_discriminator:
            self.discriminator.requires_grad_(False)
        translated = self.generator(source)
        displacement = self.registration(torch.cat([translated, target], dim=1))
        registered = self.transform(translated, displacement)
        score = self.discriminator(translated)
        adversarial = F.mse_loss(score, torch.ones_like(score))
        correction = 20.0 * F.l1_loss(registered, target)
        smoothness = 10.0 * _smoothness(displacement)
        (adversarial + correction + smoothness).backward()
        self.optimizer_g.step()
        self.optimizer_r.step()

        if v.freeze_discriminator:
            self.discriminator.requires_grad_(True)
        self.optimizer_d.zero_grad()
        if v.second_forward:
            with torch.no_grad():
                fake = self.generator(source)
        else:
            fake = translated.detach()
        fake_score = self.discriminator(fake)
        real_score = self.discriminator(target)
        loss = F.mse_loss(fake_score, torch.zeros_like(fake_score)) + F.mse_loss(
            real_score, torch.ones_like(real_score)
        )
        loss.backward()
        self.optimizer_d.step()


# ---------------------------------------------------------------------------- worker
def _batch(size: int, batch: int) -> tuple[Tensor, Tensor]:
    """``batch`` real T1 / misaligned T2 ICBM152 slices, padded to ``size × size``."""
    from regcorrect.data import Misalignment, icbm152

    spacing = max(1.0, 232.0 / size)  # the 229 × 193 slices fit into size × size
    pairs = icbm152("train", spacing=spacing, size=size)
    rows = torch.arange(batch) * 7 % pairs.source.shape[0]
    target, _ = Misalignment(5)(pairs.target[rows], generator=torch.Generator().manual_seed(0))
    return pairs.source[rows].contiguous(), target.contiguous()


#: ``--arch tiny`` (the ``--quick`` smoke test): small networks instead of the paper's.
TINY = {
    "base_channels": 8,
    "num_residual_blocks": 1,
    "discriminator_channels": 8,
    "registration": {"channels": (8, 16, 16, 16)},
}


def _build(
    v: Variant, size: int, batch: int, device: torch.device, arch: str
) -> Callable[[], None]:
    from regcorrect import build_model

    options = dict(TINY) if arch == "tiny" else {"registration": {}}
    registration = {**options.pop("registration"), "affine": v.affine}
    model = build_model(
        "cyclegan",
        "nc+r",
        registration=registration,
        amp=v.amp,
        seed=0,
        device=device,
        **options,
    )
    source, target = (t.to(device) for t in _batch(size, batch))
    if v.channels_last:
        model.to(memory_format=torch.channels_last)
        source = source.contiguous(memory_format=torch.channels_last)
        target = target.contiguous(memory_format=torch.channels_last)
    if v.compile == "gdr":  # everything: the public TranslationModel.compile()
        model.compile()
    else:
        if "g" in v.compile:
            model.backbone.generator.compile()
        if "d" in v.compile:
            model.backbone.discriminator.compile()
        if "r" in v.compile:  # train_step calls R.decompose, not R.forward
            model.registration.decompose = torch.compile(model.registration.decompose)
    if v.generator_forward_only:
        generator = model.backbone.generator.train()

        def forward() -> None:
            with torch.no_grad():
                generator(source)

        return forward
    if v.reference:
        step = ReferenceStep(
            model.backbone.generator, model.registration, model.backbone.discriminator, v
        )
        model.train()
        return lambda: step(source, target)
    return lambda: model.train_step(source, target)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _reply(**message: object) -> None:
    print(PROTOCOL + json.dumps(message), flush=True)


def worker(name: str, size: int, batch: int, device_name: str, warmup: int, arch: str) -> int:
    """Build one variant, warm it up, then answer ``step`` / ``done`` commands on stdin."""
    device = torch.device(device_name)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    v = VARIANTS[name]
    try:
        start = time.perf_counter()
        step = _build(v, size, batch, device, arch)
        for _ in range(warmup + (1 if v.compile else 0)):
            step()
        sync()
        _reply(status="ready", setup_s=time.perf_counter() - start)
    except Exception as error:  # report, e.g. a torch.compile failure, instead of dying
        _reply(status="failed", error=f"{type(error).__name__}: {error}"[:400])
        return 0
    for line in sys.stdin:
        command = line.strip()
        if command == "step":
            start = time.perf_counter()
            step()
            sync()
            _reply(seconds=time.perf_counter() - start)
        elif command == "done":
            _reply(peak_mb=_peak_memory_mb(device))
            return 0
    return 0


# ---------------------------------------------------------------------------- parent
class WorkerProcess:
    def __init__(self, name: str, size: int, batch: int, args: argparse.Namespace) -> None:
        self.name = name
        env = dict(os.environ)
        if VARIANTS[name].tuned_malloc:
            env.update(TUNED_MALLOC)
        command = [sys.executable, os.path.abspath(__file__), "--worker", name]
        command += ["--sizes", str(size), "--batches", str(batch)]
        command += ["--device", args.device, "--warmup", str(args.warmup), "--arch", args.arch]
        if args.threads:
            command += ["--threads", str(args.threads)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )

    def receive(self) -> dict:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(PROTOCOL):
                return json.loads(line[len(PROTOCOL) :])
        raise RuntimeError(f"worker {self.name} exited with code {self.process.wait()}")

    def send(self, command: str) -> dict:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.receive()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def run_configuration(size: int, batch: int, names: list[str], args: argparse.Namespace) -> dict:
    """All variants of one (size, batch), interleaved; name -> {times, peak_mb, error}."""
    workers: dict[str, WorkerProcess] = {}
    results: dict[str, dict] = {}
    try:
        if args.arch == "tiny":  # small enough to start all at once
            workers = {name: WorkerProcess(name, size, batch, args) for name in names}
        for name in names:  # else one at a time, so that the warm-ups' peaks do not add up
            if name not in workers:
                workers[name] = WorkerProcess(name, size, batch, args)
            process = workers[name]
            message = process.receive()
            results[name] = {"times": [], "setup_s": message.get("setup_s")}
            if message["status"] != "ready":
                results[name]["error"] = message.get("error", "failed")
                print(f"  {name}: {results[name]['error']}", flush=True)
        alive = [n for n in names if "error" not in results[n]]
        for round_index in range(args.repeats):
            shift = round_index % len(alive)
            for name in alive[shift:] + alive[:shift]:
                results[name]["times"].append(workers[name].send("step")["seconds"])
            summary = ", ".join(f"{n}={results[n]['times'][-1]:.2f}s" for n in alive)
            print(f"  {size}² b{batch} round {round_index + 1}: {summary}", flush=True)
        for name in alive:
            results[name]["peak_mb"] = workers[name].send("done")["peak_mb"]
    finally:
        for process in workers.values():
            process.close()
    return results


def _seconds(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def _ratio(numerator: float | None, denominator: float | None) -> str:
    return f"{numerator / denominator:.2f}×" if numerator and denominator else "—"


def tables(size: int, batch: int, names: list[str], results: dict) -> tuple[str, str]:
    """The per-variant table and the per-option table of one (size, batch).

    Speed-ups are given from the medians and from the minima: on a shared machine the load
    comes and goes, and the minimum is the time least disturbed by it.
    """
    stats = {}
    for name in names:
        times = results[name].get("times") or []
        if "error" not in results[name] and times:
            stats[name] = (median(times), min(times), sorted(times))
    reference = stats.get("reference")
    reference_mb = results["reference"].get("peak_mb")
    rows = []
    for name in names:
        r, label = results[name], VARIANTS[name].label
        if name not in stats:
            rows.append([f"{size}²", batch, label, "failed"] + ["—"] * 7)
            continue
        mid, low, times = stats[name]
        part = VARIANTS[name].generator_forward_only  # a part of a step: no speed-up
        spread = f"{_seconds(times[len(times) // 4])}–{_seconds(times[(3 * len(times)) // 4])}"
        mb = r["peak_mb"]
        rows.append(
            [
                f"{size}²",
                batch,
                label,
                _seconds(mid),
                spread,
                _seconds(low),
                _ratio(reference[0], mid) if reference and not part else "—",
                _ratio(reference[1], low) if reference and not part else "—",
                f"{mb:.0f}",
                _ratio(mb, reference_mb),
                f"{r['setup_s']:.0f}",
            ]
        )
    header = [
        "size",
        "batch",
        "variant",
        "median s/step",
        "IQR s",
        "min s/step",
        "speed-up vs ref (medians)",
        "speed-up vs ref (minima)",
        "peak MB",
        "peak vs ref",
        "setup s",
    ]
    main_table = markdown_table(header, rows)
    effect_rows = []
    for option, without, with_ in EFFECTS:
        if without not in results or with_ not in results:
            continue
        if without not in stats or with_ not in stats:
            effect_rows.append([f"{size}²", batch, option, "failed", "failed"])
            continue
        effect_rows.append(
            [
                f"{size}²",
                batch,
                option,
                _ratio(stats[without][0], stats[with_][0]),
                _ratio(stats[without][1], stats[with_][1]),
            ]
        )
    if "lib" in stats and "g-forward" in stats:
        # The reference does the library step's work plus a no-grad G(x) (and a loop Adam): the
        # most that removing redundant work alone can give, with the same networks and kernels.
        effect_rows.append(
            [
                f"{size}²",
                batch,
                "ceiling of removing redundant work: (build_model + G(x) alone) / build_model",
                _ratio(stats["lib"][0] + stats["g-forward"][0], stats["lib"][0]),
                _ratio(stats["lib"][1] + stats["g-forward"][1], stats["lib"][1]),
            ]
        )
    header = ["size", "batch", "option", "speed-up (medians)", "speed-up (minima)"]
    effects = markdown_table(header, effect_rows)
    failures = [
        f"- {VARIANTS[n].label}: {results[n]['error']}" for n in names if "error" in results[n]
    ]
    if failures:
        effects += "\n\nfailed variants:\n" + "\n".join(failures)
    return main_table, effects


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=list(VARIANTS),
        metavar="NAME",
        help="any of: " + ", ".join(VARIANTS),
    )
    parser.add_argument(
        "--arch", choices=("paper", "tiny"), default="paper", help="tiny: small nets (smoke test)"
    )
    parser.add_argument("--threads", type=int, help="torch threads per worker (default: torch's)")
    parser.add_argument(
        "--quick", action="store_true", help="tiny nets, 32², batch 1, 1 step, 3 variants"
    )
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--render", help="only print the tables of a --json file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.render:
        with open(args.render) as handle:
            raw = json.load(handle)
        for key, results in raw.items():
            size, batch = (int(v) for v in key.split("x"))
            print("\n\n".join(tables(size, batch, list(results), results)) + "\n")
        return 0
    if args.worker:
        if args.threads:
            torch.set_num_threads(args.threads)
        return worker(
            args.worker, args.sizes[0], args.batches[0], args.device, args.warmup, args.arch
        )
    if args.quick:
        args.sizes, args.batches, args.repeats, args.warmup = [32], [1], 1, 0
        args.variants, args.arch, args.threads = QUICK_VARIANTS, "tiny", args.threads or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    names = ["reference"] + [n for n in args.variants if n != "reference"]
    if args.device.startswith("cuda") and "lib-malloc" in names:
        names.remove("lib-malloc")

    print("machine:", ", ".join(f"{k}: {v}" for k, v in machine_info(args.device).items()))
    print(f"reference transformer vs regcorrect.warp: max |Δ| = {check_reference_warp():.1e}")
    print(
        f"settings: sizes={args.sizes} batches={args.batches} repeats={args.repeats} "
        f"warmup={args.warmup} device={args.device} arch={args.arch} variants={names}",
        flush=True,
    )
    main_tables, effect_tables, raw = [], [], {}
    for size in args.sizes:
        for batch in args.batches:
            results = run_configuration(size, batch, names, args)
            raw[f"{size}x{batch}"] = results
            main_table, effects = tables(size, batch, names, results)
            print(main_table + "\n\n" + effects + "\n", flush=True)
            main_tables.append(main_table)
            effect_tables.append(effects)
    print("## all configurations\n")
    print("\n\n".join(main_tables))
    print("\n## effect of each option\n")
    print("\n\n".join(effect_tables))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(raw, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
