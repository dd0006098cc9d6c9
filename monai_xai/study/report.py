"""A study's report from its stored rows: CSV tables, plots and one Markdown page.

Written to ``<output_dir>/report/``:

- ``summary.csv``: per bundle x layer x method x metric: cases, undefined cases, mean, std, bootstrap CI of the mean,
  whether the method passed the model-randomisation check and whether the metric passed its reliability check;
  ``summary_per_class.csv`` the same per class (the datalist's label, else the explained class).
- ``paired_tests.csv``: per bundle x layer x metric, every pair of methods: paired t-test and Wilcoxon signed-rank
  test with Holm-corrected p values, Cohen's d_z and the rank-biserial correlation.
- ``ranking.csv``: methods ranked per metric; methods not significantly different (Holm-corrected paired t-test) from
  their group's leader share its group; ``metric_reliable`` as in ``summary.csv`` (empty: undecided or not checked).
- ``anova_bundles.csv`` / ``anova_layers.csv``: one-way ANOVA and Tukey HSD across bundles (each at its first
  layer) and across the layers of each bundle, per method x metric.
- ``reliability.csv``: per bundle x layer x metric, the metric's reliability check (the change under each minor and
  disruptive perturbation, each disruptive one's Wilcoxon p of changing it more than the minor ones, verdict;
  :mod:`monai_xai.sanity.metric_reliability`);
  ``concordance.csv``: per bundle x layer, Kendall's W of the methods' rankings across the metrics, all of them and
  the reliable ones, with permutation p-values.
- ``timing.csv``: seconds per case per method; ``sanity.csv``: the randomisation check; ``cases.csv``: predictions;
  ``iou_thresholds.csv``: the IoU thresholds tuned on the validation split (tuned mode); ``failed_cases.csv``: the
  cases that could not be loaded (bundle, case, files, the underlying error), left out of every other table.
- ``plots/<metric>.png`` (per-case values per method, one panel per bundle and layer), ``plots/timing.png``.
- ``report.md``: all of it for reading, opening with "Can these numbers be trusted?" (the checks above and which
  rankings survive them); a method that fails the randomisation check carries a mark in every table, and so does a
  metric that fails its reliability check.
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
from monai_xai.metrics.stats import anova_tukey, bootstrap_ci, kendalls_w, paired_comparisons, rank_methods
from monai_xai.sanity.metric_reliability import MAX_NOISE_CHANGE, metric_reliability, min_pairs
from monai_xai.sanity.randomisation import MAX_RANDOMISATION_SPEARMAN
from monai_xai.study.cases import study_cases
from monai_xai.study.spec import StudySpec
from monai_xai.study.store import study_store

__all__ = ["StudyReport", "study_tables", "write_report"]

# mark of a method that fails the model-randomisation check, in every Markdown table
FAILED_MARK = " ✗"
# mark of a metric that fails its reliability check, in every Markdown table that ranks by it
UNRELIABLE_MARK = " ⚠"
# permutations of the concordance's p-value
CONCORDANCE_PERMUTATIONS = 2000
# the reliability rows' perturbations (store column: name in the report), minor and disruptive
MINOR_PERTURBATIONS = {"input_noise": "input noise", "model_noise": "model noise"}
DISRUPTIVE_PERTURBATIONS = {"control": "random map", "randomised": "random model"}


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


def _reliability_rows(spec: StudySpec, scores: pd.DataFrame, checked: pd.DataFrame) -> list[dict]:
    """Per bundle x layer x metric, :func:`~monai_xai.sanity.metric_reliability.metric_reliability` of the stored
    clean scores against the reliability rows of the same (method, case)."""
    if not len(checked):
        return []
    keys = ["bundle", "layer", "method", "case_id", "metric"]
    paired = checked.merge(scores[[*keys, "value"]], on=keys, how="inner")
    rows = []
    for (bundle, layer, metric), group in paired.groupby(["bundle", "layer", "metric"], sort=False):
        minor = {name: group[column] for column, name in MINOR_PERTURBATIONS.items()}
        disruptive = {name: group[column] for column, name in DISRUPTIVE_PERTURBATIONS.items()}
        result = metric_reliability(group["value"], minor, disruptive, spec.alpha)
        defined = group["value"].notna()
        row = {"bundle": bundle, "layer": layer, "metric": metric, "n_pairs": result.n_pairs}
        row |= {f"n_{column}_changed": int(group.loc[defined, column].isna().sum()) for column in MINOR_PERTURBATIONS}
        row |= {"spread": result.spread, "noise_change": result.noise_change}
        columns = {**MINOR_PERTURBATIONS, **DISRUPTIVE_PERTURBATIONS}
        row |= {f"{column}_change": result.changes[name] for column, name in columns.items()}
        row |= {f"pvalue_{column}": result.pvalues[name] for column, name in DISRUPTIVE_PERTURBATIONS.items()}
        row |= {
            "resilient": result.resilient,
            "reactive": result.reactive,
            "reliable": result.reliable,
            "verdict": result.verdict,
        }
        rows.append(row)
    return rows


def _reliable_metrics(reliability: pd.DataFrame) -> dict[tuple[str, str, str], bool | None]:
    """``{(bundle, layer, metric): True, False or None (undecided)}`` of the reliability table."""
    return {
        (r.bundle, r.layer, r.metric): None if r.reliable is None or r.reliable != r.reliable else bool(r.reliable)
        for r in reliability.itertuples()
    }


def _concordance_rows(spec: StudySpec, summary: pd.DataFrame, reliable: dict[tuple[str, str, str], bool]) -> list[dict]:
    """Per bundle x layer, Kendall's W of the methods' mean scores across the metrics (each oriented so that higher
    is better): all metrics, and the reliable ones when a reliability check ran and found some metric not reliable."""
    rows = []
    for bundle in spec.bundles:
        for layer in bundle.layers:
            part = summary[(summary["bundle"] == bundle.name) & (summary["layer"] == layer)]
            means = part[part["metric"] != SECONDS].pivot(index="metric", columns="method", values="mean")
            if means.empty:
                continue
            means = means.reindex(columns=[m for m in spec.methods if m in means.columns])
            oriented = means.mul([1.0 if higher_is_better(metric) else -1.0 for metric in means.index], axis=0)
            subsets = {"all": list(oriented.index)}
            trusted = [m for m in oriented.index if reliable.get((bundle.name, layer, m)) is True]
            if trusted != subsets["all"] and any((bundle.name, layer, m) in reliable for m in oriented.index):
                subsets["reliable"] = trusted
            for name, metrics in subsets.items():
                result = kendalls_w(oriented.loc[metrics].to_numpy(), CONCORDANCE_PERMUTATIONS, spec.statistics_seed)
                rows.append(
                    {
                        "bundle": bundle.name,
                        "layer": layer,
                        "metrics": name,
                        "n_metrics": result.n_rankings,
                        "n_methods": result.n_items,
                        "kendalls_w": result.w,
                        "pvalue": result.pvalue,
                    }
                )
    return rows


def study_tables(spec: StudySpec) -> dict[str, pd.DataFrame]:
    """Every table of the report, computed from the stored rows (see the module docstring)."""
    return _tables(spec)[0]


def _tables(spec: StudySpec) -> tuple[dict[str, pd.DataFrame], dict[tuple[str, str, str, str], np.ndarray]]:
    """The report's tables and the per-case values they come from (``{(bundle, layer, metric, method): values}``)."""
    store = study_store(spec)
    try:
        scores, cases, sanity = store.table("scores"), store.table("cases"), store.table("sanity")
        thresholds, failed, checked = store.table("thresholds"), store.table("failed"), store.table("reliability")
    finally:
        store.close()
    # a case that could not be loaded for some bundle is left out of every table (the methods stay paired)
    left_out = set(failed["case_id"])
    order = [case.case_id for case in study_cases(spec.data, Path(spec.output_dir)) if case.case_id not in left_out]
    if not order:
        raise RuntimeError(
            f"no case of study {spec.name!r} could be loaded ({len(failed)} failed, see the warnings; e.g. "
            f"{failed['case_id'].iloc[0] if len(failed) else '-'}: {failed['reason'].iloc[0] if len(failed) else '-'})."
        )
    scores = scores[scores["method"].isin(spec.methods) & scores["metric"].isin([*spec.metrics, SECONDS])]
    checked = checked[
        checked["method"].isin(spec.methods) & checked["metric"].isin(spec.metrics) & checked["case_id"].isin(order)
    ]
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

    reliability = pd.DataFrame(_reliability_rows(spec, scores, checked))
    reliable = _reliable_metrics(reliability)
    summary["metric_reliable"] = [reliable.get((r.bundle, r.layer, r.metric)) for r in summary.itertuples()]
    ranking = [
        {**row, "metric_reliable": reliable.get((row["bundle"], row["layer"], row["metric"]))} for row in ranking
    ]
    concordance = pd.DataFrame(_concordance_rows(spec, summary, reliable))

    timing = summary[summary["metric"] == SECONDS].drop(columns=["metric", "n_undefined", "metric_reliable"])
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
        "reliability": reliability,
        "concordance": concordance,
        "cases": cases,
        "iou_thresholds": thresholds.rename(columns={"value": "threshold"}),
        "failed_cases": failed,
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


