"""Scratch: a weight-shared 2-pass cascade of R in the registration benchmark."""
import sys, time
sys.path.insert(0, "/work/main/benchmarks")
import torch
from torch import nn
import registration_accuracy as ra
from regcorrect import RegUNet, warp
from regcorrect.registration import RegistrationFields, compose

class Cascade(nn.Module):
    def __init__(self, net, passes=2, detach_between=False):
        super().__init__()
        self.net, self.passes, self.spatial_dims = net, passes, net.spatial_dims
        self.detach_between = detach_between
    def decompose(self, x):
        c = x.shape[1] // 2
        moving, fixed = x[:, :c], x[:, c:]
        total, residual = None, 0
        for _ in range(self.passes):
            current = moving if total is None else warp(moving, total.detach() if self.detach_between else total)
            f = self.net.decompose(torch.cat([current, fixed], 1))
            residual = residual + f.residual
            total = f.displacement if total is None else compose(f.displacement, total)
        return RegistrationFields(displacement=total, residual=residual)
    def forward(self, x):
        return self.decompose(x).displacement

variant = sys.argv[1]
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 800
torch.set_num_threads(1)
train_images, train_masks = ra.load("train", 128)
test_images, test_masks = ra.load("test", 128)
torch.manual_seed(0)
opts = ra.VARIANTS[variant.split(":")[0]]
net = RegUNet(spatial_dims=2, in_channels=2, channels=[8, 16, 16, 16, 16, 16], **opts)
passes = int(sys.argv[3]) if len(sys.argv) > 3 else 2
model = Cascade(net, passes, detach_between=variant.endswith(":detach"))
t = time.perf_counter()
loss = ra.train(model, train_images, train_masks, steps=steps, batch=8, lr=2e-3, amplitude=6.0, seed=0)
print("train s", time.perf_counter() - t, "loss", loss, flush=True)
res = ra.evaluate(model, test_images, test_masks, pairs_per_image=4, amplitude=6.0, seed=1)
for k, v in res.items():
    print(variant, k, {a: round(b, 3) for a, b in v.items()})
# also single pass of the same trained net
res = ra.evaluate(net, test_images, test_masks, pairs_per_image=4, amplitude=6.0, seed=1)
for k, v in res.items():
    print(variant, "single-pass", k, {a: round(b, 3) for a, b in v.items()})
