"""Input attributions in a real evaluator: the per-channel shares in the records, channel_shares.csv, the
descriptions and the report, and the signed map as a NIfTI volume per channel."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
from monai.inferers import SimpleInferer

from monai_xai.cams import channel_shares
from monai_xai.handlers import explanation_writers
from monai_xai.handlers.recorder import GROUND_TRUTH_REGION
from monai_xai.inferers import XAIInferer
from monai_xai.visualize.report import read_case_report
from tests.helpers.attribution_nets import LesionDetector, two_channel_phantom
from tests.helpers.engines import affine_for, case_dataset, collect_outputs, make_evaluator

METHODS = ["integrated_gradients", "occlusion"]


@pytest.fixture(scope="module")
def attribution_run(tmp_path_factory):
    """Two two-channel phantoms (the lesion in channel 1, "FLAIR") explained by the lesion detector."""
    out = tmp_path_factory.mktemp("attribution_run")
    images, lesions = two_channel_phantom(2, seed=3)
    images, lesions = images.float(), lesions.long()
    inferer = XAIInferer(SimpleInferer(), methods=METHODS, class_idx=1, attribution={"steps": 8, "occlusion_window": 4})
    writers = explanation_writers(
        out, METHODS, region_key="label", region_value=1, channel_names=["T1", "FLAIR"], report=True
    )
    evaluator = make_evaluator(
        LesionDetector().eval(), case_dataset(images, label=lesions), inferer, [inferer, *writers]
    )
    outputs = collect_outputs(evaluator)
    return {"out": out, "outputs": outputs, "lesions": lesions, "records": evaluator.state.xai_results}


def test_shares_per_case_method_and_region_are_the_signed_maps(attribution_run):
    out, outputs, lesions = attribution_run["out"], attribution_run["outputs"], attribution_run["lesions"]
    with open(out / "channel_shares.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 2 * len(METHODS) * 2 * 2  # cases x methods x (image, ground truth) x channels
    for case in range(2):
        for method in METHODS:
            signed = outputs[case][f"xai_attribution_{method}"]
            assert signed.shape == (2, 16, 16, 16)
            expected = {
                "image": channel_shares(signed[None])[0],
                GROUND_TRUTH_REGION: channel_shares(signed[None], lesions[case : case + 1].float())[0],
            }
            record = attribution_run["records"].case(f"c{case}").methods[method]
            for region, shares in expected.items():
                assert record.channel_shares[region] == pytest.approx(shares.tolist())
                written = [
                    float(row["share"])
                    for row in rows
                    if (row["case"], row["method"], row["region"]) == (f"c{case}", method, region)
                ]
                assert written == pytest.approx(shares.tolist())
            assert expected["image"][1] >= 0.85  # the lesion is in FLAIR


def test_descriptions_and_report_name_the_channels(attribution_run):
    out = attribution_run["out"]
    with open(out / "descriptions.csv") as stream:
        rows = {(row["case"], row["method"]): row for row in csv.DictReader(stream)}
    record = attribution_run["records"].case("c0").methods["integrated_gradients"]
    flair, t1 = 100 * record.channel_shares["image"][1], 100 * record.channel_shares["image"][0]
    row = rows[("c0", "integrated_gradients")]
    assert f"Attribution by input channel: FLAIR {flair:.0f}%, T1 {t1:.0f}%." in row["text"]
    assert f"Attribution by input channel in the {GROUND_TRUTH_REGION}: FLAIR " in row["text"]
    assert float(row["share_FLAIR_image"]) == pytest.approx(record.channel_shares["image"][1])
    page = read_case_report(out / "c0" / "c0_report.html")
    assert page["metrics"]["integrated_gradients"]["share channel 1"] == pytest.approx(
        record.channel_shares["image"][1]
    )
    assert page["descriptions"]["occlusion"] == rows[("c0", "occlusion")]["text"]


def test_signed_attributions_are_written_per_channel_on_the_image_grid(attribution_run):
    out, outputs = attribution_run["out"], attribution_run["outputs"]
    for method in METHODS:
        volume = nib.load(str(out / "c1" / f"c1_{method}_attribution.nii.gz"))
        assert volume.shape == (16, 16, 16, 2)
        np.testing.assert_allclose(volume.affine, affine_for(1, (0.5, 0.5, 0.5)).numpy(), atol=1e-6)
        signed = outputs[1][f"xai_attribution_{method}"].numpy()
        np.testing.assert_allclose(np.moveaxis(np.asarray(volume.dataobj), -1, 0), signed, atol=1e-6)
        assert attribution_run["records"].case("c1").methods[method].files["attribution"].exists()
