"""The science rules of the reproduction report, in one place to hold against the report's stated text.

A run shows the law when ln D_l against l has Pearson r <= R_THRESHOLD from a fit of MIN_FIT_POINTS or
more (shows_law). A setting's runs at one lr over the seeds are an LrCell; the lr is chosen per setting
(settings_of) by three rules: the paper's lr (paper_lr_of: fig1.yaml's lookup table, the published
figures' names in PAPER_FIGURES), the lowest median final training loss and the best median test
accuracy (training_rank, also summarize_runs' --best-lr). At an lr a setting holds when needed_seeds of
its seeds show the law (HOLDS_FRACTION), is borderline when seeds within R_NOISE of the threshold decide
it (within_noise), undecided while a planned run is missing, and decided by the lr rule when an lr as
good by training (LOSS_NEAR) gives another verdict (Setting.decided_by_rule). group_verdict counts the
settings; failing_cells and miss_cause say which settings miss and why.

Pure rules over rows (dicts): no file is read or written here, nothing is drawn.
"""
from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from config_utils import LOOKUP_KEY

if TYPE_CHECKING:
    from campaign import Group

# A run "shows the law" when ln D_l against l has Pearson r at or below this, from a fit of 3 or more
# points (two points give r = +-1 whatever the profile): BatchNorm MLPs on cfm reach r below -0.99.
R_THRESHOLD = -0.99
MIN_FIT_POINTS = 3
HOLDS_FRACTION = 0.8       # a setting holds when at least 80% of its seeds show the law (4 of 5; 1 of 1)
# The margin of a verdict: a seed whose r lies within R_NOISE of R_THRESHOLD may fall on the other side on
# another CPU. Committed rows rerun on an Intel Xeon (reruns.csv) moved by a median |delta r| of 0.0029 over
# the first 30 reruns (0.0005 to 0.0225; the depth-18 rows the most), so a setting whose verdict seeds
# within 0.003 of the threshold decide is *borderline*.
R_NOISE = 0.003
# The lr rule's margin: a runner-up lr whose median final training loss is within this fraction of the
# chosen lr's is as good a choice by training, so a verdict it flips is *decided by the lr rule*.
LOSS_NEAR = 0.10
FINISHED = ("completed", "diverged")
# The original repository's published figures (HornHehhf/Equi-Separation, folder figures/; see
# /work/shared/paper-figures/README.md): each file name holds the setting and the lr of the figure.
PAPER_FIGURES = (
    "Linearized__cfm_GLNN_18_100_within_variance_adam_3e-05_terminal_layer_regression.png",
    "NoBN__cfm_GFNNNoBN_18_100_within_variance_adam_3e-05_terminal_layer_regression.png",
    "OriginalSize__cifar10_GFNNOriginal_18_1000_within_variance_adam_3e-05_terminal_layer_regression.png",
    "OriginalSize__cifar10_GFNNOriginal_2_1000_within_variance_adam_0.0001_terminal_layer_regression.png",
    "OriginalSize__cifar10_GFNNOriginal_6_1000_within_variance_adam_0.0003_terminal_layer_regression.png",
    "OriginalSize__fashion_mnist_GFNNOriginal_18_1000_within_variance_adam_3e-05_terminal_layer_regression.png",
    "OriginalSize__fashion_mnist_GFNNOriginal_2_1000_within_variance_adam_0.0001_terminal_layer_regression.png",
    "OriginalSize__fashion_mnist_GFNNOriginal_6_1000_within_variance_adam_0.0001_terminal_layer_regression.png",
)
PAPER_FIGURE_NAME = re.compile(r"^[A-Za-z]+__(?P<data>.+)_(?P<model>[A-Za-z]+)_(?P<depth>\d+)_(?P<width>\d+)_"
                               r"within_variance_(?P<optimizer>[a-z]+)_(?P<lr>[0-9.e-]+)_terminal_layer_regression\.png$")


# ------------------------------------------------------------------------------------- over the seeds
def training_rank(loss: float | None, accuracy: float | None, lr: float) -> tuple:
    """The lr rule by training, lower is better: the final training loss (missing or not finite: last),
    then the higher test accuracy (missing: 0), then the smaller lr, so the choice never depends on the
    order runs are found. The report ranks a setting's lrs by their medians over the seeds; summarize_runs
    --best-lr ranks single runs."""
    loss = loss if loss is not None and math.isfinite(loss) else math.inf
    return (loss, -(accuracy if accuracy is not None else 0.0), lr)


