"""The docstring examples of every module of the package run and give what they show."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
import torch

import regcorrect

MODULES = sorted(name for _, name, _ in pkgutil.walk_packages(regcorrect.__path__, "regcorrect."))

# Modules owned by others whose examples fail today (reported, not edited here). strict: the
# mark fails as soon as the example is fixed, so that it gets removed.
KNOWN_FAILURES = {}

# Modules of the core layer whose examples must exist (not only pass vacuously).
WITH_EXAMPLES = [
    "regcorrect.correction",
    "regcorrect.metrics",
    "regcorrect.losses.correction",
    "regcorrect.losses.smoothness",
    "regcorrect.losses.adversarial",
    "regcorrect.losses.cycle",
    "regcorrect.losses.centering",
    "regcorrect.registration.regunet",
]


def run_doctests(name: str) -> doctest.TestResults:
    module = importlib.import_module(name)
    return doctest.testmod(
        module,
        extraglobs={"torch": torch},
        optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS,
        verbose=False,
        report=True,
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.jit._script")  # via torch.compile
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.xfail(reason=KNOWN_FAILURES[name], strict=True))
        if name in KNOWN_FAILURES
        else name
        for name in MODULES
    ],
)
def test_doctests(name):
    torch.manual_seed(0)
    results = run_doctests(name)
    assert results.failed == 0, f"{results.failed} of {results.attempted} examples failed in {name}"


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_core_modules_have_examples(name):
    assert name in MODULES
    assert run_doctests(name).attempted > 0
