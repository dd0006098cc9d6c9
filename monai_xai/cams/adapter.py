"""Any pytorch-grad-cam method by name (``"grad-cam:FinerCAM"``, ``"grad-cam:KPCA_CAM"``, ...), driven by our targets.

The methods implemented natively here are faster and N-D; this adapter opens the rest of pytorch-grad-cam's catalogue
(KPCA-CAM, FEM, ShapleyCAM, FinerCAM, RefineCAM, SESS, ...) with the same per-sample targets, and leaves the model as it
was found: pytorch-grad-cam calls ``model.eval()`` and ``model.zero_grad()`` and never restores them, so modes,
``requires_grad`` flags, parameter gradients and hooks are restored here, also when the method raises. Those methods
compute in numpy on the CPU and some are 2D only (e.g. ScoreCAM, FullGrad, SESS); their limits apply.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pytorch_grad_cam
import torch
from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients
from torch import nn

from monai_xai.cams.targets import ClassTarget, SegmentationTarget
from monai_xai.utils import preserved_model_state

__all__ = ["ADAPTER_PREFIX", "grad_cam_method", "grad_cam_class", "available_grad_cam_methods"]

ADAPTER_PREFIX = "grad-cam:"


def available_grad_cam_methods() -> list[str]:
    """Names of the CAM classes exported by ``pytorch_grad_cam`` (those built from ``model`` and ``target_layers``)."""
    names = []
    for name, obj in vars(pytorch_grad_cam).items():
        if inspect.isclass(obj) and hasattr(obj, "forward"):
            parameters = inspect.signature(obj).parameters
            if "model" in parameters and "target_layers" in parameters:
                names.append(name)
    return sorted(names)


def grad_cam_class(method: str) -> type:
    """The ``pytorch_grad_cam`` class of ``"grad-cam:<Class>"`` (or ``"<Class>"``).

    Raises:
        ValueError: a class pytorch-grad-cam does not export; the message lists close matches and the available ones.
    """
    class_name = method.removeprefix(ADAPTER_PREFIX)
    available = available_grad_cam_methods()
    if class_name not in available:
        close = difflib.get_close_matches(class_name, available, n=3, cutoff=0.5)
        raise ValueError(
            f"unknown pytorch-grad-cam method {class_name!r}{f' (did you mean {close}?)' if close else ''}; "
            f"available: {[ADAPTER_PREFIX + name for name in available]}."
        )
    return getattr(pytorch_grad_cam, class_name)


class _SampleTarget:
    """A pytorch-grad-cam target (``target(output)``) for one sample, computed by our ``target(outputs, sample_ids)``.

    pytorch-grad-cam passes one output row (C, *spatial) to most targets, but a batch (N, C, *spatial) of copies of the
    sample in some methods (e.g. SESS's patch scores); both are handled.
    """

    def __init__(self, target: Callable[..., torch.Tensor], sample_id: int, row_ndim: int) -> None:
        self.target = target
        self.sample_id = sample_id
        self.row_ndim = row_ndim

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        if output.ndim == self.row_ndim:
            return self.target(output[None], torch.tensor([self.sample_id], device=output.device))[0]
        sample_ids = torch.full((output.shape[0],), self.sample_id, dtype=torch.long, device=output.device)
        return self.target(output, sample_ids)


def _release_hooks(cam: object) -> None:
    """Remove the hooks of every ``ActivationsAndGradients`` held by a CAM object or its nested base CAMs."""
    for value in vars(cam).values():
        for item in value if isinstance(value, list | tuple) else (value,):
            if isinstance(item, ActivationsAndGradients):
                item.release()
            elif type(item).__module__.startswith("pytorch_grad_cam") and hasattr(item, "__dict__"):
                _release_hooks(item)


@contextmanager
def _preserved_parameter_grads(model: nn.Module) -> Iterator[None]:
    """Restore every parameter's ``.grad`` (pytorch-grad-cam zeroes and overwrites them in its backward pass)."""
    saved = [(param, param.grad) for param in model.parameters()]
    try:
        yield
    finally:
        for param, grad in saved:
            param.grad = grad


def _run(
    cam_class: type,
    model: nn.Module,
    images: torch.Tensor,
    layers: list[nn.Module],
    targets: list,
    reshape: Callable | None,
) -> np.ndarray:
    cam = cam_class(model=model, target_layers=layers, reshape_transform=reshape)
    try:
        return cam(images, targets)
    finally:
        _release_hooks(cam)


def _finer_cam(
    model: nn.Module, images: torch.Tensor, layers: list[nn.Module], target: object, reshape: Callable | None
) -> np.ndarray:
    """FinerCAM defines its own target (the class contrasted with its most similar classes), one class per call."""
    if not isinstance(target, ClassTarget):
        raise ValueError(
            "grad-cam:FinerCAM contrasts a classifier's class logits with the most similar classes; it is not defined "
            "for segmentation targets. Use another method, e.g. 'hirescam'."
        )
    class_idx = target.class_idx.to(images.device)
    maps = np.zeros((images.shape[0], *images.shape[2:]), dtype=np.float32)
    for class_value in class_idx.unique().tolist():
        rows = (class_idx == class_value).nonzero()[:, 0]
        cam = pytorch_grad_cam.FinerCAM(model=model, target_layers=layers, reshape_transform=reshape)
        try:
            maps[rows.cpu().numpy()] = cam(images[rows], targets=None, target_idx=class_value)
        finally:
            _release_hooks(cam)
    return maps


def grad_cam_method(
    name: str,
    model: nn.Module,
    images: torch.Tensor,
    layers: Sequence[nn.Module],
    target: Callable[..., torch.Tensor],
    reshape: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run the pytorch-grad-cam method ``name`` with our per-sample ``target``.

    Args:
        name: ``"grad-cam:<Class>"`` (or just ``"<Class>"``), a class exported by ``pytorch_grad_cam``, e.g.
            ``"grad-cam:KPCA_CAM"``; see :func:`available_grad_cam_methods`.
        model: the network; its modes, ``requires_grad`` flags, parameter gradients and hooks are restored afterwards.
        images: (B, C, *spatial) inputs on the model's device.
        layers: target layers (modules of ``model``); several layers are combined by pytorch-grad-cam's own rule.
        target: ``target(outputs, sample_ids) -> (N,)``, e.g. from :func:`monai_xai.cams.targets.build_target`.
            FinerCAM instead uses the target's classes (``ClassTarget`` only) to build its contrastive target.
        reshape: pytorch-grad-cam's ``reshape_transform`` (a transformer layer's tokens -> (B, K, *grid)), or None.

    Returns:
        (B, 1, *spatial) float32 maps at input resolution, each normalised to [0, 1] by pytorch-grad-cam, on the
        images' device.

    Raises:
        ValueError: unknown class name (the message lists the available ones), or FinerCAM for a segmentation target.
    """
    cam_class = grad_cam_class(name)
    row_ndim = target.pixel_set.ndim - 1 if isinstance(target, SegmentationTarget) else 1
    targets = [_SampleTarget(target, sample_id, row_ndim) for sample_id in range(images.shape[0])]
    # Inputs that require grad keep a graph for the backward pass even when every parameter is frozen.
    inputs = images.detach().clone().requires_grad_(True)
    with (
        preserved_model_state(model),
        _preserved_parameter_grads(model),
        torch.inference_mode(False),
        torch.enable_grad(),
    ):
        if cam_class is pytorch_grad_cam.FinerCAM:
            maps = _finer_cam(model, inputs, list(layers), target, reshape)
        else:
            maps = _run(cam_class, model, inputs, list(layers), targets, reshape)
    maps = torch.as_tensor(np.asarray(maps, dtype=np.float32), device=images.device)[:, None]
    if tuple(maps.shape[2:]) != tuple(images.shape[2:]):
        raise ValueError(
            f"{name} returned maps of spatial shape {tuple(maps.shape[2:])} for images of shape "
            f"{tuple(images.shape[2:])}; this pytorch-grad-cam method does not support this input (e.g. 3D)."
        )
    return maps