def accuracy_rank(loss: float | None, accuracy: float | None, lr: float) -> tuple:
    """The lr rule by test accuracy, lower is better: the higher accuracy, then training_rank's order."""
    loss_first = training_rank(loss, accuracy, lr)
    return (loss_first[1], loss_first[0], lr)


def shows_law(row: dict) -> bool:
    return (row["status"] == "completed" and row["pearson_r"] is not None and row["pearson_r"] <= R_THRESHOLD
            and (row["points"] is None or row["points"] >= MIN_FIT_POINTS))


def _median(values):
    values = [value for value in values if value is not None and math.isfinite(value)]
    return statistics.median(values) if values else None


@dataclass
class LrCell:
    """The runs of one setting at one learning rate, over the seeds."""
    setting: tuple
    lr: float
    rows: list[dict]

    @property
    def finished(self) -> list[dict]:
        return [row for row in self.rows if row["status"] in FINISHED]

    @property
    def completed(self) -> list[dict]:
        return [row for row in self.rows if row["status"] == "completed"]

    def finished_at(self, seeds) -> list[dict]:
        """The finished runs, of `seeds` only when given."""
        return [row for row in self.finished if seeds is None or row["seed"] in seeds]

    def median_loss(self, seeds=None) -> float:
        """The median final training loss of the finished runs (of `seeds` only, when given); a diverged
        run counts as infinite."""
        losses = [row["final_train_loss"] if row["status"] == "completed" else math.inf
                  for row in self.finished_at(seeds)]
        losses = [math.inf if loss is None or not math.isfinite(loss) else loss for loss in losses]
        return statistics.median(losses) if losses else math.inf

    def median_test_accuracy(self, seeds=None) -> float:
        accuracies = [row["test_accuracy"] if row["status"] == "completed" else 0.0
                      for row in self.finished_at(seeds)]
        return statistics.median([a if a is not None else 0.0 for a in accuracies]) if accuracies else -1.0

    def rs(self) -> list[float]:
        return [row["pearson_r"] for row in self.completed if row["pearson_r"] is not None]

    def rhos(self) -> list[float]:
        return [row["rho"] for row in self.completed if row["rho"] is not None and math.isfinite(row["rho"])]

    @property
    def showing(self) -> int:
        return sum(shows_law(row) for row in self.rows)

    @property
    def two_point(self) -> int:
        return sum(row["points"] is not None and row["points"] < MIN_FIT_POINTS for row in self.completed)


def needed_seeds(planned: int) -> int:
    """How many of `planned` seeds must show the law for a setting to hold (HOLDS_FRACTION: 4 of 5, 1 of 1)."""
    return math.ceil(HOLDS_FRACTION * planned - 1e-9)


def _counted_r(row: dict) -> float | None:
    """The r of a run that can count for the law (completed, a fit of MIN_FIT_POINTS or more), else None."""
    if row["status"] != "completed" or row["pearson_r"] is None or not math.isfinite(row["pearson_r"]):
        return None
    return None if row["points"] is not None and row["points"] < MIN_FIT_POINTS else row["pearson_r"]


def count_verdict(rows: list[dict]) -> str:
    """holds | does not hold | undecided: whether at least needed_seeds of the planned `rows` show the
    law, with the missing ones unknown."""
    needed, showing = needed_seeds(len(rows)), sum(shows_law(row) for row in rows)
    unfinished = sum(row["status"] not in FINISHED for row in rows)
    return "holds" if showing >= needed else "does not hold" if showing + unfinished < needed else "undecided"


def within_noise(rows: list[dict]) -> bool:
    """Whether moving each seed's r by up to R_NOISE could change count_verdict of the finished `rows`:
    fewer than needed_seeds show the law by more than the margin, enough do within it."""
    rs = [_counted_r(row) for row in rows]
    surely = sum(r is not None and r <= R_THRESHOLD - R_NOISE for r in rs)
    possibly = sum(r is not None and r <= R_THRESHOLD + R_NOISE for r in rs)
    return surely < needed_seeds(len(rows)) <= possibly


