"""Which runs count: the store's records grouped by method and configuration, filtered and labelled.

Which runs count
  A *group* is one method with one configuration (``config_hash``; for ``harness eval`` records
  the hash of source and target configuration) on one benchmark. Its seeds are its ``ok`` runs
  with distinct seeds. Of several ok runs of one configuration and seed (duplicates) the newest
  counts: the latest ``finished`` time, then the larger run id; the older ones are listed as
  ignored. Failed and unfinished runs never count; they are listed in a note under the table.
  Runs scored on different test episodes (their ``episode_digest`` differs) are never mixed in
  one leaderboard, table column or plot point set: that is an error naming both digests. Nor are
  runs of one benchmark name made on two definitions of it (their ``benchmark_sha256`` differs: a
  benchmark file or its images changed; the harness's own benchmarks record none).

Labels
  When a method has several configurations in one leaderboard (or plot), each is labelled by the
  settings whose values differ between them, e.g. ``simclr [data.train_fraction=0.1]``; settings
  are the keys of ``config.yaml`` (``group.key``, without ``data.root``) and the record fields
  ``kind``, ``trained_on``, ``head`` and ``distance``. Labels that still collide get the config hash.

Protocol
  A benchmark defines its test episodes (``bench.*``: ways, shots, queries, episodes, episode seed).
  Runs made with other ``bench.*`` values (``--set bench.queries=5``) are on other episodes; reports mark
  such a benchmark (†) and name the settings that differ (``protocol_changes``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from harness.config import GROUPS
from harness.errors import ConfigError, HarnessError
from harness.settings import canonical, check_not_renamed, flatten
from harness.store import CONFIG, RunStore, check_evidence, newest_key, read_config, read_scores

RECORD_FIELDS = ("kind", "trained_on", "head", "distance")
# Config keys that repeat a record field (the record holds the resolved value).
CONFIG_ALIASES = {"eval.head": "head", "eval.distance": "distance"}
# Config keys that say where things are or which run a record came from, not what was computed.
UNCOMPARED = {"data.root", "source_run", "method_name"}


@dataclass
class RunGroup:
    """One method with one configuration on one benchmark: its newest ok run per seed."""

    method: str
    config_hash: str
    settings: dict[str, Any]  # flattened config and record fields: for labels and filters
    runs: list[dict]  # one record per seed, by seed
    label: str = ""

    @property
    def seeds(self) -> list[int]:
        return [r["seed"] for r in self.runs]

    @property
    def accuracy(self) -> float:
        """Mean accuracy (0..1) over seeds."""
        return statistics.fmean(r["accuracy"] for r in self.runs)

    @property
    def ci95(self) -> float:
        """95% CI half width (0..1): over episodes with one seed, across seeds with several."""
        if len(self.runs) == 1:
            return float(self.runs[0]["ci95"])
        return 1.96 * statistics.stdev(r["accuracy"] for r in self.runs) / math.sqrt(len(self.runs))

    @property
    def episodes(self) -> int:
        return int(self.runs[0]["episodes"])

    @property
    def train_seconds(self) -> float | None:
        values = [r["train_seconds"] for r in self.runs if r.get("train_seconds") is not None]
        return statistics.fmean(values) if values else None

    @property
    def steps(self) -> list[int]:
        """The training steps of its runs, distinct and sorted (one value unless a budget stopped them)."""
        return sorted({int(r.get("steps") or 0) for r in self.runs})

    @property
    def train_flops(self) -> float | None:
        """Mean training FLOPs over seeds (``flops.train``); None where a run has none (made before counting)."""
        values = [(r.get("flops") or {}).get("train") for r in self.runs]
        return None if None in values else statistics.fmean(values)

    @property
    def peak_memory_mb(self) -> float | None:
        values = [r["peak_memory_mb"] for r in self.runs if r.get("peak_memory_mb") is not None]
        return max(values) if values else None

    @property
    def devices(self) -> str:
        return "; ".join(sorted({str(r.get("device") or "unknown") for r in self.runs}))

    @cached_property
    def per_episode(self):
        """Per-episode accuracies, averaged over seeds."""
        import numpy as np

        return np.mean([read_scores(r["run_dir"])[0] for r in self.runs], axis=0)

    def trials(self):
        """Per-query outcomes of the group's only run (McNemar needs one seed)."""
        if len(self.runs) > 1:
            raise HarnessError(
                f"{self.label}: the McNemar test pairs single runs' trials, but this row has "
                f"{len(self.runs)} seeds ({', '.join(map(str, self.seeds))}); use test: wilcoxon "
                "(pairs per-episode accuracies averaged over seeds)"
            )
        return read_scores(self.runs[0]["run_dir"])[1]

    def scores(self, test: str):
        return self.trials() if test == "mcnemar" else self.per_episode


