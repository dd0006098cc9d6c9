"""The options of an explain request (method, class, pixel set, score, bins) read from MONAI Label request params:
an :class:`~monai_xai.explanation.ExplainRequest` and how its map is returned.

MONAI Label merges a model's ``config`` (as listed by ``/info``) under the request's params, and a config entry that is
a list means "choose one, the first is the default" (3D Slicer shows it as a combo box and sends the chosen item). So
every option here accepts either a plain value or such a list, whose first item is taken.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from monai_xai.cams import ClassSet, get_method
from monai_xai.cams.adapter import ADAPTER_PREFIX
from monai_xai.cams.targets import FOREGROUND
from monai_xai.enums import PixelSet, ResultVolume, Score
from monai_xai.explanation import ExplainRequest
from monai_xai.label.heatmap_io import heat_bins

__all__ = [
    "ExplainOptions",
    "InvalidExplainRequest",
    "RESULT_VOLUMES",
    "BINNED_VOLUMES",
    "PREDICTED",
    "parse_explain_options",
]

PREDICTED = "predicted"
# the result volumes a request may ask for (:class:`~monai_xai.enums.ResultVolume`), the first is the default
RESULT_VOLUMES = tuple(ResultVolume)
# the result volumes that hold heat bins
BINNED_VOLUMES = (ResultVolume.BINS, ResultVolume.SEGMENTS)


class InvalidExplainRequest(ValueError):
    """A request asks for something the explain task does not offer (unknown method, class out of range, ...)."""


@dataclass(frozen=True)
class ExplainOptions:
    """What one explain request asks for: what to explain, and how to return it.

    Attributes:
        request: the explanation (one method at one layer; the class, pixel set and score); the task adds the
            bundle's sliding window when it runs it.
        n_bins: number of heat bins of the label-map result, 1 to 255.
        min_heat: heat below this is left unlabelled in the label-map result, in [0, 1].
        result_volume: ``"bins"`` (uint8 label map), ``"segments"`` (the bins as a ``.seg.nrrd`` with named, coloured
            segments) or ``"heatmap"`` (float32 in [0, 1]).
    """

    request: ExplainRequest
    n_bins: int
    min_heat: float
    result_volume: ResultVolume

    @property
    def method(self) -> str:
        """The one method of the request."""
        return self.request.methods[0]

    @property
    def target_layer(self) -> str:
        """The one layer of the request."""
        return str(self.request.target_layers)


def _chosen(params: Mapping[str, object], key: str, default: object) -> object:
    value = params.get(key, default)
    if isinstance(value, (list, tuple)):
        if not value:
            raise InvalidExplainRequest(f"{key!r} is an empty list; send one value.")
        return value[0]
    return value


def _choice(params: Mapping[str, object], key: str, allowed: Sequence[str]) -> str:
    value = _chosen(params, key, allowed[0])
    if not isinstance(value, str) or value not in allowed:
        raise InvalidExplainRequest(f"unknown {key} {value!r}; choose one of {[str(item) for item in allowed]}.")
    return value


def _method(params: Mapping[str, object], methods: Sequence[str]) -> str:
    """An offered method, or any pytorch-grad-cam class as ``"grad-cam:<Class>"`` (as the overlays and the Python API
    take them)."""
    value = _chosen(params, "method", methods[0])
    if isinstance(value, str) and value.startswith(ADAPTER_PREFIX) and value not in methods:
        try:
            get_method(value)
        except ValueError as error:
            raise InvalidExplainRequest(str(error)) from None
        return value
    return _choice(params, "method", methods)


def _one_class(value: object, class_names: Sequence[str], choices: Sequence[str]) -> int:
    """A class given by name (case-insensitive) or by index (int or digit string)."""
    lowered = [name.lower() for name in class_names]
    if isinstance(value, str) and value.strip().lower() in lowered:
        return lowered.index(value.strip().lower())
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(class_names):
            return value
        raise InvalidExplainRequest(
            f"class {value} is out of range: the network has {len(class_names)} classes "
            f"(0..{len(class_names) - 1}: {list(class_names)})."
        )
    raise InvalidExplainRequest(f"unknown class {value!r}; choose one of {list(choices)} or a class index.")


def _class_choice(value: object, class_names: Sequence[str], segmentation: bool) -> int | ClassSet | None:
    """A class given by name or index, ``"predicted"`` (classifiers), or several classes of a segmenter explained
    together: ``"foreground"`` or names / indices joined by ``+`` (``"kidney+tumour"``, ``"1+2"``)."""
    choices = [*([] if segmentation else [PREDICTED]), *class_names]
    text = value.strip().lower() if isinstance(value, str) else None
    if text == PREDICTED and not segmentation:
        return None
    if segmentation and text == FOREGROUND:
        return ClassSet()
    if segmentation and text is not None and "+" in text:
        classes = tuple(_one_class(part, class_names, choices) for part in value.split("+"))
        if len(set(classes)) != len(classes):
            raise InvalidExplainRequest(f"class {value!r} names a class twice; name each class once.")
        return ClassSet(classes)
    return _one_class(value, class_names, choices)


def parse_explain_options(
    params: Mapping[str, object],
    methods: Sequence[str],
    target_layers: Sequence[str],
    class_names: Sequence[str],
    segmentation: bool,
    default_class: str | None = None,
    default_bins: int = 10,
    default_min_heat: float = 0.1,
) -> ExplainOptions:
    """Validate and read the explain options of a request.

    Args:
        params: request params: ``method``, ``target_layer``, ``class``, ``pixel_set`` (segmentation), ``score``,
            ``bins``, ``min_heat``, ``result_volume``; each a value or a list whose first item is taken; missing ones
            default.
        methods: offered method names, the first is the default (any ``"grad-cam:<Class>"`` is also taken).
        target_layers: offered layer names, the first is the default.
        class_names: one name per output channel, in channel order.
        segmentation: whether the network is a segmenter (then a class is required, classes may be explained
            together, and a pixel set is read).
        default_class: class used when the request names none: for classifiers ``"predicted"``, for segmenters the
            first class not called "background" unless given here.
        default_bins: bins when the request names none.
        default_min_heat: ``min_heat`` when the request names none.

    Raises:
        InvalidExplainRequest: on an unknown method, layer, class, pixel set, score or result volume, a class index
            out of range, or bins / min_heat out of range; the message says what is allowed.
    """
    method = _method(params, methods)
    target_layer = _choice(params, "target_layer", target_layers)
    if default_class is None:
        foreground = [name for name in class_names if name.lower() != "background"]
        default_class = (foreground or list(class_names))[0] if segmentation else PREDICTED
    class_idx = _class_choice(_chosen(params, "class", default_class), class_names, segmentation)
    pixel_set = PixelSet(_choice(params, "pixel_set", tuple(PixelSet))) if segmentation else PixelSet.PRED
    score = Score(_choice(params, "score", tuple(Score)))

    n_bins = _chosen(params, "bins", default_bins)
    try:
        n_bins = int(n_bins) if isinstance(n_bins, (int, str)) and not isinstance(n_bins, bool) else n_bins
        heat_bins(n_bins)
    except ValueError as error:
        raise InvalidExplainRequest(f"bins must be an int in [1, 255], got {n_bins!r}.") from error

    min_heat = _chosen(params, "min_heat", default_min_heat)
    try:
        min_heat = float(min_heat)
    except (TypeError, ValueError) as error:
        raise InvalidExplainRequest(f"min_heat must be a number in [0, 1], got {min_heat!r}.") from error
    if not 0.0 <= min_heat <= 1.0:
        raise InvalidExplainRequest(f"min_heat must be in [0, 1], got {min_heat}.")

    result_volume = ResultVolume(_choice(params, "result_volume", RESULT_VOLUMES))
    request = ExplainRequest(
        methods=(method,), target_layers=target_layer, class_idx=class_idx, pixel_set=pixel_set, score=score
    )
    return ExplainOptions(request, n_bins, min_heat, result_volume)
