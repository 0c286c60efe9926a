"""Probe: R started from the source's foreground alignment (seed 0, 800 steps, the augmented
sweep's protocol; derived from ../registration-in-training/scratch_registration.py).

    python scratch_anchor.py LEVEL noisy OUT.json nc+r

Environment: ANCHOR=1 starts R's field from the affine that moves the *source's* foreground onto
the target's (``regcorrect.correction.source_alignment``: foreground moments + 5
Levenberg-Marquardt steps; OLDANCHOR=1: the foreground moments alone, as the rows marked
"moments only" were run); NOR=1: no learned R (the field is that alignment alone); DETACH=1: R
sees G(x) detached; AFFINE=0 / PASSES=k: R's affine head and passes; SMOOTH, CORR, CENTER: the
smoothness, correction and centring weights; PREALIGN, RLR, RNODECAY as in the original. After
training: the field's end-point error against the known relative misalignment on 64 fresh
training pairs, in the target's brain.
"""
import sys, json, time, os
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
import torch, numpy as np
import noise_sweep as ns
from regcorrect.data import Misalignment, PairAugmentation, compose_affine

level, oracle, out = int(sys.argv[1]), sys.argv[2] == "oracle", sys.argv[3]
torch.set_num_threads(1)
class A: pass
args = A()
args.amp=True; args.device="cpu"; args.lr=2e-4; args.steps=800; args.base_channels=32; args.residual_blocks=6
args.reg_channels=[16,32,32,32,32,32]; args.affine=os.environ.get("AFFINE", "1") == "1"; args.affine_features="moments"; args.reg_passes=int(os.environ.get("PASSES", "2"))
import os; args.prealign=os.environ.get("PREALIGN") or None; args.initial_alignment=None; args.smoothness_weight=float(os.environ.get("SMOOTH", "10")); args.correction_weight=float(os.environ.get("CORR", "20")); args.centering_weight=float(os.environ.get("CENTER", "10")); args.ema_decay=0.99
mode = sys.argv[4] if len(sys.argv) > 4 else "pix2pix"
train, test = ns.load_data(2.0, (112, 96))
model = ns.sweep_model(args, mode, 0, (112, 96))
import os
if mode == "nc+r":
    mult = float(os.environ.get("RLR", "1"))
    opt = model.optimizers["registration"]
    for group in opt.param_groups:
        group["lr"] *= mult; group["initial_lr"] *= mult
    sch = model.schedulers["registration"]
    sch.base_lrs = [b * mult for b in sch.base_lrs]
    if os.environ.get("RNODECAY"):
        sch.lr_lambdas = [lambda s: 1.0]
    print("R lr", [g["lr"] for g in opt.param_groups], "decay", not os.environ.get("RNODECAY"))

ANCHOR = os.environ.get("ANCHOR")
TOL = float(os.environ.get("TOL", "0.3"))
if ANCHOR:
    import types
    from regcorrect.registration import affine_to_displacement, warp, moment_alignment, compose
    from regcorrect.correction import run_registration
    from regcorrect.losses import correction_loss, smoothness_loss
    from regcorrect.losses.centering import target_foreground
    def soft(img): return ((img + 1) / TOL).clamp(0, 1) * 2 - 1
    from regcorrect.correction import source_alignment
    def anchor_field(source, target):
        if os.environ.get("OLDANCHOR"):
            M = moment_alignment(soft(source), soft(target))
            return affine_to_displacement(M, tuple(target.shape[2:]))
        return source_alignment(source, target)
    def _generator_losses(self, source, target, mask):
        init = anchor_field(source, target)
        with self._autocast():
            out = self.backbone.generator_forward(source, target)
            losses = {name: value.float() for name, value in out.losses.items()}
            translated = out.translated.float()
            if os.environ.get("NOR"):
                disp = init
                fields = types.SimpleNamespace(residual=torch.zeros_like(init))
            else:
                fields = run_registration(self.registration, warp(translated.detach() if os.environ.get('DETACH') else translated, init), target)
                disp = compose(fields.displacement.float(), init)
            registered = warp(translated, disp)
            losses["correction"] = self.correction_weight * correction_loss(registered, target, mask)
            losses["smoothness"] = self.smoothness_weight * smoothness_loss(fields.residual.float())
            if self.centering is not None:
                weights = target_foreground(target, mask)
                losses["centering"] = self.centering_weight * self.centering(translated, target, disp, weights, mask)
        return out, losses, (source, target)  # the real pair D judges
    model._generator_losses = types.MethodType(_generator_losses, model)
    print("anchored", TOL)