@dataclass
class Selection:
    """The runs of one benchmark that match a filter: what counts and what does not."""

    benchmark: str
    groups: list[RunGroup]
    excluded: list[dict]  # failed or unfinished runs
    superseded: list[dict]  # older ok duplicates of a counted configuration and seed


def check_where(where: Mapping | None, context: str) -> dict:
    """A validated filter: ``group.key`` config keys or record fields, each mapped to one value."""
    if where is None:
        return {}
    if not isinstance(where, Mapping):
        raise ConfigError(f"{context}: where must be a mapping of setting → value, e.g. {{data.train_fraction: 0.1}}")
    out = {}
    for key, value in where.items():
        key = CONFIG_ALIASES.get(key, key)
        check_not_renamed(key, None, context)
        group = key.partition(".")[0]
        if key not in RECORD_FIELDS and not ("." in key and group in GROUPS):
            raise ConfigError(
                f"{context}: where key '{key}' is neither a config key (group.key with group one of "
                f"{', '.join(GROUPS)}) nor a record field ({', '.join(RECORD_FIELDS)})"
            )
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{context}: where {key} must be a single value, got {value!r}")
        out[key] = value
    return out


class MissingValue:
    """Stands for a setting a run does not have (never equal to a filter value)."""


def matches(settings: dict[str, Any], where: dict) -> bool:
    """Whether a run's settings (``read_settings``) have every value of a checked ``where`` filter; a
    setting the run does not have matches no value."""
    return all(settings.get(key, MissingValue) == value for key, value in where.items())


def read_settings(record: dict) -> dict[str, Any]:
    """A run's settings: ``group.key`` → value of its config.yaml in canonical form (``harness.settings``:
    view settings under ``views.*``, keys added since the run was made at the defaults it ran with), beside
    ``benchmark`` and the record fields ``kind``, ``trained_on``, ``head``, ``distance``."""
    run_dir = Path(record["run_dir"])
    tree = (read_config(run_dir) if (run_dir / CONFIG).is_file() else None) or {}
    flat = flatten(canonical(tree)) if tree else {}
    for key in (*UNCOMPARED, *CONFIG_ALIASES):
        flat.pop(key, None)
    flat.update({name: record.get(name) for name in RECORD_FIELDS})
    return flat


