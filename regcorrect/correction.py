"""``RegistrationCorrection``: wrap any generator with RegGAN's registration loss correction.

RegGAN (Kong et al., NeurIPS 2021) treats a misaligned target ``ỹ`` as a noisy label and lets a
registration network ``R`` model the noise: the generator's translation ``G(x)`` is warped onto
``ỹ`` by the field ``R(G(x), ỹ)`` before the L1 loss (Eq. 7), the field is kept smooth (Eq. 8),
and the adversarial loss is added (Eq. 9). Gradients reach ``G`` through the warp, so ``G``
learns the translation while ``R`` absorbs the misalignment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._checks import (
    check_choice,
    check_finite,
    check_float,
    check_positive,
    check_rank,
    check_same_batch_and_spatial,
    check_same_device,
    check_tensor,
)
from .losses.adversarial import GAN_MODES, discriminator_loss, generator_loss
from .losses.centering import CenteredCorrection, target_foreground
from .losses.correction import correction_loss
from .losses.smoothness import smoothness_loss
from .registration.alignment import moment_alignment
from .registration.fields import affine_to_displacement, compose
from .registration.regunet import RegistrationFields, RegUNet
from .registration.warp import PADDING_MODES, warp

__all__ = [
    "RegistrationCorrection",
    "CorrectionOutput",
    "run_registration",
    "frozen",
    "source_alignment",
    "INITIAL_ALIGNMENTS",
]

#: Where R's field may start (``initial_alignment=``; ``None``: at the identity, the paper).
#: ``"source"``: at the affine that moves the *source's* foreground onto the target's.
INITIAL_ALIGNMENTS = ("source",)

#: Levenberg–Marquardt steps that refine the source's foreground alignment
#: (``moment_alignment(..., refine_steps=...)``): 0.26 → 0.08 px on level-5 T1→T2 slices.
SOURCE_REFINE_STEPS = 5


@dataclass
class CorrectionOutput:
    """Result of :meth:`RegistrationCorrection.forward`.

    Attributes:
        translated: ``G(x)``, ``(B, C, *spatial)``.
        registered: ``G(x) ∘ R(G(x), ỹ)``, the translation warped onto the target.
        displacement: the field ``R(G(x), ỹ)``, ``(B, N, *spatial)`` in pixels
            (``docs/conventions.md``).
        residual: the part of the field the smoothness loss penalises (the dense residual of an
            affine+dense network, else ``displacement``).
        losses: weighted terms ``{"correction": λ_corr · L_corr, "smoothness": λ_smooth · L_smooth}``.
        total: the sum of ``losses`` (a scalar to call ``backward`` on).
    """

    translated: Tensor
    registered: Tensor
    displacement: Tensor
    residual: Tensor
    losses: dict[str, Tensor]
    total: Tensor


def _as_fields(output: object) -> RegistrationFields:
    if isinstance(output, RegistrationFields):
        return output
    if isinstance(output, Tensor):
        return RegistrationFields(displacement=output, residual=output)
    raise TypeError(
        "reg_net must return a displacement tensor (B, N, *spatial) or RegistrationFields, got "
        f"{type(output).__name__}"
    )


@contextmanager
def frozen(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Turn off ``requires_grad`` of every parameter of ``modules`` inside the block.

    Used to keep a discriminator out of the generator's backward pass; each parameter gets its
    own previous flag back afterwards (parameters a user froze stay frozen), also on error.
    """
    params = [p for module in modules for p in module.parameters()]
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


def check_source(source: Tensor, target: Tensor) -> None:
    """Raise unless ``source`` is a float tensor with ``target``'s rank, batch and spatial size."""
    check_float(source, "source")
    check_rank(source, "source", (target.ndim,), f"with the rank of target {tuple(target.shape)}")
    check_same_device(source=source, target=target)
    check_same_batch_and_spatial(source, target, "source", "target")


