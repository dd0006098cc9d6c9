"""Tiny copies of the studies' public data sets in their exact published layouts, with a learnable signal.

Images are real files (JPEG here) of mixed grey / RGB modes, sizes and extension cases, as in the published sets.
Each class draws a bright disc at its own place on a noisy background (no disc for the "no finding" class), so a
network can learn something in one short epoch and its CAMs have a known place to find.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from monai_xai.data import BRAIN_TUMOR_CLASSES

# disc centre (row, column) as shares of the image per class; None: no disc
_BRAIN_DISCS = {"glioma": (0.3, 0.3), "meningioma": (0.3, 0.7), "notumor": None, "pituitary": (0.7, 0.5)}


def _image(size: tuple[int, int], centre: tuple[float, float] | None, rgb: bool, seed: int) -> Image.Image:
    width, height = size
    rng = np.random.default_rng(seed)
    pixels = rng.normal(60, 15, size=(height, width))
    if centre is not None:
        rows, columns = np.mgrid[:height, :width]
        disc = (rows - centre[0] * height) ** 2 + (columns - centre[1] * width) ** 2 <= (0.15 * min(size)) ** 2
        pixels[disc] += 150
    grey = np.clip(pixels, 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([grey] * 3, axis=-1) if rgb else grey)


def write_brain_tumor_mri(root: Path, per_class: tuple[int, int] = (6, 2)) -> Path:
    """``root/Training/<class>/Tr-xx_NNNN.jpg`` and ``root/Testing/<class>/Te-xx_NNNN.jpg`` (Kaggle layout)."""
    seed = 0
    for split, prefix, count in (("Training", "Tr", per_class[0]), ("Testing", "Te", per_class[1])):
        for name in BRAIN_TUMOR_CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                seed += 1
                extension = ".JPG" if index == 1 else ".jpg"
                size = (48, 40) if index % 3 else (40, 48)
                image = _image(size, _BRAIN_DISCS[name], rgb=index % 4 == 2, seed=seed)
                image.save(folder / f"{prefix}-{name[:2]}_{index:04d}{extension}", quality=95)
    (root / "Training" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root
