"""``examples/custom_backbone.py`` runs with tiny settings, and its two paths agree."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from regcorrect import TranslationModel

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "custom_backbone.py"
TINY = ["--steps", "2", "--batch", "2", "--size", "32", "--channels", "4", "--log-every", "1"]
TINY += ["--registration-channels", "8", "16", "16", "16"]


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("custom_backbone_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runs_both_paths(example, capsys: pytest.CaptureFixture[str]) -> None:
    result = example.main(TINY)
    model, generator = result["model"], result["generator"]
    assert isinstance(model, TranslationModel) and model.mode == "nc+r"
    assert isinstance(model.backbone, example.TinyBackbone)
    assert sorted(model.networks) == ["discriminator", "generator", "registration"]
    assert model.step == 2
    assert model.translate(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    assert generator(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)

    backbone_history, correction_history = result["model_history"], result["correction_history"]
    assert len(backbone_history) == len(correction_history) == 2
    for losses in [*backbone_history, *correction_history]:
        assert {"adversarial", "correction", "smoothness"} <= set(losses)
        assert all(math.isfinite(v) for v in losses.values())
    # Same seed, same networks, same losses and Adam settings: the same updates.
    for through_model, through_correction in zip(backbone_history, correction_history, strict=True):
        for name in ("adversarial", "correction", "smoothness"):
            assert through_model[name] == pytest.approx(through_correction[name], rel=1e-4)
        assert through_model["D/discriminator"] == pytest.approx(
            through_correction["discriminator"], rel=1e-4
        )
    assert all(math.isfinite(error) for error in result["errors"].values())
    output = capsys.readouterr().out
    assert "[backbone]   step 2" in output and "[correction] step 2" in output


def test_synthetic_pairs_are_shifted_copies(example) -> None:
    generator = torch.Generator().manual_seed(0)
    source, aligned, target = example.misaligned_pairs(3, 32, 2, generator)
    assert source.shape == aligned.shape == target.shape == (3, 1, 32, 32)
    torch.testing.assert_close(aligned, -source)
    for image, shifted in zip(aligned, target, strict=True):
        matches = [
            torch.equal(torch.roll(image, (dy, dx), dims=(-2, -1)), shifted)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        ]
        assert any(matches)
