"""Command line overrides checked against the configs before Hydra sees them: a typo gets one `error:`
line with the close match (exit status 2), before any run starts or any directory is made.

    python representation_dynamics_terminal.py layer_nums=6
    error: layer_nums=6: unknown key (did you mean layer_num?); allowed: the keys that python ... --cfg job shows
    python representation_dynamics_terminal.py model=gfnn
    error: model=gfnn: no model config of that name (did you mean GFNN?); allowed: AlexNet, FNNMIX, ...

Hydra's own messages advise `+KEY=VALUE` for a key the config does not have, which then runs with a
junk key (a new run name, nothing reads it) or fails in a model's constructor. Refused here instead:
  - a group value that is no config of the group (model=gfnn), with the case-insensitive or closest name;
  - a group override that cannot apply as written (experiment=fig1 needs its +, +model=GFNN must not have one);
  - a key no config of this command has, with or without + or ++ (layer_nums=6, +layer_nums=6), with the
    closest key, or the group options that do have it (block_num=4 with model=GFNN: a key of GResNet ...);
  - +KEY=VALUE for a key the config already has (Hydra refuses it too; here in one line).
Adding a group that is not in the defaults (+experiment=fig1) is how presets are chosen and stays allowed.
Keys under hydra. and overrides of another config (--config-name, --config-dir ...) are left to Hydra.

representation_dynamics_terminal.py, data.py and imbalanced_data.py call refuse_override_typos before
Hydra's main; sweep_jobs.py (and so run_experiments.sh) for the overrides it puts into every job.
"""
from __future__ import annotations

import contextlib
import difflib
import io
import itertools
import sys

from omegaconf import OmegaConf

from config_utils import CONF_DIR, expand_root_aliases, register_resolvers

# Hydra's command line flags that ask for something other than a run of this config: nothing to check.
NOT_A_RUN_FLAGS = ("help", "hydra_help", "version", "shell_completion", "info")
# Flags that compose another config than the one the entry script names: left to Hydra.
OTHER_CONFIG_FLAGS = ("config_name", "config_path", "config_dir", "experimental_rerun")
MAX_GROUP_COMBINATIONS = 64   # configs composed to check the keys of a multirun's group sweeps


def refuse_override_typos(arguments: list[str], config_name: str, program: str) -> None:
    """Print one `error:` line and exit with status 2 when override_problem finds a typo in the command
    line `arguments` (Hydra's flags and overrides, as typed after the script's name) of `program`."""
    parsed = _hydra_arguments(arguments)
    if parsed is None or any(getattr(parsed, flag, None) for flag in NOT_A_RUN_FLAGS + OTHER_CONFIG_FLAGS):
        return
    problem = override_problem(list(parsed.overrides), config_name, bool(parsed.multirun), program)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr, flush=True)
        raise SystemExit(2)


def _hydra_arguments(arguments: list[str]):
    """Hydra's own parse of a command line (its flags and the overrides), or None where Hydra's parser
    refuses it (Hydra then says why)."""
    from hydra._internal.utils import get_args_parser

    with contextlib.redirect_stderr(io.StringIO()):
        try:
            return get_args_parser().parse_args(arguments)
        except SystemExit:
            return None


def override_problem(overrides: list[str], config_name: str = "config", multirun: bool = False,
                     program: str = "representation_dynamics_terminal.py") -> str | None:
    """What is wrong with the first override of `overrides` (as typed: root aliases such as block_num=4
    are expanded here) that names a group value or a key no config of `config_name` has, or None.
    Overrides Hydra cannot parse are left to Hydra."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    with _fresh_hydra(), initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        checker = _Checker(GlobalHydra.instance().config_loader(), config_name, multirun, program)
        return checker.problem(list(overrides))


@contextlib.contextmanager
def _fresh_hydra():
    """Hydra's global state as it was (a caller inside an initialized Hydra keeps it)."""
    from hydra.core.global_hydra import GlobalHydra

    saved = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        yield
    finally:
        GlobalHydra.instance().clear()
        if saved is not None:
            GlobalHydra.instance().initialize(saved)


