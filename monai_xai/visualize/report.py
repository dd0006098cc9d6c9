"""Interactive HTML reports: one self-contained page per case (the image, each method's heatmap as a switchable
overlay, the ground-truth and predicted outlines, three orthogonal views and a 3D render, the case's metrics and text
explanations), and an index page per run.

The viewer is NiiVue (``vendor/niivue/``, its UMD build at a pinned version, see its README), inlined in each page
with the volumes, so a page needs nothing else: no sibling file, no network, no browser storage. It therefore renders
from disk and inside MLflow's sandboxed artifact iframe alike.

Volumes are embedded as base64 of gzipped NIfTI-1 bytes (nibabel) with the image's affine as sform and qform, so NiiVue
places every layer in world space:

- the image is windowed to its 0.5th..99.5th percentiles and stored as uint8 (a 2D 3-channel image, a photo, as RGB);
  the heatmaps and outlines share its grid;
- each map, in [0, 1] as the engine gives it, is quantised to uint8: ``round(255 * clip(map, 0, 1))`` (NaN as 0),
  with ``scl_slope = 1/255`` in its header, so the viewer (and nibabel's ``get_fdata``) reads it back in [0, 1] to
  within 1/510;
- each mask (ground truth, prediction) is stored as its outline: the mask's voxels with a neighbour (6-connected in
  3D, 4-connected in 2D) outside it, 1 on the outline and 0 elsewhere.

A 96^3 case with 10 methods is about 7.5 MB: NiiVue 2.3 MB, a noisy MR-like image 1 MB, each CAM-like map 0.4 MB
(base64 included).

The page reads its initial state from the URL fragment, e.g. ``case_report.html#method=hirescam&colormap=hot&
opacity=0.6&threshold=0.3&view=axial``; once loaded its ``<body>`` has ``data-status="ready"`` and
``data-method=<shown method>`` (``data-status="error"`` and the message on the page when a volume cannot be shown).
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from scipy import ndimage

from monai_xai.atomic import atomic_write_text
from monai_xai.utils import affine_4x4

__all__ = [
    "NIIVUE_VERSION",
    "REPORT_SUFFIX",
    "encode_case_volumes",
    "decode_volume",
    "read_case_report",
    "render_case_report",
    "write_case_report",
    "write_index",
]

NIIVUE_VERSION = "0.69.0"
REPORT_SUFFIX = "_report.html"
# the image window, in percentiles of its voxels
IMAGE_WINDOW = (0.5, 99.5)
_PAYLOAD_ID = "xai-report-data"
_PAYLOAD_PATTERN = re.compile(rf'<script type="application/json" id="{_PAYLOAD_ID}">(.*?)</script>', re.DOTALL)
_MARKERS = re.compile(r"/\*@(PAYLOAD|NIIVUE|APP|STYLE)@\*/")


@cache
def _asset(name: str) -> str:
    return resources.files("monai_xai.visualize").joinpath(name).read_text(encoding="utf-8")


def _as_array(value: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(value, MetaTensor):
        value = value.as_tensor()
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _nifti_base64(volume: np.ndarray, affine: np.ndarray, slope: float = 1.0) -> str:
    """base64 of the gzipped NIfTI-1 bytes of a (*spatial) volume, ``affine`` as sform and qform (2D: one slice),
    ``slope`` as ``scl_slope`` (what a stored value is worth)."""
    data = volume[..., None] if volume.ndim == 2 else volume
    image = nib.Nifti1Image(data, affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    if data.dtype.names is None:
        image.header.set_slope_inter(slope, 0.0)
    return base64.b64encode(gzip.compress(image.to_bytes(), compresslevel=9, mtime=0)).decode("ascii")


def decode_volume(encoded: str) -> nib.Nifti1Image:
    """The NIfTI image behind one embedded volume (the inverse of the encoding in :func:`encode_case_volumes`)."""
    return nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(encoded)))


def _windowed_image(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """(C, *spatial) image -> (*spatial) uint8 (channel 0) or, for a 2D 3-channel image, RGB24; and whether RGB."""
    values = np.nan_to_num(image.astype(np.float32))
    rgb = image.shape[0] == 3 and image.ndim == 3
    values = values if rgb else values[:1]
    low, high = np.percentile(values, IMAGE_WINDOW)
    scaled = np.clip((values - low) / (high - low), 0, 1) if high > low else np.zeros_like(values)
    pixels = np.round(scaled * 255).astype(np.uint8)
    if not rgb:
        return pixels[0], False
    colours = np.empty(pixels.shape[1:], dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    for channel, name in enumerate("RGB"):
        colours[name] = pixels[channel]
    return colours, True


def _quantised(saliency: np.ndarray) -> np.ndarray:
    """A map in [0, 1] as uint8 0..255 (NaN as 0, values outside [0, 1] clipped)."""
    return np.round(np.clip(np.nan_to_num(saliency.astype(np.float32), nan=0.0), 0, 1) * 255).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    """uint8 outline of a (*spatial) mask: its voxels with a face neighbour outside it (the grid's edge counts as
    outside)."""
    region = mask > 0.5
    inner = ndimage.binary_erosion(region, structure=ndimage.generate_binary_structure(region.ndim, 1), border_value=0)
    return (region & ~inner).astype(np.uint8)


def _peak_mm(saliency: np.ndarray, affine: np.ndarray) -> list[float]:
    """World position (mm) of a (*spatial) map's largest value (the first in C order; the middle of an empty map)."""
    voxel = (
        np.unravel_index(int(np.argmax(saliency)), saliency.shape)
        if saliency.max() > 0
        else tuple(n // 2 for n in saliency.shape)
    )
    position = affine @ np.array([*voxel, *([0] * (3 - len(voxel))), 1.0])
    return [round(float(v), 4) for v in position[:3]]


def encode_case_volumes(
    image: torch.Tensor | np.ndarray,
    maps: Mapping[str, torch.Tensor | np.ndarray],
    affine: torch.Tensor | np.ndarray | None = None,
    masks: Mapping[str, torch.Tensor | np.ndarray | None] | None = None,
) -> dict[str, Any]:
    """One case's volumes as the compact, JSON-ready payload a report page embeds (see the module docstring).

    Args:
        image: (C, *spatial) image, 2D or 3D; channel 0 is shown (a 2D 3-channel image in colour).
        maps: ``{method: (1, *spatial) map in [0, 1]}`` on the image's grid.
        affine: 4x4 voxel-to-world affine (3x3 for 2D); None: the image's MetaTensor affine, else the identity.
        masks: ``{name: (1, *spatial) mask}`` (e.g. ``{"ground truth": ..., "prediction": ...}``) on the image's
            grid, shown as outlines; None values are left out.

    Returns:
        ``{"spatial_dims", "rgb", "image", "maps": {method: ...}, "peaks": {method: [x, y, z] mm},
        "masks": {name: ...}}``, each volume a base64 string of a gzipped NIfTI.

    Raises:
        ValueError: an image that is not (C, *spatial) 2D/3D, no map, or a map or mask not on the image's grid.
    """
    pixels = _as_array(image)
    if pixels.ndim not in (3, 4):
        raise ValueError(
            f"the image must be channel-first 2D (C, H, W) or 3D (C, H, W, D), got shape {pixels.shape}; add the "
            "channel dim (image[None]) to a (H, W[, D]) array."
        )
    spatial = pixels.shape[1:]
    if not maps:
        raise ValueError("no map to show: pass maps={method: (1, *spatial) map}.")
    if affine is None and isinstance(image, MetaTensor):
        affine = image.affine
    world = np.eye(4) if affine is None else affine_4x4(affine, len(spatial))

    def on_grid(name: str, value: Any) -> np.ndarray:
        array = _as_array(value)
        if array.shape != (1, *spatial):
            raise ValueError(
                f"the {name} has shape {array.shape}, but the image is {pixels.shape}: give it as (1, *spatial) on "
                f"the image's grid (1, {', '.join(map(str, spatial))}), as the engine's saliency_<method> maps are."
            )
        return array[0]

    windowed, rgb = _windowed_image(pixels)
    payload: dict[str, Any] = {
        "spatial_dims": len(spatial),
        "rgb": rgb,
        "image": _nifti_base64(windowed, world),
        "maps": {},
        "peaks": {},
        "masks": {},
    }
    for method, saliency in maps.items():
        quantised = _quantised(on_grid(f"{method} map", saliency))
        payload["maps"][method] = _nifti_base64(quantised, world, slope=1 / 255)
        payload["peaks"][method] = _peak_mm(quantised, world)
    for name, mask in (masks or {}).items():
        if mask is not None:
            payload["masks"][name] = _nifti_base64(_outline(on_grid(f"{name} mask", mask)), world)
    return payload


def _json_for_script(value: Any) -> str:
    """JSON that can sit inside a ``<script>`` element (no ``</script>``, no ``<!--``), NaN as null."""
    text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _finite_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def render_case_report(
    path: str | Path,
    volumes: Mapping[str, Any],
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    descriptions: Mapping[str, str] | None = None,
    confidence: str | None = None,
    title: str = "case",
    index_href: str | None = None,
) -> Path:
    """Write a case's report page from its encoded volumes (:func:`encode_case_volumes`).

    Args:
        path: the ``.html`` file to write (its folder is created).
        volumes: the case's payload from :func:`encode_case_volumes`.
        metrics: ``{method: {metric: value}}`` for the case's metrics table (non-finite values shown as "-").
        descriptions: ``{method: text}``, each map in words, shown under the viewer for the shown method.
        confidence: the prediction and its confidence, e.g. ``"lesion, 93.7% (calibrated)"``, shown in the header.
        title: the page's title (the case's name).
        index_href: link back to the run's index page (relative to ``path``), or None.

    Returns:
        ``path``.
    """
    methods = list(volumes["maps"])
    payload = {
        "title": title,
        "methods": methods,
        "volumes": dict(volumes),
        "metrics": {
            method: {name: _finite_or_none(value) for name, value in values.items()}
            for method, values in (metrics or {}).items()
        },
        "descriptions": dict(descriptions or {}),
        "confidence": confidence,
        "index_href": index_href,
        "niivue_version": NIIVUE_VERSION,
    }
    parts = {
        "PAYLOAD": _json_for_script(payload),
        "NIIVUE": _asset("vendor/niivue/niivue.umd.js"),
        "APP": _asset("report_app.js"),
        "STYLE": _asset("report.css"),
    }
    page = _MARKERS.sub(lambda match: parts[match.group(1)], _asset("report_case.html"))
    page = page.replace("@TITLE@", html.escape(f"{title}: explanation report"), 1)
    return atomic_write_text(path, page)


def write_case_report(
    path: str | Path,
    image: torch.Tensor | np.ndarray,
    maps: Mapping[str, torch.Tensor | np.ndarray],
    affine: torch.Tensor | np.ndarray | None = None,
    masks: Mapping[str, torch.Tensor | np.ndarray | None] | None = None,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    descriptions: Mapping[str, str] | None = None,
    confidence: str | None = None,
    title: str = "case",
    index_href: str | None = None,
) -> Path:
    """Write one case's self-contained interactive report (see the module docstring).

    Example::

        write_case_report("out/c0/c0_report.html", image, {"gradcam": cam, "hirescam": hires},
                          masks={"ground truth": label}, metrics={"gradcam": {"ehr_auc": 0.61}}, title="c0")

    Args:
        path: the ``.html`` file to write.
        image: (C, *spatial) image, 2D or 3D (windowed to uint8 in the page).
        maps: ``{method: (1, *spatial) map in [0, 1]}`` on the image's grid (quantised to uint8 0..255).
        affine: 4x4 voxel-to-world affine; None: the image's MetaTensor affine, else the identity.
        masks: ``{name: (1, *spatial) mask}`` shown as outlines, e.g. ground truth and prediction.
        metrics: ``{method: {metric: value}}``.
        descriptions: ``{method: text}``.
        confidence: the prediction and its confidence, shown in the header.
        title: the case's name.
        index_href: link back to the run's index page, relative to ``path``.

    Returns:
        ``path``.

    Raises:
        ValueError: see :func:`encode_case_volumes`.
    """
    volumes = encode_case_volumes(image, maps, affine, masks)
    return render_case_report(path, volumes, metrics, descriptions, confidence, title, index_href)


def read_case_report(path: str | Path) -> dict[str, Any]:
    """The payload of a report page, its volumes decoded: ``image`` and each of ``maps`` / ``masks`` as a
    ``nibabel.Nifti1Image``; the other entries (``title``, ``methods``, ``metrics``, ...) as written."""
    match = _PAYLOAD_PATTERN.search(Path(path).read_text(encoding="utf-8"))
    if match is None:
        raise ValueError(f"{path} is not a monai-xai case report (no {_PAYLOAD_ID} script).")
    payload = json.loads(match.group(1))
    volumes = payload.pop("volumes")
    payload["image"] = decode_volume(volumes["image"])
    payload["maps"] = {method: decode_volume(data) for method, data in volumes["maps"].items()}
    payload["masks"] = {name: decode_volume(data) for name, data in volumes["masks"].items()}
    payload["peaks"] = volumes["peaks"]
    payload["spatial_dims"], payload["rgb"] = volumes["spatial_dims"], volumes["rgb"]
    return payload


def _cell(value: Any) -> str:
    """A table cell: text as it is, a number with 3 decimals (small ones in scientific notation), else "-"."""
    if isinstance(value, str) and value:
        number = _finite_or_none(value)
        return html.escape(value) if number is None and value.lower() != "nan" else _cell(number)
    if isinstance(value, bool) or value is None or value == "":
        return "-" if value in (None, "") else str(value)
    number = _finite_or_none(value)
    if number is None:
        return "-"
    return f"{number:.3f}" if number == 0 or abs(number) >= 0.01 else f"{number:.2e}"


def write_index(
    path: str | Path,
    cases: Sequence[Mapping[str, Any]],
    summary: Mapping[str, Mapping[str, float]] | None = None,
    title: str = "Explanation report",
) -> Path:
    """Write a run's index page: one row per case linking to its report, then the run's summary table.

    Args:
        path: the ``.html`` file to write.
        cases: one mapping per case: ``"case"`` (name), ``"href"`` (its report, relative to ``path``), then any
            further columns shown as they are (e.g. ``"prediction"``).
        summary: ``{metric: {method: mean}}`` over the run, shown as a method x metric table.
        title: the page's heading.

    Returns:
        ``path``.
    """
    columns = list(dict.fromkeys(key for row in cases for key in row if key not in ("case", "href")))
    lines = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_asset('report.css')}</style></head>",
        '<body class="index" data-status="ready">',
        f"<h1>{html.escape(title)}</h1>",
        f"<h2>Cases ({len(cases)})</h2>",
        '<table id="cases"><thead><tr><th>case</th>' + "".join(f"<th>{html.escape(c)}</th>" for c in columns),
        "</tr></thead><tbody>",
    ]
    for row in cases:
        link = f'<a href="{html.escape(str(row["href"]), quote=True)}">{html.escape(str(row["case"]))}</a>'
        lines.append(f"<tr><td>{link}</td>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns) + "</tr>")
    lines.append("</tbody></table>")
    if summary:
        metric_names = list(summary)
        methods = list(dict.fromkeys(method for values in summary.values() for method in values))
        lines += [
            "<h2>Summary (mean over cases)</h2>",
            '<table id="summary"><thead><tr><th>method</th>'
            + "".join(f"<th>{html.escape(m)}</th>" for m in metric_names)
            + "</tr></thead><tbody>",
        ]
        for method in methods:
            values = "".join(f"<td>{_cell(summary[m].get(method))}</td>" for m in metric_names)
            lines.append(f"<tr><td>{html.escape(method)}</td>{values}</tr>")
        lines.append("</tbody></table>")
    lines += [
        "<p class=note>Each case's page is self-contained (NiiVue viewer and volumes inline). The links work on disk;"
        " in MLflow open each case's <code>_report.html</code> artifact.</p>",
        "</body></html>",
    ]
    return atomic_write_text(path, "\n".join(lines))
