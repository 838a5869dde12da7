"""Repository-wide rules: dependency direction, documented tasks, README's Quick start."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def test_gafkd_imports_without_fabric_or_invoke() -> None:
    code = (
        "import sys, gafkd, gafkd.imaging, gafkd.data, gafkd.models, gafkd.distill, gafkd.train, "
        "gafkd.run, gafkd.cli\n"
        "banned = ('fabric', 'invoke', 'paramiko', 'provisioning')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in banned))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_status_launch_and_the_runner_import_without_torch() -> None:
    """`gafkd status` on a lab host is one ssh round trip; importing torch would cost ~2 s."""
    code = (
        "import sys, gafkd.cli, gafkd.experiments, gafkd.experiments.status, "
        "gafkd.experiments.launch, gafkd.experiments.runner, gafkd.experiments.batchdir, "
        "gafkd.experiments.control, gafkd.experiments.slurm, gafkd.experiments.slurm_state, "
        "gafkd.experiments.hostqueue, gafkd.experiments.reboot\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def root_tasks() -> Any:
    """The root ``tasks.py`` as a module, as invoke loads it."""
    sys.path.insert(0, str(ROOT))
    try:
        import tasks
    finally:
        sys.path.remove(str(ROOT))
    return tasks


def test_every_task_has_a_docstring_and_help_for_every_parameter() -> None:
    from invoke.collection import Collection

    found = list(Collection.from_module(root_tasks()).tasks.values())
    assert found
    for task in found:
        assert task.__doc__, task.name
        undocumented = [a.name for a in task.get_arguments() if not a.help]
        assert not undocumented, (task.name, undocumented)


def task_body_lines(path: Path) -> dict[str, int]:
    """Per ``@task`` function: the non-blank lines of its body, without its docstring and its
    imports (which stay inside a task so that ``invoke --list`` loads neither gafkd nor torch)."""
    source = path.read_text()
    lines = source.splitlines()
    found = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        named = [d.func if isinstance(d, ast.Call) else d for d in node.decorator_list]
        if not any(isinstance(d, ast.Name) and d.id == "task" for d in named):
            continue
        body = [
            statement
            for statement in node.body
            if not isinstance(statement, ast.Import | ast.ImportFrom)
            and not (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant))
        ]
        spans = {n for s in body for n in range(s.lineno, (s.end_lineno or s.lineno) + 1)}
        found[node.name] = sum(1 for n in spans if lines[n - 1].strip())
    return found


def test_no_task_body_is_over_fifteen_lines(tmp_path: Path) -> None:
    """tasks.py stays thin (docs/architecture.md): a task parses, calls one function, prints."""
    sizes = task_body_lines(ROOT / "tasks.py")
    assert set(sizes) == {"train", "launch", "status", "results", "cancel", "logs", "provision",
                          "doctor", "sync"}  # fmt: skip
    assert {name: size for name, size in sizes.items() if size > 15} == {}
    fat = tmp_path / "tasks.py"
    fat.write_text(
        '@task(help={})\ndef big(c):\n    """Doc."""\n    import os\n\n'
        + "".join(f"    x{i} = {i}\n" for i in range(16))
    )
    assert task_body_lines(fat) == {"big": 16}


def test_readme_quick_start_has_exactly_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    blocks = re.findall(r"```(?:sh|bash)?\n(.*?)```", section, re.S)
    commands = [line for line in blocks[0].splitlines() if line.strip()]
    assert len(commands) == 2
    assert "launch --grid kd_alpha" in commands[0]
    assert "pytest" in commands[1]


def test_every_cli_command_has_one_function_in_the_dispatch_table() -> None:
    import argparse

    from gafkd import cli

    subparsers = next(
        action for action in cli.parser()._actions if isinstance(action, argparse._SubParsersAction)
    )
    assert set(subparsers.choices) == set(cli.COMMANDS)
