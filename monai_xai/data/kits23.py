"""MONAI datalists of the KiTS23 kidney tumour CT data set, read exactly as published, and of MSD-style
``dataset.json`` layouts (e.g. Task09 spleen); no download.

KiTS23 layout (``dataset_dir`` is the repository's ``dataset/`` folder, after ``kits23_download_data`` fetched the
images)::

    dataset_dir/
        kits23.json                  (per-case clinical data; not needed here)
        case_00000/imaging.nii.gz    CT in Hounsfield units
        case_00000/segmentation.nii.gz   0 background, 1 kidney, 2 tumour, 3 cyst
        case_00000/instances/...     per-annotator instance masks (not needed here)
        case_00001/...

MSD layout (Medical Segmentation Decathlon, read when ``dataset_dir`` holds a ``dataset.json``)::

    dataset_dir/
        dataset.json   {"labels": {"0": "background", "1": "spleen"},
                        "training": [{"image": "./imagesTr/spleen_2.nii.gz", "label": "./labelsTr/spleen_2.nii.gz"}],
                        "test": ["./imagesTs/spleen_1.nii.gz", ...]}
        imagesTr/ labelsTr/ imagesTs/

Both give ``{"training": [...], "validation": [...], "test": [...]}`` with entries ``{"image": <absolute path str>,
"label": <absolute path str>}``: the labelled cases split per case, fixed by the seed (MSD's unlabelled ``test``
images are not listed: every list here can be scored). :func:`foreground_hu_range` gives the HU clipping window from
the training cases, the way nnU-Net normalises CT (0.5 and 99.5 percentiles of the voxels inside the labels).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from .class_folders import absolute_folder
from .splits import stratified_split, write_datalist

__all__ = [
    "KITS23_CLASSES",
    "kits23_datalist",
    "msd_datalist",
    "msd_class_names",
    "foreground_hu_range",
    "write_kits23_datalist",
]

KITS23_CLASSES = ("background", "kidney", "tumour", "cyst")
_DATASET = "KiTS23"
_LAYOUT = "<dataset_dir>/case_XXXXX/imaging.nii.gz and segmentation.nii.gz (the kits23 repository's dataset/ folder)"
_CASE = re.compile(r"case_\d{5}")
_MSD_FILE = "dataset.json"


def _split(
    entries: list[dict[str, Any]], validation_fraction: float, test_fraction: float, seed: int, where: Path
) -> dict[str, list[dict[str, Any]]]:
    """``entries`` split per case into training / validation / test, fixed by ``seed`` (order kept in each list)."""
    if not 0.0 < validation_fraction < 1.0 or not 0.0 <= test_fraction < 1.0:
        raise ValueError(
            f"validation_fraction must be in (0, 1) and test_fraction in [0, 1), got {validation_fraction} and "
            f"{test_fraction}."
        )
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"validation_fraction + test_fraction must leave cases for training, got {validation_fraction} + "
            f"{test_fraction} >= 1."
        )
    fractions = {
        "training": 1.0 - validation_fraction - test_fraction,
        "validation": validation_fraction,
        "test": test_fraction,
    }
    # one stratum: a per-case split with stratified_split's seeded, rounding-safe shares
    split = stratified_split([{**entry, "stratum": 0} for entry in entries], fractions, seed, key="stratum")
    for name, chosen in split.items():
        if not chosen and fractions[name] > 0:
            raise ValueError(
                f"{len(entries)} labelled cases in {where} leave {name} empty with validation_fraction="
                f"{validation_fraction} and test_fraction={test_fraction}; choose fractions that give each list at "
                "least one case."
            )
    return {
        name: [{k: v for k, v in entry.items() if k != "stratum"} for entry in chosen] for name, chosen in split.items()
    }


def _kits23_cases(root: Path) -> list[dict[str, Any]]:
    """``{"image", "label"}`` of every ``case_XXXXX`` folder of ``root``, sorted by case, after checking the files."""
    cases = sorted(path for path in root.iterdir() if path.is_dir() and _CASE.fullmatch(path.name))
    if not cases:
        hint = (
            f" It holds a dataset/ folder: pass {root / 'dataset'}."
            if (root / "dataset").is_dir()
            else " Pass the folder that holds case_00000/, case_00001/, ..."
        )
        raise FileNotFoundError(
            f"{_DATASET}: no case_XXXXX folders in {root}; the published layout is {_LAYOUT}.{hint}"
        )
    no_image = [case.name for case in cases if not (case / "imaging.nii.gz").is_file()]
    if no_image:
        raise FileNotFoundError(
            f"{_DATASET}: {len(no_image)} of {len(cases)} cases in {root} have no imaging.nii.gz (e.g. "
            f"{no_image[:5]}); the kits23 repository ships the segmentations only: run its `kits23_download_data` "
            "to fetch the CT images, or remove the incomplete case folders."
        )
    no_label = [case.name for case in cases if not (case / "segmentation.nii.gz").is_file()]
    if no_label:
        raise FileNotFoundError(
            f"{_DATASET}: {len(no_label)} of {len(cases)} cases in {root} have no segmentation.nii.gz (e.g. "
            f"{no_label[:5]}); every case of the published layout has one: restore it or remove the case folder."
        )
    return [{"image": str(case / "imaging.nii.gz"), "label": str(case / "segmentation.nii.gz")} for case in cases]


def _read_msd(root: Path) -> dict[str, Any]:
    path = root / _MSD_FILE
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); restore the data set's dataset.json.") from error
    if not isinstance(content, dict) or not isinstance(content.get("training"), list) or not content["training"]:
        raise ValueError(
            f"{path} has no 'training' list of {{'image': ..., 'label': ...}} entries; an MSD-style dataset.json lists "
            "its labelled cases there."
        )
    return content


def _msd_cases(root: Path) -> list[dict[str, Any]]:
    """``{"image", "label"}`` of the ``training`` entries of ``root/dataset.json`` as absolute paths, checked."""
    path = root / _MSD_FILE
    entries = []
    for index, entry in enumerate(_read_msd(root)["training"]):
        if (
            not isinstance(entry, Mapping)
            or not isinstance(entry.get("image"), str)
            or not isinstance(entry.get("label"), str)
        ):
            raise ValueError(f"{path}: training entry {index} must have 'image' and 'label' paths, got {entry!r}.")
        entries.append({key: str((root / entry[key]).resolve()) for key in ("image", "label")})
    missing = [file for entry in entries for file in entry.values() if not Path(file).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} files listed in {path} do not exist (e.g. {missing[:3]}); paths are relative to the "
            "folder of dataset.json: unpack the whole data set there."
        )
    return entries


def msd_class_names(dataset_dir: str | Path) -> tuple[str, ...]:
    """Class names of an MSD-style data set in label order, from its ``dataset.json`` ``"labels"``
    (e.g. ``("background", "spleen")``).

    Raises:
        ValueError: no ``labels`` mapping, or labels that are not 0, 1, ..., n - 1.
    """
    root = absolute_folder(dataset_dir, "MSD-style data set", f"<dataset_dir>/{_MSD_FILE}")
    labels = _read_msd(root).get("labels")
    names = {str(value): str(name) for value, name in labels.items()} if isinstance(labels, Mapping) else {}
    if not names or set(names) != {str(value) for value in range(len(names))}:
        raise ValueError(
            f"{root / _MSD_FILE} must map each label value 0..n-1 to a name under 'labels', e.g. "
            f'{{"0": "background", "1": "spleen"}}; got {labels!r}.'
        )
    return tuple(names[str(value)] for value in range(len(names)))


def msd_datalist(
    dataset_dir: str | Path, validation_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """Datalist of an MSD-style data set (``dataset_dir/dataset.json``, see the module docstring): its labelled
    ``training`` cases split per case into training / validation / test, fixed by ``seed``.

    Args: as :func:`kits23_datalist`.

    Raises:
        FileNotFoundError: no such folder, no ``dataset.json``, or a listed file is missing.
        ValueError: a ``dataset.json`` without labelled cases, or fractions that leave a list empty.
    """
    root = absolute_folder(dataset_dir, "MSD-style data set", f"<dataset_dir>/{_MSD_FILE}")
    if not (root / _MSD_FILE).is_file():
        raise FileNotFoundError(f"{root} has no {_MSD_FILE}; pass the folder of an MSD task (e.g. Task09_Spleen).")
    return _split(_msd_cases(root), validation_fraction, test_fraction, seed, root)


def kits23_datalist(
    dataset_dir: str | Path, validation_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """Datalist of KiTS23 as published, or of an MSD-style data set when ``dataset_dir`` holds a ``dataset.json``
    (:func:`msd_datalist`); see the module docstring for both layouts.

    Args:
        dataset_dir: KiTS23's ``dataset/`` folder (holding ``case_00000/`` ...), or an MSD task folder.
        validation_fraction: share of the cases in ``validation``, in (0, 1).
        test_fraction: share of the cases in ``test``, in [0, 1) (0: an empty test list, e.g. when the challenge's
            hidden test set is the test).
        seed: seed of the per-case split.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``, entries ``{"image": <absolute path>, "label":
        <absolute path>}`` in case order; each case is in exactly one list.

    Raises:
        FileNotFoundError: no such folder, no case folders, a case without ``imaging.nii.gz`` (the segmentations come
            without images until ``kits23_download_data`` ran) or without ``segmentation.nii.gz``.
        ValueError: fractions out of range or leaving a list empty.
    """
    root = absolute_folder(dataset_dir, _DATASET, _LAYOUT)
    if (root / _MSD_FILE).is_file():
        return msd_datalist(root, validation_fraction, test_fraction, seed)
    return _split(_kits23_cases(root), validation_fraction, test_fraction, seed, root)


def foreground_hu_range(
    entries: Sequence[Mapping[str, str]],
    percentiles: tuple[float, float] = (0.5, 99.5),
    voxels_per_case: int = 100_000,
    seed: int = 0,
) -> tuple[float, float]:
    """The HU clipping window of a CT data set: percentiles of the image values inside the labels (any class > 0),
    as nnU-Net's CT normalisation computes them; set the bundle's ``hu_min`` / ``hu_max`` to them.

    Args:
        entries: datalist entries with ``image`` and ``label`` paths (usually the ``training`` list).
        percentiles: (low, high) percentiles in [0, 100].
        voxels_per_case: foreground voxels drawn per case (all when it has fewer), so that large tumours do not
            dominate and memory stays bounded.
        seed: seed of the voxel draw.

    Returns:
        (low, high) in the images' units (HU for CT).

    Raises:
        ValueError: no entries, bad percentiles, an image and label of different shapes, or no foreground at all.
    """
    low, high = percentiles
    if not entries or not 0.0 <= low < high <= 100.0:
        raise ValueError(f"need entries and 0 <= low < high <= 100 percentiles, got {len(entries)} and {percentiles}.")
    rng = np.random.default_rng(seed)
    values = []
    for entry in entries:
        image = np.asarray(nib.load(entry["image"]).dataobj, dtype=np.float32)
        label = np.asarray(nib.load(entry["label"]).dataobj)
        if image.shape != label.shape:
            raise ValueError(
                f"{entry['image']} {image.shape} and {entry['label']} {label.shape} differ in shape; "
                "each label must be on its image's grid."
            )
        foreground = image[label > 0]
        if foreground.size > voxels_per_case:
            foreground = rng.choice(foreground, voxels_per_case, replace=False)
        values.append(foreground)
    pooled = np.concatenate(values)
    if not pooled.size:
        raise ValueError("no labelled voxel in any case; the window is computed inside the labels.")
    lower, upper = np.percentile(pooled, [low, high])
    return float(lower), float(upper)


def write_kits23_datalist(
    root: str | Path,
    out_file: str | Path,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> str:
    """Write :func:`kits23_datalist` as JSON to ``out_file`` (MONAI's ``load_decathlon_datalist`` reads it).

    Args:
        root, validation_fraction, test_fraction, seed: as :func:`kits23_datalist` (``root`` is ``dataset_dir``).
        out_file: the JSON file to write (its folder is created).

    Returns:
        one line: the file written and the number of cases per list.
    """
    datalist = kits23_datalist(root, validation_fraction=validation_fraction, test_fraction=test_fraction, seed=seed)
    path = write_datalist(datalist, out_file)
    counts = ", ".join(f"{name} {len(entries)}" for name, entries in datalist.items())
    return f"wrote {path}: {counts} cases"
