"""The report's verdict rules on hand-made rows: the two-segment fit of a known broken line, the
paper's lr of a setting, borderline settings and settings the lr rule decides, the accuracy rule's
tie-break, group verdicts with undecided and borderline settings, and the reruns table's reader."""
from __future__ import annotations

import math

import pytest

import campaign
import queue_logs
import report_markdown
import report_merge
import report_tables
import verdicts
import reproduction_report as report
from variance_analysis import fit_two_segments


def test_two_segments_recover_a_known_broken_line():
    layers = list(range(13))
    line = [3.0 - 0.5 * l if l <= 7 else 3.0 - 0.5 * 7 - 0.03 * (l - 7) for l in layers]
    fit = fit_two_segments(layers, [math.exp(v) for v in line])
    assert fit.breakpoint == 7 and fit.num_points == 13
    assert fit.rho_before == pytest.approx(math.exp(-0.5)) and fit.rho_after == pytest.approx(math.exp(-0.03))
    assert fit.sse == pytest.approx(0.0, abs=1e-20)
    straight = fit_two_segments(layers, [math.exp(-0.2 * l) for l in layers])   # a line: equal slopes
    assert straight.rho_before == pytest.approx(straight.rho_after)
    with pytest.raises(ValueError):
        fit_two_segments([0, 1], [1.0, 0.5])


def row(lr, seed, r, loss=0.002, accuracy=0.8, model="GFNN", depth=6, points=8, status="completed", run=None):
    return {"run": run or f"{model}-L{depth}-lr{lr:g}-s{seed}", "group": "g", "data": "cfm", "model": model,
            "variant": None, "depth": depth, "width": 100, "optimizer": "adam", "lr": lr, "seed": seed,
            "status": status, "pearson_r": r, "rho": 0.5, "points": points, "final_train_loss": loss,
            "test_accuracy": accuracy, "test_split": "official", "machine": "AMD EPYC"}


SEEDS = (666, 1, 2, 3, 4)
DEPTH = campaign.Group("g", "claim", setting=("depth",))


def one_setting(group, rows):
    (setting,) = verdicts.settings_of(group, rows)
    return setting


def test_the_paper_lr_comes_from_fig1s_lookup_table_and_the_published_figures():
    fig1 = next(group for group in campaign.GROUPS if group.name == "fig1")
    assert verdicts.paper_lr_of(fig1, {"optimizer": "momentum", "depth": 18}) == 0.001    # conf/experiment/fig1.yaml
    assert verdicts.paper_lr_of(fig1, {"optimizer": "adam", "depth": 2}) == 0.003
    original = next(group for group in campaign.GROUPS if group.name == "original")
    lrs = {depth: verdicts.paper_lr_of(original, {"data": "fashion_mnist", "model": "GFNNOriginal", "depth": depth,
                                                "width": 1000, "optimizer": "adam"}) for depth in (2, 6, 18)}
    assert lrs == {2: 1e-4, 6: 1e-4, 18: 3e-5}
    cifar = {depth: verdicts.paper_lr_of(original, {"data": "cifar10", "model": "GFNNOriginal", "depth": depth,
                                                  "width": 1000, "optimizer": "adam"}) for depth in (2, 6, 18)}
    assert cifar == {2: 1e-4, 6: 3e-4, 18: 3e-5}
    for group, model in (("linearized", "GLNN"), ("nobn", "GFNNNoBN")):
        control = next(g for g in campaign.GROUPS if g.name == group)
        assert verdicts.paper_lr_of(control, {"data": "cfm", "model": model, "depth": 18, "width": 100,
                                            "optimizer": "adam"}) == 3e-5
    # the paper's lr is judged first, whatever the training-loss rule picks
    rows = [row(3e-5, s, -0.999, loss=0.01, depth=18, model="GFNNOriginal") for s in (666,)]
    rows += [row(1e-4, s, -0.97, loss=0.001, depth=18, model="GFNNOriginal") for s in (666,)]
    for item in rows:
        item.update(data="fashion_mnist", width=1000)
    setting = one_setting(original, rows)
    assert setting.by_paper.lr == 3e-5 and setting.by_loss.lr == 1e-4
    assert (setting.verdict(setting.by_paper), setting.verdict(setting.by_loss)) == ("holds", "does not hold")
    assert verdicts.group_verdict(original, [setting], "by_paper") == "holds"


