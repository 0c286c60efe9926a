"""The README's Python examples run verbatim (lucidrains' pattern: README examples are tests)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


def test_readme_examples_run_in_sequence():
    namespace: dict = {}
    for block in BLOCKS:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    out = namespace["out"]
    assert out.displacement.shape == (2, 2, 64, 64)
    assert torch.isfinite(out.total)
    assert set(namespace["losses"]) >= {"adversarial", "correction", "smoothness"}
    assert namespace["translated"].shape == (2, 1, 64, 64)


@pytest.mark.parametrize("path", ["docs/index.md", "docs/conventions.md", "docs/api.md"])
def test_docs_exist(path):
    assert (README.parent / path).read_text().strip()
