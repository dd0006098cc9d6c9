import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from monai_xai.metrics import (
    anova_tukey,
    bootstrap_ci,
    holm,
    kendalls_w,
    paired_comparisons,
    paired_t_test,
    rank_methods,
    summary_markdown,
    summary_table,
)


def test_paired_t_test_matches_scipy_and_drops_nan_pairs():
    generator = np.random.default_rng(0)
    first = generator.normal(0.5, 0.1, 30)
    second = first - 0.03 + generator.normal(0, 0.05, 30)
    first[3], second[7] = np.nan, np.nan  # two incomplete pairs
    result = paired_t_test(torch.from_numpy(first), second.tolist())
    expected = scipy_stats.ttest_rel(first, second, nan_policy="omit")
    keep = ~(np.isnan(first) | np.isnan(second))
    assert result.statistic == pytest.approx(float(expected.statistic))
    assert result.pvalue == pytest.approx(float(expected.pvalue))
    assert result.mean_difference == pytest.approx(np.mean(first[keep] - second[keep]))
    assert (result.n_pairs, result.n_dropped) == (28, 2)


def test_paired_t_test_hand_value():
    # differences [1, 2, 3]: mean 2, sample std 1 -> t = 2 / (1 / sqrt(3)) = 2 sqrt(3)
    result = paired_t_test([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert result.statistic == pytest.approx(2 * math.sqrt(3))


def test_anova_and_tukey_match_scipy_with_nan_dropped_per_method():
    generator = np.random.default_rng(1)
    scores = {
        "gradcam": generator.normal(0.30, 0.05, 12),
        "hirescam": generator.normal(0.35, 0.05, 12),
        "random": generator.normal(0.10, 0.05, 12),
    }
    scores["random"][0] = np.nan
    result = anova_tukey({name: torch.from_numpy(values) for name, values in scores.items()})
    groups = [values[~np.isnan(values)] for values in scores.values()]
    anova = scipy_stats.f_oneway(*groups)
    tukey = scipy_stats.tukey_hsd(*groups)
    interval = tukey.confidence_interval(0.95)
    assert result.f_statistic == pytest.approx(float(anova.statistic))
    assert result.pvalue == pytest.approx(float(anova.pvalue))
    assert result.n == {"gradcam": 12, "hirescam": 12, "random": 11}
    assert result.n_dropped == {"gradcam": 0, "hirescam": 0, "random": 1}
    pairs = [(c.first, c.second) for c in result.comparisons]
    assert pairs == [("gradcam", "hirescam"), ("gradcam", "random"), ("hirescam", "random")]
    for comparison, (i, j) in zip(result.comparisons, [(0, 1), (0, 2), (1, 2)], strict=True):
        assert comparison.mean_difference == pytest.approx(groups[i].mean() - groups[j].mean())
        assert comparison.pvalue == pytest.approx(float(tukey.pvalue[i, j]))
        assert (comparison.ci_low, comparison.ci_high) == pytest.approx((interval.low[i, j], interval.high[i, j]))


def test_summary_table_hand_values_and_markdown():
    # [1, 2, 3, NaN]: mean 2, sample std 1, min 1, max 3, n 3, one skipped; [0.5]: no std for a single case
    rows = summary_table({"gradcam": [1.0, 2.0, 3.0, float("nan")], "ablation": torch.tensor([0.5])})
    first, second = rows
    assert (first.method, first.mean, first.std, first.min, first.max, first.n, first.n_skipped) == (
        "gradcam",
        2.0,
        1.0,
        1.0,
        3.0,
        3,
        1,
    )
    assert second.mean == 0.5 and math.isnan(second.std) and second.n == 1
    assert summary_markdown(rows, digits=2) == (
        "| method | mean | std | min | max | n | skipped |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n"
        "| gradcam | 2.00 | 1.00 | 1.00 | 3.00 | 3 | 1 |\n"
        "| ablation | 0.50 | - | 0.50 | 0.50 | 1 | 0 |"
    )


def test_summary_of_a_method_with_only_skipped_cases():
    (row,) = summary_table({"empty": [float("nan")] * 3})
    assert row.n == 0 and row.n_skipped == 3 and math.isnan(row.mean) and math.isnan(row.max)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="one value per case for both"):
        paired_t_test([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least 2 cases"):
        paired_t_test([1.0, float("nan"), 3.0], [1.0, 2.0, float("nan")])
    with pytest.raises(ValueError, match="shape"):
        paired_t_test(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="infinite"):
        summary_table({"a": [1.0, float("inf")]})
    with pytest.raises(ValueError, match="non-empty mapping"):
        summary_table([1.0, 2.0])
    with pytest.raises(ValueError, match="at least two methods"):
        anova_tukey({"a": [1.0, 2.0]})
    with pytest.raises(ValueError, match=r"at least 2 non-NaN.*\['b'\]"):
        anova_tukey({"a": [1.0, 2.0], "b": [1.0, float("nan")]})


def test_holm_matches_statsmodels_with_ties_and_nan():
    from statsmodels.stats.multitest import multipletests

    pvalues = [0.01, 0.04, 0.04, 0.3, 0.001, math.nan, 0.02]
    finite = [p for p in pvalues if not math.isnan(p)]
    expected = iter(multipletests(finite, method="holm")[1])
    ours = holm(pvalues)
    for p, adjusted in zip(pvalues, ours):
        assert math.isnan(adjusted) if math.isnan(p) else adjusted == pytest.approx(next(expected))


def test_paired_comparisons_match_scipy_with_ties_nan_and_two_cases():
    from statsmodels.stats.multitest import multipletests

    generator = np.random.default_rng(1)
    base = generator.normal(0.5, 0.1, 12)
    scores = {
        "a": base,
        "b": base + np.round(generator.normal(0.02, 0.03, 12), 2),  # rounding makes tied |differences|
        "c": np.where(np.arange(12) == 4, np.nan, base - 0.05 + generator.normal(0, 0.01, 12)),
    }
    comparisons = paired_comparisons(scores)
    assert [(c.first, c.second) for c in comparisons] == [("a", "b"), ("a", "c"), ("b", "c")]
    t_raw, w_raw = [], []
    for comparison in comparisons:
        first, second = scores[comparison.first], scores[comparison.second]
        keep = ~(np.isnan(first) | np.isnan(second))
        t_test = scipy_stats.ttest_rel(first[keep], second[keep])
        wilcoxon = scipy_stats.wilcoxon(first[keep], second[keep])
        assert comparison.n_pairs == keep.sum()
        assert comparison.t_pvalue == pytest.approx(t_test.pvalue) and comparison.wilcoxon_pvalue == pytest.approx(
            wilcoxon.pvalue
        )
        differences = first[keep] - second[keep]
        assert comparison.cohens_dz == pytest.approx(differences.mean() / differences.std(ddof=1))
        ranks = scipy_stats.rankdata(np.abs(differences[differences != 0]))
        nonzero = differences[differences != 0]
        expected_r = (ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum()
        assert comparison.rank_biserial == pytest.approx(expected_r)
        t_raw.append(t_test.pvalue)
        w_raw.append(wilcoxon.pvalue)
    assert [c.t_pvalue_holm for c in comparisons] == pytest.approx(list(multipletests(t_raw, method="holm")[1]))
    assert [c.wilcoxon_pvalue_holm for c in comparisons] == pytest.approx(list(multipletests(w_raw, method="holm")[1]))
    # two cases: the t-test exists; equal scores: no test at all, not a crash
    (two,) = paired_comparisons({"x": [0.1, 0.5], "y": [0.2, 0.9]})
    assert two.n_pairs == 2 and two.t_pvalue == pytest.approx(scipy_stats.ttest_rel([0.1, 0.5], [0.2, 0.9]).pvalue)
    (same,) = paired_comparisons({"x": [0.3, 0.3, 0.4], "y": [0.3, 0.3, 0.4]})
    assert math.isnan(same.t_pvalue) and math.isnan(same.wilcoxon_pvalue) and same.mean_difference == 0


def test_bootstrap_ci_matches_scipy_and_handles_degenerate_samples():
    values = np.array([0.2, 0.4, 0.4, 0.9, np.nan, 0.1, 0.5])
    low, high = bootstrap_ci(values, n_resamples=999, seed=3)
    finite = values[~np.isnan(values)]
    expected = scipy_stats.bootstrap(
        (finite,), np.mean, n_resamples=999, method="percentile", random_state=np.random.default_rng(3)
    ).confidence_interval
    assert (low, high) == pytest.approx((expected.low, expected.high))
    assert low <= finite.mean() <= high
    assert all(math.isnan(v) for v in bootstrap_ci([0.5, np.nan]))
    assert bootstrap_ci([0.7, 0.7, 0.7]) == (0.7, 0.7)


def test_ranking_groups_methods_not_significantly_different():
    generator = np.random.default_rng(2)
    base = generator.normal(0, 1, 40)
    scores = {"best": base + 1.0, "tied": base + 1.0 + generator.normal(0, 0.01, 40), "worst": base}
    ranked = rank_methods(scores, paired_comparisons(scores))
    assert [(r.method, r.group) for r in ranked][0][1] == 1
    groups = {r.method: r.group for r in ranked}
    assert groups["best"] == groups["tied"] == 1 and groups["worst"] == 2
    lower = rank_methods(scores, paired_comparisons(scores), higher_is_better=False)
    assert lower[0].method == "worst" and lower[0].rank == 1


# --- Kendall's W


def test_kendalls_w_by_hand():
    """Identical rankings: W = 1; two opposite rankings: every rank sum is n + 1, W = 0. Three raters of three items
    by hand: rank sums (3, 6, 9) (mean 6), S = 18, W = 12 * 18 / (9 * 24) = 1."""
    assert kendalls_w([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0], [0.1, 0.2, 0.3]]).w == pytest.approx(1.0)
    assert kendalls_w([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]]).w == pytest.approx(0.0)
    # ranks (1, 2, 3), (1, 3, 2), (2, 1, 3): sums (4, 6, 8), S = 8, W = 12 * 8 / (9 * 24) = 4 / 9
    assert kendalls_w([[1.0, 2.0, 3.0], [1.0, 3.0, 2.0], [2.0, 1.0, 3.0]]).w == pytest.approx(4 / 9)


def test_kendalls_w_equals_friedman_with_ties_and_drops_rankings_with_nan():
    """W = chi2_F / (m (n - 1)) with scipy's tie-corrected Friedman statistic (raters are its blocks)."""
    generator = np.random.default_rng(3)
    scores = np.round(generator.normal(size=(6, 5)) + np.arange(5) * 0.5, 1)
    scores[2, 1] = scores[2, 3]  # a tie
    with_nan = np.vstack([scores, [np.nan, 1.0, 2.0, 3.0, 4.0]])
    result = kendalls_w(with_nan)
    chi2 = scipy_stats.friedmanchisquare(*scores.T).statistic
    assert result.w == pytest.approx(chi2 / (6 * 4), rel=1e-12)
    assert (result.n_rankings, result.n_items, result.n_dropped) == (6, 5, 1)


def test_kendalls_w_permutation_p_matches_the_exact_distribution():
    """Two rankings of three items: all 36 pairs of permutations enumerated give the exact p of the observed W."""
    observed = [[1.0, 2.0, 3.0], [1.0, 3.0, 2.0]]
    w = kendalls_w(observed).w
    exact = np.mean(
        [
            kendalls_w([list(a), list(b)]).w >= w - 1e-12
            for a in itertools.permutations((1.0, 2.0, 3.0))
            for b in itertools.permutations((1.0, 2.0, 3.0))
        ]
    )
    assert kendalls_w(observed, n_permutations=20000, seed=1).pvalue == pytest.approx(exact, abs=0.015)
    agreeing = np.tile(np.arange(8.0), (5, 1))
    assert kendalls_w(agreeing, n_permutations=999).pvalue == pytest.approx(1 / 1000)


def test_kendalls_w_is_undefined_without_two_rankings_or_two_items():
    assert math.isnan(kendalls_w([[1.0, 2.0, 3.0]]).w)
    assert math.isnan(kendalls_w([[1.0], [2.0]]).w)
    assert math.isnan(kendalls_w([[1.0, 1.0], [2.0, 2.0]]).w)  # every ranking ties everything
    with pytest.raises(ValueError, match="rankings, items"):
        kendalls_w([1.0, 2.0])
