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

A 96^3 case with 10 methods is about 8.1 MB: NiiVue 2.3 MB, a noisy MR-like image 1 MB, each CAM-like map 0.4 MB
and its still picture 0.07 MB (base64 included).

Everything a reader needs without the viewer is in the page's HTML, escaped for where it stands: the title, the
prediction, each method's explanation in words, the metrics table and a still picture per method (a PNG: the map over
the image, three planes through its peak in 3D). Where the viewer cannot start (no WebGL2: a remote desktop, a
locked-down browser) the page says so and opens the stills; without JavaScript they are open from the start. A
Content-Security-Policy lets the page run its two inline scripts (by their SHA-256) and nothing else: no other script,
no network, no form, no frame.

The page reads its initial state from the URL fragment, e.g. ``case_report.html#method=hirescam&colormap=hot&
opacity=0.6&threshold=0.3&view=axial``; once loaded its ``<body>`` has ``data-status="ready"`` and
``data-method=<shown method>``; ``data-status="static"`` when the viewer could not start (the stills shown) and
``"error"`` with the message on the page when a volume cannot be shown.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import html
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from PIL import Image
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
_MARKERS = re.compile(r"/\*@([A-Z_]+)@\*/")
# the still pictures: heat from this value on is drawn (the viewer's default threshold), at this opacity, over the
# image; a panel's longer side is at most STILL_MAX_SIDE pixels (the browser enlarges small ones)
STILL_THRESHOLD = 0.2
STILL_OPACITY = 0.6
STILL_MAX_SIDE = 256
# outline colours in mask order, as the viewer draws them (report_app.js OUTLINE_COLOURS), and their names
OUTLINE_COLOURS = ((0, 255, 0), (255, 0, 255), (255, 255, 255))
_OUTLINE_NAMES = ("green", "magenta", "white")
_CSP = (
    "default-src 'none'; script-src {scripts}; style-src 'unsafe-inline'; img-src data: blob:; "
    "connect-src data: blob:; worker-src blob:; font-src data:; form-action 'none'; base-uri 'none'"
)
_NO_SCRIPT = "'none'"


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


