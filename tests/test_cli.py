"""The ``regcorrect`` command line: help, demo, train/resume, evaluate, translate, user errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from regcorrect.cli import main, own_data_notes
from regcorrect.training import TrainingConfig, load_checkpoint

from .training.helpers import tiny_settings

COMMANDS = ("demo", "train", "evaluate", "translate")


def write_config(path, **changes):
    path.write_text(yaml.safe_dump(tiny_settings(path.parent / "run", **{"steps": 2, **changes})))
    return path


def assert_user_error(capsys, code: int, match: str) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("regcorrect: error: ") and "Traceback" not in err
    assert re.search(match, lines[0]), lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run trained with ``regcorrect train`` (2 steps), shared by the tests below."""
    folder = tmp_path_factory.mktemp("trained")
    config = write_config(folder / "config.yaml")
    assert main(["train", str(config), "--quiet", "--threads", "1"]) == 0
    return folder


class TestHelp:
    def test_main_help(self, capsys) -> None:
        assert main(["--help"]) == 0
        out = capsys.readouterr().out
        assert all(command in out for command in COMMANDS)

    @pytest.mark.parametrize("command", COMMANDS)
    def test_command_help(self, capsys, command: str) -> None:
        assert main([command, "--help"]) == 0
        assert capsys.readouterr().out.startswith(f"usage: regcorrect {command}")

    def test_no_command_is_a_usage_error(self, capsys) -> None:
        assert main([]) == 2
        assert "usage:" in capsys.readouterr().err


