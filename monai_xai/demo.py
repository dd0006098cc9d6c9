"""``monai-xai demo``: explain the two phantom-lesion bundles on held-out phantoms, score the maps, print a summary.

What it does, on CPU in a few minutes:

1. generates a held-out phantom test set (a seed the bundles were not trained on) with true lesion masks;
2. runs each bundle's inference with the ``configs/`` overlays (every CAM method, the XAI metrics against the true
   masks, MLflow tracking into one sqlite store) through ``monai.bundle.run``;
3. prints one table per bundle (method x metric, with seconds per case) and where everything went.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from pathlib import Path

from monai_xai.bundle import ExplainSettings, explain_bundle

__all__ = ["DEMO_BUNDLES", "ALL_METHODS", "run_demo", "summary_rows", "with_road_combined", "format_table"]

DEMO_BUNDLES = ("lesion_classification_3d", "lesion_segmentation_3d")
ALL_METHODS = (
    "gradcam",
    "gradcampp",
    "xgradcam",
    "hirescam",
    "layercam",
    "gradcam_elementwise",
    "eigencam",
    "eigengradcam",
    "scorecam",
    "ablationcam",
)
# the bundles train on seed 0; the demo's cases come from another seed, so they are unseen
DEMO_SEED = 2026
_SECONDS = "xai_seconds"


def bundles_dir() -> Path:
    """The repository's ``bundles/`` folder (next to the package in a checkout)."""
    return Path(__file__).resolve().parent.parent / "bundles"


def summary_rows(summary_csv: str | Path) -> tuple[list[str], dict[str, dict[str, float]]]:
    """Read a ``SaliencyWriter`` ``summary.csv`` into metric names and ``{method: {metric: mean}}``."""
    metrics: list[str] = []
    table: dict[str, dict[str, float]] = {}
    with open(summary_csv, newline="") as stream:
        for row in csv.DictReader(stream):
            if row["metric"] not in metrics:
                metrics.append(row["metric"])
            table.setdefault(row["method"], {})[row["metric"]] = float(row["mean"])
    return metrics, table


def with_road_combined(metrics: list[str], table: dict[str, dict[str, float]]) -> list[str]:
    """Add ``road_combined = (road_lerf - road_morf) / 2`` (pytorch-grad-cam's ROADCombined) from the two means.

    The mean over cases of the per-case combined score equals this, so the demo runs MoRF and LeRF once each instead
    of a third time inside ``road_combined``.
    """
    if "road_morf" not in metrics or "road_lerf" not in metrics:
        return metrics
    for values in table.values():
        if "road_morf" in values and "road_lerf" in values:
            values["road_combined"] = (values["road_lerf"] - values["road_morf"]) / 2
    position = max(metrics.index("road_morf"), metrics.index("road_lerf")) + 1
    return [*metrics[:position], "road_combined", *metrics[position:]]


def _cell(value: float) -> str:
    """Three decimals, or three significant digits below 0.01 (a whole-image segmentation score changes by the
    lesion's share of the volume, about 0.005), so that small values do not all read 0.000."""
    return f"{value:.3f}" if value == 0 or abs(value) >= 0.01 or value != value else f"{value:.2e}"


def _what(settings: ExplainSettings) -> str:
    """One line on what a bundle's own explain.json explains, e.g. "10 methods at layer4, class 1 (logit)"."""
    target = f"class {settings.class_idx}" if settings.class_idx is not None else "the predicted class"
    if settings.pixel_set is not None:
        target += f" over the pixel set {settings.pixel_set!s}"
    count = len(settings.methods)
    layer = settings.target_layers or "the automatically chosen layer"
    return f"{count} method{'' if count == 1 else 's'} at {layer}, {target} ({settings.score!s})"


def format_table(metrics: Sequence[str], table: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per method, one column per metric mean, seconds per case last."""
    columns = [metric for metric in metrics if metric != _SECONDS] + ([_SECONDS] if _SECONDS in metrics else [])
    header = ["method", *(("s/case" if column == _SECONDS else column) for column in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, values in table.items():
        cells = [_cell(values[column]) if column in values else "" for column in columns]
        lines.append("| " + " | ".join([method, *cells]) + " |")
    return "\n".join(lines)


def run_demo(
    output_dir: str = "outputs/demo",
    cases: int = 6,
    methods: Sequence[str] = ALL_METHODS,
    bundles: Sequence[str] = DEMO_BUNDLES,
) -> dict[str, Path]:
    """Run the demo and print its summary.

    Args:
        output_dir: where everything goes (test data, heatmaps, overlays, tables, the MLflow store).
        cases: number of held-out phantom cases (half with lesions).
        methods: CAM methods to run (default: all ten).
        bundles: bundle folder names under ``bundles/``.

    Returns:
        bundle name -> its results folder.
    """
    output_dir = Path(output_dir).resolve()
    tracking_db = output_dir / "mlruns.db"
    phantom = {"n_cases": int(cases), "seed": DEMO_SEED, "positive_fraction": 0.5, "split": [0.0, 0.0, 1.0]}
    results: dict[str, Path] = {}
    seconds: dict[str, float] = {}
    demo_started = time.perf_counter()
    for name in bundles:
        bundle = bundles_dir() / name
        if not (bundle / "models" / "model.pt").is_file():
            raise FileNotFoundError(
                f"{bundle}/models/model.pt is missing; train the bundle first (see its docs/README.md)."
            )
        results[name] = output_dir / name
        started = time.perf_counter()
        settings = ExplainSettings.from_bundle(bundle, overlays=(), xai_methods=list(methods))
        print(f"\n== {name}: explaining {cases} held-out phantom cases: {_what(settings)}", flush=True)
        explain_bundle(
            bundle,
            dataset_dir=str(output_dir / "data"),
            phantom=phantom,
            output_dir=str(results[name] / "predictions"),
            xai_methods=list(methods),
            xai_output_dir=str(results[name]),
            xai_overwrite=True,  # the demo owns its output folder
            xai_tracking_uri=f"sqlite:///{tracking_db}",
            xai_experiment_name="monai_xai_demo",
            xai_run_name=name,
        )
        seconds[name] = time.perf_counter() - started
        print(f"== {name}: done in {seconds[name]:.0f} s", flush=True)
    for name, folder in results.items():
        metrics, table = summary_rows(folder / "summary.csv")
        metrics = with_road_combined(metrics, table)
        print(f"\n### {name} (mean over cases; ROAD and deletion/insertion: score change / AUC)\n")
        print(format_table(metrics, table))
    print("\nWhere everything went:")
    for name, folder in results.items():
        print(
            f"  {name}: tables {folder}/summary.md, cases.csv, descriptions.csv (each map in words); heatmap NIfTIs, "
            f"overlay PNGs and descriptions in {folder}/<case>/; per-case metric CSVs in {folder}/per_metric/"
        )
    print(f"  test data: {output_dir / 'data'}")
    print(f"  browse the runs: mlflow ui --backend-store-uri sqlite:///{tracking_db}")
    print("\nTime per stage (data, CAMs, metrics, files and tracking of each bundle; CAM seconds per case are in the")
    print("tables above):")
    for name, spent in seconds.items():
        print(f"  {name}: {spent:.0f} s")
    print(f"  total: {time.perf_counter() - demo_started:.0f} s")
    return results
