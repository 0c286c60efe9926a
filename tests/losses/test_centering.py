"""Tests of the centred correction: weighted mean field, the loss, its running-mean module."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from regcorrect.losses import (
    CenteredCorrection,
    batch_mean_displacement,
    centered_correction_loss,
    correction_loss,
    target_foreground,
)
from regcorrect.registration import warp


def constant_field(batch: int, values: tuple[float, ...], spatial: tuple[int, ...]) -> torch.Tensor:
    field = torch.tensor(values, dtype=torch.float64).view(1, len(values), *([1] * len(spatial)))
    return field.expand(batch, len(values), *spatial).clone()


# ------------------------------------------------------------------ batch_mean_displacement
@given(batch=st.integers(1, 3), size=st.integers(2, 6), seed=st.integers(0, 2**16))
def test_weighted_mean_matches_numpy(batch, size, seed):
    generator = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, 2, size, size + 1, generator=generator, dtype=torch.float64)
    weights = torch.rand(batch, 1, size, size + 1, generator=generator, dtype=torch.float64)
    un, wn = u.numpy(), weights.numpy()
    expected = [(un[:, n] * wn[:, 0]).sum() / wn.sum() for n in range(2)]
    np.testing.assert_allclose(batch_mean_displacement(u, weights).numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(
        batch_mean_displacement(u).numpy(), un.mean(axis=(0, 2, 3)), rtol=1e-10, atol=1e-12
    )


def test_weights_exclude_a_background_that_cancels_the_foreground_shift():
    u = torch.zeros(1, 3, 4, 4, 4)
    u[:, :, :2] = 0.5  # foreground slices shifted by +0.5 voxel
    u[:, :, 2:] = -0.5  # background the other way: plain mean 0
    foreground = torch.zeros(1, 1, 4, 4, 4, dtype=torch.bool)
    foreground[:, :, :2] = True
    assert batch_mean_displacement(u).abs().max() == 0
    torch.testing.assert_close(batch_mean_displacement(u, foreground), torch.full((3,), 0.5))
    broadcast = foreground[..., :1, :1]  # (1, 1, 4, 1, 1)
    torch.testing.assert_close(batch_mean_displacement(u, broadcast), torch.full((3,), 0.5))


def test_all_zero_weights_fall_back_to_the_plain_mean():
    u = torch.randn(2, 2, 4, 4)
    torch.testing.assert_close(
        batch_mean_displacement(u, torch.zeros(2, 1, 4, 4)), u.mean((0, 2, 3))
    )


def test_half_precision_mean_is_float32():
    assert batch_mean_displacement(torch.ones(1, 2, 3, 3, dtype=torch.bfloat16)).dtype == (
        torch.float32
    )


def test_weights_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"weights must be broadcastable to \(1, 1, 4, 4\)"):
        batch_mean_displacement(torch.zeros(1, 2, 4, 4), torch.ones(1, 2, 4, 4))
    with pytest.raises(ValueError, match="weights"):
        batch_mean_displacement(torch.zeros(1, 2, 4, 4), torch.ones(4, 4))
    with pytest.raises(TypeError, match="weights"):
        batch_mean_displacement(torch.zeros(1, 2, 4, 4), [1.0])


# ------------------------------------------------------------------ centered_correction_loss
@given(
    shift=st.tuples(st.integers(-2, 2), st.integers(-2, 2)),
    offset=st.tuples(st.integers(-2, 2), st.integers(-2, 2)),
    seed=st.integers(0, 2**16),
)
def test_integer_shifts_against_numpy_roll(shift, offset, seed):
    """Field s minus offset o moves by the integer s - o: L1 against np.roll in the interior."""
    generator = torch.Generator().manual_seed(seed)
    translated = torch.rand(2, 1, 12, 11, generator=generator, dtype=torch.float64)
    target = torch.rand(2, 1, 12, 11, generator=generator, dtype=torch.float64)
    field = constant_field(2, shift, (12, 11))
    interior = torch.zeros(1, 1, 12, 11, dtype=torch.float64)
    interior[..., 4:-4, 4:-4] = 1.0
    value = centered_correction_loss(
        translated, target, field, torch.tensor(offset, dtype=torch.float64), interior
    )
    dy, dx = shift[0] - offset[0], shift[1] - offset[1]
    # warped[p] = translated[p + (dy, dx)]  <=>  roll by (-dy, -dx)
    moved = np.roll(translated.numpy(), (-dy, -dx), axis=(2, 3))
    expected = np.abs(moved - target.numpy())[..., 4:-4, 4:-4].mean()
    assert float(value) == pytest.approx(expected, rel=1e-10)


def test_zero_offset_is_the_correction_loss_of_the_warped_image():
    translated, target = torch.rand(2, 1, 9, 10), torch.rand(2, 1, 9, 10)
    field = torch.randn(2, 2, 9, 10)
    expected = correction_loss(warp(translated, field), target)
    torch.testing.assert_close(
        centered_correction_loss(translated, target, field, torch.zeros(2)), expected
    )


def test_gradient_reaches_the_translation_only():
    translated = torch.rand(1, 1, 7, 8, dtype=torch.float64, requires_grad=True)
    target = torch.rand(1, 1, 7, 8, dtype=torch.float64)
    field = (torch.randn(1, 2, 7, 8, dtype=torch.float64) * 0.7).requires_grad_()
    offset = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    centered_correction_loss(translated, target, field, offset).backward()
    assert translated.grad is not None and translated.grad.abs().sum() > 0
    assert field.grad is None and offset.grad is None
    assert torch.autograd.gradcheck(
        lambda image: centered_correction_loss(image, target, field, offset), (translated,)
    )


def test_loss_errors_name_the_argument():
    image = torch.rand(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"offset must have shape \(2,\).*\(3,\)"):
        centered_correction_loss(image, image, torch.zeros(1, 2, 4, 4), torch.zeros(3))
    with pytest.raises(TypeError, match="offset"):
        centered_correction_loss(image, image, torch.zeros(1, 2, 4, 4), (0.0, 0.0))
    with pytest.raises(ValueError, match="displacement"):
        centered_correction_loss(image, image, torch.zeros(1, 3, 4, 4), torch.zeros(3))


# ------------------------------------------------------------------ CenteredCorrection
def test_module_uses_earlier_batches_then_updates():
    centring = CenteredCorrection(2, momentum=0.5)
    image, target = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    first = constant_field(2, (1.0, -2.0), (8, 8)).float()
    expected = centered_correction_loss(image, target, first, torch.zeros(2))
    torch.testing.assert_close(centring(image, target, first), expected)  # offset 0 at first
    torch.testing.assert_close(centring.running_mean, torch.tensor([0.5, -1.0]))
    second = constant_field(1, (2.0, 2.0), (8, 8)).float()
    expected = centered_correction_loss(image[:1], target[:1], second, torch.tensor([0.5, -1.0]))
    torch.testing.assert_close(centring(image[:1], target[:1], second), expected)
    torch.testing.assert_close(centring.running_mean, torch.tensor([1.25, 0.5]))


def test_module_weights_and_eval_mode():
    centring = CenteredCorrection(3, momentum=1.0)
    image = torch.rand(1, 1, 4, 5, 6)
    field = torch.zeros(1, 3, 4, 5, 6)
    field[:, :, :2] = 2.0
    weights = torch.zeros(1, 1, 4, 5, 6)
    weights[:, :, :2] = 1.0
    centring(image, image, field, weights)
    torch.testing.assert_close(centring.running_mean, torch.full((3,), 2.0))
    centring.eval()
    centring(image, image, torch.zeros(1, 3, 4, 5, 6))
    torch.testing.assert_close(centring.running_mean, torch.full((3,), 2.0))
    assert list(centring.state_dict()) == ["running_mean"]


def test_running_mean_is_unbiased_for_zero_mean_misalignment_and_finds_a_drift():
    """Zero-mean per-pair shifts leave the running mean near 0; a constant drift shows."""
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(4, 1, 8, 8)
    for drift, tolerance in ((0.0, 0.2), (0.75, 0.2)):
        centring = CenteredCorrection(2, momentum=0.02)
        history = []
        for _ in range(600):
            shifts = torch.randn(4, 2, 1, 1, generator=generator) * 3.0 + drift
            centring(image, image, shifts.expand(4, 2, 8, 8))
            history.append(centring.running_mean.clone())
        late = torch.stack(history[200:]).mean(0)
        torch.testing.assert_close(late, torch.full((2,), drift), atol=tolerance, rtol=0)


def test_module_argument_errors():
    with pytest.raises(ValueError, match="momentum"):
        CenteredCorrection(2, momentum=0.0)
    with pytest.raises(ValueError, match="momentum"):
        CenteredCorrection(2, momentum=1.5)
    with pytest.raises(ValueError, match="spatial_dims"):
        CenteredCorrection(4)
    with pytest.raises(ValueError, match="padding_mode"):
        CenteredCorrection(2, padding_mode="wrap")
    image = torch.rand(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"3 channels.*\(1, 2, 4, 4\)"):
        CenteredCorrection(3)(image, image, torch.zeros(1, 2, 4, 4))


def test_target_foreground_is_any_channel_or_the_mask() -> None:
    target = -torch.ones(2, 3, 4, 5)
    target[0, 1, 2, 3] = 0.5  # one channel of one pixel in the brain
    weights = target_foreground(target)
    assert weights.shape == (2, 1, 4, 5) and weights.dtype == torch.bool
    assert weights.nonzero().tolist() == [[0, 0, 2, 3]]
    mask = torch.zeros(2, 1, 4, 5)
    mask[1, :, 0] = 1.0
    assert target_foreground(target, mask).nonzero()[:, 0].unique().tolist() == [1]


def test_empty_batch_leaves_the_running_mean_alone():
    centring = CenteredCorrection(2)
    centring(torch.rand(0, 1, 6, 6), torch.rand(0, 1, 6, 6), torch.zeros(0, 2, 6, 6))
    assert torch.equal(centring.running_mean, torch.zeros(2))  # was NaN for good
    loss = centring(torch.rand(1, 1, 6, 6), torch.rand(1, 1, 6, 6), torch.ones(1, 2, 6, 6))
    assert torch.isfinite(loss)


def test_shapes_devices_and_weights_are_checked():
    image, field = torch.rand(2, 1, 6, 6), torch.zeros(2, 2, 6, 6)
    with pytest.raises(ValueError, match="translated and target must have the same shape"):
        centered_correction_loss(image[:1], image, field, torch.zeros(2))
    with pytest.raises(ValueError, match="offset on meta"):
        centered_correction_loss(image, image, field, torch.zeros(2, device="meta"))
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        batch_mean_displacement(field, -torch.ones(2, 1, 6, 6))
    with pytest.raises(ValueError, match="weights on meta"):
        batch_mean_displacement(field, torch.ones(2, 1, 6, 6, device="meta"))
    for momentum in (True, "a", math.nan):
        with pytest.raises(ValueError, match="momentum must be > 0"):
            CenteredCorrection(2, momentum)
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        CenteredCorrection(2.0)