def test_a_setting_decided_by_seeds_within_the_margin_is_borderline():
    clear = [-0.999, -0.999, -0.999, -0.996, -0.95]         # the 4th best seed 0.006 below the threshold
    edge = [-0.999, -0.999, -0.999, -0.9915, -0.95]         # ... 0.0015 below: within R_NOISE
    short = [-0.999, -0.999, -0.999, -0.9885, -0.95]        # 0.0015 above: 3 of 5, within the margin too
    far = [-0.999, -0.999, -0.999, -0.97, -0.95]
    verdicts = [one_setting(DEPTH, [row(1e-3, s, r) for s, r in zip(SEEDS, rs)]) for rs in (clear, edge, short, far)]
    assert [s.verdict(s.by_loss) for s in verdicts] == ["holds", "borderline", "borderline", "does not hold"]
    assert [s.verdict(s.by_loss, margin=False) for s in verdicts] == ["holds", "holds", "does not hold", "does not hold"]


def test_a_runner_up_lr_as_good_by_training_that_flips_the_verdict_is_named():
    near = [row(1e-3, s, -0.999, loss=0.0020) for s in SEEDS] + [row(3e-3, s, -0.95, loss=0.00215) for s in SEEDS]
    setting = one_setting(DEPTH, near)
    assert setting.by_loss.lr == 1e-3 and setting.decided_by_rule().lr == 3e-3      # +7.5%: within 10%
    assert verdicts.group_verdict(DEPTH, [setting]) == "holds (1 decided by the lr rule)"
    far = [row(1e-3, s, -0.999, loss=0.0020) for s in SEEDS] + [row(3e-3, s, -0.95, loss=0.0023) for s in SEEDS]
    assert one_setting(DEPTH, far).decided_by_rule() is None                         # +15%
    assert one_setting(DEPTH, far).largest_holding().lr == 1e-3


def test_the_accuracy_rule_breaks_ties_by_training_loss_then_the_smaller_lr():
    nobn = [row(lr, s, 0.7, loss=loss, accuracy=0.1) for lr, loss in ((3e-5, 2.31), (1e-4, 2.30), (3e-4, 2.30))
            for s in SEEDS]
    setting = one_setting(DEPTH, nobn)
    assert setting.by_accuracy.lr == 1e-4 and setting.by_loss.lr == 1e-4


def test_undecided_and_borderline_settings_are_named_in_the_group_verdict():
    settings = [one_setting(DEPTH, [row(1e-3, s, r, depth=depth, status=status) for s in SEEDS])
                for depth, r, status in ((2, -0.999, "completed"), (3, -0.95, "completed"), (4, -0.9915, "completed"),
                                         (5, None, "missing"))]
    assert [s.verdict(s.by_loss) for s in settings] == ["holds", "does not hold", "borderline", "undecided"]
    assert verdicts.group_verdict(DEPTH, settings) == \
        "partly: holds in 1 of 4 settings (1 of 4 settings borderline; 1 of 4 settings undecided)"
    assert verdicts.group_verdict(DEPTH, settings[1:2]) == "does not hold"
    control = campaign.Group("c", "claim", setting=("depth",), expect="fails")
    assert verdicts.group_verdict(control, settings[1:3]) == "fails, as the paper says (1 of 2 settings borderline)"
    assert verdicts.group_verdict(DEPTH, settings, "by_paper") == "no lr named"


def test_fits_that_dropped_points_are_flagged():
    fitted = row(1e-3, 666, 0.6, points=5, run="nobn-run")
    setting = one_setting(DEPTH, [fitted])
    profiles = {"nobn-run": [("train", report_tables.PAPER_MODE, point, 1.0 if point < 5 else 0.0) for point in range(20)]}
    assert "1 fit(s) dropped points (5 of 20 fitted)" in report_markdown._cell_row(DEPTH, setting, setting.by_loss, profiles)


