"""Damaged files: every command that meets one ends with one line naming the file, what is wrong
and the fix, shows no traceback, and writes nothing before it fails (issue 10, item 10).

A real batch folder (a teacher, a student distilled from it, a run that fails) is made once per
module; each case copies it, damages one file and runs one command through the CLI's entry.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io

from gafkd import cli, rundir
from gafkd.config import dump_toml
from gafkd.experiments.launch import launch

GRID = """
name = "tiny"
[axes]
seed = [0]
[base]
data = {{ source = "npz", path = "{data}", test_subjects = [0], val_subjects = [1] }}
imaging = {{ image_size = 8 }}
train = {{ epochs = 2, batch_size = 16 }}
[[stages]]
name = "teacher"
base = {{ student = {{ name = "wrn10_1", input = "signal" }} }}
[[stages]]
name = "student"
base = {{ student = {{ name = "wrn10_1", input = "signal" }} }}
teachers = {{ signal = "teacher" }}
[[stages]]
name = "broken"
base = {{ student = {{ name = "wrn10_1" }}, train = {{ init_from = "no/such/run" }} }}
"""

BATCH = "runs/tiny/.batch"
PLAN, STATE = f"{BATCH}/plan.json", f"{BATCH}/state.json"
CANCELLED, SLURM = f"{BATCH}/cancelled.json", f"{BATCH}/slurm.json"
TEACHER_ID = "teacher/default/seed0"
TEACHER = f"runs/tiny/{TEACHER_ID}"
STUDENT = "runs/tiny/student/default/seed0"
BROKEN = "runs/tiny/broken/default/seed0"
RESULT, CHECKPOINT = f"{TEACHER}/result.json", f"{TEACHER}/checkpoint.pt"
REWRITTEN = "rewritten from the checkpoint's 2 epochs"
LOCKS = ("lock", ".lock")  # a lock file records its last holder; it is not state


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, tiny_npz: Path) -> Path:
    """A finished batch: teacher and student done (2 epochs), broken failed; folder/root."""
    folder = tmp_path_factory.mktemp("damaged")
    grid = folder / "tiny.toml"
    grid.write_text(GRID.format(data=tiny_npz.as_posix()))
    launch(str(grid), [], folder / "root", foreground=True, per_gpu=2, retries=0, out=io.StringIO())
    state = json.loads((folder / "root" / STATE).read_text())["runs"]
    assert {run_id.split("/")[0]: s["status"] for run_id, s in state.items()} == {
        "teacher": "done",
        "student": "done",
        "broken": "failed",
    }
    return folder


@pytest.fixture
def root(made: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COLUMNS", "1000")  # rich: one screen line per status line
    shutil.copytree(made / "root", tmp_path / "root", symlinks=True)
    shutil.copy(made / "tiny.toml", tmp_path / "tiny.toml")
    return tmp_path / "root"


# -- damage and commands -------------------------------------------------------------------------


def truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def truncated_record(path: Path) -> None:
    """A slurm.json as ``--backend slurm`` writes it, cut in half."""
    stage = {"job_id": "7", "runs": ["teacher/default/seed0"], "tasks": ["7_0"]}
    path.write_text(json.dumps({"host": "login", "stages": {"teacher": stage}}))
    truncated(path)


def garbage(path: Path) -> None:
    path.write_bytes(b"\x00\xff\xfe not what gafkd wrote \x80\x81")


def empty(path: Path) -> None:
    path.write_bytes(b"")


def writes(text: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        path.write_text(text)

    damage.__name__ = f"holds {text}"
    return damage


def train_config(root: Path, run_id: str, **data: Any) -> Path:
    """A config for `gafkd train` of a planned run in the copied tree, written beside the tree;
    the run's config.toml says the same, so the run counts as the same run."""
    plan = json.loads((root / PLAN).read_text())
    run = next(r for r in plan["runs"] if r["id"] == run_id)
    run_dir = (root / run["run_dir"]).resolve()
    config = dict(run["config"]) | {"out_dir": str(run_dir)}
    config["data"] = dict(config["data"]) | data
    config["teachers"] = {
        role: {"run": str((root / t["run"]).resolve()), "config": ""}
        for role, t in config["teachers"].items()
    }
    (run_dir / "config.toml").write_text(dump_toml(config))
    path = root.parent / "train.toml"
    path.write_text(dump_toml(config))
    return path


def not_done(root: Path, run: str = TEACHER, keep_previous: bool = False) -> None:
    (root / run / "result.json").unlink()
    if not keep_previous:
        (root / run / "checkpoint.prev.pt").unlink()


