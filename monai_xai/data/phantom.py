"""Deterministic MR-like lesion phantoms with voxel ground truth, written as NIfTI plus a MONAI datalist.

A phantom is an ellipsoidal "head" (scalp rim, CSF layer, grey and white matter with a wavy boundary, two ventricles)
under a smooth multiplicative bias field, fine tissue texture and Rician noise. Positive cases hold one or more
hyperintense lesions (ellipsoids or lobulated blobs of varied size, contrast and position inside the brain) whose voxel
masks are the ground truth. Any case, positive or negative, may hold distractors as bright as the lesions but of another
shape (thin vessel-like tubes, a bright rim along the inner skull edge), so brightness alone does not give the class
away and a good explanation should not light them up.

Everything here is numpy/scipy data generation; the arrays are ``float32`` images and ``uint8`` masks indexed
``(x, y, z)`` like nibabel arrays, with a RAS voxel-to-world affine in millimetres.

Dataset layout written by :func:`write_phantom_dataset` (one layout serves classification and segmentation)::

    out_dir/
        datalist.json          {"training": [...], "validation": [...], "test": [...], "phantom": {generation params}}
        images/case_000.nii.gz float32 image
        masks/case_000.nii.gz  uint8 lesion mask (all zeros for negatives)

Each datalist item is ``{"image": "images/case_000.nii.gz", "mask": "masks/case_000.nii.gz", "label": 0 | 1}`` with
paths relative to the datalist, so ``monai.data.load_decathlon_datalist(path, data_list_key="training")`` returns
absolute paths. ``label`` is the class (1: at least one lesion); a segmentation pipeline reads ``mask`` as its label.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from monai_xai.atomic import atomic_write_text

__all__ = [
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "PhantomCase",
    "generate_phantom",
    "phantom_slice",
    "write_phantom_dataset",
    "ensure_phantom_dataset",
]

DEFAULT_SHAPE = (48, 48, 48)
DEFAULT_SPACING = (1.0, 1.0, 1.5)
DATALIST_NAME = "datalist.json"

# Tissue intensities of the noise-free phantom (T2/FLAIR-like: lesions are hyperintense).
_SCALP, _CSF, _GREY, _WHITE = 0.75, 0.12, 0.40, 0.55
# Normalised ellipsoidal radius (1 = head surface) at which the scalp, the CSF layer and the white matter end.
_SCALP_INNER, _BRAIN_OUTER, _WHITE_OUTER = 0.90, 0.84, 0.62
_PARTIAL_VOLUME_SIGMA = 0.7  # voxels; softens tissue boundaries like a real point-spread function
_EDGE_MM = 0.4  # width of the soft lesion / distractor edge; the mask boundary is where the edge is half-way
_MAX_PLACEMENT_TRIES = 100


@dataclass(frozen=True)
class PhantomCase:
    """One phantom and its ground truth.

    Attributes:
        image: float32 array of ``shape``, MR-like magnitude, about [0, 1] (noise may exceed 1 slightly).
        mask: uint8 array of ``shape``, 1 inside lesions, all zeros when ``label == 0``.
        label: 1 when the case holds at least one lesion, else 0.
        affine: (4, 4) float64 voxel-to-world (RAS, mm) affine; its column norms are the spacing.
        anatomy: bool array of ``shape``, True inside the head (every lesion lies inside it).
        distractors: uint8 array of ``shape``, 1 on the vessel-like tubes and bright rims that are not lesions.
    """

    image: np.ndarray
    mask: np.ndarray
    label: int
    affine: np.ndarray
    anatomy: np.ndarray
    distractors: np.ndarray


def generate_phantom(
    seed: int,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    lesion: bool = True,
    num_lesions: int | None = None,
    lesion_radius_mm: tuple[float, float] = (3.0, 7.0),
    lesion_contrast: tuple[float, float] = (0.2, 0.35),
    distractor_probability: float = 0.5,
    noise_std: float = 0.025,
    origin: Sequence[float] | None = None,
) -> PhantomCase:
    """Generate one 3D MR-like phantom; the same arguments always give bit-identical arrays.

    Args:
        seed: seed of the case's random generator (any non-negative int).
        shape: (X, Y, Z) voxel grid, each at least 16.
        spacing: (3,) voxel size in mm, e.g. ``(1.0, 1.0, 1.5)``; anatomy and lesion sizes are set in mm.
        lesion: True for a positive case (at least one lesion), False for a negative one (empty mask).
        num_lesions: lesions in a positive case; None draws 1 to 3.
        lesion_radius_mm: (min, max) mean radius of a lesion in mm.
        lesion_contrast: (min, max) intensity added inside a lesion (tissue is 0.12 to 0.75, noise ``noise_std``).
        distractor_probability: chance, independent of ``lesion``, that the case holds distractors (1 or 2 of
            vessel-like tubes and bright rims with the same contrast range as lesions).
        noise_std: standard deviation of the Gaussian noise on both quadrature channels (Rician magnitude noise).
        origin: world position (mm) of voxel (0, 0, 0); None centres the volume on the world origin.

    Returns:
        a :class:`PhantomCase`.

    Raises:
        ValueError: on a shape that is not 3D or too small, a spacing of the wrong length or non-positive, or
            inverted / negative ranges.
    """
    shape, spacing = _check_geometry(shape, spacing)
    _check_range("lesion_radius_mm", lesion_radius_mm)
    _check_range("lesion_contrast", lesion_contrast)
    if not 0.0 <= distractor_probability <= 1.0:
        raise ValueError(f"distractor_probability must be in [0, 1], got {distractor_probability}.")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}.")
    if num_lesions is not None and num_lesions < 1:
        raise ValueError(f"num_lesions must be >= 1 or None (random 1 to 3), got {num_lesions}.")

    rng = np.random.default_rng(seed)
    grid = _world_grid(shape, spacing)
    half_extent = (np.asarray(shape) - 1) / 2 * np.asarray(spacing)

    head_centre = rng.uniform(-2.0, 2.0, size=3)
    head_radii = half_extent * rng.uniform(0.80, 0.90, size=3)
    head_rotation = Rotation.from_euler("z", rng.uniform(-10.0, 10.0), degrees=True).as_matrix()
    rho = _ellipsoid_distance(grid, head_centre, head_rotation, head_radii)

    wavy = _smooth_noise(rng, shape, sigma=4.0)
    white = rho * (1.0 + 0.06 * wavy) < _WHITE_OUTER
    ventricles = np.zeros(shape, dtype=bool)
    for side in (-1.0, 1.0):
        centre = head_centre + head_rotation @ np.array([side * 0.15 * head_radii[0], 0.0, 0.05 * head_radii[2]])
        radii = np.array([0.10, 0.25, 0.20]) * head_radii
        ventricles |= _ellipsoid_distance(grid, centre, head_rotation, radii) <= 1.0

    tissue = np.zeros(shape)
    tissue[rho <= 1.0] = _SCALP
    tissue[rho <= _SCALP_INNER] = _CSF
    tissue[rho <= _BRAIN_OUTER] = _GREY
    tissue[(rho <= _BRAIN_OUTER) & white] = _WHITE
    tissue[ventricles] = _CSF
    parenchyma = (rho <= _BRAIN_OUTER) & ~ventricles

    mask = np.zeros(shape, dtype=bool)
    if lesion:
        count = num_lesions if num_lesions is not None else int(rng.integers(1, 4))
        for _ in range(count):
            lesion_mask, lesion_profile = _place_lesion(rng, grid, spacing, parenchyma & ~mask, lesion_radius_mm)
            tissue += rng.uniform(*lesion_contrast) * lesion_profile
            mask |= lesion_mask

    distractors = np.zeros(shape, dtype=bool)
    if rng.uniform() < distractor_probability:
        for kind in rng.choice(("vessel", "rim"), size=int(rng.integers(1, 3))):
            if kind == "vessel":
                region, profile = _vessel(rng, grid, spacing, parenchyma)
            else:
                region, profile = _rim(rng, grid, rho, head_centre, head_rotation)
            tissue += rng.uniform(*lesion_contrast) * profile
            distractors |= region

    tissue = ndimage.gaussian_filter(tissue, _PARTIAL_VOLUME_SIGMA)
    anatomy = rho <= 1.0
    bias = 1.0 + 0.08 * _bias_field(rng, grid)
    texture = 0.02 * _smooth_noise(rng, shape, sigma=1.0) * anatomy
    signal = tissue * bias + texture
    # Rician magnitude: |signal + n_real + i n_imag|, as in a magnitude MR reconstruction.
    real = signal + rng.normal(0.0, noise_std, size=shape)
    imaginary = rng.normal(0.0, noise_std, size=shape)
    image = np.sqrt(real**2 + imaginary**2)

    return PhantomCase(
        image=image.astype(np.float32),
        mask=mask.astype(np.uint8),
        label=int(mask.any()),
        affine=_affine(shape, spacing, origin),
        anatomy=anatomy,
        distractors=distractors.astype(np.uint8),
    )


def phantom_slice(case: PhantomCase, seed: int, axis: int = 2) -> PhantomCase:
    """Cut a 2D case out of a 3D one: through the largest lesion cross-section if positive, a random slice if not.

    Args:
        case: a 3D :class:`PhantomCase`.
        seed: seed for the random slice of a negative case (drawn where the head covers at least half of its
            largest cross-section, so the slice shows anatomy).
        axis: spatial axis normal to the slice (2 gives an axial (X, Y) slice).

    Returns:
        a :class:`PhantomCase` with 2D arrays and a (4, 4) affine placing the slice in world space (NIfTI keeps
        4x4 affines for 2D images), whose ``label`` is 1 exactly when the slice's mask is non-empty.
    """
    if case.image.ndim != 3:
        raise ValueError(f"phantom_slice needs a 3D case, got image of shape {case.image.shape}.")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}.")
    other_axes = tuple(a for a in range(3) if a != axis)
    if case.label:
        index = int(np.argmax(case.mask.sum(axis=other_axes)))
    else:
        head_area = case.anatomy.sum(axis=other_axes)
        candidates = np.flatnonzero(head_area >= head_area.max() / 2)
        index = int(np.random.default_rng(seed).choice(candidates))

    def cut(array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.take(array, index, axis=axis))

    offset = np.zeros(3)
    offset[axis] = index
    # Columns of the 3D affine for the two kept axes, then the slice's position, so world coordinates are preserved.
    affine = np.eye(4)
    affine[:3, 0] = case.affine[:3, other_axes[0]]
    affine[:3, 1] = case.affine[:3, other_axes[1]]
    affine[:3, 2] = case.affine[:3, axis]
    affine[:3, 3] = case.affine[:3, :3] @ offset + case.affine[:3, 3]
    mask = cut(case.mask)
    return PhantomCase(
        image=cut(case.image),
        mask=mask,
        label=int(mask.any()),
        affine=affine,
        anatomy=cut(case.anatomy),
        distractors=cut(case.distractors),
    )


def write_phantom_dataset(
    out_dir: str | Path,
    n_cases: int,
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    positive_fraction: float = 0.5,
    split: Sequence[float] = (0.7, 0.1, 0.2),
    dim: int = 3,
    overwrite: bool = False,
) -> Path:
    """Write ``n_cases`` phantoms as NIfTI files and a MONAI datalist; see the module docstring for the layout.

    The class of each case and the split are stratified: every split holds positives and negatives in (as nearly as
    rounding allows) ``positive_fraction``. Case ``i`` is generated from a seed derived from ``seed`` and ``i`` alone,
    so the same arguments always write the same files.

    Args:
        out_dir: folder to write into (created if missing). A folder that already holds files is refused, so that an
            earlier data set's cases never mix with these, unless ``overwrite``: then its ``images/``, ``masks/`` and
            ``datalist.json`` are deleted first.
        n_cases: number of cases, at least 1.
        seed: dataset seed.
        shape: (X, Y, Z) voxel grid of the generated volumes (2D cases are slices of these).
        spacing: (3,) voxel size in mm.
        positive_fraction: fraction of cases with lesions, in [0, 1].
        split: (train, validation, test) fractions, non-negative, summing to 1.
        dim: 3 writes volumes; 2 writes one slice per volume (see :func:`phantom_slice`), axial (X, Y).
        overwrite: replace a phantom data set already in ``out_dir``.

    Returns:
        path of the written ``datalist.json``.

    Raises:
        ValueError: bad arguments, or a non-empty ``out_dir`` without ``overwrite``.
    """
    if n_cases < 1:
        raise ValueError(f"n_cases must be >= 1, got {n_cases}.")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}.")
    if len(split) != 3 or min(split) < 0 or not np.isclose(sum(split), 1.0):
        raise ValueError(f"split must be 3 non-negative fractions (train, validation, test) summing to 1, got {split}.")
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}.")
    shape, spacing = _check_geometry(shape, spacing)

    out_dir = Path(out_dir)
    _clear_for_writing(out_dir, overwrite)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    sequence = np.random.default_rng(seed)
    n_positive = int(round(n_cases * positive_fraction))
    is_positive = sequence.permutation(np.arange(n_cases) < n_positive)
    case_seeds = [int(child.generate_state(1)[0]) for child in np.random.SeedSequence(seed).spawn(n_cases)]

    items = []
    for index, (case_seed, positive) in enumerate(zip(case_seeds, is_positive)):
        case = generate_phantom(case_seed, shape=shape, spacing=spacing, lesion=bool(positive))
        if dim == 2:
            case = phantom_slice(case, seed=case_seed)
        name = f"case_{index:03d}.nii.gz"
        nib.save(nib.Nifti1Image(case.image, case.affine), out_dir / "images" / name)
        nib.save(nib.Nifti1Image(case.mask, case.affine), out_dir / "masks" / name)
        items.append({"image": f"images/{name}", "mask": f"masks/{name}", "label": case.label})

    # Split sizes from the total, then positives spread over the splits in proportion: stratified and exact.
    split_sizes = np.asarray(_split_counts(n_cases, split))
    positive_counts = np.asarray(_split_counts(n_positive, split_sizes / n_cases))
    datalist: dict[str, object] = {"training": [], "validation": [], "test": []}
    for positive, counts in ((True, positive_counts), (False, split_sizes - positive_counts)):
        members = [item for item, flag in zip(items, is_positive) if flag == positive]
        for key, part in zip(("training", "validation", "test"), counts):
            datalist[key].extend(members[:part])
            members = members[part:]
    for key in ("training", "validation", "test"):
        datalist[key].sort(key=lambda item: item["image"])
    datalist["phantom"] = _dataset_params(n_cases, seed, shape, spacing, positive_fraction, split, dim)
    path = out_dir / DATALIST_NAME
    atomic_write_text(path, json.dumps(datalist, indent=2))
    return path


# what write_phantom_dataset writes into its folder
_WRITTEN = ("images", "masks", DATALIST_NAME)


def _clear_for_writing(out_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out_dir`` unless ``overwrite``, which deletes an earlier phantom data set there."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} is a file; give a folder to write the phantom data set into.")
    present = sorted(entry.name for entry in out_dir.iterdir()) if out_dir.is_dir() else []
    if present and not overwrite:
        raise ValueError(
            f"{out_dir} already holds {present[:5]}; write the phantoms into an empty folder, or replace the phantom "
            "data set there with overwrite=True (monai-xai phantom ... --overwrite True)."
        )
    for name in _WRITTEN:
        entry = out_dir / name
        if entry.is_dir():
            shutil.rmtree(entry)
        elif entry.exists():
            entry.unlink()


def ensure_phantom_dataset(out_dir: str | Path, n_cases: int, seed: int = 0, **kwargs) -> Path:
    """Return ``out_dir/datalist.json``, writing the dataset first unless the same one is already there.

    Meant for bundle configs: training generates its data on first use and reuses it afterwards.

    Args:
        out_dir, n_cases, seed, kwargs: as :func:`write_phantom_dataset` (``shape``, ``spacing``,
            ``positive_fraction``, ``split``, ``dim``).

    Raises:
        ValueError: when ``out_dir`` holds a datalist written with other parameters (delete the folder or choose
            another ``dataset_dir``).
    """
    path = Path(out_dir) / DATALIST_NAME
    if not path.exists():
        # a write stopped before its datalist (written last) left only these folders: start again
        partial = Path(out_dir).is_dir() and {p.name for p in Path(out_dir).iterdir()} <= set(_WRITTEN[:2])
        return write_phantom_dataset(out_dir, n_cases, seed, overwrite=partial, **kwargs)
    shape, spacing = _check_geometry(kwargs.get("shape", DEFAULT_SHAPE), kwargs.get("spacing", DEFAULT_SPACING))
    wanted = _dataset_params(
        n_cases,
        seed,
        shape,
        spacing,
        kwargs.get("positive_fraction", 0.5),
        kwargs.get("split", (0.7, 0.1, 0.2)),
        kwargs.get("dim", 3),
    )
    found = json.loads(path.read_text()).get("phantom")
    if found != wanted:
        raise ValueError(
            f"{path} was written with phantom parameters {found}, not {wanted}; "
            "delete that folder or point dataset_dir elsewhere."
        )
    return path


def _dataset_params(
    n_cases: int,
    seed: int,
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    positive_fraction: float,
    split: Sequence[float],
    dim: int,
) -> dict[str, object]:
    return {
        "n_cases": int(n_cases),
        "seed": int(seed),
        "shape": list(shape),
        "spacing": list(spacing),
        "positive_fraction": float(positive_fraction),
        "split": [float(s) for s in split],
        "dim": int(dim),
    }


def _split_counts(total: int, fractions: Sequence[float]) -> list[int]:
    """Largest-remainder rounding of ``total * fractions`` so the counts add up to ``total``."""
    exact = np.asarray(fractions, dtype=float) * total
    counts = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[index] += 1
    return counts.tolist()


def _check_geometry(shape: Sequence[int], spacing: Sequence[float]) -> tuple[tuple[int, ...], tuple[float, ...]]:
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"shape must be 3 sizes of at least 16 voxels (use phantom_slice for 2D), got {shape}.")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive voxel sizes in mm, got {spacing}.")
    return shape, spacing


def _check_range(name: str, bounds: tuple[float, float]) -> None:
    if len(bounds) != 2 or bounds[0] > bounds[1] or bounds[0] <= 0:
        raise ValueError(f"{name} must be (min, max) with 0 < min <= max, got {bounds}.")


def _affine(shape: tuple[int, ...], spacing: tuple[float, ...], origin: Sequence[float] | None) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * np.asarray(spacing) if origin is None else origin
    return affine


def _world_grid(shape: tuple[int, ...], spacing: tuple[float, ...]) -> np.ndarray:
    """(3, *shape) coordinates in mm relative to the volume centre."""
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def _ellipsoid_distance(grid: np.ndarray, centre: np.ndarray, rotation: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Normalised ellipsoidal radius: < 1 inside, 1 on the surface of the rotated ellipsoid."""
    local = _to_local(grid, centre, rotation) / radii.reshape(3, 1, 1, 1)
    return np.sqrt(np.sum(local**2, axis=0))