def test_recorded_commands_are_relative_to_the_repository():
    from config_utils import REPO_ROOT

    command = f"sh run_experiments.sh fig1 log_root={REPO_ROOT}/logs data_root=/elsewhere/data progress=false"
    relative = queue_logs.repository_relative(command)
    assert relative.startswith("sh run_experiments.sh fig1 log_root=logs data_root=")
    assert "/elsewhere" not in relative.split("data_root=")[1] or relative.split("data_root=")[1].startswith("..")


def test_the_longer_group_plans_the_runs_the_worker_runs():
    """Group `longer`'s planned runs are named as `representation_dynamics_terminal.py +experiment=PRESET
    OVERRIDES seed=S epochs=1200` names them: composed here by Hydra and named by config_utils.run_name."""
    from hydra import compose, initialize_config_dir

    from config_utils import CONF_DIR, register_resolvers, run_name

    longer = next(group for group in campaign.GROUPS if group.name == "longer")
    planned = [job.run_name for _, job in campaign.campaign_jobs((longer,))]
    commands = [[f"+experiment={preset}", *part[:-2], f"seed={seed}", part[-1]]
                for preset, part in campaign.LONGER_PARTS for seed in part[-2].split("=")[1].split(",")]
    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        assert planned == [run_name(compose("config", overrides=command)) for command in commands]
    assert len(planned) == 9 * 5 + 4 and all("-e1200-" in name for name in planned)


def test_reruns_are_read_against_the_committed_rows(tmp_path):
    rows = [dict(row(1e-3, 666, -0.995, run="cfm-run-s666"), group="fig1")]
    rerun = {"run": "cfm-run-s666", "group": "fig1", "machine": "Intel Xeon", "cpu_kernels": "AVX2",
             "pearson_r": -0.985, "rho": 0.5, "final_train_loss": 0.002, "test_accuracy": 0.8,
             "recorded_machine": "AMD EPYC", "recorded_pearson_r": -0.995}
    (tmp_path / "reruns.csv").write_text(report_tables._csv_text(report_tables.RERUN_COLUMNS, [rerun]))
    (read,) = report_tables.read_reruns(tmp_path, rows)
    assert read["pearson_r"] == -0.985 and read["machine"] == "Intel Xeon"
    lines = report_markdown._across_cpus(rows, [read], (campaign.Group("fig1", "claim", setting=("depth",)),))
    assert any("|delta r| median 0.0100" in line and "1 rerun(s) crossed -0.99" in line for line in lines)
    assert ("- fig1, depth 6: lr by training loss: holds at 0.001 -> does not hold at 0.001; lr by test accuracy: "
            "holds at 0.001 -> does not hold at 0.001.") in lines
    for broken in ({"recorded_pearson_r": -0.99}, {"group": "lr"}, {"pearson_r": 1.5}):
        (tmp_path / "reruns.csv").write_text(report_tables._csv_text(report_tables.RERUN_COLUMNS, [{**rerun, **broken}]))
        with pytest.raises(report.BadFile):
            report_tables.read_reruns(tmp_path, rows)


