"""Scratch probe (kept as run): train/test gap of one sweep run; adversarial weight; augmentation.

Usage: python scratch_generalization.py MODE ADV LEVEL SEED STEPS ['{"_aug": [ROT, TRANS, SCALE_FRAC(, LOW, HIGH)]}']
MODE pix2pix or nc+r (nc+r: affine R, 2 passes, centring 10); ADV the adversarial weight; _aug a
joint flip + affine of source and target before the noise (the later PairAugmentation; LOW, HIGH
replace the symmetric scale range). Same settings as the noise sweep's rows otherwise. Appends a
JSON line with the held-out and training NMAE and the per-slice held-out NMAE to generalization.jsonl.
"""
import sys, json, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "benchmarks"))
import torch
torch.set_num_threads(1)
from noise_sweep import load_data, fit, translate_all, metrics_of
from regcorrect import build_model
from regcorrect.data import Misalignment
from regcorrect.metrics import nmae

mode, adv, level, seed, steps = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
extra = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
train, test = load_data(2.0, (112, 96))
size = tuple(train.source.shape[2:])
opts = dict(image_size=size, amp=True, seed=seed, learning_rate=2e-4, total_steps=steps,
            decay_start=steps // 2, base_channels=32, num_residual_blocks=6,
            discriminator_channels=32, adversarial_weight=adv)
if mode.endswith("+r"):
    opts.update(registration={"channels": (16, 32, 32, 32, 32, 32), "affine": True,
                              "affine_features": "moments", "passes": 2}, centering_weight=10)
opts.update(extra)
aug_opt = opts.pop("_aug", None)
model = build_model("cyclegan", mode, **opts)
extra["_aug"] = aug_opt
aug = extra.pop("_aug", None)
if aug:
    import noise_sweep
    joint = Misalignment.custom(rotation_deg=aug[0], translation_frac=aug[1], scale_frac=aug[2])
    base_source, base_target = train.source, train.target
    class Aug:
        pass
    orig_noise = Misalignment(level)
    state = {"pending": None}
    def noise(images, generator=None):
        # first call per step: source; second: target. Jointly augment on the first call.
        if state["pending"] is None:
            idx = (images.unsqueeze(0) == base_source.unsqueeze(1)).flatten(2).all(2).float().argmax(0)
            params = joint.sample_params(len(images), generator)
            if len(aug) > 3:
                params["scale"] = aug[3] + (aug[4] - aug[3]) * torch.rand(len(images), generator=generator)
            both, _ = joint(torch.cat([images, base_target[idx]], 1), params=params)
            flip = torch.rand(len(images), generator=generator) < 0.5
            both = torch.where(flip[:, None, None, None], both.flip(-1), both)
            state["pending"] = both[:, 1:]
            return orig_noise(both[:, :1], generator=generator)
        target = state["pending"]; state["pending"] = None
        return orig_noise(target, generator=generator)
    noise_fn = noise
else:
    noise_fn = Misalignment(level)
history, final, seconds = fit(model, noise_fn, train, test, steps=steps, batch=4,
                              seed=seed, eval_every=200, last_evals=3, label=f"{mode} adv{adv}")
pred_test = translate_all(model, test.source)
pred_train = translate_all(model, train.source)
per_slice = [round(float(nmae(pred_test[i:i+1], test.target[i:i+1])), 4) for i in range(len(pred_test))]
out = dict(mode=mode, adv=adv, level=level, seed=seed, steps=steps, extra=extra, final=final,
           test=metrics_of(pred_test, test.target), train=metrics_of(pred_train, train.target),
           per_slice_test=per_slice, seconds=seconds)
print(json.dumps(out))
with open(Path(__file__).with_name("generalization.jsonl"), "a") as f:
    f.write(json.dumps(out) + "\n")
