"""A study's report from its stored rows: CSV tables, plots and one Markdown page.

Written to ``<output_dir>/report/``:

- ``summary.csv``: per bundle x layer x method x metric: cases, undefined cases, mean, std, bootstrap CI of the mean,
  and whether the method passed the model-randomisation check; ``summary_per_class.csv`` the same per class (the
  datalist's label, else the explained class).
- ``paired_tests.csv``: per bundle x layer x metric, every pair of methods: paired t-test and Wilcoxon signed-rank
  test with Holm-corrected p values, Cohen's d_z and the rank-biserial correlation.
- ``ranking.csv``: methods ranked per metric; methods not significantly different (Holm-corrected paired t-test) from
  their group's leader share its group.
- ``anova_bundles.csv`` / ``anova_layers.csv``: one-way ANOVA and Tukey HSD across bundles (each at its first
  layer) and across the layers of each bundle, per method x metric.
- ``timing.csv``: seconds per case per method; ``sanity.csv``: the randomisation check; ``cases.csv``: predictions;
  ``iou_thresholds.csv``: the IoU thresholds tuned on the validation split (tuned mode).
- ``plots/<metric>.png`` (per-case values per method, one panel per bundle and layer), ``plots/timing.png``.
- ``report.md``: all of it for reading; a method that fails the randomisation check carries a mark in every table.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from monai_xai.atomic import atomic_path, atomic_write_text
from monai_xai.enums import IOU, IoUThresholdMode
from monai_xai.metrics.catalogue import SECONDS, higher_is_better
from monai_xai.metrics.stats import anova_tukey, bootstrap_ci, paired_comparisons, rank_methods
from monai_xai.sanity.randomisation import MAX_RANDOMISATION_SPEARMAN
from monai_xai.study.cases import study_cases
from monai_xai.study.spec import StudySpec
from monai_xai.study.store import study_store

__all__ = ["StudyReport", "study_tables", "write_report"]

# mark of a method that fails the model-randomisation check, in every Markdown table
FAILED_MARK = " ✗"


def _ordered_scores(scores: pd.DataFrame, case_order: list[str]) -> dict[tuple[str, str, str, str], np.ndarray]:
    """``{(bundle, layer, metric, method): values in case order}`` (NaN where a case has no value)."""
    vectors = {}
    for key, group in scores.groupby(["bundle", "layer", "metric", "method"], sort=False):
        values = group.set_index("case_id")["value"].reindex(case_order)
        vectors[key] = values.to_numpy(dtype=float)
    return vectors


def _summary_rows(spec: StudySpec, vectors: dict, by: str | None = None, classes: dict | None = None) -> list[dict]:
    rows = []
    for (bundle, layer, metric, method), values in vectors.items():
        groups = [(None, values)] if by is None else [(c, values[mask]) for c, mask in classes[bundle].items()]
        for group, subset in groups:
            finite = subset[~np.isnan(subset)]
            low, high = bootstrap_ci(subset, spec.confidence_level, spec.bootstrap_resamples, spec.statistics_seed)
            row = {"bundle": bundle, "layer": layer, "method": method, "metric": metric}
            row |= {by: group} if by else {}
            row |= {
                "n": int(finite.size),
                "n_undefined": int(subset.size - finite.size),
                "mean": float(finite.mean()) if finite.size else math.nan,
                "std": float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
                "ci_low": low,
                "ci_high": high,
            }
            rows.append(row)
    return rows


def _anova_rows(groups: dict[str, np.ndarray], context: dict, confidence_level: float) -> list[dict]:
    """ANOVA + Tukey rows (one per pair) for ``groups``; a note instead when a group has fewer than 2 values."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = anova_tukey(groups, confidence_level)
    except ValueError as error:
        return [{**context, "note": str(error)}]
    return [
        {
            **context,
            "f_statistic": result.f_statistic,
            "anova_pvalue": result.pvalue,
            "first": pair.first,
            "second": pair.second,
            "mean_difference": pair.mean_difference,
            "tukey_pvalue": pair.pvalue,
            "ci_low": pair.ci_low,
            "ci_high": pair.ci_high,
        }
        for pair in result.comparisons
    ]


def study_tables(spec: StudySpec) -> dict[str, pd.DataFrame]:
    """Every table of the report, computed from the stored rows (see the module docstring)."""
    return _tables(spec)[0]


