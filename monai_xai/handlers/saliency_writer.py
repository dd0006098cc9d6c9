"""``SaliencyWriter``: each case's maps as NIfTI (input affine kept), PNG overlays and its description in Markdown.

Files under the run's results folder (the :class:`~monai_xai.handlers.XAIRecorder`'s ``output_dir``):

- ``<case>/<case>_<method>.nii.gz``: the (1, *spatial) map. With ``grid="original"`` (the overlay's default,
  ``xai_maps_grid``) it goes through the inverse of the bundle's ``preprocessing`` first (MONAI's ``Invertd``, as a
  bundle inverts its predictions): it is written on the grid and affine of the original image file, voxel for voxel
  with it and with the bundle's inverted predictions. With ``grid="preprocessed"`` it is written as the network saw
  it, with the affine of the preprocessed input (it still overlays the input in world space in 3D Slicer or
  ITK-SNAP). Overlays, descriptions and metrics always use the preprocessed grid, where image and map are the
  network's.
- ``<case>/<case>_<method>_attribution.nii.gz`` (input attributions only): the signed (C, *spatial) attribution, one
  volume per input channel (a 4D NIfTI in 3D), on the same grid as the map: which voxels of which channel pushed the
  explained score up (positive) or down (negative).
- ``<case>/<case>_<method>.png``: the map over the image (for 3D the three orthogonal slices through the map's peak),
  captioned with the map's description in words.
- ``<case>/<case>_description.md``: each method's description in words.

Case names and descriptions come from the recorder's records of the iteration (attach this writer after it); the
written files are added to those records (``MethodRecord.files``). Each map is written to a temporary name in its
folder and renamed when complete, so a killed run or a full disk never leaves a truncated file under a map's name; a
failed write is an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from monai.data import ITKWriter, MetaTensor, NibabelWriter
from monai.transforms import Compose, Invertd, InvertibleTransform
from monai.utils import CommonKeys

from monai_xai.atomic import atomic_path, atomic_write_text
from monai_xai.enums import MapGrid, as_choice, attribution_key, saliency_key
from monai_xai.handlers.engine_data import case_value, engine_cases
from monai_xai.handlers.records import CaseRecord, run_records
from monai_xai.visualize import save_overlay_png

__all__ = ["SaliencyWriter", "write_map"]

_MAP_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
# the key prefix of a method's signed attribution among the maps put back on the original grid together
_SIGNED = "signed:"


def _writable(maps: torch.Tensor) -> MetaTensor:
    """The (C, *spatial) map with the meta MONAI 1.6's writer needs: ``spatial_shape`` and, as ``LoadImage`` +
    ``EnsureChannelFirst`` leave it, ``original_channel_dim="no_channel"`` for one channel (without them ``SaveImage``
    fails on 2D maps: it counts one spatial dim after squeezing the channel), -1 for several (written last)."""
    meta = dict(maps.meta) if isinstance(maps, MetaTensor) else {}
    meta.update(spatial_shape=tuple(maps.shape[1:]), original_channel_dim="no_channel" if len(maps) == 1 else -1)
    return MetaTensor(maps.as_tensor() if isinstance(maps, MetaTensor) else maps, meta=meta)


def write_map(maps: torch.Tensor, path: Path) -> Path:
    """Write a (1, *spatial) map, or a (C, *spatial) one as a volume per channel (its MetaTensor meta gives the
    affine), to ``path`` (the extension picks the format),
    through a temporary file in the same folder renamed into place: the file at ``path`` is always complete.

    One writer per format (nibabel for NIfTI, ITK otherwise) and no fallback to another, so a failure is the
    writer's own error (e.g. ``OSError: No space left on device``), never a half-written file under another writer.

    Raises:
        OSError, RuntimeError: the write failed (the temporary file is removed); nothing is written at ``path``.
    """
    extension = next((suffix for suffix in _MAP_SUFFIXES if path.name.lower().endswith(suffix)), path.suffix)
    writer = (NibabelWriter if extension in (".nii.gz", ".nii") else ITKWriter)(output_dtype=torch.float32)
    data = _writable(maps)
    with atomic_path(path) as partial:
        writer.set_data_array(data, channel_dim=0)
        writer.set_metadata(data.meta, resample=False)
        writer.write(str(partial), verbose=False)
    return path


def _description_markdown(case: CaseRecord) -> str:
    """The Markdown of ``<case>_description.md``: a section per method with its description (an empty text says that
    the map could not be described)."""
    missing = "No description: the map could not be described (see the run's warnings)."
    lines = [f"# {case.name}", ""]
    for method, record in case.methods.items():
        lines += [f"## {method}", "", record.text or missing, ""]
    return "\n".join(lines)


def _changes_the_grid(preprocessing: InvertibleTransform) -> bool:
    """Whether ``preprocessing`` holds an invertible transform (else the original grid is the preprocessed one, and
    MONAI's ``Compose.inverse`` would warn on every map that it has nothing to invert)."""
    if isinstance(preprocessing, Compose):
        return any(isinstance(item, InvertibleTransform) for item in preprocessing.flatten().transforms)
    return True


class SaliencyWriter:
    """Write each case's maps, overlays and description (see the module docstring for the files).

    Args:
        methods: the ``XAIInferer``'s methods.
        image_key: output/batch key of the input image, drawn under the overlays.
        nifti: write the maps as NIfTI.
        png: write the PNG overlays.
        output_ext: extension of the map files (``".nii.gz"``; ``".nii"``, ``".nrrd"``, ``".mha"``).
        grid: ``"preprocessed"`` (default): map files on the network's grid; ``"original"``: on the original image's
            grid, through the inverse of ``preprocessing``.
        preprocessing: the bundle's invertible preprocessing (``@preprocessing``), needed for ``grid="original"``;
            the image (``image_key``) carries its trace (MetaTensor ``applied_operations``).
    """

    def __init__(
        self,
        methods: str | Sequence[str],
        image_key: str = CommonKeys.IMAGE,
        nifti: bool = True,
        png: bool = True,
        output_ext: str = ".nii.gz",
        grid: MapGrid | str = MapGrid.PREPROCESSED,
        preprocessing: InvertibleTransform | None = None,
    ) -> None:
        self.grid = as_choice(MapGrid, grid, "grid (xai_maps_grid)")
        if self.grid == MapGrid.ORIGINAL and not isinstance(preprocessing, InvertibleTransform):
            raise ValueError(
                "maps on the original grid (xai_maps_grid 'original') need the bundle's invertible preprocessing "
                f"(xai_preprocessing, '@preprocessing' in configs/explain.json), got {type(preprocessing).__name__}; "
                "point xai_preprocessing at the bundle's Compose of preprocessing transforms, or set "
                "--xai_maps_grid preprocessed."
            )
        self._inverse = None
        if self.grid == MapGrid.ORIGINAL and _changes_the_grid(preprocessing):
            self._inverse = Invertd("map", preprocessing, orig_keys=image_key, nearest_interp=False, to_tensor=True)
        self.methods = (methods,) if isinstance(methods, str) else tuple(methods)
        self.image_key = image_key
        self.nifti = nifti
        self.png = png
        self.output_ext = output_ext

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.write_cases)

    def _on_grid(self, maps: Mapping[str, torch.Tensor], image: Any) -> dict[str, torch.Tensor]:
        """A case's (C, *spatial) maps on the grid their files are written on: as they are, or back through the
        preprocessing that made ``image`` (the case's preprocessed image, whose MetaTensor trace says how), all
        methods in one inversion."""
        if self._inverse is None:
            return dict(maps)
        if not isinstance(image, MetaTensor):
            raise ValueError(
                f"maps on the original grid need the preprocessed image as a MetaTensor with its transform trace, got "
                f"{type(image).__name__} under {self.image_key!r}; keep MONAI's MetaTensors (track_meta) or set "
                "--xai_maps_grid preprocessed."
            )
        stacked = torch.cat([torch.as_tensor(value) for value in maps.values()])
        inverted = self._inverse({"map": MetaTensor(stacked, meta=image.meta), self.image_key: image})["map"]
        return dict(zip(maps, torch.split(inverted, [len(value) for value in maps.values()])))

    def _attributions(self, engine: Any, index: int) -> dict[str, torch.Tensor]:
        """Case ``index``'s signed (C, *spatial) attributions of the input-attribution methods (CAMs have none), keyed
        ``_SIGNED + method``."""
        case = engine_cases(engine.state.output)[index]
        return {
            _SIGNED + method: case[attribution_key(method)]
            for method in self.methods
            if attribution_key(method) in case
        }

    def write_cases(self, engine: Any) -> None:
        """Write the current iteration's maps, overlays and descriptions; record the files."""
        records = run_records(engine, type(self).__name__)
        for index, case in enumerate(records.iteration):
            image = case_value(engine, index, self.image_key)
            case_dir = records.output_dir / case.name
            case_dir.mkdir(parents=True, exist_ok=True)
            case_maps = {method: case_value(engine, index, saliency_key(method)) for method in self.methods}
            signed = self._attributions(engine, index) if self.nifti else {}
            files = self._on_grid({**case_maps, **signed}, image) if self.nifti else {}
            for method, maps in case_maps.items():
                record = case.methods[method]
                if self.nifti:
                    path = case_dir / f"{case.name}_{method}{self.output_ext}"
                    record.files["nifti"] = write_map(files[method], path)
                if _SIGNED + method in signed:
                    path = case_dir / f"{case.name}_{method}_attribution{self.output_ext}"
                    record.files["attribution"] = write_map(files[_SIGNED + method], path)
                if self.png:
                    path = case_dir / f"{case.name}_{method}.png"
                    title = f"{case.name}: {method}"
                    record.files["png"] = save_overlay_png(image, maps, path, title=title, caption=record.text)
            atomic_write_text(case_dir / f"{case.name}_description.md", _description_markdown(case))