@dataclass
class Setting:
    key: tuple
    cells: list[LrCell]              # by lr
    by_loss: LrCell | None           # the lr of the lowest median final training loss (over shared_seeds)
    by_accuracy: LrCell | None       # the lr of the highest median test accuracy (over shared_seeds)
    shared_seeds: tuple              # the seeds every lr of the setting runs at: the lr is chosen over these
    by_paper: LrCell | None = None   # the lr the paper or its repository names for the setting (paper_lr_of)
    paper_lr: float | None = None    # that lr, also when the grid has no cell at it
    runner_up: LrCell | None = None  # the lr of the second-lowest median final training loss

    def verdict(self, cell: LrCell | None, margin: bool = True) -> str:
        """holds | does not hold | borderline | undecided, over the planned seeds of `cell` by the rule
        HOLDS_FRACTION states; borderline when seeds within R_NOISE of the threshold decide it
        (within_noise; margin=False: the plain count); undecided while any planned run of the setting is
        missing (it could move the chosen lr)."""
        if cell is None or any(row["status"] == "missing" for known in self.cells for row in known.rows):
            return "undecided"
        verdict = count_verdict(cell.rows)
        return "borderline" if margin and verdict != "undecided" and within_noise(cell.rows) else verdict

    def decided_by_rule(self) -> LrCell | None:
        """The runner-up lr when the lr rule decides the verdict: its median final training loss within
        LOSS_NEAR of the chosen lr's and its verdict another (both decided); else None."""
        chosen, other = self.by_loss, self.runner_up
        if chosen is None or other is None:
            return None
        first, second = chosen.median_loss(self.shared_seeds), other.median_loss(self.shared_seeds)
        verdicts = {self.verdict(chosen), self.verdict(other)}
        near = math.isfinite(second) and second <= (1 + LOSS_NEAR) * first
        return other if near and len(verdicts) == 2 and "undecided" not in verdicts else None

    def largest_holding(self) -> LrCell | None:
        """The largest lr of the grid at which enough seeds show the law (needed_seeds: 4 of 5), the margin
        aside (a borderline count counts)."""
        return next((cell for cell in reversed(self.cells) if self.verdict(cell, margin=False) == "holds"), None)

    @property
    def choice_is_partial(self) -> bool:
        """Some lr runs at more seeds than the lr is chosen over (width, shape: seeds 1-4 at one lr)."""
        return any(len({row["seed"] for row in cell.rows}) > len(self.shared_seeds) for cell in self.cells)


def paper_lr_of(group: Group, row: dict) -> float | None:
    """The lr the paper or its repository names for the setting of `row`, or None: fig1's from the lookup
    table of conf/experiment/fig1.yaml (the seed commands' lrs), the original group's and the controls'
    from the file names of the original repository's published figures (PAPER_FIGURES)."""
    if group.paper_lr == "fig1.yaml":
        table = _fig1_lookup()
        return table.get(str(row["optimizer"]), {}).get(f"L{row['depth']}")
    if group.paper_lr == "figures":
        return _figure_lrs().get((row["data"], row["model"], row["depth"], row["width"], row["optimizer"]))
    return None


def _fig1_lookup() -> dict:
    from omegaconf import OmegaConf

    from config_utils import CONF_DIR

    lookup = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "experiment" / "fig1.yaml"))[LOOKUP_KEY]["lr"]
    return {optimizer: {depth: float(lr) for depth, lr in lrs.items()} for optimizer, lrs in lookup.items()}


def _figure_lrs() -> dict:
    lrs = {}
    for name in PAPER_FIGURES:
        match = PAPER_FIGURE_NAME.match(name)
        lrs[(match["data"], match["model"], int(match["depth"]), int(match["width"]), match["optimizer"])] = \
            float(match["lr"])
    return lrs


def settings_of(group: Group, rows: list[dict]) -> list[Setting]:
    by_setting = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_setting[tuple(row[key] for key in group.setting)][row["lr"]].append(row)
    settings = []
    for key in sorted(by_setting, key=lambda k: tuple(_sortable(v) for v in k)):
        cells = [LrCell(key, lr, by_setting[key][lr]) for lr in sorted(by_setting[key], key=_sortable)]
        shared = tuple(sorted(set.intersection(*({row["seed"] for row in cell.rows} for cell in cells)),
                              key=_sortable))
        candidates = [cell for cell in cells if cell.finished]
        by_training = lambda c: training_rank(c.median_loss(shared), c.median_test_accuracy(shared), c.lr)  # noqa: E731
        by_loss = min(candidates, key=by_training, default=None)
        by_accuracy = min(candidates, key=lambda c: accuracy_rank(c.median_loss(shared), c.median_test_accuracy(shared),
                                                                  c.lr), default=None)
        ranked = sorted(candidates, key=by_training)
        paper_lr = paper_lr_of(group, cells[0].rows[0])
        by_paper = next((cell for cell in cells if paper_lr is not None and math.isclose(cell.lr, paper_lr)), None)
        settings.append(Setting(key, cells, by_loss, by_accuracy, shared, by_paper, paper_lr,
                                ranked[1] if len(ranked) > 1 else None))
    return settings


def _sortable(value):
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