def _peak(saliency: np.ndarray) -> tuple[int, ...]:
    """Voxel of a (*spatial) map's largest value (the first in C order; the middle of an empty map)."""
    if saliency.max() > 0:
        return tuple(int(i) for i in np.unravel_index(int(np.argmax(saliency)), saliency.shape))
    return tuple(n // 2 for n in saliency.shape)


def _peak_mm(saliency: np.ndarray, affine: np.ndarray) -> list[float]:
    """World position (mm) of a (*spatial) map's largest value (:func:`_peak`)."""
    position = affine @ np.array([*_peak(saliency), *([0] * (3 - saliency.ndim)), 1.0])
    return [round(float(v), 4) for v in position[:3]]


def _heat_over(picture: np.ndarray, heat: np.ndarray, outlines: Sequence[np.ndarray]) -> np.ndarray:
    """(..., 3) uint8 ``picture`` with the uint8 ``heat`` from :data:`STILL_THRESHOLD` on in red to yellow (the
    viewer's "warm") at :data:`STILL_OPACITY`, and each outline on top in its :data:`OUTLINE_COLOURS`."""
    level = heat.astype(np.float32)[..., None] / 255.0
    colour = np.concatenate([np.ones_like(level), level, np.zeros_like(level)], axis=-1) * 255.0
    shown = level >= STILL_THRESHOLD
    mixed = np.where(shown, (1 - STILL_OPACITY) * picture + STILL_OPACITY * colour, picture)
    mixed = np.round(mixed).astype(np.uint8)
    for index, outline in enumerate(outlines):
        mixed[outline > 0] = OUTLINE_COLOURS[index % len(OUTLINE_COLOURS)]
    return mixed


def _panel(rgb_slice: np.ndarray, spatial_dims: int) -> Image.Image:
    """A slice (first in-plane axis, second, 3) as a picture: 2D as the file looks (row 0 on top, MONAI's (x, y)
    order transposed), 3D slices with the first in-plane axis to the right and the second upwards (as the PNG
    overlays); shrunk to at most :data:`STILL_MAX_SIDE` pixels."""
    upright = np.ascontiguousarray(np.swapaxes(rgb_slice, 0, 1))
    picture = Image.fromarray(upright if spatial_dims == 2 else upright[::-1].copy(), mode="RGB")
    if max(picture.size) > STILL_MAX_SIDE:
        scale = STILL_MAX_SIDE / max(picture.size)
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(size, Image.Resampling.BILINEAR)
    return picture


def _still_png(image: np.ndarray, rgb: bool, heat: np.ndarray, outlines: Sequence[np.ndarray]) -> str:
    """base64 of a PNG of one map over the image: the 2D image, or the three 3D slices through the map's peak side by
    side (4 black pixels apart).

    Args:
        image: the windowed (*spatial) uint8 image, or its RGB24 structured array when ``rgb``.
        heat: the (*spatial) uint8 map.
        outlines: (*spatial) uint8 outlines, in :data:`OUTLINE_COLOURS` order.
    """
    grey = np.stack([image[c] for c in "RGB"], axis=-1) if rgb else np.repeat(image[..., None], 3, axis=-1)
    if heat.ndim == 2:
        panels = [_panel(_heat_over(grey, heat, outlines), 2)]
    else:
        peak = _peak(heat)
        panels = [
            _panel(
                _heat_over(
                    np.take(grey, peak[axis], axis=axis),
                    np.take(heat, peak[axis], axis=axis),
                    [np.take(outline, peak[axis], axis=axis) for outline in outlines],
                ),
                3,
            )
            for axis in range(3)
        ]
    gap = 4
    still = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), max(p.height for p in panels)))
    left = 0
    for panel in panels:
        still.paste(panel, (left, 0))
        left += panel.width + gap
    buffer = io.BytesIO()
    still.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


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
        "masks": {name: ...}, "stills": {method: ...}}``, each volume a base64 string of a gzipped NIfTI, each still
        a base64 PNG of the map over the image (:data:`STILL_THRESHOLD`, through the map's peak in 3D).

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
        "stills": {},
    }
    outlines = [_outline(on_grid(f"{name} mask", mask)) for name, mask in (masks or {}).items() if mask is not None]
    named = [name for name, mask in (masks or {}).items() if mask is not None]
    for name, outline in zip(named, outlines):
        payload["masks"][name] = _nifti_base64(outline, world)
    for method, saliency in maps.items():
        quantised = _quantised(on_grid(f"{method} map", saliency))
        payload["maps"][method] = _nifti_base64(quantised, world, slope=1 / 255)
        payload["peaks"][method] = _peak_mm(quantised, world)
        payload["stills"][method] = _still_png(windowed, rgb, quantised, outlines)
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


def _href(target: str) -> str:
    """A link target for an ``href`` attribute: a relative path, percent-quoted (so no scheme such as
    ``javascript:`` can start it) and escaped for the attribute."""
    return html.escape(quote(str(target), safe="/#"), quote=True)


@cache
def _script(name: str) -> str:
    """A script asset in ASCII, each other character as its ``\\uXXXX`` escape(s), valid wherever JavaScript allows
    the character (strings, templates, regular expressions, identifiers, comments): the page then reads the same in
    every charset a wrapper may decode it with, and its CSP hash holds."""

    def escaped(match: re.Match) -> str:
        units = match.group(0).encode("utf-16-be")
        return "".join(f"\\u{int.from_bytes(units[i : i + 2], 'big'):04x}" for i in range(0, len(units), 2))

    return re.sub(r"[^\x00-\x7f]", escaped, _asset(name))


