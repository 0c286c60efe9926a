"""Probe: Pix2Pix+R judged in the *source's* frame (seed 0, noise level 5, 3500 steps; the
protocol of scratch_oracle.py).

    python scratch_source_frame.py OUT.json [STEPS [LEVEL [SEED]]]   # defaults 3500, 5, 0

The discriminator judges the fake pair ``(x, G(x))`` as Pix2Pix does (nothing resampled after G)
against the real pair ``(x, ỹ∘S⁻¹)``: the target pulled back into the source's frame by the
inverse of the closed-form alignment ``S`` (``source_alignment``: an affine, inverted exactly).
The correction loss is unchanged (``G(x)∘S`` against ``ỹ``). Here the *real* image is the one
resampled once more, which the generator can match by blurring a little, where in mode
``pix2pix+r`` the fake was, which it cannot undo.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "benchmarks"))
import noise_sweep as ns  # noqa: E402

from regcorrect.correction import SOURCE_REFINE_STEPS  # noqa: E402
from regcorrect.data import Misalignment, PairAugmentation, compose_affine  # noqa: E402
from regcorrect.registration import (  # noqa: E402
    RegistrationFields,
    affine_to_displacement,
    moment_alignment,
    warp,
)

out = sys.argv[1]
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 3500
level = int(sys.argv[3]) if len(sys.argv) > 3 else 5
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
torch.set_num_threads(1)


class Args:
    amp, device, lr, steps, base_channels, residual_blocks = True, "cpu", 2e-4, steps, 32, 6
    reg_channels, affine, affine_features, reg_passes, prealign = [16, 32, 32, 32, 32, 32], False, "moments", 0, None
    initial_alignment, smoothness_weight, correction_weight, centering_weight, ema_decay = "source", 10.0, 100.0, 0.0, 0.99


train, test = ns.load_data(2.0, (112, 96))
model = ns.sweep_model(Args, "pix2pix", seed, (112, 96))  # Pix2Pix backbone; losses replaced below
size = (112, 96)
current = {}


def to3(matrix):
    return torch.cat([matrix, torch.tensor([[[0, 0, 1.0]]]).expand(matrix.shape[0], 1, 3)], 1)


def generator_losses(source, target, mask):
    backbone = model.backbone
    matrix = moment_alignment(source, target, weights="foreground", refine_steps=SOURCE_REFINE_STEPS)
    field = affine_to_displacement(matrix, size)
    inverse = affine_to_displacement(torch.linalg.inv(to3(matrix))[:, :2], size)
    current["pulled"] = warp(target, inverse)
    with model._autocast():
        translated = backbone.generator(source)
        losses = {"adversarial": backbone.adversarial(source, translated).float()}
        registered = warp(translated.float(), field)
        losses["correction"] = 100.0 * (registered - target).abs().mean()
    fakes = {"pair": torch.cat([source, translated.detach().float()], 1)}
    out = ns_output(translated, fakes)
    return out, losses, source


def ns_output(translated, fakes):
    from regcorrect.backbones import GeneratorOutput

    return GeneratorOutput(translated=translated, losses={}, fakes=fakes)


model._generator_losses = generator_losses
judge = model.backbone.discriminator_losses
model.backbone.discriminator_losses = lambda source, target, fakes: judge(source, current["pulled"], fakes)
noise, aug = Misalignment(level), PairAugmentation()
generator = torch.Generator().manual_seed(10_000 + seed)
history = []
for step in range(1, steps + 1):
    index = torch.randint(len(train.source), (4,), generator=generator)
    source, target = train.source[index], train.target[index]
    joint = aug.matrices(aug.sample_params(4, generator), size)
    ms = compose_affine(noise.matrices(noise.sample_params(4, generator), size), joint)
    mt = compose_affine(noise.matrices(noise.sample_params(4, generator), size), joint)
    model.train_step(Misalignment.warp(source, ms), Misalignment.warp(target, mt))
    if step % 250 == 0 or step == steps:
        metrics = ns.evaluate(model, test)
        history.append({"step": step, **metrics})
        print("source-frame", step, metrics, flush=True)
final = float(np.mean([h["nmae"] for h in history[-3:]]))
print("source-frame final (mean of last 3)", final)
json.dump(
    {"which": "source-frame", "level": level, "seed": seed, "history": history, "final": final},
    open(out, "w"),
)
