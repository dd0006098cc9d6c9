"""Run a MONAI bundle's inference with the monai-xai overlays layered on top, checked before any data is loaded.

:func:`explain_bundle` is the Python form of::

    python -m monai.bundle run_workflow --workflow_name monai_xai.bundle.ExplainWorkflow \
        --config_file "['<bundle>/configs/inference.json','configs/explain.json','configs/xai_metrics.json',
                        'configs/mlflow.json','<bundle>/configs/explain.json']" --bundle_root <bundle> ...

``python -m monai.bundle run`` with the same files works too; :class:`ExplainWorkflow` adds the check that the bundle
has the ids the overlays build on, with one message that lists every missing one and how to provide it (plain ``run``
stops at the first missing reference with MONAI's own message).
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser, ConfigWorkflow, create_workflow

from monai_xai.bundle.imports import bundle_imports
from monai_xai.bundle.loading import TORCHSCRIPT_SUFFIX
from monai_xai.bundle.overlays import OVERLAYS, explain_config_files
from monai_xai.explanation.scripted import is_scripted, methods_for
from monai_xai.handlers.records import RunRecords

__all__ = [
    "RECORDER_ID",
    "ExplainRun",
    "segmentation_classes",
    "REQUIRED_BUNDLE_IDS",
    "REQUIRED_REFERENCES",
    "PREPROCESSING_HOW",
    "check_bundle_ids",
    "ExplainWorkflow",
    "explain_bundle",
]

logger = logging.getLogger(__name__)

# the overlay's id of the run's recorder (configs/explain.json), whose records a run returns
RECORDER_ID = "xai_recorder"

# ids of a model-zoo bundle that configs/explain.json builds on, with how to provide a missing one
REQUIRED_BUNDLE_IDS = {
    "bundle_root": "the bundle folder, e.g. --bundle_root <path> (xai_output_dir defaults to <bundle_root>/eval/xai)",
    "network": "the network to explain, e.g. '$@network_def.to(@device)'",
    "inferer": "the bundle's inferer, e.g. --inferer \"{'_target_': 'SimpleInferer'}\"",
    "evaluator": "a SupervisedEvaluator running `network` with `inferer` and 'val_handlers': '@handlers'",
    "handlers": "the evaluator's handler list, e.g. --handlers \"[]\" and 'val_handlers': '@handlers' in the evaluator",
    "dataset": "the dataset of the cases to explain, e.g. a MONAI Dataset with 'transform': '@preprocessing'",
    "dataloader": "a DataLoader of `dataset` ('dataset': '@dataset'), the evaluator's 'val_data_loader': '@dataloader'",
}
# the overlay's xai_preprocessing is "@preprocessing" (the maps go back through it onto the original grid)
PREPROCESSING_HOW = (
    "the bundle's preprocessing Compose, whose inverse puts the maps on the original image's grid; without one, "
    "write them on the network's grid: --xai_maps_grid preprocessed --xai_preprocessing '$None'"
)
# references the overlays rely on: (config id, value it must have, how to set it)
REQUIRED_REFERENCES = (
    ("evaluator#val_handlers", "@handlers", "--evaluator#val_handlers @handlers"),
    ("evaluator#val_data_loader", "@dataloader", "--evaluator#val_data_loader @dataloader"),
    ("dataloader#dataset", "@dataset", "--dataloader#dataset @dataset"),
)


def check_bundle_ids(parser: ConfigParser, bundle_config: dict | None = None) -> None:
    """Raise one ``ValueError`` listing every id of :data:`REQUIRED_BUNDLE_IDS` the config lacks (and
    ``preprocessing`` when ``xai_preprocessing`` refers to it) and every reference of :data:`REQUIRED_REFERENCES`
    that the bundle wires otherwise, each with how to set it (the overlays put the explanation handlers into
    ``@handlers`` and wrap ``@dataset`` in ``@dataloader`` to skip unreadable cases).

    Args:
        parser: the layered config (bundle, overlays, overrides), before it is parsed.
        bundle_config: the bundle's own config before the overlays (they replace ``dataloader#dataset``, so its
            reference is checked there); None checks ``parser`` only.
    """
    required = dict(REQUIRED_BUNDLE_IDS)
    if parser.get("xai_preprocessing") == "@preprocessing":
        required["preprocessing"] = PREPROCESSING_HOW
    problems = [f"`{config_id}` is missing: {how}" for config_id, how in required.items() if config_id not in parser]
    evaluator = parser.get("evaluator")
    if evaluator is not None and (not isinstance(evaluator, dict) or "_target_" not in evaluator):
        problems.append(f"`evaluator` is not a component: {REQUIRED_BUNDLE_IDS['evaluator']}")
    bundle = parser if bundle_config is None else ConfigParser(bundle_config)
    for config_id, reference, how in REQUIRED_REFERENCES:
        value = bundle.get(config_id)
        if value != reference and config_id.split("#")[0] in bundle:
            problems.append(
                f"the bundle's `{config_id}` must be '{reference}' for the explanation overlays to work (it is "
                f"{value!r}); set {how}"
            )
    if problems:
        raise ValueError(
            "configs/explain.json needs these bundle config ids, missing or wired otherwise:\n- "
            + "\n- ".join(problems)
        )


class ExplainWorkflow(ConfigWorkflow):
    """MONAI's ``ConfigWorkflow`` for a bundle config layered with the explanation overlays: before the config is
    parsed, :func:`check_bundle_ids` checks that the bundle has what the overlays build on.

    Arguments as ``ConfigWorkflow`` (``config_file`` lists the bundle's inference.json, then the overlays;
    ``workflow_type`` defaults to ``"infer"``).
    """

    def __init__(self, config_file: str | Sequence[str], workflow_type: str | None = "infer", **kwargs: Any) -> None:
        super().__init__(config_file=config_file, workflow_type=workflow_type, **kwargs)
        self.bundle_config = ConfigParser.load_config_files(
            config_file if isinstance(config_file, str) else config_file[0]
        )

    def initialize(self) -> Any:
        check_bundle_ids(self.parser, self.bundle_config)
        network = self.parser.get_parsed_content("network")
        if is_scripted(network):  # CAMs need layer hooks: the input-gradient family instead, said so
            methods = self.parser.get_parsed_content("xai_methods")
            self.parser["xai_methods"] = list(methods_for(network, [methods] if isinstance(methods, str) else methods))
        return super().initialize()


def segmentation_classes(bundle_dir: str | Path) -> dict[int, str] | None:
    """``{index: name}`` of a segmentation bundle's foreground classes, from its ``configs/metadata.json`` (the
    ``pred`` output's ``channel_def``, or ``num_channels``: class 0 is background); None for a classifier or a bundle
    whose metadata does not say."""
    metadata_file = Path(bundle_dir) / "configs" / "metadata.json"
    if not metadata_file.is_file():
        return None
    outputs = json.loads(metadata_file.read_text()).get("network_data_format", {}).get("outputs", {})
    pred = outputs.get("pred", {})
    if not (pred.get("spatial_shape") or pred.get("format") == "segmentation") or "num_channels" not in pred:
        return None
    names = pred.get("channel_def", {})
    num_channels = int(pred["num_channels"])
    indices = range(1, num_channels) if num_channels > 1 else range(1)
    return {index: str(names.get(str(index), f"class {index}")) for index in indices}


def torchscript_overrides(bundle_dir: Path, parser: ConfigParser) -> dict[str, Any]:
    """The overrides that run a bundle shipping only its TorchScript export (``models/model.ts``, no
    ``models/model.pt``, as MONAI Label prefers): its network is the TorchScript module and its checkpoint loaders
    (the ``checkpointloader`` id, ``CheckpointLoader`` handlers) are switched off; empty for any other bundle."""
    models = bundle_dir / "models"
    if (models / "model.pt").is_file() or not (models / f"model{TORCHSCRIPT_SUFFIX}").is_file():
        return {}
    device = ", map_location=@device" if "device" in parser else ""
    overrides: dict[str, Any] = {
        "network": f"$torch.jit.load(@bundle_root + '/models/model{TORCHSCRIPT_SUFFIX}'{device})"
    }
    if "checkpointloader" in parser:
        overrides["checkpointloader"] = "$lambda engine: None"
    for index, handler in enumerate(parser.get("handlers") or []):
        if isinstance(handler, dict) and str(handler.get("_target_", "")).endswith("CheckpointLoader"):
            overrides[f"handlers#{index}#_disabled_"] = True
    logger.warning(
        "xai: %s ships models/model%s and no models/model.pt: explaining that TorchScript module",
        bundle_dir,
        TORCHSCRIPT_SUFFIX,
    )
    return overrides


def _folder_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "class"


@dataclass(frozen=True)
class ExplainRun:
    """One explanation run of a bundle.

    Attributes:
        folder: its results folder.
        records: what it produced (:class:`~monai_xai.handlers.RunRecords`: per case and method the class, time,
            metric values, description and files; per metric the summary).
    """

    folder: Path
    records: RunRecords

    def summary(self) -> str:
        """What the run explained, in a few lines for the console: the layer and how it was chosen, the class(es) by
        name, the metrics some cases could not be scored with, where the results are."""
        records = self.records
        lines = [f"explained {len(records.cases)} case(s) into {self.folder}"]
        if records.layers is not None:
            lines.append(f"  layer: {records.layers.text()}")
        if records.explained_classes():
            lines.append(f"  class(es): {records.explained_classes()}")
        lines += [f"  {metric} skipped: {why}" for metric, why in records.skipped_metrics.items()]
        return "\n".join(lines)


def _check_known_ids(parser: ConfigParser, override: Mapping[str, Any], config_files: Sequence[Path]) -> None:
    """Refuse an override of an id no config file defines: nothing reads it, so a mistyped ``--xai_metods`` would
    otherwise run with the defaults, silently.

    Raises:
        ValueError: names the unknown ids, the closest known ones, and the files read.
    """
    unknown = [key for key in override if key not in parser]
    if not unknown:
        return
    known = [key for key in parser.get() if isinstance(key, str)]
    hints = {key: difflib.get_close_matches(key.split("#")[0], known, n=3) for key in unknown}
    said = "; ".join(
        f"{key!r}" + (f" (did you mean {', '.join(hints[key])}?)" if hints[key] else "") for key in unknown
    )
    files = ", ".join(str(file) for file in config_files)
    raise ValueError(
        f"unknown config id(s) {said}: no config of the run defines them ({files}), so nothing would read them; "
        "check the spelling (ids with '#' address nested ones)."
    )


def explain_bundle(bundle_dir: str | Path, overlays: Sequence[str] = OVERLAYS, **override: Any) -> list[ExplainRun]:
    """Explain a bundle's inference data set in-process (:class:`ExplainWorkflow` with the overlays).

    A segmentation bundle explained without a class (no ``xai_class`` in the override or the bundle's explain.json)
    is explained once per foreground class named in its metadata (:func:`segmentation_classes`), each into its own
    folder ``<xai_output_dir>/<class name>/``: each class's map over the voxels predicted as that class (all zeros,
    with a note, in a case where it is not predicted). One foreground class is explained into ``xai_output_dir``
    itself. (A plain ``python -m monai.bundle run`` explains the foreground classes together in one map; see
    :class:`~monai_xai.cams.ClassSet`.)

    Args:
        bundle_dir: bundle folder; becomes ``bundle_root`` (also on ``sys.path`` during the run, so that a network
            in the bundle's own ``scripts/`` package imports), and its ``configs/metadata.json`` and
            ``configs/logging.conf`` are used when present.
        overlays: overlay names (default: explain, xai_metrics, mlflow; see :func:`explain_config_files`).
        override: config overrides, e.g. ``xai_methods=["gradcam"]``, ``xai_output_dir="out"``,
            ``dataset_dir="data"``; keys with ``#`` address nested ids.

    Returns:
        each run's results folder and records.
    """
    bundle_dir = Path(bundle_dir).resolve()
    metadata = bundle_dir / "configs" / "metadata.json"
    logging_conf = bundle_dir / "configs" / "logging.conf"
    config_files = explain_config_files(bundle_dir, overlays)
    parser = ConfigParser()
    parser.read_config(config_files)
    _check_known_ids(parser, override, config_files)
    override = {**torchscript_overrides(bundle_dir, parser), **override}
    parser.update({"bundle_root": str(bundle_dir), **override})
    output_dir = Path(parser.get_parsed_content("xai_output_dir"))
    # one run per foreground class when a segmenter gets no class: {xai_class: index} -> its results folder
    runs: dict[int | None, Path] = {None: output_dir}
    classes = segmentation_classes(bundle_dir)
    if classes and parser.get("xai_class") is None:
        if len(classes) == 1:
            runs = {next(iter(classes)): output_dir}
        else:
            runs = {index: output_dir / _folder_name(name) for index, name in classes.items()}
            logger.info("xai: no class given: explaining each foreground class in turn, %s", list(classes.values()))
    results = []
    for class_idx, folder in runs.items():
        per_class = {} if class_idx is None else {"xai_class": class_idx, "xai_output_dir": str(folder)}
        with bundle_imports(bundle_dir):  # the bundle's own scripts/ package, wherever the command runs
            workflow = create_workflow(
                workflow_name=ExplainWorkflow,
                config_file=config_files,
                meta_file=str(metadata) if metadata.is_file() else None,
                logging_file=str(logging_conf) if logging_conf.is_file() else None,
                bundle_root=str(bundle_dir),
                **{**override, **per_class},
            )
            workflow.run()
            results.append(ExplainRun(folder, workflow.parser.get_parsed_content(RECORDER_ID).records))
            workflow.finalize()
    return results