def _tables(spec: StudySpec) -> tuple[dict[str, pd.DataFrame], dict[tuple[str, str, str, str], np.ndarray]]:
    """The report's tables and the per-case values they come from (``{(bundle, layer, metric, method): values}``)."""
    store = study_store(spec)
    try:
        scores, cases, sanity = store.table("scores"), store.table("cases"), store.table("sanity")
        thresholds = store.table("thresholds")
    finally:
        store.close()
    order = [case.case_id for case in study_cases(spec.data, Path(spec.output_dir))]
    scores = scores[scores["method"].isin(spec.methods) & scores["metric"].isin([*spec.metrics, SECONDS])]
    vectors = _ordered_scores(scores, order)
    metrics = [metric for metric in spec.metrics if any(key[2] == metric for key in vectors)]

    sanity_table = (
        sanity.groupby(["bundle", "layer", "method"], sort=False)["spearman"]
        .agg(n="count", spearman="mean")
        .reset_index()
    )
    sanity_table["passed"] = sanity_table["spearman"] <= MAX_RANDOMISATION_SPEARMAN
    passed = {(r.bundle, r.layer, r.method): bool(r.passed) for r in sanity_table.itertuples()}

    classes = {}
    for bundle, group in cases.groupby("bundle"):
        indexed = group.set_index("case_id").reindex(order)
        label = indexed["label"].where(indexed["label"].notna(), indexed["explained_class"]).map(_class_key, "ignore")
        classes[bundle] = {c: (label == c).to_numpy() for c in sorted(label.dropna().unique(), key=str)}

    summary = pd.DataFrame(_summary_rows(spec, vectors))
    summary["sanity_passed"] = [passed.get((r.bundle, r.layer, r.method)) for r in summary.itertuples()]
    per_class = pd.DataFrame(_summary_rows(spec, vectors, by="class", classes=classes))

    paired, ranking = [], []
    for bundle in spec.bundles:
        for layer in bundle.layers:
            for metric in [*metrics, SECONDS]:
                per_method = {
                    method: vectors[(bundle.name, layer, metric, method)]
                    for method in spec.methods
                    if (bundle.name, layer, metric, method) in vectors
                }
                if len(per_method) < 2:
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    comparisons = paired_comparisons(per_method)
                context = {"bundle": bundle.name, "layer": layer, "metric": metric}
                paired += [{**context, **vars(c)} for c in comparisons]
                ranked = rank_methods(per_method, comparisons, higher_is_better(metric), spec.alpha)
                ranking += [{**context, **vars(r)} for r in ranked]

    across_bundles, across_layers = [], []
    for metric in metrics:
        for method in spec.methods:
            if len(spec.bundles) > 1:
                groups = {
                    b.name: vectors[(b.name, b.layers[0], metric, method)]
                    for b in spec.bundles
                    if (b.name, b.layers[0], metric, method) in vectors
                }
                across_bundles += _anova_rows(groups, {"metric": metric, "method": method}, spec.confidence_level)
            for bundle in spec.bundles:
                if len(bundle.layers) > 1:
                    groups = {
                        layer: vectors[(bundle.name, layer, metric, method)]
                        for layer in bundle.layers
                        if (bundle.name, layer, metric, method) in vectors
                    }
                    context = {"bundle": bundle.name, "metric": metric, "method": method}
                    across_layers += _anova_rows(groups, context, spec.confidence_level)

    timing = summary[summary["metric"] == SECONDS].drop(columns=["metric", "n_undefined"])
    timing = timing.rename(columns={"mean": "seconds_per_case", "std": "seconds_std"})
    timing["relative_to_fastest"] = timing["seconds_per_case"] / timing.groupby(["bundle", "layer"])[
        "seconds_per_case"
    ].transform("min")
    tables = {
        "summary": summary,
        "summary_per_class": per_class,
        "paired_tests": pd.DataFrame(paired),
        "ranking": pd.DataFrame(ranking),
        "anova_bundles": pd.DataFrame(across_bundles),
        "anova_layers": pd.DataFrame(across_layers),
        "timing": timing.reset_index(drop=True),
        "sanity": sanity_table,
        "cases": cases,
        "iou_thresholds": thresholds.rename(columns={"value": "threshold"}),
    }
    return tables, vectors


def _class_key(value: object) -> int | str:
    """A case's class as the per-class tables group it: an int, or classes explained together (``"1+2"``)."""
    if isinstance(value, int | float | np.number):
        return int(value)
    return int(value) if str(value).isdigit() else str(value)


def _number(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) != 0 and (abs(value) < 10 ** -(digits - 1) or abs(value) >= 10**5):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}f}"


def _method_label(method: str, passed: bool | None) -> str:
    return method + (FAILED_MARK if passed is False else "")