def source_alignment(source: Tensor, target: Tensor) -> Tensor:
    """Field ``(B, N, *spatial)`` of the affine that moves ``source``'s foreground onto
    ``target``'s: :func:`~regcorrect.registration.moment_alignment` with foreground weights (the
    anatomy's outline, whatever the two contrasts) and :data:`SOURCE_REFINE_STEPS` refinement
    steps (5); no gradient, float32 or float64. On T1→T2 slices of the paper's noise level 5:
    0.08 px mean end-point error in the brain (0.26 px without the refinement)."""
    check_source(source, target)
    matrix = moment_alignment(
        source, target, weights="foreground", refine_steps=SOURCE_REFINE_STEPS
    )
    return affine_to_displacement(matrix, tuple(target.shape[2:]))


def run_registration(
    reg_net: nn.Module,
    moving: Tensor,
    fixed: Tensor,
    *,
    initial_alignment: str | None = None,
    source: Tensor | None = None,
) -> RegistrationFields:
    """Run ``reg_net`` on ``cat([moving, fixed], dim=1)`` and return its fields.

    Networks with a ``decompose`` method (:class:`~regcorrect.registration.RegUNet`) give the
    full field and its dense residual; any other network's tensor output is both.

    With ``initial_alignment="source"`` the field starts from the affine ``S`` that moves
    the foreground of ``source`` (the generator's input, whose geometry ``moving = G(source)``
    shares) onto ``fixed``'s: ``reg_net`` sees ``cat([moving ∘ S, fixed])`` and the returned
    displacement is ``compose(R's field, S)``; the residual (and ``affine``) stay R's own.
    ``S`` needs no learning and nothing ``G`` does can move it, so ``G`` keeps its input's
    geometry (see ``docs/training.md``). A :class:`~regcorrect.registration.RegUNet` takes
    ``S`` as its ``initial`` field, so each of its passes warps the original ``moving`` once
    (and with ``passes=0`` the field is ``S`` without any warp); any other network is given
    ``moving ∘ S``.
    """
    check_choice(initial_alignment, "initial_alignment", (None, *INITIAL_ALIGNMENTS))
    if initial_alignment is not None:
        if source is None:
            raise ValueError(
                "source must be given: this model's registration starts from the source's "
                "alignment onto the target (initial_alignment='source')"
            )
        start = source_alignment(source, fixed)
        if isinstance(reg_net, RegUNet):
            return reg_net.decompose(torch.cat([moving, fixed], dim=1), initial=start)
        fields = run_registration(reg_net, warp(moving, start), fixed)
        return RegistrationFields(
            displacement=compose(fields.displacement, start.to(fields.displacement.dtype)),
            residual=fields.residual,
            affine=fields.affine,
        )
    x = torch.cat([moving, fixed], dim=1)
    decompose = getattr(reg_net, "decompose", None)
    return _as_fields(decompose(x) if callable(decompose) else reg_net(x))


