"""Fixtures for the CAM tests: tiny 2D/3D networks (see ``tests/cams/nets.py``) and inputs sized for a 2-core CPU."""

import pytest
import torch

from tests.helpers.nets import TinyResNet, tiny_unet3d

IMAGE_SIZE = {2: (32, 32), 3: (16, 16, 16)}


@pytest.fixture(params=[2, 3], ids=["2d", "3d"])
def spatial_dims(request) -> int:
    return request.param


@pytest.fixture
def classifier(spatial_dims: int) -> TinyResNet:
    """TinyResNet with 3 classes in eval-ready state; ``layer4`` features are 1/4 of the input size."""
    return TinyResNet(spatial_dims=spatial_dims, in_channels=1, num_classes=3)


@pytest.fixture
def images(spatial_dims: int) -> torch.Tensor:
    """(2, 1, *spatial) random images matching ``classifier``'s dims."""
    return torch.randn(2, 1, *IMAGE_SIZE[spatial_dims])


@pytest.fixture
def unet3d() -> torch.nn.Module:
    """MONAI UNet, 1 -> 2 channels, for (B, 1, 16, 16, 16) inputs."""
    return tiny_unet3d()