def damaged_npz(root: Path) -> Path:
    path = root.parent / "data.npz"
    shutil.copy(json.loads((root / PLAN).read_text())["runs"][0]["config"]["data"]["path"], path)
    truncated(path)
    return path


def damaged_mat_folder(root: Path) -> Path:
    folder = root.parent / "geneactiv" / "Window-size-8"
    folder.mkdir(parents=True)
    for number in range(1, 15):
        path = folder / f"ID-{number % 2}_CLASS-{number}_Window-1.mat"
        scipy.io.savemat(path, {"xw": np.ones((8, 3))}, do_compression=True)
    truncated(folder / "ID-1_CLASS-7_Window-1.mat")
    return folder.parent


def train_on_damaged_npz(root: Path) -> list[str]:
    not_done(root)
    return ["train", str(train_config(root, TEACHER_ID, path=str(damaged_npz(root))))]


def train_on_mat(root: Path) -> list[str]:
    not_done(root)
    data = {"source": "geneactiv", "path": str(damaged_mat_folder(root)), "window": 8}
    return ["train", str(train_config(root, TEACHER_ID, **data, classes=14))]


def train_on_pamap2(root: Path) -> list[str]:
    """A Protocol folder whose second file ends in a truncated line, as a copy cut short."""
    not_done(root)
    folder = root.parent / "Protocol"
    folder.mkdir()
    rows = [" ".join([f"{5 + i / 100:.2f}", "1", "NaN", *["1.5"] * 51]) for i in range(41)]
    for subject in (101, 102):
        (folder / f"subject{subject}.dat").write_text("\n".join(rows) + "\n")
    truncated(folder / "subject102.dat")
    data = {"source": "pamap2", "path": str(folder), "window": 8}
    return ["train", str(train_config(root, TEACHER_ID, **data))]


COMMANDS: dict[str, Callable[[Path], list[str]]] = {
    "launch": lambda root: ["launch", str(root.parent / "tiny.toml"), "--root", str(root)],
    "launch --resume": lambda root: ["launch", "tiny", "--resume", "--root", str(root)],
    "status": lambda root: ["status", "--root", str(root)],
    "results": lambda root: ["results", "tiny", "--root", str(root)],
    "logs": lambda root: ["logs", "broken/default/seed0", "--root", str(root)],
    "cancel": lambda root: ["cancel", "tiny", "--root", str(root)],
    "runner": lambda root: ["batch-run", "tiny", "--root", str(root)],
    "train": lambda root: ["train", str(train_config(root, TEACHER_ID))],
}


@dataclass(frozen=True)
class Case:
    file: str  # relative to the root; "" when the setup damages the file itself
    damage: Callable[[Path], None] | None
    command: str
    fails: bool = True  # False: the command works (status shows the batch as damaged)
    fix: str = ""  # words of the fix the line must give
    setup: Callable[[Path], list[str] | None] | None = None  # may give the command's argv
    shows: str = "damaged"  # what a command that works prints about it

    @property
    def id(self) -> str:
        name = self.damage.__name__ if self.damage else "planted"
        return f"{Path(self.file).name or 'file'}-{name}-{self.command}"


PLAN_FIX = "launch the grid again without --resume"
STATE_FIX = "delete it; `gafkd launch tiny --resume` writes it anew"
RESULT_FIX = "delete it to train that run again"
CASES = [
    *(Case(PLAN, truncated, c, fix=PLAN_FIX) for c in ("launch --resume", "results", "logs")),
    *(Case(PLAN, truncated, c, fix=PLAN_FIX) for c in ("cancel", "runner")),
    Case(PLAN, truncated, "status", fails=False, fix=PLAN_FIX),
    Case(PLAN, empty, "status", fails=False, fix=PLAN_FIX),
    Case(PLAN, garbage, "results", fix=PLAN_FIX),
    Case(PLAN, writes('{"grid": "tiny"}'), "cancel", fix=PLAN_FIX),
    Case(PLAN, writes('{"grid": "tiny", "runs": [{"id": 3}]}'), "status", False, PLAN_FIX),
    Case(STATE, truncated, "status", fails=False, fix=STATE_FIX),
    Case(STATE, writes("[]"), "status", fails=False, fix=STATE_FIX),
    Case(STATE, truncated, "results", fix=STATE_FIX),
    Case(STATE, truncated, "cancel", fix=STATE_FIX),
    Case(STATE, writes('{"runner": {}, "runs": {"a": 1}}'), "cancel", fix=STATE_FIX),
    *(
        Case(CANCELLED, garbage, c, fix="cancel the runs again")
        for c in ("launch --resume", "cancel", "runner")
    ),
    *(
        Case(SLURM, truncated_record, c, fix="delete it and launch the grid again")
        for c in ("launch", "launch --resume", "cancel")
    ),
    Case(SLURM, writes('{"stages": [1]}'), "status", fails=False, fix="delete it"),
    *(
        Case(RESULT, truncated, c, fix=RESULT_FIX)
        for c in ("launch", "launch --resume", "results", "runner", "train")
    ),
    Case(RESULT, writes('{"reported_acc": "high"}'), "results", fix=RESULT_FIX),
    Case(RESULT, writes("[1, 2]"), "train", fix=RESULT_FIX),
    *(
        Case(CHECKPOINT, damage, "train", fix="delete it to start that run over", setup=not_done)
        for damage in (truncated, garbage, empty)
    ),
    Case("data.npz", None, "train", fix="write or copy it again", setup=train_on_damaged_npz),
    Case("ID-1_CLASS-7_Window-1.mat", None, "train", fix="copy or export it", setup=train_on_mat),
    Case("subject102.dat", None, "train", fix="download or copy it again", setup=train_on_pamap2),
]


def snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every file's size and mtime, and every folder, under `root` (lock files aside)."""
    return {
        str(path.relative_to(root)): (
            (path.stat().st_size, path.stat().st_mtime_ns) if path.is_file() else None
        )
        for path in sorted(root.rglob("*"))
        if path.name not in LOCKS
    }


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_a_damaged_file_is_one_line_and_nothing_is_written(
    case: Case, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = case.setup(root) if case.setup else None
    if case.damage is not None:
        case.damage(root / case.file)
    argv = argv or COMMANDS[case.command](root)
    capsys.readouterr()
    before = snapshot(root)
    code, out, err = run(argv, capsys)
    assert "Traceback" not in out + err
    assert snapshot(root) == before  # nothing written, nothing half-done
    name = Path(case.file).name
    if case.fails:
        assert code == 1, out + err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("error: ")
        assert name in lines[0]
        assert case.fix in lines[0]
        return
    assert code == 0, err
    (line,) = [line for line in out.splitlines() if case.shows in line]
    assert name in line
    assert case.fix in line
    assert "not started" not in out


# -- files that a command works around -----------------------------------------------------------


def test_status_shows_a_damaged_batch_beside_the_others(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(root / "runs/tiny", root / "runs/other", symlinks=True)
    plan = json.loads((root / "runs/other/.batch/plan.json").read_text())
    (root / "runs/other/.batch/plan.json").write_text(json.dumps(plan | {"grid": "other"}))
    truncated(root / PLAN)
    code, out, err = run(["status", "--json", "--root", str(root)], capsys)
    assert code == 0, err
    batches = {batch["grid"]: batch for batch in json.loads(out)["batches"]}
    assert "plan.json is damaged" in batches["tiny"]["damaged"]
    assert batches["tiny"]["runner"]["state"] == "damaged"
    assert batches["other"]["damaged"] is None
    assert batches["other"]["counts"]["done"] == 2
    code, out, err = run(["status", "--root", str(root), "--grid", "tiny"], capsys)
    assert code == 0, err
    assert "damaged" in out
    assert "not started" not in out


def test_an_empty_or_garbled_error_txt_is_shown_as_such(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = json.loads((root / STATE).read_text())
    state["runs"]["broken/default/seed0"]["error"] = None  # status and results read error.txt
    (root / STATE).write_text(json.dumps(state))
    for damage, problem in ((empty, "error.txt is empty"), (garbage, "error.txt is damaged")):
        damage(root / BROKEN / "error.txt")
        code, out, err = run(["status", "--root", str(root)], capsys)
        assert code == 0, err
        (line,) = [line for line in out.splitlines() if "broken/default/seed0" in line]
        assert problem in line
        assert "log.txt" in line
        code, out, err = run(["results", "tiny", "--root", str(root)], capsys)
        assert code == 0, err
        assert "Traceback" not in out + err


def test_the_runner_names_an_empty_error_txt(tmp_path: Path) -> None:
    from gafkd.experiments.runner import _error_line

    (tmp_path / "error.txt").write_text("")
    expected = (
        f"{tmp_path / 'error.txt'} is empty; see {tmp_path / 'log.txt'} for why the run stopped"
    )
    assert _error_line(tmp_path, 1) == expected


def test_status_copes_with_a_slot_file_of_unexpected_content(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = root.parent / "queue"
    queue.mkdir()
    state = json.loads((root / STATE).read_text())
    state["runner"] |= {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "heartbeat": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "finished": None,
        "queue": str(queue),
    }
    (root / STATE).write_text(json.dumps(state))
    (queue / "cpu.0").write_text("[1, 2]")
    with (queue / "cpu.0").open() as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # held: status reads who holds it
        code, out, err = run(["status", "--root", str(root)], capsys)
    assert code == 0, err
    assert "Traceback" not in out + err
    assert "tiny" in out


def test_a_damaged_checkpoint_falls_back_to_the_previous_epoch(
    root: Path, made: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_done(root, keep_previous=True)
    truncated(root / CHECKPOINT)
    code, out, err = run(COMMANDS["train"](root), capsys)
    assert code == 0, err
    assert "Traceback" not in out + err
    (note,) = err.strip().splitlines()
    assert note.startswith(f"note: {root / CHECKPOINT} is damaged (")
    assert note.endswith("resuming from checkpoint.prev.pt, after epoch 1")
    again = json.loads((root / RESULT).read_text())
    first = json.loads((made / "root" / RESULT).read_text())
    assert again["final_test_acc"] == first["final_test_acc"]  # epoch 2 trained again, the same
    assert rundir.load_checkpoint(root / TEACHER)["epoch"] == 1  # type: ignore[index]
    kept = rundir.load_torch(root / TEACHER / "checkpoint.prev.pt", "", weights_only=False)
    assert kept["epoch"] == 0  # the damaged one was not kept in its place


def test_a_torn_metrics_file_is_rewritten_from_the_checkpoint_on_resume(
    root: Path, made: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = root / TEACHER / "metrics.jsonl"
    good = metrics.read_text()
    lines = good.splitlines(keepends=True)
    for damaged, problem in (
        (lines[0] + lines[1][:10], "its last line is cut off"),
        ("{oops\n" + lines[1], "line 1 is not JSON"),
    ):
        not_done(root, keep_previous=True)
        metrics.write_text(damaged)
        code, _, err = run(COMMANDS["train"](root), capsys)
        assert code == 0, err
        (note,) = err.strip().splitlines()
        assert note == f"note: {metrics} is damaged ({problem}); {REWRITTEN}"
        assert metrics.read_text() == good
        shutil.copy(made / "root" / TEACHER / "checkpoint.prev.pt", root / TEACHER)


def test_a_damaged_teacher_logit_cache_is_computed_again(
    root: Path, made: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (cache,) = (root / TEACHER / "logits").glob("*.pt")
    truncated(cache)
    for name in ("result.json", "checkpoint.pt", "checkpoint.prev.pt", "metrics.jsonl"):
        (root / STUDENT / name).unlink()
    code, _, err = run(["train", str(train_config(root, "student/default/seed0"))], capsys)
    assert code == 0, err
    (note,) = err.strip().splitlines()
    assert note.startswith(f"note: {cache} is damaged (")
    assert note.endswith("; computing the teacher's logits again")
    assert cache.read_bytes() == (made / "root" / cache.relative_to(root)).read_bytes()
    again = json.loads((root / STUDENT / "result.json").read_text())
    first = json.loads((made / "root" / STUDENT / "result.json").read_text())
    assert again["final_test_acc"] == first["final_test_acc"]


def test_status_shows_the_last_epoch_that_reads_from_a_garbled_metrics_file(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = json.loads((root / STATE).read_text())
    state["runs"][TEACHER_ID]["status"] = "running"
    (root / STATE).write_text(json.dumps(state))
    metrics = root / TEACHER / "metrics.jsonl"
    first = metrics.read_text().splitlines()[0]
    metrics.write_text(f'{first}\n{{"epoch": "two", "test_acc": "high"}}\n{{"epoch": 2, "te')
    code, out, err = run(["status", "--json", "--root", str(root)], capsys)
    assert code == 0, err
    (running,) = json.loads(out)["batches"][0]["running"]
    assert (running["epoch"], running["test_acc"]) == (1, json.loads(first)["test_acc"])


def test_results_tables_are_replaced_whole_never_rewritten_in_place(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A crash while writing leaves the old table or the new one: each is renamed into place."""
    tables = [root / "runs/tiny/results.md", root / "runs/tiny/results.csv"]
    for _ in range(2):
        inodes = [path.stat().st_ino if path.exists() else None for path in tables]
        code, _, err = run(["results", "tiny", "--root", str(root)], capsys)
        assert code == 0, err
        assert all(path.stat().st_ino != inode for path, inode in zip(tables, inodes, strict=True))
    assert not list((root / "runs/tiny").glob(".results.*"))  # no temporary file left behind
