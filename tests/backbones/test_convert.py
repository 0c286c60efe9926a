"""Tests of the converter from official Reg-GAN generator checkpoints to ResnetGenerator.

The official generators are rebuilt here from their documented layer order (explicit
``ReflectionPad2d`` layers, parameter-free instance norms, transposed-conv upsampling), in both
key layouts: ``model_head/model_body/model_tail`` (Reg-GAN) and a single ``model`` sequence.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from regcorrect.backbones.convert import convert_official_generator, load_official_generator
from regcorrect.backbones.cyclegan import ResnetGenerator


@pytest.fixture(autouse=True, scope="module")
def single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class OfficialResidual(nn.Module):
    """Residual block stored as ``conv_block.{0..6}``: pad, conv, norm, relu, pad, conv, norm."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for last in (False, True):
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3)]
            layers += [nn.InstanceNorm2d(channels)] + ([] if last else [nn.ReLU()])
        self.conv_block = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        return features + self.conv_block(features)


def official_stages(
    in_channels: int, out_channels: int, width: int, blocks: int
) -> tuple[list[nn.Module], list[nn.Module], list[nn.Module]]:
    """(head, body, tail) layer lists of the official generator, two scale stages."""
    head: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, width, 7)]
    head += [nn.InstanceNorm2d(width), nn.ReLU()]
    for scale in (1, 2):
        wide = width * 2**scale
        head += [nn.Conv2d(wide // 2, wide, 3, stride=2, padding=1), nn.InstanceNorm2d(wide)]
        head += [nn.ReLU()]
    body: list[nn.Module] = [OfficialResidual(width * 4) for _ in range(blocks)]
    tail: list[nn.Module] = []
    for scale in (2, 1):
        wide = width * 2**scale
        tail += [nn.ConvTranspose2d(wide, wide // 2, 3, stride=2, padding=1, output_padding=1)]
        tail += [nn.InstanceNorm2d(wide // 2), nn.ReLU()]
    tail += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
    return head, body, tail


class OfficialSplit(nn.Module):
    """Reg-GAN's ``Model/CycleGan.py`` layout: ``model_head``, ``model_body``, ``model_tail``."""

    def __init__(self, in_channels: int, out_channels: int, width: int, blocks: int) -> None:
        super().__init__()
        head, body, tail = official_stages(in_channels, out_channels, width, blocks)
        self.model_head = nn.Sequential(*head)
        self.model_body = nn.Sequential(*body)
        self.model_tail = nn.Sequential(*tail)

    def forward(self, image: Tensor) -> Tensor:
        return self.model_tail(self.model_body(self.model_head(image)))


class OfficialSequential(nn.Module):
    """The PyTorch-CycleGAN layout: one ``model`` sequence."""

    def __init__(self, in_channels: int, out_channels: int, width: int, blocks: int) -> None:
        super().__init__()
        head, body, tail = official_stages(in_channels, out_channels, width, blocks)
        self.model = nn.Sequential(*head, *body, *tail)

    def forward(self, image: Tensor) -> Tensor:
        return self.model(image)


def randomised(module: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0.0, 0.1)
    return module


@pytest.mark.parametrize("official_class", [OfficialSplit, OfficialSequential])
class TestConvertOfficialGenerator:
    def test_full_size_key_layout(self, official_class: type[nn.Module]) -> None:
        official = official_class(1, 1, 64, 9)
        converted = convert_official_generator(official.state_dict())
        expected = ResnetGenerator().state_dict()
        assert set(converted) == set(expected)
        assert all(converted[key].shape == expected[key].shape for key in expected)

    @pytest.mark.parametrize(("in_channels", "out_channels"), [(1, 1), (2, 3)])
    def test_outputs_match(
        self, official_class: type[nn.Module], in_channels: int, out_channels: int
    ) -> None:
        official = randomised(official_class(in_channels, out_channels, 8, 2))
        generator = ResnetGenerator(
            in_channels=in_channels,
            out_channels=out_channels,
            base_channels=8,
            num_residual_blocks=2,
        )
        generator.load_state_dict(convert_official_generator(official.state_dict()))
        image = torch.rand(2, in_channels, 32, 48) * 2 - 1
        with torch.no_grad():
            assert (official(image) - generator(image)).abs().max() < 1e-5

    def test_load_official_generator(self, official_class: type[nn.Module], tmp_path: Path) -> None:
        official = randomised(official_class(2, 1, 8, 3))
        path = tmp_path / "netG_A2B.pth"
        torch.save(official.state_dict(), path)
        generator = load_official_generator(path)
        assert (generator.in_channels, generator.out_channels) == (2, 1)
        assert (generator.base_channels, generator.num_residual_blocks) == (8, 3)
        image = torch.rand(1, 2, 32, 32) * 2 - 1
        with torch.no_grad():
            assert torch.allclose(official(image), generator(image), atol=1e-5)

    def test_data_parallel_prefix(self, official_class: type[nn.Module]) -> None:
        state = official_class(1, 1, 4, 1).state_dict()
        prefixed = {f"module.{key}": value for key, value in state.items()}
        assert convert_official_generator(prefixed).keys() == (
            convert_official_generator(state).keys()
        )

    def test_tensors_are_passed_through(self, official_class: type[nn.Module]) -> None:
        state = official_class(1, 1, 4, 1).state_dict()
        converted = convert_official_generator(state)
        assert converted["stem.conv.weight"] is state[next(iter(state))]


class TestConvertErrors:
    def test_unexpected_and_missing_keys_are_listed(self) -> None:
        state = OfficialSplit(1, 1, 4, 2).state_dict()
        state["model_head.2.running_mean"] = torch.zeros(4)
        del state["model_tail.7.bias"]
        with pytest.raises(
            ValueError, match=r"unexpected keys \[model_head\.2\.running_mean\]"
        ) as error:
            convert_official_generator(state)
        assert "missing keys [model_tail.7.bias]" in str(error.value)

    def test_missing_residual_parameter(self) -> None:
        state = OfficialSequential(1, 1, 4, 2).state_dict()
        del state["model.11.conv_block.5.weight"]
        with pytest.raises(ValueError, match=r"missing keys \[model\.11\.conv_block\.5\.weight\]"):
            convert_official_generator(state)

    def test_not_an_official_generator(self) -> None:
        with pytest.raises(ValueError, match="not an official Reg-GAN generator"):
            convert_official_generator(ResnetGenerator(base_channels=4).state_dict())
        with pytest.raises(ValueError, match="not an official Reg-GAN generator"):
            convert_official_generator({})

    def test_type_errors(self) -> None:
        with pytest.raises(TypeError, match="mapping"):
            convert_official_generator([("model.1.weight", torch.zeros(1))])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="tensors"):
            convert_official_generator({"model.1.weight": [0.0]})  # type: ignore[dict-item]

    def test_conflicting_generator_kwargs(self, tmp_path: Path) -> None:
        path = tmp_path / "netG_A2B.pth"
        torch.save(OfficialSplit(1, 1, 4, 1).state_dict(), path)
        with pytest.raises(ValueError, match=r"shape mismatches \[stem\.conv\.weight"):
            load_official_generator(path, in_channels=3)
        with pytest.raises(ValueError, match=r"unexpected keys \[residual_blocks\.0"):
            load_official_generator(path, num_residual_blocks=0)

    def test_file_without_state_dict(self, tmp_path: Path) -> None:
        path = tmp_path / "tensor.pth"
        torch.save(torch.zeros(3), path)
        with pytest.raises(TypeError, match="must hold a state dict"):
            load_official_generator(path)
