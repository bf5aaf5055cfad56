"""`python -m build` makes a wheel with complete metadata whose only dependency is a torch version range;
it installs into a throwaway environment that holds torch alone (and its own dependencies), where the API
measures a model; with the `metrics` extra, in an environment that sees this interpreter's packages, the
README's API example and the TorchMetrics metric run from another folder against the installed copy.
Nothing is downloaded: the environments see packages through a .pth file, pip runs with --no-index."""
from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement  # matplotlib's dependency
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[1]
CLEAN = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}

TORCH_ONLY_SCRIPT = """
import importlib.util, sys
import torch
from torch import nn
from representation_analysis import measure_separation
assert all(importlib.util.find_spec(name) is None for name in ("numpy", "tqdm", "hydra", "matplotlib", "torchvision"))
torch.manual_seed(0)
net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
x, y = torch.randn(200, 8), torch.arange(200) % 4
one, two = (measure_separation(net, x, y, modules=["1", "3"], passes=p) for p in (1, 2))
assert all(abs(a["D"] / b["D"] - 1) < 1e-9 for a, b in zip(one["layers"], two["layers"]))
try:
    import separation_metric
except ImportError as error:
    print(error)
"""


def readme_api_example() -> str:
    section = (REPO_ROOT / "README.md").read_text().split("## Measuring any model (Python API)", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def built_wheel(tmp_path: Path) -> Path:
    """`python -m build --wheel` of a copy of the files the package is made of (no build isolation: offline)."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    source = tmp_path / "checkout"
    source.mkdir()
    for name in ["pyproject.toml", "README.md", "LICENSE", *(f"{m}.py" for m in project["tool"]["setuptools"]["py-modules"])]:
        shutil.copy(REPO_ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"),
                            str(source)], capture_output=True, text=True, env=CLEAN, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("equi_separation-*.whl")
    return wheel


def distributions_of(name: str, found: dict) -> dict:
    """{name: distribution} of `name` and, recursively, what it requires (extras left out)."""
    distribution = importlib.metadata.distribution(name)
    key = canonicalize_name(distribution.metadata["Name"])
    if key not in found:
        found[key] = distribution
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                distributions_of(requirement.name, found)
    return found


def environment(tmp_path: Path, name: str, packages: Path) -> Path:
    """A venv without pip whose site-packages sees `packages` through a .pth file; its python."""
    folder = tmp_path / name
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "packages_of_the_test.pth").write_text(f"{packages}\n")
    return python


def torch_alone(tmp_path: Path) -> Path:
    """A folder of links to torch, its dependencies and pip: what `pip install torch` gives a clean environment."""
    folder = tmp_path / "torch_alone"
    folder.mkdir()
    for distribution in {**distributions_of("torch", {}), **distributions_of("pip", {})}.values():
        for top in {file.parts[0] for file in distribution.files or [] if file.parts[0] != ".."}:
            if not (folder / top).exists() and Path(distribution.locate_file(top)).exists():
                (folder / top).symlink_to(Path(distribution.locate_file(top)).resolve())
    return folder


def install(python: Path, requirement: str) -> str:
    installed = subprocess.run([python, "-m", "pip", "install", "--no-index", "--no-build-isolation", requirement],
                               capture_output=True, text=True, env=CLEAN, timeout=300)
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    return installed.stdout


def test_the_wheel_installs_with_torch_alone_and_the_metrics_extra(tmp_path):
    wheel = built_wheel(tmp_path)
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"equi_separation-{version}.dist-info/METADATA").decode()
        assert f"equi_separation-{version}.dist-info/licenses/LICENSE" in archive.namelist()
    fields = [line.split(": ", 1) for line in metadata.split("\n\n", 1)[0].splitlines() if ": " in line]
    required = [Requirement(value) for key, value in fields if key == "Requires-Dist"]
    assert [str(r) for r in required if r.marker is None] == ["torch>=2.1"]        # a range, not a pin
    assert {str(r.marker) for r in required if r.marker} == {'extra == "metrics"', 'extra == "plot"'}
    present = {key for key, _ in fields}
    assert {"Version", "Summary", "License-Expression", "Project-URL", "Classifier", "Requires-Python"} <= present

    # torch alone: no numpy, tqdm, hydra, matplotlib or torchvision to be found
    bare = environment(tmp_path, "bare", torch_alone(tmp_path))
    assert f"Successfully installed equi-separation-{version}" in install(bare, str(wheel))
    ran = subprocess.run([bare, "-c", TORCH_ONLY_SCRIPT], cwd=tmp_path, capture_output=True, text=True, env=CLEAN,
                         timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.strip() == ("separation_metric needs torchmetrics: pip install 'equi-separation[metrics]' "
                                  "(or pip install torchmetrics)")

    # with the metrics extra (torchmetrics, as the suite's pins give it), from another folder
    full = environment(tmp_path, "full", Path(sysconfig.get_paths()["purelib"]))
    assert f"Successfully installed equi-separation-{version}" in install(full, f"{wheel}[metrics]")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = ("import representation_analysis, separation_metric\nprint(representation_analysis.__file__)\n"
              + readme_api_example())
    ran = subprocess.run([full, "-c", script], cwd=elsewhere, capture_output=True, text=True, env=CLEAN, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    location, values = ran.stdout.strip().splitlines()[-2:]
    assert Path(location).parent.name == "site-packages" and str(tmp_path / "full") in location
    d_values, pearson_r = values.rsplit("] ", 1)
    assert len(d_values.strip("[").split(",")) == 4
    assert -1 <= float(pearson_r) <= 1
