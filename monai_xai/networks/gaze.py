"""The gaze-saliency network of Qiu's thesis, chapter 4 (arXiv 2403.16970): a dual-encoder multi-task network that
predicts where radiologists look on a chest X-ray (their gaze heatmap) and the diagnosis.

Three parts, trained in three stages (``bundles/gaze_saliency_cxr``):

1. ``densenet``: a DenseNet (DenseNet-201 by default: ``block_config=(6, 12, 48, 32)``), pre-trained with a triplet
   loss on its pooled features (:meth:`GazeSaliencyNet.embed`), then fine-tuned as a classifier
   (:meth:`GazeSaliencyNet.densenet_logits`). Its *encoder* is every layer before the last dense block
   (:meth:`GazeSaliencyNet.densenet_encoder`, stride 32).
2. ``unet``: a UNet whose encoder levels are residual squeeze-and-excitation blocks (MONAI's ``SEBlock``), with the
   DenseNet encoder's features concatenated to its bottleneck at the start of the decoder; it predicts the gaze map
   (:meth:`GazeSaliencyNet.gaze_logits`), trained with a KL divergence to the real gaze maps while the DenseNet is
   frozen.
3. ``classifier``: a small CNN on the DenseNet encoder's features concatenated with the UNet's last up-sampling
   features (pooled to the DenseNet's grid), trained with cross-entropy while both encoders are frozen. Its output is
   the network's diagnosis: ``forward(x)`` returns these logits, so CAM methods explain the full model
   (layer :data:`GAZE_CAM_LAYER`).

Every size is a parameter, so tests build a tiny version (e.g. ``densenet_block_config=(1, 1, 1, 1)``).
No weights are downloaded: the DenseNet starts from random weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import SEBlock
from monai.networks.nets import DenseNet
from monai.networks.nets.basic_unet import UpCat
from torch import nn

__all__ = [
    "DENSENET201_BLOCKS",
    "GAZE_CAM_LAYER",
    "FusionClassifier",
    "GazeSaliencyNet",
    "ResSEUNet",
    "gaze_map",
]

DENSENET201_BLOCKS = (6, 12, 48, 32)
# the last convolution block of the fusion classifier: the diagnosis' CAM layer
GAZE_CAM_LAYER = "classifier.features"


def _densenet_encoder_channels(init_features: int, growth_rate: int, block_config: Sequence[int]) -> int:
    """Channels after the transition that follows the second-to-last dense block (MONAI's ``DenseNet`` layout)."""
    channels = init_features
    for layers in block_config[:-1]:
        channels += layers * growth_rate
        channels //= 2  # the transition after every block but the last halves the channels
    return channels


def _res_se_block(in_channels: int, out_channels: int, reduction: int) -> SEBlock:
    """Residual squeeze-and-excitation block: conv3x3-BN-ReLU, conv3x3-BN-ReLU, conv1x1-BN, SE, + (projected)
    input, ReLU; (B, in_channels, H, W) -> (B, out_channels, H, W)."""
    conv = {"kernel_size": 3, "norm": "batch", "act": ("relu", {"inplace": False})}
    return SEBlock(
        spatial_dims=2,
        in_channels=in_channels,
        n_chns_1=out_channels,
        n_chns_2=out_channels,
        n_chns_3=out_channels,
        conv_param_1=conv,
        conv_param_2=conv,
        conv_param_3={"kernel_size": 1, "norm": "batch", "act": None},
        r=min(reduction, out_channels),
    )


class ResSEUNet(nn.Module):
    """UNet with residual squeeze-and-excitation encoder levels and an extra input at the start of its decoder.

    Level 0 runs at the input resolution; each further level max-pools by 2 first, so the bottleneck has stride
    ``2 ** (len(channels) - 1)`` (32 for six levels, the DenseNet encoder's stride). The extra features are resized
    to the bottleneck's grid when they differ (odd input sizes), concatenated to it and mixed by a 1x1 convolution
    before the first up-sampling.

    Args:
        in_channels: image channels.
        channels: channels per level, e.g. ``(16, 32, 64, 128, 256, 512)``.
        extra_channels: channels of the features fed at the start of the decoder (0: none).
        se_reduction: squeeze-and-excitation reduction ratio.
    """

    def __init__(
        self, in_channels: int, channels: Sequence[int], extra_channels: int = 0, se_reduction: int = 16
    ) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"ResSEUNet needs at least two levels, got channels={tuple(channels)}.")
        self.channels = tuple(int(c) for c in channels)
        inputs = (in_channels, *self.channels[:-1])
        self.encoder = nn.ModuleList(_res_se_block(i, o, se_reduction) for i, o in zip(inputs, self.channels))
        self.extra_channels = extra_channels
        bottleneck = self.channels[-1]
        self.fusion = nn.Sequential(
            nn.Conv2d(bottleneck + extra_channels, bottleneck, kernel_size=1, bias=False),
            nn.BatchNorm2d(bottleneck),
            nn.ReLU(),
        )
        act, norm = ("relu", {"inplace": False}), ("batch", {"affine": True})
        self.decoder = nn.ModuleList(
            UpCat(2, self.channels[level + 1], self.channels[level], self.channels[level], act, norm, bias=False)
            for level in reversed(range(len(self.channels) - 1))
        )
        self.head = nn.Conv2d(self.channels[0], 1, kernel_size=1)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Gaze logits and the last up-sampling features.

        Args:
            x: (B, in_channels, H, W) image.
            extra: (B, extra_channels, h, w) features for the decoder's start (required when ``extra_channels``).

        Returns:
            ``(logits, features)``: (B, 1, H, W) gaze logits (a softmax over all pixels gives the gaze distribution)
            and (B, channels[0], H, W) output of the last up-sampling block.
        """
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(F.max_pool2d(x, 2) if level else x)
            skips.append(x)
        if self.extra_channels:
            if extra is None or extra.shape[1] != self.extra_channels:
                got = None if extra is None else tuple(extra.shape)
                raise ValueError(f"ResSEUNet needs extra features with {self.extra_channels} channels, got {got}.")
            if extra.shape[2:] != x.shape[2:]:
                extra = F.interpolate(extra, size=x.shape[2:], mode="bilinear", align_corners=False)
            x = torch.cat([x, extra], dim=1)
        x = self.fusion(x)
        for block, skip in zip(self.decoder, reversed(skips[:-1])):
            x = block(x, skip)
        return self.head(x), x


class FusionClassifier(nn.Module):
    """Small CNN on two feature maps: ``coarse`` (B, C1, h, w) and ``fine`` (B, C2, H, W), the latter average-pooled to
    (h, w); concatenated, two conv3x3-BN-ReLU (``features``, the CAM layer), global average pooling, dropout, linear.

    Returns (B, num_classes) logits.
    """

    def __init__(
        self, coarse_channels: int, fine_channels: int, num_classes: int, channels: int = 256, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(coarse_channels + fine_channels, channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes)
        )

    def forward(self, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        fine = F.adaptive_avg_pool2d(fine, coarse.shape[2:])
        return self.head(self.features(torch.cat([coarse, fine], dim=1)))


class GazeSaliencyNet(nn.Module):
    """Dual-encoder multi-task network: diagnosis (``forward``) and radiologists' gaze map (``gaze_logits``).

    Args:
        in_channels: image channels (1: grey radiographs in [0, 1]).
        num_classes: diagnoses (3: normal, heart failure, pneumonia).
        densenet_block_config: layers per dense block; ``(6, 12, 48, 32)`` is DenseNet-201 (at least two blocks).
        densenet_growth_rate, densenet_init_features, densenet_bn_size: as MONAI's ``DenseNet``.
        unet_channels: channels per UNet level; six levels give the bottleneck the DenseNet encoder's stride (32).
        se_reduction: squeeze-and-excitation reduction ratio of the UNet's encoder blocks.
        classifier_channels: width of the fusion classifier.
        dropout: dropout before the fusion classifier's linear layer.

    Shapes: input (B, in_channels, H, W) with H and W multiples of 32 for exact grids (640 x 512 in the study);
    ``forward`` -> (B, num_classes); ``gaze_logits`` -> (B, 1, H, W); ``embed`` -> (B, D) unit vectors.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 3,
        densenet_block_config: Sequence[int] = DENSENET201_BLOCKS,
        densenet_growth_rate: int = 32,
        densenet_init_features: int = 64,
        densenet_bn_size: int = 4,
        unet_channels: Sequence[int] = (16, 32, 64, 128, 256, 512),
        se_reduction: int = 16,
        classifier_channels: int = 256,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        block_config = tuple(int(n) for n in densenet_block_config)
        if len(block_config) < 2:
            raise ValueError(
                f"densenet_block_config needs at least two dense blocks (the encoder is every layer before the last "
                f"one), got {block_config}; DenseNet-201 is {DENSENET201_BLOCKS}."
            )
        self.densenet = DenseNet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=num_classes,
            init_features=densenet_init_features,
            growth_rate=densenet_growth_rate,
            block_config=block_config,
            bn_size=densenet_bn_size,
        )
        names = [name for name, _ in self.densenet.features.named_children()]
        self._encoder_names = names[: names.index(f"denseblock{len(block_config)}")]
        self.encoder_channels = _densenet_encoder_channels(densenet_init_features, densenet_growth_rate, block_config)
        self.unet = ResSEUNet(
            in_channels, unet_channels, extra_channels=self.encoder_channels, se_reduction=se_reduction
        )
        self.classifier = FusionClassifier(
            self.encoder_channels, self.unet.channels[0], num_classes, classifier_channels, dropout
        )

    def densenet_encoder(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, encoder_channels, H/32, W/32): the DenseNet up to its last dense block."""
        for name in self._encoder_names:
            x = getattr(self.densenet.features, name)(x)
        return x

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, D) L2-normalised, globally pooled DenseNet features (the triplet loss's
        embedding, D = the DenseNet's final channels)."""
        features = F.relu(self.densenet.features(x))
        return F.normalize(F.adaptive_avg_pool2d(features, 1).flatten(1), dim=1)

    def densenet_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, num_classes): the DenseNet's own classifier (stage 1)."""
        return self.densenet(x)

    def gaze_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, 1, H, W) gaze logits; ``softmax`` over the H * W pixels is the predicted
        gaze distribution (:func:`gaze_map`)."""
        return self.unet(x, self.densenet_encoder(x))[0]

    def diagnose_and_gaze(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both tasks from one pass: (B, num_classes) diagnosis logits and (B, 1, H, W) gaze logits."""
        encoded = self.densenet_encoder(x)
        gaze, upsampled = self.unet(x, encoded)
        return self.classifier(encoded, upsampled), gaze

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> (B, num_classes) diagnosis logits of the fusion classifier (stage 3)."""
        return self.diagnose_and_gaze(x)[0]


def gaze_map(logits: torch.Tensor) -> torch.Tensor:
    """Gaze logits (B, 1, *spatial) -> predicted gaze map (B, 1, *spatial) in [0, 1]: the softmax over all pixels
    divided by its maximum (a distribution up to scale; KL, CC, SIM and NSS do not depend on the scale)."""
    probabilities = torch.softmax(logits.flatten(1), dim=1)
    probabilities = probabilities / probabilities.amax(dim=1, keepdim=True)
    return probabilities.reshape(logits.shape)
