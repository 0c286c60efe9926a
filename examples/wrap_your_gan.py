"""Wrap your own generator with RegGAN's registration correction: three lines.

    model = RegistrationCorrection(generator, RegUNet(spatial_dims=2, in_channels=2))
    out = model(source, target)
    out.total.backward()

Here the "generator" is a toy per-pixel intensity map (1×1 convolutions: it cannot move
anything), the source is a synthetic image and the target is the same object in another
"contrast" (a gamma curve) shifted by a few pixels, as if the pair were misaligned. The generator learns the contrast while
the registration network R absorbs the shift; the script prints the shift R recovered.

Run:  python examples/wrap_your_gan.py [--steps 300] [--size 64] [--shift 4 -3]
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

from regcorrect import RegistrationCorrection, RegUNet, warp


def synthetic_image(size: int, generator: torch.Generator) -> torch.Tensor:
    """A smooth random "anatomy": a sum of Gaussian blobs inside a disc, in [-1, 1], (1, 1, H, W)."""
    axis = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    image = torch.zeros(size, size)
    for _ in range(12):
        cy, cx = (torch.rand(2, generator=generator) * 1.2 - 0.6).tolist()
        width = 0.08 + 0.2 * float(torch.rand((), generator=generator))
        image += torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * width**2))
    image = image / image.max()
    inside = (x**2 + y**2) < 0.8**2
    return torch.where(inside, image * 1.8 - 0.9, torch.full_like(image, -1.0))[None, None]


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument(
        "--shift",
        type=float,
        nargs=2,
        default=(4.0, -3.0),
        metavar=("DY", "DX"),
        help="how far the target's content is moved, in pixels (default 4 -3)",
    )
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)

    source = synthetic_image(args.size, torch.Generator().manual_seed(args.seed))
    dy, dx = args.shift
    # The target's content sits (dy, dx) pixels further down/right: target[p] = T2(source)[p - s].
    # With the library's backward warp, warped[p] = image[p + u], that is u = -s everywhere.
    shift_field = torch.tensor([-dy, -dx]).view(1, 2, 1, 1).expand(1, 2, args.size, args.size)
    contrast = ((source + 1) / 2) ** 2 * 2 - 1  # the "T2" of this toy: a gamma curve
    target = warp(contrast, shift_field.contiguous())
    target = torch.where(
        warp(source, shift_field.contiguous()) > -1, target, torch.full_like(target, -1.0)
    )

    generator = nn.Sequential(nn.Conv2d(1, 16, 1), nn.Tanh(), nn.Conv2d(16, 1, 1), nn.Tanh())
    reg_net = RegUNet(spatial_dims=2, in_channels=2, channels=(16, 32, 32, 32))
    model = RegistrationCorrection(generator, reg_net)  # line 1
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)

    for step in range(1, args.steps + 1):
        optimizer.zero_grad()
        out = model(source, target)  # line 2
        out.total.backward()  # line 3
        optimizer.step()
        if step % max(1, args.steps // 5) == 0 or step == args.steps:
            print(
                f"step {step:4d}  correction {out.losses['correction'].item():.4f}  "
                f"smoothness {out.losses['smoothness'].item():.5f}"
            )

    with torch.no_grad():
        out = model(source, target)
        inside = source[0, 0] > -1
        recovered = [-float(out.displacement[0, axis][inside].mean()) for axis in (0, 1)]
        translation_error = float((out.translated - contrast)[source > -1].abs().mean())
    error = math.hypot(recovered[0] - dy, recovered[1] - dx)
    print(f"true shift      (dy, dx) = ({dy:+.2f}, {dx:+.2f}) px")
    print(
        f"recovered shift (dy, dx) = ({recovered[0]:+.2f}, {recovered[1]:+.2f}) px  "
        f"(error {error:.2f} px)"
    )
    print(f"generator's mean |G(x) - T2(x)| on the object: {translation_error:.3f}")
    return {
        "dy": recovered[0],
        "dx": recovered[1],
        "error": error,
        "translation_error": translation_error,
    }


if __name__ == "__main__":
    main()