def _markdown_table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _plots(spec: StudySpec, vectors: dict, folder: Path, metrics: list[str]) -> list[Path]:
    """One PNG per metric (per-case values per method, a panel per bundle and layer) and the timing chart."""
    folder.mkdir(parents=True, exist_ok=True)
    panels = [(bundle.name, layer) for bundle in spec.bundles for layer in bundle.layers]
    written = []
    for metric in [*metrics, SECONDS]:
        figure = Figure(figsize=(max(4.5, 0.9 * len(spec.methods)) * len(panels), 4))
        axes = figure.subplots(1, len(panels), squeeze=False)
        for axis, (bundle, layer) in zip(axes[0], panels):
            data = [vectors.get((bundle, layer, metric, method), np.array([])) for method in spec.methods]
            data = [values[~np.isnan(values)] for values in data]
            positions = [k for k, values in enumerate(data) if values.size]
            if positions:
                axis.boxplot([data[k] for k in positions], positions=positions, widths=0.6, showmeans=True)
                for k in positions:
                    jitter = np.linspace(-0.15, 0.15, data[k].size) if data[k].size > 1 else np.zeros(1)
                    axis.scatter(k + jitter, data[k], s=8, alpha=0.5, color="tab:blue")
            axis.set_xticks(range(len(spec.methods)), spec.methods, rotation=35, ha="right")
            axis.set_title(f"{bundle} / {layer}", fontsize=10)
            axis.set_ylabel("seconds per case" if metric == SECONDS else metric)
            if metric == SECONDS:
                axis.set_yscale("log")
            axis.grid(axis="y", alpha=0.3)
        better = "higher is better" if higher_is_better(metric) else "lower is better"
        figure.suptitle(f"{spec.name}: {metric} per case ({better})")
        figure.tight_layout()
        path = folder / f"{metric}.png"
        with atomic_path(path) as partial:
            figure.savefig(partial, dpi=110, format="png")
        written.append(path)
    return written


