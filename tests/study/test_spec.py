"""A wrong study file fails at once, before any case is written or explained, with a message naming what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monai_xai.study import StudyStore, load_study, run_study
from tests.helpers.studies import DEMO_STUDY, small_study, write_small_study_file


def _file(tmp_path: Path, **change) -> Path:
    path = write_small_study_file(tmp_path / "study.json", tmp_path / "out")
    content = json.loads(path.read_text())
    content.update(change)
    path.write_text(json.dumps(content))
    return path


def _bundles(tmp_path: Path, **change) -> list[dict]:
    bundles = json.loads(write_small_study_file(tmp_path / "base.json", tmp_path / "out").read_text())["bundles"]
    bundles[0].update(change)
    return bundles


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"metrics": ["heat_diff", "road_morff"]}, "road_morff"),
        ({"methods": ["gradcam", "gradcam_plus"]}, "gradcam_plus"),
        ({"metric_args": {"iou": {"threshold": 0.3}}}, "iou_threshold"),
        ({"iou_threshold": {"mode": "best"}}, "best"),
        ({"statistics": {"alpha": 0.05, "bootstrap": 10}}, "bootstrap"),
        ({"batchsize": 4}, "batchsize"),
        ({"bundles": []}, "bundles"),
    ],
)
def test_wrong_entries_fail_naming_them(tmp_path: Path, change: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        run_study(_file(tmp_path, **change))
    assert not (tmp_path / "out").exists()  # nothing was written: the check comes before any work


def test_missing_bundle_weights_and_layer_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"bundle 'resnet-classifier'.*inference\.json does not exist"):
        load_study(_file(tmp_path, bundles=_bundles(tmp_path, path=str(tmp_path / "no_such_bundle"))))
    with pytest.raises(ValueError, match=r"bundle 'resnet-classifier': layer 'layer9' is not in its network"):
        load_study(_file(tmp_path, bundles=_bundles(tmp_path, layers=["layer3", "layer9"])))
    bundle = tmp_path / "untrained"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "inference.json").write_text("{}")
    with pytest.raises(ValueError, match=r"no trained weights at .*untrained/models/model\.pt"):
        load_study(_file(tmp_path, bundles=_bundles(tmp_path, path=str(bundle), name="untrained")))
    assert not (tmp_path / "out").exists()


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "x",\n "methods": ["gradcam"')
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON.*line 2"):
        load_study(broken)
    with pytest.raises(FileNotFoundError, match="configs/studies"):
        load_study(tmp_path / "absent.json")
    with pytest.raises(ValueError, match=r"datalist .*nowhere\.json does not exist"):
        load_study(_file(tmp_path, data={"datalist": "nowhere.json"}))


def test_demo_study_file_is_valid() -> None:
    spec = load_study(DEMO_STUDY)
    assert [b.name for b in spec.bundles] == ["resnet-classifier", "unet-segmenter"]
    assert spec.bundles[1].class_idx == 1  # the segmenter explains the lesion class (from its explain.json)


def test_store_refuses_rows_of_other_settings(tmp_path: Path) -> None:
    first = small_study(tmp_path)
    StudyStore(tmp_path / "rows.sqlite", first.fingerprint()).close()
    other = small_study(tmp_path, seed=1)
    with pytest.raises(ValueError, match="other settings"):
        run_study(other, progress=False)
    # more methods or metrics only add rows (they are keys), so they resume the same store
    fewer = small_study(tmp_path, methods=["gradcam"], metrics=["road_combined", "deletion"])
    assert fewer.fingerprint() == first.fingerprint()
    assert small_study(tmp_path, metric_args={"deletion": {"steps": 8}}).fingerprint() != first.fingerprint()
