"""The Trainer loop (logs, out_dir rules, evaluation), model building, data loading, evaluation
helpers and slice-wise inference."""

from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from regcorrect.training import (
    ConfigError,
    DivergenceError,
    StepSampler,
    Trainer,
    build_from_config,
    evaluate_model,
    evaluate_translation,
    fit_linear_map,
    load_checkpoint,
    load_model,
    load_training_data,
    read_csv_log,
)
from regcorrect.training.data import load_pairs, network_size
from regcorrect.training.inference import translate_slices

from .helpers import tiny_config, tiny_data, tiny_resume, tiny_trainer


class TestFit:
    def test_writes_config_logs_and_checkpoint(self, tmp_path) -> None:
        run = tmp_path / "run"
        trainer = tiny_trainer(run, steps=3, eval_every=2, log_every=2)
        metrics = trainer.fit()
        assert sorted(p.name for p in run.iterdir()) == [
            "checkpoint.pt",
            "config.yaml",
            "eval.csv",
            "log.jsonl",
            "train.csv",
        ]
        train = read_csv_log(run / "train.csv")
        assert [row["step"] for row in train] == [2, 3]  # every log_every steps and the last
        assert {"G/total", "D/total", "correction", "smoothness", "adversarial"} <= set(train[0])
        evaluation = read_csv_log(run / "eval.csv")
        assert [row["step"] for row in evaluation] == [2, 3]
        assert metrics == {k: v for k, v in evaluation[-1].items() if k != "step"}
        assert (
            0 < metrics["nmae"] < 1 and np.isfinite(metrics["psnr"]) and -1 <= metrics["ssim"] <= 1
        )
        kinds = [json.loads(line)["kind"] for line in (run / "log.jsonl").read_text().splitlines()]
        assert kinds == ["train", "eval", "train", "eval"]

    def test_without_out_dir_nothing_is_written(self, tmp_path, monkeypatch) -> None:
        monkeypatch.chdir(tmp_path)
        trainer = tiny_trainer(None, steps=2)
        trainer.fit()
        assert trainer.step == 2 and list(tmp_path.iterdir()) == []
        assert trainer.save_checkpoint() is None

    def test_training_changes_the_generator(self) -> None:
        trainer = tiny_trainer(None, steps=2)
        before = {k: v.clone() for k, v in trainer.model.backbone.generator.state_dict().items()}
        trainer.fit()
        after = trainer.model.backbone.generator.state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before)

    def test_divergence_stops_before_anything_is_written(self, tmp_path) -> None:
        # lr 1e20: Adam moves every weight by ~1e20 in the first step, so the losses of the
        # next steps are NaN (and R's field too: the warp must not crash on it).
        run = tmp_path / "run"
        trainer = tiny_trainer(run, steps=6, lr=1e20, checkpoint_every=1, log_every=1)
        with pytest.raises(
            DivergenceError, match=r"training diverged at step \d: non-finite"
        ) as info:
            trainer.fit()
        error = info.value
        assert 2 <= error.step <= 6 and error.losses
        assert all(not np.isfinite(v) for v in error.losses.values())
        assert error.checkpoint == (run / "checkpoint.pt", error.step - 1)
        assert f"{run / 'checkpoint.pt'} still holds step {error.step - 1}" in str(error)
        state = load_checkpoint(run / "checkpoint.pt")
        assert state["training"]["step"] == error.step - 1
        assert all(
            torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point()
        )
        assert [row["step"] for row in read_csv_log(run / "train.csv")] == list(
            range(1, error.step)
        )
        resumed = tiny_resume(run)  # the last good state resumes
        assert resumed.step == error.step - 1

    def test_divergence_without_a_checkpoint(self) -> None:
        with pytest.raises(
            DivergenceError, match="no checkpoint holds earlier weights: restart with a lower"
        ):
            tiny_trainer(None, steps=6, lr=1e20).fit()

    def test_non_empty_out_dir_needs_overwrite(self, tmp_path) -> None:
        run = tmp_path / "run"
        tiny_trainer(run, steps=1).fit()
        (run / "notes.txt").write_text("mine")
        with pytest.raises(ValueError, match="already exists and is not empty"):
            tiny_trainer(run, steps=1)
        Trainer(tiny_config(run, steps=1), data=tiny_data(), progress=False, overwrite=True)
        assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "notes.txt"]

    def test_a_failed_start_leaves_an_earlier_run_alone(self, tmp_path) -> None:
        run = tmp_path / "run"
        tiny_trainer(run, steps=1).fit()
        bad = tiny_config(run, backbone={"widht": 3})
        with pytest.raises(ConfigError, match="widht"):
            Trainer(bad, data=tiny_data(), progress=False, overwrite=True)
        assert (run / "checkpoint.pt").is_file() and (run / "train.csv").is_file()

    def test_evaluation_leaves_the_random_state_alone(self) -> None:
        trainer = tiny_trainer(None, noise_level=3)
        state = torch.get_rng_state()
        trainer.evaluate(noise_level=2)
        assert torch.equal(state, torch.get_rng_state())

    def test_evaluation_with_pose_noise_differs(self) -> None:
        trainer = tiny_trainer(None)
        assert trainer.evaluate() != trainer.evaluate(noise_level=3)

    def test_epochs_and_decay_in_epochs(self) -> None:
        trainer = tiny_trainer(None, epochs=2, decay_start_epoch=1)
        per_epoch = len(tiny_data().train) // 2
        assert trainer.sampler.steps_per_epoch == per_epoch and trainer.total_steps == 2 * per_epoch
        scheduler = trainer.model.schedulers["generator"]
        assert (
            scheduler.lr_lambdas[0](per_epoch - 1) == 1.0
            and scheduler.lr_lambdas[0](per_epoch + 1) < 1.0
        )

    def test_decay_after_the_end_is_an_error(self) -> None:
        with pytest.raises(ConfigError, match="decay starts at step 4"):
            tiny_trainer(None, steps=4, decay_start=4)

    def test_tensorboard_is_optional(self, tmp_path) -> None:
        run = tmp_path / "run"
        trainer = tiny_trainer(run, steps=1, tensorboard=True)
        trainer.fit()
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            assert not (run / "tensorboard").exists()
        else:
            assert (run / "tensorboard").is_dir()


