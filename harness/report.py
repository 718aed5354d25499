"""Leaderboards, paper tables and plots from the result store: ``harness leaderboard | table | plot``.

Which runs count
  A *group* is one method with one configuration (``config_hash``; for ``harness eval`` records
  the hash of source and target configuration) on one benchmark. Its seeds are its ``ok`` runs
  with distinct seeds. Of several ok runs of one configuration and seed (duplicates) the newest
  counts: the latest ``finished`` time, then the larger run id; the older ones are listed as
  ignored. Failed and unfinished runs never count; they are listed in a note under the table.
  Runs scored on different test episodes (their ``episode_digest`` differs) are never mixed in
  one leaderboard, table column or plot point set: that is an error naming both digests.

Numbers (percent)
  One seed: the run's accuracy over the test episodes ± its 95% CI over episodes
  (1.96·sd/√episodes). Several seeds: the mean of the per-seed accuracies ± the 95% CI across
  seeds (1.96·sd/√seeds, sd with ddof=1). Error is 100 − accuracy with the same CI.

Ranks and ties
  The group with the highest mean accuracy is best (equal means: the first label). Every other
  group is compared with it by a two-sided paired test on the same test episodes: by default the
  Wilcoxon signed-rank test on per-episode accuracies (averaged over seeds first; Pratt's
  handling of zero differences), or with ``test: mcnemar`` the exact McNemar test on per-query
  outcomes (``trials.npy``; one seed per group). The p-values are Holm-corrected over these
  comparisons; groups not significantly worse (adjusted p ≥ α, default 0.05) share rank 1 with
  the best (tables: best bold, ties underlined). The same procedure then ranks the groups left:
  their best gets the next competition rank (1, 1, 3, ...), and so on.

Labels
  When a method has several configurations in one leaderboard (or plot), each is labelled by the
  settings whose values differ between them, e.g. ``simclr [data.train_fraction=0.1]``; settings
  are the keys of ``config.yaml`` (``group.key``, without ``data.root``) and the record fields
  ``kind``, ``trained_on``, ``head`` and ``distance``. Labels that still collide get the config hash.

Table specs (``harness table SPEC.yaml``): see ``TableSpec``. Every generated file names the
runs it came from (run ids and git commits) and holds no timestamps or absolute paths, so
regenerating from unchanged runs is byte-identical.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from harness import files
from harness.config import GROUPS
from harness.overrides import parse_value
from harness.errors import ConfigError, HarnessError
from harness.store import RunStore, newest_key

TESTS = ("wilcoxon", "mcnemar")
TEST_DESCRIPTIONS = {
    "wilcoxon": "two-sided Wilcoxon signed-rank test on per-episode accuracies (Pratt's treatment of zero "
                "differences; with several seeds, per-episode accuracies averaged over seeds)",
    "mcnemar": "two-sided exact McNemar test on per-query outcomes",
}
ALPHA = 0.05
FORMATS = ("md", "latex", "csv")
SUFFIXES = {"md": ".md", "latex": ".tex", "csv": ".csv"}
METRICS = ("accuracy", "error")
RECORD_FIELDS = ("kind", "trained_on", "head", "distance")
# Config keys that repeat a record field (the record holds the resolved value).
CONFIG_ALIASES = {"eval.head": "head", "eval.distance": "distance"}
# Config keys that say where things are or which run a record came from, not what was computed.
UNCOMPARED = {"data.root", "source_run", "method_name"}
MISSING = "—"


# ------------------------------------------------------------------------------------ statistics


@dataclass(frozen=True)
class PairedTest:
    """A two-sided paired comparison of A and B on the same test episodes or trials."""

    kind: str  # wilcoxon | mcnemar
    statistic: float
    p_value: float
    pairs: int  # episodes (wilcoxon) or trials (mcnemar) compared
    a_better: int  # pairs where A beat B
    b_better: int  # pairs where B beat A

    def summary(self) -> str:
        unit = "episodes" if self.kind == "wilcoxon" else "trials"
        name = "Wilcoxon signed-rank test" if self.kind == "wilcoxon" else "exact McNemar test"
        return (f"{name}, two-sided, over {self.pairs} paired {unit} (A better on {self.a_better}, "
                f"B better on {self.b_better}): p = {self.p_value:.4g}")


def paired_test(a, b, kind: str = "wilcoxon") -> PairedTest:
    """Two-sided paired test of A against B on the same test episodes.

    ``wilcoxon``: ``a``, ``b`` are per-episode accuracies; scipy's Wilcoxon signed-rank test with
    Pratt's zero handling (``method='auto'``) on the differences rounded to 10 decimals (so equal
    differences tie exactly); all-zero differences give p = 1. ``mcnemar``: ``a``, ``b`` are
    per-query outcomes of the same trials (bool arrays of one shape, e.g. ``trials.npy``); the exact
    McNemar test, i.e. a two-sided binomial test (p = ½) on the discordant trials; none discordant
    gives p = 1.
    """
    import numpy as np
    from scipy import stats

    if kind not in TESTS:
        raise ConfigError(f"paired test must be one of {', '.join(TESTS)}, got '{kind}'")
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise HarnessError(f"a paired test needs results on the same episodes: shapes {a.shape} and {b.shape} differ")
    if kind == "mcnemar":
        a, b = a.astype(bool).ravel(), b.astype(bool).ravel()
        a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
        p = stats.binomtest(a_only, a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
        return PairedTest(kind, float(min(a_only, b_only)), float(p), int(a.size), a_only, b_only)
    # Rounded so that equal differences are equal numbers (0.7 - 0.8 != 0.6 - 0.7 in floating point),
    # which the signed-rank test's ties and zeros depend on.
    diff = np.round(a.astype(float).ravel() - b.astype(float).ravel(), 10)
    a_better, b_better = int(np.sum(diff > 0)), int(np.sum(diff < 0))
    if a_better + b_better == 0:
        return PairedTest(kind, 0.0, 1.0, int(diff.size), 0, 0)
    result = stats.wilcoxon(diff, zero_method="pratt", alternative="two-sided", method="auto")
    p = float(result.pvalue)
    return PairedTest(kind, float(result.statistic), p if math.isfinite(p) else 1.0, int(diff.size), a_better, b_better)


def holm(p_values: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (same order as given), capped at 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: (p_values[i], i))
    adjusted, running = [1.0] * m, 0.0
    for step, i in enumerate(order):
        running = max(running, min(1.0, (m - step) * p_values[i]))
        adjusted[i] = running
    return adjusted


# ------------------------------------------------------------------------------------ run groups


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

        from harness.store import read_scores

        return np.mean([read_scores(r["run_dir"])[0] for r in self.runs], axis=0)

    def trials(self):
        """Per-query outcomes of the group's only run (McNemar needs one seed)."""
        from harness.store import read_scores

        if len(self.runs) > 1:
            raise HarnessError(f"{self.label}: the McNemar test pairs single runs' trials, but this row has "
                               f"{len(self.runs)} seeds ({', '.join(map(str, self.seeds))}); use test: wilcoxon "
                               "(pairs per-episode accuracies averaged over seeds)")
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


def check_where(where: dict | None, context: str) -> dict:
    """A validated filter: ``group.key`` config keys or record fields, each mapped to one value."""
    if where is None:
        return {}
    if not isinstance(where, dict):
        raise ConfigError(f"{context}: where must be a mapping of setting → value, e.g. {{data.train_fraction: 0.1}}")
    out = {}
    for key, value in where.items():
        key = CONFIG_ALIASES.get(key, key)
        group = key.partition(".")[0]
        if key not in RECORD_FIELDS and not ("." in key and group in GROUPS):
            raise ConfigError(f"{context}: where key '{key}' is neither a config key (group.key with group one of "
                              f"{', '.join(GROUPS)}) nor a record field ({', '.join(RECORD_FIELDS)})")
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{context}: where {key} must be a single value, got {value!r}")
        out[key] = value
    return out


class MissingValue:
    """Stands for a setting a run does not have (never equal to a filter value)."""


