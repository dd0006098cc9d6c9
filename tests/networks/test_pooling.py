"""Global LP pooling against torch's LPPool3d and a hand computation, and swapped into a MONAI DenseNet."""

import pytest
import torch
from monai.networks.nets import DenseNet

from monai_xai.networks import GlobalLPPool, with_global_lp_pool


def test_global_lp_pool_is_lppool_over_the_whole_grid_and_a_hand_sum():
    features = torch.rand(2, 3, 12, 12, 12)
    pooled = GlobalLPPool(4)(features)
    assert pooled.shape == (2, 3, 1, 1, 1)
    torch.testing.assert_close(pooled, torch.nn.LPPool3d(4, 12)(features))
    by_hand = (features[1, 2] ** 4).sum() ** 0.25
    torch.testing.assert_close(pooled[1, 2, 0, 0, 0], by_hand)
    assert GlobalLPPool(2)(torch.ones(1, 1, 5, 7)).item() == pytest.approx(35**0.5)  # any size, 2D too
    with pytest.raises(ValueError, match="power must be positive"):
        GlobalLPPool(0)


def test_with_global_lp_pool_keeps_the_parameters_and_pools_by_power():
    network = DenseNet(3, 1, 2, init_features=4, growth_rate=4, block_config=(2,), bn_size=2).eval()
    state = {key: value.clone() for key, value in network.state_dict().items()}
    swapped = with_global_lp_pool(network, 4)
    assert isinstance(swapped.class_layers.pool, GlobalLPPool) and swapped.state_dict().keys() == state.keys()
    images = torch.randn(2, 1, 24, 24, 24)
    features = swapped.class_layers.relu(swapped.features(images))
    expected = swapped.class_layers.out(features.pow(4).flatten(2).sum(2).pow(0.25))
    torch.testing.assert_close(swapped(images), expected)
    with pytest.raises(ValueError, match="needs a MONAI DenseNet"):
        with_global_lp_pool(torch.nn.Linear(2, 2))


def test_a_dead_channel_gets_a_zero_gradient_not_nan():
    """A channel that is zero everywhere (a re-initialised network's dead ReLU) must not turn every gradient map of its
    sample into NaN: its gradient is zero, the live channel's is the hand derivative x^(p-1) / ||x||_p^(p-1)."""
    features = torch.zeros(1, 2, 3, 3)
    features[0, 0] = torch.arange(1.0, 10.0).reshape(3, 3)
    features.requires_grad_()
    GlobalLPPool(4)(features).sum().backward()
    assert torch.isfinite(features.grad).all() and (features.grad[0, 1] == 0).all()
    live = features.detach()[0, 0]
    expected = live**3 / (live**4).sum() ** 0.75
    torch.testing.assert_close(features.grad[0, 0], expected)