RULES = {"by_paper": "the paper's lr", "by_loss": "lr by training loss", "by_accuracy": "lr by test accuracy"}


def group_verdict(group: Group, settings: list[Setting], rule: str = "by_loss") -> str:
    """The group's verdict over its settings at the lr `rule` picks (RULES): it holds when every
    setting holds; otherwise how many hold, with the borderline and undecided ones named (they do not
    hold, nor are they counted against the law); a control fails, as the paper says, when none holds.
    by_paper judges the settings the paper names an lr for ("no lr named" when none)."""
    if rule == "by_paper":
        settings = [setting for setting in settings if setting.paper_lr is not None]
        if not settings:
            return "no lr named"
    verdicts = [setting.verdict(getattr(setting, rule)) for setting in settings]
    holding, total = verdicts.count("holds"), len(settings)
    notes = [f"{verdicts.count(kind)} of {total} settings {kind}" for kind in ("borderline", "undecided")
             if verdicts.count(kind)]
    if rule == "by_loss" and (decided := sum(setting.decided_by_rule() is not None for setting in settings)):
        notes.append(f"{decided} decided by the lr rule")
    pending = f" ({'; '.join(notes)})" if notes else ""
    if group.expect == "fails":
        if holding:
            return f"holds in {holding} of {total} settings (unexpected){pending}"
        return ("undecided" if verdicts.count("undecided") == total else "fails, as the paper says") + pending
    if holding == total:
        return "holds" + pending
    if holding:
        return f"partly: holds in {holding} of {total} settings{pending}"
    for kind in ("undecided", "borderline"):
        if verdicts.count(kind) == total:
            rest = [note for note in notes if not note.endswith(f"settings {kind}")]
            return kind + (f" ({'; '.join(rest)})" if rest else "")
    return "does not hold" + pending


def some_lr_holds(settings: list[Setting]) -> str:
    """In how many settings some lr of the grid holds (whatever any lr rule picks)."""
    return f"in {sum(setting.largest_holding() is not None for setting in settings)} of {len(settings)} settings"


FAILING = ("does not hold", "borderline")


def miss_cause(setting: Setting, cell: LrCell, longer: LrCell, longer_epochs: int) -> str:
    """Why `setting` misses at `cell`'s lr: the first of these causes its runs show. The margin (its seeds
    within R_NOISE of the threshold decide it: borderline); training length (the same runs at
    `longer_epochs` epochs, `longer`, hold); the lr (it holds at another lr of the grid); partly training
    length (more seeds show the law at `longer_epochs`, not enough, and no other lr holds); else not
    found. What the longer runs say is added where it is not the cause."""
    largest = setting.largest_holding()
    longer_verdict = count_verdict(longer.rows) if longer.rows else None
    if setting.verdict(cell) == "borderline":
        why = f"the margin: seeds within {R_NOISE} of {R_THRESHOLD} decide it"
    elif longer_verdict == "holds":
        why = f"training length: it holds at {longer_epochs} epochs"
    elif largest is not None and largest.lr != cell.lr:
        why = f"the lr: it holds at the {'smaller' if largest.lr < cell.lr else 'larger'} lr {largest.lr:g}"
        if len(largest.rows) < len(cell.rows):    # width, shape: the other lrs ran at seed 666 only
            why += f" (run at {len(largest.rows)} of the {len(cell.rows)} seeds)"
    elif longer_verdict == "does not hold" and longer.showing > cell.showing:
        return (f"partly training length: at {longer_epochs} epochs more seeds show the law ({longer.showing} "
                f"against {cell.showing}), not enough, and no other lr of the grid holds")
    elif longer_verdict == "does not hold":
        return f"not found: neither {longer_epochs} epochs nor any lr of the grid makes it hold"
    else:
        why = "not found: no lr of the grid makes it hold"
    if longer_verdict == "does not hold":
        return why + f" (at lr {cell.lr:g}, {longer_epochs} epochs do not)"
    return why + (f" ({longer_epochs} epochs: not all run yet)" if longer_verdict == "undecided" else "")


def failing_cells(group: Group, setting: Setting) -> list[tuple[LrCell, list[str]]]:
    """[(cell, the rules that picked it)] of the lrs at which `setting` does not hold or is borderline,
    by the rules of RULES in their order (the paper's first); none for a control (expected to fail)."""
    if group.expect != "holds":
        return []
    picked = {}
    for rule in RULES:
        cell = getattr(setting, rule)
        if cell is not None and setting.verdict(cell) in FAILING:
            picked.setdefault(id(cell), (cell, []))[1].append(rule)
    return list(picked.values())