def read_settings(record: dict) -> dict[str, Any]:
    """A run's settings: ``group.key`` → value from its config.yaml (plus ``benchmark``) and the
    record fields ``kind``, ``trained_on``, ``head``, ``distance``."""
    from harness.store import CONFIG, read_config

    run_dir = Path(record["run_dir"])
    tree = (read_config(run_dir) if (run_dir / CONFIG).is_file() else None) or {}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    for key in (*UNCOMPARED, *CONFIG_ALIASES):
        flat.pop(key, None)
    flat.update({name: record.get(name) for name in RECORD_FIELDS})
    return flat


class Store:
    """The records of a run store, with each run's flattened settings read on demand."""

    def __init__(self, run_store: RunStore):
        self.run_store = run_store
        self.records = run_store.records
        self._settings: dict[str, dict] = {}

    def describe(self) -> str:
        return self.run_store.describe()

    def settings(self, record: dict) -> dict[str, Any]:
        """The run's settings (``read_settings``), read once."""
        run_dir = record["run_dir"]
        if run_dir not in self._settings:
            self._settings[run_dir] = read_settings(record)
        return self._settings[run_dir]

    def benchmarks(self) -> list[str]:
        """Benchmarks with at least one ok run, sorted."""
        return sorted({r["benchmark"] for r in self.records if r.get("status") == "ok" and r.get("benchmark")})

    def select(self, benchmark: str, methods: list[str] | None = None, head: str | None = None,
               where: dict | None = None) -> Selection:
        """The runs on ``benchmark`` (of ``methods``, with ``head``, matching ``where``), grouped and labelled."""
        where = where or {}
        chosen = [r for r in self.records
                  if r.get("benchmark") == benchmark
                  and (methods is None or r.get("method") in methods)
                  and (head is None or r.get("head") == head)
                  and all(self.settings(r).get(k, MissingValue) == v for k, v in where.items())]
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


def make_labels(methods: list[str], settings: list[dict], config_hashes: list[str],
                ignore: set[str] = frozenset()) -> list[str]:
    """Labels: the method, plus its differing settings where a method comes with several settings."""
    labels = list(methods)
    for method in sorted(set(methods)):
        members = [i for i, m in enumerate(methods) if m == method]
        keys = differing_settings([settings[i] for i in members], ignore) if len(members) > 1 else []
        for i in members:
            labels[i] = f"{method} [{describe(settings[i], keys)}]" if keys else method
    return [f"{label} (config {config_hashes[i][:8]})" if labels.count(label) > 1 else label
            for i, label in enumerate(labels)]


def label_groups(groups: list[RunGroup]) -> None:
    """Set each group's label (see the module docstring, "Labels")."""
    labels = make_labels([g.method for g in groups], [g.settings for g in groups], [g.config_hash for g in groups])
    for group, label in zip(groups, labels):
        group.label = label


def check_same_episodes(groups: list[RunGroup], context: str) -> None:
    """Error unless every run in ``groups`` was scored on the same test episodes."""
    first: dict[str, tuple[str, dict]] = {}
    for group in groups:
        for record in group.runs:
            first.setdefault(str(record.get("episode_digest")), (run_id(record), group.settings))
    if len(first) > 1:
        (digest_a, (run_a, settings_a)), (digest_b, (run_b, settings_b)) = list(first.items())[:2]
        protocol = [k for k in differing_settings([settings_a, settings_b])
                    if k.startswith("bench.") or k == "data.image_size"]
        hint = (f" They differ in {', '.join(f'{k} ({settings_a.get(k)} vs {settings_b.get(k)})' for k in protocol)}, "
                "which the episode digest covers." if protocol else "")
        raise HarnessError(
            f"{context}: runs were scored on different test episodes: episode digest {digest_a} (run {run_a}) "
            f"vs {digest_b} (run {run_b}).{hint} Results on different episodes are never compared in one column. "
            "Move the runs made on the other episodes out of the runs directory, or select one protocol "
            "with a where filter (e.g. where: {bench.episodes: 2000})")


@dataclass(frozen=True)
class Standing:
    """A group's place: competition rank, mark (best | tie | ''), Holm-adjusted p against the best."""

    rank: int
    mark: str
    p_vs_best: float | None


def rank_groups(groups: list[RunGroup], test: str = "wilcoxon", alpha: float = ALPHA) -> list[Standing]:
    """Standings of ``groups`` (same order): see the module docstring, "Ranks and ties"."""

    def holm_against(leader: int, others: list[int]) -> dict[int, float]:
        scores = groups[leader].scores(test)
        return dict(zip(others, holm([paired_test(scores, groups[i].scores(test), test).p_value for i in others])))

    if not groups:
        return []
    order = sorted(range(len(groups)), key=lambda i: (-groups[i].accuracy, groups[i].label))
    best = order[0]
    p_vs_best = holm_against(best, order[1:])
    ranks: dict[int, int] = {}
    remaining, next_rank = order, 1
    while remaining:
        leader, others = remaining[0], remaining[1:]
        adjusted = p_vs_best if leader == best else holm_against(leader, others)
        tied = [i for i in others if adjusted[i] >= alpha]
        ranks.update({i: next_rank for i in [leader, *tied]})
        remaining = [i for i in others if i not in tied]
        next_rank += 1 + len(tied)
    return [Standing(ranks[i], "best" if i == best else "tie" if ranks[i] == 1 else "", p_vs_best.get(i))
            for i in range(len(groups))]


# ------------------------------------------------------------------------------------ formatting


def percent(value: float, metric: str = "accuracy") -> float:
    """An accuracy (0..1) as percent of ``metric`` (accuracy or error)."""
    return 100 * (1 - value) if metric == "error" else 100 * value


def plus_minus(value: float, ci: float, decimals: int) -> str:
    return f"{value:.{decimals}f} ± {ci:.{decimals}f}"


def format_p(p: float | None) -> str:
    """A p-value for a table: three decimals, ``<0.001`` below that, blank for none."""
    if p is None:
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


def format_memory(mb: float | None) -> str:
    return MISSING if mb is None else f"{mb:.0f} MB"


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


def mark_markdown(text: str, mark: str) -> str:
    return f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark == "tie" else text


def mark_latex(text: str, mark: str) -> str:
    return rf"\textbf{{{text}}}" if mark == "best" else rf"\underline{{{text}}}" if mark == "tie" else text


LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"$<$", ">": r"$>$", "—": "---",
    "–": "--", "±": r"$\pm$", "×": r"$\times$", "α": r"$\alpha$", "≥": r"$\geq$", "√": r"$\surd$", "·": r"$\cdot$",
    "→": r"$\rightarrow$", "…": r"\ldots{}",
}


def latex_escape(text: str) -> str:
    """Text → LaTeX source that prints it (special characters escaped, a few symbols as math)."""
    return "".join(LATEX_SPECIAL.get(c, c) for c in str(text))


def markdown_table(headers: list[str], rows: list[list[str]], align: list[str]) -> str:
    """A pipe table via tabulate; cells are used as they are (no number parsing)."""
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="pipe", colalign=align, disable_numparse=True)