class _Checker:
    def __init__(self, loader, config_name: str, multirun: bool, program: str):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self.loader, self.config_name, self.multirun, self.program = loader, config_name, multirun, program
        self.parser = OverridesParser.create(loader)
        _forget_if_conf_changed()

    # --------------------------------------------------------------------------------------- parsing
    def problem(self, typed: list[str]) -> str | None:
        from hydra.errors import HydraException

        parsed = []   # (as typed, Override)
        for text, expanded in zip(typed, expand_root_aliases(typed)):
            try:
                override, = self.parser.parse_overrides([expanded])
            except HydraException:
                return None
            if override.package is None:
                parsed.append((text, override))
        groups = [(text, o) for text, o in parsed if self._is_group(o.key_or_group)]
        keys = [(text, o) for text, o in parsed if not self._is_group(o.key_or_group)
                and not _is_hydra_key(o.key_or_group)]
        for text, override in groups:
            if (problem := self._group_value_problem(text, override)) is not None:
                return problem
        if not keys and not groups:
            return None
        if not self.multirun and all(self._in_primary_defaults(o) for _, o in groups) and all(
                self._in_primary_file(o) for _, o in keys):
            # what the primary file says settles it: no composition (a single run's or a sweep job's typical
            # command line)
            return next((self._added_twice(text, o) for text, o in keys if o.type.name == "ADD"), None)
        combinations = self._group_combinations([o for _, o in groups if _values(o)])
        if self._compose(combinations[0]) is None:
            # Hydra composes no config where a group override of the defaults list lacks its + (or one
            # not in it has one): said here in one line; any other failure Hydra reports itself
            return next(filter(None, (self._group_type_problem(t, o) for t, o in groups)), None)
        for text, override in keys:
            if (problem := self._key_problem(text, override, combinations)) is not None:
                return problem
        return None

    def _is_group(self, key: str) -> bool:
        return self.loader.repository.group_exists(key)

    # ---------------------------------------------------------------------------------------- groups
    def _group_value_problem(self, text: str, override) -> str | None:
        """A value of a group override that is no config of the group."""
        group = override.key_or_group
        options = self._options(group)
        for value in _values(override):   # none for glob(...) or another sweep Hydra expands itself
            if value is None or value in options:
                continue
            return (f"{_as_typed(text, override, value)}: no {group} config of that name"
                    f"{_did_you_mean(value, options)}; allowed: {', '.join(options)}")
        return None

    def _group_type_problem(self, text: str, override) -> str | None:
        """A group override of the defaults list without its +, or one not in it with a +."""
        from hydra.core.override_parser.types import OverrideType

        if not (values := _values(override)):
            return None
        group = override.key_or_group
        in_defaults = group in self._defaults_groups()
        value = values[0]
        if override.type == OverrideType.CHANGE and not in_defaults and override.value_type is not None:
            return f"{text}: {group} is not in the defaults list (a preset is added with +); allowed: +{group}={value}"
        if override.type == OverrideType.ADD and in_defaults:
            return f"{text}: {group} is in the defaults list already (+ adds a group); allowed: {group}={value}"
        return None

    def _defaults_groups(self) -> set[str]:
        base = self._compose(())
        return set((base or {}).get("hydra", {}).get("runtime", {}).get("choices", {}))

    # ------------------------------------------------------------------------------------------ keys
    def _group_combinations(self, group_overrides) -> list[tuple[str, ...]]:
        """The group overrides of each combination of the command line's group values (a multirun's
        sweeps: each value), at most MAX_GROUP_COMBINATIONS."""
        choices = []
        for override in group_overrides:
            prefix = {"ADD": "+", "FORCE_ADD": "++", "DEL": "~"}.get(override.type.name, "")
            group = override.key_or_group
            choices.append([f"{prefix}{group}={value}" if value is not None else f"{prefix}{group}"
                            for value in _values(override)])
        return list(itertools.islice(itertools.product(*choices), MAX_GROUP_COMBINATIONS))

    def _bases(self, combinations: list[tuple[str, ...]]):
        """(group overrides, composed config without the key overrides) of every job a run or multirun
        composes: each combination, and in a multirun each value of the group sweeps of its sweeper params
        (a preset's: optimization: sgd,momentum,adam) that the command line does not set."""
        for combination in combinations:
            config = self._compose(combination)
            if config is None:
                continue
            params = (config["hydra"].get("sweeper") or {}).get("params") or {} if self.multirun else {}
            set_here = {override.lstrip("+~").partition("=")[0] for override in combination}
            swept = [[f"{key}={value}" for value in str(values).split(",")] for key, values in params.items()
                     if key not in set_here and self._is_group(key)]
            for sweep in itertools.islice(itertools.product(*swept), MAX_GROUP_COMBINATIONS):
                job = (*combination, *sweep)
                if (composed := self._compose(job)) is not None:
                    yield job, composed

    @property
    def _primary(self) -> tuple[dict, set[str]]:
        """The primary config file itself as a plain dict (its defaults list not applied), and the groups
        its defaults list chooses (those a command line changes without +)."""
        def read() -> tuple[dict, set[str]]:
            loaded = self.loader.repository.load_config(self.config_name)
            if loaded is None or loaded.config is None:
                return {}, set()
            groups = {entry.group for entry in loaded.defaults_list or []
                      if getattr(entry, "group", None) and not getattr(entry, "override", False)}
            return OmegaConf.to_container(loaded.config, resolve=False), groups
        return _from_conf(("primary", self.config_name), read)

    def _options(self, group: str) -> list[str]:
        """The names of the configs of `group`."""
        return _from_conf(("options", group), lambda: self.loader.get_group_options(group))

    @property
    def _primary_keys(self) -> set[str]:
        """The top-level keys of the primary config file itself."""
        return set(self._primary[0])

    def _in_primary_defaults(self, override) -> bool:
        """A change of a group the primary file's defaults list chooses (model=GFNN), or a + of one it does
        not (+experiment=fig1): the override applies as written (its value, a config of the group, was
        checked before); whatever else would stop the composition, Hydra reports itself."""
        in_defaults = override.key_or_group in self._primary[1]
        return not override.is_sweep_override() and (override.type.name, in_defaults) in (
            ("CHANGE", True), ("ADD", False))

    def _in_primary_file(self, override) -> bool:
        """A change, + or ++ of a key the primary file itself has under no group (epochs, analysis.pca_dim):
        every job of this config has it, whatever the groups choose."""
        key = override.key_or_group
        return override.type.name in ("CHANGE", "ADD", "FORCE_ADD") and not self._is_group(key.split(".")[0]) \
            and _has_key(self._primary[0], key)

    @staticmethod
    def _added_twice(text: str, override) -> str:
        return f"{text}: {override.key_or_group} is a key of the config already (+ adds a key); allowed: {text[1:]}"

    def _compose(self, overrides: tuple[str, ...]) -> dict | None:
        """The config composed with `overrides`, unresolved, as plain containers; None if it fails.
        Kept for the next check in this process (a warm worker's next job) while conf/ stays as it is."""
        def composed() -> dict | None:
            from hydra import compose

            try:
                config = compose(self.config_name, overrides=list(overrides), return_hydra_config=True)
                return OmegaConf.to_container(config, resolve=False)
            except Exception:  # noqa: BLE001  (any composition failure: Hydra reports it itself)
                return None
        return _from_conf(("composed", self.config_name, overrides), composed)

    def _key_problem(self, text: str, override, combinations: list[tuple[str, ...]]) -> str | None:
        from hydra.core.override_parser.types import OverrideType

        key = override.key_or_group
        first = (combinations[0], self._compose(combinations[0]))
        # A key under no group (epochs, analysis.pca_dim) that the primary config file has is in every job.
        top = key.split(".")[0]
        everywhere = not self._is_group(top) and top in self._primary_keys
        bases = [first] if everywhere and _has_key(first[1], key) else self._bases(combinations)
        lacking = next(((c, config) for c, config in bases if not _has_key(config, key)), None)
        if lacking is None:
            return self._added_twice(text, override) if override.type == OverrideType.ADD else None
        combination, config = lacking
        if (other := self._options_with_key(key, combination, config)) is not None:
            group, chosen, having = other
            whose = f" ({'their' if len(having) > 1 else 'its'} key {key})" if key not in text else ""
            return (f"{text}: not a key of {group}={chosen}; allowed: with "
                    f"{' or '.join(f'{group}={name}' for name in having)}{whose}")
        added = ", which nothing would read" if override.type != OverrideType.CHANGE else ""
        return (f"{text}: unknown key{added}{_did_you_mean(key, _key_paths(config))}; allowed: the keys "
                f"that python {self.program} --cfg job shows")

    def _options_with_key(self, key: str, combination: tuple[str, ...], config: dict):
        """(group, its chosen option, the other options whose config has `key`) for the group the key
        lies in (model for model.params.block_num), or None when no other option has it."""
        parts = key.split(".")
        choices = config["hydra"]["runtime"]["choices"]
        for length in range(len(parts) - 1, 0, -1):
            group = "/".join(parts[:length])
            if group not in choices or not self._is_group(group):
                continue
            others = [c for c in combination if not c.lstrip("+~").startswith(f"{group}=")]
            having = [option for option in self._options(group) if option != choices[group]
                      and _has_key(self._compose((*others, f"{group}={option}")) or {}, key)]
            if having:
                return group, choices[group], having
        return None


