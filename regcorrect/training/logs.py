"""Run logs: ``train.csv`` (losses), ``eval.csv`` (metrics), ``log.jsonl`` (both), TensorBoard.

Every row carries its ``step``. On resume the rows written after the checkpoint's step (by a run
that went on before it stopped) are removed first, so each step is logged once. TensorBoard
event files go to ``tensorboard/`` when the ``tensorboard`` package is installed (it is
optional: ``pip install regcorrect[tensorboard]``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

__all__ = ["RunLogger", "read_csv_log", "LOG_FILES"]

#: Files a run writes in its ``out_dir`` (besides ``checkpoint.pt`` and ``config.yaml``).
LOG_FILES = ("train.csv", "eval.csv", "log.jsonl", "tensorboard")


def read_csv_log(path: str | Path) -> list[dict[str, float]]:
    """Rows of a ``train.csv`` / ``eval.csv`` as dicts of floats (empty cells dropped)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as stream:
        return [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(stream)
        ]


def _truncate_csv(path: Path, step: int) -> None:
    if not path.is_file():
        return
    with path.open(newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        fields = reader.fieldnames or []
        rows = [row for row in reader if float(row["step"]) <= step]
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _truncate_jsonl(path: Path, step: int) -> None:
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


class RunLogger:
    """Append-only logs of one run in ``folder`` (nothing is written when ``folder`` is None).

    Args:
        folder: the run's ``out_dir``.
        tensorboard: also write TensorBoard events if the package is installed.
        resume_step: when resuming, drop rows with a larger step first.
    """

    def __init__(
        self, folder: str | Path | None, *, tensorboard: bool = True, resume_step: int | None = None
    ) -> None:
        self.folder = None if folder is None else Path(folder)
        self._fields: dict[str, list[str]] = {}
        self._writer: Any = None
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            for name in ("train.csv", "eval.csv"):
                _truncate_csv(self.folder / name, resume_step)
            _truncate_jsonl(self.folder / "log.jsonl", resume_step)
        for kind in ("train", "eval"):
            path = self.folder / f"{kind}.csv"
            if path.is_file():
                with path.open(newline="", encoding="utf-8") as stream:
                    self._fields[kind] = next(csv.reader(stream), [])
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None  # noqa: N806
            if SummaryWriter is not None:
                self._writer = SummaryWriter(
                    str(self.folder / "tensorboard"), purge_step=resume_step
                )

    @property
    def tensorboard_enabled(self) -> bool:
        return self._writer is not None

    def log(self, kind: str, step: int, values: dict[str, float]) -> None:
        """Append one row of ``kind`` (``"train"`` or ``"eval"``) at ``step``."""
        if self.folder is None:
            return
        row = {"step": step, **{k: float(v) for k, v in values.items()}}
        path = self.folder / f"{kind}.csv"
        fields = self._fields.get(kind)
        if fields is None or not path.is_file():
            fields = list(row)
            self._fields[kind] = fields
            with path.open("w", newline="", encoding="utf-8") as stream:
                csv.writer(stream).writerow(fields)
        with path.open("a", newline="", encoding="utf-8") as stream:
            csv.DictWriter(stream, fieldnames=fields, extrasaction="ignore").writerow(row)
        with (self.folder / "log.jsonl").open("a", encoding="utf-8") as stream:
            stream.write(json.dumps({"kind": kind, **row}) + "\n")
        if self._writer is not None:
            for name, value in values.items():
                self._writer.add_scalar(f"{kind}/{name}", float(value), step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
