"""Report pages in headless Chromium (Debian's package; skipped without it): they load with no console error, the
screenshot shows heat over the image, switching the method (or the threshold) changes the picture, 2D works, and the
page renders inside a sandboxed iframe as MLflow shows artifacts (opaque origin, no storage, no sibling files)."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monai_xai.visualize import write_case_report
from tests.helpers.browser import Browser, hot_pixels, skip_without_chromium

pytestmark = [skip_without_chromium(), pytest.mark.slow]

READY = "['ready', 'error'].includes(document.body.dataset.status) && document.body.dataset.status"
CANVAS_BOX = "(() => { const r = document.getElementById('gl').getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })()"  # noqa: E501


def blob(size: int, centre: tuple[float, ...], sigma: float) -> torch.Tensor:
    grid = torch.stack(torch.meshgrid(*[torch.arange(float(size))] * len(centre), indexing="ij"))
    offsets = grid - torch.tensor(centre).reshape(-1, *([1] * len(centre)))
    return torch.exp(-(offsets**2).sum(0) / (2 * sigma**2))[None]


def case_volumes(size: int, spatial_dims: int):
    """A bright round phantom with noise; two methods hot at opposite places; a ground truth at the first's heat."""
    torch.manual_seed(0)
    middle = (size / 2,) * spatial_dims
    image = blob(size, middle, size / 3) + 0.05 * torch.rand(1, *(size,) * spatial_dims)
    first, second = (size * 0.3,) * spatial_dims, (size * 0.7,) * spatial_dims
    maps = {"gradcam": blob(size, first, size / 10), "hirescam": blob(size, second, size / 10)}
    masks = {"ground truth": blob(size, first, size / 12) > 0.5, "prediction": blob(size, first, size / 11) > 0.4}
    return image, maps, masks


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with Browser(tmp_path_factory.mktemp("chromium-profile"), width=1200, height=900) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def page_3d(tmp_path_factory) -> Path:
    image, maps, masks = case_volumes(48, 3)
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    affine[:3, 3] = [-30.0, -30.0, -40.0]
    metrics = {"gradcam": {"ehr_auc": 0.61, "heat_diff": 0.2}, "hirescam": {"ehr_auc": 0.05, "heat_diff": -0.1}}
    texts = {"gradcam": "Focus: small region, left.", "hirescam": "Focus: small region, right."}
    return write_case_report(
        tmp_path_factory.mktemp("report") / "c0_report.html", image, maps, affine, masks, metrics, texts,
        confidence="lesion, 93.70% (calibrated)", title="c0",
    )  # fmt: skip