# ------------------------------------------------------------------------------------------- helpers
# What the checks read from conf/ in this process (configs composed by their group overrides, the primary
# file, a group's options): only what the files of conf/ say goes into them (key presence, group choices),
# so they hold while those files are unchanged (a warm worker's next job uses them).
_FROM_CONF: dict[tuple, object] = {}
_FROM_CONF_STATE: list = [None]   # the state of conf/ they were read from


def _from_conf(key: tuple, read):
    """What read() gives, kept under `key` while conf/ is unchanged."""
    if key not in _FROM_CONF:
        _FROM_CONF[key] = read()
    return _FROM_CONF[key]


def _conf_state() -> tuple:
    """Every file under conf/ with its size and modification time."""
    files = []
    for path in sorted(CONF_DIR.rglob("*")):
        with contextlib.suppress(OSError):
            status = path.stat()
            files.append((str(path), status.st_size, status.st_mtime_ns))
    return tuple(files)


def _forget_if_conf_changed() -> None:
    if (state := _conf_state()) != _FROM_CONF_STATE[0]:
        _FROM_CONF.clear()
        _FROM_CONF_STATE[0] = state


def _is_hydra_key(key: str) -> bool:
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def _values(override) -> list:
    """The values an override sets: one, or each of a discrete sweep's (as strings); [] for others."""
    if override.is_sweep_override():
        return list(override.sweep_string_iterator()) if override.is_discrete_sweep() else []
    if override.value_type is None:   # ~group
        return [None]
    return [override.get_value_element_as_str()]