def _markdown(spec: StudySpec, tables: dict[str, pd.DataFrame], metrics: list[str], plots: list[Path]) -> str:
    summary, sanity = tables["summary"], tables["sanity"]
    passed = {(r.bundle, r.layer, r.method): bool(r.passed) for r in sanity.itertuples()}
    n_cases = int(summary["n"].add(summary["n_undefined"]).max()) if len(summary) else 0
    iou = {
        IoUThresholdMode.OTSU: "each map's own Otsu threshold",
        IoUThresholdMode.FIXED: f"the fixed threshold {spec.iou_value}",
        IoUThresholdMode.TUNED: (
            f"the threshold with the best mean IoU on the {spec.data.validation_key!r} cases (iou_thresholds.csv)"
        ),
    }
    lines = [
        f"# Study: {spec.name}",
        "",
        f"{n_cases} cases; bundles {', '.join(b.name for b in spec.bundles)}; methods {', '.join(spec.methods)}; "
        f"metrics {', '.join(metrics)}. Cells: mean ± std [bootstrap {spec.confidence_level:.0%} CI of the mean]. "
        f"Significance level {spec.alpha}, paired tests Holm-corrected over the method pairs of each metric.",
        "",
        f"A method marked{FAILED_MARK} fails the model-randomisation check (mean Spearman correlation between its "
        f"maps of the trained and of a weight-randomised network above {MAX_RANDOMISATION_SPEARMAN}): its maps do not "
        "depend enough on what the network learnt, whatever its scores.",
    ]
    if IOU in metrics:
        lines += ["", f"IoU binarises each map at {iou[spec.iou_mode]}."]
    for bundle in spec.bundles:
        for layer in bundle.layers:
            part = summary[(summary["bundle"] == bundle.name) & (summary["layer"] == layer)]
            lines += ["", f"## {bundle.name} / {layer}", ""]
            rows = []
            for method in spec.methods:
                row = [_method_label(method, passed.get((bundle.name, layer, method)))]
                for metric in [*metrics, SECONDS]:
                    cell = part[(part["method"] == method) & (part["metric"] == metric)]
                    if cell.empty:
                        row.append("")
                        continue
                    c = cell.iloc[0]
                    row.append(
                        f"{_number(c['mean'])} ± {_number(c['std'])} [{_number(c['ci_low'])}, {_number(c['ci_high'])}]"
                        + (f" ({int(c['n_undefined'])} undefined)" if c["n_undefined"] else "")
                    )
                rows.append(row)
            lines.append(_markdown_table(["method", *metrics, "seconds per case"], rows))
            ranking = tables["ranking"]
            if len(ranking):
                lines += ["", "Ranking (methods in one bracket are not significantly different):", ""]
                for metric in [*metrics, SECONDS]:
                    ranked = ranking[
                        (ranking["bundle"] == bundle.name) & (ranking["layer"] == layer) & (ranking["metric"] == metric)
                    ]
                    groups = [
                        "["
                        + ", ".join(_method_label(m, passed.get((bundle.name, layer, m))) for m in g["method"])
                        + "]"
                        for _, g in ranked.groupby("group", sort=True)
                    ]
                    better = "higher is better" if higher_is_better(metric) else "lower is better"
                    lines.append(f"- {metric} ({better}): " + " > ".join(groups))
    paired = tables["paired_tests"]
    if len(paired):
        lines += ["", "## Paired tests between methods", ""]
        lines.append(
            _markdown_table(
                [
                    "bundle / layer",
                    "metric",
                    "pair",
                    "n",
                    "mean diff",
                    "t p (Holm)",
                    "Wilcoxon p (Holm)",
                    "d_z",
                    "r_rb",
                ],
                (
                    [
                        f"{r.bundle} / {r.layer}",
                        r.metric,
                        f"{r.first} − {r.second}",
                        str(r.n_pairs),
                        _number(r.mean_difference),
                        _number(r.t_pvalue_holm),
                        _number(r.wilcoxon_pvalue_holm),
                        _number(r.cohens_dz, 2),
                        _number(r.rank_biserial, 2),
                    ]
                    for r in paired.itertuples()
                    if r.metric != SECONDS
                ),
            )
        )
    for name, title in (("anova_bundles", "across bundles"), ("anova_layers", "across layers")):
        table = tables[name]
        if not len(table):
            continue
        lines += ["", f"## One-way ANOVA and Tukey HSD {title}", ""]
        keys = ["metric", "method"] if name == "anova_bundles" else ["bundle", "metric", "method"]
        rows = []
        for key, group in table.groupby(keys, sort=False):
            first = group.iloc[0]
            if "note" in group and isinstance(first.get("note"), str):
                rows.append([" / ".join(map(str, key)), "n/a", first["note"]])
                continue
            significant = [
                f"{r.first} vs {r.second} (p {_number(r.tukey_pvalue)})"
                for r in group.itertuples()
                if r.tukey_pvalue < spec.alpha
            ]
            rows.append(
                [
                    " / ".join(map(str, key)),
                    f"F {_number(first['f_statistic'], 2)}, p {_number(first['anova_pvalue'])}",
                    "; ".join(significant) or "none",
                ]
            )
        lines.append(_markdown_table([" / ".join(keys), "ANOVA", f"Tukey pairs with p < {spec.alpha}"], rows))
    timing = tables["timing"]
    lines += ["", "## Time per case", ""]
    lines.append(
        _markdown_table(
            ["bundle / layer", "method", "seconds per case", "x fastest"],
            (
                [
                    f"{r.bundle} / {r.layer}",
                    _method_label(r.method, passed.get((r.bundle, r.layer, r.method))),
                    f"{_number(r.seconds_per_case)} ± {_number(r.seconds_std)}",
                    f"{r.relative_to_fastest:.1f}",
                ]
                for r in timing.itertuples()
            ),
        )
    )
    if len(sanity):
        lines += ["", "## Model-randomisation check", ""]
        lines.append(
            _markdown_table(
                ["bundle / layer", "method", "cases", "mean Spearman", "passed"],
                (
                    [f"{r.bundle} / {r.layer}", r.method, str(r.n), _number(r.spearman, 3), "yes" if r.passed else "no"]
                    for r in sanity.itertuples()
                ),
            )
        )
    lines += ["", "## Plots", ""] + [f"![{path.stem}](plots/{path.name})" for path in plots]
    lines += ["", "Per-class tables: summary_per_class.csv; every value: the study's rows.sqlite.", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class StudyReport:
    """A written study report.

    Attributes:
        folder: the report folder (``<output_dir>/report``).
        tables: the report's tables by name (``"summary"``, ``"sanity"``, ...), as written to ``<name>.csv``.
    """

    folder: Path
    tables: dict[str, pd.DataFrame]


def write_report(spec: StudySpec) -> StudyReport:
    """Write the report of the stored rows (see the module docstring)."""
    folder = Path(spec.output_dir) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    tables, vectors = _tables(spec)
    for name, table in tables.items():
        atomic_write_text(folder / f"{name}.csv", table.to_csv(index=False))
    metrics = [m for m in spec.metrics if m in set(tables["summary"].get("metric", []))]
    plots = _plots(spec, vectors, folder / "plots", metrics)
    atomic_write_text(folder / "report.md", _markdown(spec, tables, metrics, plots))
    atomic_write_text(folder / "study.json", json.dumps(spec.to_dict(), indent=2))
    return StudyReport(folder, tables)
