"""Tiny copies of HAM10000 and ISIC 2019 in their exact published layouts, with a learnable signal and lesion masks.

Each class draws a bright lesion blob at its own place on a noisy skin-coloured background, so that a network learns
something in two short epochs and its CAMs have a known place to find; the ISIC 2019 copy comes with ISIC task-1
masks (``<image>_segmentation.png``, 0 / 255) that cover each image's blob. Layouts as read by
:mod:`monai_xai.data.skin_lesions` (see its docstring).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from monai_xai.data import HAM10000_CLASSES, ISIC2019_CLASSES

__all__ = ["ISIC_MASK_FOLDER", "write_ham10000", "write_isic2019"]

ISIC_MASK_FOLDER = "ISIC2018_Task1_Training_GroundTruth"
# (width, height): landscape as the published dermoscopy images (600 x 450 in HAM10000), small here
_SIZE = (64, 48)
_RADIUS = 0.17  # blob radius as a share of the shorter side
# blob centre (row, column) as shares of the image, one place per class (a 3 x 3 grid, centre left out)
_PLACES = [(0.25, 0.25), (0.25, 0.5), (0.25, 0.75), (0.5, 0.25), (0.5, 0.75), (0.75, 0.25), (0.75, 0.5), (0.75, 0.75)]
# per class: enough lesions (HAM10000) or images (ISIC 2019) that the default 70/10/20 split gives each class at
# least one validation and one test case (6 groups: 4 / 1 / 1)
_HAM_LESIONS = (2, 1, 1, 1, 1, 1)
_ISIC_PER_CLASS = 6
_HAM_HEADER = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization", "dataset"]


def _blob(centre: tuple[float, float], seed: int) -> np.ndarray:
    """Boolean (H, W) disc around ``centre`` (shares), jittered by a pixel or two per image."""
    width, height = _SIZE
    jitter = np.random.default_rng(seed).integers(-2, 3, size=2)
    rows, columns = np.mgrid[:height, :width]
    row, column = centre[0] * height + jitter[0], centre[1] * width + jitter[1]
    return (rows - row) ** 2 + (columns - column) ** 2 <= (_RADIUS * min(_SIZE)) ** 2


def _write_image(path: Path, blob: np.ndarray, seed: int) -> None:
    """RGB JPEG: skin-coloured noise with a bright blob (the lesion)."""
    rng = np.random.default_rng(seed)
    skin = np.array([190.0, 140.0, 120.0])
    pixels = skin + rng.normal(0, 12, size=(*blob.shape, 3))
    pixels[blob] += 60
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, format="JPEG", quality=95)


def _write_mask(path: Path, blob: np.ndarray) -> None:
    """ISIC task-1 mask: single-channel PNG, 255 on the lesion, 0 elsewhere, the image's size."""
    Image.fromarray(blob.astype(np.uint8) * 255).save(path, format="PNG")


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_ham10000(root: Path) -> Path:
    """HAM10000 as published on Harvard Dataverse, under ``root`` (returned).

    ``HAM10000_metadata.csv`` (with the Dataverse's extra ``dataset`` column) and ``<image_id>.jpg`` spread over
    ``HAM10000_images_part_1/`` and ``HAM10000_images_part_2/``; 7 images per class in 6 lesions (2 + 1 + 1 + 1 + 1 + 1
    images: several images of one lesion, as published), image ids from ISIC_0024306 as in the real set.
    """
    root = Path(root)
    parts = [root / "HAM10000_images_part_1", root / "HAM10000_images_part_2"]
    for part in parts:
        part.mkdir(parents=True, exist_ok=True)
    rows, image_number, lesion_number = [], 24306, 0
    for label, dx in enumerate(HAM10000_CLASSES):
        for lesion_size in _HAM_LESIONS:
            lesion_number += 1
            for _ in range(lesion_size):
                image_id = f"ISIC_{image_number:07d}"
                blob = _blob(_PLACES[label], seed=image_number)
                _write_image(parts[image_number % 2] / f"{image_id}.jpg", blob, seed=image_number)
                rows.append([f"HAM_{lesion_number:07d}", image_id, dx, "histo", "45.0", "male", "back", "vidir_modern"])
                image_number += 1
    _write_csv(root / "HAM10000_metadata.csv", _HAM_HEADER, rows)
    return root


def write_isic2019(root: Path) -> Path:
    """The ISIC 2019 training files as published under ``root`` (returned), and ISIC task-1 masks of every image in
    ``root / ISIC_MASK_FOLDER`` (``<image>_segmentation.png``: pass it as ``mask_dir``).

    ``ISIC_2019_Training_GroundTruth.csv`` (one-hot ``1.0`` / ``0.0`` over MEL..UNK),
    ``ISIC_2019_Training_Metadata.csv`` (not read), ``ISIC_2019_Training_Input/<image>.jpg`` with the published
    ``LICENSE.txt`` / ``ATTRIBUTION.txt``; 6 images of each of the 8 real classes (UNK is never positive, as
    published), one name ending in ``_downsampled``.
    """
    root = Path(root)
    images, masks = root / "ISIC_2019_Training_Input", root / ISIC_MASK_FOLDER
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    truth, metadata, number = [], [], 0
    for label, name in enumerate(ISIC2019_CLASSES[:-1]):  # UNK: never positive
        for index in range(_ISIC_PER_CLASS):
            image = f"ISIC_{number:07d}" + ("_downsampled" if (label, index) == (1, 2) else "")
            blob = _blob(_PLACES[label], seed=1000 + number)
            _write_image(images / f"{image}.jpg", blob, seed=1000 + number)
            _write_mask(masks / f"{image}_segmentation.png", blob)
            truth.append([image] + ["1.0" if other == name else "0.0" for other in ISIC2019_CLASSES])
            metadata.append([image, "55.0", "anterior torso", "", "female"])
            number += 1
    _write_csv(root / "ISIC_2019_Training_GroundTruth.csv", ["image", *ISIC2019_CLASSES], truth)
    _write_csv(
        root / "ISIC_2019_Training_Metadata.csv",
        ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"],
        metadata,
    )
    (images / "LICENSE.txt").write_text("CC-BY-NC\n")
    (images / "ATTRIBUTION.txt").write_text("ISIC\n")
    (masks / "LICENSE.txt").write_text("CC-BY-NC\n")
    return root