def _to_local(grid: np.ndarray, centre: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """World grid (3, *shape) to the frame of an object at ``centre`` whose axes are the columns of ``rotation``."""
    shifted = [grid[axis] - centre[axis] for axis in range(3)]
    # Three explicit multiply-adds per axis: much faster than a (3, 3) @ (3, N) matmul for this thin product.
    return np.stack([sum(rotation[axis, k] * shifted[axis] for axis in range(3)) for k in range(3)])


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to unit standard deviation."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return noise / noise.std()


def _bias_field(rng: np.random.Generator, grid: np.ndarray) -> np.ndarray:
    """Smooth field in [-1, 1]: a random quadratic polynomial of the coordinates, like a coil's sensitivity."""
    unit = grid / np.abs(grid).reshape(3, -1).max(axis=1).reshape(3, 1, 1, 1)
    linear = np.einsum("i,i...->...", rng.uniform(-1.0, 1.0, size=3), unit)
    quadratic = np.einsum("ij,i...,j...->...", rng.uniform(-1.0, 1.0, size=(3, 3)), unit, unit)
    field = linear + quadratic
    return field / np.abs(field).max()


def _soft_inside(signed_depth_mm: np.ndarray) -> np.ndarray:
    """Soft indicator from depth below a surface in mm (positive inside): 0.5 on the surface."""
    return 1.0 / (1.0 + np.exp(-np.clip(signed_depth_mm / _EDGE_MM, -50.0, 50.0)))


def _place_lesion(
    rng: np.random.Generator,
    grid: np.ndarray,
    spacing: tuple[float, ...],
    allowed: np.ndarray,
    radius_mm: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """A lesion (ellipsoid, or lobulated blob: union of overlapping ellipsoids) lying wholly inside ``allowed``.

    Returns:
        (mask, soft profile in [0, 1]) arrays of the grid's shape.
    """
    depth_of_allowed_mm = ndimage.distance_transform_edt(allowed, sampling=spacing).reshape(-1)
    for _ in range(_MAX_PLACEMENT_TRIES):
        radius = rng.uniform(*radius_mm)
        # Centres at least one radius deep inside ``allowed``: most lesions then fit at the first try.
        candidates = np.flatnonzero(depth_of_allowed_mm >= radius)
        if candidates.size == 0:
            continue
        centre = grid.reshape(3, -1)[:, rng.choice(candidates)]
        lobes = [(centre, radius * rng.uniform(0.7, 1.3, size=3))]
        if rng.uniform() < 0.5:  # blob: add 1 or 2 smaller lobes off the main one
            for _ in range(int(rng.integers(1, 3))):
                direction = rng.normal(size=3)
                offset = 0.7 * radius * direction / np.linalg.norm(direction)
                lobes.append((centre + offset, radius * rng.uniform(0.45, 0.75, size=3)))
        rotation = Rotation.random(random_state=rng).as_matrix()
        # Approximate depth below the surface in mm: positive inside the union of the lobes.
        lobe_depths_mm = [radii.min() * (1.0 - _ellipsoid_distance(grid, c, rotation, radii)) for c, radii in lobes]
        depth_mm = np.max(lobe_depths_mm, axis=0)
        mask = depth_mm > 0
        # Reject lesions that leave the brain or overlap other lesions.
        if mask.any() and not (mask & ~allowed).any():
            return mask, _soft_inside(depth_mm)
    raise RuntimeError(
        f"could not place a lesion of radius {radius_mm} mm inside the brain in {_MAX_PLACEMENT_TRIES} tries; "
        "use a larger shape or smaller lesion_radius_mm."
    )


def _vessel(
    rng: np.random.Generator, grid: np.ndarray, spacing: tuple[float, ...], parenchyma: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A thin tube (radius 1.0 to 1.5 mm) along a curved path between two brain points, clipped to the brain."""
    points = grid.reshape(3, -1)[:, np.flatnonzero(parenchyma)]
    start = points[:, rng.integers(points.shape[1])]
    end = points[:, np.argmax(np.linalg.norm(points - start[:, None], axis=0) * rng.uniform(0.5, 1.0, points.shape[1]))]
    bend = (start + end) / 2 + rng.normal(0.0, 5.0, size=3)
    t = np.linspace(0.0, 1.0, 400)[:, None]
    curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * end
    shape = np.asarray(grid.shape[1:])
    voxels = np.round(curve / np.asarray(spacing) + (shape - 1) / 2).astype(int)
    voxels = voxels[np.all((voxels >= 0) & (voxels < shape), axis=1)]
    centreline = np.ones(grid.shape[1:], dtype=bool)
    centreline[tuple(voxels.T)] = False
    distance_mm = ndimage.distance_transform_edt(centreline, sampling=spacing)
    profile = _soft_inside(rng.uniform(1.0, 1.5) - distance_mm) * parenchyma
    return profile > 0.5, profile


def _rim(
    rng: np.random.Generator, grid: np.ndarray, rho: np.ndarray, head_centre: np.ndarray, head_rotation: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A bright arc (about 2 mm thick) along the inner edge of the brain within a random 35 to 50 degree cone."""
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    local = _to_local(grid, head_centre, head_rotation)
    cosine = np.einsum("i,i...->...", direction, local) / np.maximum(np.linalg.norm(local, axis=0), 1e-6)
    inside_cone = cosine > np.cos(np.deg2rad(rng.uniform(35.0, 50.0)))
    region = inside_cone & (rho > _BRAIN_OUTER - 0.08) & (rho <= _BRAIN_OUTER)
    return region, region.astype(float)
