"""The paper's four training modes (C, C+R, NC, NC+R) and Pix2Pix as data, around any backbone.

``build_model(method, mode)`` returns a :class:`TranslationModel`: a backbone (the method's
generators and discriminators, cyclic or not), plus — in the +R modes — a registration network
R with RegGAN's correction (Eq. 7) and smoothness (Eq. 8) losses, Adam optimizers, an optional
replay buffer for the discriminators and an optional linear learning-rate decay.

One training step (:meth:`TranslationModel.train_step`) is:

1. generator side: ``backbone.generator_forward`` (the method's own weighted losses), and in +R
   modes ``R(cat[G(x), ỹ])``, the warp of ``G(x)`` onto ``ỹ`` and the two +R losses; **one**
   backward into the generators and R; optimizer steps;
2. discriminator side: the detached fakes of step 1 (through the replay buffer, if any) and the
   real images; one backward; optimizer step — no second generator forward;
3. scheduler step;
4. with ``ema_decay > 0``, the running (exponential moving) average of the generators' weights
   is updated (``torch.optim.swa_utils.AveragedModel``); :meth:`TranslationModel.translate`
   then uses the averaged weights.

With ``amp=True`` the networks run under bfloat16 autocast (CPU and CUDA); the warp, the losses
and the optimizer state stay float32.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ._checks import (
    as_scalar,
    check_choice,
    check_count,
    check_finite,
    check_float,
    check_positive,
    check_rank,
    check_same_batch_and_spatial,
    check_same_device,
    check_tensor,
    is_real,
)
from .backbones import METHODS, GeneratorOutput, Pix2Pix, TranslationBackbone
from .correction import INITIAL_ALIGNMENTS, frozen, run_registration
from .losses.centering import CenteredCorrection, target_foreground
from .losses.correction import correction_loss
from .losses.smoothness import smoothness_loss
from .registration.fields import invert_displacement
from .registration.regunet import RegistrationFields, RegUNet
from .registration.warp import warp

__all__ = ["MODES", "build_model", "TranslationModel", "ReplayBuffer"]

#: Modes accepted by :func:`build_model` (``"pix2pix"`` and ``"pix2pix+r"`` only with
#: ``"cyclegan"``).
MODES = ("c", "c+r", "nc", "nc+r", "pix2pix", "pix2pix+r")


class ReplayBuffer:
    """History of generated images for the discriminator (Shrivastava et al. 2017), size 50 in
    CycleGAN.

    Until full, every image is stored and returned. Then each image of a batch is, with
    probability 1/2, swapped with a random stored one (the stored one is returned, the new one
    kept), else returned as is. Randomness comes from an own ``torch.Generator`` so that a
    resumed run continues exactly.

    Args:
        capacity: number of stored images; 0 disables the buffer (images pass through).
        seed: seed of the buffer's random generator.
    """

    def __init__(self, capacity: int = 50, *, seed: int = 0) -> None:
        self.capacity = check_count(capacity, "capacity")
        self.images: list[Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, images: Tensor) -> Tensor:
        """Return a batch of the same shape, mixing ``images`` with stored ones.

        Stored images of another shape (the training size changed) cannot join the batch: the
        history is then dropped and filled anew."""
        if self.capacity == 0:
            return images
        if self.images and self.images[0].shape[1:] != images.shape[1:]:
            self.images = []
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.capacity:
                self.images.append(image.clone())
                out.append(image)
                continue
            if float(torch.rand((), generator=self.generator)) < 0.5:
                index = int(torch.randint(len(self.images), (), generator=self.generator))
                out.append(self.images[index].to(image.device, image.dtype))
                self.images[index] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, dim=0)

    def state_dict(self) -> dict[str, Any]:
        stored = torch.cat(self.images) if self.images else torch.empty(0)
        return {"images": stored.cpu(), "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | None = None) -> None:
        images = state["images"]
        self.images = [] if images.numel() == 0 else list(images.to(device).split(1))
        self.generator.set_state(state["rng"])


def _linear_decay(total_steps: int | None, decay_start: int | None) -> Callable[[int], float]:
    """Learning-rate factor: 1 until ``decay_start``, then linear to 0 at ``total_steps``."""
    if total_steps is None:
        return lambda step: 1.0
    start = total_steps // 2 if decay_start is None else decay_start
    if not 0 <= start < total_steps:
        raise ValueError(f"decay_start must be in [0, total_steps={total_steps}), got {start!r}")

    def factor(step: int) -> float:
        if step < start:
            return 1.0
        return max(0.0, 1.0 - (step - start) / (total_steps - start))

    return factor


class TranslationModel(nn.Module):
    """A backbone in one of the paper's modes, with its optimizers; see :func:`build_model`.

    Attributes:
        backbone: the method's networks (:class:`~regcorrect.backbones.TranslationBackbone`).
        registration: the registration network R (+R modes) or ``None``.
        centering: the :class:`~regcorrect.losses.CenteredCorrection` of ``centering_weight > 0``
            in +R modes (its running mean is part of the state dict), else ``None``.
        initial_alignment: where R's field starts (``None``: the identity; ``"source"``: the
            source's foreground aligned onto the target's, see :func:`build_model`).
        generator_average: with ``ema_decay > 0``, an ``AveragedModel`` holding the exponential
            moving average of the generators' weights and buffers (``{name: generator}`` as in
            ``backbone.generators()``; part of the state dict), else ``None``.
        optimizers: ``"generator"``, ``"discriminator"`` and, in +R modes, ``"registration"``
            (Adam, fused where torch has a fused kernel for the parameters' device and dtype).
        schedulers: one ``LambdaLR`` per optimizer (constant unless ``total_steps`` is given).
        step: number of completed training steps.
        gradient_hook: optional callable applied to each iterable of parameters after its
            backward and before its optimizer step (the training engine uses it to all-reduce
            gradients across processes).
    """

    def __init__(
        self,
        backbone: TranslationBackbone,
        *,
        mode: str,
        registration: nn.Module | None = None,
        correction_weight: float = 20.0,
        smoothness_weight: float = 10.0,
        centering_weight: float = 0.0,
        initial_alignment: str | None = None,
        learning_rate: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        replay_buffer_size: int = 0,
        total_steps: int | None = None,
        decay_start: int | None = None,
        amp: bool = False,
        ema_decay: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_choice(mode, "mode", MODES)
        ema_decay = as_scalar(ema_decay)
        if not is_real(ema_decay) or not 0 <= ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1) (0: off), got {ema_decay!r}")
        if mode.startswith("pix2pix") and not isinstance(backbone, Pix2Pix):
            raise ValueError(
                f"mode {mode!r} needs a Pix2Pix backbone (a conditional discriminator), got "
                f"{type(backbone).__name__}"
            )
        if mode.endswith("+r") != (registration is not None):
            raise ValueError(
                f"mode {mode!r} {'needs' if mode.endswith('+r') else 'takes no'} registration network"
            )
        self.mode = mode
        self.method = backbone.method
        self.backbone = backbone
        self.registration = registration
        self.correction_weight = check_positive(
            correction_weight, "correction_weight", strict=False
        )
        self.smoothness_weight = check_positive(
            smoothness_weight, "smoothness_weight", strict=False
        )
        check_positive(centering_weight, "centering_weight", strict=False)
        self.centering_weight = float(centering_weight)
        check_choice(initial_alignment, "initial_alignment", (None, *INITIAL_ALIGNMENTS))
        if initial_alignment is not None and registration is None:
            raise ValueError(
                f"initial_alignment={initial_alignment!r} needs an R, but mode {mode!r} has none"
            )
        self.initial_alignment = initial_alignment
        # Only built when used, so default models keep the paper's state-dict keys.
        self.centering = (
            CenteredCorrection(spatial_dims=2)
            if registration is not None and centering_weight > 0
            else None
        )
        self.amp = bool(amp)
        self.ema_decay = float(ema_decay)
        # Only built when used, so default models keep their state-dict keys.
        self.generator_average: AveragedModel | None = None
        if self.ema_decay > 0:
            self.generator_average = AveragedModel(
                nn.ModuleDict(backbone.generators()),
                multi_avg_fn=get_ema_multi_avg_fn(self.ema_decay),
                use_buffers=True,
            ).requires_grad_(False)
        self.step = 0
        self.gradient_hook: Callable[[Iterable[nn.Parameter]], None] | None = None
        self._replay_size = check_count(replay_buffer_size, "replay_buffer_size")
        self._seed = int(seed)
        self.replay_buffers: dict[str, ReplayBuffer] = {}

        def adam(modules: Iterable[nn.Module]) -> torch.optim.Adam:
            # Fused where torch has a kernel for the parameters: one pass over each tensor
            # instead of about ten (CPU, 16 M parameters of the paper's G, D and R: 21 ms instead
            # of 67-73 ms per step). torch < 2.4 refuses fused=True on the CPU: the loop then.
            params = [p for m in modules for p in m.parameters() if p.requires_grad]
            try:
                return torch.optim.Adam(params, lr=learning_rate, betas=betas, fused=True)
            except (RuntimeError, ValueError):
                return torch.optim.Adam(params, lr=learning_rate, betas=betas)

        self.optimizers: dict[str, torch.optim.Optimizer] = {
            "generator": adam(backbone.generators().values()),
            "discriminator": adam(backbone.discriminators().values()),
        }
        if registration is not None:
            self.optimizers["registration"] = adam([registration])
        factor = _linear_decay(total_steps, decay_start)
        self.schedulers = {
            name: torch.optim.lr_scheduler.LambdaLR(opt, factor)
            for name, opt in self.optimizers.items()
        }

    # ------------------------------------------------------------------ views
    @property
    def networks(self) -> dict[str, nn.Module]:
        """Exactly the networks this mode trains, by name."""
        nets = {**self.backbone.generators(), **self.backbone.discriminators()}
        if self.registration is not None:
            nets["registration"] = self.registration
        return nets

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def parameter_count(self, which: str = "all") -> int:
        """Trainable parameters: ``"all"``, ``"generator"``, ``"discriminator"`` or ``"registration"``."""
        check_choice(which, "which", ("all", "generator", "discriminator", "registration"))
        groups = {
            "generator": self.backbone.generators().values(),
            "discriminator": self.backbone.discriminators().values(),
            "registration": [self.registration] if self.registration is not None else [],
        }
        chosen = [m for g, ms in groups.items() if which in ("all", g) for m in ms]
        unique = {id(p): p for m in chosen for p in m.parameters() if p.requires_grad}
        return sum(p.numel() for p in unique.values())

    def compile(self, **options: Any) -> TranslationModel:  # type: ignore[override]
        """``torch.compile`` every network this mode trains, in place; returns ``self``.

        Each generator and discriminator gets ``nn.Module.compile``; R is compiled through
        ``decompose`` when it has one (the call :meth:`train_step` makes), else its ``forward``.
        Weights, state dicts and checkpoints are unchanged. The first steps are slow while the
        graphs compile (minutes on a CPU; needs a C++ compiler there). ``options`` go to
        ``torch.compile`` (e.g. ``mode="max-autotune"``). Measured effect:
        ``docs/results/step_speed.md``.

        Example:
            >>> model = build_model("cyclegan", "nc+r", base_channels=8, num_residual_blocks=1,
            ...                     registration={"channels": (8, 16, 16)})
            >>> model.compile() is model
            True
        """
        for name, net in self.networks.items():
            decompose = getattr(net, "decompose", None)
            if name == "registration" and callable(decompose):
                net.decompose = torch.compile(decompose, **options)  # type: ignore[method-assign]
            else:
                net.compile(**options)
        return self

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    @property
    def input_dtype(self) -> torch.dtype:
        """The dtype inputs are cast to: the networks' (float32 unless the model was converted,
        e.g. ``model.double()``; ``amp=True`` keeps float32 weights)."""
        return next(self.backbone.parameters()).dtype

    def _check_pair(self, source: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        check_float(source, "source")
        check_float(target, "target")
        check_rank(source, "source", (4,), "(B, C_in, H, W)")
        check_rank(target, "target", (4,), "(B, C_out, H, W)")
        check_same_batch_and_spatial(source, target, "source", "target")
        if source.shape[0] == 0:
            raise ValueError(
                f"source and target must hold at least one image, got {tuple(source.shape)}"
            )
        device, dtype = self.device, self.input_dtype
        return source.to(device, dtype), target.to(device, dtype)

    @staticmethod
    def _check_mask(mask: Tensor | None, target: Tensor) -> None:
        """Raise unless ``mask`` (if given) broadcasts to ``target`` (it weights the correction
        loss; modes without R do not use it)."""
        if mask is None:
            return
        check_tensor(mask, "mask")
        check_same_device(target=target, mask=mask)
        if mask.ndim != target.ndim or any(
            m not in (1, t) for m, t in zip(mask.shape, target.shape, strict=True)
        ):
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} must broadcast to target "
                f"{tuple(target.shape)} (same rank, each size 1 or the target's)"
            )

    def _sync(self, name: str) -> None:
        if self.gradient_hook is not None:
            params = [p for group in self.optimizers[name].param_groups for p in group["params"]]
            self.gradient_hook(params)

    # ------------------------------------------------------------------ training
    def register(
        self, translated: Tensor, target: Tensor, *, source: Tensor | None = None
    ) -> RegistrationFields:
        """Fields of R that warp ``translated`` onto ``target`` (+R modes only).

        ``source`` (what was translated) is needed with ``initial_alignment="source"``.
        """
        if self.registration is None:
            raise ValueError(f"mode {self.mode!r} has no registration network")
        return run_registration(
            self.registration,
            translated,
            target,
            initial_alignment=self.initial_alignment,
            source=source,
        )

    def _generator_losses(
        self, source: Tensor, target: Tensor, mask: Tensor | None
    ) -> tuple[GeneratorOutput, dict[str, Tensor], tuple[Tensor, Tensor]]:
        """The backbone's weighted generator terms plus, in +R modes, correction and smoothness.

        Also returns the real pair ``(condition, image)`` the discriminator judges: the source and
        the target, or in mode ``"pix2pix+r"`` the source and the target pulled back into the
        source's frame by the inverse of R's field.
        """
        real_pair = (source, target)
        with self._autocast():
            if self.mode == "pix2pix+r":
                # Pix2Pix's generator side without its L1 term: D judges (x, G(x)) as it is.
                backbone = cast(Pix2Pix, self.backbone)
                backbone.check_pair(source, target)
                translated = backbone.translate(source)
                out = GeneratorOutput(
                    translated=translated,
                    losses={"adversarial": backbone.adversarial(source, translated)},
                    fakes=backbone.judged_fakes(source, translated),
                )
            else:
                out = self.backbone.generator_forward(source, target)
            losses = {name: value.float() for name, value in out.losses.items()}
            if self.registration is not None:
                fields = self.register(out.translated, target, source=source)
                translated = out.translated.float()
                registered = warp(translated, fields.displacement.float())
                if self.mode == "pix2pix+r":
                    # The real pair in the source's frame: (x, ỹ ∘ φ⁻¹), φ R's field (detached:
                    # R learns from Eq. 7 and 8 only). Only the real image is resampled after
                    # the noise, which G can match; judging (x∘φ, G(x)∘φ) instead resamples
                    # the fake once more than ỹ, which a conditional D sees (docs/training.md).
                    inverse = invert_displacement(fields.displacement.detach().float())
                    real_pair = (source, warp(target, inverse))
                losses["correction"] = self.correction_weight * correction_loss(
                    registered, target, mask
                )
                losses["smoothness"] = self.smoothness_weight * smoothness_loss(
                    fields.residual.float()
                )
                if self.centering is not None:
                    # G matched to the target under R's field minus its persistent shift,
                    # tracked over the target's foreground (or the given mask).
                    weights = target_foreground(target, mask)
                    losses["centering"] = self.centering_weight * self.centering(
                        translated, target, fields.displacement.float(), weights, mask
                    )
        return out, losses, real_pair

    def train_step(
        self, source: Tensor, target: Tensor, mask: Tensor | None = None
    ) -> dict[str, float]:
        """One training step of this mode on a batch; returns every loss term as a float.

        Args:
            source: ``(B, C_in, H, W)`` in ``[-1, 1]``, finite.
            target: ``(B, C_out, H, W)`` in ``[-1, 1]``, possibly misaligned, finite.
            mask: optional weights for the correction loss: ``target``'s rank, each size 1 or
                ``target``'s (e.g. ``(B, 1, H, W)``); only the +R modes have that loss, the
                others check it and ignore it.

        Returns:
            Weighted terms (``adversarial``, ``cycle``, ``correction``, ``smoothness``, ... and
            the discriminator's, prefixed ``D/``), plus ``G/total`` and ``D/total``.

        Raises:
            ValueError: a NaN or infinite value in ``source`` or ``target`` (checked before any
                update: one such pixel would turn every network's weights into NaN).
        """
        source, target = self._check_pair(source, target)
        check_finite(source, "source")
        check_finite(target, "target")
        self._check_mask(mask, target)
        self.train()
        discriminators = list(self.backbone.discriminators().values())
        generator_side = ["generator"] + (["registration"] if self.registration else [])
        for name in generator_side:
            self.optimizers[name].zero_grad(set_to_none=True)
        # D stays out of the generator backward (no wasted gradients); its flags come back after.
        with frozen(discriminators):
            out, losses, real_pair = self._generator_losses(source, target, mask)
            generator_total = torch.stack(list(losses.values())).sum()
            generator_total.backward()
        for name in generator_side:
            self._sync(name)
            self.optimizers[name].step()
        if self.generator_average is not None:
            self.generator_average.update_parameters(nn.ModuleDict(self.backbone.generators()))

        self.optimizers["discriminator"].zero_grad(set_to_none=True)
        fakes = {name: self._replay(name, image) for name, image in out.fakes.items()}
        with self._autocast():
            d_losses = self.backbone.discriminator_losses(*real_pair, fakes)
        d_losses = {name: value.float() for name, value in d_losses.items()}
        discriminator_total = torch.stack(list(d_losses.values())).sum()
        discriminator_total.backward()
        self._sync("discriminator")
        self.optimizers["discriminator"].step()

        for scheduler in self.schedulers.values():
            scheduler.step()
        self.step += 1
        result = {name: float(v.detach()) for name, v in losses.items()}
        result.update({f"D/{name}": float(v.detach()) for name, v in d_losses.items()})
        result["G/total"] = float(generator_total.detach())
        result["D/total"] = float(discriminator_total.detach())
        return result

    def _replay(self, name: str, images: Tensor) -> Tensor:
        if name not in self.replay_buffers:
            seed = self._seed + 1 + len(self.replay_buffers)
            self.replay_buffers[name] = ReplayBuffer(self._replay_size, seed=seed)
        return self.replay_buffers[name].query(images.detach())

    @torch.no_grad()
    def translate(self, source: Tensor, *, average: bool = True) -> Tensor:
        """``G(x)`` in evaluation mode (the registration net is only for training).

        Args:
            source: ``(B, C_in, H, W)`` in ``[-1, 1]``.
            average: with ``ema_decay > 0``, translate with the generators' averaged weights
                (default) or, ``False``, with the trained weights themselves. Ignored otherwise.

        Returns:
            ``(B, C_out, H, W)`` on the model's device, float32 (float64 for a model converted
            with ``.double()``).
        """
        check_float(source, "source")
        check_rank(source, "source", (4,), "(B, C_in, H, W)")
        was_training = self.training
        self.eval()
        try:
            source = source.to(self.device, self.input_dtype)
            with self._autocast():
                if average and self.generator_average is not None:
                    translated = functional_call(
                        _Translator(self.backbone), self._averaged_weights(), (source,)
                    )
                else:
                    translated = self.backbone.translate(source)
        finally:
            self.train(was_training)
        return translated.to(torch.promote_types(translated.dtype, torch.float32))

    def _averaged_weights(self) -> dict[str, Tensor]:
        """The generators' averaged parameters and buffers, named as in ``_Translator``."""
        assert self.generator_average is not None
        paths = {id(module): name for name, module in self.backbone.named_modules()}
        averaged = self.generator_average.module
        weights = {}
        for key, generator in self.backbone.generators().items():
            prefix = "backbone." + paths[id(generator)]
            for name, tensor in (*averaged[key].named_parameters(), *averaged[key].named_buffers()):
                weights[f"{prefix}.{name}"] = tensor
        return weights

    # ------------------------------------------------------------------ checkpoints
    def training_state(self) -> dict[str, Any]:
        """Everything besides the network weights that a resumed run needs."""
        return {
            "step": self.step,
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "replay_buffers": {k: b.state_dict() for k, b in self.replay_buffers.items()},
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`training_state` (after ``load_state_dict`` of the weights)."""
        self.step = int(state["step"])
        for key, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][key])
        for key, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][key])
        self.replay_buffers = {}
        for key, buffer_state in state["replay_buffers"].items():
            buffer = ReplayBuffer(self._replay_size)
            buffer.load_state_dict(buffer_state, self.device)
            self.replay_buffers[key] = buffer


class _Translator(nn.Module):
    """``backbone.translate`` as a module's forward (for ``functional_call`` with other weights)."""

    def __init__(self, backbone: TranslationBackbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, source: Tensor) -> Tensor:
        return self.backbone.translate(source)


def build_model(
    method: str,
    mode: str,
    *,
    in_channels: int = 1,
    out_channels: int = 1,
    image_size: Sequence[int] | None = None,
    device: str | torch.device | None = None,
    amp: bool = False,
    gan_mode: str = "lsgan",
    learning_rate: float = 1e-4,
    betas: tuple[float, float] = (0.5, 0.999),
    correction_weight: float = 20.0,
    smoothness_weight: float = 10.0,
    centering_weight: float = 0.0,
    initial_alignment: str | None = None,
    registration: dict[str, Any] | None = None,
    replay_buffer_size: int = 0,
    total_steps: int | None = None,
    decay_start: int | None = None,
    ema_decay: float = 0.0,
    seed: int | None = None,
    **backbone_options: Any,
) -> TranslationModel:
    """Build a translation method in one of the paper's modes.

    Args:
        method: one of :data:`regcorrect.backbones.METHODS` — ``"cyclegan"``, ``"munit"``,
            ``"unit"``, ``"nicegan"``.
        mode: ``"c"`` (the method's own cycle/reconstruction losses, two generators and two
            discriminators), ``"c+r"`` (C plus R on the X→Y direction), ``"nc"`` (one generator,
            one discriminator, adversarial loss only), ``"nc+r"`` (RegGAN), ``"pix2pix"``
            (``method="cyclegan"`` only: L1 weight 100 + conditional adversarial loss), or
            ``"pix2pix+r"`` (ours, ``method="cyclegan"`` only: Pix2Pix's conditional
            discriminator with R — it judges ``(x, G(x))`` against ``(x, ỹ ∘ φ⁻¹)``, both pairs
            in the source's frame, with ``φ⁻¹`` the inverse of R's field
            (:func:`~regcorrect.registration.invert_displacement`), detached there; the
            correction loss replaces the L1 term, whose ``l1_weight`` is then unused;
            ``docs/training.md``).
        in_channels, out_channels: image channels of the source and target domains.
        image_size: ``(H, W)`` of the training images, if known: R is then built with exactly the
            levels that size uses (no unused parameters).
        device: where to place the networks (default CPU).
        amp: run the networks under bfloat16 autocast; warp, losses and optimizer stay float32.
        gan_mode: ``"lsgan"`` (paper), ``"vanilla"`` or ``"hinge"``.
        learning_rate, betas: Adam settings (paper: 1e-4, (0.5, 0.999)).
        correction_weight, smoothness_weight: +R loss weights (paper: 20, 10).
        centering_weight: weight of the centred correction loss in +R modes
            (:class:`~regcorrect.losses.CenteredCorrection`, ours): ``G`` is also matched to the
            target under R's field minus its running mean over the target's foreground, so a
            persistent shift of R's field cannot hide a drift of ``G``. 0 (default, the paper)
            turns it off; the noise sweep uses 10 with ``registration={"affine": True}``
            (``docs/results/noise_sweep.md``).
        initial_alignment: +R modes: ``None`` (default, the paper: R's field starts at the
            identity) or ``"source"``: it starts from the affine that moves the *source's*
            foreground (the outline of the anatomy, whatever its contrast) onto the target's
            (:func:`~regcorrect.registration.moment_alignment`, ``weights="foreground"``,
            ``refine_steps=5``; no learning); R learns the rest (``registration={"passes": 0}``:
            nothing). ``G(x)`` shares the source's geometry, so nothing ``G`` does can shift
            this start, and ``G`` cannot drift with R. For misalignments that are mostly global
            (the paper's noise; rigid motion between scans) of images with a background at
            ``-1``; see ``docs/training.md``.
        registration: keyword arguments of :class:`~regcorrect.registration.RegUNet`; default
            ``{}``: the paper's R (adaptive depth, whole-image receptive field). ``{"affine":
            True}`` adds a global affine head that absorbs large (mostly affine) misalignments
            at once; in short runs on well-aligned data it can drift into a constant sub-pixel
            shift that the generator then exploits (see ``docs/training.md``), so it is opt-in;
            pair it with ``centering_weight`` (the noise sweep uses 10), which removes that
            incentive.
        replay_buffer_size: discriminator history size (default 0 = off; the official CycleGAN
            code and ``TrainingConfig`` use 50).
        total_steps, decay_start: linear learning-rate decay to 0 from ``decay_start`` (default
            ``total_steps // 2``) to ``total_steps``; ``None`` = constant.
        ema_decay: keep an exponential moving average of the generators' weights with this
            decay (e.g. 0.999; 0, the default, keeps none) and translate with it: a standard GAN
            practice that smooths the step-to-step swings of the generator.
        seed: seeds the network initialisation (``torch.manual_seed``) and the replay buffers.
        **backbone_options: passed to the backbone (widths, depths, the method's own loss
            weights, e.g. ``base_channels=16``, ``cycle_weight=10``, ``adversarial_weight=1``).

    Returns:
        A :class:`TranslationModel` with ``train_step``, ``translate``, ``networks``,
        ``state_dict`` / ``load_state_dict`` and ``training_state`` / ``load_training_state``.

    Example:
        >>> model = build_model("cyclegan", "nc+r", base_channels=8, num_residual_blocks=1,
        ...                     registration={"channels": (8, 16, 16, 16)}, seed=0)
        >>> sorted(model.networks)
        ['discriminator', 'generator', 'registration']
        >>> losses = model.train_step(torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1)
        >>> model.translate(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 1, 32, 32])
    """
    method = method.lower() if isinstance(method, str) else method
    mode = mode.lower() if isinstance(mode, str) else mode
    check_choice(method, "method", tuple(METHODS))
    check_choice(mode, "mode", MODES)
    if device is not None:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"device must name a torch device, got {device!r}: {error}") from None
    if seed is not None:
        torch.manual_seed(seed)
    common = dict(in_channels=in_channels, out_channels=out_channels, gan_mode=gan_mode)
    if mode.startswith("pix2pix"):
        if method != "cyclegan":
            raise ValueError(f"mode {mode!r} uses the CycleGAN backbone; got method {method!r}")
        backbone: TranslationBackbone = Pix2Pix(**common, **backbone_options)
    else:
        cyclic = mode in ("c", "c+r")
        backbone = METHODS[method](cyclic=cyclic, **common, **backbone_options)
    reg_net = None
    if mode.endswith("+r"):
        options = dict(registration or {})
        if image_size is not None:
            options.setdefault("image_size", tuple(image_size))
        reg_net = RegUNet(spatial_dims=2, in_channels=2 * out_channels, **options)
    elif registration is not None and len(registration) > 0:
        raise ValueError(f"registration options were given, but mode {mode!r} has no R")
    model = TranslationModel(
        backbone,
        mode=mode,
        registration=reg_net,
        correction_weight=correction_weight,
        smoothness_weight=smoothness_weight,
        centering_weight=centering_weight,
        initial_alignment=initial_alignment,
        learning_rate=learning_rate,
        betas=betas,
        replay_buffer_size=replay_buffer_size,
        total_steps=total_steps,
        decay_start=decay_start,
        amp=amp,
        ema_decay=ema_decay,
        seed=0 if seed is None else seed,
    )
    if device is not None:
        model.to(device)
        # Optimizers were built before the move; their (empty) state follows the parameters.
    return model