def _as_typed(text: str, override, value: str) -> str:
    """The override as typed, or for one value of a sweep KEY=VALUE with the sweep's prefix."""
    if not override.is_sweep_override():
        return text
    return f"{text[:len(text) - len(text.lstrip('+~'))]}{override.key_or_group}={value}"


def _did_you_mean(typed: str, candidates: list[str]) -> str:
    """' (did you mean X?)' with the candidate equal to `typed` but for case, else the closest by
    difflib, else with the same last part (pca_dim: analysis.pca_dim); '' when none is close."""
    lowered = {candidate.lower(): candidate for candidate in candidates}
    matches = [lowered[typed.lower()]] if typed.lower() in lowered else [
        lowered[m] for m in difflib.get_close_matches(typed.lower(), list(lowered), n=1, cutoff=0.75)]
    if not matches:
        last = typed.lower().rsplit(".", 1)[-1]
        matches = [c for c in candidates if c.lower().rsplit(".", 1)[-1] == last][:3]
    return f" (did you mean {' or '.join(matches)}?)" if matches else ""


def _has_key(config, key: str) -> bool:
    """Whether the plain config (dicts and lists) has the dotted key."""
    node = config
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def _key_paths(config: dict, prefix: str = "") -> list[str]:
    """Every dotted key of a plain config (nested keys too), without Hydra's own."""
    paths = []
    for key, value in config.items():
        if not prefix and key == "hydra":
            continue
        path = f"{prefix}{key}"
        paths.append(path)
        if isinstance(value, dict):
            paths += _key_paths(value, path + ".")
    return paths
