"""nnU-Net's sliding window (monai_xai.cams.tiles) without nnU-Net: properties any correct tiling has. The comparison
with nnU-Net's own slicers, Gaussian and predictor is in tests/nnunet."""

import pytest
import torch

from monai_xai.cams.tiles import TiledWindow, tile_importance, tile_starts, tiled


def test_blending_an_identity_gives_the_image_back_with_and_without_mirroring():
    images = torch.rand(2, 1, 20, 37, 9)
    for window in (TiledWindow((8, 16, 8)), TiledWindow((8, 16, 8), step=0.3, mirror_axes=(0, 2))):
        blended = tiled(lambda tiles, _: tiles * 3.0, images, window)
        torch.testing.assert_close(blended, images * 3.0)


def test_a_map_of_each_tile_s_position_is_weighted_by_the_gaussian():
    images = torch.zeros(1, 1, 24)[..., None].expand(1, 1, 24, 1).clone()
    window = TiledWindow((16, 1), step=0.5)
    # each tile answers with its own index: the blend is the Gaussian-weighted mean of the indices covering a voxel
    calls = []

    def index(tiles, _):
        calls.append(len(calls))
        return torch.full_like(tiles, float(calls[-1]))

    blended = tiled(index, images, window)[0, 0, :, 0]
    starts = tile_starts((24, 1), (16, 1), 0.5)[0]
    weights = tile_importance((16, 1))[:, 0].double()
    expected = torch.zeros(24, dtype=torch.float64)
    total = torch.zeros(24, dtype=torch.float64)
    for position, start in enumerate(starts):
        expected[start : start + 16] += position * weights
        total[start : start + 16] += weights
    torch.testing.assert_close(blended.double(), expected / total, atol=1e-6, rtol=0)
    assert starts == [0, 8] and len(calls) == 2


def test_padding_and_refusals():
    images = torch.rand(1, 2, 5, 30)  # smaller than the patch in the first dim: padded around, cut off after
    torch.testing.assert_close(tiled(lambda tiles, _: tiles, images, TiledWindow((8, 8))), images)
    with pytest.raises(ValueError, match="2d nnU-Net configuration on volumes"):
        tiled(lambda tiles, _: tiles, torch.rand(1, 1, 8, 8, 8), TiledWindow((8, 8)))
    with pytest.raises(ValueError, match="step"):
        TiledWindow((8, 8), step=0)
    with pytest.raises(ValueError, match="fold weights"):
        tiled(lambda tiles, _: tiles, images, TiledWindow((8, 8), weights=({},)))
