"""A tiny copy of Kermany's "Chest X-Ray Images (Pneumonia)" in the exact layout the Kaggle archive unpacks to.

``root/chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg`` with the archive's extras: the duplicate of the whole
set in ``chest_xray/chest_xray/``, AppleDouble ``._`` files under ``chest_xray/__MACOSX/`` and ``.DS_Store`` files.
Images are real JPEGs with the published file names (``IM-0115-0001.jpeg``, ``NORMAL2-IM-...``,
``person1_bacteria_1.jpeg``, ``person..._virus_...``), mostly grey with a few RGB, a few sizes, ``.jpeg`` with some
``.JPEG`` / ``.jpg``. PNEUMONIA images carry a bright disc at a fixed place (none on NORMAL), so a network can learn
something in one short epoch and its CAMs have a known place to find.
"""

from __future__ import annotations

from pathlib import Path

from monai_xai.data import CHEST_XRAY_CLASSES
from tests.helpers.public_datasets import _image

# disc centre (row, column) as shares of the image per class; None: no disc
_CHEST_DISCS = {"NORMAL": None, "PNEUMONIA": (0.55, 0.3)}
# images per class in each split (the published val/ is tiny too: 8 per class)
_COUNTS = {"train": 6, "val": 2, "test": 2}
_SIZES = ((48, 40), (40, 48), (56, 44))  # (width, height)
_APPLE_DOUBLE = b"\0\5\26\7\0\2\0\0Mac OS X        "


def _file_name(split: str, name: str, index: int) -> str:
    """A published-style file name, unique over the whole set (the explanation run names its outputs by it)."""
    number = {"train": 100, "val": 1400, "test": 1}[split] + index
    extension = {1: ".JPEG", 4: ".jpg"}.get(index, ".jpeg")
    if name == "NORMAL":
        stem = f"NORMAL2-IM-{number:04d}-0001" if index % 2 else f"IM-{number:04d}-0001"
    else:
        stem = f"person{number}_{'virus' if index % 2 else 'bacteria'}_{3 * number + index}"
    return stem + extension


def _write_split_folders(folder: Path) -> list[Path]:
    """``folder/{train,val,test}/{NORMAL,PNEUMONIA}/`` with their JPEGs; returns the files written."""
    written = []
    seed = 0
    for split, count in _COUNTS.items():
        for name in CHEST_XRAY_CLASSES:
            class_dir = folder / split / name
            class_dir.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                seed += 1
                image = _image(_SIZES[index % 3], _CHEST_DISCS[name], rgb=index % 4 == 3, seed=seed)
                path = class_dir / _file_name(split, name, index)
                image.save(path, format="JPEG", quality=95)
                written.append(path)
    return written


def write_chest_xray(root: Path) -> Path:
    """Write the tiny set under ``root`` as the Kaggle zip unpacks (``root/chest_xray/...``); returns ``root``.

    ``root`` is the folder holding ``chest_xray/``, which :func:`monai_xai.data.chest_xray_datalist` accepts as well as
    ``root/chest_xray`` itself. Per class: 6 images in ``train/``, 2 in ``val/`` and 2 in ``test/``.
    """
    data = root / "chest_xray"
    written = _write_split_folders(data)
    _write_split_folders(data / "chest_xray")  # the archive's duplicate of the whole set
    for path in written:  # macOS resource forks of the zip
        fork = data / "__MACOSX" / "chest_xray" / path.relative_to(data).parent / f"._{path.name}"
        fork.parent.mkdir(parents=True, exist_ok=True)
        fork.write_bytes(_APPLE_DOUBLE)
    for folder in (data, data / "train", data / "chest_xray"):
        (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root
