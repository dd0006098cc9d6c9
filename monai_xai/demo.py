"""``monai-xai demo``: explain the two phantom-lesion bundles on held-out phantoms, score the maps, print a summary.

What it does, on CPU in a few minutes:

1. generates a held-out phantom test set (a seed the bundles were not trained on) with true lesion masks;
2. runs the sanity checks (:func:`monai_xai.sanity.bundle_sanity_checks`) on those cases: each method's maps against
   random maps, and the randomisation checks of :data:`DEMO_CHECKS` with the controls that must fail them;
3. runs each bundle's inference with the ``configs/`` overlays (every CAM method and three input attributions, the XAI
   metrics against the true masks, MLflow tracking into one sqlite store) through ``monai.bundle.run``, with the
   checks' verdicts as ``xai_sanity``, so that each map's description names the checks it passed and failed;
4. prints, per bundle, a verdict (which methods localise the lesion, which pass the randomisation checks) above its
   table (method x metric, with seconds per case), where everything went, and the time each stage took.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from monai_xai.atomic import atomic_write_text
from monai_xai.bundle import ExplainSettings, explain_bundle
from monai_xai.data import ensure_phantom_dataset
from monai_xai.describe import ENGLISH
from monai_xai.enums import SanityCheck
from monai_xai.handlers.records import RunRecords
from monai_xai.metrics.catalogue import SECONDS
from monai_xai.sanity import (
    MethodSanity,
    bundle_sanity_checks,
    non_discriminating,
    sanity_markdown,
    sanity_verdicts,
    write_sanity_verdicts,
)
from monai_xai.sanity.tracking import track_sanity

__all__ = [
    "DEMO_BUNDLES",
    "DEMO_CHECKS",
    "ALL_METHODS",
    "LOCALISES_POINTING_GAME",
    "LOCALISES_EHR_RATIO",
    "run_demo",
    "summary_rows",
    "with_road_combined",
    "format_table",
    "verdict",
]

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
    # input attributions through Captum (#32), at AttributionSettings' defaults: IG with 32 steps, SmoothGrad with
    # 16 samples, Occlusion with 8-voxel cubes
    "integrated_gradients",
    "smoothgrad",
    "occlusion",
)
# the bundles train on seed 0; the demo's cases come from another seed, so they are unseen
DEMO_SEED = 2026
# A method "localises" the lesion when its map's peak lands on it (pointing game, the bundles' tolerance) in at least
# this share of the cases with a lesion, and its EHR-AUC is at least this multiple of a random map's (the larger of
# the sanity checks' uniform and smooth baselines): issue #22's acceptance figures for the demo classifier.
LOCALISES_POINTING_GAME = 0.9
LOCALISES_EHR_RATIO = 5.0
# The randomisation checks the demo runs (with the controls): each explains every case once more, eMPRT none.
# sMPRT, which explains every case 2 x (n_noise - 1) more times, is left to ``monai-xai sanity --checks all``.
DEMO_CHECKS = (SanityCheck.TOP_DOWN, SanityCheck.BOTTOM_UP, SanityCheck.EMPRT, SanityCheck.RANDOM_LOGIT)


def bundles_dir() -> Path:
    """The repository's ``bundles/`` folder (next to the package in a checkout)."""
    return Path(__file__).resolve().parent.parent / "bundles"


