"""The `slurm_cluster` fixture: a real single-node Slurm (stack.py), once per test session."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest


def _stack_module() -> Any:
    """stack.py, loaded by path: tests/ is not a package (pytest's importlib mode)."""
    if "gafkd_slurm_stack" in sys.modules:  # another conftest loaded it first
        return sys.modules["gafkd_slurm_stack"]
    path = Path(__file__).with_name("stack.py")
    spec = importlib.util.spec_from_file_location("gafkd_slurm_stack", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


slurm_stack = _stack_module()


@pytest.fixture(scope="session")
def stack() -> Any:
    """The stack.py module (Unavailable, bring_up, ...), for tests of the stack itself."""
    return slurm_stack


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Any]:
    """A running cluster (stack.Cluster) with SLURM_CONF set; skips when it cannot start."""
    with ExitStack() as running:
        try:
            cluster = running.enter_context(slurm_stack.running())
        except slurm_stack.Unavailable as error:
            pytest.skip(f"Slurm test stack unavailable: {error}")
        yield cluster
