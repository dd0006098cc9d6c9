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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser, ConfigWorkflow, run_workflow

from monai_xai.bundle.overlays import OVERLAYS, explain_config_files

__all__ = [
    "REQUIRED_BUNDLE_IDS",
    "REQUIRED_REFERENCES",
    "PREPROCESSING_HOW",
    "check_bundle_ids",
    "ExplainWorkflow",
    "explain_bundle",
]

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
        return super().initialize()


def explain_bundle(bundle_dir: str | Path, overlays: Sequence[str] = OVERLAYS, **override: Any) -> None:
    """Explain a bundle's inference data set in-process (:class:`ExplainWorkflow` with the overlays).

    Args:
        bundle_dir: bundle folder; becomes ``bundle_root``, and its ``configs/metadata.json`` and
            ``configs/logging.conf`` are used when present.
        overlays: overlay names (default: explain, xai_metrics, mlflow; see :func:`explain_config_files`).
        override: config overrides, e.g. ``xai_methods=["gradcam"]``, ``xai_output_dir="out"``,
            ``dataset_dir="data"``; keys with ``#`` address nested ids.
    """
    bundle_dir = Path(bundle_dir).resolve()
    metadata = bundle_dir / "configs" / "metadata.json"
    logging_conf = bundle_dir / "configs" / "logging.conf"
    run_workflow(
        workflow_name=ExplainWorkflow,
        config_file=explain_config_files(bundle_dir, overlays),
        meta_file=str(metadata) if metadata.is_file() else None,
        logging_file=str(logging_conf) if logging_conf.is_file() else None,
        bundle_root=str(bundle_dir),
        **override,
    )
