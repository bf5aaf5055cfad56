"""`pip install .` installs the measuring API with requirements.txt's dependencies, and the README's API
example runs from another folder against the installed copy. The throwaway environment sees this
interpreter's packages through a .pth file (torch is reused, nothing is downloaded: --no-index)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

from packaging.requirements import Requirement  # matplotlib's dependency

REPO_ROOT = Path(__file__).resolve().parents[1]


def readme_api_example() -> str:
    section = (REPO_ROOT / "README.md").read_text().split("## Measuring any model (Python API)", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def requirement_lines() -> list[str]:
    lines = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def test_pip_install_gives_the_api_from_any_folder(tmp_path):
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    modules = project["tool"]["setuptools"]["py-modules"]
    assert {"representation_analysis", "variance_analysis"} <= set(modules)
    source = tmp_path / "checkout"
    source.mkdir()
    for name in ["pyproject.toml", "requirements.txt", "README.md", *(f"{module}.py" for module in modules)]:
        shutil.copy(REPO_ROOT / name, source / name)

    environment = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(environment)], check=True, timeout=120)
    python = environment / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "reuse_test_interpreter.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    clean = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    installed = subprocess.run([python, "-m", "pip", "install", "--no-index", "--no-build-isolation", str(source)],
                               capture_output=True, text=True, env=clean, timeout=300)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    assert "Successfully installed equi-separation-0.1.0" in installed.stdout

    metadata = next(Path(site).glob("equi_separation-*.dist-info")) / "METADATA"
    required = [line.removeprefix("Requires-Dist: ") for line in metadata.read_text().splitlines()
                if line.startswith("Requires-Dist: ")]
    assert [Requirement(line) for line in required] == [Requirement(line) for line in requirement_lines()]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = "import representation_analysis\nprint(representation_analysis.__file__)\n" + readme_api_example()
    ran = subprocess.run([python, "-c", script], cwd=elsewhere, capture_output=True, text=True, env=clean,
                         timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    location, values = ran.stdout.strip().splitlines()[-2:]
    assert Path(location).parent == Path(site)
    d_values, pearson_r = values.rsplit("] ", 1)
    assert len(d_values.strip("[").split(",")) == 4
    assert -1 <= float(pearson_r) <= 1
