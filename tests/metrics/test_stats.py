import math

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from monai_xai.metrics import anova_tukey, paired_t_test, summary_markdown, summary_table


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
