"""Plug your own translation network into RegGAN's registration-corrected training (mode NC+R).

Two ways, both trained here on synthetic misaligned pairs (the target is the source with inverted
contrast, shifted by a few pixels):

1. **A backbone** — subclass :class:`~regcorrect.backbones.TranslationBackbone` (five methods) and
   hand it to :class:`~regcorrect.TranslationModel`: you get the modes (here NC+R), the
   optimizers, a replay buffer, learning-rate decay, AMP and checkpoints for free.
2. **The lighter path** — you only have a generator and a discriminator:
   :class:`~regcorrect.RegistrationCorrection` wraps the generator with a registration network and
   its ``training_step`` does one RegGAN update (Eq. 9 of the paper) with your optimizers.

With the same seed both paths compute the same updates up to float rounding (the same networks,
losses and Adam settings), which ``tests/test_custom_backbone_example.py`` checks over two steps;
over many steps the rounding differences grow, as between any two GAN runs. Run::

    python examples/custom_backbone.py --steps 100

and compare the reported error of ``G(x)`` against the *aligned* ground truth before and after.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from regcorrect import RegistrationCorrection, RegUNet, TranslationModel
from regcorrect.backbones import GeneratorOutput, TranslationBackbone


class TinyGenerator(nn.Module):
    """Three 3×3 convolutions: ``(B, C_in, H, W)`` → ``(B, C_out, H, W)`` in ``[-1, 1]``."""

    def __init__(self, *, in_channels: int = 1, out_channels: int = 1, channels: int = 16) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1),
            nn.InstanceNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.InstanceNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, out_channels, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, image: Tensor) -> Tensor:
        return self.layers(image)


class TinyDiscriminator(nn.Module):
    """A small PatchGAN: ``(B, C, H, W)`` → a ``(B, 1, H/4, W/4)`` map of real/fake scores."""

    def __init__(self, *, in_channels: int = 1, channels: int = 16) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * channels, 1, 3, padding=1),
        )

    def forward(self, image: Tensor) -> Tensor:
        return self.layers(image)


class TinyBackbone(TranslationBackbone):
    """A user-defined method: one generator X→Y and one discriminator on Y (non-cyclic).

    The contract (``regcorrect/backbones/base.py``): name the networks each optimizer owns,
    translate, return the weighted generator losses with the detached fakes, and return the
    weighted discriminator losses. Registration, optimizers and the training loop are the
    engine's business.
    """

    method = "tiny"

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 16,
        adversarial_weight: float = 1.0,
        gan_mode: str = "lsgan",
    ) -> None:
        super().__init__(cyclic=False, gan_mode=gan_mode)
        self.adversarial_weight = adversarial_weight
        self.generator = TinyGenerator(
            in_channels=in_channels, out_channels=out_channels, channels=base_channels
        )
        self.discriminator = TinyDiscriminator(in_channels=out_channels, channels=base_channels)

    def generators(self) -> dict[str, nn.Module]:
        return {"generator": self.generator}

    def discriminators(self) -> dict[str, nn.Module]:
        return {"discriminator": self.discriminator}

    def translate(self, source: Tensor) -> Tensor:
        return self.generator(source)

    def generator_forward(self, source: Tensor, target: Tensor) -> GeneratorOutput:
        translated = self.generator(source)
        adversarial = self.gan_generator_loss(self.discriminator(translated))
        return GeneratorOutput(
            translated=translated,  # with its graph: the +R modes register it onto the target
            losses={"adversarial": self.adversarial_weight * adversarial},
            fakes={"target": translated.detach()},
        )

    def discriminator_losses(
        self, source: Tensor, target: Tensor, fakes: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        loss = self.gan_discriminator_loss(
            self.discriminator(target), self.discriminator(fakes["target"])
        )
        return {"discriminator": self.adversarial_weight * loss}


def misaligned_pairs(
    batch: int, size: int, max_shift: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Synthetic pairs: ``source`` (blobs), the aligned truth ``-source`` and a shifted target.

    Returns:
        ``source``, ``aligned`` and ``target``, each ``(batch, 1, size, size)`` in ``[-1, 1]``;
        ``target`` is ``aligned`` rolled by up to ``max_shift`` pixels along each axis.
    """
    coarse = torch.rand(batch, 1, size // 8, size // 8, generator=generator)
    smooth = nn.functional.interpolate(coarse, size=(size, size), mode="bicubic")
    source = (2 * smooth - 1).clamp(-1, 1)
    aligned = -source
    shifts = torch.randint(-max_shift, max_shift + 1, (batch, 2), generator=generator)
    target = torch.stack(
        [
            torch.roll(image, tuple(shift.tolist()), dims=(-2, -1))
            for image, shift in zip(aligned, shifts, strict=True)
        ]
    )
    return source, aligned, target


def aligned_error(translate: nn.Module, source: Tensor, aligned: Tensor) -> float:
    """Mean absolute error of ``G(x)`` against the aligned ground truth."""
    with torch.no_grad():
        return float((translate(source) - aligned).abs().mean())


def registration_network(size: int, channels: Sequence[int]) -> RegUNet:
    return RegUNet(spatial_dims=2, in_channels=2, channels=tuple(channels), image_size=(size, size))


def train_backbone(args: argparse.Namespace) -> tuple[TranslationModel, list[dict[str, float]]]:
    """Path 1: a :class:`TranslationBackbone` in mode NC+R through :class:`TranslationModel`."""
    torch.manual_seed(args.seed)
    backbone = TinyBackbone(base_channels=args.channels)
    model = TranslationModel(
        backbone,
        mode="nc+r",
        registration=registration_network(args.size, args.registration_channels),
        learning_rate=args.learning_rate,
        # also available: replay_buffer_size=50, total_steps=... (linear decay), amp=True
    )
    data = torch.Generator().manual_seed(args.seed)
    history = []
    for step in range(args.steps):
        source, _, target = misaligned_pairs(args.batch, args.size, args.max_shift, data)
        history.append(model.train_step(source, target))
        if (step + 1) % args.log_every == 0:
            print(f"[backbone]   step {step + 1}: " + _format(history[-1]))
    return model, history


def train_correction(args: argparse.Namespace) -> tuple[nn.Module, list[dict[str, float]]]:
    """Path 2: a bare generator/discriminator pair with :class:`RegistrationCorrection`."""
    torch.manual_seed(args.seed)
    generator = TinyGenerator(channels=args.channels)
    discriminator = TinyDiscriminator(channels=args.channels)
    corrector = RegistrationCorrection(
        generator, registration_network(args.size, args.registration_channels)
    )
    betas = (0.5, 0.999)
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=args.learning_rate, betas=betas)
    optimizer_r = torch.optim.Adam(
        corrector.reg_net.parameters(), lr=args.learning_rate, betas=betas
    )
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=args.learning_rate, betas=betas)
    data = torch.Generator().manual_seed(args.seed)
    history = []
    for step in range(args.steps):
        source, _, target = misaligned_pairs(args.batch, args.size, args.max_shift, data)
        losses = corrector.training_step(
            source,
            target,
            optimizer_g=optimizer_g,
            optimizer_r=optimizer_r,
            discriminator=discriminator,
            optimizer_d=optimizer_d,
        )
        history.append(losses)
        if (step + 1) % args.log_every == 0:
            print(f"[correction] step {step + 1}: " + _format(losses))
    return generator, history


def _format(losses: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.3f}" for name, value in losses.items())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="training steps per path")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=64, help="image side (>= 32)")
    parser.add_argument("--max-shift", type=int, default=4, help="misalignment in pixels")
    parser.add_argument("--channels", type=int, default=16, help="width of G and D")
    parser.add_argument(
        "--registration-channels", type=int, nargs="+", default=[16, 32, 32, 32, 32]
    )
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=50)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Train both paths; return the models, the loss histories and the aligned errors."""
    args = parse_args(argv)
    evaluation = torch.Generator().manual_seed(args.seed + 1)
    source, aligned, _ = misaligned_pairs(8, args.size, args.max_shift, evaluation)

    model, model_history = train_backbone(args)
    generator, correction_history = train_correction(args)
    untrained = TinyGenerator(channels=args.channels)
    errors = {
        "untrained": aligned_error(untrained, source, aligned),
        "backbone": aligned_error(model.translate, source, aligned),
        "correction": aligned_error(generator.eval(), source, aligned),
    }
    print("mean |G(x) - aligned truth|: " + _format(errors))
    return {
        "model": model,
        "generator": generator,
        "model_history": model_history,
        "correction_history": correction_history,
        "errors": errors,
    }


if __name__ == "__main__":
    main()
