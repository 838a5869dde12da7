"""The opt-in @reboot line: one per batch, other crontab lines untouched, removed at the end.

The real crontab on a real host is exercised by tests/test_remote.py (``--on-reboot``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gafkd.config import ConfigError
from gafkd.experiments import reboot

OTHER = "0 3 * * * /usr/bin/backup --all\n"


def test_the_line_resumes_the_grid_in_its_lab_folder_and_carries_a_marker(tmp_path: Path) -> None:
    line = reboot.entry(tmp_path, "kd_alpha", ["--per-gpu=2"], python="/env/bin/python")
    assert line.startswith(f"@reboot cd {tmp_path} && exec /env/bin/python -m gafkd launch ")
    assert f"kd_alpha --resume --root {tmp_path} --per-gpu=2 " in line
    assert line.endswith(reboot.marker(tmp_path, "kd_alpha"))


def test_adding_twice_keeps_one_line_and_the_users_other_lines(tmp_path: Path) -> None:
    line = reboot.entry(tmp_path, "kd_alpha")
    once = reboot.with_entry(OTHER, tmp_path, "kd_alpha", line)
    twice = reboot.with_entry(once, tmp_path, "kd_alpha", line)
    assert twice == once == OTHER + line + "\n"
    other_grid = reboot.with_entry(once, tmp_path, "kd_gaf", reboot.entry(tmp_path, "kd_gaf"))
    assert reboot.with_entry(other_grid, tmp_path, "kd_alpha", None).startswith(OTHER)
    assert "kd_alpha" not in reboot.with_entry(other_grid, tmp_path, "kd_alpha", None)
    assert reboot.with_entry(once, tmp_path, "kd_alpha", None) == OTHER


def test_a_folder_with_a_percent_sign_is_refused_since_cron_would_split_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="contains %"):
        reboot.entry(tmp_path / "100%", "kd_alpha")


def test_without_cron_on_reboot_is_one_error_and_removal_a_no_op(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no crontab anywhere
    with pytest.raises(ConfigError, match=r"no `crontab` command.*apt-get install cron"):
        reboot.install(tmp_path, "kd_alpha")
    assert reboot.remove(tmp_path, "kd_alpha") is False


def test_on_reboot_is_refused_for_a_foreground_batch(tmp_path: Path) -> None:
    from gafkd.experiments.launch import launch

    with pytest.raises(ConfigError, match="--on-reboot is for a detached local runner"):
        launch("kd_alpha", ["dataset=watch"], tmp_path, foreground=True, on_reboot=True)
    assert not (tmp_path / "runs").exists()


FAILING_CRONTAB = "#!/bin/sh\necho 'crontab: your UID is not allowed to use cron' >&2\nexit 1\n"


@pytest.mark.parametrize(
    ("crontab", "message"),
    [
        (None, r"--on-reboot needs cron, and this host has no `crontab` command"),
        (FAILING_CRONTAB, r"crontab -l failed: crontab: your UID is not allowed to use cron"),
    ],
)
def test_on_reboot_checks_cron_before_the_runner_starts(
    crontab: str | None,
    message: str,
    tmp_path: Path,
    tiny_npz: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gafkd.experiments.launch import launch

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if crontab is not None:
        (bin_dir / "crontab").write_text(crontab)
        (bin_dir / "crontab").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    grid = tmp_path / "solo.toml"
    grid.write_text(
        'name = "solo"\n[base]\n'
        f'data = {{ source = "npz", path = "{tiny_npz.as_posix()}" }}\ntrain = {{ epochs = 1 }}\n'
        '[[stages]]\nname = "only"\n'
    )
    root = tmp_path / "lab"
    with pytest.raises(ConfigError, match=message):
        launch(str(grid), [], root, on_reboot=True)
    assert not (root / "runs").exists()  # no plan, no runner
