"""Small transformers for the CAM tests: torchvision ViT and Swin at toy sizes, MONAI UNETR and SwinUNETR, and a 3D
transformer whose decision depends on one patch only (the known answer)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import SwinTransformer, VisionTransformer

__all__ = ["tiny_vit", "tiny_swin", "vit_tokens", "OnePatchTransformer3d"]


def tiny_vit(image_size: int = 32, patch_size: int = 8, num_classes: int = 3) -> VisionTransformer:
    """torchvision's VisionTransformer (class token + patch tokens), 2 blocks, 32 features; its classification head,
    which torchvision initialises to zeros (every score constant, every gradient zero), gets random weights."""
    model = VisionTransformer(image_size, patch_size, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                              num_classes=num_classes)  # fmt: skip
    nn.init.normal_(model.heads.head.weight, std=0.5)
    return model


def vit_tokens(grid: int):
    """pytorch-grad-cam's reshape_transform for a ViT with one class token and a grid x grid patch grid."""
    return lambda x: x[:, 1:].reshape(x.shape[0], grid, grid, x.shape[2]).permute(0, 3, 1, 2)


def tiny_swin(num_classes: int = 3) -> SwinTransformer:
    """torchvision's SwinTransformer, 2 stages of 2 blocks, channel-last features: 8x8 then 4x4 for 32x32 inputs; its
    head (std 0.02 at init) is scaled up so that the maps lie far above float32 rounding."""
    model = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4],
                            num_classes=num_classes)  # fmt: skip
    nn.init.normal_(model.head.weight, std=0.5)
    return model


class TokenMLP(nn.Module):
    """A transformer MLP applied token by token (no mixing between tokens)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(features, 2 * features), nn.Linear(2 * features, features)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc2(torch.relu(self.fc1(tokens))))


class OnePatchTransformer3d(nn.Module):
    """3D ViT-like classifier whose class-1 logit is a positive sum over the features of one patch token only.

    16^3 inputs, 4^3 patches (64 patch tokens), after ``extra`` leading tokens (a class token and register tokens).
    Every weight is positive and the token MLP (layer ``"block"``) mixes nothing, so the class-1 logit grows with the
    features of patch ``patch`` alone: a correct CAM of ``block`` for class 1 peaks on that patch when the image is
    bright there and zero elsewhere.

    Args:
        patch: index of the decisive patch in the 4x4x4 grid (row-major), one per network.
        extra: number of extra leading tokens (>= 0).
    """

    def __init__(self, patch: int, extra: int = 3, features: int = 8) -> None:
        super().__init__()
        self.patch, self.extra = patch, extra
        self.embed = nn.Conv3d(1, features, kernel_size=4, stride=4)
        self.extra_tokens = nn.Parameter(torch.rand(1, extra, features))
        self.block = TokenMLP(features)
        self.head = nn.Linear(features, 2)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(parameter.abs())
            self.embed.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)  # (B, 64, K), patches row-major
        tokens = torch.cat([self.extra_tokens.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = self.block(tokens)
        logits = self.head(tokens[:, self.extra + self.patch])
        return logits * torch.tensor([0.0, 1.0], device=x.device)  # class 0: a constant 0


def one_patch_image(patch: int, batch: int = 1) -> torch.Tensor:
    """(batch, 1, 16, 16, 16) zeros with patch ``patch`` of the 4x4x4 grid bright."""
    images = torch.zeros(batch, 1, 16, 16, 16)
    d, h, w = patch // 16, (patch // 4) % 4, patch % 4
    images[:, :, 4 * d : 4 * d + 4, 4 * h : 4 * h + 4, 4 * w : 4 * w + 4] = 1.0 + torch.rand(batch, 1, 4, 4, 4)
    return images
