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
from common import SIZE, settings, to3, training_pairs  # noqa: E402

from regcorrect.correction import SOURCE_REFINE_STEPS  # noqa: E402
from regcorrect.data import Misalignment  # noqa: E402
from regcorrect.backbones import GeneratorOutput  # noqa: E402
from regcorrect.registration import (  # noqa: E402
    affine_to_displacement,
    moment_alignment,
    warp,
)

out = sys.argv[1]
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 3500
level = int(sys.argv[3]) if len(sys.argv) > 3 else 5
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
torch.set_num_threads(1)


train, test = ns.load_data(2.0, SIZE)
model = ns.sweep_model(settings(steps), "pix2pix", seed, SIZE)  # Pix2Pix backbone; losses replaced below
size = SIZE
current = {}


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
    real_pair = (source, current["pulled"])
    return GeneratorOutput(translated=translated, losses={}, fakes=fakes), losses, real_pair


model._generator_losses = generator_losses
history = []
for step, source, target, ms, mt in training_pairs(train, level, seed, steps):
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
