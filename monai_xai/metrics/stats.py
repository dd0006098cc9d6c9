"""Comparing explanation methods on per-case scores: paired t-test, one-way ANOVA with Tukey HSD, the summary table
(mean, std, min, max, n) of published XAI comparisons, and Kendall's W (do the metrics agree on the methods' order).

This is the edge of the package: scores arrive as torch tensors (or arrays / sequences) and leave as plain Python
numbers, computed with numpy and scipy. NaN marks a case a metric skipped (see
:mod:`monai_xai.metrics.per_sample`); every function here drops NaN explicitly and reports how many it dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats as scipy_stats

__all__ = [
    "PairedTTest",
    "PairwiseComparison",
    "AnovaTukey",
    "MethodSummary",
    "PairedComparison",
    "RankedMethod",
    "Concordance",
    "paired_t_test",
    "anova_tukey",
    "summary_table",
    "summary_markdown",
    "bootstrap_ci",
    "holm",
    "paired_comparisons",
    "rank_methods",
    "kendalls_w",
]

Scores = torch.Tensor | np.ndarray | Sequence[float]


@dataclass(frozen=True)
class PairedTTest:
    """Paired t-test of method A against method B over the cases both scored.

    Attributes:
        statistic: t statistic of A - B.
        pvalue: two-sided p-value.
        mean_difference: mean of A - B over the pairs used.
        n_pairs: number of cases used.
        n_dropped: cases dropped because either score was NaN.
    """

    statistic: float
    pvalue: float
    mean_difference: float
    n_pairs: int
    n_dropped: int


@dataclass(frozen=True)
class PairwiseComparison:
    """Tukey HSD comparison of two methods: ``mean_difference`` is mean(first) - mean(second)."""

    first: str
    second: str
    mean_difference: float
    pvalue: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class AnovaTukey:
    """One-way ANOVA across methods and Tukey HSD post-hoc comparisons of every pair.

    Attributes:
        f_statistic, pvalue: ANOVA result.
        comparisons: one :class:`PairwiseComparison` per unordered pair, in the order of the input methods.
        n: cases used per method (NaN dropped).
        n_dropped: NaN cases dropped per method.
        confidence_level: of the Tukey confidence intervals.
    """

    f_statistic: float
    pvalue: float
    comparisons: list[PairwiseComparison]
    n: dict[str, int]
    n_dropped: dict[str, int]
    confidence_level: float


@dataclass(frozen=True)
class MethodSummary:
    """One row of the summary table; statistics over the non-NaN cases (NaN when there are none).

    Attributes:
        method: method name.
        mean, std, min, max: of the scores; ``std`` is the sample standard deviation (N - 1), NaN for n < 2.
        n: cases used.
        n_skipped: NaN cases left out.
    """

    method: str
    mean: float
    std: float
    min: float
    max: float
    n: int
    n_skipped: int


def _as_vector(name: str, scores: Scores) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().double().numpy()
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"scores of {name!r} must be one value per case, shape (N,), got {values.shape}.")
    if np.isinf(values).any():
        raise ValueError(f"scores of {name!r} contain infinite values; only NaN (skipped case) is allowed.")
    return values


def _finite_groups(scores: Mapping[str, Scores]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError("scores must be a non-empty mapping {method name: per-case scores}.")
    kept, dropped = {}, {}
    for name, values in scores.items():
        vector = _as_vector(name, values)
        kept[name] = vector[~np.isnan(vector)]
        dropped[name] = int(np.isnan(vector).sum())
    return kept, dropped


def paired_t_test(scores_a: Scores, scores_b: Scores) -> PairedTTest:
    """Paired (dependent) t-test between two methods' scores on the same cases (``scipy.stats.ttest_rel``).

    A case where either method's score is NaN is dropped from both, so the test stays paired.

    Args:
        scores_a: (N,) per-case scores of method A.
        scores_b: (N,) per-case scores of method B, case ``i`` matching ``scores_a[i]``.

    Returns:
        :class:`PairedTTest`.
    """
    first, second = _as_vector("scores_a", scores_a), _as_vector("scores_b", scores_b)
    if first.shape != second.shape:
        raise ValueError(
            f"paired scores must have one value per case for both methods, got {first.shape} and {second.shape}."
        )
    both = ~(np.isnan(first) | np.isnan(second))
    if both.sum() < 2:
        raise ValueError(f"a paired t-test needs at least 2 cases scored by both methods, got {int(both.sum())}.")
    result = scipy_stats.ttest_rel(first[both], second[both])
    return PairedTTest(
        statistic=float(result.statistic),
        pvalue=float(result.pvalue),
        mean_difference=float(np.mean(first[both] - second[both])),
        n_pairs=int(both.sum()),
        n_dropped=int((~both).sum()),
    )


def anova_tukey(scores: Mapping[str, Scores], confidence_level: float = 0.95) -> AnovaTukey:
    """One-way ANOVA (``scipy.stats.f_oneway``) across methods, then Tukey HSD (``scipy.stats.tukey_hsd``).

    The groups are treated as independent; NaN cases are dropped per method (groups may then differ in size).

    Args:
        scores: {method name: (N_m,) per-case scores}, at least two methods with at least two cases each.
        confidence_level: of the Tukey confidence intervals (default 0.95).

    Returns:
        :class:`AnovaTukey`.
    """
    groups, dropped = _finite_groups(scores)
    if len(groups) < 2:
        raise ValueError("ANOVA needs at least two methods.")
    short = [name for name, values in groups.items() if values.size < 2]
    if short:
        raise ValueError(f"every method needs at least 2 non-NaN scores for ANOVA; too few for {short}.")
    names, samples = list(groups), list(groups.values())
    anova = scipy_stats.f_oneway(*samples)
    tukey = scipy_stats.tukey_hsd(*samples)
    interval = tukey.confidence_interval(confidence_level=confidence_level)
    comparisons = [
        PairwiseComparison(
            first=names[i],
            second=names[j],
            mean_difference=float(tukey.statistic[i, j]),
            pvalue=float(tukey.pvalue[i, j]),
            ci_low=float(interval.low[i, j]),
            ci_high=float(interval.high[i, j]),
        )
        for i in range(len(names))
        for j in range(i + 1, len(names))
    ]
    return AnovaTukey(
        f_statistic=float(anova.statistic),
        pvalue=float(anova.pvalue),
        comparisons=comparisons,
        n={name: int(values.size) for name, values in groups.items()},
        n_dropped=dropped,
        confidence_level=confidence_level,
    )


def summary_table(scores: Mapping[str, Scores]) -> list[MethodSummary]:
    """Mean, sample std (N - 1), min, max and n of each method's non-NaN scores, one row per method in input order.

    Args:
        scores: {method name: (N_m,) per-case scores}; NaN cases are counted in ``n_skipped`` and left out.
    """
    groups, dropped = _finite_groups(scores)
    rows = []
    for name, values in groups.items():
        empty = values.size == 0
        rows.append(
            MethodSummary(
                method=name,
                mean=math.nan if empty else float(values.mean()),
                std=float(values.std(ddof=1)) if values.size > 1 else math.nan,
                min=math.nan if empty else float(values.min()),
                max=math.nan if empty else float(values.max()),
                n=int(values.size),
                n_skipped=dropped[name],
            )
        )
    return rows


def summary_markdown(rows: Sequence[MethodSummary], digits: int = 4) -> str:
    """Render :func:`summary_table` rows as a Markdown table (``digits`` decimals; NaN shown as ``-``)."""

    def number(value: float) -> str:
        return "-" if math.isnan(value) else f"{value:.{digits}f}"

    lines = ["| method | mean | std | min | max | n | skipped |", "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        cells = [
            row.method,
            *(number(v) for v in (row.mean, row.std, row.min, row.max)),
            str(row.n),
            str(row.n_skipped),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bootstrap_ci(
    scores: Scores, confidence_level: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of the non-NaN scores (``scipy.stats.bootstrap``).

    Args:
        scores: (N,) per-case scores; NaN cases are left out.
        confidence_level: e.g. 0.95.
        n_resamples: bootstrap resamples.
        seed: seed of the resampling, so a report is reproducible.

    Returns:
        ``(low, high)``; NaN with fewer than 2 scores; ``(v, v)`` when every score is ``v``.
    """
    values = _as_vector("scores", scores)
    values = values[~np.isnan(values)]
    if values.size < 2:
        return math.nan, math.nan
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    result = scipy_stats.bootstrap(
        (values,),
        np.mean,
        confidence_level=confidence_level,
        n_resamples=n_resamples,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order; NaN p-values are left out of the family and stay NaN.

    ``p_(i)`` sorted ascending becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))`` over the m finite p-values.
    """
    values = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full(values.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(values))
    order = finite[np.argsort(values[finite], kind="stable")]
    running = 0.0
    for position, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - position) * values[index]))
        adjusted[index] = running
    return [float(value) for value in adjusted]


@dataclass(frozen=True)
class PairedComparison:
    """Two methods compared on the cases both scored: paired t-test and Wilcoxon signed-rank test (p-values also
    Holm-corrected over all pairs of one :func:`paired_comparisons` call), with effect sizes.

    Attributes:
        first, second: the methods; differences are ``first - second``.
        n_pairs: cases scored by both.
        mean_difference: mean of the differences.
        t_statistic, t_pvalue, t_pvalue_holm: paired t-test (``scipy.stats.ttest_rel``).
        wilcoxon_statistic, wilcoxon_pvalue, wilcoxon_pvalue_holm: Wilcoxon signed-rank test (``scipy.stats.wilcoxon``,
            zero differences dropped); NaN when every difference is zero.
        cohens_dz: mean difference / sample std of the differences (NaN when that std is 0).
        rank_biserial: (W+ - W-) / (W+ + W-) over the non-zero differences, in [-1, 1] (NaN when there are none).
    """

    first: str
    second: str
    n_pairs: int
    mean_difference: float
    t_statistic: float
    t_pvalue: float
    t_pvalue_holm: float
    wilcoxon_statistic: float
    wilcoxon_pvalue: float
    wilcoxon_pvalue_holm: float
    cohens_dz: float
    rank_biserial: float


def _paired(first: np.ndarray, second: np.ndarray) -> dict[str, float]:
    both = ~(np.isnan(first) | np.isnan(second))
    differences = first[both] - second[both]
    result = dict(n_pairs=int(both.sum()), mean_difference=math.nan, t_statistic=math.nan, t_pvalue=math.nan,
                  wilcoxon_statistic=math.nan, wilcoxon_pvalue=math.nan, cohens_dz=math.nan,
                  rank_biserial=math.nan)  # fmt: skip
    if differences.size == 0:
        return result
    result["mean_difference"] = float(differences.mean())
    spread = float(differences.std(ddof=1)) if differences.size > 1 else 0.0
    if differences.size >= 2 and spread > 0:
        t_test = scipy_stats.ttest_rel(first[both], second[both])
        result.update(t_statistic=float(t_test.statistic), t_pvalue=float(t_test.pvalue))
        result["cohens_dz"] = result["mean_difference"] / spread
    nonzero = differences[differences != 0]
    if nonzero.size:
        ranks = scipy_stats.rankdata(np.abs(nonzero))
        positive, negative = ranks[nonzero > 0].sum(), ranks[nonzero < 0].sum()
        result["rank_biserial"] = float((positive - negative) / (positive + negative))
        wilcoxon = scipy_stats.wilcoxon(first[both], second[both])
        result.update(wilcoxon_statistic=float(wilcoxon.statistic), wilcoxon_pvalue=float(wilcoxon.pvalue))
    return result


def paired_comparisons(scores: Mapping[str, Scores]) -> list[PairedComparison]:
    """Every pair of methods compared on the same cases (case ``i`` of every method is the same case).

    Args:
        scores: {method name: (N,) per-case scores}, the same N for every method; NaN drops a case from the pairs
            that involve it.

    Returns:
        one :class:`PairedComparison` per pair, in input order; Holm's correction runs over all pairs, separately for
        the t-tests and the Wilcoxon tests.
    """
    vectors = {name: _as_vector(name, values) for name, values in scores.items()}
    if len({vector.shape for vector in vectors.values()}) > 1:
        raise ValueError("paired comparisons need one score per case for every method (the same cases).")
    names = list(vectors)
    raw = [
        (first, second, _paired(vectors[first], vectors[second]))
        for position, first in enumerate(names)
        for second in names[position + 1 :]
    ]
    t_holm = holm([result["t_pvalue"] for _, _, result in raw])
    w_holm = holm([result["wilcoxon_pvalue"] for _, _, result in raw])
    return [
        PairedComparison(
            first=first, second=second, t_pvalue_holm=t_adjusted, wilcoxon_pvalue_holm=w_adjusted, **result
        )
        for (first, second, result), t_adjusted, w_adjusted in zip(raw, t_holm, w_holm)
    ]


@dataclass(frozen=True)
class RankedMethod:
    """A method's place in a ranking: ``rank`` 1 is the best mean; methods sharing a ``group`` are not significantly
    different from that group's leader (the best method of the group)."""

    method: str
    mean: float
    rank: int
    group: int


