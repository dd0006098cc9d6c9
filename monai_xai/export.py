"""A network exported with its explanation as a second output: one call of the exported model returns the prediction
and the class-activation map, for an inference server (TorchScript, ONNX).

The explanation is traced, not rewritten: :func:`explained_graph` runs the engine's own pieces (the
:class:`~monai_xai.cams.ActivationRecorder` hooks, the class / pixel-set targets of :mod:`monai_xai.cams.targets`, the
registered method formula, the engine's ReLU + upsampling + min-max normalisation) once under
``torch.fx.experimental.proxy_tensor.make_fx``, which records the forward pass, the backward pass down to the target
layer and the map as one graph of plain tensor operations. The backward operations are decomposed into forward ones
(a convolution's input gradient is a transposed convolution, batch norm's and softmax's are element-wise), so the
graph exports to TorchScript and to ONNX alike. Weight gradients are never computed.

The exported graph is specialised to the example's shape (batch size and spatial size): export one per input size.
Data-dependent Python control flow cannot be traced (make_fx refuses it rather than freezing the example's values),
which is why only the pixel sets ``"image"`` and ``"pred"`` are offered for segmenters.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.export import default_decompositions
from torch.fx import GraphModule
from torch.fx.experimental.proxy_tensor import make_fx

from monai_xai.cams.hooks import ActivationRecorder
from monai_xai.cams.layers import resolve_layers
from monai_xai.cams.layouts import resolve_layout
from monai_xai.cams.registry import get_method
from monai_xai.cams.targets import ClassTarget, SegmentationTarget, resolve_pixel_set
from monai_xai.enums import MethodFamily, PixelSet, Score, as_choice
from monai_xai.utils import normalize_per_sample, preserved_model_state

__all__ = ["PREDICTED", "explained_graph", "export_torchscript", "export_onnx"]

# the class input that asks a classifier's exported model for the map of its predicted class
PREDICTED = -1
# the pixel sets whose construction is plain tensor arithmetic (no connected components, no Python branches)
EXPORTABLE_PIXEL_SETS = (PixelSet.IMAGE, PixelSet.PRED)
_aten = torch.ops.aten


def _convolution_input_gradient(
    grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed, output_padding, groups, output_mask
):
    """``aten.convolution_backward`` for the input gradient only, as one forward convolution (exportable).

    The adjoint of a convolution is the transposed convolution with the same weights, and vice versa; the output
    padding restores the input's size where the stride dropped positions.
    """
    if output_mask[1] or output_mask[2]:
        return NotImplemented
    spatial = range(len(stride))
    zeros = [0 for _ in spatial]
    kernel = weight.shape[2:]
    padding_in = [dilation[d] * (kernel[d] - 1) - padding[d] for d in spatial]
    if transposed:
        grad_input = _aten.convolution(grad_output, weight, None, stride, padding, dilation, False, zeros, groups)
    elif all(step == 1 for step in stride) and groups == 1 and min(padding_in) >= 0:
        # a stride-1 transposed convolution is a plain one with flipped, in/out-swapped weights: the fast kernels of
        # most runtimes are for plain convolutions (CPU transposed 3D convolutions are several times slower)
        flipped = weight.flip(list(range(2, weight.ndim))).transpose(0, 1)
        grad_input = _aten.convolution(grad_output, flipped, None, stride, padding_in, dilation, False, zeros, groups)
    else:
        padding_out = [
            input.shape[2 + d]
            - ((grad_output.shape[2 + d] - 1) * stride[d] - 2 * padding[d] + dilation[d] * (kernel[d] - 1) + 1)
            for d in spatial
        ]
        grad_input = _aten.convolution(grad_output, weight, None, stride, padding, dilation, True, padding_out, groups)
    return grad_input, None, None


def _softmax(values, dim, half_to_float):
    """Softmax as element-wise operations and reductions: runtimes' softmax kernels are slow over a 5D tensor's
    channels (ONNX Runtime transposes it), where this is a handful of element-wise passes."""
    exponentials = (values - values.amax(dim, keepdim=True)).exp()
    return exponentials / exponentials.sum(dim, keepdim=True)


def _scatter_add(values, dim, index, source):
    """``scatter_add`` along ``dim`` as one-hot masks, one per scattered entry: how autograd spreads a class score's
    gradient back over the classes (a gather's gradient). Scatters are slow in runtimes, and a class score scatters
    one or a few entries per voxel. Other shapes keep the scatter."""
    same_elsewhere = all(index.shape[d] == values.shape[d] == source.shape[d] for d in range(values.ndim) if d != dim)
    if index.ndim != values.ndim or not same_elsewhere or index.shape[dim] > 8:
        return NotImplemented
    classes = torch.arange(values.shape[dim], device=values.device)
    classes = classes.reshape(*([1] * dim), -1, *([1] * (values.ndim - dim - 1)))
    result = values
    for entry in range(index.shape[dim]):
        result = result + (classes == index.narrow(dim, entry, 1)).to(source.dtype) * source.narrow(dim, entry, 1)
    return result


def _decompositions() -> dict:
    """PyTorch's decompositions of backward operations into forward ones, plus the convolution's input gradient,
    the class score's gradient (a scatter) and the softmax in the forms runtimes run fastest."""
    table = {op: fn for op, fn in default_decompositions().items() if "backward" in op.name()}
    table[_aten.convolution_backward.default] = _convolution_input_gradient
    table[_aten.scatter_add.default] = _scatter_add
    table[_aten._softmax.default] = _softmax
    return table


def explained_graph(
    network: nn.Module,
    example_images: torch.Tensor,
    target_layer: str,
    method: str = "hirescam",
    score: Score | str = Score.LOGIT,
    pixel_set: PixelSet | str | None = None,
) -> GraphModule:
    """The network with its explanation as one traced graph ``(images, class_idx) -> (outputs, map)``.

    Args:
        network: the trained network, returning (B, C) (classifier) or (B, C, *spatial) (segmenter) outputs. Its
            weights are frozen into the graph (copied as constants); its mode and flags are left as they were.
        example_images: (B, C_in, *spatial) float, an input of the shape the graph will take (the graph only accepts
            that shape).
        target_layer: the layer to explain, a dotted name from ``network.named_modules()`` (e.g.
            ``"class_layers.relu"``); one layer.
        method: a gradient-family method of :mod:`monai_xai.cams` with raw maps (``"hirescam"``, ``"gradcam"``, ...).
        score: ``"logit"`` or ``"probability"``, as :class:`~monai_xai.cams.CAMExplainer`'s ``score``.
        pixel_set: segmenters only: ``"image"`` (every voxel) or ``"pred"`` (the class's predicted region, default).

    Returns:
        an fx ``GraphModule``; calling it with ``images`` (B, C_in, *spatial) float and ``class_idx`` (B,) int64
        returns ``outputs``, the network's outputs (B, C[, *spatial]), and ``map`` (B, 1, *spatial) float32 in
        [0, 1]: the method's map of ``class_idx`` at input resolution, equal (up to float rounding) to
        ``CAMExplainer(network, target_layer, method, score)(images, class_idx, pixel_set)[method]``. For a
        classifier, ``class_idx`` = :data:`PREDICTED` (-1) explains each sample's predicted class (arg-max of the
        outputs). A segmenter needs a class >= 0, and a sample whose pixel set is empty gets an all-zero map.

    Raises:
        ValueError: a method outside the gradient family, several layers, a pixel set that cannot be traced or a
            pixel set for a classifier.
    """
    record = get_method(method)
    if record.family != MethodFamily.GRADIENT or not record.supports_raw:
        raise ValueError(
            f"method {method!r} cannot be exported: only gradient-family methods with raw maps are traced into the "
            "graph (e.g. 'hirescam', 'gradcam'); perturbation methods run many forward passes."
        )
    score = as_choice(Score, score, "score")
    layers = resolve_layers(network, target_layer)
    if len(layers) != 1:
        raise ValueError(f"export one target layer at a time, got {[name for name, _ in layers]}.")
    (layer_name, layer_module) = layers[0]
    with preserved_model_state(network), torch.no_grad():
        segmenter = network(example_images).ndim > 2
    if segmenter:
        pixel_set = as_choice(PixelSet, pixel_set or PixelSet.PRED, "pixel_set")
        if pixel_set not in EXPORTABLE_PIXEL_SETS:
            raise ValueError(
                f"pixel set {pixel_set.value!r} cannot be traced into an exported graph; use one of "
                f"{[name.value for name in EXPORTABLE_PIXEL_SETS]}."
            )
    elif pixel_set is not None:
        raise ValueError(f"pixel_set ({pixel_set!r}) is for segmenters; this network returns class scores (B, C).")

    def explain(images: torch.Tensor, class_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with preserved_model_state(network), ActivationRecorder(layers) as recorder:
            outputs = network(images)
            (activations,) = recorder.activations()
            layout = resolve_layout(layer_name, layer_module, activations, images, network)
            values = outputs.detach()  # the target reads values, never the graph
            if segmenter:
                target = SegmentationTarget(class_idx, resolve_pixel_set(values, class_idx, pixel_set), score)
            else:
                target = ClassTarget(torch.where(class_idx < 0, values.argmax(dim=1), class_idx), score)
            (grads,) = torch.autograd.grad(target(outputs).sum(), [activations])
            raw = record.function(layout.to_grid(activations.detach()).float(), layout.to_grid(grads).float())
        # the engine's post-processing of one layer's map (CAMExplainer): ReLU, upsample to the input, normalise
        mode = "bilinear" if images.ndim == 4 else "trilinear"
        upsampled = F.interpolate(raw.clamp_min(0), size=tuple(images.shape[2:]), mode=mode, align_corners=False)
        heat = normalize_per_sample(upsampled)
        if segmenter:
            heat = heat * (~target.empty).to(heat.dtype).reshape(-1, *([1] * (heat.ndim - 1)))
        return outputs.detach(), heat

    # any valid class: the traced graph holds no value of the example
    example_classes = torch.full((example_images.shape[0],), 0 if segmenter else PREDICTED, dtype=torch.long)
    graph = make_fx(explain, decomposition_table=_decompositions())(example_images.detach(), example_classes)
    return graph.eval()


class _FixedShape(nn.Module):
    """The traced graph behind a check of the one input shape it was traced with (a clear error instead of a
    failing reshape deep inside the graph)."""

    def __init__(self, traced: torch.jit.ScriptModule, shape: list[int]) -> None:
        super().__init__()
        self.traced = traced
        self.shape = shape

    def forward(self, images: torch.Tensor, class_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if list(images.shape) != self.shape:
            raise ValueError(
                f"this exported model takes images of shape {self.shape} (the shape it was exported with), got "
                f"{list(images.shape)}: resize or pad them as the bundle's preprocessing does, or export again."
            )
        return self.traced(images, class_idx)


def export_torchscript(graph: GraphModule, example_images: torch.Tensor, path: str | Path) -> Path:
    """Save :func:`explained_graph`'s graph as TorchScript: ``torch.jit.load(path)(images, class_idx)`` returns
    ``(outputs, map)`` as the graph does, and raises ValueError for images of another shape than the example's.

    Args:
        graph: from :func:`explained_graph`.
        example_images: (B, C_in, *spatial), the shape the graph was traced with.
        path: the ``.pt`` file to write.

    Returns:
        the path written.
    """
    classes = torch.zeros(example_images.shape[0], dtype=torch.long)  # a class of every network; no value is kept
    with torch.no_grad():
        traced = torch.jit.trace(graph, (example_images, classes), check_trace=False)
    scripted = torch.jit.script(_FixedShape(traced, list(example_images.shape)))
    path = Path(path)
    scripted.save(str(path))
    return path


def export_onnx(graph: GraphModule, example_images: torch.Tensor, path: str | Path) -> Path:
    """Save :func:`explained_graph`'s graph as ONNX, inputs ``image`` and ``class_idx``, outputs ``outputs`` and
    ``map`` (run with onnxruntime; needs the ``onnx`` and ``onnxscript`` packages).

    Args:
        graph: from :func:`explained_graph`.
        example_images: (B, C_in, *spatial), the shape the graph was traced with.
        path: the ``.onnx`` file to write.

    Returns:
        the path written.
    """
    classes = torch.zeros(example_images.shape[0], dtype=torch.long)  # a class of every network; no value is kept
    path = Path(path)
    torch.onnx.export(
        graph,
        (example_images, classes),
        str(path),
        dynamo=True,
        input_names=["image", "class_idx"],
        output_names=["outputs", "map"],
        verbose=False,
    )
    return path
