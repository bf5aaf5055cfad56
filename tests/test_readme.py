"""README.md stays true: its "Reproduce the paper" table is what scripts/readme_table.py generates from
the committed evidence now, and every command line it shows runs with the project's environment."""
from __future__ import annotations

import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import readme_table  # noqa: E402


def test_the_reproduce_table_is_current():
    text = readme_table.README.read_text()
    assert readme_table.current_readme(text, readme_table.render()) == text, \
        "README.md's table is stale: run .venv/bin/python scripts/readme_table.py"


def test_the_table_holds_every_group_with_its_command_and_estimate():
    from sweep_jobs import GROUPS

    table = readme_table.render()
    for group in GROUPS:
        (row,) = [line for line in table.splitlines() if f"| {group} | `sh run_experiments.sh {group}` |" in line]
        assert re.search(r"\| \d+ \| [\d.]+ (s|min|h) \(measured", row), row   # every group has a measured source


def test_every_command_line_runs_with_the_projects_python():
    blocks = re.findall(r"```(?:sh|bash)\n(.*?)```", readme_table.README.read_text(), flags=re.S)
    lines = [line for block in blocks for line in block.splitlines()]
    bare = [line for line in lines if re.search(r"(^|[\s=])python3? [\w/]+\.py", line)]
    assert lines and not bare, bare
