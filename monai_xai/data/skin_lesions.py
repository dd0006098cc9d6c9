"""Readers for the public dermoscopy data sets HAM10000 and ISIC 2019, as published, returning MONAI datalists.

Nothing is downloaded: each reader checks the published layout under ``root`` and says what is missing.

HAM10000 (Harvard Dataverse doi:10.7910/DVN/DBW86T, or Kaggle "Skin Cancer MNIST: HAM10000")::

    root/
        HAM10000_metadata.csv        lesion_id,image_id,dx,dx_type,age,sex,localization[,dataset,...]
        HAM10000_images_part_1/      <image_id>.jpg
        HAM10000_images_part_2/      <image_id>.jpg
        ham10000_images_part_1/      (Kaggle only: lower-case copies, accepted in place of, or besides, the above)
        ham10000_images_part_2/

    Classes by ``dx``, label = index in :data:`HAM10000_CLASSES`: akiec, bcc, bkl, df, mel, nv, vasc. Several images
    show one lesion (``lesion_id``): splits keep a lesion's images in one list.

ISIC 2019 (https://challenge.isic-archive.com/data/#2019, training part)::

    root/
        ISIC_2019_Training_GroundTruth.csv   image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK (one-hot, "1.0" / "0.0")
        ISIC_2019_Training_Input/            <image>.jpg (some names end in "_downsampled", as the CSV lists them)
        ISIC_2019_Training_Metadata.csv      (not read)

    Classes in the CSV's column order, label = index in :data:`ISIC2019_CLASSES`; UNK is never positive in the
    training set but keeps its index 8, so labels match the CSV.

Optional lesion masks (ISIC task-1 layout): ``mask_dir/<image_id>_segmentation.png`` (0 / 255).

Each datalist entry is ``{"image": <absolute path>, "label": int, "image_id": str}`` plus ``"lesion_id"`` (HAM10000)
and ``"mask": <absolute path>`` (when a mask was found); a datalist is ``{list name: entries}`` with the list names of
``fractions`` (``training``, ``validation``, ``test`` by default), stratified by class and fixed by ``seed``.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from .splits import datalist_summary, filled_stratified_split, write_datalist

__all__ = [
    "HAM10000_CLASSES",
    "ISIC2019_CLASSES",
    "SKIN_LESION_CLASSES",
    "DEFAULT_FRACTIONS",
    "ham10000_datalist",
    "isic2019_datalist",
    "skin_lesion_datalist",
    "write_skin_lesion_datalist",
    "class_weights",
    "read_ham10000",
    "read_isic2019",
    "attach_masks",
]

logger = logging.getLogger(__name__)

HAM10000_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
ISIC2019_CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
SKIN_LESION_CLASSES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"ham10000": HAM10000_CLASSES, "isic2019": ISIC2019_CLASSES}
)
DEFAULT_FRACTIONS: Mapping[str, float] = MappingProxyType({"training": 0.7, "validation": 0.1, "test": 0.2})

_HAM10000_CSV = "HAM10000_metadata.csv"
_HAM10000_COLUMNS = ("lesion_id", "image_id", "dx")
# (published name, Kaggle's lower-case copy) of each image part; the first folder holding an image wins
_HAM10000_PARTS = (
    ("HAM10000_images_part_1", "ham10000_images_part_1"),
    ("HAM10000_images_part_2", "ham10000_images_part_2"),
)
_HAM10000_LAYOUT = (
    "the published HAM10000 layout is <root>/HAM10000_metadata.csv (columns lesion_id,image_id,dx,dx_type,age,sex,"
    "localization) with the images <image_id>.jpg in <root>/HAM10000_images_part_1/ and <root>/HAM10000_images_part_2/"
    " (Kaggle's lower-case ham10000_images_part_1/2 also accepted); download it from Harvard Dataverse "
    "(doi:10.7910/DVN/DBW86T) or Kaggle ('Skin Cancer MNIST: HAM10000') and unpack it into root unchanged"
)
_ISIC2019_CSV = "ISIC_2019_Training_GroundTruth.csv"
_ISIC2019_IMAGES = "ISIC_2019_Training_Input"
_ISIC2019_LAYOUT = (
    "the published ISIC 2019 layout is <root>/ISIC_2019_Training_GroundTruth.csv (header image,"
    + ",".join(ISIC2019_CLASSES)
    + ", one-hot) with the images <image>.jpg in <root>/ISIC_2019_Training_Input/; download "
    "ISIC_2019_Training_Input.zip and ISIC_2019_Training_GroundTruth.csv from https://challenge.isic-archive.com/data/"
    "#2019 and unpack them into root unchanged"
)
_MASK_SUFFIX = "_segmentation.png"
_SHOWN = 5  # missing or bad items named in an error message


def ham10000_datalist(
    root: str | Path,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    mask_dir: str | Path | None = None,
    require_masks: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """Read HAM10000 under ``root`` (layout in the module docstring) and split it by lesion, stratified by class.

    Args:
        root: folder of the published HAM10000 files.
        fractions: list name -> share, e.g. ``{"training": 0.7, "validation": 0.1, "test": 0.2}`` (normalised).
        seed: split seed; the same seed and files always give the same lists.
        mask_dir: optional folder of ``<image_id>_segmentation.png`` masks (ISIC 2018 task-1 layout).
        require_masks: keep only the images that have a mask (needs ``mask_dir``).

    Returns:
        ``{list name: entries}``, entries ``{"image", "label", "image_id", "lesion_id"[, "mask"]}`` with label the index
        of ``dx`` in :data:`HAM10000_CLASSES`; all images of one ``lesion_id`` are in one list.

    Raises:
        FileNotFoundError: a missing root, CSV, image folder, image file or ``mask_dir``.
        ValueError: a CSV without the expected columns or rows, an unknown ``dx``, an image listed twice, no image
            with a mask where masks are asked for, or a list with a positive share left empty.
    """
    entries = read_ham10000(root)
    entries = attach_masks(entries, mask_dir, require_masks)
    return filled_stratified_split(entries, fractions, seed, group_key="lesion_id")


def isic2019_datalist(
    root: str | Path,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    mask_dir: str | Path | None = None,
    require_masks: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """Read the ISIC 2019 training set under ``root`` (layout in the module docstring) and split it by class.

    The split is per image: the ground-truth CSV has no lesion ids (``ISIC_2019_Training_Metadata.csv`` is not read).

    Args:
        root: folder of the published ISIC 2019 training files.
        fractions: list name -> share (normalised).
        seed: split seed.
        mask_dir: optional folder of ``<image>_segmentation.png`` masks, ``<image>`` as the CSV spells it.
        require_masks: keep only the images that have a mask (needs ``mask_dir``).

    Returns:
        ``{list name: entries}``, entries ``{"image", "label", "image_id"[, "mask"]}`` with label the index of the
        row's positive column in :data:`ISIC2019_CLASSES`.

    Raises:
        FileNotFoundError: a missing root, CSV, image folder, image file or ``mask_dir``.
        ValueError: a CSV without the expected columns or rows, a row that is not exactly one-hot, an image listed
            twice, no image with a mask where masks are asked for, or a list with a positive share left empty.
    """
    entries = read_isic2019(root)
    entries = attach_masks(entries, mask_dir, require_masks)
    return filled_stratified_split(entries, fractions, seed)


_READERS = {"ham10000": ham10000_datalist, "isic2019": isic2019_datalist}


def skin_lesion_datalist(dataset: str, root: str | Path, **kwargs: Any) -> dict[str, list[dict[str, Any]]]:
    """The datalist of ``dataset`` (``"ham10000"`` or ``"isic2019"``, as a bundle config names it) under ``root``.

    ``kwargs`` go to :func:`ham10000_datalist` or :func:`isic2019_datalist` (``fractions``, ``seed``, ``mask_dir``,
    ``require_masks``).

    Raises:
        ValueError: an unknown ``dataset``; otherwise as the reader.
    """
    return _reader(dataset)(root, **kwargs)


def write_skin_lesion_datalist(dataset: str, root: str | Path, out_file: str | Path, **kwargs: Any) -> str:
    """Write the datalist of ``dataset`` under ``root`` as JSON to ``out_file`` and return a one-line summary.

    The JSON is ``{list name: entries}`` (MONAI's ``load_decathlon_datalist`` reads it; image paths are absolute).

    Args:
        dataset: ``"ham10000"`` or ``"isic2019"``.
        root: folder of the published data set.
        out_file: JSON file to write (its folder is created).
        kwargs: as :func:`skin_lesion_datalist`.

    Returns:
        e.g. ``"wrote out.json (ham10000): training 7010 (akiec 229, ...); ...; masks 0/10015"``: images per list
        and per class (in label order), and how many entries have a mask.
    """
    classes = SKIN_LESION_CLASSES[_dataset_name(dataset)]
    datalist = skin_lesion_datalist(dataset, root, **kwargs)
    path = write_datalist(datalist, out_file)
    entries = [entry for listed in datalist.values() for entry in listed]
    masks = sum("mask" in entry for entry in entries)
    summary = datalist_summary(datalist, classes)
    return f"wrote {path} ({_dataset_name(dataset)}): {summary}; masks {masks}/{len(entries)}"


def class_weights(datalist_entries: Sequence[Mapping[str, Any]], num_classes: int) -> list[float]:
    """Inverse-frequency class weights for an imbalanced list (e.g. a loss's ``weight``), in label order.

    Weight of class ``c`` is proportional to ``1 / count(c)``, normalised so that the weights of the classes present
    in ``datalist_entries`` have mean 1. A class absent from the list (e.g. ISIC 2019's UNK, never positive) gets
    weight 0, and is left out of that mean.

    Args:
        datalist_entries: entries with an int ``"label"`` in ``[0, num_classes)`` (e.g. a datalist's ``training``).
        num_classes: number of classes (7 for HAM10000, 9 for ISIC 2019).

    Returns:
        ``num_classes`` floats.

    Raises:
        ValueError: no entries, ``num_classes < 1``, or an entry without a label or with a label out of range.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    if not datalist_entries:
        raise ValueError("class_weights needs at least one entry; got an empty list.")
    labels = [entry.get("label") for entry in datalist_entries]
    bad = [
        i for i, label in enumerate(labels) if not isinstance(label, int | np.integer) or not 0 <= label < num_classes
    ]
    if bad:
        raise ValueError(
            f"entries {bad[:_SHOWN]} ({len(bad)} in all) have no int 'label' in [0, {num_classes}); "
            f"e.g. {labels[bad[0]]!r}."
        )
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=num_classes).astype(float)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = 1.0 / counts[present]
    weights[present] /= weights[present].mean()
    return weights.tolist()


def read_ham10000(root: str | Path) -> list[dict[str, Any]]:
    """All HAM10000 images under ``root`` in CSV order: ``{"image", "label", "image_id", "lesion_id"}`` entries.

    Raises:
        FileNotFoundError, ValueError: as :func:`ham10000_datalist`, for the files and the CSV.
    """
    root = _existing_root(root, _HAM10000_LAYOUT)
    rows = _read_csv(root / _HAM10000_CSV, _HAM10000_COLUMNS, _HAM10000_LAYOUT)
    images = _ham10000_images(root)
    entries = []
    unknown = []
    for line, row in rows:
        image_id, dx = row["image_id"].strip(), row["dx"].strip()
        if dx not in HAM10000_CLASSES:
            unknown.append(f"line {line} ({image_id}): dx {dx!r}")
            continue
        entries.append(
            {
                "image": images.get(image_id, ""),
                "label": HAM10000_CLASSES.index(dx),
                "image_id": image_id,
                "lesion_id": row["lesion_id"].strip(),
            }
        )
    if unknown:
        raise ValueError(
            f"{root / _HAM10000_CSV}: {len(unknown)} rows have a dx that is not one of {', '.join(HAM10000_CLASSES)}: "
            f"{'; '.join(unknown[:_SHOWN])}; fix or remove those rows ({_HAM10000_LAYOUT})."
        )
    _check_unique(entries, root / _HAM10000_CSV)
    _check_found(entries, "HAM10000_images_part_1/ or HAM10000_images_part_2/", root, _HAM10000_LAYOUT)
    return entries


def read_isic2019(root: str | Path) -> list[dict[str, Any]]:
    """All ISIC 2019 training images under ``root`` in CSV order: ``{"image", "label", "image_id"}`` entries.

    Raises:
        FileNotFoundError, ValueError: as :func:`isic2019_datalist`, for the files and the CSV.
    """
    root = _existing_root(root, _ISIC2019_LAYOUT)
    csv_path = root / _ISIC2019_CSV
    rows = _read_csv(csv_path, ("image", *ISIC2019_CLASSES), _ISIC2019_LAYOUT)
    folder = root / _ISIC2019_IMAGES
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} not found; {_ISIC2019_LAYOUT}.")
    images = _jpegs_in(folder)
    entries = []
    for line, row in rows:
        image_id = row["image"].strip()
        entries.append(
            {
                "image": images.get(image_id, ""),
                "label": _one_hot_label(row, csv_path, line, image_id),
                "image_id": image_id,
            }
        )
    _check_unique(entries, csv_path)
    _check_found(entries, f"{_ISIC2019_IMAGES}/", root, _ISIC2019_LAYOUT)
    return entries


def attach_masks(
    entries: Sequence[Mapping[str, Any]], mask_dir: str | Path | None, require_masks: bool = False
) -> list[dict[str, Any]]:
    """Add ``"mask": <absolute path>`` to the entries whose ``mask_dir/<image_id>_segmentation.png`` exists.

    The number of entries with a mask is logged (INFO). Without ``mask_dir`` the entries come back unchanged.

    Args:
        entries: entries with ``"image_id"``.
        mask_dir: folder of ISIC task-1 style masks, or None.
        require_masks: keep only the entries with a mask.

    Returns:
        new entry dicts, in input order.

    Raises:
        FileNotFoundError: ``mask_dir`` does not exist.
        ValueError: ``require_masks`` without ``mask_dir``, or no entry has a mask in ``mask_dir``.
    """
    entries = [dict(entry) for entry in entries]
    if mask_dir is None:
        if require_masks:
            raise ValueError("require_masks=True needs mask_dir, the folder of <image_id>_segmentation.png masks.")
        return entries
    mask_dir = Path(mask_dir).expanduser().resolve()
    if not mask_dir.is_dir():
        raise FileNotFoundError(
            f"mask_dir {mask_dir} not found; give the folder holding <image_id>{_MASK_SUFFIX} masks (ISIC task-1 "
            "layout, e.g. ISIC2018_Task1_Training_GroundTruth/), or mask_dir=None."
        )
    names = {entry.name for entry in os.scandir(mask_dir) if entry.name.endswith(_MASK_SUFFIX)}
    for entry in entries:
        name = f"{entry['image_id']}{_MASK_SUFFIX}"
        if name in names:
            entry["mask"] = str(mask_dir / name)
    found = sum("mask" in entry for entry in entries)
    logger.info("%d of %d images have a mask in %s", found, len(entries), mask_dir)
    if found == 0:
        example = f"{entries[0]['image_id']}{_MASK_SUFFIX}" if entries else f"<image_id>{_MASK_SUFFIX}"
        raise ValueError(
            f"no image has a mask in {mask_dir} (looked for names such as {example}); point mask_dir at the ISIC "
            "task-1 ground-truth folder of these images, or leave mask_dir=None."
        )
    return [entry for entry in entries if "mask" in entry] if require_masks else entries


def _reader(dataset: str) -> Callable[..., dict[str, list[dict[str, Any]]]]:
    return _READERS[_dataset_name(dataset)]


def _dataset_name(dataset: str) -> str:
    name = str(dataset).lower()
    if name not in _READERS:
        raise ValueError(f"unknown skin-lesion data set {dataset!r}; choose one of {', '.join(_READERS)}.")
    return name


def _existing_root(root: str | Path, layout: str) -> Path:
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"data set root {path} not found or not a folder; {layout}.")
    return path


def _read_csv(path: Path, columns: Sequence[str], layout: str) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of each non-blank data row of ``path``, whose header must hold ``columns``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {layout}.")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in columns if name not in header]
        if missing:
            raise ValueError(f"{path} lacks the columns {missing} (header: {','.join(header) or 'none'}); {layout}.")
        reader.fieldnames = header
        rows = [(reader.line_num, row) for row in reader if any(isinstance(v, str) and v.strip() for v in row.values())]
    if not rows:
        raise ValueError(f"{path} has a header but no rows; {layout}.")
    for line, row in rows:
        absent = [name for name in columns if row.get(name) is None]
        if absent:
            raise ValueError(f"{path} line {line} is short: no value for {absent}; {layout}.")
    return rows


def _ham10000_images(root: Path) -> dict[str, str]:
    """image_id -> absolute path over the part folders (published name first, then Kaggle's lower-case copy)."""
    images: dict[str, str] = {}
    for names in _HAM10000_PARTS:
        folders = [root / name for name in names if (root / name).is_dir()]
        if not folders:
            raise FileNotFoundError(f"image folder {root / names[0]} not found; {_HAM10000_LAYOUT}.")
        for folder in folders:
            for image_id, path in _jpegs_in(folder).items():
                images.setdefault(image_id, path)
    return images


def _jpegs_in(folder: Path) -> dict[str, str]:
    """Stem -> absolute path of the ``.jpg`` files in ``folder`` (one listing, not one stat per CSV row)."""
    return {
        entry.name[: -len(".jpg")]: str(folder / entry.name)
        for entry in os.scandir(folder)
        if entry.name.endswith(".jpg")
    }


def _one_hot_label(row: Mapping[str, str], path: Path, line: int, image_id: str) -> int:
    """Index of the single 1 among the class columns of an ISIC 2019 row; anything else is an error."""
    try:
        values = [float(row[name]) for name in ISIC2019_CLASSES]
    except ValueError:
        values = []
    if len(values) != len(ISIC2019_CLASSES) or any(v not in (0.0, 1.0) for v in values) or sum(values) != 1.0:
        found = ",".join(row[name].strip() for name in ISIC2019_CLASSES)
        raise ValueError(
            f"{path} line {line}: image {image_id} is not exactly one-hot over {','.join(ISIC2019_CLASSES)} "
            f"(found {found}); each row needs one 1.0 and eight 0.0; {_ISIC2019_LAYOUT}."
        )
    return values.index(1.0)


def _check_unique(entries: Sequence[Mapping[str, Any]], path: Path) -> None:
    counts = Counter(entry["image_id"] for entry in entries)
    repeated = [image_id for image_id, count in counts.items() if count > 1]
    if repeated:
        raise ValueError(
            f"{path} lists {len(repeated)} images more than once, e.g. {repeated[:_SHOWN]}; each image must have one "
            "row (the published CSV has no repeats: restore it)."
        )


def _check_found(entries: Sequence[Mapping[str, Any]], where: str, root: Path, layout: str) -> None:
    missing = [entry["image_id"] for entry in entries if not entry["image"]]
    if missing:
        shown = ", ".join(f"{image_id}.jpg" for image_id in missing[:_SHOWN])
        raise FileNotFoundError(
            f"{len(missing)} of {len(entries)} images listed in the CSV are not in {where} under {root}, e.g. {shown}; "
            f"unpack the missing image archives ({layout})."
        )
