"""Tests of the paper's metrics against numpy and ``skimage.metrics.structural_similarity``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from regcorrect.metrics import foreground_mask, nmae, psnr, ssim


def brain_pair(batch=2, channels=1, size=(24, 20), seed=0):
    """Target with a background of exactly -1 outside an ellipse; a noisy prediction."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    inside = ((yy - h / 2) / (0.4 * h)) ** 2 + ((xx - w / 2) / (0.35 * w)) ** 2 <= 1
    target = np.where(inside, rng.uniform(-0.9, 1.0, (batch, channels, h, w)), -1.0)
    prediction = np.clip(target + rng.normal(0, 0.2, target.shape), -1, 1)
    return prediction, target


def nmae_np(prediction, target, foreground):
    return np.abs(prediction - target)[foreground].mean() / 2


def psnr_np(prediction, target, foreground):
    mse = (((prediction + 1) / 2 - (target + 1) / 2) ** 2)[foreground].mean()
    return 10 * np.log10(1.0 / mse)


def t(array):
    return torch.from_numpy(np.ascontiguousarray(array))


class TestNMAE:
    def test_smoke(self):
        prediction, target = brain_pair()
        value = nmae(t(prediction), t(target))
        assert value.shape == () and value.dtype == torch.float64 and 0 < value < 1

    @pytest.mark.parametrize("shape", [(1, 1, 8, 8), (3, 2, 9, 7), (2, 1, 4, 5, 6)])
    def test_cardinality(self, shape):
        prediction, target = torch.rand(shape), torch.rand(shape)
        assert nmae(prediction, target).shape == ()
        assert nmae(prediction, target, reduction="none").shape == (shape[0],)

    def test_exception(self):
        image = torch.rand(1, 1, 8, 8)
        with pytest.raises(ValueError, match="no foreground pixel"):
            nmae(image, -torch.ones(1, 1, 8, 8))
        with pytest.raises(ValueError, match="no foreground pixel"):
            nmae(image, image, torch.zeros(1, 1, 8, 8, dtype=torch.bool))
        with pytest.raises(ValueError, match="prediction and target"):
            nmae(image, torch.rand(1, 1, 8, 9))
        with pytest.raises(ValueError, match="prediction must be a 4-D or 5-D"):
            nmae(torch.rand(8, 8), torch.rand(8, 8))
        with pytest.raises(TypeError, match="target"):
            nmae(image, image.long())
        with pytest.raises(ValueError, match="reduction"):
            nmae(image, image, reduction="sum")
        with pytest.raises(ValueError, match="mask"):
            nmae(image, image, torch.ones(8, 8))
        with pytest.raises(ValueError, match="mask"):
            nmae(image, image, torch.ones(1, 1, 4, 8))
        with pytest.raises(TypeError, match="mask"):
            nmae(image, image, np.ones((1, 1, 8, 8)))

    def test_values_on_foreground(self):
        prediction, target = brain_pair(batch=3, channels=2)
        foreground = target != -1
        assert (~foreground).any() and foreground.any()
        per_image = nmae(t(prediction), t(target), reduction="none")
        for i in range(3):
            expected = nmae_np(prediction[i], target[i], foreground[i])
            assert per_image[i].item() == pytest.approx(expected, rel=1e-12)
        assert nmae(t(prediction), t(target)).item() == pytest.approx(per_image.mean().item())
        # background pixels of the prediction do not count
        changed = prediction.copy()
        changed[~foreground] = 1.0
        torch.testing.assert_close(nmae(t(changed), t(target)), nmae(t(prediction), t(target)))

    def test_values_with_mask(self):
        prediction, target = brain_pair(batch=2, channels=2, seed=1)
        mask = np.zeros((2, 1, 24, 20), dtype=bool)
        mask[:, :, 5:15, 3:12] = True
        per_image = nmae(t(prediction), t(target), t(mask), reduction="none")
        full = np.broadcast_to(mask, target.shape)
        for i in range(2):
            expected = nmae_np(prediction[i], target[i], full[i])
            assert per_image[i].item() == pytest.approx(expected, rel=1e-12)

    def test_hand_value(self):
        y = torch.zeros(1, 1, 4, 4)
        assert nmae(y + 0.2, y).item() == pytest.approx(0.1)
        assert nmae(y, y).item() == 0.0


