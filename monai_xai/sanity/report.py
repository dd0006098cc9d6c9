"""How the sanity checks report: a Markdown table per method, and pictures of the maps and of the cascade."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from monai_xai.atomic import atomic_write_text
from monai_xai.cams import LayerSpec
from monai_xai.enums import SanityCheck
from monai_xai.sanity.randomisation import MAX_RANDOMISATION_SPEARMAN, CascadeResult, RandomisationResult
from monai_xai.sanity.results import MIN_LOCALISATION_RATIO, MethodSanity, sanity_verdicts
from monai_xai.sanity.trust import MIN_EMPRT_RISE, non_discriminating
from monai_xai.visualize import plot_metric_curves, save_map_grid_png

__all__ = [
    "sanity_markdown",
    "trust_markdown",
    "write_sanity_verdicts",
    "save_randomisation_figure",
    "save_cascade_figure",
]


def _figure(value: float, digits: int = 4) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def sanity_markdown(summary: Sequence[MethodSanity]) -> str:
    """Markdown table of :func:`bundle_sanity_checks` results, one row per method (``n/a`` without ground truth);
    with further checks, their table follows (:func:`trust_markdown`)."""
    header = (
        "| method | EHR-AUC | random EHR-AUC (uniform / smooth) | ratio | Spearman vs randomised | "
        f"localisation (>= {MIN_LOCALISATION_RATIO:g}x) | randomisation (<= {MAX_RANDOMISATION_SPEARMAN:g}) | "
        "EHR-AUC of the randomised network |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    rows = []
    for row in summary:
        undefined = f" ({row.spearman_undefined} undefined)" if row.spearman_undefined else ""
        if not row.has_ground_truth:
            localisation = "n/a (no ground truth)"
        else:
            localisation = "pass" if row.localisation_passed else "fail"
            localisation += "" if row.uses_gradients else " (not required)"
        rows.append(
            f"| {row.method} | {_figure(row.ehr_auc)} | {_figure(row.random_uniform)} / {_figure(row.random_smooth)} | "
            f"{_figure(row.localisation_ratio, 2)} | {row.spearman:.3f}{undefined} | {localisation} | "
            f"{'pass' if row.randomisation_passed else 'fail'} | {_figure(row.randomised_ehr_auc)} |"
        )
    table = "\n".join([header, *rows])
    return table if not any(row.checks for row in summary) else f"{table}\n\n{trust_markdown(summary)}"


# how each check's statistic reads, and its pass rule
_AT_MOST = f"(<= {MAX_RANDOMISATION_SPEARMAN:g})"
_CHECK_HEADINGS = {
    SanityCheck.TOP_DOWN: f"top-down: absolute Spearman, all weights re-initialised {_AT_MOST}",
    SanityCheck.BOTTOM_UP: f"bottom-up: absolute Spearman, lower layers re-initialised {_AT_MOST}",
    SanityCheck.SMPRT: f"sMPRT: absolute Spearman of noise-smoothed maps {_AT_MOST}",
    SanityCheck.EMPRT: f"eMPRT: relative entropy rise (> {MIN_EMPRT_RISE:g})",
    SanityCheck.RANDOM_LOGIT: f"random logit: absolute Spearman with another class's map {_AT_MOST}",
    SanityCheck.DATA: f"data: absolute Spearman with the permuted-label network's maps {_AT_MOST}",
}


def trust_markdown(summary: Sequence[MethodSanity]) -> str:
    """Markdown table of the further randomisation checks (:mod:`monai_xai.sanity.trust`): a row per method, the
    controls last, a column per check with the statistic, its 95% bootstrap CI and the verdict. A check that a control
    passes is marked "not discriminating for this bundle" in its heading and in every cell of its column."""
    checks = list(dict.fromkeys(check for row in summary for check in row.checks))
    ordered = [row for row in summary if not row.is_control] + [row for row in summary if row.is_control]
    passed_by = non_discriminating({row.method: row.checks for row in ordered})
    headings = []
    for check in checks:
        heading = _CHECK_HEADINGS[check]
        if check in passed_by:
            heading += f" **not discriminating for this bundle** (passed by {', '.join(passed_by[check])})"
        headings.append(heading)
    lines = [
        "| method | " + " | ".join(headings) + " |",
        "|---|" + "---|" * len(checks),
    ]
    for row in ordered:
        cells = []
        for check in checks:
            verdict = row.checks.get(check)
            if verdict is None or math.isnan(verdict.statistic):
                cells.append("n/a")
                continue
            cell = (
                f"{verdict.statistic:.3f} [{_figure(verdict.ci_low, 3)}, {_figure(verdict.ci_high, 3)}] "
                f"{'pass' if verdict.passed else 'fail'}"
            )
            cell += f" ({verdict.undefined} undefined)" if verdict.undefined else ""
            cell += " (not discriminating)" if check in passed_by else ""
            cells.append(cell)
        name = f"{row.method} (control: must fail)" if row.is_control else row.method
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_sanity_verdicts(summary: Sequence[MethodSanity], path: str | Path) -> Path:
    """Each method's verdicts (:func:`~monai_xai.sanity.sanity_verdicts`) as the JSON file a bundle's ``xai_sanity``
    takes (read back by :func:`~monai_xai.describe.read_sanity_verdicts`), written whole or not at all; returns
    ``path``."""
    return atomic_write_text(path, json.dumps(sanity_verdicts(summary), indent=2) + "\n")


def _where(layers: LayerSpec | None) -> str:
    """Where a group of methods explains: its layer(s), or the input (attributions)."""
    return "the input" if layers is None else str(layers)


def save_randomisation_figure(
    result: RandomisationResult,
    image: torch.Tensor,
    region: torch.Tensor,
    groups: list[tuple[LayerSpec, tuple[str, ...]]],
    path: str | Path,
) -> None:
    """Both networks' maps of the first case of ``result`` side by side, Spearman (and layer) per method."""
    layer_of = {method: _where(layers) for layers, grouped in groups for method in grouped}
    labels = {
        method: f"{method}{'' if len(groups) == 1 else f' at {layer_of[method]}'}\nSpearman {rho[0].item():.2f}"
        for method, rho in result.correlation.items()
    }
    where = f"at {_where(groups[0][0])}" if len(groups) == 1 else "at each method's layer"
    has_region = bool(region.any())
    save_map_grid_png(
        image,
        {
            "trained": {method: maps[0] for method, maps in result.trained_maps.items()},
            "randomised": {method: maps[0] for method, maps in result.randomised_maps.items()},
        },
        path,
        mask=region if has_region else None,
        column_labels=labels,
        title=f"model randomisation test {where}{' (white: ground truth)' if has_region else ''}",
    )


def save_cascade_figure(
    cascade: CascadeResult, groups: list[tuple[LayerSpec, tuple[str, ...]]], n_cases: int, path: str | Path
) -> None:
    """Mean Spearman over the cases after each cascade step, one curve per method; "-> " marks the first step that
    reaches inside a CAM layer (from there on its activations change too)."""
    cam_layers = {
        name
        for layers, _ in groups
        if layers is not None  # input attributions: no layer
        for name in ([layers] if isinstance(layers, str) else layers)
    }
    labels = list(cascade.layers)
    for cam_layer in cam_layers:
        inside = [i for i, name in enumerate(labels) if name == cam_layer or name.startswith(f"{cam_layer}.")]
        if inside:
            labels[inside[0]] = f"-> {labels[inside[0]]}"
    steps = range(len(labels))
    plot_metric_curves(
        {method: (steps, rho.nanmean(dim=1).tolist()) for method, rho in cascade.correlation.items()},
        path,
        xlabel="randomised down to (cumulative, from the output)",
        ylabel="Spearman with the trained maps",
        title=f"cascading randomisation, {n_cases} case(s); CAM layer {', '.join(sorted(cam_layers))}",
        xtick_labels=labels,
        reference=MAX_RANDOMISATION_SPEARMAN,
    )