def test_longer_rows_merge_as_their_own_group_and_say_whether_r_crosses(tmp_path):
    """fig1 at 600 epochs and group longer's fig1 momentum depth-18 runs at 1200 (seed 666 bent): merged
    into a new report, the longer rows stand beside the 600-epoch ones; the other longer runs are missing."""
    from tests.test_report import bent, write_results

    fig1, longer = (next(group for group in campaign.GROUPS if group.name == name) for name in ("fig1", "longer"))
    logs, out = tmp_path / "logs", tmp_path / "report"
    out.mkdir()
    planned = campaign.campaign_jobs((fig1, longer))
    for group, job in planned:
        config = job.config
        if group == "fig1":
            write_results(logs, job, d_values=bent(20) if config["layer_num"] == 18 else None)
        elif (config["optimization"]["name"], config["layer_num"]) == ("momentum", 18):
            write_results(logs, job, d_values=bent(20) if config["seed"] == 666 else None)
    outcome = report_merge.merge(out, [logs], groups=(fig1, longer))
    assert outcome.added == 45 + 5
    rows = report_tables.read_rows(out / "runs.csv")
    assert sum(row["group"] == "longer" and row["status"] == "missing" for row in rows) == 49 - 5
    text, _ = report.rebuild(out, (fig1, longer))
    assert ("| fig1: data cfm, model GFNN, optimizer momentum, depth 18 | 0.001 | 5 | 0 of 5 | "
            in text) and "| 4 of 5 | -1.0000 | 0.01 | yes |" in text
    assert "| fig1: data cfm, model GFNN, optimizer sgd, depth 18 | 0.01 | 5 | 0 of 5 |" in text
    assert "waiting (0 of 5 finished)" in text


def test_reruns_of_committed_rows_are_recorded_once_beside_the_rows(tmp_path):
    """--reruns: a completed run under DIR that reruns a committed row is recorded with its machine and
    numbers beside the row's machine and r; recording again adds nothing; the rebuild reads it back."""
    import shutil

    from tests.test_report import write_results

    committed = report.Path(__file__).resolve().parents[1] / "docs" / "reproduction"
    copy = tmp_path / "report"
    copy.mkdir()
    for name in ("runs.csv", "profiles.csv", "context.json"):
        shutil.copyfile(committed / name, copy / name)
    rows = {row["run"]: row for row in report_tables.read_rows(copy / "runs.csv") if row["status"] == "completed"}
    group, job = next((group, job) for group, job in campaign.campaign_jobs() if job.run_name in rows)
    write_results(tmp_path / "logs", job)       # a Test CPU, r -1 (a straight profile)
    text, lines = report_merge.record_reruns(copy, [tmp_path / "logs"])
    assert lines[0] == "reruns: 1 new, 1 in all"
    (copy / "reruns.csv").write_text(text)
    (rerun,) = report_tables.read_reruns(copy, report_tables.read_rows(copy / "runs.csv"))
    assert (rerun["run"], rerun["group"], rerun["machine"]) == (job.run_name, group, "Test CPU")
    assert rerun["recorded_pearson_r"] == rows[job.run_name]["pearson_r"]
    assert report_merge.record_reruns(copy, [tmp_path / "logs"]) == (text, ["reruns: 0 new, 1 in all"])
    readme, _ = report.rebuild(copy)
    assert "1 committed rows rerun (reruns.csv" in readme and job.run_name in readme


def longer_rows(lr, rs, depth=6):
    return [dict(row(lr, seed, r, depth=depth, run=f"longer-{lr:g}-s{seed}"), group="longer", epochs=1200)
            for seed, r in zip(SEEDS, rs)]


