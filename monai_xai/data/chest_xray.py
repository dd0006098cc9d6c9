"""MONAI datalists of Kermany's "Chest X-Ray Images (Pneumonia)", read exactly as published; no download.

Published layout (``root`` is the folder holding ``train``, ``val`` and ``test``)::

    root/
        train/NORMAL/IM-0115-0001.jpeg ...
        train/PNEUMONIA/person1_bacteria_1.jpeg ...
        val/NORMAL/   val/PNEUMONIA/     (16 images in all)
        test/NORMAL/  test/PNEUMONIA/

The Kaggle archive unpacks to ``chest_xray/`` holding that layout plus a duplicate of it in ``chest_xray/chest_xray/``
and ``__MACOSX/`` folders: ``root`` may be that ``chest_xray/`` folder or its parent (a folder holding one
``chest_xray/`` with the split folders); the duplicate, ``__MACOSX`` and dot-files such as ``.DS_Store`` are ignored.

Labels are the index in :data:`CHEST_XRAY_CLASSES`: NORMAL 0, PNEUMONIA 1. The returned datalist is ``{"training":
[...], "validation": [...], "test": [...]}`` with entries ``{"image": <absolute path str>, "label": int}``. The
published ``val/`` is tiny, so ``validation_fraction`` can replace it by a stratified share of ``train/`` + ``val/``.
The X-rays are mostly grayscale with a few RGB: load them with ``LoadImaged(keys="image", ensure_channel_first=True)``
then :class:`~monai_xai.data.class_folders.ToRGBd` and a resize.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .class_folders import absolute_folder, list_class_folders
from .splits import datalist_summary, stratified_split, write_datalist

__all__ = ["CHEST_XRAY_CLASSES", "chest_xray_datalist", "write_chest_xray_datalist"]

CHEST_XRAY_CLASSES = ("NORMAL", "PNEUMONIA")
_SPLITS = ("train", "val", "test")
_NESTED = "chest_xray"
_DATASET = "Chest X-Ray Images (Pneumonia) (Kermany)"
_LAYOUT = "<root>/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg (root may also be the folder holding chest_xray/)"


def _data_folder(root: Path) -> Path:
    """The folder holding the split folders: ``root`` itself, or ``root/chest_xray`` when ``root`` holds none."""
    if any((root / split).is_dir() for split in _SPLITS):
        return root
    nested = root / _NESTED
    if nested.is_dir() and any((nested / split).is_dir() for split in _SPLITS):
        return nested
    raise FileNotFoundError(
        f"{_DATASET}: neither {root} nor {nested} holds the split folders {', '.join(_SPLITS)}. The published "
        f"layout is {_LAYOUT}; pass as root the unpacked chest_xray/ folder (or the folder holding it)."
    )


def chest_xray_datalist(
    root: str | Path, validation_fraction: float | None = None, seed: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """Datalist of the data set under ``root`` (see the module docstring for the layout and labels).

    Args:
        root: the folder holding ``train/``, ``val/`` and ``test/``, or its parent holding it as ``chest_xray/``.
        validation_fraction: None keeps the published ``val/`` as ``validation`` and ``train/`` as ``training``; a
            number in (0, 1) pools ``train/`` and ``val/`` and splits them, stratified by class, with that share of
            each class in ``validation``.
        seed: seed of the stratified split (:func:`~monai_xai.data.splits.stratified_split`); unused when
            ``validation_fraction`` is None.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``, entries ``{"image": <absolute path>, "label":
        int}``; ``test`` is ``test/``. A list is class by class (NORMAL first), file names sorted within a class (with
        ``validation_fraction``, the ``train/`` images of a class come before its ``val/`` images).

    Raises:
        FileNotFoundError: ``root``, a split folder or a class folder is missing.
        ValueError: a class folder without images, a folder that is not a class, a ``validation_fraction`` outside
            (0, 1) or one that leaves ``training`` or ``validation`` empty.
    """
    if validation_fraction is not None and not 0.0 < validation_fraction < 1.0:
        raise ValueError(
            f"validation_fraction must be None (the published val/) or in (0, 1), got {validation_fraction}."
        )
    folder = _data_folder(absolute_folder(root, _DATASET, _LAYOUT))
    lists = {split: list_class_folders(folder / split, CHEST_XRAY_CLASSES, _DATASET, _LAYOUT) for split in _SPLITS}
    if validation_fraction is None:
        return {"training": lists["train"], "validation": lists["val"], "test": lists["test"]}
    pooled = sorted(lists["train"] + lists["val"], key=lambda entry: entry["label"])  # stable: train before val
    split = stratified_split(pooled, {"training": 1.0 - validation_fraction, "validation": validation_fraction}, seed)
    for name, entries in split.items():
        if not entries:
            raise ValueError(
                f"validation_fraction={validation_fraction} leaves {name} empty with {len(pooled)} train + val images "
                f"in {folder}; choose a fraction that gives each list at least one image."
            )
    return {"training": split["training"], "validation": split["validation"], "test": lists["test"]}


def write_chest_xray_datalist(
    root: str | Path, out_file: str | Path, validation_fraction: float | None = None, seed: int = 0
) -> str:
    """Write :func:`chest_xray_datalist` as JSON to ``out_file`` (MONAI's ``load_decathlon_datalist`` reads it).

    Args:
        root, validation_fraction, seed: as :func:`chest_xray_datalist`.
        out_file: the JSON file to write (its folder is created).

    Returns:
        one line: the file written and the number of images per list and per class.
    """
    datalist = chest_xray_datalist(root, validation_fraction=validation_fraction, seed=seed)
    path = write_datalist(datalist, out_file)
    return f"wrote {path}: {datalist_summary(datalist, CHEST_XRAY_CLASSES)}"