def rank_methods(
    scores: Mapping[str, Scores],
    comparisons: Sequence[PairedComparison],
    higher_is_better: bool = True,
    alpha: float = 0.05,
) -> list[RankedMethod]:
    """Methods ranked by mean score, grouped with the methods they are not significantly different from.

    Going down the ranking, a method joins the current group when its Holm-corrected paired t-test against the
    group's leader has ``p >= alpha`` (or cannot be computed); otherwise it leads a new group.

    Args:
        scores: {method: (N,) per-case scores}.
        comparisons: :func:`paired_comparisons` of the same scores.
        higher_is_better: False for metrics where lower is better (deletion AUC, time).
        alpha: significance level.
    """
    means = {}
    for name, values in scores.items():
        finite = _as_vector(name, values)
        finite = finite[~np.isnan(finite)]
        means[name] = float(finite.mean()) if finite.size else math.nan
    pvalues = {frozenset((c.first, c.second)): c.t_pvalue_holm for c in comparisons}
    ordered = sorted(
        means, key=lambda name: (math.isnan(means[name]), -means[name] if higher_is_better else means[name])
    )
    ranked, group, leader = [], 0, None
    for rank, name in enumerate(ordered, start=1):
        pvalue = pvalues.get(frozenset((leader, name)), math.nan) if leader is not None else math.nan
        if leader is None or (not math.isnan(pvalue) and pvalue < alpha):
            group, leader = group + 1, name
        ranked.append(RankedMethod(method=name, mean=means[name], rank=rank, group=group))
    return ranked


