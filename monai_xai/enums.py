"""The vocabulary of monai-xai in one place: what is explained, how it is scored, and the engine-output keys.

Every value is a ``StrEnum`` whose values are the strings JSON configs and the command line use (``"pred"``,
``"probability"``, ``"morf"``, ...), so configs keep their strings and code gets names it can search for, as in MONAI's
``monai.utils.enums``. Two words are used the same way everywhere:

- **pixel set**: the voxels whose class scores a segmentation CAM explains (Seg-Grad-CAM's M);
- **region**: the ground truth a map is scored against (a lesion mask, an organ label).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

__all__ = [
    "EXPLAINED_CLASS",
    "IOU",
    "OTSU",
    "CaseName",
    "IoUThresholdMode",
    "MapGrid",
    "ModelMode",
    "NetworkOutput",
    "HIGHEST_RESOLUTION",
    "RandomMap",
    "ResultVolume",
    "PixelSet",
    "Score",
    "RoadOrder",
    "MethodFamily",
    "SanityCheck",
    "MetricInput",
    "Layout",
    "XAIKeys",
    "attribution_key",
    "saliency_key",
    "seconds_key",
    "as_choice",
]

Choice = TypeVar("Choice", bound=StrEnum)


class PixelSet(StrEnum):
    """A segmentation pixel set chosen by name (a tensor, a voxel or a box can be given instead).

    - ``PRED``: the voxels the network predicts as the explained class (argmax, or logit > 0 for one channel);
    - ``LARGEST_COMPONENT``: the largest connected component of that prediction;
    - ``IMAGE``: every voxel, the same for any network (with ``Score.PROBABILITY``: the class's expected volume);
    - ``EMPTY``: no voxel, the segmentation-CAM study's control: the score is 0 whatever the input, so every map is all
      zeros (with a warning that says so) and perturbation metrics are undefined (NaN);
    - ``PEAK``: one voxel per image, the one where the class's score is highest: the study's single pixel, chosen on
      each image instead of one fixed coordinate for all (which may fall outside the organ in many of them).
    """

    PRED = "pred"
    LARGEST_COMPONENT = "largest_component"
    IMAGE = "image"
    EMPTY = "empty"
    PEAK = "peak"


class Score(StrEnum):
    """The explained score of a class: its ``LOGIT`` (pre-activation) or its ``PROBABILITY`` (softmax over classes,
    sigmoid for a single output channel)."""

    LOGIT = "logit"
    PROBABILITY = "probability"


class RoadOrder(StrEnum):
    """ROAD's removal order: most relevant first (``MORF``), least relevant first (``LERF``), or both, scored as
    ``(LeRF - MoRF) / 2`` (``COMBINED``)."""

    MORF = "morf"
    LERF = "lerf"
    COMBINED = "combined"


class MethodFamily(StrEnum):
    """How a CAM method computes its map.

    - ``GRADIENT``: from the activations (and their gradients) of one hooked forward and backward pass, shared by every
      method of the family (EigenCAM, which needs no gradient, included);
    - ``PERTURBATION``: from how the score reacts to perturbed copies (ScoreCAM, AblationCAM);
    - ``GRAD_CAM``: a pytorch-grad-cam class run through the adapter (``"grad-cam:<Class>"``);
    - ``ATTRIBUTION``: an input attribution (Integrated Gradients, SmoothGrad, Occlusion, KernelSHAP, ..., through
      Captum; :mod:`monai_xai.cams.attributions`): no target layer, a signed (B, C, *spatial) map at input resolution;
    - ``CONTROL``: a map that must fail the sanity checks (:mod:`monai_xai.cams.controls`): computed from the image
      alone (or from nothing), never from the network; no target layer, (B, 1, *spatial) in [0, 1].
    """

    GRADIENT = "gradient"
    PERTURBATION = "perturbation"
    GRAD_CAM = "grad-cam"
    ATTRIBUTION = "attribution"
    CONTROL = "control"


class SanityCheck(StrEnum):
    """The randomisation checks of :mod:`monai_xai.sanity.trust` (each a per-method verdict):

    - ``TOP_DOWN``: model parameter randomisation, every weight re-initialised (Adebayo et al. 2018);
    - ``BOTTOM_UP``: the lower half of the network re-initialised, from the input up (Binder et al. 2023);
    - ``SMPRT``: maps averaged over noisy copies of the input before comparing (Hedstrom et al. 2023);
    - ``EMPRT``: the maps' entropy must rise when the network is randomised (Hedstrom et al. 2023);
    - ``RANDOM_LOGIT``: the map of a random other class must differ (Sixt et al. 2020);
    - ``DATA``: data randomisation, the maps of the same network trained on permuted labels must differ (Adebayo et
      al. 2018); it needs those weights (``permuted_weights``), so ``"all"`` takes it only when they are given.
    """

    TOP_DOWN = "top_down"
    BOTTOM_UP = "bottom_up"
    SMPRT = "smprt"
    EMPRT = "emprt"
    RANDOM_LOGIT = "random_logit"
    DATA = "data"


class MetricInput(StrEnum):
    """What an XAI metric compares a map with: the ground-truth ``REGION``, the input ``IMAGE`` (metrics that re-run the
    network on perturbed copies of it), or ``NONE`` (a per-case value such as the time)."""

    REGION = "region"
    IMAGE = "image"
    NONE = "none"


class Layout(StrEnum):
    """Where a layer's output keeps its K channels (:mod:`monai_xai.cams.layouts`): ``CHANNEL_FIRST`` (B, K, *grid),
    ``CHANNEL_LAST`` (B, *grid, K) as in Swin blocks, ``TOKENS`` (B, N, K) as in vision transformers."""

    CHANNEL_FIRST = "channel_first"
    CHANNEL_LAST = "channel_last"
    TOKENS = "tokens"


class IoUThresholdMode(StrEnum):
    """How a study binarises maps for the IoU metric (its ``iou_threshold.mode``): one ``FIXED`` value, each map's
    own ``OTSU`` threshold, or the value ``TUNED`` on the validation split for the highest mean IoU (per bundle, layer
    and method)."""

    FIXED = "fixed"
    OTSU = "otsu"
    TUNED = "tuned"


class MapGrid(StrEnum):
    """Where map files are written (``xai_maps_grid``): on the ``ORIGINAL`` image file's grid and affine (put back
    through the bundle's preprocessing), or on the network's ``PREPROCESSED`` grid."""

    ORIGINAL = "original"
    PREPROCESSED = "preprocessed"


class CaseName(StrEnum):
    """What names a case's results folder (``xai_case_name``): its image ``FILE`` (without extension), or the
    ``FOLDER`` holding it (data sets whose images share one name, e.g. KiTS23's ``case_XXXXX/imaging.nii.gz``)."""

    FILE = "file"
    FOLDER = "folder"


class ModelMode(StrEnum):
    """The modes a network is explained in (``xai_model_mode``), so that the maps explain the prediction its own
    inference makes:

    - ``EVAL``: every module in eval mode (``network.eval()``: running statistics, no dropout), the usual inference;
    - ``NORM_TRAIN``: eval mode except the normalisation layers (BatchNorm, InstanceNorm), which normalise with the
      statistics of each input as in training, as HD-BET's own inference does (its InstanceNorm layers keep
      untrained running statistics); their running statistics are restored after every pass;
    - ``AS_GIVEN``: the modes the network is in when it is explained, untouched (e.g. after its own code set them);
    - ``AUTO``: ``AS_GIVEN`` for a network in eval mode whose code put some normalisation layers in train mode (as
      HD-BET's ``SetNetworkToVal`` does), else ``EVAL`` (logged when that switches a network from train mode).
    """

    AUTO = "auto"
    EVAL = "eval"
    NORM_TRAIN = "norm_train"
    AS_GIVEN = "as_given"


class NetworkOutput(StrEnum):
    """What a network's ``forward`` returns per class (``xai_network_output``): ``LOGITS`` (pre-activation), or
    ``PROBABILITIES`` (a softmax, or a sigmoid for one channel, inside ``forward``, as HD-BET's), which the score then
    does not pass through a second softmax; ``AUTO``: probabilities when the first prediction is a distribution over
    two or more channels (>= 0, summing to 1 at every voxel), else logits."""

    AUTO = "auto"
    LOGITS = "logits"
    PROBABILITIES = "probabilities"


# ``xai_output_head`` of a network that returns several outputs (deep supervision): the one with the most voxels
HIGHEST_RESOLUTION = "highest_resolution"


class ResultVolume(StrEnum):
    """What a MONAI Label explain request returns: ``BINS``, a uint8 label map of heat bins (what 3D Slicer shows as
    segments); ``SEGMENTS``, the same bins as a Slicer segmentation file (``.seg.nrrd``) whose segments carry each bin's
    name and colour; ``HEATMAP``, the float32 map in [0, 1]; ``DICOM_SEG``, the bins as a DICOM SEG of the series the
    image came from (an image of a DICOM datastore)."""

    BINS = "bins"
    SEGMENTS = "segments"
    HEATMAP = "heatmap"
    DICOM_SEG = "dicom_seg"


class RandomMap(StrEnum):
    """The random maps of the sanity checks' baseline: i.i.d. ``UNIFORM`` values per voxel, or ``SMOOTH`` ones drawn on
    a coarse grid (e.g. the CAM layer's) and upsampled as a CAM is."""

    UNIFORM = "uniform"
    SMOOTH = "smooth"


# a threshold that binarises each map at its own Otsu cut (the IoU metric's and describe()'s ``threshold="otsu"``)
OTSU = "otsu"
# ``region_value`` (``xai_region_value``) of the ground truth of the explained class(es), not of a fixed label value
EXPLAINED_CLASS = "class"
# the IoU metric's name: a study sets its threshold by ``iou_threshold``, not by ``metric_args``
IOU = "iou"


class XAIKeys(StrEnum):
    """Keys an :class:`~monai_xai.inferers.XAIInferer` adds to ``engine.state.output`` (per case after MONAI decollates
    the batch), next to MONAI's ``CommonKeys`` ``image``/``label``/``pred``.

    - ``CLASS`` (``"xai_class"``): (B,) int64, the class each map explains.
    - ``PIXEL_SET`` (``"xai_pixel_set"``): (B, 1, *spatial) float in [0, 1], the pixel set the maps explain
      (segmentation networks only).
    - ``SALIENCY`` (``"saliency_"``): prefix of each method's maps, ``"saliency_<method>"``: (B, 1, *spatial) float32
      in [0, 1] with the input's meta (see :func:`saliency_key`).
    - ``SECONDS`` (``"xai_seconds_"``): prefix of each method's time per case, ``"xai_seconds_<method>"``: (B,) float
      (see :func:`seconds_key`).
    - ``ATTRIBUTION`` (``"xai_attribution_"``): prefix of an attribution method's signed map,
      ``"xai_attribution_<method>"``: (B, C, *spatial) float32, one channel per input channel, any sign and range
      (see :func:`attribution_key`); ``"saliency_<method>"`` holds its reduction to [0, 1].
    - ``UNREADABLE`` (``"xai_unreadable"``): the cases of a batch that could not be read (``{"case", "files",
      "reason"}`` records), carried by the batch and kept in ``engine.state.xai_unreadable``
      (:mod:`monai_xai.data.unreadable`).
    - ``METRIC_KEYS`` (``"xai_metric_keys"``): ``engine.state.xai_metric_keys``, ``{engine metric name:``
      :class:`~monai_xai.metrics.MetricKey` ``}`` of every per-method metric the handlers compute (the time included),
      so readers of ``engine.state.metrics`` know each value's metric and method without parsing its name.
    - ``RESULTS`` (``"xai_results"``): ``engine.state.xai_results``, the run's
      :class:`~monai_xai.handlers.records.RunRecords` (per case and method: class, time, metrics, description, files),
      filled by the :class:`~monai_xai.handlers.XAIRecorder` and read by the writers, the report and MLflow.
    - ``LAYERS`` (``"xai_layers"``): ``engine.state.xai_layers``, the layers the maps explain
      (:class:`~monai_xai.handlers.records.ExplainedLayers`), set by the ``XAIInferer``.
    - ``SKIPPED_METRICS`` (``"xai_skipped_metrics"``): ``engine.state.xai_skipped_metrics``, ``{metric: why}`` of
      the metrics some cases could not be scored with (no ground-truth region: an image-only datalist), set by the
      ``XAIMetricHandler``.
    """

    CLASS = "xai_class"
    PIXEL_SET = "xai_pixel_set"
    SALIENCY = "saliency_"
    SECONDS = "xai_seconds_"
    ATTRIBUTION = "xai_attribution_"
    UNREADABLE = "xai_unreadable"
    METRIC_KEYS = "xai_metric_keys"
    RESULTS = "xai_results"
    LAYERS = "xai_layers"
    SKIPPED_METRICS = "xai_skipped_metrics"


def saliency_key(method: str) -> str:
    """Engine-output key of the maps of ``method`` (e.g. ``"saliency_gradcam"``)."""
    return f"{XAIKeys.SALIENCY}{method}"


def seconds_key(method: str) -> str:
    """Engine-output key of the per-case explanation time of ``method`` (e.g. ``"xai_seconds_gradcam"``)."""
    return f"{XAIKeys.SECONDS}{method}"


def attribution_key(method: str) -> str:
    """Engine-output key of the signed attribution of ``method`` (e.g. ``"xai_attribution_integrated_gradients"``)."""
    return f"{XAIKeys.ATTRIBUTION}{method}"


def as_choice(choices: type[Choice], value: object, name: str) -> Choice:
    """``value`` as a member of ``choices``, or a ``ValueError`` that names the argument and lists the choices.

    Args:
        choices: a ``StrEnum`` class, e.g. :class:`PixelSet`.
        value: a member or its string value, e.g. ``"pred"``.
        name: the argument name used in the message (e.g. ``"pixel_set"``).
    """
    try:
        return choices(value)
    except ValueError:
        allowed = [member.value for member in choices]
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}.") from None