class TestBuildFromConfig:
    def test_modes_and_weights(self) -> None:
        config = tiny_config(None, mode="c", adversarial_weight=2.0, cycle_weight=5.0)
        model = build_from_config(config, (32, 32))
        assert model.registration is None  # registration options are ignored without R
        assert set(model.networks) == {
            "generator",
            "inverse_generator",
            "discriminator",
            "source_discriminator",
        }
        assert (model.backbone.adversarial_weight, model.backbone.cycle_weight) == (2.0, 5.0)

    def test_centering_weight_reaches_the_model(self) -> None:
        model = build_from_config(tiny_config(None, mode="nc+r", centering_weight=4.0), (32, 32))
        assert model.centering_weight == 4.0 and model.centering is not None
        assert build_from_config(tiny_config(None, mode="nc+r"), (32, 32)).centering is None

    def test_registration_options_reach_r(self) -> None:
        config = tiny_config(
            None, mode="nc+r", registration={"channels": [8, 16], "prealign": "moments"}
        )
        model = build_from_config(config, (32, 32))
        assert model.registration.prealign == "moments"
        with pytest.raises(ConfigError, match="cannot build the model.*prealign must be one of"):
            build_from_config(
                tiny_config(None, mode="nc+r", registration={"prealign": "x"}), (32, 32)
            )

    def test_initial_alignment_reaches_the_model(self) -> None:
        config = tiny_config(None, mode="nc+r", initial_alignment="source")
        assert build_from_config(config, (32, 32)).initial_alignment == "source"
        assert build_from_config(config.replace(mode="nc"), (32, 32)).initial_alignment is None
        assert build_from_config(tiny_config(None, mode="nc+r"), (32, 32)).initial_alignment is None

    def test_augmentation_reaches_the_training_pairs(self) -> None:
        trainer = tiny_trainer(None, augmentation={"flip_probability": 1.0})
        assert trainer.dataset.augmentation is not None
        assert trainer.dataset.augmentation.flip_probability == 1.0
        assert tiny_trainer(None).dataset.augmentation is None

    def test_pix2pix_ignores_the_cycle_weight(self) -> None:
        model = build_from_config(tiny_config(None, mode="pix2pix", cycle_weight=3.0), (32, 32))
        assert model.mode == "pix2pix"

    def test_bad_backbone_option(self) -> None:
        with pytest.raises(ConfigError, match="invalid backbone/registration option"):
            build_from_config(tiny_config(None, backbone={"widht": 3}), (32, 32))

    def test_weight_given_twice(self) -> None:
        config = tiny_config(None, cycle_weight=1.0, backbone={"cycle_weight": 2.0})
        with pytest.raises(ConfigError, match="both at the top level and in backbone"):
            build_from_config(config, (32, 32))

    def test_load_model_rebuilds_the_trained_model(self, tmp_path) -> None:
        trainer = tiny_trainer(tmp_path / "run", steps=1)
        trainer.fit()
        model, state = load_model(tmp_path / "run")
        source = tiny_data().test.source[:2]
        assert torch.equal(model.translate(source), trainer.model.translate(source))
        assert model.step == 1 and state["image_size"] == [32, 32]


