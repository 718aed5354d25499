"""Statistics of the reports: confidence intervals, paired tests, Holm's correction and ranks.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError, HarnessError

if TYPE_CHECKING:
    from harness.report.selection import RunGroup

TESTS = ("wilcoxon", "mcnemar")
TEST_DESCRIPTIONS = {
    "wilcoxon": "two-sided Wilcoxon signed-rank test on per-episode accuracies (Pratt's treatment of zero "
    "differences; with several seeds, per-episode accuracies averaged over seeds)",
    "mcnemar": "two-sided exact McNemar test on per-query outcomes",
}
TEST_NAMES = {  # short forms, for a table's notes
    "wilcoxon": "two-sided Wilcoxon signed-rank test on per-episode accuracies averaged over seeds",
    "mcnemar": "two-sided exact McNemar test on per-query outcomes",
}
ALPHA = 0.05


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
        return (
            f"{name}, two-sided, over {self.pairs} paired {unit} (A better on {self.a_better}, "
            f"B better on {self.b_better}): p = {self.p_value:.4g}"
        )


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


def check_test(test: Any, alpha: Any, context: str) -> tuple[str, float]:
    """A valid (paired test name, significance level) or a ConfigError."""
    if test not in TESTS:
        raise ConfigError(f"{context}: test must be one of {', '.join(TESTS)}, got {test!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ConfigError(f"{context}: alpha must be a number between 0 and 1, got {alpha!r}")
    return test, float(alpha)


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
    return [
        Standing(ranks[i], "best" if i == best else "tie" if ranks[i] == 1 else "", p_vs_best.get(i))
        for i in range(len(groups))
    ]