class Store:
    """The records of a run store, with each run's flattened settings read on demand."""

    def __init__(self, run_store: RunStore, recheck: bool = False):
        """Every report reads its runs through here: an unreadable record, or an ok run whose files
        disagree with it (``check_evidence``), is one error naming the file. A run checked before with
        the files it has now is not checked again (the store's index), unless ``recheck`` (``harness verify``)."""
        run_store.check_readable()
        for record in run_store.records:
            if record.get("status") == "ok" and (recheck or not run_store.cached(record, "checked")):
                check_evidence(record)
                run_store.remember(record, checked=True)
        self.run_store = run_store
        self.records = run_store.records
        self._settings: dict[str, dict] = {}
        for record in self.records:  # every report filters every run by its settings
            self.settings(record)
        run_store.save_indexes()

    def describe(self) -> str:
        return self.run_store.describe()

    def without(self, run_dirs: set[str]) -> Store:
        """The same store less the runs in ``run_dirs``."""
        view = object.__new__(Store)  # checked already
        view.run_store, view._settings = self.run_store, self._settings
        view.records = [r for r in self.records if r["run_dir"] not in run_dirs]
        return view

    def settings(self, record: dict) -> dict[str, Any]:
        """The run's settings (``read_settings``), read once."""
        run_dir = record["run_dir"]
        if run_dir not in self._settings:
            cached = self.run_store.cached(record, "settings")
            if cached is None:
                cached = read_settings(record)
                self.run_store.remember(record, settings=cached)
            self._settings[run_dir] = cached
        return self._settings[run_dir]

    def benchmarks(self) -> list[str]:
        """Benchmarks with at least one ok run, sorted."""
        return sorted({r["benchmark"] for r in self.records if r.get("status") == "ok" and r.get("benchmark")})

    def select(
        self, benchmark: str, methods: list[str] | None = None, head: str | None = None, where: dict | None = None
    ) -> Selection:
        """The runs on ``benchmark`` (of ``methods``, with ``head``, matching ``where``), grouped and labelled."""
        where = where or {}
        chosen = [
            r
            for r in self.records
            if r.get("benchmark") == benchmark
            and (methods is None or r.get("method") in methods)
            and (head is None or r.get("head") == head)
            and matches(self.settings(r), where)
        ]
        excluded = [r for r in chosen if r.get("status") != "ok"]
        newest, superseded = self.run_store.newest(chosen)
        by_config: dict[tuple, list[dict]] = {}
        for (method, config_hash, _), record in newest.items():
            by_config.setdefault((method, config_hash), []).append(record)
        groups = []
        for (method, config_hash), runs in sorted(by_config.items()):
            runs.sort(key=lambda r: r["seed"])
            groups.append(RunGroup(method, config_hash, self.settings(max(runs, key=newest_key)), runs))
        label_groups(groups)
        return Selection(benchmark, groups, sorted(excluded, key=newest_key), superseded)


def differing_settings(settings: list[dict], ignore: set[str] = frozenset()) -> list[str]:
    """Keys whose values are not the same in all ``settings`` (a missing key counts as a value), sorted."""
    keys = sorted({k for s in settings for k in s} - set(ignore))
    return [k for k in keys if len({repr(s.get(k, MissingValue)) for s in settings}) > 1]


def describe(settings: dict, keys: list[str]) -> str:
    return ", ".join(f"{k}={settings.get(k, 'unset')}" for k in keys)


def make_labels(
    methods: list[str], settings: list[dict], config_hashes: list[str], ignore: set[str] = frozenset()
) -> list[str]:
    """Labels: the method, plus its differing settings where a method comes with several settings."""
    labels = list(methods)
    for method in sorted(set(methods)):
        members = [i for i, m in enumerate(methods) if m == method]
        keys = differing_settings([settings[i] for i in members], ignore) if len(members) > 1 else []
        for i in members:
            labels[i] = f"{method} [{describe(settings[i], keys)}]" if keys else method
    return [
        f"{label} (config {config_hashes[i][:8]})" if labels.count(label) > 1 else label
        for i, label in enumerate(labels)
    ]


def label_groups(groups: list[RunGroup]) -> None:
    """Set each group's label (see the module docstring, "Labels")."""
    labels = make_labels([g.method for g in groups], [g.settings for g in groups], [g.config_hash for g in groups])
    for group, label in zip(groups, labels):
        group.label = label