def summary_rows(records: RunRecords) -> tuple[list[str], dict[str, dict[str, float]]]:
    """A run's metric names (the time last) and ``{method: {metric: mean over cases}}``, from its records."""
    metrics = [*records.score_metrics(), *([SECONDS] if SECONDS in records.metrics else [])]
    table = {
        method: {metric: value for metric, value in values.items() if metric in metrics}
        for method, values in records.means().items()
    }
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
    columns = [metric for metric in metrics if metric != SECONDS] + ([SECONDS] if SECONDS in metrics else [])
    header = ["method", *(("s/case" if column == SECONDS else column) for column in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, values in table.items():
        cells = [_cell(values[column]) if column in values else "" for column in columns]
        lines.append("| " + " | ".join([method, *cells]) + " |")
    return "\n".join(lines)


def _names(methods: Sequence[str], count: int) -> str:
    """ "all 10" when ``methods`` are all ``count`` methods, else "7 of 10 (gradcam, ...)"; "none of 10" when empty."""
    if len(methods) == count:
        return f"all {count}"
    if not methods:
        return f"none of {count}"
    return f"{len(methods)} of {count} ({', '.join(methods)})"


def _exceptions(failing: Sequence[str], passing: Sequence[str]) -> str:
    """The end of a verdict sentence: the methods that fail, with their figures ("; not: ..." after some that pass,
    "; all fail: ..." when none does)."""
    if not failing:
        return "."
    return f"; {'not' if passing else 'all fail'}: {', '.join(failing)}."


def _statistic(row: MethodSanity, check: str) -> str:
    """A check's statistic as the verdict line shows it: eMPRT's entropy rise signed, the Spearmans unsigned."""
    verdict = row.checks.get(SanityCheck(check))
    value = row.spearman if verdict is None else verdict.statistic
    return f"{value:+.2f}" if check == SanityCheck.EMPRT else f"{value:.2f}"


def _randomisation_verdict(rows: Sequence[MethodSanity], sanity: Sequence[MethodSanity]) -> str:
    """The verdict line's second sentence: which of ``rows`` pass every randomisation check that discriminates for
    the bundle (``sanity`` holds the controls too), and what the others fail."""
    verdicts = sanity_verdicts(sanity)
    checks = list(dict.fromkeys(check for row in rows for check in verdicts.get(row.method, {})))
    named = ENGLISH.join([ENGLISH.check_names[check] for check in checks]) if checks else "none"
    controls = [row for row in sanity if row.is_control]
    how = f"{named}; {len(controls)} controls fail {'it' if len(checks) == 1 else 'each'}" if controls else named
    passing = [row.method for row in rows if all(verdicts[row.method].values())]
    failing = []
    for row in rows:
        failed = [check for check, passed in verdicts[row.method].items() if not passed]
        if failed:
            details = ", ".join(f"{ENGLISH.check_names[check]} {_statistic(row, check)}" for check in failed)
            failing.append(f"{row.method} ({details})")
    line = f" Pass the randomisation {ENGLISH.check_words[len(checks) != 1]} ({how}): {_names(passing, len(rows))}"
    line += _exceptions(failing, passing)
    dropped = non_discriminating({row.method: row.checks for row in sanity})
    for check, by in dropped.items():
        line += f" {ENGLISH.check_names[check.value]} left out: {', '.join(by)} passes it."
    return line


def verdict(table: dict[str, dict[str, float]], sanity: Sequence[MethodSanity]) -> str:
    """One line on what a reader of the table needs first: which methods localise the lesion and which pass the
    randomisation checks.

    Args:
        table: ``{method: {metric: mean}}`` of the demo's table (needs ``pointing_game``).
        sanity: :func:`~monai_xai.sanity.bundle_sanity_checks` rows of the same cases and methods (the EHR-AUC over
            the random maps'; the randomisation checks' verdicts, or without further checks the Spearman correlation
            with the re-initialised network's maps), the controls' rows too: a check that a control passes does not
            discriminate and is left out, and said so.

    Returns:
        e.g. "Localise the lesion (pointing game >= 0.9, EHR-AUC >= 5x random maps): 9 of 10 (...); not: ablationcam
        (pointing game 0.67, EHR-AUC 62x). Pass the randomisation checks (top-down, bottom-up, eMPRT and random
        logit; 3 controls fail each): 9 of 10 (...); not: eigencam (top-down 0.91, bottom-up 0.75, random logit
        1.00)."
    """
    rows = [row for row in sanity if row.method in table]
    localising, not_localising = [], []
    for row in rows:
        pointing = table[row.method].get("pointing_game", float("nan"))
        ratio = row.localisation_ratio
        if pointing >= LOCALISES_POINTING_GAME and ratio >= LOCALISES_EHR_RATIO:
            localising.append(row.method)
        else:
            not_localising.append(f"{row.method} (pointing game {pointing:.2f}, EHR-AUC {ratio:.0f}x)")
    line = (
        f"Localise the lesion (pointing game >= {LOCALISES_POINTING_GAME:g}, EHR-AUC >= {LOCALISES_EHR_RATIO:g}x "
        f"random maps): {_names(localising, len(rows))}"
    )
    line += _exceptions(not_localising, localising)
    return line + _randomisation_verdict(rows, sanity)


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
        methods: methods to run (default: the ten CAMs and three input attributions, :data:`ALL_METHODS`).
        bundles: bundle folder names under ``bundles/``.

    Returns:
        bundle name -> its results folder.
    """
    output_dir = Path(output_dir).resolve()
    tracking_db = output_dir / "mlruns.db"
    phantom = {"n_cases": int(cases), "seed": DEMO_SEED, "positive_fraction": 0.5, "split": [0.0, 0.0, 1.0]}
    results: dict[str, Path] = {}
    records: dict[str, RunRecords] = {}
    stages: dict[str, float] = {}  # stage -> seconds, in the order they ran
    sanity: dict[str, list[MethodSanity]] = {}
    demo_started = time.perf_counter()
    for name in bundles:
        if not (bundles_dir() / name / "models" / "model.pt").is_file():
            raise FileNotFoundError(
                f"{bundles_dir() / name}/models/model.pt is missing; train the bundle first (see its docs/README.md)."
            )
    started = time.perf_counter()
    datalist = ensure_phantom_dataset(output_dir / "data", **phantom)
    stages["held-out phantoms"] = time.perf_counter() - started
    for name in bundles:
        bundle = bundles_dir() / name
        results[name] = output_dir / name
        started = time.perf_counter()
        print(f"\n== {name}: sanity checks on {cases} held-out phantom cases", flush=True)
        sanity[name] = bundle_sanity_checks(
            bundle,
            datalist=datalist,
            data_list_key="test",
            region_key="mask",
            methods=list(methods),
            checks=[check.value for check in DEMO_CHECKS],
            progress=False,
        )
        track_sanity(
            sanity[name],
            f"sqlite:///{tracking_db}",
            {"bundle": name, "cases": cases, "checks": ",".join(DEMO_CHECKS)},
            f"{name} sanity checks",
            experiment_name="monai_xai_demo",
        )
        verdicts = write_sanity_verdicts(sanity[name], output_dir / f"{name}_sanity_verdicts.json")
        stages[f"{name}: sanity checks"] = time.perf_counter() - started
        started = time.perf_counter()
        settings = ExplainSettings.from_bundle(bundle, overlays=(), xai_methods=list(methods))
        print(f"== {name}: explaining the same cases: {_what(settings)}", flush=True)
        (run,) = explain_bundle(
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
            xai_sanity=str(verdicts),
        )
        records[name] = run.records
        stages[f"{name}: CAMs, metrics, files and MLflow"] = time.perf_counter() - started
    cam_seconds = {}
    for name, folder in results.items():
        metrics, table = summary_rows(records[name])
        metrics = with_road_combined(metrics, table)
        cam_seconds[name] = sum(values.get(SECONDS, 0.0) for values in table.values()) * int(cases)
        line = verdict(table, sanity[name])
        atomic_write_text(
            folder / "sanity.md",
            f"# {name}: sanity checks of the demo's {cases} cases\n\n{line}\n\n{sanity_markdown(sanity[name])}\n",
        )
        print(f"\n### {name} (mean over cases; ROAD and deletion/insertion: score change / AUC)\n")
        print(f"{line}\n")
        print(format_table(metrics, table))
    print("\nWhere everything went:")
    for name, folder in results.items():
        print(
            f"  {name}: open {folder}/index.html (an interactive 3D page per case: the maps over the image, the "
            f"metrics, each map in words); tables {folder}/summary.md, sanity.md (the verdict and the sanity table), "
            f"cases.csv, descriptions.csv; heatmap NIfTIs, overlay PNGs and descriptions in {folder}/<case>/; "
            f"per-case metric CSVs in {folder}/per_metric/; each method's randomisation verdicts in "
            f"{output_dir / f'{name}_sanity_verdicts.json'}"
        )
    print(f"  test data: {output_dir / 'data'}")
    print(f"  browse the runs: mlflow ui --backend-store-uri sqlite:///{tracking_db}")
    print("\nTime per stage:")
    for stage, spent in stages.items():
        name = stage.split(":")[0]
        cams = f" (CAMs {cam_seconds[name]:.0f} s)" if "CAMs" in stage and name in cam_seconds else ""
        print(f"  {stage}: {spent:.0f} s{cams}")
    print(f"  total: {time.perf_counter() - demo_started:.0f} s")
    return results
