"""The `slurm_cluster` fixture: a real single-node Slurm (stack.py), once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from tests.slurm import stack as slurm_stack


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