def test_demo_writes_the_report_and_refuses_to_overwrite(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    code = main(
        ["demo", "--steps", "2", "--size", "32", "--out", str(out), "--quiet", "--threads", "1"]
    )
    assert code == 0, capsys.readouterr().err
    for name in ("report.md", "panel.png", "curves.png", "metrics.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert (out / "panel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert set(metrics) == {"RegGAN NC+R", "NC+R before training", "NC (no R)", "linear map"}
    for values in metrics.values():  # every number of the table comes from the run
        assert f"| {values['nmae']:.4f} | {values['psnr']:.2f} | {values['ssim']:.4f} |" in report
    assert "RegGAN NC+R" in capsys.readouterr().out

    code = main(["demo", "--steps", "2", "--size", "32", "--out", str(out), "--quiet"])
    assert_user_error(capsys, code, "already exists.*--force")


class TestTrain:
    def test_run_files(self, trained) -> None:
        run = trained / "run"
        assert {"checkpoint.pt", "config.yaml", "train.csv", "eval.csv"} <= {
            p.name for p in run.iterdir()
        }
        assert load_checkpoint(run / "checkpoint.pt")["training"]["step"] == 2

    def test_existing_out_dir_needs_force(self, tmp_path, capsys) -> None:
        config = write_config(tmp_path / "config.yaml", steps=1)
        assert main(["train", str(config), "--quiet"]) == 0
        assert_user_error(
            capsys, main(["train", str(config), "--quiet"]), "already exists.*--force"
        )
        assert main(["train", str(config), "--quiet", "--force"]) == 0

    def test_divergence_is_status_1_with_a_one_line_message(self, tmp_path, capsys) -> None:
        config = write_config(tmp_path / "config.yaml", steps=6, lr=1e20, checkpoint_every=1)
        assert main(["train", str(config), "--quiet"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in err[0], err
        assert err[0].startswith("regcorrect: error: training diverged at step "), err[0]
        assert "checkpoint.pt still holds step" in err[0]

    def test_resume_continues_to_the_new_step_count(self, tmp_path, capsys) -> None:
        config = write_config(tmp_path / "config.yaml", steps=1)
        assert main(["train", str(config), "--quiet"]) == 0
        write_config(tmp_path / "config.yaml", steps=2)
        assert main(["train", str(config), "--quiet", "--resume"]) == 0
        assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["training"]["step"] == 2
        capsys.readouterr()
        assert main(["train", str(config), "--quiet", "--resume"]) == 0  # finished already
        assert "already at step 2 of 2; nothing to train" in capsys.readouterr().err

    def test_resume_into_another_run_folder_is_refused(self, tmp_path, capsys) -> None:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        first = write_config(tmp_path / "a" / "config.yaml", steps=1)
        second = write_config(tmp_path / "b" / "config.yaml", steps=1, seed=5)
        for config in (first, second):
            assert main(["train", str(config), "--quiet"]) == 0
        other = tmp_path / "b" / "run"
        before = (other / "checkpoint.pt").read_bytes()
        resume = ["train", str(first), "--quiet", "--resume", str(tmp_path / "a" / "run")]
        code = main([*resume, "--out-dir", str(other)])
        assert_user_error(capsys, code, "is not empty and holds no checkpoint of this run")
        assert (other / "checkpoint.pt").read_bytes() == before  # B's run is untouched
        # into a new folder it continues there
        assert main([*resume, "--out-dir", str(tmp_path / "c")]) == 0
        assert load_checkpoint(tmp_path / "c" / "checkpoint.pt")["training"]["step"] == 1

    def test_overrides(self, tmp_path) -> None:
        config = write_config(tmp_path / "config.yaml", steps=1)
        other = tmp_path / "elsewhere"
        assert (
            main(
                [
                    "train",
                    str(config),
                    "--quiet",
                    "--device",
                    "cpu",
                    "--no-amp",
                    "--out-dir",
                    str(other),
                ]
            )
            == 0
        )
        assert load_checkpoint(other / "checkpoint.pt")["config"]["out_dir"] == str(other)


class TestEvaluate:
    def test_prints_and_writes_metrics(self, trained, tmp_path, capsys) -> None:
        output = tmp_path / "metrics.json"
        assert main(["evaluate", str(trained / "run"), "-o", str(output)]) == 0
        printed = capsys.readouterr().out
        record = json.loads(output.read_text())
        assert record["step"] == 2 and record["slices"] == 27 and record["noise_level"] == 0
        assert f"{record['nmae']:.4f}" in printed
        code = main(["evaluate", str(trained / "run" / "checkpoint.pt"), "-o", str(output)])
        assert_user_error(capsys, code, "already exists.*--force")

    def test_data_and_noise_level(self, trained, tmp_path) -> None:
        output = tmp_path / "noisy.json"
        assert (
            main(
                [
                    "evaluate",
                    str(trained / "run"),
                    "--data",
                    "icbm152",
                    "--noise-level",
                    "2",
                    "-o",
                    str(output),
                ]
            )
            == 0
        )
        assert json.loads(output.read_text())["noise_level"] == 2

    def test_run_with_relative_data_paths_evaluates_from_elsewhere(
        self, tmp_path, monkeypatch
    ) -> None:
        names = [f"s{i}" for i in range(5)]
        folder = _npy_folder(tmp_path / "work" / "slices", names, names)
        for path in folder.glob("*/*.npy"):
            image = np.full((32, 32), -1.0, dtype=np.float32)
            image[6:26, 6:26] = 0.5
            np.save(path, image)
        monkeypatch.chdir(tmp_path / "work")
        config = write_config(
            tmp_path / "work" / "c.yaml", data="slices", spacing=None, steps=1, batch_size=1
        )
        assert main(["train", str(config), "--quiet", "--threads", "1"]) == 0
        assert main(["train", str(config), "--quiet", "--resume"]) == 0  # same run, same paths
        monkeypatch.chdir(tmp_path)
        output = tmp_path / "e.json"
        assert main(["evaluate", str(tmp_path / "work" / "run"), "-o", str(output)]) == 0
        assert json.loads(output.read_text())["slices"] == 1

    def test_data_of_odd_size_is_padded_as_in_training(self, tmp_path) -> None:
        # a run without size on 33 x 35 slices, evaluated on its own data: the generators take
        # multiples of 4 (failed: "divisible by 4")
        names = [f"s{i}" for i in range(5)]
        folder = _npy_folder(tmp_path / "odd", names, names, shape=(33, 35))
        rng = np.random.default_rng(0)
        for path in folder.glob("*/*.npy"):
            image = np.full((33, 35), -1.0, dtype=np.float32)
            image[5:28, 4:30] = rng.uniform(-0.5, 1.0, (23, 26))
            np.save(path, image)
        config = write_config(
            tmp_path / "c.yaml", data=str(folder), size=None, spacing=None, steps=1, batch_size=1
        )
        assert main(["train", str(config), "--quiet", "--threads", "1"]) == 0
        output = tmp_path / "odd.json"
        arguments = ["evaluate", str(tmp_path / "run"), "--data", str(folder), "-o", str(output)]
        assert main(arguments) == 0
        record = json.loads(output.read_text())
        assert record["slices"] == 5 and 0 < record["nmae"] < 1


def make_volume(path, *, fill=None):
    rng = np.random.default_rng(0)
    volume = np.zeros((40, 36, 5), dtype=np.float32)
    volume[8:32, 6:30, 1:4] = rng.uniform(10, 100, (24, 24, 3))
    if fill is not None:
        volume[10, 10, 2] = fill
    affine = np.array([[-2.0, 0, 0, 40], [0, 2.0, 0, -30], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(volume, affine), path)
    return volume, affine


class TestTranslate:
    def test_round_trip_keeps_grid_and_background(self, trained, tmp_path, capsys) -> None:
        volume, affine = make_volume(tmp_path / "t1.nii.gz")
        output = tmp_path / "t2_synth.nii.gz"
        args = ["translate", str(trained / "run"), str(tmp_path / "t1.nii.gz"), "-o", str(output)]
        assert main(args) == 0
        image = nib.load(output)
        data = np.asarray(image.dataobj)
        assert data.shape == volume.shape and np.allclose(image.affine, affine)
        assert np.all(data[volume == 0] == 0) and data.min() >= 0 and data.max() <= 1
        assert data[volume > 0].std() > 0  # the brain was translated, not blanked
        assert_user_error(capsys, main(args), "already exists.*--force")
        assert main([*args, "--force", "--axis", "1"]) == 0

    def test_own_data_notes(self, tmp_path) -> None:
        pair = [str(tmp_path / "t1.nii.gz"), str(tmp_path / "t2.nii.gz")]
        notes = own_data_notes(TrainingConfig(data=pair))  # the paper's defaults on own data
        assert len(notes) == 3
        assert "initial_alignment" in notes[0] and "noise_level 1" in notes[1]
        assert "test_data" in notes[2]
        tuned = TrainingConfig(data=pair, test_data=pair, noise_level=0, initial_alignment="source")
        assert own_data_notes(tuned) == []
        assert own_data_notes(TrainingConfig()) == []  # the bundled templates: no note

    def test_outputs_go_to_new_folders(self, trained, tmp_path) -> None:
        make_volume(tmp_path / "t1.nii.gz")
        output = tmp_path / "new" / "deeper" / "t2.nii.gz"
        assert (
            main(
                ["translate", str(trained / "run"), str(tmp_path / "t1.nii.gz"), "-o", str(output)]
            )
            == 0
        )
        assert output.is_file()
        metrics = tmp_path / "reports" / "e.json"
        assert main(["evaluate", str(trained / "run"), "-o", str(metrics)]) == 0
        assert metrics.is_file()

    def test_output_must_be_nifti(self, trained, tmp_path, capsys) -> None:
        make_volume(tmp_path / "t1.nii.gz")
        code = main(
            [
                "translate",
                str(trained / "run"),
                str(tmp_path / "t1.nii.gz"),
                "-o",
                str(tmp_path / "out.png"),
            ]
        )
        assert_user_error(capsys, code, r"must end in \.nii or \.nii\.gz")


def _npy_folder(root, names_a, names_b, shape=(32, 32)):
    for side, names in (("A", names_a), ("B", names_b)):
        (root / side).mkdir(parents=True)
        for name in names:
            np.save(root / side / name, np.zeros(shape, dtype=np.float32))
    return root


class TestUserErrors:
    def test_missing_config(self, tmp_path, capsys) -> None:
        assert_user_error(capsys, main(["train", str(tmp_path / "absent.yaml")]), "does not exist")

    @pytest.mark.parametrize(
        ("changes", "match"),
        [
            (
                {"stpes": 3},
                r"unknown config key\(s\) 'stpes' \(did you mean 'steps'\?\); valid keys",
            ),
            ({"method": "stargan"}, "method must be one of"),
            ({"mode": "nc+x"}, "mode must be one of"),
        ],
    )
    def test_bad_config(self, tmp_path, capsys, changes, match) -> None:
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({**tiny_settings(tmp_path / "run"), **changes}))
        assert_user_error(capsys, main(["train", str(config)]), match)

    @pytest.mark.parametrize(
        ("names_b", "match"),
        [(["0.npy"], r"only in A/: \[1\.npy\]"), ([], "holds no .npy files")],
    )
    def test_bad_npy_folder(self, tmp_path, capsys, names_b, match) -> None:
        data = _npy_folder(tmp_path / "data", ["0.npy", "1.npy"], names_b)
        config = write_config(tmp_path / "config.yaml", data=str(data), spacing=None)
        assert_user_error(capsys, main(["train", str(config)]), match)

    def test_empty_folder(self, tmp_path, capsys) -> None:
        (tmp_path / "empty").mkdir()
        config = write_config(tmp_path / "config.yaml", data=str(tmp_path / "empty"))
        assert_user_error(capsys, main(["train", str(config)]), "folder A/ in root")

    @pytest.mark.parametrize("content", [b"not a checkpoint", b""])
    def test_corrupt_checkpoint(self, tmp_path, capsys, content) -> None:
        (tmp_path / "bad.pt").write_bytes(content)
        assert_user_error(capsys, main(["evaluate", str(tmp_path / "bad.pt")]), "corrupt")

    def test_missing_checkpoint(self, tmp_path, capsys) -> None:
        code = main(["evaluate", str(tmp_path / "absent.pt"), "-o", str(tmp_path / "m.json")])
        assert_user_error(capsys, code, "does not exist")

    def test_non_finite_volume(self, trained, tmp_path, capsys) -> None:
        make_volume(tmp_path / "nan.nii.gz", fill=np.nan)
        code = main(
            [
                "translate",
                str(trained / "run"),
                str(tmp_path / "nan.nii.gz"),
                "-o",
                str(tmp_path / "out.nii.gz"),
            ]
        )
        assert_user_error(capsys, code, "must be finite")
        assert not (tmp_path / "out.nii.gz").exists()

    def test_missing_input_volume(self, trained, tmp_path, capsys) -> None:
        code = main(
            [
                "translate",
                str(trained / "run"),
                str(tmp_path / "absent.nii.gz"),
                "-o",
                str(tmp_path / "out.nii.gz"),
            ]
        )
        assert_user_error(capsys, code, "does not exist")

    def test_resume_and_force_together(self, tmp_path, capsys) -> None:
        config = write_config(tmp_path / "config.yaml")
        assert_user_error(capsys, main(["train", str(config), "--resume", "--force"]), "contradict")

    def test_real_process_prints_one_line_and_exits_2(self, tmp_path) -> None:
        (tmp_path / "bad.pt").write_bytes(torch.zeros(3).numpy().tobytes())
        result = subprocess.run(
            [sys.executable, "-m", "regcorrect.cli", "evaluate", str(tmp_path / "bad.pt")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("regcorrect: error: ")
