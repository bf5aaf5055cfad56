"""summarize_runs.py on hand-written results.json files: table values, the --best-lr choice, diverged
runs listed but never drawn, the figures written."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import run_records
import summarize_runs

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_run(logs: Path, name: str, *, data="cfm", model="GFNN", depth=6, width=100, optimizer="adam",
              lr=1e-3, seed=666, epochs=600, status="completed", loss=0.01, test_accuracy=0.8,
              first_d=30.0, ratio=1 / 3) -> Path:
    """A results.json as the entry point writes it; completed runs get D_l = first_d * ratio**l over
    depth + 2 points and the exact line fit of ln D_l."""
    points = depth + 2
    completed = status == "completed"
    layers = [{"index": i, "name": f"p{i}", "dim": width, "D": first_d * ratio ** i,
               "value": first_d * ratio ** i, "ratio": ratio if i else None} for i in range(points)]
    slope = math.log(ratio)
    results = {
        "config": {"data": {"name": data}, "model": {"name": model, "tag": f"L{depth}-w{width}"},
                   "optimization": {"name": optimizer}, "training": {"name": "standard"},
                   "layer_num": depth, "hidden_size": width, "lr": lr, "epochs": epochs, "seed": seed,
                   "measure": "within_variance", "analysis": {"bn_mode": "train_batches"},
                   "device": "cpu", "threads": 1, "log_root": str(logs)},
        "run_name": name, "status": status,
        "layers": layers if completed else [],
        "fit": {"slope": slope, "intercept": math.log(first_d), "rho": ratio, "pearson_r": -1.0,
                "r2": 1.0} if completed else None,
        "train_accuracy": 1.0 if completed else None,
        "test_accuracy": test_accuracy if completed else None,
        "final_train_loss": loss if completed else "nan",
        "epochs_completed": epochs, "wall_seconds": 12.5,
    }
    path = logs / name / "results.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(results))
    return path


@pytest.fixture
def logs(tmp_path) -> Path:
    logs = tmp_path / "logs"
    write_run(logs, "fig1-sgd-L2", depth=2, optimizer="sgd", lr=0.3, first_d=30.0, ratio=0.5)
    write_run(logs, "adam-L6-lr1e-3", lr=1e-3, loss=0.01, test_accuracy=0.80)
    write_run(logs, "adam-L6-lr3e-3", lr=3e-3, loss=0.01, test_accuracy=0.82)  # tie, better test: best
    write_run(logs, "adam-L6-lr3e-4", lr=3e-4, loss=0.05, test_accuracy=0.90)  # higher loss
    write_run(logs, "adam-L6-lr1e-2", lr=1e-2, status="diverged")
    write_run(logs, "adam-L2-lr1e-3", depth=2, lr=1e-3, loss=0.02)
    write_run(logs, "cc-L18-lr3e-3", data="cc", depth=18, lr=3e-3, status="diverged")
    write_run(logs, "cc-L18-lr1e-3", data="cc", depth=18, lr=1e-3, status="diverged")
    (logs / "broken").mkdir()
    (logs / "broken" / "results.json").write_text('{"config": ')      # unreadable: skipped
    (logs / "adam-L2-lr1e-3" / ".results.json.tmp-x1").write_text("{")  # temporary: never read
    return logs


def read_csv(path: Path) -> dict[str, dict]:
    with open(path) as handle:
        return {row["run"]: row for row in csv.DictReader(handle)}


def test_tables_hold_every_run_with_its_values(logs, tmp_path):
    runs, written = summarize_runs.summarize([logs], tmp_path / "out")
    out = tmp_path / "out"
    assert {path.name for path in written} == {"runs.csv", "runs.md", "fig1_grid.png", "depth_cfm.png"}
    rows = read_csv(out / "runs.csv")
    assert len(rows) == 8
    fig1 = rows["fig1-sgd-L2"]
    assert (fig1["data"], fig1["model"], fig1["depth"], fig1["width"], fig1["optimizer"], fig1["seed"]) == (
        "cfm", "GFNN", "2", "100", "sgd", "666")
    assert float(fig1["lr"]) == 0.3 and fig1["status"] == "completed"
    assert float(fig1["pearson_r"]) == -1.0 and float(fig1["rho"]) == 0.5
    assert float(fig1["D_first"]) == 30.0 and float(fig1["D_last"]) == pytest.approx(30.0 / 8)
    assert float(fig1["train_accuracy"]) == 1.0 and float(fig1["test_accuracy"]) == 0.8
    assert float(fig1["wall_seconds"]) == 12.5
    diverged = rows["adam-L6-lr1e-2"]
    assert diverged["status"] == "diverged"
    assert all(diverged[key] == "" for key in ("pearson_r", "rho", "D_first", "D_last", "train_accuracy",
                                               "test_accuracy"))
    markdown = (out / "runs.md").read_text()
    assert markdown.startswith("| run | data | model |")
    lines = [line for line in markdown.splitlines() if " | cfm | " in line or " | cc | " in line]
    assert len(lines) == 8
    diverged_lines = [line for line in lines if "| diverged |" in line]
    assert len(diverged_lines) == 3
    assert "| fig1-sgd-L2 | cfm | GFNN |  | 2 | 100 | sgd | 0.3 | 600 | 666 | -1.0000 | 0.5000 | 30 | 3.75 | " \
           "1.0000 | 0.8000 | 0.01 | completed | 12.5 |" in lines
    assert "8 runs: 5 completed, 3 diverged." in markdown


def test_best_lr_keeps_lowest_loss_then_higher_test_accuracy(logs, tmp_path):
    runs, written = summarize_runs.summarize([logs], tmp_path / "out", best_lr=True)
    assert {path.name for path in written} == {"runs_best_lr.csv", "runs_best_lr.md",
                                               "fig1_grid_best_lr.png", "depth_cfm_best_lr.png"}
    rows = read_csv(tmp_path / "out" / "runs_best_lr.csv")
    # adam depth 6: 1e-3 and 3e-3 tie on loss 0.01, 3e-3 has the higher test accuracy; 3e-4 has a
    # higher loss despite its test accuracy; 1e-2 diverged
    assert sorted(rows) == ["adam-L2-lr1e-3", "adam-L6-lr3e-3", "cc-L18-lr1e-3", "fig1-sgd-L2"]
    assert float(rows["adam-L6-lr3e-3"]["lr"]) == 0.003
    # every lr of the cc configuration diverged: it is listed once, as diverged
    assert rows["cc-L18-lr1e-3"]["status"] == "diverged" and rows["cc-L18-lr1e-3"]["pearson_r"] == ""


def test_diverged_runs_are_never_drawn(logs, tmp_path, monkeypatch):
    drawn = []
    real_draw = summarize_runs.draw_profile

    def spy(axes, layers, fit, label="", color="tab:blue"):
        drawn.append((len(layers), label))
        real_draw(axes, layers, fit, label=label, color=color)

    monkeypatch.setattr(summarize_runs, "draw_profile", spy)
    summarize_runs.summarize([logs], tmp_path / "out")
    # fig1 grid: the runs at the paper's lr of their panel, sgd/2 (0.3) and adam/6 (1e-3); adam/2 at
    # 1e-3 and adam/6 at 3e-4 and 3e-3 are off fig1's table. depth_cfm: adam depth 2 and depth 6 (the
    # best of its lrs); sgd has one depth only, so no depth panel
    assert sorted(drawn) == sorted([(4, "lr=0.3"), (8, "lr=0.001"),
                                    (4, "depth 2 (lr 0.001)"), (8, "depth 6 (lr 0.003)")])
    assert all(count > 0 for count, _ in drawn)
    for name in ("fig1_grid.png", "depth_cfm.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "out" / "depth_cc.png").exists()
    assert not list((tmp_path / "out").glob(".*.tmp-*"))


def test_fig1_grid_keeps_the_papers_lr_per_panel_and_names_the_rest(logs, capsys):
    runs = run_records.load_runs([logs])
    panels, left_out = summarize_runs.fig1_selection(runs, "cfm", "GFNN", 100)
    assert {panel: [run.name for run in chosen] for panel, chosen in panels.items() if chosen} == {
        ("sgd", 2): ["fig1-sgd-L2"], ("adam", 6): ["adam-L6-lr1e-3"]}
    assert sorted(left_out) == ["adam-L2-lr1e-3 (lr=0.001, fig1's is 0.003)",
                                "adam-L6-lr3e-3 (lr=0.003, fig1's is 0.001)",
                                "adam-L6-lr3e-4 (lr=0.0003, fig1's is 0.001)"]
    assert summarize_runs.fig1_grid_png(runs, "cfm", "GFNN", 100)[:4] == b"\x89PNG"
    assert capsys.readouterr().out.splitlines() == [      # one line per reason
        "fig1 grid: left out 3 runs of other protocols:", "  - lr=0.001, fig1's is 0.003: adam-L2-lr1e-3",
        "  - lr=0.003, fig1's is 0.001: adam-L6-lr3e-3", "  - lr=0.0003, fig1's is 0.001: adam-L6-lr3e-4"]
    # the table is conf/experiment/fig1.yaml's, read, not copied
    assert summarize_runs.fig1_lr_table() == {
        ("sgd", 2): 0.3, ("sgd", 6): 0.03, ("sgd", 18): 0.01, ("momentum", 2): 0.3,
        ("momentum", 6): 0.01, ("momentum", 18): 0.001, ("adam", 2): 3e-3, ("adam", 6): 1e-3,
        ("adam", 18): 3e-4}


def test_best_lr_grid_draws_the_lr_training_chose(logs):
    runs = summarize_runs.best_lr_runs(run_records.load_runs([logs]))
    panels, left_out = summarize_runs.fig1_selection(runs, "cfm", "GFNN", 100, paper_lr=False)
    assert {panel: [run.name for run in chosen] for panel, chosen in panels.items() if chosen} == {
        ("sgd", 2): ["fig1-sgd-L2"], ("adam", 2): ["adam-L2-lr1e-3"], ("adam", 6): ["adam-L6-lr3e-3"]}
    assert left_out == []


def test_command_line(logs, tmp_path):
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "summarize_runs.py"), str(logs),
                                "--out", str(tmp_path / "summary"), "--best-lr"],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "4 runs in the table (1 diverged); wrote:" in completed.stdout
    assert f"skipping {logs / 'broken' / 'results.json'}" in completed.stderr
    assert (tmp_path / "summary" / "runs_best_lr.md").is_file()
    assert (tmp_path / "summary" / "fig1_grid_best_lr.png").is_file()


def rewrite_config(path: Path, **changes) -> None:
    """Set top-level config keys of a written results.json."""
    results = json.loads(path.read_text())
    results["config"].update(changes)
    path.write_text(json.dumps(results))


def test_depth_and_variant_come_from_the_model_config_with_a_fallback_for_old_files(tmp_path, capsys):
    logs = tmp_path / "logs"
    params = {"block_option": "bottleneck", "block_num": 4, "feature_option": "layer"}
    model = {"name": "GResNet", "tag": "bottleneck4-layer", "depth": 4, "params": params}
    rewrite_config(write_run(logs, "resnet-new", depth=6), model=model)          # model.depth declared
    old_model = {key: value for key, value in model.items() if key != "depth"}  # before model.depth:
    rewrite_config(write_run(logs, "resnet-old", depth=6), model=old_model, block_num=4)  # root block_num
    rewrite_config(write_run(logs, "mlp-new", depth=2),
                   model={"name": "GFNN", "tag": "L2-w100", "depth": 2, "params": {"layer_num": 2}})
    rows = {run.name: run.row() for run in run_records.load_runs([logs])}
    assert {name: (row["depth"], row["variant"]) for name, row in rows.items()} == {
        "resnet-new": (4, "bottleneck/layer"), "resnet-old": (4, "bottleneck/layer"), "mlp-new": (2, "")}
    rewrite_config(write_run(logs, "bad-depth"), model={"name": "GFNN", "depth": "six"})
    assert "bad-depth" not in {run.name for run in run_records.load_runs([logs])}
    assert "config.model.depth is str" in capsys.readouterr().err


def test_depth_panels_name_protocol_keys_only_where_their_titles_would_read_alike(tmp_path):
    logs = tmp_path / "logs"
    for optimizer, extra in (("adam", {"betas": [0.9, 0.999]}), ("momentum", {"momentum": 0.9})):
        for depth in (2, 6):
            path = write_run(logs, f"{optimizer}-L{depth}", depth=depth, optimizer=optimizer)
            results = json.loads(path.read_text())
            results["config"]["optimization"].update(extra)
            path.write_text(json.dumps(results))
    for depth in (2, 6):   # adam again, under another schedule: same title as the adam panel
        path = write_run(logs, f"adam-gamma-L{depth}", depth=depth)
        results = json.loads(path.read_text())
        results["config"]["optimization"]["betas"] = [0.9, 0.999]
        results["config"]["schedule"] = {"gamma": 0.5}
        path.write_text(json.dumps(results))
    ((data, panels),) = summarize_runs.depth_families(run_records.load_runs([logs]))
    assert data == "cfm"
    protocols = sorted((family[4], family[-1], [run.name for run in members]) for family, members in panels)
    # the optimizers' own parameters differ between adam and momentum, but the titles already differ
    assert protocols == [("adam", "schedule.gamma=0.5", ["adam-gamma-L2", "adam-gamma-L6"]),
                         ("adam", "schedule.gamma=unset", ["adam-L2", "adam-L6"]),
                         ("momentum", "", ["momentum-L2", "momentum-L6"])]
