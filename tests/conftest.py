"""Shared test settings: one thread (small convolutions run far faster on a shared 2-core CPU),
fixed seeds, and a hypothesis profile without deadlines."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "regcorrect",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("regcorrect")


@pytest.fixture(autouse=True)
def _deterministic_single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