def _metric_label(metric: str, reliable: bool | None) -> str:
    return metric + (UNRELIABLE_MARK if reliable is False else "")


def _weakest(*pvalues: float) -> float:
    """The largest of the p-values that exist (NaN when none)."""
    return max((p for p in pvalues if not math.isnan(p)), default=math.nan)


def _changed_note(row: object) -> str:
    """How many of a reliability row's cases each minor perturbation left out (it changed their prediction)."""
    changed = [
        f"{count} left out of the {name}"
        for column, name in MINOR_PERTURBATIONS.items()
        if (count := getattr(row, f"n_{column}_changed"))
    ]
    return f" ({', '.join(changed)})" if changed else ""


def _trust_lines(spec: StudySpec, tables: dict[str, pd.DataFrame]) -> list[str]:
    """The report's "Can these numbers be trusted?" section: the randomisation check's count, the metrics'
    reliability, their agreement (Kendall's W) and, per bundle and layer, the rankings that survive."""
    sanity, reliability, concordance = tables["sanity"], tables["reliability"], tables["concordance"]
    reliable = _reliable_metrics(reliability)
    lines = ["", "## Can these numbers be trusted?", ""]
    if len(sanity):
        failing = sanity[~sanity["passed"]]
        lines.append(
            f"**Methods.** {len(sanity) - len(failing)} of {len(sanity)} method x layer pairs pass the "
            "model-randomisation check (table at the end)"
            + (f"; the {len(failing)} that fail it carry{FAILED_MARK} everywhere." if len(failing) else ".")
        )
    else:
        lines.append("**Methods.** No model-randomisation check ran (sanity.cases is 0).")
    lines.append("")
    if not len(reliability):
        lines.append(
            "**Metrics.** No reliability check ran (reliability.cases is 0): every ranking below is unchecked."
        )
    else:
        lines += [
            f"**Metrics.** Each metric was computed again on the first {spec.reliability_cases} cases after two minor "
            f"perturbations, Gaussian noise of {spec.reliability_noise:g} x each image's range on the input and "
            f"multiplicative noise of {spec.reliability_noise:g} on every weight (a case whose prediction one changes "
            "is left out of it), each case explained again; and after two disruptive ones, a random map in place of "
            "each method's and the map of the network with every weight re-initialised (for the trained network's "
            "class). A reliable metric is resilient (the minor perturbations move it by at most "
            f"{MAX_NOISE_CHANGE} of its spread over the cases and methods, on average) and reactive (each disruptive "
            f"one moves it more than the minor ones: one-sided Wilcoxon p < {spec.alpha}). A metric that fails "
            f"carries{UNRELIABLE_MARK} in every table that ranks by it; its ranking says as much about the metric as "
            f"about the methods. With fewer than {min_pairs(spec.alpha)} pairs (cases x methods where the metric is "
            f"defined) the test cannot reach p < {spec.alpha}: such a metric is undecided, neither marked nor "
            "trusted. Changes in units of the metric's spread (minor (mean): each pair's mean over the minor "
            "perturbations that kept its prediction, averaged); p: the larger of the two tests'.",
            "",
            _markdown_table(
                [
                    "bundle / layer",
                    "metric",
                    "pairs",
                    "input noise",
                    "model noise",
                    "minor (mean)",
                    "random map",
                    "random model",
                    "p",
                    "verdict",
                ],
                (
                    [
                        f"{r.bundle} / {r.layer}",
                        r.metric,
                        str(r.n_pairs) + _changed_note(r),
                        _number(r.input_noise_change, 2),
                        _number(r.model_noise_change, 2),
                        _number(r.noise_change, 2),
                        _number(r.control_change, 2),
                        _number(r.randomised_change, 2),
                        _number(_weakest(r.pvalue_control, r.pvalue_randomised), 3),
                        r.verdict,
                    ]
                    for r in reliability.itertuples()
                ),
            ),
        ]
    if len(concordance):
        lines += [
            "",
            "**Agreement.** Kendall's W of the methods' rankings across the metrics (1: every metric orders the "
            f"methods alike; 0: no agreement), p from {CONCORDANCE_PERMUTATIONS} random rankings:",
            "",
            _markdown_table(
                ["bundle / layer", "metrics", "W", "p"],
                (
                    [
                        f"{r.bundle} / {r.layer}",
                        f"{r.metrics} ({r.n_metrics})",
                        _number(r.kendalls_w, 3),
                        _number(r.pvalue, 3),
                    ]
                    for r in concordance.itertuples()
                ),
            ),
        ]
    if len(reliability):
        lines += ["", "**Rankings that survive** (by a reliable metric):", ""]
        for bundle in spec.bundles:
            for layer in bundle.layers:
                part = list(
                    reliability[(reliability["bundle"] == bundle.name) & (reliability["layer"] == layer)].itertuples()
                )
                kept = [r.metric for r in part if reliable[(r.bundle, r.layer, r.metric)] is True]
                dropped = [
                    f"{r.metric} ({r.verdict})" for r in part if reliable[(r.bundle, r.layer, r.metric)] is False
                ]
                unchecked = [r.metric for r in part if reliable[(r.bundle, r.layer, r.metric)] is None]
                lines.append(
                    f"- {bundle.name} / {layer}: {', '.join(kept) or 'none'}"
                    + (f"; not: {', '.join(dropped)}" if dropped else "")
                    + (f"; undecided (too few pairs): {', '.join(unchecked)}" if unchecked else "")
                )
    return lines


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
    failed = tables["failed_cases"]
    if len(failed):
        lines += [
            "",
            f"**{failed['case_id'].nunique()} case(s) could not be loaded and are left out of every table** "
            "(failed_cases.csv; a resume tries them again):",
            "",
        ]
        lines += [f"- {row.bundle}: {row.case_id} ({row.files}): {row.reason}" for row in failed.head(20).itertuples()]
        if len(failed) > 20:
            lines.append(f"- ... and {len(failed) - 20} more")
    if IOU in metrics:
        lines += ["", f"IoU binarises each map at {iou[spec.iou_mode]}."]
    lines += _trust_lines(spec, tables)
    reliable = _reliable_metrics(tables["reliability"])
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
            header = [_metric_label(metric, reliable.get((bundle.name, layer, metric))) for metric in metrics]
            lines.append(_markdown_table(["method", *header, "seconds per case"], rows))
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
                    label = _metric_label(metric, reliable.get((bundle.name, layer, metric)))
                    lines.append(f"- {label} ({better}): " + " > ".join(groups))
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
