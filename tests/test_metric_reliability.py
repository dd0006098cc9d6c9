"""The metrics' reliability check (noise resilience, adversary reactivity) by hand and against scipy, and the
perturbations and the prediction check it rests on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats
from torch import nn

from monai_xai.sanity import MAX_NOISE_CHANGE, metric_reliability, noisy_images, perturbed_weights, prediction_kept


def test_a_reliable_metric_by_hand_and_against_scipy():
    """Ten pairs: input noise moves each value by 0.1, weight noise by 0.3 (NaN where it changed the prediction), the
    random map by 1..10 and the random model by 2; changes in units of the clean values' standard deviation, each
    disruptive perturbation's p from scipy's one-sided Wilcoxon against the pair's mean minor change."""
    clean = np.arange(10.0)
    model_noise = clean + 0.3
    model_noise[[2, 5]] = np.nan
    minor = {"input noise": clean + 0.1, "model noise": model_noise}
    disruptive = {"random map": clean + np.arange(1.0, 11.0), "random model": clean - 2.0}
    result = metric_reliability(clean, minor, disruptive)
    spread = np.std(clean, ddof=1)
    pair_minor = np.where(np.isnan(model_noise), 0.1, 0.2)  # mean of 0.1 and 0.3 where both kept the prediction
    assert result.n_pairs == 10 and result.spread == pytest.approx(spread)
    assert result.noise_change == pytest.approx(pair_minor.mean() / spread)
    assert result.changes["input noise"] == pytest.approx(0.1 / spread)
    assert result.changes["model noise"] == pytest.approx(0.3 / spread)
    assert result.changes["random map"] == pytest.approx(5.5 / spread)
    assert result.changes["random model"] == pytest.approx(2.0 / spread)
    for name, deltas in (("random map", np.arange(1.0, 11.0)), ("random model", np.full(10, 2.0))):
        expected = scipy_stats.wilcoxon(deltas, pair_minor, alternative="greater").pvalue
        assert result.pvalues[name] == pytest.approx(expected) and result.pvalues[name] < 0.05
    assert result.pvalue == max(result.pvalues.values())
    assert result.reliable and result.verdict == "reliable"


def test_a_metric_that_ignores_the_map_is_not_reactive():
    """Any map gives the same value: both disruptive changes are 0, p = 1, flagged whatever the noise does."""
    clean = np.linspace(0.0, 1.0, 12)
    result = metric_reliability(
        clean, {"input noise": clean + 0.01}, {"random map": clean.copy(), "random model": clean.copy()}
    )
    assert result.changes["random map"] == 0 and result.pvalues == {"random map": 1.0, "random model": 1.0}
    assert result.resilient and not result.reactive
    assert result.verdict == "not reactive to random map, random model"


def test_a_metric_the_noise_moves_as_much_as_the_disruptions_fails_both_ways():
    generator = np.random.default_rng(0)
    clean = generator.normal(size=40)
    result = metric_reliability(
        clean,
        {"input noise": clean + generator.normal(scale=2.0, size=40)},
        {"random map": clean + generator.normal(scale=2.0, size=40)},
    )
    assert result.noise_change > MAX_NOISE_CHANGE and not result.resilient
    assert not result.reactive and result.verdict == "not resilient, not reactive to random map"


def test_one_disruption_the_metric_misses_is_enough_to_fail():
    clean = np.arange(12.0)
    result = metric_reliability(clean, {"input noise": clean + 0.1}, {"random map": clean + 5, "random model": clean})
    assert result.pvalues["random map"] < 0.05 and result.pvalues["random model"] == 1.0
    assert result.verdict == "not reactive to random model"


def test_pairs_without_a_minor_value_are_left_out_and_a_constant_metric_ranks_nothing():
    clean, noisy, control = np.arange(6.0), np.arange(6.0), np.arange(6.0) + 5
    noisy[[1, 4]] = np.nan  # the noise changed these cases' prediction
    assert metric_reliability(clean, {"input noise": noisy}, {"random map": control}).n_pairs == 4
    constant = metric_reliability(np.ones(6), {"input noise": np.ones(6)}, {"random map": np.zeros(6)})
    assert math.isnan(constant.noise_change) and not constant.resilient and not constant.reactive
    assert constant.verdict == "the same value for every pair: ranks nothing"
    few = metric_reliability(np.arange(4.0), {"input noise": np.arange(4.0)}, {"random map": np.arange(4.0) + 9})
    assert few.reliable is None and few.verdict.startswith("undecided: 4 pair(s)")
    with pytest.raises(ValueError, match="pair up"):
        metric_reliability(np.ones(3), {"input noise": np.ones(4)}, {"random map": np.ones(3)})
    with pytest.raises(ValueError, match="at least one minor and one disruptive"):
        metric_reliability(np.ones(3), {}, {"random map": np.ones(3)})


def test_input_noise_is_a_fraction_of_each_images_range():
    images = torch.stack([torch.zeros(1, 40, 40), torch.full((1, 40, 40), 10.0)])
    images[1, 0, 0, 0] = 0.0  # ranges 0 and 10
    generator = torch.Generator().manual_seed(0)
    noisy = noisy_images(images, 0.05, generator)
    assert torch.equal(noisy[0], images[0])
    assert (noisy[1] - images[1]).std().item() == pytest.approx(0.5, rel=0.1)


def test_weight_noise_is_relative_seeded_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 64, 3), nn.BatchNorm2d(64), nn.Conv2d(64, 64, 3))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    state = torch.random.get_rng_state()
    perturbed = perturbed_weights(model, 0.02, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    ratio = perturbed[2].weight / model[2].weight
    assert (ratio - 1).std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.equal(perturbed[1].running_var, model[1].running_var)  # buffers are not weights
    again = perturbed_weights(model, 0.02, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(perturbed.parameters(), again.parameters()))


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