class TestPSNR:
    def test_smoke(self):
        prediction, target = brain_pair()
        value = psnr(t(prediction), t(target))
        assert value.shape == () and value.dtype == torch.float64 and 5 < value < 60

    @pytest.mark.parametrize("shape", [(1, 1, 8, 8), (3, 2, 9, 7), (2, 1, 4, 5, 6)])
    def test_cardinality(self, shape):
        prediction, target = torch.rand(shape), torch.rand(shape)
        assert psnr(prediction, target).shape == ()
        assert psnr(prediction, target, reduction="none").shape == (shape[0],)

    def test_exception(self):
        image = torch.rand(1, 1, 8, 8)
        with pytest.raises(ValueError, match="no foreground pixel"):
            psnr(image, torch.full((1, 1, 8, 8), -1.0))
        with pytest.raises(ValueError, match="prediction and target"):
            psnr(image, torch.rand(2, 1, 8, 8))

    def test_values_on_foreground(self):
        prediction, target = brain_pair(batch=3, channels=1, seed=2)
        foreground = target != -1
        per_image = psnr(t(prediction), t(target), reduction="none")
        for i in range(3):
            expected = psnr_np(prediction[i], target[i], foreground[i])
            assert per_image[i].item() == pytest.approx(expected, rel=1e-12)
        assert psnr(t(prediction), t(target)).item() == pytest.approx(per_image.mean().item())

    def test_values_with_mask(self):
        prediction, target = brain_pair(batch=2, channels=1, seed=3)
        mask = np.random.default_rng(3).uniform(size=(2, 1, 24, 20)) > 0.5
        per_image = psnr(t(prediction), t(target), t(mask), reduction="none")
        for i in range(2):
            expected = psnr_np(prediction[i], target[i], mask[i])
            assert per_image[i].item() == pytest.approx(expected, rel=1e-12)

    def test_identical_images_give_100(self):
        prediction, target = brain_pair(batch=2)
        assert psnr(t(target), t(target)).item() == 100.0
        values = psnr(t(target), t(target), reduction="none")
        assert values.tolist() == [100.0, 100.0]
        mixed = np.stack([target[0], prediction[1]])  # one identical, one not
        values = psnr(t(mixed), t(target), reduction="none")
        assert values[0].item() == 100.0 and values[1].item() < 60

    def test_hand_value(self):
        y = torch.zeros(1, 1, 4, 4)
        assert psnr(y + 0.2, y).item() == pytest.approx(20.0)  # error 0.1 after rescaling