@cache
def _script_hash(name: str) -> str:
    """The CSP source that lets one inline script (:func:`_script`) run: ``'sha256-<base64>'``."""
    digest = hashlib.sha256(_script(name).encode("ascii")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def _metrics_rows(methods: Sequence[str], metrics: Mapping[str, Mapping[str, float | None]]) -> str:
    """The metrics table's rows (a header, one row per method with ``data-method``), escaped."""
    names = list(dict.fromkeys(name for method in methods for name in metrics.get(method, {})))
    if not names:
        return "<tr><td>No metrics for this case.</td></tr>"
    head = "<thead><tr>" + "".join(f"<th>{html.escape(name)}</th>" for name in ["method", *names]) + "</tr></thead>"
    rows = [
        f'<tr data-method="{html.escape(method, quote=True)}"><td>{html.escape(method)}</td>'
        + "".join(f"<td>{_cell(metrics.get(method, {}).get(name))}</td>" for name in names)
        + "</tr>"
        for method in methods
    ]
    return head + "<tbody>" + "".join(rows) + "</tbody>"


def _stills(methods: Sequence[str], stills: Mapping[str, str], descriptions: Mapping[str, str], masks: list) -> str:
    """One ``<figure>`` per method: its still picture and, as the caption, the method and its explanation."""
    legend = ", ".join(
        f"{html.escape(name)} outlined in {_OUTLINE_NAMES[index % len(_OUTLINE_NAMES)]}"
        for index, name in enumerate(masks)
    )
    figures = []
    for method in methods:
        text = descriptions.get(method) or "No description for this method."
        figures.append(
            f'<figure data-method="{html.escape(method, quote=True)}">'
            f'<img alt="{html.escape(method, quote=True)} map over the image" '
            f'src="data:image/png;base64,{stills[method]}">'
            f"<figcaption><b>{html.escape(method)}</b>: {html.escape(text)}</figcaption></figure>"
        )
    note = (
        f"<p class=note>Heat from {STILL_THRESHOLD:g} (of 0..1) in red to yellow over the image; in 3D the three "
        f"planes through each map's peak{'; ' + legend if legend else ''}.</p>"
    )
    return note + "".join(figures)


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
        index_href: link back to the run's index page (a path relative to ``path``), or None.

    Returns:
        ``path``.
    """
    methods = list(volumes["maps"])
    embedded = {key: value for key, value in volumes.items() if key != "stills"}
    finite = {
        method: {name: _finite_or_none(value) for name, value in values.items()}
        for method, values in (metrics or {}).items()
    }
    texts = dict(descriptions or {})
    payload = {
        "title": title,
        "methods": methods,
        "volumes": embedded,
        "metrics": finite,
        "descriptions": texts,
        "confidence": confidence,
        "index_href": index_href,
        "niivue_version": NIIVUE_VERSION,
    }
    first = methods[0]
    parts = {
        "CSP": _CSP.format(scripts=f"{_script_hash('vendor/niivue/niivue.umd.js')} {_script_hash('report_app.js')}"),
        "PAGE_TITLE": html.escape(f"{title}: explanation report"),
        "TITLE": html.escape(title),
        "CONFIDENCE": html.escape(f"Prediction: {confidence}") if confidence else "",
        "BACK": f'<a href="{_href(index_href)}">all cases of this run</a>' if index_href else "",
        "METHOD": html.escape(first),
        "TEXT": html.escape(texts.get(first) or "No description for this method."),
        "METRICS": _metrics_rows(methods, finite),
        "STILLS": _stills(methods, volumes.get("stills", {}), texts, list(volumes["masks"])),
        "NIIVUE_VERSION": NIIVUE_VERSION,
        "PAYLOAD": _json_for_script(payload),
        "NIIVUE": _script("vendor/niivue/niivue.umd.js"),
        "APP": _script("report_app.js"),
        "STYLE": _asset("report.css"),
    }
    page = _MARKERS.sub(lambda match: parts[match.group(1)], _asset("report_case.html"))
    # all ASCII (text and attributes as character references; the scripts, style and payload are ASCII already)
    return atomic_write_text(path, page.encode("ascii", "xmlcharrefreplace").decode("ascii"))


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
    """A table cell, escaped: text as it is (a class "1" stays "1"), an integer as it is, a float with 3 decimals
    (small ones in scientific notation), "-" for nothing or a non-finite number."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        return html.escape(value)
    if isinstance(value, (bool, int, np.integer)):
        return str(value)
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
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP.format(scripts=_NO_SCRIPT)}">',
        f"<title>{html.escape(title)}</title><style>{_asset('report.css')}</style></head>",
        '<body class="index" data-status="ready">',
        f"<h1>{html.escape(title)}</h1>",
        f"<h2>Cases ({len(cases)})</h2>",
        '<table id="cases"><thead><tr><th>case</th>' + "".join(f"<th>{html.escape(c)}</th>" for c in columns),
        "</tr></thead><tbody>",
    ]
    for row in cases:
        link = f'<a href="{_href(row["href"])}">{html.escape(str(row["case"]))}</a>'
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
