"""One explanation core behind every front door: the same cases explained with the same settings through
``python -m monai.bundle run`` with the overlays, ``monai-xai explain``, ``monai-xai study``, ``monai-xai sanity``
(the trained network's maps), a live MONAI Label server and the Python API give the same maps and the same metric
values, for a classifier and for a segmenter with a sliding window and a class set (``tests/helpers/front_doors.py``).

The Python API (:func:`monai_xai.explanation.explain` and the metric catalogue, in this process) is the reference;
every other door runs as a user runs it, in its own process.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import requests
import torch

from monai_xai.bundle import explain_config_files, load_trained_bundle
from monai_xai.enums import MetricInput
from monai_xai.explanation import explain
from monai_xai.metrics import get_metric, region_mask
from monai_xai.sanity.cases import load_case
from tests.helpers.front_doors import BUNDLES, DATA, METHODS, METRIC_ARGS, METRICS, write_front_door_bundles
from tests.helpers.label import SAMPLE_APP, SERVER_START_TIMEOUT_S, server_command
from tests.helpers.servers import free_port, running_server

pytestmark = pytest.mark.slow

CASES = ("case_000", "case_001")
MAP_TOLERANCE = 1e-5
METRIC_TOLERANCE = 1e-6
SCRIPT = Path(sys.executable).parent / "monai-xai"


def _run(command: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    finished = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900, env=env)
    assert finished.returncode == 0, f"{command[:4]} failed:\n{finished.stdout[-3000:]}\n{finished.stderr[-3000:]}"


def _settings(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "configs" / "explain.json").read_text())


def _python_api(bundle: Path, data: Path) -> dict[str, Any]:
    """Maps {case: {method: array}} and per-case metrics {metric: {method: {case: value}}} of the Python API."""
    trained = load_trained_bundle(bundle)
    settings = _settings(bundle)
    cases = [load_case({"image": str(data / "images" / f"{c}.nii.gz"), "region": str(data / "masks" / f"{c}.nii.gz")},
                       trained.preprocessing, "mask") for c in CASES]  # fmt: skip
    images = torch.stack([image for image, _ in cases])
    regions = region_mask(torch.stack([label for _, label in cases]), None, None)
    explanation = explain(
        trained.network,
        images,
        methods=METHODS,
        target_layers=settings["xai_target_layer"],
        class_idx=settings["xai_class"],
        pixel_set=settings["xai_pixel_set"],
        score=settings["xai_score"],
        window=trained.window,
    )
    maps = {case: {m: explanation.maps[m][k, 0].numpy() for m in METHODS} for k, case in enumerate(CASES)}
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    # the metrics that re-run the network run it as the bundle does: window by window with its window
    network = trained.network if trained.window is None else trained.window.network(trained.network)
    for name in METRICS:
        spec = get_metric(name)
        for method in METHODS:
            metric = spec.create(network, settings["xai_score"], **METRIC_ARGS.get(name, {}))
            if spec.compares_with == MetricInput.REGION:
                values = metric(y_pred=explanation.maps[method], y=regions)
            else:
                values = metric(y_pred=explanation.maps[method], y=images, class_idx=explanation.class_idx,
                                pixel_set=explanation.pixel_set)  # fmt: skip
            column = torch.as_tensor(values).reshape(len(CASES), -1)[:, -1]
            metrics.setdefault(name, {})[method] = dict(zip(CASES, column.tolist()))
    return {"maps": maps, "metrics": metrics, "window": trained.window}


def _cases_csv(folder: Path) -> dict[str, dict[str, dict[str, float]]]:
    with open(folder / "cases.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    return {
        name: {m: {r["case"]: float(r[name]) for r in rows if r["method"] == m} for m in METHODS} for name in METRICS
    }


def _overlay_maps(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    return {c: {m: np.asarray(nib.load(folder / c / f"{c}_{m}.nii.gz").dataobj) for m in METHODS} for c in CASES}


@pytest.fixture(scope="module")
def doors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every door's maps and metrics, per bundle."""
    root = tmp_path_factory.mktemp("front_doors")
    bundles = write_front_door_bundles(root)
    data = root / DATA
    results: dict[str, dict[str, Any]] = {name: {} for name in BUNDLES}
    for name, bundle in bundles.items():
        results[name]["api"] = _python_api(bundle, data)
        # python -m monai.bundle run with the overlays, as configs/README.md shows it
        out = root / f"run_{name}"
        files = json.dumps([str(path) for path in explain_config_files(bundle, ("explain", "xai_metrics"))])
        _run([sys.executable, "-m", "monai.bundle", "run", "--config_file", files, "--bundle_root", str(bundle),
              "--xai_output_dir", str(out)], root)  # fmt: skip
        results[name]["run"] = {"maps": _overlay_maps(out), "metrics": _cases_csv(out)}
        # monai-xai explain
        out = root / f"explain_{name}"
        _run([str(SCRIPT), "explain", str(bundle), "--overlays", "['explain','xai_metrics']", "--xai_output_dir",
              str(out)], root)  # fmt: skip
        results[name]["explain"] = {"maps": _overlay_maps(out), "metrics": _cases_csv(out)}
        # monai-xai sanity: the trained network's maps
        out = root / f"sanity_{name}"
        _run([str(SCRIPT), "sanity", str(bundle), "--datalist", str(data / "datalist.json"), "--data_list_key",
              "test", "--region_key", "mask", "--n_draws", "2", "--maps_dir", str(out)], root)  # fmt: skip
        maps = {c: {m: np.asarray(nib.load(out / f"{c}_{m}_trained.nii.gz").dataobj) for m in METHODS} for c in CASES}
        results[name]["sanity"] = {"maps": maps}
    # monai-xai study: both bundles in one study file
    study = root / "study.json"
    entries = [{"name": n, "path": str(b), "layers": [_settings(b)["xai_target_layer"]]} for n, b in bundles.items()]
    study.write_text(
        json.dumps(
            {
                "name": "front-doors",
                "output_dir": str(root / "study"),
                "data": {"datalist": str(data / "datalist.json"), "data_list_key": "test", "region_key": "mask"},
                "bundles": entries,
                "methods": list(METHODS),
                "metrics": list(METRICS),
                "metric_args": METRIC_ARGS,
                "sanity": False,
                "mlflow": False,
                "batch_size": 2,
                "maps": True,
            }
        )
    )
    _run([str(SCRIPT), "study", str(study)], root)
    with sqlite3.connect(root / "study" / "rows.sqlite") as connection:
        rows = connection.execute("SELECT bundle, method, case_id, metric, value FROM scores").fetchall()
    for name, bundle in bundles.items():
        layer = _settings(bundle)["xai_target_layer"]
        folder = root / "study" / "maps" / name / layer
        maps = {c: {m: np.asarray(nib.load(folder / m / f"images_{c}.nii.gz").dataobj) for m in METHODS} for c in CASES}
        metrics = {
            metric: {m: {Path(r[2]).name.split(".")[0]: r[4] for r in rows if r[:2] == (name, m) and r[3] == metric}
                     for m in METHODS}
            for metric in METRICS
        }  # fmt: skip
        results[name]["study"] = {"maps": maps, "metrics": metrics}
    # a live MONAI Label server serving both bundles, studies: the two phantoms
    app, studies, served = root / "app" / "sample_app", root / "studies", root / "served"
    shutil.copytree(SAMPLE_APP, app, ignore=shutil.ignore_patterns("__pycache__", "logs", "model", "bin"))
    studies.mkdir()
    for case in CASES:
        shutil.copy(data / "images" / f"{case}.nii.gz", studies / f"{case}.nii.gz")
    served.mkdir()
    for name, bundle in bundles.items():
        shutil.copytree(bundle, served / name)
    (served / DATA).symlink_to(data)  # the bundles' dataset_dir, ../data
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [*server_command(), "start_server", "--app", str(app), "--studies", str(studies), "--host",
               "127.0.0.1", "--port", str(port), "--uvicorn_app", "monai_xai.label.server:app", "--conf", "bundles",
               str(served), "--conf", "models", ",".join(BUNDLES), "--conf", "explain_methods", ",".join(METHODS),
               "--conf", "zoo_source", "github", "--conf", "sam2", "false"]  # fmt: skip
    env = {**os.environ, "MONAILABEL_PYEXE": sys.executable, "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    with running_server(command, f"{url}/info/", root / "server.log", SERVER_START_TIMEOUT_S, env=env, cwd=root):
        for name, bundle in bundles.items():
            settings = _settings(bundle)
            maps: dict[str, dict[str, np.ndarray]] = {}
            for case in CASES:
                for method in METHODS:
                    params = {
                        "method": method,
                        "target_layer": settings["xai_target_layer"],
                        "class": settings["xai_class"] or "predicted",
                        "score": settings["xai_score"],
                        "result_volume": "heatmap",
                        "result_extension": ".nii.gz",
                        **({"pixel_set": settings["xai_pixel_set"]} if name == "segmenter" else {}),
                    }
                    response = requests.post(f"{url}/infer/{name}_explain", params={"image": case, "output": "image"},
                                             files={"params": (None, json.dumps(params))}, timeout=300)  # fmt: skip
                    assert response.status_code == 200, response.text[:2000]
                    result = root / f"label_{name}_{case}_{method}.nii.gz"
                    result.write_bytes(response.content)
                    maps.setdefault(case, {})[method] = np.asarray(nib.load(result).dataobj)
            results[name]["label"] = {"maps": maps}
    return results


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize("door", ["run", "explain", "study", "sanity", "label"])
def test_every_door_gives_the_python_apis_maps(doors, bundle, door):
    reference = doors[bundle]["api"]["maps"]
    for case in CASES:
        for method in METHODS:
            expected, got = reference[case][method], np.squeeze(doors[bundle][door]["maps"][case][method])
            assert got.shape == expected.shape, (door, case, method)
            assert np.abs(got - expected).max() <= MAP_TOLERANCE, (door, case, method)
            assert expected.max() == pytest.approx(1.0)  # a map with something in it, not two empty ones


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize("door", ["run", "explain", "study"])
def test_every_door_gives_the_python_apis_metric_values(doors, bundle, door):
    reference = doors[bundle]["api"]["metrics"]
    for metric in METRICS:
        for method in METHODS:
            for case in CASES:
                expected, got = reference[metric][method][case], doors[bundle][door]["metrics"][metric][method][case]
                assert got == pytest.approx(expected, rel=METRIC_TOLERANCE, abs=1e-12), (door, metric, method, case)


def test_the_segmenter_is_explained_window_by_window(doors):
    """The acceptance's segmenter really has a window smaller than its volumes (every door used it: the maps agree)."""
    window = doors["segmenter"]["api"]["window"]
    shape = doors["segmenter"]["api"]["maps"][CASES[0]][METHODS[0]].shape
    assert window is not None and all(size < extent for size, extent in zip(window.roi_size, shape))
