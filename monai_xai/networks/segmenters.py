"""3D segmentation networks by name (MONAI's UNet, SegResNet, SwinUNETR), with the decoder layer each is explained at.

``segmentation_network("unet", in_channels=1, out_channels=4, patch_size=(160, 160, 80))`` builds the network and
checks that the training patch (the sliding window's ``roi_size``) fits its down-sampling; bundles take the name as a
config id (``"network_name": "unet"``) so one bundle trains and explains each architecture.
:func:`segmentation_cam_layer` names the layer a bundle's ``explain.json`` explains:

=============  =========================  ===================================================================
network        CAM layer                  what it is
=============  =========================  ===================================================================
``unet``       ``model.1.submodule``      the last decoder stage before the output block: the outermost skip
                                          connection's inner path, ``channels[0]`` maps at 1/2 the input grid
``segresnet``  ``up_layers.<last>``       the last decoder stage before ``conv_final``, ``init_filters`` maps at
                                          the input grid (``up_layers.2`` with the default 4 encoder levels)
``swinunetr``  ``decoder1``               the last decoder stage before ``out``, ``feature_size`` maps at the
                                          input grid
=============  =========================  ===================================================================

These are the layers Seg-Grad-CAM and Seg-HiRes-Grad-CAM read in a U-Net: the decoder's last, finest feature maps,
whose class gradients are the most local (Rheude et al. 2024 compare the two methods there).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from monai.networks.nets import SegResNet, SwinUNETR, UNet
from torch import nn

__all__ = ["SEGMENTERS", "segmentation_network", "segmentation_cam_layer", "patch_divisor"]

SEGMENTERS = ("unet", "segresnet", "swinunetr")
# defaults per network, each a strong published configuration scaled for one 3D CT patch on one GPU
_DEFAULTS: dict[str, dict[str, Any]] = {
    "unet": {
        "channels": (32, 64, 128, 256, 320),
        "strides": (2, 2, 2, 2),
        "num_res_units": 2,
        "norm": "instance",
    },
    "segresnet": {"init_filters": 16, "blocks_down": (1, 2, 2, 4), "blocks_up": (1, 1, 1)},
    "swinunetr": {"feature_size": 48},
}
# SwinUNETR halves the grid five times (patch embedding + four merging stages)
_SWIN_DIVISOR = 32


def _check_name(name: str) -> None:
    if name not in SEGMENTERS:
        raise ValueError(f"unknown network_name {name!r}; available: {list(SEGMENTERS)}.")


def patch_divisor(name: str, options: Mapping[str, Any] | None = None) -> int:
    """The number every side of an input patch must be a multiple of for network ``name`` built with ``options``.

    Args:
        name: one of :data:`SEGMENTERS`.
        options: keyword arguments of the MONAI constructor that replace the defaults (e.g. ``{"strides": [2, 2]}``).
    """
    _check_name(name)
    settings = {**_DEFAULTS[name], **dict(options or {})}
    if name == "unet":
        return math.prod(int(stride) for stride in settings["strides"])
    if name == "segresnet":
        return 2 ** (len(settings["blocks_down"]) - 1)
    return _SWIN_DIVISOR


def segmentation_network(
    name: str = "unet",
    in_channels: int = 1,
    out_channels: int = 4,
    patch_size: Sequence[int] = (160, 160, 80),
    options: Mapping[str, Any] | None = None,
) -> nn.Module:
    """A 3D segmentation network by name, for patches of ``patch_size``.

    Args:
        name: ``"unet"`` (MONAI ``UNet``: 32-64-128-256-320 channels, four stride-2 levels, two residual units per
            level, instance norm), ``"segresnet"`` (``SegResNet``, 16 initial filters) or ``"swinunetr"``
            (``SwinUNETR``, feature size 48).
        in_channels: image channels (1 for CT).
        out_channels: classes including background (KiTS23: 4).
        patch_size: (x, y, z) voxels of a training patch and of the sliding window; each side must be a multiple of
            :func:`patch_divisor` (16 for the default UNet, 8 for SegResNet, 32 for SwinUNETR).
        options: keyword arguments of the MONAI constructor that replace the defaults above, e.g.
            ``{"channels": [8, 16, 32], "strides": [2, 2]}`` for a small UNet.

    Returns:
        the network (train mode, on the CPU): (B, in_channels, *patch) -> (B, out_channels, *patch) logits.

    Raises:
        ValueError: an unknown name, or a patch side that the network cannot down-sample evenly.
    """
    _check_name(name)
    settings = {**_DEFAULTS[name], **dict(options or {})}
    divisor = patch_divisor(name, options)
    uneven = [int(side) for side in patch_size if int(side) % divisor]
    if len(patch_size) != 3 or uneven:
        fitting = [math.ceil(int(side) / divisor) * divisor for side in patch_size]
        raise ValueError(
            f"{name} needs a 3D patch_size whose sides are multiples of {divisor}, got {list(patch_size)}; "
            f'use e.g. --patch_size "{fitting}".'
        )
    if name == "unet":
        return UNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, **settings)
    if name == "segresnet":
        return SegResNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, **settings)
    return SwinUNETR(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, **settings)


def segmentation_cam_layer(network: nn.Module) -> str:
    """Name of the last decoder stage of a :func:`segmentation_network` (the layer its CAMs are computed at; see the
    module docstring's table).

    Raises:
        ValueError: a network of another class.
    """
    if isinstance(network, UNet):
        return "model.1.submodule"
    if isinstance(network, SegResNet):
        return f"up_layers.{len(network.up_layers) - 1}"
    if isinstance(network, SwinUNETR):
        return "decoder1"
    raise ValueError(
        f"no CAM layer known for {type(network).__name__}; set xai_target_layer to a layer name "
        "(one of `[name for name, _ in network.named_modules()]`)."
    )