class RegistrationCorrection(nn.Module):
    """A generator followed by a registration network that corrects misaligned targets.

    Args:
        generator: any ``nn.Module`` or callable ``x -> ŷ`` (``(B, C_in, *spatial) ->
            (B, C_out, *spatial)``); may be ``None`` if translations are always passed to
            :meth:`forward` (e.g. MUNIT / NICE-GAN, where ``G(x)`` is not one call).
        reg_net: registration network taking ``cat([translated, target], dim=1)`` and returning a
            displacement field ``(B, N, *spatial)`` in pixels (e.g.
            :class:`~regcorrect.registration.RegUNet`). Networks with a ``decompose`` method
            (``RegUNet``) have the smoothness loss applied to their dense residual only.
        correction_weight: λ of the correction loss (paper: 20).
        smoothness_weight: λ of the smoothness loss (paper: 10).
        smoothness_penalty: ``"l2"`` (paper) or ``"l1"``.
        padding_mode: padding of the warp (``"border"``).
        centering_weight: weight of the centred correction loss
            (:class:`~regcorrect.losses.CenteredCorrection`: ``G`` also matched to the target
            under R's field minus its running mean, so that ``G`` does not drift while R hides
            it); 0 (default, the paper) turns it off. The running mean is taken over the
            target's foreground (``mask``, else pixels ``!= -1``) and needs R's
            ``spatial_dims`` (read from ``reg_net``, 2 if it has none).
        initial_alignment: ``None`` (default, the paper: R's field starts at the identity) or
            ``"source"``: R starts from the affine that moves the *source's* foreground onto
            the target's (:func:`~regcorrect.registration.moment_alignment` with
            ``weights="foreground"`` and ``refine_steps=5``) and learns what is left. For
            misalignments that are mostly global (the paper's noise, rigid motion between
            scans); it needs the source in :meth:`forward` and :meth:`register` (see
            :func:`run_registration`).

    Example:
        >>> from regcorrect import RegistrationCorrection, RegUNet
        >>> my_generator = torch.nn.Conv2d(1, 1, 3, padding=1)
        >>> source, target = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
        >>> model = RegistrationCorrection(my_generator, RegUNet(spatial_dims=2, in_channels=2))
        >>> out = model(source, target)
        >>> out.total.backward()
        >>> sorted(out.losses)
        ['correction', 'smoothness']
    """

    def __init__(
        self,
        generator: nn.Module | Callable[[Tensor], Tensor] | None,
        reg_net: nn.Module,
        *,
        correction_weight: float = 20.0,
        smoothness_weight: float = 10.0,
        smoothness_penalty: str = "l2",
        padding_mode: str = "border",
        centering_weight: float = 0.0,
        initial_alignment: str | None = None,
    ) -> None:
        super().__init__()
        if generator is not None and not callable(generator):
            raise TypeError(
                f"generator must be an nn.Module or a callable, got {type(generator).__name__}"
            )
        if not callable(reg_net):
            raise TypeError(f"reg_net must be an nn.Module, got {type(reg_net).__name__}")
        check_positive(correction_weight, "correction_weight", strict=False)
        check_positive(smoothness_weight, "smoothness_weight", strict=False)
        check_choice(smoothness_penalty, "smoothness_penalty", ("l2", "l1"))
        check_choice(padding_mode, "padding_mode", PADDING_MODES)
        check_positive(centering_weight, "centering_weight", strict=False)
        check_choice(initial_alignment, "initial_alignment", (None, *INITIAL_ALIGNMENTS))
        self.initial_alignment = initial_alignment
        self.generator = generator
        self.reg_net = reg_net
        self.correction_weight = float(correction_weight)
        self.smoothness_weight = float(smoothness_weight)
        self.smoothness_penalty = smoothness_penalty
        self.padding_mode = padding_mode
        self.centering_weight = float(centering_weight)
        # Only built when used, so default wrappers keep their state-dict keys.
        self.centering = (
            CenteredCorrection(getattr(reg_net, "spatial_dims", 2), padding_mode=padding_mode)
            if centering_weight > 0
            else None
        )

    def register(
        self, moving: Tensor, fixed: Tensor, *, source: Tensor | None = None
    ) -> RegistrationFields:
        """Run ``reg_net`` on ``cat([moving, fixed], dim=1)``; return the field and its parts.

        ``source`` (the generator's input) is needed with ``initial_alignment="source"``.
        """
        return run_registration(
            self.reg_net,
            moving,
            fixed,
            initial_alignment=self.initial_alignment,
            source=source,
        )

    def forward(
        self,
        source: Tensor | None,
        target: Tensor,
        *,
        translated: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> CorrectionOutput:
        """Translate, register onto the target, and compute Eq. 7 and Eq. 8.

        Args:
            source: ``x``, ``(B, C_in, H, W)`` (or 3D); not passed to the generator when
                ``translated`` is given (then ``None`` is allowed, unless
                ``initial_alignment="source"``, which aligns it).
            target: the misaligned target ``ỹ``, ``(B, C_out, H, W)``.
            translated: an already computed ``G(x)`` (keeps its graph), instead of calling the
                generator.
            mask: optional weights for the correction loss, broadcastable to ``target``.

        Returns:
            :class:`CorrectionOutput` with weighted losses and their ``total``.
        """
        check_float(target, "target")
        check_rank(target, "target", (4, 5), "(B, C, H, W) or (B, C, D, H, W)")
        if translated is None:
            if self.generator is None:
                raise ValueError("translated must be given when the model has no generator")
            check_source(source, target)
            translated = self.generator(source)
        check_float(translated, "translated")
        check_same_device(translated=translated, target=target)
        if translated.shape != target.shape:
            raise ValueError(
                f"translated (the generator's output) must have the target's shape "
                f"{tuple(target.shape)}, got {tuple(translated.shape)}"
            )
        fields = self.register(translated, target, source=source)
        expected = (target.shape[0], target.ndim - 2, *target.shape[2:])
        if tuple(fields.displacement.shape) != expected:
            raise ValueError(
                f"reg_net must return a displacement of shape {expected}, got "
                f"{tuple(fields.displacement.shape)}"
            )
        registered = warp(translated, fields.displacement, padding_mode=self.padding_mode)
        losses = {
            "correction": self.correction_weight * correction_loss(registered, target, mask),
            "smoothness": self.smoothness_weight
            * smoothness_loss(fields.residual, self.smoothness_penalty),
        }
        total = losses["correction"] + losses["smoothness"]
        if self.centering is not None:
            weights = target_foreground(target, mask)
            losses["centering"] = self.centering_weight * self.centering(
                translated, target, fields.displacement, weights, mask
            )
            total = total + losses["centering"]
        return CorrectionOutput(
            translated=translated,
            registered=registered,
            displacement=fields.displacement,
            residual=fields.residual,
            losses=losses,
            total=total,
        )

    def training_step(
        self,
        source: Tensor,
        target: Tensor,
        *,
        optimizer_g: torch.optim.Optimizer,
        optimizer_r: torch.optim.Optimizer | None = None,
        discriminator: nn.Module | None = None,
        optimizer_d: torch.optim.Optimizer | None = None,
        gan_mode: str = "lsgan",
        adversarial_weight: float = 1.0,
        mask: Tensor | None = None,
    ) -> dict[str, float]:
        """One RegGAN (NC+R) update, Eq. 9.

        One backward pass of ``λ_corr L_corr + λ_smooth L_smooth + λ_adv L_adv`` into ``G`` and
        ``R`` (``optimizer_g`` and ``optimizer_r`` step), then — if a ``discriminator`` is given —
        one discriminator update on the real target and the *detached* translation (no second
        generator forward).

        Args:
            source: ``x``, ``(B, C_in, H, W)``.
            target: misaligned ``ỹ``, ``(B, C_out, H, W)``.
            optimizer_g: optimizer of the generator (may also hold R's parameters).
            optimizer_r: optimizer of the registration net, if separate.
            discriminator: ``D`` on target-domain images (tensor or list of tensors out).
            optimizer_d: optimizer of ``D`` (required with ``discriminator``).
            gan_mode: ``"lsgan"`` (paper), ``"vanilla"`` or ``"hinge"``.
            adversarial_weight: λ of the adversarial loss (paper: 1).
            mask: optional weights for the correction loss.

        Returns:
            Floats: ``correction``, ``smoothness``, ``adversarial`` and ``discriminator`` (when a
            discriminator is given), and ``total`` (the generator side).

        Raises:
            ValueError: a NaN or infinite value in ``source`` or ``target``, before any update
                (one such pixel would turn the weights of G, R and D into NaN).
        """
        check_choice(gan_mode, "gan_mode", GAN_MODES)
        check_same_device(
            source=check_tensor(source, "source"), target=check_tensor(target, "target")
        )
        check_finite(source, "source")
        check_finite(target, "target")
        if (discriminator is None) != (optimizer_d is None):
            raise ValueError("discriminator and optimizer_d must be given together")
        optimizers = [optimizer_g] + ([optimizer_r] if optimizer_r is not None else [])
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        with frozen([discriminator] if discriminator is not None else []):
            out = self(source, target, mask=mask)
            losses = dict(out.losses)
            if discriminator is not None:
                losses["adversarial"] = adversarial_weight * generator_loss(
                    discriminator(out.translated), gan_mode
                )
            total = torch.stack(list(losses.values())).sum()
            total.backward()
        for optimizer in optimizers:
            optimizer.step()
        result = {name: float(value.detach()) for name, value in losses.items()}
        result["total"] = float(total.detach())
        if discriminator is not None and optimizer_d is not None:
            optimizer_d.zero_grad(set_to_none=True)
            d_loss = discriminator_loss(
                discriminator(target), discriminator(out.translated.detach()), gan_mode
            )
            d_loss.backward()
            optimizer_d.step()
            result["discriminator"] = float(d_loss.detach())
        return result
