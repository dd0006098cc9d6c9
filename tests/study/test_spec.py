"""A wrong study file fails at once, before any case is written or explained, with a message naming what is wrong."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_xai.bundle import load_trained_bundle
from monai_xai.study import StudyStore, StudyStoreError, load_study, run_study, study_from_dict
from monai_xai.study.fingerprint import study_fingerprint
from tests.helpers.studies import DEMO_STUDY, REPO, small_study, write_small_study_file


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
        ({"metric_args": {"road_combined": {"percentile": [50]}}}, "road_combined.*'percentile'"),
        ({"iou_threshold": {"mode": "best"}}, "best"),
        ({"statistics": {"alpha": 0.05, "bootstrap": 10}}, "bootstrap"),
        ({"batchsize": 4}, "batchsize"),
        ({"statistics": {"alpha": 5}}, r"'statistics\.alpha' must be a number in \(0, 1\), got 5"),
        ({"statistics": {"confidence_level": 2}}, r"'statistics\.confidence_level'.*got 2"),
        ({"statistics": {"alpha": "0.05"}}, r"'statistics\.alpha'.*got '0\.05'"),
        ({"statistics": {"bootstrap_resamples": -3}}, r"'statistics\.bootstrap_resamples' must be a whole number"),
        ({"statistics": {"bootstrap_resamples": 10**9}}, r"bootstrap_resamples.*above the cap of 1000000"),
        ({"statistics": {"bootstrap_resamples": 2.5}}, "bootstrap_resamples"),
        ({"sanity": {"cases": -1}}, r"'sanity\.cases'"),
        ({"sanity": {"cases": True}}, r"'sanity\.cases'.*got True"),
        ({"reliability": {"cases": -2}}, r"'reliability\.cases' must be a whole number >= 0, got -2"),
        ({"reliability": {"noise": 0}}, r"'reliability\.noise' must be a number in \(0, 1\), got 0"),
        ({"reliability": {"noise": "0.01"}}, r"'reliability\.noise'.*got '0\.01'"),
        ({"reliability": {"case": 4}}, r"'reliability' has unknown keys \['case'\]"),
        ({"seed": "x"}, r"'seed' must be a whole number"),
        ({"iou_threshold": {"value": 1.5}}, r"'iou_threshold\.value'"),
        ({"iou_threshold": {"mode": "tuned", "grid": []}}, r"'iou_threshold\.grid' must be a non-empty list"),
        ({"iou_threshold": {"mode": "tuned", "grid": [0.2, float("nan")]}}, r"each of 'iou_threshold\.grid'.*nan"),
        ({"bundles": []}, "bundles"),
    ],
)
def test_wrong_entries_fail_naming_them(tmp_path: Path, change: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        run_study(_file(tmp_path, **change))
    assert not (tmp_path / "out").exists()  # nothing was written: the check comes before any work


def test_missing_bundle_weights_and_layer_are_named(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"bundle 'densenet-classifier'.*no_such_bundle/configs/inference\.json is missing"
    ):
        load_study(_file(tmp_path, bundles=_bundles(tmp_path, path=str(tmp_path / "no_such_bundle"))))
    with pytest.raises(ValueError, match=r"bundle 'densenet-classifier': layer 'layer9' is not in its network"):
        load_study(_file(tmp_path, bundles=_bundles(tmp_path, layers=["features.denseblock1.denselayer2", "layer9"])))
    with pytest.raises(
        ValueError, match=r"bundle 'densenet-classifier'.*models/vgg16\.pt is missing; train the bundle"
    ):
        load_study(_file(tmp_path, bundles=_bundles(tmp_path, weights="models/vgg16.pt")))
    # weights that do not fit the network the overrides build are refused before any work
    with pytest.raises(
        ValueError, match=r"bundle 'densenet-classifier' cannot be loaded: .*models/model\.pt does not fit"
    ):
        load_study(_file(tmp_path, bundles=_bundles(tmp_path, overrides={"densenet#out_channels": 3})))
    assert not (tmp_path / "out").exists()


def test_bundle_entries_choose_weights_and_config_overrides(tmp_path: Path) -> None:
    """One bundle twice, other weights and config: what an architecture comparison over backbones needs."""
    bundles = _bundles(tmp_path)
    weights = tmp_path / "copy.pt"
    shutil.copy(bundles[0]["path"] + "/models/model.pt", weights)
    bundles.append(
        {
            **bundles[0],
            "name": "pooled",
            "weights": str(weights),
            "overrides": {"densenet#act": ["elu", {"inplace": False}]},
        }
    )
    spec = load_study(_file(tmp_path, bundles=bundles))
    assert spec.bundles[2].weights == weights and spec.bundles[0].weights.name == "model.pt"
    assert spec.fingerprint() != load_study(_file(tmp_path, bundles=bundles[:2])).fingerprint()
    trained = load_trained_bundle(spec.bundles[2].path, "cpu", spec.bundles[2].overrides, spec.bundles[2].weights)
    assert any(isinstance(module, torch.nn.ELU) for module in trained.network.modules())
    assert not any(
        isinstance(module, torch.nn.ELU) for module in load_trained_bundle(spec.bundles[0].path).network.modules()
    )


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
    assert [b.name for b in spec.bundles] == ["densenet-classifier", "unet-segmenter"]
    assert spec.bundles[1].class_idx == 1  # the segmenter explains the lesion class (from its explain.json)


def test_a_damaged_row_store_is_named_with_what_to_do(tmp_path: Path) -> None:
    """A rows.sqlite that is not a database, or a valid one whose pages were cut off, fails naming the file and the
    way out (not a bare sqlite3.DatabaseError); the same store moved away lets the study start again."""
    spec = small_study(tmp_path)
    rows = tmp_path / "rows.sqlite"
    rows.write_text("these are not the rows you are looking for" * 100)
    with pytest.raises(StudyStoreError, match=rf"{rows}.*not a database.*move it away"):
        StudyStore(rows, study_fingerprint(spec))
    rows.unlink()
    store = StudyStore(rows, study_fingerprint(spec))
    store.add_scores([("b", "l", "gradcam", f"case_{k}", "iou", 0.5) for k in range(2000)])
    store.close()
    rows.write_bytes(rows.read_bytes()[: 3 * 4096])  # the header and the first pages survive, the rest is lost
    with pytest.raises(StudyStoreError, match=rf"row store {rows} failed \(DatabaseError: .*malformed"):
        store = StudyStore(rows, study_fingerprint(spec))
        store.table("scores")


def test_store_refuses_a_table_of_another_version(tmp_path: Path) -> None:
    """A store whose table has other columns (the first reliability table had 7) is refused, naming the table."""
    spec = small_study(tmp_path)
    rows = tmp_path / "rows.sqlite"
    connection = sqlite3.connect(rows)
    connection.execute(
        "CREATE TABLE reliability (bundle TEXT, layer TEXT, method TEXT, case_id TEXT, metric TEXT, noisy REAL, "
        "control REAL, PRIMARY KEY (bundle, layer, method, case_id, metric))"
    )
    connection.commit()
    connection.close()
    with pytest.raises(ValueError, match=r"another version of monai-xai: its table 'reliability'.*--overwrite"):
        StudyStore(rows, study_fingerprint(spec))
    rows.unlink()
    StudyStore(rows, study_fingerprint(spec)).close()  # a new store has the expected tables


def test_store_refuses_rows_of_other_settings(tmp_path: Path) -> None:
    first = small_study(tmp_path)
    StudyStore(tmp_path / "rows.sqlite", study_fingerprint(first)).close()
    other = small_study(tmp_path, seed=1)
    with pytest.raises(ValueError, match="other settings"):
        run_study(other, progress=False)
    # more methods or metrics only add rows (they are keys), so they resume the same store
    fewer = small_study(tmp_path, methods=["gradcam"], metrics=["road_combined", "deletion"])
    assert fewer.fingerprint() == first.fingerprint()
    assert small_study(tmp_path, metric_args={"deletion": {"steps": 8}}).fingerprint() != first.fingerprint()
    assert small_study(tmp_path, reliability={"noise": 0.02}).fingerprint() != first.fingerprint()


def test_a_resume_never_mixes_rows_of_replaced_files(tmp_path: Path) -> None:
    """Issue #29 (5): weights (or temperature.json, or an image) replaced in place used to keep the old rows, since
    the fingerprint held their paths only."""
    bundle = tmp_path / "bundle"
    shutil.copytree(REPO / "bundles" / "lesion_classification_3d", bundle, ignore=shutil.ignore_patterns("eval"))
    content = {
        "name": "replaced",
        "output_dir": str(tmp_path / "study"),
        "data": {"phantom": {"n_cases": 2, "seed": 5, "positive_fraction": 1.0, "split": [0.0, 0.0, 1.0]}},
        "bundles": [{"name": "classifier", "path": str(bundle), "layers": ["class_layers.relu"]}],
        "methods": ["gradcam"],
        "metrics": ["heat_diff"],
        "sanity": False,
        "mlflow": False,
    }
    run_study(study_from_dict(content, tmp_path), progress=False, report=False)
    run_study(study_from_dict(content, tmp_path), progress=False, report=False)  # the same files: it resumes
    weights = bundle / "models" / "model.pt"
    state = torch.load(weights, weights_only=True)
    torch.save({name: value + 1 if value.is_floating_point() else value for name, value in state.items()}, weights)
    with pytest.raises(ValueError, match="other settings or files"):
        run_study(study_from_dict(content, tmp_path), progress=False, report=False)
    torch.save(state, weights)
    run_study(study_from_dict(content, tmp_path), progress=False, report=False)  # the same content again
    (bundle / "models" / "temperature.json").write_text(json.dumps({"temperature": 2.0}))
    with pytest.raises(ValueError, match="other settings or files"):
        run_study(study_from_dict(content, tmp_path), progress=False, report=False)
    (bundle / "models" / "temperature.json").unlink()
    image = next((tmp_path / "study" / "phantoms" / "images").glob("*.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((48, 48, 48), np.float32), np.eye(4)), image)
    with pytest.raises(ValueError, match="other settings or files"):
        run_study(study_from_dict(content, tmp_path), progress=False, report=False)