def test_each_miss_says_why_it_misses_by_the_first_cause_measured():
    failing, holding = [-0.97] * 5, [-0.999] * 5
    lr_cause = [row(1e-3, s, r, loss=0.002) for s, r in zip(SEEDS, failing)]
    lr_cause += [row(3e-4, s, r, loss=0.003) for s, r in zip(SEEDS, holding)]
    setting = one_setting(DEPTH, lr_cause)
    cell = setting.by_loss
    assert report_markdown.miss_evidence(setting, cell, lr_cause, []) == " Why: the lr: it holds at the smaller lr 0.0003."
    with_longer = lr_cause + longer_rows(1e-3, failing)
    assert report_markdown.miss_evidence(setting, cell, with_longer, []).endswith(
        "Why: the lr: it holds at the smaller lr 0.0003 (at lr 0.001, 1200 epochs do not).")
    alone = one_setting(DEPTH, [row(1e-3, s, r) for s, r in zip(SEEDS, failing)])
    trained = longer_rows(1e-3, holding)
    text = report_markdown.miss_evidence(alone, alone.by_loss, alone.by_loss.rows + trained, [])
    assert text.startswith(" At 1200 epochs: 5 of 5 seeds show the law, median r -0.9990")
    assert text.endswith("Why: training length: it holds at 1200 epochs.")
    partly = longer_rows(1e-3, [-0.999, -0.999, -0.97, -0.97, -0.97])
    assert report_markdown.miss_evidence(alone, alone.by_loss, alone.by_loss.rows + partly, []).endswith(
        "Why: partly training length: at 1200 epochs more seeds show the law (2 against 0), not enough, and no "
        "other lr of the grid holds.")
    assert report_markdown.miss_evidence(alone, alone.by_loss, alone.by_loss.rows + longer_rows(1e-3, failing), []).endswith(
        "Why: not found: neither 1200 epochs nor any lr of the grid makes it hold.")
    one_seed = report_markdown.miss_evidence(alone, alone.by_loss, alone.by_loss.rows + trained[:1], [])
    assert one_seed.startswith(" At 1200 epochs, seed 666 only: 1 of 1 seeds show the law, median r -0.9990")
    assert "(the same seeds at 600: 0 of 1, median r -0.9700" in one_seed     # one seed cannot judge the setting:
    assert one_seed.endswith("Why: not found: no lr of the grid makes it hold.")   # not a cause
    edge = one_setting(DEPTH, [row(1e-3, s, r) for s, r in zip(SEEDS, [-0.999, -0.999, -0.999, -0.9885, -0.95])])
    assert report_markdown.miss_evidence(edge, edge.by_loss, edge.by_loss.rows, []) == \
        " Why: the margin: seeds within 0.003 of -0.99 decide it."
    record = {"our_run": alone.by_loss.rows[0]["run"], "pearson_r": -0.9812, "final_train_loss": 0.0151}
    assert " The original's code (seed 666): r -0.9812, final loss 0.0151." in report_markdown.miss_evidence(
        alone, alone.by_loss, alone.by_loss.rows, [record])


def test_the_original_codes_table_is_read_against_the_committed_rows(tmp_path):
    rows = [dict(row(1e-3, 666, -0.985, run="cfm-run-s666", depth=18), group="fig1")]
    record = {"group": "fig1", "setting": "momentum 18", "lr": 1e-3, "our_run": "cfm-run-s666",
              "command": "python representation_dynamics_terminal.py data=cfm model=GFNN layer_num=18",
              "pearson_r": -0.9921, "slope": -0.2, "final_train_loss": 0.012, "train_accuracy": 1.0,
              "test_accuracy": 0.77, "wall_seconds": 80.0, "machine": "Intel Xeon", "torch": "2.14.1",
              "original_commit": "7544a6b"}
    (tmp_path / "original_code.csv").write_text(report_tables._csv_text(report_tables.ORIGINAL_CODE_COLUMNS, [record]))
    (read,) = report_tables.read_original_code(tmp_path, rows)
    assert read["pearson_r"] == -0.9921 and read["lr"] == 1e-3
    lines = report_markdown._original_code(rows, [read])
    assert any("agree on whether the run shows the law in 0 of 1 settings" in line for line in lines)
    assert any(line.startswith("| fig1, momentum 18 | 0.001 | `python representation_dynamics_terminal.py")
               and "| -0.9921 | -0.9850 | 0.012 / 0.002 | 0.7700 / 0.8000 |" in line for line in lines)
    for broken in ({"our_run": "elsewhere"}, {"group": "lr"}, {"lr": 3e-3}, {"pearson_r": -1.5},
                   {"test_accuracy": math.inf}):
        (tmp_path / "original_code.csv").write_text(report_tables._csv_text(report_tables.ORIGINAL_CODE_COLUMNS, [{**record, **broken}]))
        with pytest.raises(report.BadFile):
            report_tables.read_original_code(tmp_path, rows)
    assert report_tables.read_original_code(tmp_path / "nowhere", rows) == []