@dataclass(frozen=True)
class Concordance:
    """Kendall's coefficient of concordance of several rankings of the same items, with its permutation p-value.

    Attributes:
        w: Kendall's W in [0, 1]: 1 when every ranking is the same, 0 when the rank sums are all equal (no agreement);
            NaN with fewer than 2 rankings or 2 items.
        pvalue: the share of ``n_permutations`` random rankings (each ranking's ranks shuffled independently, ties
            kept) whose W reaches the observed one, ``(1 + count) / (1 + n_permutations)``: the chance of agreement at
            least this strong among rankings that agree only by luck.
        n_rankings: the rankings used (those without NaN).
        n_items: the items ranked.
        n_dropped: rankings left out for a NaN score.
    """

    w: float
    pvalue: float
    n_rankings: int
    n_items: int
    n_dropped: int


def _concordance(ranks: np.ndarray, ties: float) -> np.ndarray:
    """Kendall's W of ``ranks`` (..., m, n): ``12 S / (m^2 (n^3 - n) - m T)`` with ``S`` the sum of squared deviations
    of the items' rank sums from their mean and ``T`` the tie correction ``sum (t^3 - t)`` over every ranking's tied
    groups."""
    m, n = ranks.shape[-2:]
    sums = ranks.sum(axis=-2)
    spread = ((sums - sums.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)
    return 12.0 * spread / (m**2 * (n**3 - n) - m * ties)


def kendalls_w(scores: Scores | Sequence[Sequence[float]], n_permutations: int = 2000, seed: int = 0) -> Concordance:
    """Kendall's W of the rankings that the rows of ``scores`` give its columns, with a permutation p-value.

    In a study the rows are the metrics (each oriented so that higher is better) and the columns the methods: W says
    how far the metrics agree on which method is better (Kendall & Babington Smith 1939; tied scores share their mean
    rank, with the tie correction). The exact relation ``W = chi2_F / (m (n - 1))`` to Friedman's statistic over the
    m rankings (blocks) of n items holds with the same tie correction.

    Args:
        scores: (m, n): m rankings (e.g. metrics) of n items (e.g. methods); a row with NaN is left out.
        n_permutations: random rankings for the p-value (each row's ranks permuted independently).
        seed: seed of the permutations.

    Raises:
        ValueError: ``scores`` not 2-D, or ``n_permutations`` below 1.
    """
    values = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"scores must be (rankings, items), got shape {values.shape}.")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}.")
    complete = ~np.isnan(values).any(axis=1)
    values = values[complete]
    m, n = values.shape
    dropped = int((~complete).sum())
    if m < 2 or n < 2:
        return Concordance(math.nan, math.nan, m, n, dropped)
    ranks = scipy_stats.rankdata(values, axis=1)
    ties = 0.0
    for row in ranks:
        counts = np.unique(row, return_counts=True)[1].astype(np.float64)
        ties += float((counts**3 - counts).sum())
    if m**2 * (n**3 - n) - m * ties <= 0:  # every ranking ties every item: nothing to agree on
        return Concordance(math.nan, math.nan, m, n, dropped)
    w = float(_concordance(ranks, ties))
    generator = np.random.default_rng(seed)
    shuffled = generator.permuted(np.broadcast_to(ranks, (n_permutations, m, n)), axis=-1)
    count = int((_concordance(shuffled, ties) >= w - 1e-12).sum())
    return Concordance(w, (1 + count) / (1 + n_permutations), m, n, dropped)
