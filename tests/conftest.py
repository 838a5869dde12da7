"""Shared fixtures: HOME points at a temporary folder so no real user files leak into tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


INTEGRATION = ("ssh", "slurm")  # markers of the tests that need services .ci/run sets up


def integration_skips(reports: list[pytest.TestReport]) -> tuple[dict[str, int], str]:
    """How many skipped tests carry each integration marker, and the first one's reason."""
    counts: dict[str, int] = {}
    reason = ""
    for report in reports:
        markers = [name for name in INTEGRATION if name in report.keywords]
        if not markers:
            continue
        counts[markers[0]] = counts.get(markers[0], 0) + 1
        if not reason and isinstance(report.longrepr, tuple):
            reason = str(report.longrepr[2]).removeprefix("Skipped: ")
    return counts, reason


def pytest_unconfigure(config: pytest.Config) -> None:
    """End the run with how many integration tests skipped and the command that runs them:
    a green run full of skips must not pass for a tested one."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    counts, reason = integration_skips(reporter.stats.get("skipped", []))
    if not counts:
        return
    total = sum(counts.values())
    each = ", ".join(f"{name} {count}" for name, count in counts.items())
    tests = "test" if total == 1 else "tests"
    reporter.write_line(f"{total} integration {tests} skipped ({each}): {reason}", yellow=True)
    reporter.write_line(
        "To run them too, as root: bash .ci/run (installs sshd, debootstrap and Slurm, then tests)",
        yellow=True,
    )
