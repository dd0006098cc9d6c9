"""What a network returns, made into the one tensor of logits that every score of an explanation reads.

Networks nobody here wrote return more than a tensor of logits:

- **deep supervision** (nnU-Net's and HD-BET's decoders in training mode): a list or tuple of outputs, one per
  decoder level; ``xai_output_head`` names the one that is the prediction: ``"highest_resolution"`` (the output with
  the most voxels, the first such on ties) or its index;
- **probabilities** (a softmax inside ``forward``, as HD-BET's): the score must not pass them through a second softmax.
  They are turned into log-probabilities, ``log p``: the softmax of ``log p`` is ``p`` again, so the score
  ``"probability"`` explains exactly the network's probabilities, and the score ``"logit"`` explains ``log p``, the
  logits up to the per-voxel constant that the softmax removed (for one sigmoid channel, ``log(p / (1 - p))`` is the
  logit itself).

:class:`OutputHandling` records both choices; :class:`ScoredNetwork` applies them to every forward pass of a network
(the explanation's, the perturbation methods', the metrics' re-runs) without renaming its layers.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from monai_xai.enums import HIGHEST_RESOLUTION, NetworkOutput, as_choice

__all__ = [
    "OutputHead",
    "OutputHandling",
    "ScoredNetwork",
    "as_output_head",
    "is_probability_output",
    "probabilities_to_logits",
    "select_head",
    "scored_network",
]

logger = logging.getLogger(__name__)

# the output head setting: None (the network returns one tensor), "highest_resolution", or an index
OutputHead = str | int | None


def as_output_head(value: Any) -> OutputHead:
    """``xai_output_head`` checked: None, ``"highest_resolution"`` or a non-negative index.

    Raises:
        ValueError: any other value.
    """
    if value is None or value == HIGHEST_RESOLUTION:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ValueError(
        f"output_head (xai_output_head) must be null (the network returns one tensor), {HIGHEST_RESOLUTION!r} (of a "
        f"deep-supervision network's outputs, the one with the most voxels) or an output's index, got {value!r}."
    )


def select_head(outputs: Any, head: OutputHead) -> Any:
    """The prediction among a network's outputs.

    Args:
        outputs: what ``forward`` returned: a tensor, or a list/tuple of tensors (deep supervision).
        head: None (``outputs`` as they are), ``"highest_resolution"`` (the tensor with the most voxels, the first
            such), or an index.

    Raises:
        ValueError: a head for outputs that are not a list or tuple of tensors, or an index out of range.
    """
    if head is None or isinstance(outputs, torch.Tensor):
        return outputs
    if not isinstance(outputs, list | tuple) or not all(isinstance(item, torch.Tensor) for item in outputs):
        raise ValueError(
            f"xai_output_head {head!r} picks one of a list or tuple of output tensors, but the network returned "
            f"{type(outputs).__name__}."
        )
    if head == HIGHEST_RESOLUTION:
        sizes = [math.prod(item.shape[2:]) for item in outputs]
        return outputs[sizes.index(max(sizes))]
    if head >= len(outputs):
        raise ValueError(f"xai_output_head {head} is out of range: the network returned {len(outputs)} outputs.")
    return outputs[head]


def is_probability_output(outputs: torch.Tensor, atol: float = 1e-3) -> bool:
    """Whether (B, C, ...) outputs with C >= 2 are a distribution over channels at every position (>= 0, summing to
    1 within ``atol``); one channel is never taken for probabilities (a logit may lie in [0, 1] too)."""
    if outputs.ndim < 2 or outputs.shape[1] < 2 or not outputs.is_floating_point():
        return False
    values = outputs.detach()
    sums = values.sum(dim=1)
    return bool((values >= 0).all() and torch.allclose(sums, torch.ones_like(sums), atol=atol))


def probabilities_to_logits(probabilities: torch.Tensor) -> torch.Tensor:
    """(B, C, ...) probabilities as logits whose softmax (sigmoid for C == 1) gives them back: ``log p`` (``log(p / (1
    - p))`` for one channel), clamped away from 0 and 1 so that their gradients stay finite."""
    tiny = torch.finfo(probabilities.dtype).tiny
    if probabilities.shape[1] == 1:
        p = probabilities.clamp(tiny, 1 - torch.finfo(probabilities.dtype).eps)
        return torch.log(p) - torch.log1p(-p)
    return torch.log(probabilities.clamp_min(tiny))


@dataclass(frozen=True)
class OutputHandling:
    """How a network's outputs become the explained logits (see the module docstring).

    Attributes:
        head: which output is the prediction (:func:`select_head`); None: the network returns one tensor.
        probabilities: the network returns probabilities (turned into log-probabilities).
    """

    head: OutputHead = None
    probabilities: bool = False

    @property
    def changes_outputs(self) -> bool:
        return self.head is not None or self.probabilities

    def __call__(self, outputs: Any) -> Any:
        """The prediction among ``outputs`` as logits."""
        outputs = select_head(outputs, self.head)
        if self.probabilities and isinstance(outputs, torch.Tensor):
            return probabilities_to_logits(outputs)
        return outputs

    @classmethod
    def resolve(cls, prediction: Any, head: OutputHead, network_output: NetworkOutput | str) -> OutputHandling:
        """The handling of a network whose prediction is ``prediction`` (raw, as ``forward`` returned it): its head
        chosen, ``NetworkOutput.AUTO`` decided by :func:`is_probability_output`."""
        network_output = as_choice(NetworkOutput, network_output, "network_output (xai_network_output)")
        if network_output == NetworkOutput.AUTO:
            chosen = select_head(prediction, head)
            probabilities = isinstance(chosen, torch.Tensor) and is_probability_output(chosen)
        else:
            probabilities = network_output == NetworkOutput.PROBABILITIES
        return cls(head, probabilities)


class ScoredNetwork(nn.Module):
    """``network`` whose forward returns ``handling(network(x))``: the prediction head, as logits.

    The network is held, not registered as a submodule, so ``named_modules()``, ``parameters()``, ``state_dict()``
    and ``train()`` are the network's own: layer names stay the network's (``"layer4"``, not ``"network.layer4"``),
    and a fold's weights load into it (:class:`~monai_xai.cams.tiles.TiledNetwork`).

    Args:
        network: the network.
        handling: how its outputs become logits.
    """

    def __init__(self, network: nn.Module, handling: OutputHandling) -> None:
        super().__init__()
        object.__setattr__(self, "network", network)
        self.handling = handling

    def forward(self, images: torch.Tensor) -> Any:
        return self.handling(self.network(images))

    def named_modules(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        return self.network.named_modules(*args, **kwargs)

    def modules(self):  # type: ignore[override]
        return self.network.modules()

    def children(self):  # type: ignore[override]
        return self.network.children()

    def named_parameters(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        return self.network.named_parameters(*args, **kwargs)

    def parameters(self, recurse: bool = True):  # type: ignore[override]
        return self.network.parameters(recurse)

    def state_dict(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        return self.network.state_dict(*args, **kwargs)

    def load_state_dict(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        return self.network.load_state_dict(*args, **kwargs)

    def train(self, mode: bool = True) -> ScoredNetwork:
        self.network.train(mode)
        return self

    @property
    def training(self) -> bool:  # type: ignore[override]
        return self.network.training

    @training.setter
    def training(self, mode: bool) -> None:
        # nn.Module.__init__ sets it before the network is held
        if "network" in self.__dict__:
            self.network.training = mode


def scored_network(
    network: nn.Module, output_head: OutputHead = None, network_output: NetworkOutput | str = NetworkOutput.LOGITS
) -> nn.Module:
    """``network`` as the metrics that re-run it must score it (the config overlays' ``xai_scored_network``): a
    :class:`ScoredNetwork` when it returns several outputs or probabilities, else the network itself.

    ``NetworkOutput.AUTO`` is decided on the first forward pass (logged).
    """
    head = as_output_head(output_head)
    network_output = as_choice(NetworkOutput, network_output, "network_output (xai_network_output)")
    if head is None and network_output == NetworkOutput.LOGITS:
        return network
    return _LazyScoredNetwork(network, head, network_output)


class _LazyScoredNetwork(ScoredNetwork):
    """A :class:`ScoredNetwork` whose handling is resolved on its first forward pass."""

    def __init__(self, network: nn.Module, head: OutputHead, network_output: NetworkOutput) -> None:
        super().__init__(network, OutputHandling(head))
        self._network_output = network_output
        self._resolved = network_output != NetworkOutput.AUTO
        if self._resolved:
            self.handling = OutputHandling(head, network_output == NetworkOutput.PROBABILITIES)

    def forward(self, images: torch.Tensor) -> Any:
        outputs = self.network(images)
        if not self._resolved:
            self.handling = OutputHandling.resolve(outputs, self.handling.head, self._network_output)
            self._resolved = True
            if self.handling.probabilities:
                logger.info("xai: the network returns probabilities; scores take them as they are")
        return self.handling(outputs)
