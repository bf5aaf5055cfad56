"""Run the failing settings of fig1, depth_cfm and imbalanced through the original repository's own
scripts (HornHehhf/Equi-Separation) on this CPU, once at its seed 666, and record its r beside ours.

    git clone https://github.com/HornHehhf/Equi-Separation /path/to/original
    .venv/bin/python benchmarks/original_code.py /path/to/original [--report docs/reproduction] [--dry-run]

The settings are the report's misses at the paper's or the training-loss lr (reproduction_report_figures.misses_of).
Nothing of the original is copied into this project: its files are read from the checkout at run time
into a scratch folder, where only the CPU edits are made (CUDA default tensors and .cuda() calls to the
CPU, its '/path/to/working/dir' to the scratch folder); its data scripts then write their pickles there
from the raw Fashion-MNIST files (FASHION_MNIST_DIR, `apt-get install dataset-fashion-mnist`). The
original needs scikit-learn and scipy, which the suite does not: they are installed with pip into the
scratch folder only. The result is original_code.csv in the report folder; the report shows it.
"""
from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import campaign  # noqa: E402
import report_figures  # noqa: E402
import report_tables  # noqa: E402
import verdicts  # noqa: E402
from atomic_io import atomic_write  # noqa: E402
from experiment import cpu_model  # noqa: E402

GROUPS = ("fig1", "depth_cfm", "imbalanced")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
ORIGINAL_EXTRAS = ("scikit-learn==1.9.1", "scipy==1.17.1", "joblib==1.6.0", "threadpoolctl==3.8.0",
                   "narwhals==2.29.0")    # scikit-learn and its dependencies but numpy (the venv's)
# The CPU edits, the only changes made to the original's files: (what, its text, the CPU's text).
CPU_EDITS = (("default tensor type", "torch.set_default_tensor_type('torch.cuda.FloatTensor')",
              "torch.set_default_tensor_type('torch.FloatTensor')"),
             ("tensors moved to the GPU", ".cuda()", ""),
             ("working folder", "'/path/to/working/dir'", None))


def failing_settings(report_dir: Path) -> list[dict]:
    """The misses of GROUPS in the committed tables, each with its seed-666 run (our side of the pair)."""
    tables = report_tables.read_tables(report_dir)
    settings = []
    for group in campaign.GROUPS:
        if group.name not in GROUPS:
            continue
        rows = [row for row in tables.rows if row["group"] == group.name]
        for miss in report_figures.misses_of(group, verdicts.settings_of(group, rows), tables.profiles):
            ours = next(row for row in rows if row["seed"] == 666 and row["lr"] == miss["lr"]
                        and all(str(row[field]) == str(value) for field, value in
                                zip(group.setting, miss["setting"])))
            settings.append({"group": group.name, "setting": " ".join(str(v) for v in miss["setting"]),
                             "lr": miss["lr"], "row": ours})
    return settings


def original_command(group: str, row: dict) -> list[str]:
    """The original's command line for our row's setting, as its run_optimization*.sh scripts write it."""
    script = "representation_dynamics_terminal_imbalance.py" if group == "imbalanced" else "representation_dynamics_terminal.py"
    data = "cfm" if group == "imbalanced" else row["data"]
    return [script, f"data={data}", f"model={row['model']}", f"layer_num={row['depth']}",
            f"hidden_size={row['width']}", "measure=within_variance", f"optimization={row['optimizer']}",
            f"lr={row['lr']:g}"]


def prepare(checkout: Path, scratch: Path, fashion_mnist: Path) -> dict[str, int]:
    """The original's .py files in `scratch` with the CPU edits made, its raw Fashion-MNIST in torchvision's
    layout, and scikit-learn and scipy in scratch/site; returns how often each edit was made."""
    counts = {what: 0 for what, _, _ in CPU_EDITS}
    for source in sorted(checkout.glob("*.py")):
        text = source.read_text()
        for what, old, new in CPU_EDITS:
            counts[what] += text.count(old)
            text = text.replace(old, repr(str(scratch)) if new is None else new)
        (scratch / source.name).write_text(text)
    for folder in ("models", "figures", "data/FashionMNIST/raw"):
        (scratch / folder).mkdir(parents=True, exist_ok=True)
    for name in FASHION_MNIST_FILES:
        with gzip.open(fashion_mnist / f"{name}.gz") as packed:
            (scratch / "data/FashionMNIST/raw" / name).write_bytes(packed.read())
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                    str(scratch / "site"), *ORIGINAL_EXTRAS], check=True)
    return counts


