"""The wings: gafkd's imaging, data, GPU, results and experiments layers are packages that name
their API."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import FunctionType

import pytest

WINGS = ("gafkd.imaging", "gafkd.data", "gafkd.gpu", "gafkd.results", "gafkd.experiments")
MOVED = (
    "gafkd.series",
    "gafkd.mtf",
    "gafkd.nvml",
    "gafkd.health",
    "gafkd.accuracy",
    "gafkd.reference",
    "gafkd.figure",
    "gafkd.geneactiv",
    "gafkd.signalset",
    "gafkd.split",
    "gafkd.grid",
    "gafkd.grids",
    "gafkd.plan",
    "gafkd.batch",
    "gafkd.launch",
    "gafkd.hostqueue",
    "gafkd.reboot",
    "gafkd.control",
    "gafkd.status",
    "gafkd.screen",
    "gafkd.slurm",
    "gafkd.slurm_job",
    "gafkd.slurm_state",
)


def test_the_science_api_stays_importable_as_the_first_issue_named_it() -> None:
    from gafkd.imaging import encode, gadf, gasf, mtf, paa

    for function in (gasf, gadf, mtf, paa, encode):
        assert isinstance(function, FunctionType), function  # not a submodule of that name
    from gafkd.data import SignalSet, load_dataset, load_geneactiv

    assert isinstance(load_geneactiv, FunctionType)
    assert isinstance(load_dataset, FunctionType)
    assert isinstance(SignalSet, type)


@pytest.mark.parametrize("name", WINGS)
def test_each_wing_is_a_package_whose_init_names_its_public_api(name: str) -> None:
    wing = importlib.import_module(name)
    assert hasattr(wing, "__path__"), f"{name} is a module, not a package"
    assert (wing.__doc__ or "").strip()
    assert wing.__all__
    assert [n for n in wing.__all__ if not hasattr(wing, n)] == []


@pytest.mark.parametrize("name", MOVED)
def test_the_flat_modules_the_wings_replaced_are_gone(name: str) -> None:
    assert importlib.util.find_spec(name) is None


def test_the_data_wing_imports_without_scipy_or_torch() -> None:
    """scipy is imported by the GENEActiv source only, when `load_geneactiv` is called."""
    code = "import sys, gafkd.data\nprint(sorted({'scipy', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_gpu_wing_imports_without_torch() -> None:
    """`gafkd status`, `launch` and the runner import it; torch would cost them ~2 s."""
    code = "import sys, gafkd.gpu, gafkd.gpu.nvml, gafkd.gpu.health\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_results_wing_imports_without_torch_or_matplotlib() -> None:
    """`gafkd results` and `invoke results` import it; matplotlib waits until `plot` draws."""
    code = "import sys, gafkd.results\nprint('torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_the_lab_reference_ships_in_the_results_wing() -> None:
    import gafkd.results
    from gafkd.experiments.grid import shipped_grids
    from gafkd.results import LAB_REFERENCE

    assert LAB_REFERENCE.is_file()
    assert LAB_REFERENCE.parent == Path(gafkd.results.__file__).parent
    assert "reference_lab" not in shipped_grids()


def test_the_experiments_wing_imports_without_torch() -> None:
    """`gafkd status`, `launch` and the runner import it; torch would cost them ~2 s."""
    code = "import sys, gafkd.experiments\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_experiments_module_is_named_after_a_function_the_wing_exports() -> None:
    import gafkd.experiments

    folder = Path(gafkd.experiments.__file__).parent
    modules = {path.stem for path in folder.glob("*.py")}
    assert modules & set(gafkd.experiments.__all__) == set()


def test_the_grids_and_dataset_presets_ship_in_the_experiments_wing() -> None:
    import gafkd.experiments
    from gafkd.experiments import shipped_grids

    grids = Path(gafkd.experiments.__file__).parent / "grids"
    assert (grids / "datasets.toml").is_file()
    assert {"kd_alpha", "kd_gaf", "gaf_teachers"} <= set(shipped_grids())
    assert {path.parent for path in shipped_grids().values()} == {grids}


@pytest.mark.parametrize(
    "name", ["slurm", "slurm_job", "slurm_state", "status", "control", "plan", "launch"]
)
def test_the_backends_and_readers_take_the_batch_format_from_batchdir_not_the_runner(
    name: str,
) -> None:
    """The batch folder's format lives in `batchdir`; only `launch` (and the CLI) start the
    runner, so only they may import it, and only for `run_batch` and `Slots`."""
    import gafkd.experiments

    path = Path(gafkd.experiments.__file__).parent / f"{name}.py"
    taken = {
        alias.name
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module == "gafkd.experiments.runner"
        for alias in node.names
    }
    assert taken <= ({"run_batch", "Slots"} if name == "launch" else set()), taken
