"""The scripts in examples/ run with tiny settings and print what they promise."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest

from regcorrect.training import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, argv: list[str], monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), *argv])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return capsys.readouterr().out


def test_wrap_your_gan_recovers_the_shift(monkeypatch, capsys) -> None:
    out = run_example(
        "wrap_your_gan.py",
        ["--steps", "120", "--size", "32", "--shift", "2", "-1"],
        monkeypatch,
        capsys,
    )
    match = re.search(r"recovered shift \(dy, dx\) = \(([-+.\d]+), ([-+.\d]+)\) px", out)
    assert match, out
    dy, dx = float(match.group(1)), float(match.group(2))
    assert abs(dy - 2) < 1.0 and abs(dx + 1) < 1.0, out
    assert "true shift      (dy, dx) = (+2.00, -1.00) px" in out


def test_train_reggan_icbm(monkeypatch, capsys, tmp_path) -> None:
    out = run_example(
        "train_reggan_icbm.py",
        ["--steps", "2", "--size", "32", "--quiet", "--augment", "--out", str(tmp_path / "run")],
        monkeypatch,
        capsys,
    )
    assert re.search(r"before training: +NMAE 0\.\d{4}", out), out
    assert re.search(r"after +2 steps: +NMAE 0\.\d{4} +PSNR [\d.]+ +SSIM -?[\d.]+", out), out
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert load_config(tmp_path / "run" / "config.yaml").augmentation == {}
    out = run_example(
        "train_reggan_icbm.py",
        [
            "--steps",
            "3",
            "--size",
            "32",
            "--quiet",
            "--augment",
            "--out",
            str(tmp_path / "run"),
            "--resume",
        ],
        monkeypatch,
        capsys,
    )
    assert re.search(r"after +3 steps", out) and "before training" not in out, out


def test_compare_modes_prints_a_table(monkeypatch, capsys) -> None:
    out = run_example(
        "compare_modes.py", ["--steps", "1", "--size", "32", "--quiet"], monkeypatch, capsys
    )
    rows = [line for line in out.splitlines() if re.match(r"\| (C|C\+R|NC|NC\+R) \|", line)]
    assert [row.split("|")[1].strip() for row in rows] == ["C", "C+R", "NC", "NC+R"], out
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        nmae, psnr, ssim = (float(cells[i]) for i in (2, 3, 4))
        assert 0 < nmae < 1 and psnr > 0 and -1 <= ssim <= 1


@pytest.mark.parametrize("name", ["wrap_your_gan.py", "train_reggan_icbm.py", "compare_modes.py"])
def test_help(name: str, monkeypatch, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        run_example(name, ["--help"], monkeypatch, capsys)
    assert exit_.value.code == 0
    assert "--steps" in capsys.readouterr().out
