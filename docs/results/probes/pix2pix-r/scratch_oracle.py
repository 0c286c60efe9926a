"""Probe: does Pix2Pix+R stall late in training because its conditional discriminator sees the
alignment's residual error? (seed 0, noise level 5, the anchored sweep's settings, 3500 steps)

    python scratch_oracle.py estimated OUT.json   # R = source_alignment (the library's start)
    python scratch_oracle.py true OUT.json        # R = the true relative misalignment (oracle)
    python scratch_oracle.py true2 OUT.json       # the same, and D's real image resampled twice

Both: mode ``pix2pix+r``, ``registration={"passes": 0}``, correction weight 100, EMA 0.99, bf16,
joint augmentation composed with the noise, Adam 2e-4 with linear decay over the second half,
batch 4, one torch thread; evaluation every 250 steps on the held-out slab (NMAE as the sweep).
With ``true``, ``model.register`` returns the field of the known relative transform of each pair
(target noise ∘ source noise⁻¹), so the real pairs ``(x∘φ, ỹ)`` are exactly aligned, like the fake
pairs ``(x∘φ, G(x)∘φ)``. With ``true2`` the discriminator's real image is the aligned target
resampled like the condition — by the source's noise, then by the true field — instead of once by
the target's noise, so that real and fake images are resampled as often as their condition (the
correction loss still sees the target as given).
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "benchmarks"))
import noise_sweep as ns  # noqa: E402
from common import SIZE, judge_in_target_frame, settings, to3, training_pairs  # noqa: E402

from regcorrect.correction import source_alignment  # noqa: E402
from regcorrect.data import Misalignment  # noqa: E402
from regcorrect.registration import RegistrationFields, affine_to_displacement  # noqa: E402

which, out = sys.argv[1], sys.argv[2]
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 3500
torch.set_num_threads(1)


train, test = ns.load_data(2.0, SIZE)
model = ns.sweep_model(settings(steps), "pix2pix+r", 0, SIZE)
judge_in_target_frame(model)  # the design probed here (the library's before 2026-11-27)
size = SIZE
current = {}


if which in ("true", "true2"):
    def register(translated, target, *, source=None):
        field = current["true"]
        return RegistrationFields(displacement=field, residual=torch.zeros_like(field))

    model.register = register
if which == "true2":
    judge = model.backbone.discriminator_losses
    model.backbone.discriminator_losses = lambda source, target, fakes: judge(
        source, current["twice"], fakes
    )
history, errors = [], []
for step, source, target, ms, mt in training_pairs(train, 5, 0, steps):
    src, tgt = Misalignment.warp(source, ms), Misalignment.warp(target, mt)
    current["true"] = affine_to_displacement((to3(mt) @ torch.linalg.inv(to3(ms)))[:, :2], size)
    if which == "true2":
        from regcorrect import warp

        current["twice"] = warp(Misalignment.warp(target, ms), current["true"])
    if step % 50 == 0:  # how far the library's start is from the truth (all pixels)
        errors.append(float((source_alignment(src, tgt) - current["true"]).norm(dim=1).mean()))
    model.train_step(src, tgt)
    if step % 250 == 0 or step == steps:
        metrics = ns.evaluate(model, test)
        history.append({"step": step, **metrics})
        print(which, step, metrics, flush=True)
final = float(np.mean([h["nmae"] for h in history[-3:]]))
print(which, "final (mean of last 3)", final, "start's mean error px", np.mean(errors))
json.dump({"which": which, "history": history, "final": final, "start_error_px": float(np.mean(errors))}, open(out, "w"))
