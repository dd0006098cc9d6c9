"""monai_xai.visualize.report without a browser: what a page embeds decodes back to the volumes, the affine and the
tables given; the size of a 96^3 case with 10 methods; 2D and colour images; errors that say the fix."""

from __future__ import annotations

import base64
import hashlib
import io
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from PIL import Image

from monai_xai.visualize import read_case_report, write_case_report, write_index
from monai_xai.visualize.report import decode_volume, encode_case_volumes

AFFINE = np.array([[0.0, -1.5, 0.0, 10.0], [2.0, 0.0, 0.0, -5.0], [0.0, 0.0, 1.25, 3.0], [0.0, 0.0, 0.0, 1.0]])


def smooth_maps(n_methods: int, size: tuple[int, ...], seed: int = 0) -> dict[str, torch.Tensor]:
    """CAM-like maps: coarse random grids upsampled to ``size`` and scaled to [0, 1], one per method."""
    generator = torch.Generator().manual_seed(seed)
    mode = "trilinear" if len(size) == 3 else "bilinear"
    maps = {}
    for index in range(n_methods):
        coarse = torch.rand(1, 1, *(max(2, n // 16) for n in size), generator=generator)
        fine = F.interpolate(coarse, size=size, mode=mode, align_corners=False)[0]
        maps[f"method{index}"] = (fine - fine.min()) / (fine.max() - fine.min())
    return maps


def test_payload_decodes_to_the_volumes_affine_and_tables(tmp_path):
    image = MetaTensor(torch.linspace(-3, 5, 12 * 10 * 8).reshape(1, 12, 10, 8), affine=torch.as_tensor(AFFINE))
    maps = {"gradcam": torch.rand(1, 12, 10, 8), "hirescam": torch.zeros(1, 12, 10, 8)}
    maps["hirescam"][0, 9, 2, 5] = 0.8
    maps["gradcam"][0, 0, 0, 0] = float("nan")
    truth = torch.zeros(1, 12, 10, 8)
    truth[0, 2:6, 3:7, 1:5] = 1  # a 4^3 cube: its outline is the cube less its 2^3 interior
    metrics = {"gradcam": {"ehr_auc": 0.25, "iou": float("nan")}, "hirescam": {"ehr_auc": 0.5}}
    texts = {"gradcam": "Focus: left </script><script>alert(1)</script> & more", "hirescam": ""}
    page = write_case_report(
        tmp_path / "c0" / "c0_report.html", image, maps, masks={"ground truth": truth, "prediction": None},
        metrics=metrics, descriptions=texts, confidence="lesion, 93.00% (calibrated)", title="c0",
    )  # fmt: skip
    report = read_case_report(page)
    assert report["title"] == "c0" and report["methods"] == ["gradcam", "hirescam"]
    assert report["descriptions"] == texts and report["confidence"] == "lesion, 93.00% (calibrated)"
    assert report["metrics"] == {"gradcam": {"ehr_auc": 0.25, "iou": None}, "hirescam": {"ehr_auc": 0.5}}
    assert page.read_text().count("</script>") == 3  # the payload's, NiiVue's and the page script's ends only
    for volume in (report["image"], *report["maps"].values(), *report["masks"].values()):
        np.testing.assert_allclose(volume.affine, AFFINE)
        np.testing.assert_allclose(volume.header.get_sform(), AFFINE)
        np.testing.assert_allclose(volume.header.get_qform(), AFFINE, atol=1e-5)
        assert volume.shape == (12, 10, 8) and volume.get_data_dtype() == np.uint8
    # the image: windowed to its 0.5..99.5th percentiles, 0..255, still in voxel order
    pixels = np.asarray(report["image"].dataobj)
    assert pixels.min() == 0 and pixels.max() == 255 and (np.diff(pixels.ravel().astype(int)) >= 0).all()
    # the maps: 0..255 with scl_slope 1/255, so get_fdata() is the map to within half a step (NaN: 0)
    expected = torch.nan_to_num(maps["gradcam"][0], nan=0.0).numpy()
    np.testing.assert_allclose(report["maps"]["gradcam"].get_fdata(), expected, atol=0.5 / 255 + 1e-6)
    assert report["maps"]["hirescam"].dataobj.get_unscaled().max() == round(0.8 * 255)
    # peaks in world millimetres: where a viewer's crosshair starts for each method
    np.testing.assert_allclose(report["peaks"]["hirescam"], (AFFINE @ [9, 2, 5, 1])[:3])
    outline = np.asarray(report["masks"]["ground truth"].dataobj)
    assert list(report["masks"]) == ["ground truth"]  # a None mask is left out
    assert outline.sum() == 4**3 - 2**3 and outline[3:5, 4:6, 2:4].sum() == 0 and outline[2, 3, 1] == 1


def test_a_96_cube_with_ten_methods_stays_far_below_15_mb(tmp_path):
    generator = torch.Generator().manual_seed(1)
    grid = torch.stack(torch.meshgrid(*[torch.arange(96.0)] * 3, indexing="ij"))
    head = ((grid - 48) ** 2).sum(0) < 40**2
    image = (head * 100.0 + torch.randn(96, 96, 96, generator=generator) * 10)[None]  # MR-like: noise everywhere
    maps = smooth_maps(10, (96, 96, 96))
    masks = {"ground truth": (((grid - 30) ** 2).sum(0) < 8**2)[None], "prediction": head[None]}
    page = write_case_report(tmp_path / "big_report.html", image, maps, np.eye(4), masks=masks, title="big")
    size_mb = page.stat().st_size / 1e6
    print(f"96^3 case, 10 methods: {size_mb:.2f} MB")
    assert size_mb < 15
    assert len(read_case_report(page)["maps"]) == 10


def test_a_2d_case_is_one_slice_and_a_colour_photo_stays_in_colour(tmp_path):
    maps = smooth_maps(2, (32, 24))
    grey = read_case_report(write_case_report(tmp_path / "grey.html", torch.rand(1, 32, 24), maps))
    assert grey["spatial_dims"] == 2 and not grey["rgb"]
    assert grey["image"].shape == (32, 24, 1) and grey["maps"]["method1"].shape == (32, 24, 1)
    np.testing.assert_allclose(grey["image"].affine, np.eye(4))
    affine_2d = np.array([[0.5, 0.0, 3.0], [0.0, 0.7, -1.0], [0.0, 0.0, 1.0]])  # a 2D grid's 3x3 affine
    photo = torch.zeros(3, 32, 24)
    photo[0] = 1.0  # red
    colour = read_case_report(write_case_report(tmp_path / "photo.html", photo, maps, affine_2d))
    assert colour["rgb"] and colour["image"].get_data_dtype().names == ("R", "G", "B")
    pixels = np.asarray(colour["image"].dataobj)
    assert (pixels["R"] == 255).all() and (pixels["G"] == 0).all()
    np.testing.assert_allclose(colour["image"].affine[:2], [[0.5, 0, 0, 3.0], [0, 0.7, 0, -1.0]])


def test_inputs_off_the_image_grid_are_refused_with_the_fix():
    image = torch.rand(1, 16, 16)
    with pytest.raises(ValueError, match=r"gradcam map has shape \(1, 8, 8\), but the image is \(1, 16, 16\)"):
        encode_case_volumes(image, {"gradcam": torch.rand(1, 8, 8)})
    with pytest.raises(ValueError, match=r"image's grid \(1, 16, 16\)"):
        encode_case_volumes(image, {"gradcam": torch.rand(16, 16)})
    with pytest.raises(ValueError, match="ground truth mask has shape"):
        encode_case_volumes(image, {"gradcam": torch.rand(1, 16, 16)}, masks={"ground truth": torch.ones(1, 4, 4)})
    with pytest.raises(ValueError, match=r"channel-first .* add the channel dim"):
        encode_case_volumes(torch.rand(16, 16), {"gradcam": torch.rand(1, 16, 16)})
    with pytest.raises(ValueError, match="no map to show"):
        encode_case_volumes(image, {})
    with pytest.raises(ValueError, match="affine must be 4x4"):
        encode_case_volumes(image, {"gradcam": torch.rand(1, 16, 16)}, affine=np.eye(2))


def test_the_index_links_each_case_and_shows_the_summary(tmp_path):
    cases = [
        {"case": "c0", "href": "c0/c0_report.html", "class": "1", "prediction": "lesion, 90.00% (uncalibrated)"},
        {"case": "c<1>", "href": "c<1>/c<1>_report.html", "class": "0", "prediction": None},
    ]
    summary = {"ehr_auc": {"gradcam": 0.61234, "hirescam": float("nan")}, "road_morf": {"gradcam": -0.00123}}
    cases.append({"case": 'javascript:alert(1)<!--"', "href": "javascript:alert(1)<!--/r.html", "class": "lung"})
    page = write_index(tmp_path / "index.html", cases, summary).read_text()
    assert '<a href="c0/c0_report.html">c0</a>' in page and '<a href="c%3C1%3E/c%3C1%3E_report.html">' in page
    # a crafted name links to a relative path (no scheme can start it) and shows as text
    assert '<a href="javascript%3Aalert%281%29%3C%21--/r.html">javascript:alert(1)&lt;!--&quot;</a>' in page
    assert "<td>lesion, 90.00% (uncalibrated)</td>" in page and "<td>-</td>" in page
    # the class as given (a name or an index), not as a number with decimals
    assert "<td>c0</a></td><td>1</td>" in page.replace('<a href="c0/c0_report.html">', "") and "1.000" not in page
    assert "<td>lung</td>" in page
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', page).group(1)
    assert "script-src 'none'" in csp and "default-src 'none'" in csp and "<script" not in page
    assert "<td>gradcam</td><td>0.612</td><td>-1.23e-03</td>" in page
    assert "<td>hirescam</td><td>-</td><td>-</td>" in page


def test_decode_volume_inverts_the_encoding():
    maps = {"m": torch.full((1, 3, 4, 5), 0.5)}
    encoded = encode_case_volumes(torch.rand(1, 3, 4, 5), maps)["maps"]["m"]
    np.testing.assert_allclose(decode_volume(encoded).get_fdata(), 128 / 255)


def _inline_scripts(page: str) -> list[str]:
    return re.findall(r"<script>(.*?)</script>", page, re.DOTALL)


def test_the_page_reads_without_the_viewer_and_only_its_own_scripts_may_run(tmp_path):
    """Title, prediction, back link, explanation, metrics and a still per method are in the HTML itself (escaped);
    the CSP names exactly the page's two inline scripts by hash; the whole page is ASCII."""
    size = 24
    grid = torch.stack(torch.meshgrid(*[torch.arange(float(size))] * 3, indexing="ij"))
    image = torch.exp(-((grid - size / 2) ** 2).sum(0) / 60.0)[None]
    hot = torch.exp(-((grid - torch.tensor([5.0, 6.0, 7.0]).reshape(3, 1, 1, 1)) ** 2).sum(0) / 4.0)[None]
    maps = {"gradcam": hot, 'm"<b>': torch.zeros(1, size, size, size)}
    truth = (((grid - torch.tensor([5.0, 6.0, 7.0]).reshape(3, 1, 1, 1)) ** 2).sum(0) < 9)[None]
    texts = {"gradcam": "Focus: left </script><img src=x onerror=alert(1)> \u2265 0.5"}
    page_path = write_case_report(
        tmp_path / "c0_report.html", image, maps, np.eye(4), {"ground truth": truth},
        metrics={"gradcam": {"ehr_auc": 0.61234, "seconds": 0.002}}, descriptions=texts,
        confidence="lesion <b>93%</b>", title="c<0>", index_href="javascript:alert(1)//../index.html",
    )  # fmt: skip
    page = page_path.read_text(encoding="ascii")  # ASCII throughout: any charset reads it the same
    assert '<h1 id="title">c&lt;0&gt;</h1>' in page and "Prediction: lesion &lt;b&gt;93%&lt;/b&gt;" in page
    assert '<a href="javascript%3Aalert%281%29//../index.html">all cases of this run</a>' in page
    assert '<p id="text">Focus: left &lt;/script&gt;&lt;img src=x onerror=alert(1)&gt; &#8805; 0.5</p>' in page
    assert '<tr data-method="gradcam"><td>gradcam</td><td>0.612</td><td>2.00e-03</td></tr>' in page
    assert '<tr data-method="m&quot;&lt;b&gt;"><td>m&quot;&lt;b&gt;</td><td>-</td><td>-</td></tr>' in page
    scripts = _inline_scripts(page)
    assert len(scripts) == 2  # NiiVue and the page's; the payload is data (type application/json)
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', page).group(1)
    allowed = re.search(r"script-src ([^;]+);", csp).group(1).split()
    digests = [f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts]
    assert sorted(allowed) == sorted(digests)
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp.split("style-src")[0]
    # one still per method, a PNG of the three planes through the map's peak, heat there, the outline in green
    stills = re.findall(r'<figure data-method="([^"]+)"><img alt="[^"]*" src="data:image/png;base64,([^"]+)">', page)
    assert [method for method, _ in stills] == ["gradcam", "m&quot;&lt;b&gt;"]
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(stills[0][1]))).convert("RGB")).astype(int)
    assert picture.shape == (size, 3 * size + 2 * 4, 3)
    first = picture[:, :size]  # axis 0 at the peak (5): (axis 1, axis 2) = (6, 7), axis 2 drawn upwards
    r, g, b = first[size - 1 - 7, 6]
    assert r - b > 120 and g - b > 100, "no warm heat at the peak"  # yellow at 60 % over a dark image
    assert (np.all(first == [0, 255, 0], axis=-1)).sum() > 4, "no ground-truth outline"
    empty = np.asarray(Image.open(io.BytesIO(base64.b64decode(stills[1][1]))).convert("RGB")).astype(int)
    assert (np.ptp(empty, axis=-1) == 0).sum() > 0.9 * empty[..., 0].size - 5 * size  # grey: no heat to show