def grey_pixels(png: Path, box: list[float]) -> int:
    """Pixels of the image itself inside ``box``: grey (R = G = B within 12) and neither black nor white."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    left, top, right, bottom = (int(round(v)) for v in box)
    area = rgb[top:bottom, left:right]
    spread = area.max(axis=-1) - area.min(axis=-1)
    return int(((spread < 12) & (area.mean(axis=-1) > 40) & (area.mean(axis=-1) < 245)).sum())


def load(browser: Browser, url: str) -> None:
    browser.open(url)
    status = browser.wait_for(READY, timeout_s=90)
    assert status == "ready", browser.evaluate("document.getElementById('message').textContent")
    browser.pump(0.5)  # late console messages


def test_page_loads_without_errors_and_shows_heat_over_the_image(browser, page_3d, tmp_path):
    load(browser, f"{page_3d.as_uri()}#method=gradcam")
    assert browser.errors() == []
    assert browser.evaluate("document.body.dataset.method") == "gradcam"
    assert browser.evaluate("document.getElementById('text').textContent") == "Focus: small region, left."
    assert browser.evaluate("document.querySelector('#metrics tr.shown').dataset.method") == "gradcam"
    box = browser.evaluate(CANVAS_BOX)
    shot = browser.screenshot(tmp_path / "gradcam.png")
    hot = hot_pixels(shot, box)
    assert hot.sum() > 2000, f"no heat in {shot}"
    # over the image: the heat sits among the image's grey pixels, in the canvas (not only in the colour bar)
    assert grey_pixels(shot, box) > 20000
    rows = np.nonzero(hot.any(axis=1))[0]
    assert rows.min() < box[1] + 0.7 * (box[3] - box[1]), "heat only in the colour bar"


def test_switching_the_method_or_the_threshold_changes_the_picture(browser, page_3d, tmp_path):
    load(browser, f"{page_3d.as_uri()}#method=gradcam&threshold=0.2")
    box = browser.evaluate(CANVAS_BOX)
    before = hot_pixels(browser.screenshot(tmp_path / "gradcam.png"), box)
    browser.evaluate(
        "(() => { const s = document.getElementById('method'); s.value = 'hirescam';"
        " s.dispatchEvent(new Event('change')); })()"
    )
    browser.wait_for("document.body.dataset.method === 'hirescam'", timeout_s=30)
    browser.pump(1.0)
    after = hot_pixels(browser.screenshot(tmp_path / "hirescam.png"), box)
    assert browser.evaluate("document.getElementById('text').textContent") == "Focus: small region, right."
    assert after.sum() > 2000
    changed = (before ^ after).sum()
    assert changed > 0.5 * max(before.sum(), after.sum()), "the heat did not move with the method"
    # the crosshair follows each map's peak: hirescam's heat is elsewhere in the views
    assert abs(np.nonzero(before)[1].mean() - np.nonzero(after)[1].mean()) > 20
    browser.evaluate(
        "(() => { const s = document.getElementById('threshold'); s.value = '0.9';"
        " s.dispatchEvent(new Event('input')); })()"
    )
    browser.pump(1.0)
    high = hot_pixels(browser.screenshot(tmp_path / "hirescam_threshold.png"), box)
    assert high.sum() < 0.6 * after.sum()
    assert browser.errors() == []


def test_a_2d_page_shows_heat(browser, tmp_path):
    image, maps, masks = case_volumes(64, 2)
    page = write_case_report(tmp_path / "c2d_report.html", image, maps, masks=masks, title="c2d")
    load(browser, f"{page.as_uri()}#method=hirescam")
    assert browser.errors() == []
    assert browser.evaluate("document.getElementById('view-control').hidden") is True
    box = browser.evaluate(CANVAS_BOX)
    shot = browser.screenshot(tmp_path / "c2d.png")
    assert hot_pixels(shot, box).sum() > 2000 and grey_pixels(shot, box) > 20000


def test_the_page_renders_in_a_sandboxed_iframe_as_mlflow_shows_it(browser, page_3d, tmp_path):
    """MLflow's artifact view puts an HTML artifact in ``<iframe sandbox="allow-scripts">``: an opaque origin where
    storage APIs throw and relative URLs lead nowhere."""
    frame = tmp_path / "mlflow_like.html"
    frame.write_text(
        '<!doctype html><html><body style="margin:0"><iframe id="artifact" sandbox="allow-scripts" '
        f'style="width:1180px;height:880px;border:0" srcdoc="{html.escape(page_3d.read_text(), quote=True)}">'
        "</iframe></body></html>"
    )
    browser.open(frame.as_uri())
    browser.wait_for("document.readyState === 'complete'", timeout_s=60)
    status, _ = browser.wait_in_frames(READY)
    assert status == "ready"
    assert browser.errors() == []
    shot = browser.screenshot(tmp_path / "sandboxed.png")
    assert hot_pixels(shot).sum() > 2000


@pytest.fixture(scope="module")
def browser_without_webgl(tmp_path_factory):
    """A browser as on a remote desktop or a locked-down machine: no WebGL at all."""
    flags = ("--disable-webgl", "--disable-webgl2", "--disable-3d-apis")
    with Browser(tmp_path_factory.mktemp("chromium-no-webgl"), width=1200, height=900, flags=flags) as chromium:
        yield chromium


def test_without_webgl2_the_page_shows_its_text_metrics_and_still_pictures(browser_without_webgl, page_3d, tmp_path):
    browser = browser_without_webgl
    browser.open(f"{page_3d.as_uri()}#method=gradcam")
    status = browser.wait_for("['ready', 'error', 'static'].includes(document.body.dataset.status) && "
                              "document.body.dataset.status", timeout_s=60)  # fmt: skip
    assert status == "static"
    assert "WebGL2" in browser.evaluate("document.getElementById('message').textContent")
    assert browser.evaluate("document.getElementById('stills').open") is True
    assert browser.evaluate("getComputedStyle(document.getElementById('viewer')).display") == "none"
    assert browser.evaluate("document.getElementById('text').textContent") == "Focus: small region, left."
    assert browser.evaluate("document.querySelector('#metrics tr.shown').dataset.method") == "gradcam"
    assert browser.evaluate("document.querySelector('#stills figure.shown').dataset.method") == "gradcam"
    widths = browser.evaluate("Array.from(document.querySelectorAll('#stills img')).map(i => i.naturalWidth)")
    assert len(widths) == 2 and min(widths) > 0
    browser.evaluate("document.querySelector('#stills figure.shown').scrollIntoView()")
    shot = browser.screenshot(tmp_path / "static.png")
    assert hot_pixels(shot).sum() > 300, f"no heat in the still pictures of {shot}"
    browser.evaluate(
        "(() => { const s = document.getElementById('method'); s.value = 'hirescam';"
        " s.dispatchEvent(new Event('change')); })()"
    )
    assert browser.evaluate("document.getElementById('text').textContent") == "Focus: small region, right."
    assert browser.evaluate("document.querySelector('#stills figure.shown').dataset.method") == "hirescam"
    assert browser.evaluate("document.body.dataset.method") == "hirescam"
    assert browser.errors() == []


def test_the_content_security_policy_stops_an_injected_script(browser, page_3d, tmp_path):
    """Were anything to get past the escaping, the page's CSP would still not run it: only the page's own two
    scripts (by hash) run, and the viewer still loads."""
    head, tail = page_3d.read_text().rsplit("</body>", 1)  # the page's own end (NiiVue's code holds the text too)
    page = head + "<script>document.body.dataset.injected = 'ran';</script></body>" + tail
    hostile = tmp_path / "hostile_report.html"
    hostile.write_text(page)
    browser.open(hostile.as_uri())
    assert browser.wait_for(READY, timeout_s=90) == "ready"
    assert browser.evaluate("document.body.dataset.injected || 'blocked'") == "blocked"
    browser.pump(0.5)
    assert any("Content Security Policy" in text for _, text, _ in browser.console)
