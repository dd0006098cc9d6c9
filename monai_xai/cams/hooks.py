"""Hooks that let the CAM engine record a network's activations and leave it exactly as it was found.

``ActivationRecorder`` records target layers' outputs on the forward pass,
keeping them in the autograd graph even when neither the inputs nor the parameters require grad and even inside
``torch.no_grad()``, and removes its hooks on exit, also on exceptions. Modes and ``requires_grad`` flags are restored
by ``monai_xai.utils.preserved_model_state``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from types import TracebackType

import torch
from torch import nn

__all__ = ["ActivationRecorder"]


class ActivationRecorder:
    """Record the outputs of ``layers`` during forward passes run inside the ``with`` block.

    Each recorded output is a tensor through which gradients of the model's output flow back: when the layer's output
    does not require grad (frozen parameters, inputs without grad) a differentiable leaf copy is recorded and fed on to
    the rest of the network. Downstream modules receive a clone, so in-place operations after the layer (e.g.
    ``ReLU(inplace=True)``) cannot alter the recorded activations. Gradient recording is enabled inside the block even
    when the caller is in ``torch.no_grad()`` or ``torch.inference_mode()``.

    Args:
        layers: ``(name, module)`` pairs, e.g. from :func:`monai_xai.cams.layers.resolve_layers`.

    Example::

        with preserved_model_state(model), ActivationRecorder(resolve_layers(model, "layer4")) as recorder:
            logits = model(images)
            (features,) = recorder.activations()  # (B, K, *spatial), differentiable w.r.t. logits
    """

    def __init__(self, layers: Sequence[tuple[str, nn.Module]]) -> None:
        self.layers = list(layers)
        self._recorded: dict[int, torch.Tensor] = {}
        self._stack = ExitStack()

    def __enter__(self) -> ActivationRecorder:
        self._recorded.clear()
        self._stack.enter_context(torch.inference_mode(False))
        self._stack.enter_context(torch.enable_grad())
        try:
            for position, (name, module) in enumerate(self.layers):
                handle = module.register_forward_hook(self._make_hook(position, name))
                self._stack.callback(handle.remove)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stack.close()

    def _make_hook(self, position: int, name: str):
        def record(module: nn.Module, inputs: tuple, output: object) -> torch.Tensor:
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"target layer {name!r} returns {type(output).__name__}, not a tensor; choose a layer whose output "
                    "is a (B, K, *spatial) feature tensor (e.g. the convolution or block inside it)."
                )
            if position in self._recorded:
                raise ValueError(
                    f"target layer {name!r} ran more than once in one forward pass (a shared module); its activations "
                    "are ambiguous: choose a layer that runs once per forward pass."
                )
            recorded = output if output.requires_grad else output.detach().requires_grad_(True)
            self._recorded[position] = recorded
            return recorded.clone()

        return record

    def clear(self) -> None:
        """Forget recorded activations, e.g. before another forward pass in the same ``with`` block."""
        self._recorded.clear()

    def activations(self) -> list[torch.Tensor]:
        """The recorded outputs, one per layer in the order given.

        Raises:
            ValueError: when a layer did not run in the forward pass (it is not on the path from input to output).
        """
        missing = [name for position, (name, _) in enumerate(self.layers) if position not in self._recorded]
        if missing:
            raise ValueError(
                f"target layer(s) {missing} did not run in the forward pass, so they have no activations; choose "
                "layers that the model's forward() calls (print(model) lists them; unused or dead branches never run)."
            )
        return [self._recorded[position] for position in range(len(self.layers))]