noise, aug = Misalignment(level), PairAugmentation()
generator = torch.Generator().manual_seed(10_000)
hist=[]
for step in range(1, 801):
    index = torch.randint(len(train.source), (4,), generator=generator)
    source, target = train.source[index], train.target[index]
    size = (112, 96)
    joint = aug.matrices(aug.sample_params(4, generator), size)
    ms = compose_affine(noise.matrices(noise.sample_params(4, generator), size), joint)
    mt = compose_affine(noise.matrices(noise.sample_params(4, generator), size), joint)
    src = Misalignment.warp(source, ms)
    tgt = Misalignment.warp(target, ms if oracle else mt)
    model.train_step(src, tgt)
    if step % 100 == 0:
        m = ns.evaluate(model, test); hist.append(m["nmae"]); print(step, m, flush=True)
print("final", np.mean(hist[-3:]), hist)
json.dump({"level": level, "oracle": oracle, "mode": mode, "hist": hist}, open(out, "w"))
if mode == "nc+r":
    from regcorrect.registration import affine_to_displacement, warp
    from regcorrect.metrics import nmae
    def to3(M):
        return torch.cat([M, torch.tensor([[[0, 0, 1.0]]]).expand(M.shape[0], 1, 3)], 1)
    g = torch.Generator().manual_seed(99)
    epes, l1r, l1t = [], [], []
    for _ in range(16):
        index = torch.randint(len(train.source), (4,), generator=g)
        source, target, mask = train.source[index], train.target[index], train.mask[index]
        joint = aug.matrices(aug.sample_params(4, g), size)
        ns_ = noise.matrices(noise.sample_params(4, g), size); nt_ = noise.matrices(noise.sample_params(4, g), size)
        src = Misalignment.warp(source, compose_affine(ns_, joint)); tgt = Misalignment.warp(target, compose_affine(nt_, joint))
        tmask = Misalignment.warp(mask.float() * 2 - 1, compose_affine(nt_, joint)) > 0
        true = affine_to_displacement((to3(nt_) @ torch.linalg.inv(to3(ns_)))[:, :2], size)
        with torch.no_grad():
            translated = model.translate(src, average=False).float()
            field = (anchor_field(src, tgt) if os.environ.get('NOR') else compose(model.register(warp(translated, anchor_field(src, tgt)), tgt).displacement.float(), anchor_field(src, tgt)) if ANCHOR else model.register(translated, tgt).displacement.float())
        epe = (field - true).norm(dim=1, keepdim=True)
        epes.append(epe[tmask].mean().item())
        l1r.append(nmae(warp(translated, field), tgt, mask=tmask).item()); l1t.append(nmae(warp(translated, true), tgt, mask=tmask).item())
        mag = true.norm(dim=1, keepdim=True)[tmask].mean().item()
    print("EPE in brain", np.mean(epes), "NMAE registered R", np.mean(l1r), "with true field", np.mean(l1t), "last |u|", mag)
torch.save(model.state_dict(), out.replace(".json", ".pt"))
from regcorrect.registration import affine_to_displacement, warp, moment_alignment
from regcorrect.metrics import nmae
with torch.no_grad():
    for average in (True, False):
        pred = torch.cat([model.translate(test.source[i:i+16], average=average).float() for i in range(0, len(test.source), 16)]).clamp(-1, 1)
        M = moment_alignment(pred, test.target)
        aligned = warp(pred, affine_to_displacement(M, tuple(pred.shape[2:])))
        lin = M[:, :, :2]
        scale = lin.det().sqrt()
        print(f"G(test) average={average}: NMAE {nmae(pred, test.target).item():.4f}, after per-slice moment alignment {nmae(aligned, test.target).item():.4f}; "
              f"scale mean {scale.mean().item():.4f} shift mean {M[:, :, 2].mean(0).tolist()} |shift| {M[:, :, 2].norm(dim=1).mean().item():.3f}")
        # same diagnostic for the ground truth T2 against itself moved by nothing, and for the linear map
