"""Tests of TrainingConfig and its YAML loading, including the official Reg-GAN keys."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from regcorrect.training import OFFICIAL_KEYS, ConfigError, TrainingConfig, load_config
from regcorrect.training.config import valid_keys

# The official Reg-GAN Yaml/CycleGan.yaml, as distributed (values of the NC+R experiment).
OFFICIAL_YAML = """\
#####
name: CycleGan
bidirect: False #Unidirectional or bidirectional
regist: True    # With or without registration network
noise_level: 1  #  noise level
port: 6019   #  port parameters
save_root: './output/Cyc/NC+R/'
image_save: './output/Cyc/NC+R/img/'

# lamda weight
Adv_lamda : 1
Cyc_lamda : 10
Corr_lamda : 20
Smooth_lamda : 10

epoch: 0        # starting epoch
n_epochs: 80       # How often do you want to display output images during training
batchSize: 1               # size of the batches
dataroot: './data/train2D'     # root directory of the dataset
val_dataroot: './data/val2D'
lr: 0.0001                   # initial learning rate
decay_epoch: 20            # epoch to start linearly decaying the learning rate to 0
size: 256                # size of the data crop
input_nc: 1
output_nc: 1
cuda: True
n_cpu: 1
"""


def write(tmp_path, text: str, name: str = "config.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


class TestTrainingConfig:
    def test_defaults_are_the_papers_reggan(self) -> None:
        config = TrainingConfig()
        assert (config.method, config.mode) == ("cyclegan", "nc+r")
        assert (config.correction_weight, config.smoothness_weight, config.lr) == (20.0, 10.0, 1e-4)
        assert config.betas == [0.5, 0.999] and config.data == "icbm152"

    def test_dict_round_trip(self) -> None:
        config = TrainingConfig(mode="C+R", size=[64, 48], registration={"channels": (8, 16)})
        assert config.mode == "c+r"  # normalised to lower case
        assert config.registration["channels"] == [8, 16]
        assert TrainingConfig.from_dict(config.to_dict()) == config
        assert config.image_size == (64, 48)

    def test_yaml_round_trip(self, tmp_path) -> None:
        config = TrainingConfig(steps=7, size=32, data=["a.nii.gz", "b.nii.gz"], out_dir=None)
        assert load_config(config.to_yaml(tmp_path / "c.yaml")) == config

    def test_replace_validates(self) -> None:
        config = TrainingConfig()
        assert config.replace(steps=5).steps == 5 and config.steps == 20000
        with pytest.raises(ConfigError, match="steps"):
            config.replace(steps=0)

    @pytest.mark.parametrize(
        ("key", "value", "match"),
        [
            ("method", "pix2pixhd", "method must be one of"),
            ("mode", "nc+r+r", "mode must be one of"),
            ("steps", 0, "steps must be an integer >= 1"),
            ("steps", 2.5, "steps must be an integer"),
            ("batch_size", True, "batch_size must be an integer"),
            ("lr", -1e-4, "lr must be a finite number > 0"),
            ("lr", math.inf, "lr must be a finite number > 0"),
            ("noise_level", 3.0, "noise_level must be one of"),
            ("axis", 2.0, "axis must be one of"),
            ("axis", True, "axis must be one of"),
            ("seed", 2**70, r"seed must be an integer in \[0, 9223372036854775807\]"),
            ("noise_level", 6, "noise_level must be one of"),
            ("size", [32], "size must be"),
            ("size", 0, "size must be"),
            ("betas", [0.5], "betas must be two numbers"),
            ("paired", "yes", "paired must be true or false"),
            ("data", 3, "data must be 'icbm152'"),
            ("data", ["only-one.nii.gz"], "data must be"),
            ("device", "tpu", "device must be one of"),
            ("spacing", 0, "spacing must be"),
            ("correction_weight", -1, "correction_weight must be a finite number >= 0"),
            ("correction_weight", math.inf, "correction_weight must be a finite number >= 0"),
            ("centering_weight", -0.5, "centering_weight must be a finite number >= 0"),
            (
                "initial_alignment",
                "moments",
                r"initial_alignment must be one of \[None, 'source'\]",
            ),
            ("backbone", [1, 2], "backbone must be a mapping"),
            ("test_fraction", 1.0, "test_fraction"),
            ("augmentation", [1, 2], "augmentation must be null or a mapping"),
            ("augmentation", {"flip_probability": 2}, "augmentation: flip_probability"),
            ("augmentation", {"zoom": 0.5}, "augmentation: .*zoom"),
        ],
    )
    def test_invalid_values(self, key: str, value: object, match: str) -> None:
        with pytest.raises(ConfigError, match=match):
            TrainingConfig(**{key: value})

    def test_augmentation(self, tmp_path) -> None:
        assert TrainingConfig().pair_augmentation() is None
        config = TrainingConfig(augmentation={"scale_range": (0.7, 1.0), "rotation_deg": 3})
        assert config.augmentation == {"scale_range": [0.7, 1.0], "rotation_deg": 3}
        augment = config.pair_augmentation()
        assert augment.scale_range == (0.7, 1.0) and augment.rotation_deg == 3.0
        assert load_config(config.to_yaml(tmp_path / "c.yaml")) == config
        assert TrainingConfig(augmentation={}).pair_augmentation().scale_range == (0.55, 1.05)

    def test_decay_given_twice(self) -> None:
        with pytest.raises(ConfigError, match="not both"):
            TrainingConfig(decay_start=3, decay_start_epoch=1)


class TestLoadConfig:
    def test_empty_file_gives_defaults(self, tmp_path) -> None:
        assert load_config(write(tmp_path, "")) == TrainingConfig()

    def test_our_keys(self, tmp_path) -> None:
        config = load_config(
            write(tmp_path, "mode: c\nsteps: 12\nsize: [64, 32]\nbackbone: {base_channels: 8}\n")
        )
        assert (config.mode, config.steps, config.image_size) == ("c", 12, (64, 32))
        assert config.backbone == {"base_channels": 8}

    def test_unknown_key_lists_the_valid_ones(self, tmp_path) -> None:
        with pytest.raises(ConfigError) as error:
            load_config(write(tmp_path, "stpes: 10\n"))
        message = str(error.value)
        assert "unknown config key(s) 'stpes' (did you mean 'steps'?)" in message
        assert all(key in message for key in valid_keys())
        assert "Adv_lamda" in message

    @pytest.mark.parametrize(
        ("text", "match"),
        [
            ("steps: [1, 2\n", "not valid YAML"),
            ("- steps\n- 3\n", "must hold a mapping"),
            ("batchSize: 2\nbatch_size: 2\n", "'batchSize' and 'batch_size' both set 'batch_size'"),
            ("mode: nc\nregist: true\n", "give only one"),
            ("bidirect: 1\n", "bidirect must be true or false"),
            ("input_nc: 3\n", "input_nc must be 1"),
            ("epoch: 5\n", "--resume"),
            ("cuda: maybe\n", "cuda must be true or false"),
        ],
    )
    def test_invalid_files(self, tmp_path, text: str, match: str) -> None:
        with pytest.raises(ConfigError, match=match):
            load_config(write(tmp_path, text))

    def test_missing_file(self, tmp_path) -> None:
        with pytest.raises(ConfigError, match="does not exist"):
            load_config(tmp_path / "absent.yaml")

    def test_official_yaml_is_mapped(self, tmp_path) -> None:
        config = load_config(write(tmp_path, OFFICIAL_YAML))
        assert config.mode == "nc+r"
        assert (config.adversarial_weight, config.cycle_weight) == (1, 10)
        assert (config.correction_weight, config.smoothness_weight) == (20, 10)
        assert (config.noise_level, config.batch_size, config.lr, config.size) == (1, 1, 1e-4, 256)
        assert (config.epochs, config.decay_start_epoch) == (80, 20)
        assert (config.data, config.test_data) == ("./data/train2D", "./data/val2D")
        assert (config.out_dir, config.device) == ("./output/Cyc/NC+R/", "cuda")

    @pytest.mark.parametrize(
        ("bidirect", "regist", "mode"),
        [(False, True, "nc+r"), (False, False, "nc"), (True, True, "c+r"), (True, False, "c")],
    )
    def test_bidirect_and_regist_choose_the_mode(self, bidirect, regist, mode) -> None:
        values = yaml.safe_load(OFFICIAL_YAML)
        values.update(bidirect=bidirect, regist=regist)
        assert TrainingConfig.from_dict(values).mode == mode

    def test_one_of_bidirect_regist_keeps_the_other_from_the_default(self) -> None:
        assert TrainingConfig.from_dict({"bidirect": True}).mode == "c+r"
        assert TrainingConfig.from_dict({"regist": False}).mode == "nc"

    @pytest.mark.parametrize(
        ("name", "method", "mode"),
        [
            ("CycleGan", "cyclegan", "nc+r"),
            ("Munit", "munit", "nc+r"),
            ("Unit", "unit", "nc+r"),
            ("Nice", "nicegan", "nc+r"),
            ("NiceGAN", "nicegan", "nc+r"),
            ("P2p", "cyclegan", "pix2pix"),
            ("my experiment", "cyclegan", "nc+r"),
        ],
    )
    def test_official_name_picks_the_trainer(self, name, method, mode) -> None:
        config = TrainingConfig.from_dict({"name": name})
        assert (config.method, config.mode) == (method, mode)
        # bidirect / regist still choose the mode, as in the official trainers
        assert TrainingConfig.from_dict({"name": name, "regist": False}).mode == "nc"

    def test_official_name_and_method_conflict(self) -> None:
        with pytest.raises(ConfigError, match="'name' and 'method' both set 'method'"):
            TrainingConfig.from_dict({"name": "Munit", "method": "unit"})
        assert TrainingConfig.from_dict({"name": "Munit", "method": "MUNIT"}).method == "munit"

    def test_numpy_scalars_are_plain_values(self) -> None:
        config = TrainingConfig(noise_level=np.int64(2), axis=np.int64(1), lr=np.float32(1e-3))
        assert (config.noise_level, config.axis) == (2, 1) and type(config.noise_level) is int
        assert config.lr == pytest.approx(1e-3) and type(config.lr) is float

    def test_official_munit_unit_and_p2p_files_load(self, tmp_path) -> None:
        common = (
            "noise_level: 1\nAdv_lamda: 1\nepoch: 0\nn_epochs: 80\nbatchSize: 1\n"
            "lr: 0.0001\ndecay_epoch: 20\nsize: 256\ninput_nc: 1\noutput_nc: 1\n"
            "cuda: false\nn_cpu: 1\nport: 6019\n"
        )
        architecture = (
            "gen:\n  dim: 32\n  mlp_dim: 128\n  style_dim: 6\n  activ: relu\n"
            "  n_downsample: 2\n  n_res: 3\n  pad_type: reflect\n"
            "dis:\n  dim: 16\n  norm: none\n  activ: lrelu\n  n_layer: 3\n"
            "  gan_type: lsgan\n  num_scales: 2\n  pad_type: reflect\n"
            "input_dim_a: 1\ninput_dim_b: 1\n"
        )
        munit = load_config(
            write(
                tmp_path,
                "name: Munit\nbidirect: false\nregist: true\ndisplay_size: 8\n"
                + common
                + architecture,
            )
        )
        assert (munit.method, munit.mode, munit.gan_mode) == ("munit", "nc+r", "lsgan")
        assert munit.backbone == {
            "base_channels": 32,
            "mlp_channels": 128,
            "style_dim": 6,
            "num_downsamplings": 2,
            "num_residual_blocks": 3,
            "discriminator_channels": 16,
            "discriminator_layers": 3,
            "discriminator_scales": 2,
        }
        unit_text = (
            "name: Unit\nRecon_kl_lamda: 0.02\n"
            + common
            + architecture.replace("  mlp_dim: 128\n  style_dim: 6\n", "").replace("lsgan", "nsgan")
        )
        unit = load_config(write(tmp_path, unit_text))
        assert (unit.method, unit.gan_mode, unit.backbone["kl_weight"]) == ("unit", "vanilla", 0.02)
        p2p = load_config(write(tmp_path, "name: P2p\nP2P_lamda: 50\n" + common))
        assert (p2p.method, p2p.mode, p2p.backbone) == ("cyclegan", "pix2pix", {"l1_weight": 50})

    @pytest.mark.parametrize(
        ("text", "match"),
        [
            ("gen:\n  activ: prelu\n", "gen.activ must be 'relu'"),
            ("dis:\n  norm: bn\n", "dis.norm must be 'none'"),
            ("dis:\n  gan_type: wgan\n", "dis.gan_type must be one of"),
            ("gen:\n  width: 3\n", "unknown key.*width in gen"),
            ("gen: 3\n", "gen must be a mapping"),
            ("input_dim_a: 3\n", "input_dim_a must be 1"),
            ("P2P_lamda: 5\nbackbone: {l1_weight: 3}\n", "both set 'l1_weight'"),
        ],
    )
    def test_invalid_official_architecture(self, tmp_path, text, match) -> None:
        with pytest.raises(ConfigError, match=match):
            load_config(write(tmp_path, text))

    def test_every_official_key_maps_to_a_real_key(self) -> None:
        assert {v for v in OFFICIAL_KEYS.values() if v is not None} <= set(valid_keys())