class TestSSIM:
    def test_smoke(self):
        prediction, target = brain_pair()
        value = ssim(t(prediction), t(target))
        assert value.shape == () and value.dtype == torch.float64 and 0 < value < 1

    @pytest.mark.parametrize("shape", [(1, 1, 7, 7), (3, 2, 9, 11), (2, 1, 7, 8, 9)])
    def test_cardinality(self, shape):
        prediction, target = torch.rand(shape), torch.rand(shape)
        assert ssim(prediction, target).shape == ()
        assert ssim(prediction, target, reduction="none").shape == (shape[0],)

    def test_exception(self):
        image = torch.rand(1, 1, 8, 8)
        with pytest.raises(ValueError, match="win_size=7"):
            ssim(torch.rand(1, 1, 6, 8), torch.rand(1, 1, 6, 8))
        with pytest.raises(ValueError, match="win_size=9"):
            ssim(image, image, win_size=9)
        with pytest.raises(ValueError, match="odd"):
            ssim(image, image, win_size=4)
        for win_size in (7.0, 7.5, True):
            with pytest.raises(ValueError, match="win_size must be an odd integer"):
                ssim(image, image, win_size=win_size)
        for data_range in (0, -2.0, math.inf):
            with pytest.raises(ValueError, match="data_range must be a finite number > 0"):
                ssim(image, image, data_range=data_range)
        with pytest.raises(ValueError, match="prediction and target"):
            ssim(image, torch.rand(1, 1, 8, 9))
        with pytest.raises(ValueError, match="no foreground pixel"):
            ssim(image, image, torch.zeros(1, 1, 8, 8, dtype=torch.bool))
        with pytest.raises(ValueError, match="reduction"):
            ssim(image, image, reduction="max")

    @pytest.mark.parametrize("size", [(7, 7), (16, 16), (31, 45), (64, 50)])
    def test_values_equal_skimage_2d(self, size):
        rng = np.random.default_rng(size[0])
        a = rng.uniform(-1, 1, size)
        b = np.clip(a + rng.normal(0, 0.3, size), -1, 1)
        expected = structural_similarity(a, b, data_range=2)
        value = ssim(t(a[None, None]), t(b[None, None]))
        assert value.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)

    def test_float32_input(self):
        prediction, target = brain_pair(batch=1, size=(20, 22), seed=4)
        expected = structural_similarity(prediction[0, 0], target[0, 0], data_range=2)
        value = ssim(t(prediction).float(), t(target).float())
        assert value.item() == pytest.approx(expected, abs=1e-5)

    def test_batch_per_image_channels_averaged(self):
        prediction, target = brain_pair(batch=3, channels=2, size=(20, 18), seed=5)
        values = ssim(t(prediction), t(target), reduction="none")
        assert values.shape == (3,)
        for i in range(3):
            expected = structural_similarity(prediction[i], target[i], data_range=2, channel_axis=0)
            per_channel = [
                structural_similarity(prediction[i, c], target[i, c], data_range=2)
                for c in range(2)
            ]
            assert expected == pytest.approx(np.mean(per_channel))
            assert values[i].item() == pytest.approx(expected, rel=1e-9)
        assert ssim(t(prediction), t(target)).item() == pytest.approx(values.mean().item())

    def test_values_equal_skimage_3d(self):
        rng = np.random.default_rng(7)
        a = rng.uniform(-1, 1, (10, 12, 9))
        b = np.clip(0.7 * a + rng.normal(0, 0.3, a.shape), -1, 1)
        expected = structural_similarity(a, b, data_range=2, win_size=7)
        value = ssim(t(a[None, None]), t(b[None, None]))
        assert value.item() == pytest.approx(expected, rel=1e-9)

    def test_win_size(self):
        rng = np.random.default_rng(8)
        a, b = rng.uniform(-1, 1, (15, 17)), rng.uniform(-1, 1, (15, 17))
        for win_size in (3, 5, 11):
            expected = structural_similarity(a, b, data_range=2, win_size=win_size)
            value = ssim(t(a[None, None]), t(b[None, None]), win_size=win_size)
            assert value.item() == pytest.approx(expected, rel=1e-9)

    def test_masked_is_mean_of_skimage_map_over_mask(self):
        prediction, target = brain_pair(batch=2, size=(30, 26), seed=9)
        mask = target != -1
        values = ssim(t(prediction), t(target), t(mask), reduction="none")
        for i in range(2):
            _, ssim_map = structural_similarity(
                prediction[i, 0], target[i, 0], data_range=2, full=True
            )
            inner = (slice(3, -3), slice(3, -3))  # where the 7x7 window fits
            expected = ssim_map[inner][mask[i, 0][inner]].mean()
            assert values[i].item() == pytest.approx(expected, rel=1e-9)
        unmasked = ssim(t(prediction), t(target), reduction="none")
        assert not torch.allclose(values, unmasked)  # the mask does change the average

    def test_identical_images(self):
        prediction, target = brain_pair(batch=2)
        assert ssim(t(target), t(target)).item() == pytest.approx(1.0, abs=1e-12)

    def test_data_range(self):
        rng = np.random.default_rng(10)
        a, b = rng.uniform(0, 1, (16, 16)), rng.uniform(0, 1, (16, 16))
        expected = structural_similarity(a, b, data_range=1)
        value = ssim(t(a[None, None]), t(b[None, None]), data_range=1.0)
        assert value.item() == pytest.approx(expected, rel=1e-9)


class TestForegroundMask:
    def test_values(self):
        target = torch.tensor([[[[-1.0, 0.0], [0.5, -1.0]]]])
        assert foreground_mask(target).tolist() == [[[[False, True], [True, False]]]]
        assert foreground_mask(target, background=0.0).tolist() == [[[[True, False], [True, True]]]]
        mask = foreground_mask(torch.rand(2, 3, 4, 4), torch.ones(2, 1, 4, 4))
        assert mask.dtype == torch.bool and mask.shape == (2, 3, 4, 4) and bool(mask.all())

    @pytest.mark.parametrize("metric", [nmae, psnr, ssim])
    def test_device_errors(self, metric):
        image = torch.rand(1, 1, 8, 8)
        with pytest.raises(ValueError, match="prediction on cpu, target on meta"):
            metric(image, image.to("meta"))
        with pytest.raises(ValueError, match="target on cpu, mask on meta"):
            metric(image, image, torch.ones(1, 1, 8, 8, device="meta"))


def test_foreground_mask_checks_target_and_background():
    with pytest.raises(TypeError, match="target must be a torch.Tensor"):
        foreground_mask(None)
    image = torch.rand(1, 1, 8, 8)
    for metric in (nmae, psnr):
        with pytest.raises(TypeError, match="background must be a number"):
            metric(image, image, background="x")


def test_numpy_scalar_options():
    image = torch.rand(1, 1, 8, 8) * 2 - 1
    assert ssim(image, image, win_size=np.int64(7), data_range=np.float32(2)) == pytest.approx(1.0)
    assert foreground_mask(image, background=np.float32(-1)).shape == image.shape
