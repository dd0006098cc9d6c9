"""Where a layer keeps its channels: channel-first maps, channel-last maps, or transformer tokens, turned into the
(B, K, *grid) activations every CAM method works on.

- **channel first** (B, K, *grid): convolutions, MONAI's SwinUNETR stages (``swinViT.layers1.0``), UNETR decoders;
- **channel last** (B, *grid, K): Swin blocks (torchvision ``swin_t``'s ``features.N``, MONAI's
  ``swinViT.layers1.0.blocks.N``);
- **tokens** (B, N, K): vision transformers (torchvision ``VisionTransformer``, MONAI ``ViT`` and UNETR's
  ``vit.blocks.N``), N = extra leading tokens (a class token, register tokens) + one token per patch, patches in
  row-major order over the patch grid.

:func:`resolve_layout` finds the layout of a recorded output from its shape, the input's shape and the model (its
patch-embedding convolution gives the patch size of a token layer); an explicit ``reshape`` argument decides when the
shapes cannot. A :class:`FeatureLayout` turns the output into the grid (and gradients alike) and back, so AblationCAM
can replace a transformer layer's output with ablated features, extra tokens untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from monai_xai.cams.hooks import ActivationRecorder
from monai_xai.cams.layers import LayerSpec, resolve_layers
from monai_xai.enums import Layout, as_choice
from monai_xai.utils import preserved_model_state

__all__ = ["FeatureLayout", "Reshape", "resolve_layout", "feature_grid", "CHANNEL_LAST_MODULES"]


# what the user may pass as ``reshape``: a layout name, or ``output -> (B, K, *grid)`` for an unusual model
Reshape = Layout | str | Callable[[torch.Tensor], torch.Tensor] | None
# modules whose output is channel-last whatever the shapes say (Swin blocks and their patch merging)
CHANNEL_LAST_MODULES = ("SwinTransformerBlock", "SwinTransformerBlockV2", "PatchMerging", "PatchMergingV2")
# modules that work on channel-first maps: a layer containing one is channel-first when the shapes cannot tell
_CHANNEL_FIRST_MODULES = (
    nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.InstanceNorm2d, nn.InstanceNorm3d, nn.GroupNorm,
)  # fmt: skip
# at most this many extra leading tokens are looked for when the patch size is unknown
_MAX_EXTRA_TOKENS = 16


@dataclass(frozen=True)
class FeatureLayout:
    """The layout of one recorded output, and the extra tokens it carried (for :meth:`to_output`).

    Attributes:
        layout: channel first, channel last or tokens.
        grid: the spatial grid of the features, e.g. (14, 14) for ViT-B/16 at 224^2.
        extra: (B, E, K) the extra leading tokens of a token layout, else None.
        custom: a user's ``output -> (B, K, *grid)`` transform (no inverse).
    """

    layout: Layout
    grid: tuple[int, ...]
    extra: torch.Tensor | None = None
    custom: Callable[[torch.Tensor], torch.Tensor] | None = None

    def to_grid(self, output: torch.Tensor) -> torch.Tensor:
        """(B, ...) layer output, or its gradient, -> (B, K, *grid)."""
        if self.custom is not None:
            return self.custom(output)
        if self.layout == Layout.CHANNEL_FIRST:
            return output
        if self.layout == Layout.CHANNEL_LAST:
            return output.movedim(-1, 1)
        patches = output[:, output.shape[1] - math.prod(self.grid) :]
        return patches.reshape(output.shape[0], *self.grid, output.shape[-1]).movedim(-1, 1)

    def to_output(self, grid: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """(n, K, *grid) features of the samples ``rows`` -> the layer's output layout (extra tokens restored)."""
        if self.custom is not None:
            raise ValueError(
                "a custom reshape has no inverse, so a method that replaces the layer's output (AblationCAM) cannot "
                "run; pass reshape='tokens', 'channel_last' or 'channel_first' instead of a function."
            )
        if self.layout == Layout.CHANNEL_FIRST:
            return grid
        features = grid.movedim(1, -1)
        if self.layout == Layout.CHANNEL_LAST:
            return features
        tokens = features.reshape(grid.shape[0], -1, grid.shape[1])
        return torch.cat([self.extra[rows].to(tokens), tokens], dim=1) if self.extra.shape[1] else tokens


def _consistent(grid: tuple[int, ...], spatial: tuple[int, ...]) -> bool:
    """A feature grid that an input of ``spatial`` size gives by one integer stride on every axis."""
    if len(grid) != len(spatial) or min(grid) < 1 or any(g > s for g, s in zip(grid, spatial)):
        return False
    strides = {s / g for g, s in zip(grid, spatial)}
    return len(strides) == 1 and float(next(iter(strides))).is_integer()


def _last_module_name(module: nn.Module) -> str:
    """The class name of ``module``, or of the last child of a Sequential/ModuleList (what produced the output)."""
    while isinstance(module, nn.Sequential | nn.ModuleList) and len(module):
        module = module[-1]
    return type(module).__name__


def _patch_size(model: nn.Module, in_channels: int, spatial_dims: int) -> tuple[int, ...] | None:
    """The stride of the model's patch embedding: its first convolution of the image channels with kernel = stride."""
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    for module in model.modules():
        if isinstance(module, conv) and module.in_channels == in_channels and module.kernel_size == module.stride:
            if max(module.stride) > 1:
                return tuple(module.stride)
    return None


