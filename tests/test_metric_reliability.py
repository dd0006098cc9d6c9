"""The metrics' reliability check (noise resilience, adversary reactivity) by hand and against scipy, the noise and
the prediction check it rests on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from monai_xai.sanity import MAX_NOISE_CHANGE, metric_reliability, noisy_images, prediction_kept


def test_a_reliable_metric_by_hand_and_against_scipy():
    """Ten pairs: the noise moves each value by 0.1, the control by 1..10; changes in units of the clean values'
    standard deviation, p from scipy's one-sided Wilcoxon of the two changes."""
    clean = np.arange(10.0)
    noisy = clean + 0.1
    control = clean + np.arange(1.0, 11.0)
    result = metric_reliability(clean, noisy, control)
    spread = np.std(clean, ddof=1)
    assert result.n_pairs == 10 and result.spread == pytest.approx(spread)
    assert result.noise_change == pytest.approx(0.1 / spread)
    assert result.control_change == pytest.approx(5.5 / spread)
    expected = scipy_stats.wilcoxon(np.arange(1.0, 11.0), np.full(10, 0.1), alternative="greater").pvalue
    assert result.pvalue == pytest.approx(expected) and result.pvalue < 0.05
    assert result.reliable and result.verdict == "reliable"


def test_a_metric_that_ignores_the_map_is_not_reactive():
    """The control map gives the same value as the method's map: p = 1, flagged whatever the noise does."""
    clean = np.linspace(0.0, 1.0, 12)
    result = metric_reliability(clean, clean + 0.01, clean.copy())
    assert result.control_change == 0 and result.pvalue == 1.0
    assert result.resilient and not result.reactive and result.verdict == "not reactive"


def test_a_metric_the_noise_moves_as_much_as_the_control_fails_both_ways():
    generator = np.random.default_rng(0)
    clean = generator.normal(size=40)
    noisy = clean + generator.normal(scale=2.0, size=40)
    control = clean + generator.normal(scale=2.0, size=40)
    result = metric_reliability(clean, noisy, control)
    assert result.noise_change > MAX_NOISE_CHANGE and not result.resilient
    assert not result.reactive and result.verdict == "not resilient, not reactive"


def test_cases_the_noise_changed_are_left_out_and_a_constant_metric_ranks_nothing():
    clean, noisy, control = np.arange(6.0), np.arange(6.0), np.arange(6.0) + 5
    noisy[[1, 4]] = np.nan
    assert metric_reliability(clean, noisy, control).n_pairs == 4
    constant = metric_reliability(np.ones(6), np.ones(6), np.zeros(6))
    assert math.isnan(constant.noise_change) and not constant.resilient and not constant.reactive
    with pytest.raises(ValueError, match="pair up"):
        metric_reliability(np.ones(3), np.ones(4), np.ones(3))


def test_noise_is_a_fraction_of_each_images_range():
    images = torch.stack([torch.zeros(1, 40, 40), torch.full((1, 40, 40), 10.0)])
    images[1, 0, 0, 0] = 0.0  # ranges 0 and 10
    generator = torch.Generator().manual_seed(0)
    noisy = noisy_images(images, 0.05, generator)
    assert torch.equal(noisy[0], images[0])
    assert (noisy[1] - images[1]).std().item() == pytest.approx(0.5, rel=0.1)


def test_prediction_kept_for_a_classifier_and_a_segmenter():
    logits = torch.tensor([[2.0, 1.0], [0.0, 1.0]])
    kept = prediction_kept(logits, torch.tensor([[2.0, 2.5], [0.0, 1.0]]), torch.tensor([0, 1]))
    assert kept.tolist() == [False, True]
    # two classes over 10 x 10 voxels: class 1 where the logit of channel 1 is higher
    outputs = torch.zeros(2, 2, 10, 10)
    outputs[:, 1, :5] = 1.0  # 50 voxels of class 1
    moved = outputs.clone()
    moved[0, 1, 5] = 1.0  # sample 0: 10 voxels more, Dice 100 / 110 < 0.95
    moved[1, 1, 4, 0] = 0.0  # sample 1: one voxel fewer, Dice 98 / 99
    assert prediction_kept(outputs, moved, torch.tensor([1, 1])).tolist() == [False, True]
    empty = torch.zeros(1, 2, 4, 4)
    empty[:, 0] = 1.0
    assert prediction_kept(empty, empty.clone(), torch.tensor([1])).tolist() == [True]  # both regions empty