def parse_output(text: str) -> dict:
    """r, slope, final loss and accuracies from what the original's script prints."""
    def last(pattern: str) -> float | None:
        found = re.findall(pattern, text)
        return float(found[-1]) if found else None
    number = r"(-?[0-9][0-9.]*(?:[eE][-+]?[0-9]+)?|nan)"
    return {"pearson_r": last(rf"pearson correlation (?:PearsonRResult\(statistic=|\()?(?:np\.float64\()?{number}"),
            "slope": last(rf"Coefficients: \s*\[{number}\]"),
            "final_train_loss": last(rf"epoch: \d+ loss: tensor\({number}"),
            "train_accuracy": last(rf"train accuracy {number}"),
            "test_accuracy": last(rf"test accuracy {number}")}


def run_original(scratch: Path, command: list[str], environment: dict, log: Path) -> tuple[str, float]:
    """(stdout, seconds) of one of the original's scripts run in `scratch`; its output also goes to `log`."""
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, *command], cwd=scratch, env=environment,
                               capture_output=True, text=True)
    seconds = time.perf_counter() - started
    log.write_text(completed.stdout + completed.stderr)
    if completed.returncode != 0:
        raise SystemExit(f"error: the original's {command[0]} exited {completed.returncode}: "
                         f"{(completed.stderr.strip().splitlines() or [''])[-1]} (its output: {log})")
    return completed.stdout, seconds


def checkout_commit(checkout: Path) -> str:
    found = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 else "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkout", type=Path, help="a checkout of HornHehhf/Equi-Separation")
    parser.add_argument("--report", type=Path, default=REPO_ROOT / "docs" / "reproduction",
                        help="the report folder: its tables give the settings; original_code.csv is written there")
    parser.add_argument("--fashion-mnist", type=Path, default=FASHION_MNIST_DIR,
                        help="the folder of the four gzipped Fashion-MNIST files (default: the OS package's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each original process")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--dry-run", action="store_true", help="print the settings and commands only")
    args = parser.parse_args(argv)
    if not (args.checkout / "representation_dynamics_terminal.py").is_file():
        parser.exit(2, f"error: checkout: {args.checkout} has no representation_dynamics_terminal.py\n")
    missing = [name for name in FASHION_MNIST_FILES if not (args.fashion_mnist / f"{name}.gz").is_file()]
    if missing and not args.dry_run:
        parser.exit(2, f"error: --fashion-mnist: {args.fashion_mnist} lacks {missing[0]}.gz "
                       "(apt-get install dataset-fashion-mnist)\n")
    settings = failing_settings(args.report)
    for setting in settings:
        print(f"{setting['group']} {setting['setting']} lr {setting['lr']:g}: "
              f"python {' '.join(original_command(setting['group'], setting['row']))}")
    if args.dry_run:
        return
    with tempfile.TemporaryDirectory() as temporary:
        scratch = args.keep or Path(temporary)
        scratch.mkdir(parents=True, exist_ok=True)
        edits = prepare(args.checkout, scratch.resolve(), args.fashion_mnist)
        print("CPU edits made: " + ", ".join(f"{what} x{count}" for what, count in edits.items()))
        environment = {**os.environ, "PYTHONPATH": str(scratch.resolve() / "site"),
                       "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        for prepare_script in ("data.py", "imbalanced_data.py"):
            run_original(scratch, [prepare_script, "data=cfm"], environment, scratch / f"{prepare_script}.log")
        commit, machine = checkout_commit(args.checkout), cpu_model()
        import torch
        records = []
        for setting in settings:
            command = original_command(setting["group"], setting["row"])
            log = scratch / f"{setting['group']}-{setting['setting'].replace(' ', '-')}-{setting['lr']:g}.log"
            stdout, seconds = run_original(scratch, command, environment, log)
            found = parse_output(stdout)
            print(f"{setting['group']} {setting['setting']} lr {setting['lr']:g}: original r {found['pearson_r']}, "
                  f"ours (seed 666) {setting['row']['pearson_r']:.4f}; {seconds:.0f} s")
            records.append({"group": setting["group"], "setting": setting["setting"], "lr": setting["lr"],
                            "our_run": setting["row"]["run"], "command": "python " + " ".join(command),
                            **found, "wall_seconds": round(seconds, 1), "machine": machine,
                            "torch": torch.__version__, "original_commit": commit})
    text = report_tables._csv_text(report_tables.ORIGINAL_CODE_COLUMNS, records)
    report_tables.read_original_code(args.report, report_tables.read_tables(args.report).rows, text)    # what the report will read
    atomic_write(args.report / "original_code.csv", lambda temporary: temporary.write_text(text))
    print(f"wrote {args.report / 'original_code.csv'}")


if __name__ == "__main__":
    main()
