"""MONAI datalists of Kaggle's "Brain Tumor MRI Dataset" (Masoud Nickparvar), read exactly as published; no download.

Published layout (the unpacked Kaggle archive; ``root`` is the folder holding ``Training`` and ``Testing``)::

    root/
        Training/glioma/Tr-gl_0010.jpg ...
        Training/meningioma/...
        Training/notumor/...
        Training/pituitary/...
        Testing/glioma/Te-gl_0010.jpg ...
        Testing/meningioma/ Testing/notumor/ Testing/pituitary/

Labels are the index in :data:`BRAIN_TUMOR_CLASSES`: glioma 0, meningioma 1, notumor 2, pituitary 3. The returned
datalist is ``{"training": [...], "validation": [...], "test": [...]}`` with entries
``{"image": <absolute path str>, "label": int}``: ``validation`` is a stratified share of ``Training/`` (fixed by the
seed), ``test`` is ``Testing/``. The JPEGs mix grayscale and RGB and differ in size: load them with
``LoadImaged(keys="image", ensure_channel_first=True)`` then :class:`~monai_xai.data.class_folders.ToRGBd` and a resize.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .class_folders import absolute_folder, list_class_folders
from .splits import datalist_summary, stratified_split, write_datalist

__all__ = ["BRAIN_TUMOR_CLASSES", "brain_tumor_mri_datalist", "write_brain_tumor_mri_datalist"]

BRAIN_TUMOR_CLASSES = ("glioma", "meningioma", "notumor", "pituitary")
_DATASET = "Brain Tumor MRI Dataset (Kaggle, Nickparvar)"
_LAYOUT = "<root>/Training/<class>/*.jpg and <root>/Testing/<class>/*.jpg with classes " + ", ".join(
    BRAIN_TUMOR_CLASSES
)


def brain_tumor_mri_datalist(
    root: str | Path, validation_fraction: float = 0.2, seed: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """Datalist of the data set under ``root`` (see the module docstring for the layout and labels).

    Args:
        root: the folder holding ``Training/`` and ``Testing/``.
        validation_fraction: share of each class of ``Training/`` that goes to ``validation``, in (0, 1).
        seed: seed of the stratified split (:func:`~monai_xai.data.splits.stratified_split`).

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``, entries ``{"image": <absolute path>, "label":
        int}``; each list is class by class (glioma first), file names sorted within a class.

    Raises:
        FileNotFoundError: ``root``, a split folder or a class folder is missing.
        ValueError: a class folder without images, a folder that is not a class, a ``validation_fraction`` outside
            (0, 1) or one that leaves ``training`` or ``validation`` empty.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}.")
    root = absolute_folder(root, _DATASET, _LAYOUT)
    training = list_class_folders(root / "Training", BRAIN_TUMOR_CLASSES, _DATASET, _LAYOUT)
    test = list_class_folders(root / "Testing", BRAIN_TUMOR_CLASSES, _DATASET, _LAYOUT)
    split = stratified_split(training, {"training": 1.0 - validation_fraction, "validation": validation_fraction}, seed)
    for name, entries in split.items():
        if not entries:
            raise ValueError(
                f"validation_fraction={validation_fraction} leaves {name} empty with {len(training)} training images "
                f"in {root / 'Training'}; choose a fraction that gives each list at least one image."
            )
    return {"training": split["training"], "validation": split["validation"], "test": test}


def write_brain_tumor_mri_datalist(
    root: str | Path, out_file: str | Path, validation_fraction: float = 0.2, seed: int = 0
) -> str:
    """Write :func:`brain_tumor_mri_datalist` as JSON to ``out_file`` (MONAI's ``load_decathlon_datalist`` reads it).

    Args:
        root, validation_fraction, seed: as :func:`brain_tumor_mri_datalist`.
        out_file: the JSON file to write (its folder is created).

    Returns:
        one line: the file written and the number of images per list and per class.
    """
    datalist = brain_tumor_mri_datalist(root, validation_fraction=validation_fraction, seed=seed)
    path = write_datalist(datalist, out_file)
    return f"wrote {path}: {datalist_summary(datalist, BRAIN_TUMOR_CLASSES)}"