class TestData:
    def test_icbm152_split(self) -> None:
        data = tiny_data()
        assert (len(data.train), len(data.test)) == (110, 27)
        assert data.train.image_size == (32, 32) and data.spacing_known

    def test_npy_folder_holds_out_the_last_slices(self, tmp_path) -> None:
        for side in "AB":
            (tmp_path / side).mkdir()
            for index in range(5):
                slice_ = np.full((32, 32), -1.0, dtype=np.float32)
                slice_[8:24, 8:24] = index / 10
                np.save(tmp_path / side / f"{index:03d}.npy", slice_)
        data = load_training_data(tiny_config(None, data=str(tmp_path), spacing=None))
        assert (len(data.train), len(data.test)) == (4, 1)
        assert data.test.names == ("004.npy",) and not data.spacing_known

    def test_nifti_pair(self, tmp_path) -> None:
        volume = np.zeros((32, 32, 6), dtype=np.float32)
        volume[6:26, 4:28, 1:5] = np.random.default_rng(0).uniform(1, 100, (20, 24, 4))
        for name in ("t1.nii.gz", "t2.nii.gz"):
            nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / name)
        config = tiny_config(
            None,
            data=[str(tmp_path / "t1.nii.gz"), str(tmp_path / "t2.nii.gz")],
            spacing=None,
            test_fraction=0.25,
        )
        data = load_training_data(config)
        assert (len(data.train), len(data.test)) == (3, 1)  # the 2 empty slices are skipped
        assert data.train.source.min() == -1 and data.train.source.max() <= 1

    def test_odd_slices_are_padded_to_what_the_generators_take(self, tmp_path) -> None:
        rng = np.random.default_rng(1)
        volume = np.zeros((37, 51, 6), dtype=np.float32)
        volume[5:31, 6:45, 1:5] = rng.uniform(1, 100, (26, 39, 4))
        for name in ("t1.nii.gz", "t2.nii.gz"):
            nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / name)
        files = [str(tmp_path / "t1.nii.gz"), str(tmp_path / "t2.nii.gz")]
        config = tiny_config(None, data=files, spacing=None, size=None, test_fraction=0.25)
        data = load_training_data(config)
        # slices along the last axis are 51 x 37; padded to multiples of 4
        assert data.train.image_size == data.test.image_size == (52, 40)
        # centre-padded with background (the odd row / column at the bottom / right)
        raw, _ = load_pairs(files, axis=2)
        torch.testing.assert_close(data.train.source[:, :, :51, 1:38], raw.source[:3])
        torch.testing.assert_close(data.test.target[:, :, :51, 1:38], raw.target[3:])
        margin = torch.ones(52, 40, dtype=torch.bool)
        margin[:51, 1:38] = False
        assert (data.train.source[:, :, margin] == -1).all()
        trainer = Trainer(config, data=data, progress=False)
        assert trainer.image_size == (52, 40)
        trainer.fit(until=1)  # 51 x 37 slices would fail in the generator
        deeper = tiny_config(None, data=files, spacing=None, backbone={"num_downsamplings": 3})
        assert network_size((37, 51), deeper) == (40, 56)
        assert network_size((36, 52), config) == (36, 52)
        # a size that is no multiple of 4 is padded on the same way
        sized = load_training_data(tiny_config(None, data=files, spacing=None, size=[30, 30]))
        assert sized.train.image_size == (32, 32)
        assert (sized.train.source[:, :, 0] == -1).all() and (
            sized.train.source[:, :, 31] == -1
        ).all()

    def test_spacing_makes_anisotropic_pixels_square(self, tmp_path) -> None:
        volume = np.zeros((30, 40, 4), dtype=np.float32)
        volume[5:25, 5:35, :] = 50.0
        affine = np.diag([0.9, 1.2, 3.0, 1.0])  # slices along the last axis: 0.9 x 1.2 mm
        for name in ("t1.nii.gz", "t2.nii.gz"):
            nib.save(nib.Nifti1Image(volume, affine), tmp_path / name)
        files = [str(tmp_path / "t1.nii.gz"), str(tmp_path / "t2.nii.gz")]
        pairs, _ = load_pairs(files, axis=2, spacing=2.0)
        # rows and columns resampled by their own factors (was: both by 2.0 / 0.9)
        assert pairs.spacing == pytest.approx((2.0, 2.0), rel=0.05)
        raw, _ = load_pairs(files, axis=2)
        assert raw.spacing[0] != raw.spacing[1]

    def test_nifti_pair_with_other_pixel_sizes_is_refused(self, tmp_path) -> None:
        volume = np.zeros((20, 24, 4), dtype=np.float32)
        volume[4:16, 4:20] = 50.0
        nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "t1.nii.gz")
        shifted = np.diag([2.0, 2.0, 1.0, 1.0])
        shifted[:3, 3] = 50.0  # another origin alone would be a misalignment, and fine
        nib.save(nib.Nifti1Image(volume, shifted), tmp_path / "t2.nii.gz")
        files = [str(tmp_path / "t1.nii.gz"), str(tmp_path / "t2.nii.gz")]
        with pytest.raises(
            ValueError, match=r"same in-plane pixel size.*\(1.0, 1.0\).*\(2.0, 2.0\)"
        ):
            load_pairs(files, axis=2)
        moved = np.eye(4)
        moved[:3, 3] = 50.0
        nib.save(nib.Nifti1Image(volume, moved), tmp_path / "t2.nii.gz")
        assert len(load_pairs(files, axis=2)[0]) == 4

    def test_slices_too_small_for_the_method_fail_before_out_dir(self, tmp_path) -> None:
        out_dir = tmp_path / "run"
        config = tiny_config(out_dir, method="nicegan", backbone={"base_channels": 4})
        with pytest.raises(
            ConfigError, match=r"slices \(32 x 32 px\) do not fit method 'nicegan'.*>= 96"
        ):
            Trainer(config, data=tiny_data(), progress=False)
        assert not out_dir.exists()  # nothing claimed: the fixed config can use the same folder

    def test_the_fit_check_leaves_the_random_state_alone(self, monkeypatch) -> None:
        # MUNIT's generator side draws random styles: the check must not move the RNG
        config = tiny_config(None, method="munit", mode="nc", backbone={"base_channels": 4})
        Trainer(config, data=tiny_data(), progress=False)
        with_check = torch.rand(3)
        monkeypatch.setattr(Trainer, "_check_slices_fit_the_model", lambda self: None)
        Trainer(config, data=tiny_data(), progress=False)
        assert torch.equal(torch.rand(3), with_check)

    @pytest.mark.parametrize(
        ("source", "match"),
        [
            ("missing-folder", "neither 'icbm152' nor an existing folder"),
            ("one.nii.gz", "one NIfTI file"),
        ],
    )
    def test_bad_sources(self, source: str, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            load_training_data(tiny_config(None, data=source))


class TestStepSampler:
    @pytest.mark.parametrize(
        ("arguments", "match"),
        [
            ((5, 0), "batch_size must be an int >= 1"),
            ((5, -1), "batch_size must be an int >= 1"),
            ((5, 2, 0, 0), "world_size must be an int >= 1"),
            ((5, 2, 3, 2), "rank must be < world_size=2"),
            ((5, 2, 0, 1, -1), "seed must be an int >= 0"),
        ],
    )
    def test_invalid_arguments(self, arguments, match) -> None:
        num_items, batch_size, *rest = arguments
        options = dict(zip(("rank", "world_size", "seed"), rest, strict=False))
        options.setdefault("seed", 0)
        with pytest.raises(ValueError, match=match):
            StepSampler(num_items, batch_size, **options)
        with pytest.raises(ValueError, match="step must be an int >= 0"):
            StepSampler(5, 1, seed=0).global_batch(-1)

    def test_batches_are_a_function_of_seed_and_step(self) -> None:
        first, second = StepSampler(10, 4, seed=3), StepSampler(10, 4, seed=3)
        assert [first.global_batch(s) for s in (5, 0, 3)] == [
            second.global_batch(s) for s in (5, 0, 3)
        ]
        assert StepSampler(10, 4, seed=4).global_batch(0) != first.global_batch(0)

    def test_each_epoch_is_a_permutation(self) -> None:
        sampler = StepSampler(9, 3, seed=0)
        for epoch in range(2):
            seen = sum((sampler.global_batch(epoch * 3 + i) for i in range(3)), [])
            assert sorted(seen) == list(range(9))
        assert sampler.global_batch(0) + sampler.global_batch(1) != sampler.global_batch(
            3
        ) + sampler.global_batch(4)

    def test_ranks_share_the_global_batch(self) -> None:
        ranks = [StepSampler(10, 4, seed=0, rank=r, world_size=2) for r in range(2)]
        for step in range(4):
            shares = [sampler.local_batch(step) for sampler in ranks]
            assert sorted(shares[0] + shares[1]) == sorted(ranks[0].global_batch(step))
            assert len(shares[0]) == len(shares[1]) == 2

    @pytest.mark.parametrize(
        ("args", "match"),
        [((3, 4, 1), "larger than the 3"), ((10, 3, 2), "divisible by the number")],
    )
    def test_invalid(self, args, match) -> None:
        items, batch, world = args
        with pytest.raises(ValueError, match=match):
            StepSampler(items, batch, seed=0, world_size=world)


class TestEvaluationHelpers:
    def test_a_perfect_translation(self) -> None:
        test = tiny_data().test

        def oracle(source: torch.Tensor) -> torch.Tensor:
            index = [int((test.source == s).flatten(1).all(1).nonzero()[0]) for s in source]
            return test.target[index]

        metrics = evaluate_translation(oracle, test, batch_size=10)
        assert (
            metrics["nmae"] == 0 and metrics["psnr"] == 100 and metrics["ssim"] == pytest.approx(1)
        )

    def test_linear_map_is_recovered(self) -> None:
        data = tiny_data().train[:5]
        target = torch.where(data.mask, -0.5 * data.source + 0.2, torch.full_like(data.source, -1))
        pairs = type(data)(
            source=data.source, target=target, mask=data.mask, slice_index=data.slice_index
        )
        a, b = fit_linear_map(pairs)
        assert (a, b) == (pytest.approx(-0.5, abs=1e-6), pytest.approx(0.2, abs=1e-6))


class TestTranslateSlices:
    def test_identity_on_the_training_grid(self) -> None:
        slices = torch.rand(5, 1, 30, 26) * 2 - 1
        out = translate_slices(lambda x: x, slices, model_size=(32, 32), batch_size=2)
        assert torch.equal(out, slices)

    def test_model_sees_the_training_size(self) -> None:
        sizes = []

        def spy(batch: torch.Tensor) -> torch.Tensor:
            sizes.append(tuple(batch.shape[-2:]))
            return batch

        translate_slices(spy, torch.zeros(3, 1, 20, 40), model_size=(32, 32), batch_size=8)
        translate_slices(
            spy,
            torch.zeros(1, 1, 60, 60),
            model_size=(32, 32),
            slice_spacing=(1.0, 1.0),
            model_spacing=(2.0, 2.0),
        )
        assert sizes == [(32, 48), (32, 32)]  # padded to a multiple of 16; resampled to 30x30

    def test_resampling_round_trip_is_close(self) -> None:
        ramp = torch.linspace(-1, 1, 64).repeat(64, 1)[None, None]
        out = translate_slices(
            lambda x: x,
            ramp,
            model_size=(32, 32),
            slice_spacing=(1.0, 1.0),
            model_spacing=(2.0, 2.0),
        )
        assert out.shape == ramp.shape and (out - ramp)[..., 4:-4, 4:-4].abs().max() < 0.05


def test_evaluation_helpers_check_their_arguments() -> None:
    pairs = tiny_data().test
    for batch_size in (0, -1, 1.5):
        with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
            evaluate_translation(lambda x: x, pairs, batch_size=batch_size)
    with pytest.raises(TypeError, match="pairs must be a PairedSlices .*got Tensor"):
        fit_linear_map(pairs.source)
    with pytest.raises(ValueError, match="no foreground pixel"):
        fit_linear_map(dataclasses.replace(pairs, mask=torch.zeros_like(pairs.mask)))
    with pytest.raises(TypeError, match="model must have a translate method"):
        evaluate_model(torch.nn.Identity(), pairs)
    with pytest.raises(ValueError, match="the checkpoint dict is not a regcorrect checkpoint"):
        load_model({"foo": 1})
    with pytest.raises(TypeError, match="config must be a TrainingConfig, got dict"):
        build_from_config({}, (32, 32))
