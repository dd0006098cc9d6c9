"""``ExplainSettings``: what a bundle explains, read once from its ``xai_*`` config ids into one typed record.

The ids live in the overlays (``configs/explain.json``, ``configs/xai_metrics.json``) and in a bundle's own
``configs/explain.json``; the command line overrides them (``--xai_class 1``). The CLI, the sanity checks, the demo
and MONAI Label all read them through :meth:`ExplainSettings.from_config` / :meth:`ExplainSettings.from_bundle`, so
an id means the same everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from monai.bundle import ConfigParser
from torch import nn

from monai_xai.bundle.overlays import OVERLAYS, explain_config_files
from monai_xai.cams import AttributionSettings, ClassSet, LayerSpec, resolve_layers
from monai_xai.cams.layouts import Reshape
from monai_xai.cams.outputs import OutputHead
from monai_xai.enums import EXPLAINED_CLASS, ModelMode, NetworkOutput, PixelSet, Score
from monai_xai.explanation import ExplainRequest

__all__ = ["ExplainSettings", "check_explain_config"]


@dataclass(frozen=True)
class ExplainSettings:
    """The explanation a bundle asks for, one field per ``xai_*`` config id (see ``configs/README.md``).

    A field that its id leaves unset keeps the default here: ``methods`` empty means "not chosen" (the caller must
    supply them), ``target_layers`` None means "choose one" (the ``XAIInferer`` does, on the first batch; see
    :func:`~monai_xai.cams.choose_target_layer`), ``pixel_set`` None means "not chosen" (a segmentation network then
    explains its predicted region; classifiers have none), ``region_key`` None means "no ground truth named".

    Attributes:
        methods: ``xai_methods``, method names (CAMs and input attributions).
        target_layers: ``xai_target_layer``, a layer name (or list), or ``{method: layer}``.
        class_idx: ``xai_class``, the explained class; a :class:`~monai_xai.cams.ClassSet` for several classes of a
            segmenter explained together (the config's ``"1+2+3"`` or ``"foreground"``); None: a classifier's
            predicted class, every foreground class of a segmenter.
        pixel_set: ``xai_pixel_set`` (former id ``xai_mask``), the named segmentation pixel set or one voxel
            (``[i, j, k]``); None: not chosen.
        pixel_set_key: ``xai_pixel_set_key`` (former id ``xai_mask_key``), batch key of a label whose region of the
            class is the pixel set instead.
        score: ``xai_score``, the explained score of the class.
        time_each_method: ``xai_time_each_method``, one timed pass per method (True) or one shared pass.
        reshape: ``xai_reshape``, where the layers keep their channels (None: found; ``"channel_first"``,
            ``"channel_last"``, ``"tokens"``, or a function, see :mod:`monai_xai.cams.layouts`).
        attribution: ``xai_attribution``, the input-attribution methods' settings
            (:class:`~monai_xai.cams.AttributionSettings`, a dict in the config).
        metrics: ``xai_metrics``, XAI metric names.
        metric_args: ``xai_metric_args``, keyword arguments per metric.
        region_key: ``xai_region_key``, batch key of the ground-truth region.
        region_value: ``xai_region_value``, which region of it: ``"class"`` (the explained class), None (any
            foreground) or an int.
        model_mode: ``xai_model_mode``, the modes the network is explained in (:class:`~monai_xai.enums.ModelMode`).
        output_head: ``xai_output_head``, a deep-supervision network's prediction among its outputs.
        network_output: ``xai_network_output``, whether ``forward`` returns logits or probabilities.
    """

    methods: tuple[str, ...] = ()
    target_layers: LayerSpec | Mapping[str, LayerSpec] | None = None
    class_idx: int | ClassSet | None = None
    pixel_set: PixelSet | tuple[int, ...] | None = None
    pixel_set_key: str | None = None
    score: Score = Score.LOGIT
    time_each_method: bool = True
    reshape: Reshape = None
    attribution: AttributionSettings = AttributionSettings()
    metrics: tuple[str, ...] = ()
    metric_args: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    region_key: str | None = None
    region_value: int | str | None = "class"
    model_mode: ModelMode = ModelMode.AUTO
    output_head: OutputHead = None
    network_output: NetworkOutput = NetworkOutput.AUTO

    # the config id of each field
    CONFIG_IDS: ClassVar[dict[str, str]] = {
        "methods": "xai_methods",
        "target_layers": "xai_target_layer",
        "class_idx": "xai_class",
        "pixel_set": "xai_pixel_set",
        "pixel_set_key": "xai_pixel_set_key",
        "score": "xai_score",
        "time_each_method": "xai_time_each_method",
        "reshape": "xai_reshape",
        "attribution": "xai_attribution",
        "metrics": "xai_metrics",
        "metric_args": "xai_metric_args",
        "region_key": "xai_region_key",
        "region_value": "xai_region_value",
        "model_mode": "xai_model_mode",
        "output_head": "xai_output_head",
        "network_output": "xai_network_output",
    }
    # ids renamed since: still read when the new id is absent (a bundle's own explain.json may use them)
    FORMER_IDS: ClassVar[dict[str, str]] = {"pixel_set": "xai_mask", "pixel_set_key": "xai_mask_key"}

    def __post_init__(self) -> None:
        set_field = object.__setattr__  # the dataclass is frozen; normalise the given values once, here
        set_field(self, "methods", _names(self.methods, "xai_methods"))
        set_field(self, "metrics", _names(self.metrics, "xai_metrics"))
        # the explanation fields get the request's own checks (a bundle may leave the methods to the front door)
        checked = ("target_layers", "class_idx", "pixel_set_key", "score", "time_each_method", "reshape")
        for name in (*checked, *_QUIRKS, "attribution"):
            set_field(self, name, ExplainRequest.check_field(name, getattr(self, name), self.methods))
        if self.pixel_set is not None:  # None: not chosen (a segmenter then explains its predicted region)
            set_field(self, "pixel_set", ExplainRequest.check_field("pixel_set", self.pixel_set))
        metric_args = self.metric_args or {}
        if not isinstance(metric_args, Mapping) or not all(isinstance(args, Mapping) for args in metric_args.values()):
            raise TypeError(
                f'xai_metric_args must map metric names to keyword arguments, e.g. {{"road_combined": '
                f'{{"percentiles": [20, 80]}}}}, got {metric_args!r}.'
            )
        set_field(self, "metric_args", {name: dict(args) for name, args in metric_args.items()})
        if self.region_key is not None and not isinstance(self.region_key, str):
            raise TypeError(f"xai_region_key must be a batch key (a string) or null, got {self.region_key!r}.")
        value = self.region_value
        if value is not None and value != EXPLAINED_CLASS and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f'xai_region_value must be "class", null or an int, got {self.region_value!r}.')

    @classmethod
    def from_config(cls, parser: ConfigParser) -> ExplainSettings:
        """The settings of a parsed bundle config: each field from its id when the config has it.

        Args:
            parser: a ``ConfigParser`` holding the bundle config (and overlays); only the ``xai_*`` ids are parsed.
        """
        values = {}
        for name, config_id in cls.CONFIG_IDS.items():
            for candidate in (config_id, cls.FORMER_IDS.get(name)):
                if candidate is not None and candidate in parser:
                    values[name] = parser.get_parsed_content(candidate)
                    break
        return cls(**values)

    @classmethod
    def from_bundle(
        cls, bundle_dir: str | Path, overlays: Sequence[str] = OVERLAYS, **override: Any
    ) -> ExplainSettings:
        """The settings a bundle run with ``overlays`` would use: the bundle's ``configs/inference.json``, the
        overlays, the bundle's own ``configs/explain.json``, then ``override`` (``{"xai_class": 1}``).

        ``overlays=()`` reads what the bundle itself sets (its explain.json), leaving the rest at the defaults here.
        """
        parser = ConfigParser()
        parser.read_config(explain_config_files(bundle_dir, overlays))
        parser["bundle_root"] = str(Path(bundle_dir).resolve())
        parser.update(override)
        return cls.from_config(parser)

    def replace(self, **changes: Any) -> ExplainSettings:
        """A copy with the given fields changed (None values are ignored: "keep the bundle's setting")."""
        values = {item.name: getattr(self, item.name) for item in fields(self)}
        values.update({name: value for name, value in changes.items() if value is not None})
        return ExplainSettings(**values)

    def request(self, **changes: Any) -> ExplainRequest:
        """The checked :class:`~monai_xai.explanation.ExplainRequest` of these settings, with ``changes`` (e.g.
        ``methods=[...]`` when the bundle names none, ``window=SlidingWindow.of(inferer)``, ``target_layers=...``).

        Raises:
            ValueError: no methods (neither here nor in ``changes``), or a value the request refuses.
        """
        values = {name: getattr(self, name) for name in _REQUEST_FIELDS}
        values.update(changes)
        return ExplainRequest(**values)

    def check(self, network: nn.Module) -> None:
        """Raise a ``ValueError`` that says what to set unless ``methods`` and ``target_layers`` work on
        ``network`` (see :func:`check_explain_config`)."""
        check_explain_config(network, self.target_layers, self.methods)


# the settings fields that are fields of the request too
_REQUEST_FIELDS = ("methods", "target_layers", "class_idx", "pixel_set", "pixel_set_key", "score", "time_each_method")
_REQUEST_FIELDS += ("reshape", "attribution")
# how the network runs and what it returns (the mode its own inference uses, deep supervision, probabilities)
_QUIRKS = ("model_mode", "output_head", "network_output")
_REQUEST_FIELDS += _QUIRKS


def _names(value: str | Sequence[str] | None, config_id: str = "names") -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else value or ()
    if not isinstance(names, Sequence) or not all(isinstance(name, str) for name in names):
        raise TypeError(f"{config_id} must be a name or a list of names, got {value!r}.")
    return tuple(names)


def check_explain_config(
    network: nn.Module,
    target_layers: LayerSpec | Mapping[str, LayerSpec] | None,
    methods: str | Sequence[str] | None,
) -> None:
    """Fail early, before any data is loaded, when the methods or layers to explain cannot work on ``network``.

    ``configs/explain.json`` runs it in the bundle's ``initialize`` step with ``@network``, ``@xai_target_layer`` and
    ``@xai_methods``.

    Args:
        network: the network to explain.
        target_layers: ``xai_target_layer``: a layer name of ``network`` (or a list of them), or a mapping
            ``{method: layer}`` with an entry for each method; empty or None: the inferer chooses the layer on the
            first batch (:func:`~monai_xai.cams.choose_target_layer`), so only the methods are checked.
        methods: ``xai_methods``.

    Raises:
        ValueError: naming the wrong or missing setting and how to set it.
    """
    if not isinstance(network, nn.Module):
        raise ValueError(
            f"the bundle's `network` must be a torch.nn.Module, got {type(network).__name__}; "
            "configs/explain.json explains `network` (usually '$@network_def.to(@device)')."
        )
    try:
        request = ExplainRequest(methods=_names(methods, "xai_methods"), target_layers=target_layers)
        if request.target_layers is not None:  # None: the step chooses the layer on the first batch
            for layers, _ in request.method_groups(request.target_layers):
                if layers is not None:  # None: the input attributions, which explain no layer
                    resolve_layers(network, layers)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{error} (set them with --xai_target_layer <name> and --xai_methods \"['gradcam']\")"
        ) from error
