"""CAMs of volumes larger than a network's ROI: explained window by window and blended with MONAI's sliding window.

``monai.inferers.sliding_window_inference`` does the tiling, padding and blending (``"gaussian"`` or ``"constant"``
weights) of the dict of maps that each batch of windows returns, so memory for the explanation itself is bounded by
``roi_size x sw_batch_size``; only the blended (B, 1, *spatial) maps live at full size. A pixel set given as a tensor,
a voxel or a box is cropped window by window alongside the images (MONAI's ``condition`` input, padded like the
images), and windows whose crop of it is empty are not run at all: their maps are zero by definition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.inferers import sliding_window_inference

from monai_xai.cams.targets import PixelSetSpec, index_pixel_set, tensor_pixel_set
from monai_xai.enums import PixelSet, as_choice

__all__ = ["WHOLE_VOLUME_PIXEL_SETS", "sliding_window_cam"]

WindowPixelSet = torch.Tensor | PixelSet | None
# named pixel sets that only the whole prediction defines (a window would find its own component or peak)
WHOLE_VOLUME_PIXEL_SETS = (PixelSet.LARGEST_COMPONENT, PixelSet.PEAK)
ExplainWindow = Callable[[torch.Tensor, WindowPixelSet], dict[str, torch.Tensor]]


class _WindowPredictor:
    """The ``predictor`` for ``sliding_window_inference``: explains a batch of windows, skipping windows whose crop of
    the pixel set is empty.

    ``sliding_window_inference`` needs the same dict keys from every call, so the method names (and each map's
    channels: one for a CAM, one per input channel for an input attribution) are learnt from the first call that runs
    ``explain_window``; until then a batch of empty windows is explained like any other.
    """

    def __init__(self, explain_window: ExplainWindow, pixel_set: PixelSet | None) -> None:
        self.explain_window = explain_window
        self.pixel_set = pixel_set
        self.channels: dict[str, int] | None = None

    def _explain(self, window_images: torch.Tensor, window_pixel_set: WindowPixelSet) -> dict[str, torch.Tensor]:
        maps = self.explain_window(window_images, window_pixel_set)
        self.channels = {name: maps[name].shape[1] for name in sorted(maps)}
        return maps

    def __call__(self, window_images: torch.Tensor, condition: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if condition is None:
            return self._explain(window_images, self.pixel_set)
        has_pixels = condition.flatten(1).amax(dim=1) > 0
        if has_pixels.all() or (self.channels is None and not has_pixels.any()):
            return self._explain(window_images, condition)
        windows, roi = window_images.shape[0], window_images.shape[2:]
        if not has_pixels.any():
            # one tensor per method: sliding_window_inference scales the returned maps in place
            return {name: window_images.new_zeros(windows, channels, *roi) for name, channels in self.channels.items()}
        maps = self._explain(window_images[has_pixels], condition[has_pixels])
        return {
            name: value.new_zeros(windows, *value.shape[1:]).index_put((has_pixels,), value)
            for name, value in maps.items()
        }


def _window_pixel_set_source(
    images: torch.Tensor, pixel_set: PixelSetSpec
) -> tuple[PixelSet | None, torch.Tensor | None]:
    """Split ``pixel_set`` into what every window receives as is (``None``/``"pred"``/``"image"``) and a
    (B, 1, *spatial) pixel set to crop per window (a tensor, or a voxel / box given in whole-volume coordinates)."""
    if pixel_set is None:
        return None, None
    if isinstance(pixel_set, str):
        name = as_choice(PixelSet, pixel_set, "pixel_set")
        if name in WHOLE_VOLUME_PIXEL_SETS:
            raise ValueError(
                f"pixel_set={name.value!r} is a property of the whole volume, which a sliding window never sees at "
                "once; compute it first (e.g. resolve_pixel_set on a sliding-window prediction) and pass it as a "
                "(B|1, 1, *spatial) tensor (XAIInferer does so)."
            )
        return name, None
    if isinstance(pixel_set, torch.Tensor):
        # one channel, or one per class explained together (checked against the classes by each window's target)
        num_sets = pixel_set.shape[1] if pixel_set.ndim > 1 else 1
        return None, tensor_pixel_set(pixel_set, images, num_sets).to(images.dtype)
    if isinstance(pixel_set, tuple | list):
        return None, index_pixel_set(pixel_set, images).to(images.dtype)
    raise TypeError(
        f"pixel_set must be None, 'pred', a tensor, or a tuple of ints/slices, got {type(pixel_set).__name__}."
    )


def sliding_window_cam(
    explain_window: ExplainWindow,
    images: torch.Tensor,
    pixel_set: PixelSetSpec,
    roi_size: Sequence[int] | int,
    sw_batch_size: int = 1,
    overlap: float = 0.25,
    mode: str = "gaussian",
    sw_device: torch.device | str | None = None,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Blend per-window CAMs of a batch of large images into whole-image maps.

    Args:
        explain_window: ``explain_window(window_images (n, C, *roi), window_pixel_set) -> {method: (n, 1, *roi)}``,
            the non-negative, NOT normalised maps of a batch of windows (e.g. ``CAMExplainer._explain_window``), or
            signed (n, C, *roi) input attributions (``AttributionExplainer``), blended the same way.
            ``window_pixel_set`` is the window's crop (n, 1, *roi) of a tensor/voxel/box pixel set, else ``None``,
            ``"pred"`` or ``"image"`` unchanged (each window's predicted region, or all of it).
        images: (B, C, *spatial) images, 2D or 3D.
        pixel_set: ``None`` or ``"pred"`` (per window), ``"image"`` (every voxel), a (B or 1, 1 or K, *spatial)
            tensor with values in [0, 1] (K: one set per class explained together), a tuple of ints (one voxel) or
            of slices (a box) in whole-image coordinates. ``"largest_component"`` and ``"peak"`` need the whole
            prediction and are refused.
        roi_size: window size, one int per spatial dim (or one int for all); non-positive entries take the image size.
        sw_batch_size: windows per ``explain_window`` call (default 1); memory grows with ``sw_batch_size x roi``.
        overlap: overlap of neighbouring windows in [0, 1) (default 0.25).
        mode: blending weights of overlapping windows, ``"gaussian"`` (default, less weight near window borders, where
            features see the zero padding instead of the neighbouring tissue) or ``"constant"``.
        sw_device: device the windows are explained on (default: the images' device).
        device: device of the blended maps (default: the images' device), e.g. ``"cpu"`` for large volumes on a GPU.

    Returns:
        dict method -> (B, 1, *spatial) blended maps, non-negative and not normalised (input attributions: (B, C,
        *spatial), signed), in the images' dtype.

    Raises:
        ValueError: images not 4-D/5-D, ``"largest_component"``, ``"peak"`` or an unknown name, or a
            tensor/voxel/box pixel set that does not fit the images.
    """
    if not isinstance(images, torch.Tensor) or images.ndim not in (4, 5):
        raise ValueError(
            f"images must be a (B, C, H, W) or (B, C, D, H, W) tensor, got {getattr(images, 'shape', type(images))}."
        )
    per_window, cropped = _window_pixel_set_source(images, pixel_set)
    return sliding_window_inference(
        images,
        roi_size,
        sw_batch_size,
        _WindowPredictor(explain_window, per_window),
        overlap=overlap,
        mode=mode,
        sw_device=sw_device,
        device=device,
        condition=cropped,
    )