def check_same_definition(groups: list[RunGroup], context: str) -> None:
    """Error unless every run in ``groups`` was scored on one definition of its benchmark: the same
    ``benchmark_sha256`` (records of the harness's own benchmarks have none)."""
    first: dict[str | None, str] = {}
    for record in (r for group in groups for r in group.runs):
        first.setdefault(record.get("benchmark_sha256"), run_id(record))
    if len(first) > 1:
        (hash_a, run_a), (hash_b, run_b) = list(first.items())[:2]
        raise HarnessError(
            f"{context}: runs of one benchmark name were made on different definitions of it: benchmark hash "
            f"{hash_a or 'none (a built-in benchmark)'} (run {run_a}) vs {hash_b or 'none (a built-in benchmark)'} "
            f"(run {run_b}); its benchmark file or its images changed between them. Move the runs of the other "
            "definition out of the runs directory, or give the changed benchmark a new name"
        )


def check_same_episodes(groups: list[RunGroup], context: str) -> None:
    """Error unless every run in ``groups`` was scored on one definition of its benchmark
    (``check_same_definition``) and on the same test episodes."""
    check_same_definition(groups, context)
    first: dict[str, tuple[str, dict]] = {}
    for group in groups:
        for record in group.runs:
            first.setdefault(str(record.get("episode_digest")), (run_id(record), group.settings))
    if len(first) > 1:
        (digest_a, (run_a, settings_a)), (digest_b, (run_b, settings_b)) = list(first.items())[:2]
        protocol = [
            k for k in differing_settings([settings_a, settings_b]) if k.startswith("bench.") or k == "data.image_size"
        ]
        hint = (
            f" They differ in {', '.join(f'{k} ({settings_a.get(k)} vs {settings_b.get(k)})' for k in protocol)}, "
            "which the episode digest covers."
            if protocol
            else ""
        )
        raise HarnessError(
            f"{context}: runs were scored on different test episodes: episode digest {digest_a} (run {run_a}) "
            f"vs {digest_b} (run {run_b}).{hint} Results on different episodes are never compared in one column. "
            "Move the runs made on the other episodes out of the runs directory, or select one protocol "
            "with a where filter (e.g. where: {bench.episodes: 2000})"
        )


def benchmark_protocol(record: dict) -> dict[str, Any] | None:
    """The ``bench.*`` settings a run's benchmark defines (its test episodes), or None where its definition
    cannot be found here (a benchmark file since moved, a name not registered). ``data.image_size`` is not
    among them: a method may see the same episodes at its own resolution (mhd: 105 px)."""
    from harness.benchmarks import get_benchmark, reference

    try:
        spec = get_benchmark(reference(str(record.get("benchmark")), record.get("benchmark_file")))
    except HarnessError:
        return None
    return {f"bench.{k}": v for k, v in vars(spec.bench_config()).items()}


def protocol_changes(groups: list[RunGroup]) -> dict[str, tuple[str, Any]]:
    """The ``bench.*`` settings in which the runs of ``groups`` (of one benchmark) differ from the benchmark's
    own: key → (the runs' value(s), the benchmark's value). Empty where the benchmark's definition is unknown
    here (nothing to compare with)."""
    protocol = benchmark_protocol(groups[0].runs[0]) if groups else None
    changed = {}
    for key, value in (protocol or {}).items():
        own = {g.settings.get(key, value) for g in groups} - {value}
        if own:
            changed[key] = ("/".join(map(str, sorted(own))), value)
    return changed


def commit_of(record: dict) -> str:
    """The harness commit a run was made with (12 hex digits, ``+dirty`` for uncommitted changes)."""
    git = record.get("git") or {}
    commit = git.get("commit")
    text = commit[:12] if commit else "unknown"
    return text + ("+dirty" if git.get("dirty") else "")


def run_id(record: dict) -> str:
    return str(record.get("run_id") or Path(record["run_dir"]).name)


def short_reason(record: dict) -> str:
    """The first line of a failed run's reason, at most 100 characters."""
    reason = str(record.get("reason") or f"status {record.get('status')}").strip().splitlines()
    text = reason[0] if reason else ""
    return text if len(text) <= 100 else text[:99] + "…"