def _token_grid(tokens: int, spatial: tuple[int, ...], patch: tuple[int, ...] | None) -> list[tuple[int, ...]]:
    """Patch grids that leave 0 to 16 extra tokens: from the known patch size, else every isotropic patch size."""
    sizes = [patch] if patch is not None else [(p,) * len(spatial) for p in range(1, min(spatial) + 1)]
    grids = []
    for size in sizes:
        if all(s % p == 0 for s, p in zip(spatial, size)):
            grid = tuple(s // p for s, p in zip(spatial, size))
            if 0 <= tokens - math.prod(grid) <= (tokens if patch is not None else _MAX_EXTRA_TOKENS):
                grids.append(grid)
    return grids


def resolve_layout(
    name: str, module: nn.Module, output: torch.Tensor, images: torch.Tensor, model: nn.Module, reshape: Reshape = None
) -> FeatureLayout:
    """The layout of the output of layer ``name`` for ``images``.

    Args:
        name: the layer's dotted name (for messages).
        module: the layer.
        output: its recorded output for ``images``.
        images: (B, C, *spatial) the model's input.
        model: the network (its patch embedding gives a token layer's patch size).
        reshape: None finds the layout; ``"channel_first"``, ``"channel_last"`` or ``"tokens"`` states it; a function
            ``output -> (B, K, *grid)`` does it (an unusual model).

    Raises:
        ValueError: the layout cannot be found or does not fit; the message says what to pass.
    """
    spatial = tuple(images.shape[2:])
    if output.shape[0] != images.shape[0]:
        raise ValueError(
            f"target layer {name!r} outputs shape {tuple(output.shape)} for {images.shape[0]} images: its first dim "
            "must be the batch; choose another layer."
        )
    if callable(reshape) and not isinstance(reshape, str):
        grid_output = reshape(output)
        if grid_output.ndim != images.ndim or grid_output.shape[0] != images.shape[0]:
            raise ValueError(
                f"reshape turned the output {tuple(output.shape)} of {name!r} into {tuple(grid_output.shape)}; it must "
                f"give (B, K, *grid) with {len(spatial)} grid dims."
            )
        return FeatureLayout(Layout.CHANNEL_FIRST, tuple(grid_output.shape[2:]), custom=reshape)
    stated = as_choice(Layout, reshape, "reshape") if reshape is not None else None
    if output.ndim == 3 and len(spatial) > 1 and stated in (None, Layout.TOKENS):
        patch = _patch_size(model, images.shape[1], len(spatial))
        grids = _token_grid(output.shape[1], spatial, patch)
        if len(grids) != 1:
            found = f"patch size {patch}" if patch else "no patch-embedding convolution (kernel = stride)"
            raise ValueError(
                f"target layer {name!r} outputs {output.shape[1]} tokens of {output.shape[2]} features for images of "
                f"spatial size {spatial} ({found}); its patch grid is "
                + (f"ambiguous {grids}" if grids else "not found")
                + ": pass reshape=<function: output -> (B, K, *grid)>, e.g. "
                "lambda x: x[:, 1:].reshape(x.shape[0], 14, 14, -1).movedim(-1, 1) for one class token and 14x14 "
                "patches."
            )
        grid = grids[0]
        return FeatureLayout(Layout.TOKENS, grid, extra=output[:, : output.shape[1] - math.prod(grid)].detach())
    if output.ndim != images.ndim:
        raise ValueError(
            f"target layer {name!r} outputs shape {tuple(output.shape)}, but CAMs need (B, K, *grid) feature maps "
            f"(or tokens, or channel-last maps) with {len(spatial)} spatial dims like the images "
            f"{tuple(images.shape)}; choose a convolutional layer, a transformer block or a Swin stage."
        )
    if stated is not None and stated != Layout.TOKENS:
        grid = tuple(output.shape[2:]) if stated == Layout.CHANNEL_FIRST else tuple(output.shape[1:-1])
        return FeatureLayout(stated, grid)
    first, last = tuple(output.shape[2:]), tuple(output.shape[1:-1])
    if _last_module_name(module) in CHANNEL_LAST_MODULES:
        return FeatureLayout(Layout.CHANNEL_LAST, last)
    plausible = [layout for layout, grid in ((Layout.CHANNEL_FIRST, first), (Layout.CHANNEL_LAST, last))
                 if _consistent(grid, spatial)]  # fmt: skip
    if len(plausible) == 1:
        return FeatureLayout(plausible[0], first if plausible[0] == Layout.CHANNEL_FIRST else last)
    convolutional = any(isinstance(part, _CHANNEL_FIRST_MODULES) for part in module.modules())
    if not plausible or convolutional:  # a network that crops or pads, or K that equals the grid: PyTorch's convention
        return FeatureLayout(Layout.CHANNEL_FIRST, first)
    raise ValueError(
        f"target layer {name!r} outputs shape {tuple(output.shape)} for images of spatial size {spatial}: it could be "
        f"channel-first (B, K, *{first}) or channel-last (B, *{last}, K); pass reshape='channel_first' or "
        "reshape='channel_last'."
    )


def feature_grid(model: nn.Module, layers: LayerSpec, images: torch.Tensor, reshape: Reshape = None) -> tuple[int, ...]:
    """The feature grid of the (first) target layer for ``images``, whatever its layout (one forward pass without
    gradients), e.g. (14, 14) for a ViT-B/16 block at 224^2."""
    named = resolve_layers(model, layers)[:1]
    with torch.no_grad(), preserved_model_state(model), ActivationRecorder(named) as recorder:
        model(images)
        (output,) = recorder.activations()
    (name, module), *_ = named
    return resolve_layout(name, module, output, images, model, reshape).grid
