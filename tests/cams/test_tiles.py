"""nnU-Net's sliding window (monai_xai.cams.tiles) without nnU-Net: properties any correct tiling has. The comparison
with nnU-Net's own slicers, Gaussian and predictor is in tests/nnunet."""

import pytest
import torch

from monai_xai.cams.tiles import TiledWindow, tile_importance, tile_starts, tiled, tiles_per_image
from monai_xai.explanation import explain


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
    with pytest.raises(ValueError, match="the images' dims, or one fewer"):
        tiled(lambda tiles, _: tiles, torch.rand(1, 1, 8, 8, 8), TiledWindow((8,)))
    with pytest.raises(ValueError, match="step"):
        TiledWindow((8, 8), step=0)
    with pytest.raises(ValueError, match="fold weights"):
        tiled(lambda tiles, _: tiles, images, TiledWindow((8, 8), weights=({},)))


class _Voxelwise(torch.nn.Module):
    """A voxelwise segmenter (1x1 convolutions, tanh): a voxel's attribution to a tile's summed score is the same in
    every tile that holds it, so tiled attributions must equal the whole image's."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.hidden = torch.nn.Conv3d(2, 4, 1)
        self.head = torch.nn.Conv3d(4, 2, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.hidden(images)))


def test_the_tiled_network_and_the_tile_count():
    images = torch.rand(1, 2, 12, 20, 9)
    window = TiledWindow((8, 8, 8), step=0.5, mirror_axes=(0, 1))
    network = _Voxelwise(0).eval()
    calls = []

    def counted(tiles, _):
        calls.append(1)
        return network(tiles)

    with torch.no_grad():
        expected = tiled(counted, images, window)
        torch.testing.assert_close(window.network(network)(images), expected)
        torch.testing.assert_close(expected, network(images), atol=1e-5, rtol=0)  # voxelwise: blending changes nothing
    assert tiles_per_image(images.shape[2:], window) == len(calls) == 2 * 4 * 2 * 4  # tiles x (3 mirrored + 1)
    folds = TiledWindow((8, 8, 8), weights=(network.state_dict(), network.state_dict()))
    assert tiles_per_image(images.shape[2:], folds) == 2 * 4 * 2 * 2


def test_input_attributions_are_tiled_mirrored_and_averaged_over_folds_as_the_predictions():
    images = torch.rand(1, 2, 12, 20, 9)
    folds = [_Voxelwise(seed).eval() for seed in (1, 2)]
    network = _Voxelwise(3).eval()
    own = {name: value.clone() for name, value in network.state_dict().items()}
    window = TiledWindow((8, 8, 8), step=0.5, mirror_axes=(0, 2), weights=tuple(fold.state_dict() for fold in folds))
    request = {"methods": ["saliency", "integrated_gradients"], "class_idx": 1, "pixel_set": "image"}
    explained = explain(network, images, window=window, **request)
    per_fold = [explain(fold, images, **request) for fold in folds]
    for method in request["methods"]:
        expected = (per_fold[0].attributions[method] + per_fold[1].attributions[method]) / 2
        torch.testing.assert_close(explained.attributions[method], expected, atol=1e-5, rtol=1e-4)
    for name, value in network.state_dict().items():  # the network's own weights are back
        torch.testing.assert_close(value, own[name])
    with torch.no_grad():  # and the prediction is the folds' mean, tile by tile
        mean = (folds[0](images) + folds[1](images)) / 2
        torch.testing.assert_close(explained.prediction, mean, atol=1e-5, rtol=0)


def test_a_2d_patch_tiles_a_volume_slice_by_slice():
    """nnU-Net's 2d configuration on volumes: each slice along the first spatial dim tiled in 2D on its own, so a
    function of a 2D tile gives, slice for slice, what it gives on that slice as a 2D image."""
    images = torch.rand(2, 1, 5, 20, 11)
    window = TiledWindow((8, 8), step=0.5, mirror_axes=(0, 1))
    calls = []

    def tile_mean(tiles, condition):
        assert tiles.ndim == 4 and condition is not None and condition.shape[2:] == tiles.shape[2:]
        calls.append(1)
        return {"mean": tiles.mean(dim=(2, 3), keepdim=True).expand_as(tiles) + condition}

    condition = torch.rand(2, 1, 5, 20, 11)
    blended = tiled(tile_mean, images, window, condition=condition)["mean"]
    per_slice = [tiled(tile_mean, images[:, :, z], window, condition=condition[:, :, z])["mean"] for z in range(5)]
    torch.testing.assert_close(blended, torch.stack(per_slice, dim=2))
    # slices x tiles (4 x 2 a slice) x (3 mirrored + 1); the calls are the volume's and the slices' one by one
    assert tiles_per_image(images.shape[2:], window) == 5 * 4 * 2 * 4 == len(calls) // 2