def latex_tabular(headers: list[str], rows: list[list[str]], align: str,
                  blocks: list[tuple[str, list[list[str]]]] = ()) -> list[str]:
    """A booktabs tabular; ``rows`` are LaTeX already; each block adds a rule, a caption row and its rows."""
    lines = [rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(headers) + r" \\", r"\midrule"]
    lines += [" & ".join(row) + r" \\" for row in rows]
    for caption, block_rows in blocks:
        lines += [r"\midrule", rf"\multicolumn{{{len(align)}}}{{l}}{{\emph{{{caption}}}}} \\"]
        lines += [" & ".join(row) + r" \\" for row in block_rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return lines


def csv_text(frame) -> str:
    """A DataFrame as CSV text with ``\\n`` line ends and no index."""
    return frame.to_csv(index=False, lineterminator="\n")


def source_lines(records: list[dict]) -> list[tuple[str, str]]:
    """(run id, commit) of each record, sorted by run id, without repeats."""
    return sorted({(run_id(r), commit_of(r)) for r in records})


def provenance_text(made_by: str, records: list[dict]) -> str:
    """One line for file metadata (plots): the command and the runs with their commits."""
    return f"{made_by}; runs: " + ", ".join(f"{rid} ({commit})" for rid, commit in source_lines(records))


def ranking_note(test: str, alpha: float) -> str:
    return (f"Rank 1 is shared by every row not significantly worse than the best on the same test episodes: "
            f"{TEST_DESCRIPTIONS[test]}, Holm-corrected over the comparisons with the best, α = {alpha:g}; "
            "lower ranks repeat this among the rows left.")


def interval_note() -> str:
    return ("± is the 95% confidence interval: over test episodes for one seed, across seeds "
            "(1.96·sd/√seeds) for several, where the number is the mean over seeds.")


def duplicates_note(superseded: list[dict]) -> str:
    return ("Of several ok runs of one configuration and seed the newest counts; ignored: "
            + ", ".join(run_id(r) for r in superseded) + ".")


def write_output(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    files.write_text(path, text)
    return path


# ------------------------------------------------------------------------------------ leaderboard


@dataclass
class Board:
    """The leaderboard of one benchmark: groups best first, with their standings."""

    selection: Selection
    groups: list[RunGroup]
    standings: list[Standing]

    @property
    def records(self) -> list[dict]:
        return [r for g in self.groups for r in g.runs]


def build_boards(store: Store, benchmarks: list[str] | None, head: str | None, test: str, alpha: float) -> list[Board]:
    """One board per benchmark (all benchmarks with ok runs when none are named)."""
    available = store.benchmarks()
    boards = []
    for benchmark in benchmarks or available:
        selection = store.select(benchmark, head=head)
        if not selection.groups:
            raise HarnessError(
                f"no finished runs on '{benchmark}'" + (f" with head '{head}'" if head else "") + f" under "
                f"{store.describe()}. Benchmarks with finished runs there: {', '.join(available) or '(none)'}. "
                "Check --bench and --runs-dir, or make runs with `harness run`")
        check_same_episodes(selection.groups, f"leaderboard {benchmark}")
        standings = rank_groups(selection.groups, test, alpha)
        order = sorted(range(len(standings)), key=lambda i: (standings[i].rank, -selection.groups[i].accuracy,
                                                             selection.groups[i].label))
        boards.append(Board(selection, [selection.groups[i] for i in order], [standings[i] for i in order]))
    if not boards:
        raise HarnessError(f"no finished runs under {store.describe()}; make some with `harness run` or pass --runs-dir")
    return boards


LEADERBOARD_HEADERS = ["Rank", "Method", "Accuracy (%)", "Episodes", "Seeds", "p vs best", "Train time",
                       "Peak memory", "Device"]


def board_cells(board: Board, fmt: str, decimals: int = 2) -> list[list[str]]:
    """The leaderboard's cells as Markdown or LaTeX (escaped, best bold, ties underlined)."""
    escape, mark = (latex_escape, mark_latex) if fmt == "latex" else (str, mark_markdown)
    rows = []
    for group, standing in zip(board.groups, board.standings):
        accuracy = mark(escape(plus_minus(100 * group.accuracy, 100 * group.ci95, decimals)), standing.mark)
        rows.append([str(standing.rank), escape(group.label), accuracy, str(group.episodes), str(len(group.runs)),
                     escape(format_p(standing.p_vs_best)), escape(format_seconds(group.train_seconds)),
                     escape(format_memory(group.peak_memory_mb)), escape(group.devices)])
    return rows


def board_notes(board: Board, test: str, alpha: float) -> list[str]:
    notes = [interval_note(), ranking_note(test, alpha) + " p vs best: Holm-adjusted."]
    if board.selection.excluded:
        notes.append("Excluded (not ok): " + "; ".join(f"{run_id(r)} ({r.get('status')}: {short_reason(r)})"
                                                    for r in board.selection.excluded) + ".")
    if board.selection.superseded:
        notes.append(duplicates_note(board.selection.superseded))
    return notes


def render_leaderboard(boards: list[Board], fmt: str, made_by: str, test: str, alpha: float) -> str:
    """The boards as one Markdown, LaTeX (booktabs) or CSV document."""
    if fmt == "csv":
        return leaderboard_csv(boards)
    if fmt == "md":
        out = [f"<!-- Made by {made_by}; the source runs are listed under each table. Regenerate, do not edit. -->",
               "", "# Leaderboard", ""]
        for board in boards:
            out += [f"## {board.selection.benchmark}", "",
                    markdown_table(LEADERBOARD_HEADERS, board_cells(board, "md"),
                                   ["right", "left", "right", "right", "right", "right", "right", "right", "left"]), ""]
            out += [f"- {note}" for note in board_notes(board, test, alpha)]
            out += ["- Source runs (run id, harness commit): "
                    + ", ".join(f"`{rid}` ({commit})" for rid, commit in source_lines(board.records)) + ".", ""]
        return "\n".join(out)
    out = [f"% Made by {made_by}; regenerate, do not edit. Needs \\usepackage{{booktabs}}."]
    for board in boards:
        out += [f"% Source runs of {board.selection.benchmark} (run id, harness commit):"]
        out += [f"%   {rid} {commit}" for rid, commit in source_lines(board.records)]
        out += [r"\begin{table}[t]", r"\centering", rf"\caption{{Leaderboard: {latex_escape(board.selection.benchmark)}}}"]
        out += latex_tabular([latex_escape(h) for h in LEADERBOARD_HEADERS], board_cells(board, "latex"), "rlrrrrrrl")
        out += [r"\par\smallskip\footnotesize", " ".join(latex_escape(n) for n in board_notes(board, test, alpha)),
                r"\end{table}", ""]
    return "\n".join(out)


def leaderboard_csv(boards: list[Board]) -> str:
    """One line per group and benchmark; numbers in percent, with the runs and commits."""
    import pandas as pd

    rows = []
    for board in boards:
        for group, standing in zip(board.groups, board.standings):
            rows.append({
                "benchmark": board.selection.benchmark, "rank": standing.rank, "label": group.label,
                "method": group.method, "config_hash": group.config_hash, "mark": standing.mark,
                "accuracy_pct": round(100 * group.accuracy, 4), "ci95_pct": round(100 * group.ci95, 4),
                "episodes": group.episodes, "seeds": " ".join(map(str, group.seeds)),
                "p_vs_best_holm": None if standing.p_vs_best is None else round(standing.p_vs_best, 6),
                "train_seconds": group.train_seconds, "peak_memory_mb": group.peak_memory_mb,
                "device": group.devices, "episode_digest": group.runs[0].get("episode_digest"),
                "runs": " ".join(run_id(r) for r in group.runs), "commits": " ".join(commit_of(r) for r in group.runs),
            })
    return csv_text(pd.DataFrame(rows))


# ------------------------------------------------------------------------------------ table specs


def check_keys(mapping: Any, allowed: set[str], required: set[str], context: str) -> dict:
    """``mapping`` as a dict with only ``allowed`` keys and all ``required`` ones, or a ConfigError."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{context} must be a mapping with keys {', '.join(sorted(allowed))}, got {mapping!r}")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ConfigError(f"{context}: unknown key(s) {', '.join(unknown)}. Valid keys: {', '.join(sorted(allowed))}")
    missing = sorted(required - set(mapping))
    if missing:
        raise ConfigError(f"{context}: missing key(s) {', '.join(missing)}")
    return mapping


def check_list(value: Any, context: str) -> list:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{context} must be a non-empty list")
    return value


def check_outputs(value: Any, context: str, base: Path) -> dict[str, Path]:
    """``{format: path}`` with paths relative to ``base`` (the spec's folder), normalised."""
    outputs = check_keys(value, set(FORMATS), set(), context)
    return {fmt: Path(os.path.normpath(base / str(path))) for fmt, path in outputs.items()}


def names(value: Any, context: str) -> list[str] | None:
    """A list of names from a YAML list or a comma-separated string (None when absent)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i.strip() for i in items):
        raise ConfigError(f"{context} must be a list of names, got {value!r}")
    return [i.strip() for i in items]


@dataclass(frozen=True)
class Column:
    label: str
    benchmark: str
    head: str | None
    where: dict


@dataclass(frozen=True)
class Row:
    label: str
    method: str
    where: dict


@dataclass(frozen=True)
class Reference:
    label: str
    citation: str
    bibkey: str | None
    values: dict[str, float]


@dataclass(frozen=True)
class LeaderboardRequest:
    benchmarks: list[str] | None
    head: str | None
    test: str
    alpha: float
    outputs: dict[str, Path]


@dataclass(frozen=True)
class PlotRequest:
    kind: str  # curves | shots | scarcity
    benchmarks: list[str]
    methods: list[str] | None
    head: str | None
    y: str
    x: str
    prefix: Path
    where: dict = field(default_factory=dict)  # only runs matching these settings


@dataclass
class TableSpec:
    """A paper table, read from YAML::

        title: One-shot classification        # heading / LaTeX caption
        caption: ...                          # optional LaTeX caption, used verbatim (default: the title)
        metric: error                         # accuracy | error, in percent (default accuracy)
        decimals: 1                           # digits after the point (default 1)
        test: wilcoxon                        # wilcoxon | mcnemar: the tie test (default wilcoxon)
        alpha: 0.05                           # significance level of the tie test
        evidence: ../runs/x                   # the committed runs it is made from (default ../runs/<spec name>)
        seeds: 0-2                            # the seeds of every learned row (default 0)
        columns:                              # one per benchmark (and/or shots, head, filter)
          - {label: 20-way 1-shot, benchmark: omniglot-small1-20w1s-lake, head: prototype, where: {...}}
        rows:                                 # one per method (configuration)
          - {label: SimCLR, method: simclr, where: {data.train_fraction: 1.0}}
        references:                           # published numbers: quoted, not measured, never ranked
          - {label: Humans, citation: Lake et al. 2015, bibkey: lake2015, values: {20-way 1-shot: 4.5}}
        notes: [free text printed under the table]
        outputs: {md: x.md, latex: x.tex, csv: x.csv}   # default: all three, named after the spec
        leaderboards:                         # optional, made by the same command
          - {benchmarks: [omniglot-small1-20w1s-lake], outputs: {md: ../leaderboards/x.md}}
        plots:                                # optional: kind curves|shots|scarcity, out: file prefix
          - {kind: scarcity, benchmarks: [B], methods: [a, b], where: {train.budget_minutes: 3},
             out: ../plots/scarcity-B}

    Output and evidence paths are relative to the spec's folder; ``--runs-dir`` reads another store
    and ``--collect-from DIR`` copies the evidence of every run used from DIR into ``evidence``. ``where`` keys are config keys
    (``group.key``) or record fields (kind, trained_on, head, distance); a row's and its
    column's filters both apply. A row must match at most one configuration per column.
    Reference values are in the table's metric, as published.
    """

    path: Path
    title: str
    caption: str | None  # raw LaTeX; None: the escaped title
    metric: str
    decimals: int
    test: str
    alpha: float
    evidence: Path
    seeds: list[int]
    columns: list[Column]
    rows: list[Row]
    references: list[Reference]
    notes: list[str]
    outputs: dict[str, Path]
    leaderboards: list[LeaderboardRequest]
    plots: list[PlotRequest]


SPEC_KEYS = {"title", "caption", "metric", "decimals", "test", "alpha", "evidence", "seeds", "columns", "rows",
             "references", "notes", "outputs", "leaderboards", "plots"}


def load_spec(path: Path) -> TableSpec:
    """Read and check a table spec (see ``TableSpec``)."""
    from harness.config import load_yaml

    path = Path(path)
    tree = check_keys(load_yaml(path), SPEC_KEYS, {"columns", "rows"}, str(path))
    base = path.parent
    metric = tree.get("metric", "accuracy")
    if metric not in METRICS:
        raise ConfigError(f"{path}: metric must be one of {', '.join(METRICS)}, got {metric!r}")
    test, alpha = check_test(tree.get("test", "wilcoxon"), tree.get("alpha", ALPHA), str(path))
    decimals = tree.get("decimals", 1)
    if not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= 4:
        raise ConfigError(f"{path}: decimals must be an integer from 0 to 4, got {decimals!r}")
    columns = []
    for i, item in enumerate(check_list(tree["columns"], f"{path}: columns")):
        context = f"{path}: columns[{i}]"
        item = check_keys(item, {"label", "benchmark", "head", "where"}, {"benchmark"}, context)
        columns.append(Column(str(item.get("label", item["benchmark"])), str(item["benchmark"]), item.get("head"),
                              check_where(item.get("where"), context)))
    rows = []
    for i, item in enumerate(check_list(tree["rows"], f"{path}: rows")):
        context = f"{path}: rows[{i}]"
        item = check_keys(item, {"label", "method", "where"}, {"method"}, context)
        rows.append(Row(str(item.get("label", item["method"])), str(item["method"]),
                        check_where(item.get("where"), context)))
    column_labels = [c.label for c in columns]
    references = []
    for i, item in enumerate(tree.get("references") or []):
        context = f"{path}: references[{i}]"
        item = check_keys(item, {"label", "citation", "bibkey", "values"}, {"label", "citation", "values"}, context)
        values = check_keys(item["values"], set(column_labels), set(), f"{context}: values (keys are column labels)")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()):
            raise ConfigError(f"{context}: values must be numbers in the table's metric ({metric}, percent)")
        references.append(Reference(str(item["label"]), str(item["citation"]), item.get("bibkey"),
                                    {k: float(v) for k, v in values.items()}))
    for kind, labels in (("column", column_labels), ("row", [r.label for r in rows] + [r.label for r in references])):
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ConfigError(f"{path}: {kind} labels must be unique; repeated: {', '.join(repeated)}")
    notes = tree.get("notes") or []
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise ConfigError(f"{path}: notes must be a list of strings")
    outputs = (check_outputs(tree["outputs"], f"{path}: outputs", base) if "outputs" in tree
               else {fmt: base / f"{path.stem}{SUFFIXES[fmt]}" for fmt in FORMATS})
    leaderboards = []
    for i, item in enumerate(tree.get("leaderboards") or []):
        context = f"{path}: leaderboards[{i}]"
        item = check_keys(item, {"benchmarks", "head", "test", "alpha", "outputs"}, {"benchmarks", "outputs"}, context)
        board_test, board_alpha = check_test(item.get("test", test), item.get("alpha", alpha), context)
        leaderboards.append(LeaderboardRequest(names(item["benchmarks"], f"{context}: benchmarks"), item.get("head"),
                                               board_test, board_alpha,
                                               check_outputs(item["outputs"], f"{context}: outputs", base)))
    plots = []
    for i, item in enumerate(tree.get("plots") or []):
        context = f"{path}: plots[{i}]"
        item = check_keys(item, {"kind", "benchmarks", "methods", "head", "y", "x", "where", "out"},
                          {"kind", "benchmarks", "out"}, context)
        plots.append(plot_request(item["kind"], names(item["benchmarks"], f"{context}: benchmarks"),
                                  names(item.get("methods"), f"{context}: methods"), item.get("head"),
                                  item.get("y", "loss"), item.get("x", "step"),
                                  Path(os.path.normpath(base / str(item["out"]))), context, item.get("where")))
    evidence = Path(os.path.normpath(base / str(tree.get("evidence", f"../runs/{path.stem}"))))
    from harness.config import parse_seeds

    seeds = parse_seeds(tree.get("seeds", 0))
    title = str(tree.get("title", path.stem))
    spec = TableSpec(path, title, tree.get("caption"), metric, decimals, test, float(alpha), evidence, seeds,
                     columns, rows, references, notes, outputs, leaderboards, plots)
    check_names(spec)
    return spec


def check_names(spec: TableSpec) -> None:
    """Unknown methods, benchmarks and config keys in a spec are errors with the closest match
    (a typo would otherwise be a table of empty cells)."""
    from harness.benchmarks import BENCHMARKS
    from harness.methods import METHODS

    for i, row in enumerate(spec.rows):
        check_name(METHODS, row.method, f"{spec.path}: rows[{i}] ({row.label!r}): method")
        check_where_keys(row.where, [row.method], f"{spec.path}: rows[{i}] ({row.label!r})")
    methods = [row.method for row in spec.rows]
    for i, column in enumerate(spec.columns):
        check_name(BENCHMARKS, column.benchmark, f"{spec.path}: columns[{i}] ({column.label!r}): benchmark")
        check_where_keys(column.where, methods, f"{spec.path}: columns[{i}] ({column.label!r})")
    for i, request in enumerate(spec.leaderboards):
        for benchmark in request.benchmarks or []:
            check_name(BENCHMARKS, benchmark, f"{spec.path}: leaderboards[{i}]: benchmark")
    for i, request in enumerate(spec.plots):
        for benchmark in request.benchmarks:
            check_name(BENCHMARKS, benchmark, f"{spec.path}: plots[{i}]: benchmark")
        for method in request.methods or []:
            check_name(METHODS, method, f"{spec.path}: plots[{i}]: method")
        check_where_keys(request.where, request.methods or methods, f"{spec.path}: plots[{i}]")


def check_name(registry, name: str, context: str) -> None:
    try:
        registry.get(name)
    except HarnessError as exc:
        raise ConfigError(f"{context}: {exc}") from None


def check_where_keys(where: dict, methods: list[str], context: str) -> None:
    """Every ``group.key`` of a filter must be a setting some run could have."""
    import difflib

    from harness.config import config_keys

    if not where:
        return
    known = config_keys(methods)
    for key in where:
        if key in RECORD_FIELDS or key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known | set(RECORD_FIELDS)), n=1)
        raise ConfigError(f"{context}: where key '{key}' is no setting of {', '.join(sorted(set(methods)))}"
                          + (f"; did you mean '{close[0]}'?" if close else "")
                          + f" (valid: record fields {', '.join(RECORD_FIELDS)} or group.key config keys; "
                          "see a run's config.yaml)")


def check_test(test: Any, alpha: Any, context: str) -> tuple[str, float]:
    """A valid (paired test name, significance level) or a ConfigError."""
    if test not in TESTS:
        raise ConfigError(f"{context}: test must be one of {', '.join(TESTS)}, got {test!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ConfigError(f"{context}: alpha must be a number between 0 and 1, got {alpha!r}")
    return test, float(alpha)


@dataclass
class Cell:
    """A measured cell: the row's group in the column and its standing; group None: no ok run."""

    group: RunGroup | None
    standing: Standing | None = None


@dataclass
class PaperTable:
    """A table spec filled from the store."""

    spec: TableSpec
    cells: list[list[Cell]]  # [row][column]
    excluded: list[tuple[Row, Column, dict]]  # failed or unfinished runs matching a cell
    superseded: list[dict]

    @property
    def records(self) -> list[dict]:
        return [r for row in self.cells for cell in row if cell.group for r in cell.group.runs]


def merge_where(row: Row, column: Column, spec_path: Path) -> dict:
    """The filters of a row and a column together; contradicting ones are an error."""
    for key in set(row.where) & set(column.where):
        if row.where[key] != column.where[key]:
            raise ConfigError(f"{spec_path}: row '{row.label}' and column '{column.label}' filter {key} to different "
                              f"values ({row.where[key]!r} vs {column.where[key]!r}); no run can match both")
    return {**column.where, **row.where}


def build_table(spec: TableSpec, store: Store) -> PaperTable:
    """Fill every cell: the one matching group per row and column, ranked within the column."""
    cells = [[Cell(None) for _ in spec.columns] for _ in spec.rows]
    excluded, superseded = [], []
    for j, column in enumerate(spec.columns):
        for i, row in enumerate(spec.rows):
            selection = store.select(column.benchmark, [row.method], column.head, merge_where(row, column, spec.path))
            if len(selection.groups) > 1:
                keys = differing_settings([g.settings for g in selection.groups])
                options = "; ".join(f"{describe(g.settings, keys)} (config {g.config_hash[:8]})" for g in selection.groups)
                example = f", e.g. where: {{{keys[0]}: {selection.groups[0].settings.get(keys[0])!r}}}" if keys else ""
                raise HarnessError(
                    f"{spec.path}: row '{row.label}' matches {len(selection.groups)} configurations of {row.method} "
                    f"in column '{column.label}' ({column.benchmark}): {options}. Add a where filter to the row"
                    f"{example}")
            if selection.groups:
                cells[i][j] = Cell(selection.groups[0])
            excluded += [(row, column, r) for r in selection.excluded]
            superseded += selection.superseded
        present = [(i, cells[i][j].group) for i in range(len(spec.rows)) if cells[i][j].group]
        for i, group in present:
            group.label = spec.rows[i].label
        check_same_episodes([g for _, g in present], f"{spec.path}: column '{column.label}' ({column.benchmark})")
        for (i, _), standing in zip(present, rank_groups([g for _, g in present], spec.test, spec.alpha)):
            cells[i][j].standing = standing
    if not any(cell.group for row in cells for cell in row):
        raise HarnessError(f"{spec.path}: no finished run for any cell under {store.describe()}; make them "
                           "(harness reproduce / harness run) or point --runs-dir at the runs directory that has them")
    return PaperTable(spec, cells, excluded, sorted(superseded, key=newest_key))


def training_notes(table: PaperTable) -> list[str]:
    """How the learned cells were trained: steps and time per run, seeds short of the spec's,
    and runs stopped by a wall-clock budget (not exactly reproducible)."""
    spec, trained, short, budget = table.spec, [], [], []
    for row, cells in zip(spec.rows, table.cells):
        for column, cell in zip(spec.columns, cells):
            runs = cell.group.runs if cell.group else []
            if not runs or not any(r.get("steps") for r in runs):
                continue
            where = row.label if len(spec.columns) == 1 else f"{row.label} ({column.label})"
            steps = sorted({int(r.get("steps") or 0) for r in runs})
            seconds = statistics.fmean(float(r.get("train_seconds") or 0) for r in runs)
            trained.append(f"{where} {'/'.join(map(str, steps))} steps, {seconds:.0f} s")
            if len(runs) < len(spec.seeds):
                short.append(f"{where}: seeds {', '.join(map(str, cell.group.seeds))}")
            if any(r.get("budget_exhausted") for r in runs):
                budget.append(where)
    notes = []
    if trained:
        notes.append("Training per run (steps; mean training seconds over seeds): " + "; ".join(trained) + ".")
    if short:
        notes.append(f"Fewer seeds than the spec's {len(spec.seeds)}: " + "; ".join(short) + ".")
    if budget:
        notes.append("Stopped by a wall-clock budget (train.budget_minutes), so not exactly reproducible: "
                     + ", ".join(budget) + ".")
    return notes


def table_notes(table: PaperTable, fmt: str) -> list[str]:
    """The notes printed under a table (LaTeX lists run ids in comments instead)."""
    spec = table.spec
    notes = [f"Cells: {spec.metric} (%) on the test episodes. " + interval_note(),
             "Bold: best measured result in its column; underlined: not significantly worse than the best. "
             + ranking_note(spec.test, spec.alpha)]
    if any(cell.group is None for row in table.cells for cell in row):
        notes.append(f"{MISSING}: no finished run.")
    several = [f"{row.label} ({column.label}): {len(cell.group.runs)}"
               for row, cells in zip(spec.rows, table.cells) for column, cell in zip(spec.columns, cells)
               if cell.group and len(cell.group.runs) > 1]
    if several:
        notes.append("Seeds per cell, where more than one: " + ", ".join(several) + ".")
    notes += training_notes(table)
    if spec.references:
        notes.append("Published results are quoted from the cited papers, not measured here, and are not ranked.")
    notes += spec.notes
    if table.excluded:
        if fmt == "latex":
            notes.append(f"{len(table.excluded)} failed or unfinished run(s) excluded (listed in the comments above).")
        else:
            notes.append("Excluded (not ok): " + "; ".join(
                f"{row.label} ({column.label}): {run_id(r)} ({r.get('status')}: {short_reason(r)})"
                for row, column, r in table.excluded) + ".")
    if table.superseded and fmt != "latex":
        notes.append(duplicates_note(table.superseded))
    return notes


def table_cell_text(cell: Cell, spec: TableSpec) -> str:
    if cell.group is None:
        return MISSING
    return plus_minus(percent(cell.group.accuracy, spec.metric), 100 * cell.group.ci95, spec.decimals)


def quoted(value: float | None, decimals: int) -> str:
    """A published number with the table's decimals, or more where the spec gives more (8.0, 4.35)."""
    if value is None:
        return MISSING
    given = repr(float(value)).partition(".")[2]
    return f"{value:.{max(decimals, len(given))}f}"


QUOTED_HEADING = "Published results (quoted, not measured)"


def render_table(table: PaperTable, fmt: str, made_by: str) -> str:
    """A paper table as Markdown, LaTeX (booktabs) or CSV (one line per cell)."""
    if fmt == "csv":
        return table_csv(table)
    return table_markdown(table, made_by) if fmt == "md" else table_latex(table, made_by)


def measured_rows(table: PaperTable, fmt: str) -> list[list[str]]:
    """The measured rows' cells as Markdown or LaTeX (escaped, best bold, ties underlined)."""
    escape, mark = (latex_escape, mark_latex) if fmt == "latex" else (str, mark_markdown)
    return [[escape(row.label), *(mark(escape(table_cell_text(cell, table.spec)),
                                       cell.standing.mark if cell.standing else "") for cell in cells)]
            for row, cells in zip(table.spec.rows, table.cells)]


def table_markdown(table: PaperTable, made_by: str) -> str:
    spec = table.spec
    labels, align = [c.label for c in spec.columns], ["right"] * len(spec.columns)
    out = [f"<!-- Made by {made_by}; regenerate, do not edit. -->", "", f"## {spec.title}", "",
           markdown_table(["Method", *labels], measured_rows(table, "md"), ["left", *align]), ""]
    if spec.references:
        ref_rows = [[ref.label, ref.citation, *(quoted(ref.values.get(c.label), spec.decimals) for c in spec.columns)]
                    for ref in spec.references]
        out += [f"**{QUOTED_HEADING}**", "",
                markdown_table(["Reference", "Source", *labels], ref_rows, ["left", "left", *align]), ""]
    out += ["Notes:", ""] + [f"- {note}" for note in table_notes(table, "md")]
    out += ["", "Source runs (run id, harness commit): "
            + (", ".join(f"`{rid}` ({commit})" for rid, commit in source_lines(table.records)) or "none") + ".", ""]
    return "\n".join(out)


def table_latex(table: PaperTable, made_by: str) -> str:
    spec = table.spec
    out = [f"% Made by {made_by}; regenerate, do not edit. Needs \\usepackage{{booktabs}}.",
           "% Source runs (run id, harness commit):"]
    out += [f"%   {rid} {commit}" for rid, commit in source_lines(table.records)] or ["%   none"]
    if table.excluded:
        out += ["% Excluded failed or unfinished runs (row, column, run id, reason):"]
        out += [f"%   {row.label} | {column.label} | {run_id(r)} | {short_reason(r)}" for row, column, r in table.excluded]
    if table.superseded:
        out += ["% " + duplicates_note(table.superseded)]
    blocks = []
    if spec.references:
        blocks.append((latex_escape(QUOTED_HEADING), [
            [latex_escape(ref.label) + (rf"~\cite{{{ref.bibkey}}}" if ref.bibkey else f" ({latex_escape(ref.citation)})"),
             *(latex_escape(quoted(ref.values.get(c.label), spec.decimals)) for c in spec.columns)]
            for ref in spec.references]))
    out += [r"\begin{table}[t]", r"\centering", rf"\caption{{{spec.caption or latex_escape(spec.title)}}}",
            rf"\label{{tab:{spec.path.stem}}}"]
    out += latex_tabular(["Method", *(latex_escape(c.label) for c in spec.columns)], measured_rows(table, "latex"),
                         "l" + "c" * len(spec.columns), blocks)
    out += [r"\par\smallskip\footnotesize", " ".join(latex_escape(n) for n in table_notes(table, "latex")),
            r"\end{table}", ""]
    return "\n".join(out)


def table_csv(table: PaperTable) -> str:
    """One line per measured, missing, quoted or excluded cell; numbers in percent of the metric."""
    import pandas as pd

    spec = table.spec
    lines = []
    for row, cells in zip(spec.rows, table.cells):
        for column, cell in zip(spec.columns, cells):
            group, standing = cell.group, cell.standing
            line = {"row": row.label, "column": column.label, "benchmark": column.benchmark,
                    "kind": "measured" if group else "missing", "method": row.method, "metric": spec.metric,
                    "value_pct": None, "ci95_pct": None, "mark": "", "rank": None, "p_vs_best_holm": None,
                    "seeds": "", "episodes": None, "citation": "", "runs": "", "commits": "", "note": ""}
            if group:
                line.update(value_pct=round(percent(group.accuracy, spec.metric), 4), ci95_pct=round(100 * group.ci95, 4),
                            mark=standing.mark, rank=standing.rank,
                            p_vs_best_holm=None if standing.p_vs_best is None else round(standing.p_vs_best, 6),
                            seeds=" ".join(map(str, group.seeds)), episodes=group.episodes,
                            runs=" ".join(run_id(r) for r in group.runs), commits=" ".join(commit_of(r) for r in group.runs))
            lines.append(line)
    for row, column, record in table.excluded:
        lines.append({"row": row.label, "column": column.label, "benchmark": column.benchmark, "kind": "excluded",
                      "method": row.method, "metric": spec.metric, "runs": run_id(record), "commits": commit_of(record),
                      "note": f"{record.get('status')}: {short_reason(record)}"})
    for ref in spec.references:
        for column in spec.columns:
            if column.label in ref.values:
                lines.append({"row": ref.label, "column": column.label, "benchmark": column.benchmark, "kind": "quoted",
                              "metric": spec.metric, "value_pct": ref.values[column.label], "citation": ref.citation,
                              "note": "quoted, not measured"})
    columns = ["row", "column", "benchmark", "kind", "method", "metric", "value_pct", "ci95_pct", "mark", "rank",
               "p_vs_best_holm", "seeds", "episodes", "citation", "runs", "commits", "note"]
    frame = pd.DataFrame(lines, columns=columns)
    frame["rank"] = frame["rank"].astype("Int64")
    frame["episodes"] = frame["episodes"].astype("Int64")
    return csv_text(frame)


def made_by_spec(spec_path: Path, out_path: Path) -> str:
    """How a spec-made file names its spec: relative to the file, so no absolute path is written."""
    relative = Path(os.path.relpath(spec_path.resolve(), out_path.resolve().parent)).as_posix()
    return f"`harness table` from the spec {relative} (path relative to this file)"


def make_spec_outputs(spec: TableSpec, store: Store) -> tuple[list[Path], list[dict]]:
    """Write the spec's table, leaderboards and plots; returns the files written and the records
    they use (call inside ``files.batch()`` so that a failure writes nothing)."""
    table = build_table(spec, store)
    used = list(table.records)
    written = [write_output(path, render_table(table, fmt, made_by_spec(spec.path, path)))
               for fmt, path in spec.outputs.items()]
    for request in spec.leaderboards:
        boards = build_boards(store, request.benchmarks, request.head, request.test, request.alpha)
        used += [r for board in boards for r in board.records]
        written += [write_output(path, render_leaderboard(boards, fmt, made_by_spec(spec.path, path), request.test,
                                                          request.alpha))
                    for fmt, path in request.outputs.items()]
    for request in spec.plots:
        paths, records = make_plot(store, request, made_by_spec(spec.path, request.prefix))
        written += paths
        used += records
    return written, used


def write_evidence(spec: TableSpec, records: list[dict]) -> Path:
    """Replace the spec's evidence folder by the evidence of exactly ``records``."""
    from harness.store import copy_evidence

    with files.stage_dir(spec.evidence) as staged:
        for record in {r["run_dir"]: r for r in records}.values():
            copy_evidence(record, staged)
    return spec.evidence


# ------------------------------------------------------------------------------------ plots

PLOT_KINDS = ("curves", "shots", "scarcity")
CURVE_X = ("step", "seconds")


def plot_request(kind: str, benchmarks: list[str] | None, methods: list[str] | None, head: str | None, y: str,
                 x: str, prefix: Path, context: str, where: dict | None = None) -> PlotRequest:
    """A checked plot request (from the command line or a spec's ``plots``); ``where`` filters the runs."""
    if kind not in PLOT_KINDS:
        raise ConfigError(f"{context}: plot kind must be one of {', '.join(PLOT_KINDS)}, got {kind!r}")
    if not benchmarks:
        raise ConfigError(f"{context}: a {kind} plot needs benchmarks")
    if kind in ("curves", "scarcity") and len(benchmarks) != 1:
        raise ConfigError(f"{context}: a {kind} plot is about one benchmark, got {', '.join(benchmarks)}")
    if kind == "curves" and not methods:
        raise ConfigError(f"{context}: a curves plot needs the method(s) whose training curves to draw")
    if x not in CURVE_X:
        raise ConfigError(f"{context}: x must be one of {', '.join(CURVE_X)}, got {x!r}")
    return PlotRequest(kind, benchmarks, methods, head, y, x, Path(prefix), check_where(where, context))


@dataclass
class Series:
    """One line of an accuracy plot: a method configuration's points (x, group), by x."""

    method: str
    settings: dict
    config_hash: str
    points: list[tuple[float, str, RunGroup]] = field(default_factory=list)  # (x, benchmark, group)
    label: str = ""


def accuracy_series(store: Store, request: PlotRequest) -> tuple[list[Series], str]:
    """The lines of a shots or scarcity plot and the x axis' setting name.

    shots: x = ``bench.shots``; a line is one configuration apart from the benchmark (``bench.*``,
    ``benchmark``, ``kind``). scarcity: training runs only (eval records do not keep the source's
    fraction); x = ``data.train_fraction``; a line is one configuration apart from that fraction.
    """
    if request.kind == "shots":
        x_key, where = "bench.shots", dict(request.where)
    else:
        x_key, where = "data.train_fraction", {**request.where, "kind": "train"}
    series: dict[tuple, Series] = {}
    for benchmark in request.benchmarks:
        selection = store.select(benchmark, request.methods, request.head, where)
        check_same_episodes(selection.groups, f"plot {request.kind} {benchmark}")
        for group in selection.groups:
            x = group.settings.get(x_key)
            if not isinstance(x, (int, float)):
                raise HarnessError(f"run {group.runs[0]['run_id']} has no {x_key} in its config.yaml; cannot place it "
                                   f"on a {request.kind} plot")
            line_settings = {k: v for k, v in group.settings.items() if k != x_key and not (
                request.kind == "shots" and (k.startswith("bench.") or k in ("benchmark", "kind")))}
            if request.kind == "shots" and line_settings.get("trained_on") == benchmark:
                line_settings["trained_on"] = "(the benchmark)"
            key = (group.method, repr(sorted(line_settings.items(), key=lambda kv: kv[0])))
            line = series.setdefault(key, Series(group.method, line_settings, group.config_hash))
            clash = [b for px, b, _ in line.points if px == x]
            if clash:
                raise HarnessError(f"{group.method}: two results at {x_key}={x} for one line ({clash[0]} and {benchmark}); "
                                   f"plot benchmarks that differ in {x_key}")
            line.points.append((x, benchmark, group))
    if not series:
        raise HarnessError(f"no finished runs for a {request.kind} plot on {', '.join(request.benchmarks)}"
                           + (f" of {', '.join(request.methods)}" if request.methods else "")
                           + f" under {store.describe()}")
    lines = [series[key] for key in sorted(series)]
    labels = make_labels([s.method for s in lines], [s.settings for s in lines], [s.config_hash for s in lines])
    for line, label in zip(lines, labels):
        line.label = label
        line.points.sort(key=lambda p: p[0])
    return lines, x_key


def save_figure(fig, prefix: Path, title: str, provenance: str) -> list[Path]:
    """PNG and PDF beside ``prefix``, without timestamps so that equal plots are equal bytes."""
    written = []
    for suffix, metadata in ((".png", {"Software": None, "Title": title, "Description": provenance}),
                             (".pdf", {"CreationDate": None, "Title": title, "Subject": provenance})):
        path = prefix.with_name(prefix.name + suffix)
        with files.atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=150, metadata=metadata)
        written.append(path)
    return written


def new_figure():
    """(pyplot, figure, axes) on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(6, 4), layout="constrained")


def make_plot(store: Store, request: PlotRequest, made_by: str) -> tuple[list[Path], list[dict]]:
    """Draw ``request``: PNG, PDF and the plotted points as CSV (``<prefix>.png|.pdf|.csv``);
    returns the files written and the records drawn."""
    if request.kind == "curves":
        runs = []
        for benchmark in request.benchmarks:
            for group in store.select(benchmark, request.methods, request.head, request.where).groups:
                runs += [(f"{group.label} seed {r['seed']}", r) for r in group.runs]
        if not runs:
            raise HarnessError(f"no finished runs of {', '.join(request.methods)} on {request.benchmarks[0]} under "
                               f"{store.describe()}")
        return plot_curves(runs, request.x, request.y, request.prefix, made_by), [r for _, r in runs]
    import pandas as pd

    lines, x_key = accuracy_series(store, request)
    x_name = x_key.split(".")[1]
    rows = [{"series": line.label, "method": line.method, "benchmark": benchmark, x_name: x,
             "accuracy_pct": round(100 * group.accuracy, 4), "ci95_pct": round(100 * group.ci95, 4),
             "seeds": " ".join(map(str, group.seeds)), "episodes": group.episodes,
             "runs": " ".join(run_id(r) for r in group.runs), "commits": " ".join(commit_of(r) for r in group.runs)}
            for line in lines for x, benchmark, group in line.points]
    title = (f"Accuracy vs shots: {', '.join(request.benchmarks)}" if request.kind == "shots"
             else f"Data scarcity: {request.benchmarks[0]}")
    plt, fig, ax = new_figure()
    for line in lines:
        ax.errorbar([p[0] for p in line.points], [100 * p[2].accuracy for p in line.points],
                    yerr=[100 * p[2].ci95 for p in line.points], marker="o", capsize=3, label=line.label)
    xs = sorted({p[0] for line in lines for p in line.points})
    if request.kind == "scarcity" and xs[0] > 0 and xs[-1] / xs[0] >= 10:
        ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.set_xlabel("shots per class (bench.shots)" if request.kind == "shots"
                  else "training data fraction (data.train_fraction)")
    ax.set_ylabel("test accuracy (%) ± 95% CI")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    records = [r for line in lines for _, _, g in line.points for r in g.runs]
    try:
        written = save_figure(fig, request.prefix, title, provenance_text(made_by, records))
    finally:
        plt.close(fig)
    csv_path = request.prefix.with_name(request.prefix.name + ".csv")
    return written + [write_output(csv_path, csv_text(pd.DataFrame(rows)))], records


def plot_curves(runs: list[tuple[str, dict]], x: str, y: str, prefix: Path, made_by: str) -> list[Path]:
    """Training curves (``train_log.csv``: ``y`` against ``x``) of ``runs`` as (label, record) pairs."""
    import pandas as pd

    from harness.store import TRAIN_LOG

    frames = []
    for label, record in runs:
        path = Path(record["run_dir"]) / TRAIN_LOG
        if not path.is_file():
            raise HarnessError(f"run {run_id(record)} has no {TRAIN_LOG} ({record.get('method')} does not train, or the "
                               "run stopped before its first log row); curves exist only for trained runs")
        log = pd.read_csv(path)
        if y not in log.columns or x not in log.columns:
            raise HarnessError(f"{path}: no column '{y if y not in log.columns else x}'; columns there: "
                               f"{', '.join(log.columns)}. Pick one with --y")
        log = log[[x, y]].dropna()
        frames.append(pd.DataFrame({"series": label, "run": run_id(record), x: log[x], y: log[y]}))
    points = pd.concat(frames, ignore_index=True)
    title = f"Training curves: {y}"
    plt, fig, ax = new_figure()
    for label, _ in runs:
        line = points[points["series"] == label]
        ax.plot(line[x], line[y], label=label)
    ax.set_xlabel("training step" if x == "step" else "training seconds")
    ax.set_ylabel(y)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    try:
        written = save_figure(fig, prefix, title, provenance_text(made_by, [r for _, r in runs]))
    finally:
        plt.close(fig)
    return written + [write_output(prefix.with_name(prefix.name + ".csv"), csv_text(points))]


# ------------------------------------------------------------------------------------ commands


def runs_dir_of(args) -> Path:
    """--runs-dir, else $HARNESS_RUNS or ./runs."""
    from harness.store import default_runs_dir

    return Path(args.runs_dir) if args.runs_dir else default_runs_dir()


def split_names(values: list[str] | None) -> list[str] | None:
    """Repeated and/or comma-separated command line names → one list (None when none given)."""
    if not values:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def cmd_leaderboard(args) -> int:
    fmt = args.format or next((f for f, s in SUFFIXES.items() if args.out and args.out.endswith(s)), "md")
    benchmarks = split_names(args.bench)
    command = ["harness leaderboard", *(f"--bench {b}" for b in benchmarks or []),
               *([f"--head {args.head}"] if args.head else []),
               *([f"--test {args.test}"] if args.test != "wilcoxon" else []),
               *([f"--alpha {args.alpha:g}"] if args.alpha != ALPHA else []), f"--format {fmt}"]
    check_test(args.test, args.alpha, "harness leaderboard")
    boards = build_boards(Store(RunStore(runs_dir_of(args))), benchmarks, args.head, args.test, args.alpha)
    text = render_leaderboard(boards, fmt, f"`{' '.join(command)}`", args.test, args.alpha)
    if args.out:
        write_output(Path(args.out), text)
        print(f"wrote {args.out}")
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    return 0


def table_store(spec: TableSpec, args) -> Store:
    """The spec's committed evidence; --runs-dir reads another store instead; --collect-from reads
    a runs directory together with the evidence (newest run of a configuration and seed wins)."""
    if args.runs_dir and args.collect_from:
        raise ConfigError("--runs-dir and --collect-from exclude each other: --runs-dir reads only that store, "
                          "--collect-from adds a runs directory to the committed evidence")
    if args.runs_dir:
        return Store(RunStore(Path(args.runs_dir)))
    if args.collect_from:
        if not Path(args.collect_from).is_dir():
            raise HarnessError(f"--collect-from {args.collect_from}: no such runs directory")
        return Store(RunStore(Path(args.collect_from), spec.evidence))
    return Store(RunStore(spec.evidence))


def cmd_table(args) -> int:
    specs = [load_spec(Path(spec_path)) for spec_path in args.spec]
    if args.format:
        for spec in specs:
            text = render_table(build_table(spec, table_store(spec, args)), args.format,
                                f"`harness table` from the spec {spec.path}")
            print(text, end="" if text.endswith("\n") else "\n")
        return 0
    written = []
    with files.batch():  # every spec's outputs, or none
        for spec in specs:
            paths, used = make_spec_outputs(spec, table_store(spec, args))
            written += paths
            if args.collect_from:
                written.append(write_evidence(spec, used))
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_plot(args) -> int:
    kind = args.plot_kind
    if kind == "curves" and args.runs:
        if args.where:
            raise ConfigError("--where selects runs from the store (with --bench/--method); "
                              "with --runs the given run directories are drawn as they are: drop one of them")
        return plot_given_runs(args)
    if kind == "curves":
        if not args.bench or not args.method:
            raise HarnessError("harness plot curves needs --runs RUN_DIR ... or --bench B --method M")
        benchmarks, methods = [args.bench], split_names(args.method)
        default_prefix = "-".join(["curves", args.bench, *methods])
    else:
        benchmarks = split_names(args.benches) if kind == "shots" else [args.bench]
        methods = split_names(args.methods)
        default_prefix = "-".join([kind, *benchmarks])
    request = plot_request(kind, benchmarks, methods, args.head, args.y, args.x, Path(args.out or default_prefix),
                           f"harness plot {kind}", parse_where(args.where))
    with files.batch():  # PNG, PDF and CSV together, or none
        paths, _ = make_plot(Store(RunStore(runs_dir_of(args))), request, f"`harness plot {kind}`")
    for path in paths:
        print(f"wrote {path}")
    return 0


def parse_where(items: list[str] | None) -> dict:
    """``--where KEY=VALUE`` options as a filter; values typed as ``--set`` types them (3, 0.5, true, text)."""
    where = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--where takes KEY=VALUE (e.g. --where train.budget_minutes=3), got {item!r}")
        where[key.strip()] = parse_value(value)
    return where


def plot_given_runs(args) -> int:
    """``harness plot curves --runs RUN_DIR ...``: curves of exactly these runs."""
    from harness.store import read_record

    records = []
    for run_dir in args.runs:
        record = read_record(Path(run_dir))
        if record is None:
            raise HarnessError(f"{run_dir} holds no run record (result.json); pass run directories made by `harness run`")
        records.append(record)
    labels = make_labels([str(r.get("method")) for r in records], [read_settings(r) for r in records],
                         [str(r.get("config_hash")) for r in records])
    runs = [(f"{label} seed {r.get('seed')}", r) for label, r in zip(labels, records)]
    with files.batch():
        paths = plot_curves(runs, args.x, args.y, Path(args.out or "curves"), "`harness plot curves`")
    for path in paths:
        print(f"wrote {path}")
    return 0


def add_commands(sub) -> None:
    """Add ``leaderboard``, ``table`` and ``plot`` to the ``harness`` command line."""

    p = sub.add_parser("leaderboard", help="one ranked table per benchmark from the stored runs (paired tests, ties)")
    p.add_argument("--bench", action="append", metavar="B",
                   help="benchmark (repeatable or comma-separated; default: all with runs)")
    p.add_argument("--head", help="only runs scored with this head")
    p.add_argument("--format", choices=FORMATS, help="md | latex | csv (default: from --out's suffix, else md)")
    p.add_argument("--out", metavar="FILE", help="write here (atomically) instead of printing")
    p.add_argument("--test", choices=TESTS, default="wilcoxon", help="paired test for ties (default wilcoxon)")
    p.add_argument("--alpha", type=float, default=ALPHA, help=f"significance level of the tie test (default {ALPHA})")
    p.add_argument("--runs-dir", help="result store (default ./runs or $HARNESS_RUNS)")
    p.set_defaults(handler=cmd_leaderboard)

    p = sub.add_parser("table", help="paper table(s) from spec files: writes the outputs each spec names")
    p.add_argument("spec", nargs="+", metavar="SPEC.yaml", help="table spec(s), e.g. results/tables/*.yaml")
    p.add_argument("--format", choices=FORMATS, help="print the table in this format instead of writing the spec's outputs")
    p.add_argument("--runs-dir", help="read this result store instead of the spec's committed evidence")
    p.add_argument("--collect-from", metavar="DIR",
                   help="read the runs in DIR together with the committed evidence and replace the spec's evidence "
                        "folder by the evidence of exactly the runs the outputs use (never checkpoints)")
    p.set_defaults(handler=cmd_table)

    p = sub.add_parser("plot", help="training curves, accuracy vs shots, data-scarcity curves (PNG, PDF, CSV)")
    kinds = p.add_subparsers(dest="plot_kind", metavar="KIND", required=True)
    k = kinds.add_parser("curves", help="training curves from train_log.csv")
    k.add_argument("--runs", nargs="+", metavar="RUN_DIR", help="these run directories")
    k.add_argument("--bench", help="with --method: the newest ok run per seed of each configuration")
    k.add_argument("--method", action="append", help="method(s) (repeatable or comma-separated)")
    k.add_argument("--y", default="loss", help="train_log.csv column to plot (default loss)")
    k.add_argument("--x", default="step", choices=CURVE_X, help="x axis (default step)")
    k.add_argument("--head", help="only runs scored with this head")
    k = kinds.add_parser("shots", help="accuracy vs shots across benchmarks of one family")
    k.add_argument("--benches", "--bench", dest="benches", action="append", required=True, metavar="B",
                   help="benchmarks differing in shots (repeatable or comma-separated)")
    k.add_argument("--methods", action="append", help="methods (default: all with runs)")
    k.add_argument("--head", help="only runs scored with this head")
    k = kinds.add_parser("scarcity", help="accuracy vs data.train_fraction on one benchmark")
    k.add_argument("--bench", required=True, help="benchmark")
    k.add_argument("--methods", action="append", help="methods (default: all with runs)")
    k.add_argument("--head", help="only runs scored with this head")
    for name, k in kinds.choices.items():
        if name != "curves":
            k.set_defaults(y="loss", x="step")
        k.add_argument("--where", action="append", metavar="KEY=VALUE",
                       help="only runs with this setting, e.g. train.budget_minutes=3 (repeatable)")
        k.add_argument("--out", metavar="PREFIX", help="writes PREFIX.png, PREFIX.pdf, PREFIX.csv (default: KIND-BENCH)")
        k.add_argument("--runs-dir", help="result store (default ./runs or $HARNESS_RUNS)")
        k.set_defaults(handler=cmd_plot)
