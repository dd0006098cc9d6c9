"""One case's explanation in words: the calibrated confidence, where the map's evidence is, what it overlaps.

:func:`describe` measures (``regions``, ``anatomy``) and words the result (``wording``); the record keeps the numbers
as well as the sentence, for tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from monai_xai.describe.anatomy import atlas_shares, image_location, patient_location, readable_atlas_name
from monai_xai.describe.regions import RegionGeometry, hot_area, measure_region, split_regions
from monai_xai.describe.wording import (
    CLOSE_ALTERNATIVE,
    CONTRAST_CUTOFFS,
    ELONGATION_CUTOFF,
    ENGLISH,
    IRREGULARITY_CUTOFF,
    SIZE_FRACTIONS,
    Wording,
)
from monai_xai.enums import SanityCheck

__all__ = ["WHOLE_IMAGE", "CaseDescription", "HotRegion", "describe", "is_distribution"]

# the region name of channel shares over the whole image (``describe(channel_shares={WHOLE_IMAGE: ...})``)
WHOLE_IMAGE = "image"


@dataclass(frozen=True)
class HotRegion:
    """One hot region: its geometry and the words chosen for it.

    Attributes:
        geometry: the measurements (:class:`~monai_xai.describe.regions.RegionGeometry`).
        size_word: ``"small"``, ``"medium"`` or ``"large"``.
        shape: ``"round"``, ``"elongated"`` or (3D) ``"flat"``.
        boundary: ``"smooth"`` or ``"irregular"``.
        intensity: ``"sharply"``, ``"clearly"`` or ``"faintly"`` (how it stands out from the rest of the map).
        location: 2D: ``"upper"``/``"lower"``, ``"left"``/``"right"`` of the image; 3D: patient codes ``L``/``R``,
            ``A``/``P``, ``S``/``I``; empty when central.
        atlas: ``[(label name, share of the region's voxels), ...]`` when an atlas is given.
    """

    geometry: RegionGeometry
    size_word: str
    shape: str
    boundary: str
    intensity: str
    location: tuple[str, ...]
    atlas: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class CaseDescription:
    """What :func:`describe` returns.

    Attributes:
        text: the sentence(s) for a reader.
        predicted: index of the predicted class (None without probabilities).
        predicted_name: its name.
        confidence: its probability (None without probabilities).
        calibrated: whether the probabilities come from a calibrated model.
        alternatives: ``[(name, probability), ...]`` of the close alternatives.
        explained: the class the map explains (None when not given).
        threshold: the hot threshold in map units (None for a flat map).
        flat: the map has no focus (constant, or NaN-free but without range).
        regions: hot regions, largest first.
        overlaps: per named mask, ``(share of the mask covered by the hot area, share of the hot area inside it)``.
        method: CAM method described (for the trust note).
        sanity_passed: whether the method passed every randomisation check known for this model (None: none known).
        sanity_failed: the checks it failed (:class:`~monai_xai.enums.SanityCheck` values), in the order given.
        channel_shares: an input attribution's share per input channel, ``{region: {channel name: share}}``
            (``"image"``: the whole image; else a named mask), in [0, 1]; empty for a CAM.
    """

    text: str
    predicted: int | None
    predicted_name: str | None
    confidence: float | None
    calibrated: bool
    alternatives: tuple[tuple[str, float], ...]
    explained: int | None
    threshold: float | None
    flat: bool
    regions: tuple[HotRegion, ...]
    overlaps: dict[str, tuple[float, float]] = field(default_factory=dict)
    method: str | None = None
    sanity_passed: bool | None = None
    sanity_failed: tuple[str, ...] = ()
    channel_shares: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self, json_safe: bool = False) -> dict[str, Any]:
        """A flat row for a table: the case fields, the largest region's fields (``region_*``) and the overlaps.

        Args:
            json_safe: non-finite numbers (an empty mask's coverage, an infinite contrast) as None, for strict JSON.
        """
        row: dict[str, Any] = {
            "predicted": self.predicted_name,
            "confidence": self.confidence,
            "calibrated": self.calibrated,
            "alternatives": "; ".join(f"{name} {p:.4f}" for name, p in self.alternatives),
            "explained": self.explained,
            "method": self.method,
            "sanity_passed": self.sanity_passed,
            "sanity_failed": "; ".join(self.sanity_failed),
            "flat": self.flat,
            "threshold": self.threshold,
            "n_regions": len(self.regions),
        }
        main = self.regions[0] if self.regions else None
        geometry = asdict(main.geometry) if main else dict.fromkeys(RegionGeometry.__dataclass_fields__)
        for key, value in geometry.items():
            row[f"region_{key}"] = " ".join(f"{v:.4g}" for v in value) if isinstance(value, tuple) else value
        for key in ("size_word", "shape", "boundary", "intensity"):
            row[f"region_{key}"] = getattr(main, key) if main else None
        row["region_location"] = "-".join(main.location) if main else None
        row["region_atlas"] = "; ".join(f"{name} {share:.3f}" for name, share in main.atlas) if main else None
        for name, (covered, inside) in self.overlaps.items():
            row[f"covers_{name}"] = covered
            row[f"inside_{name}"] = inside
        for region, shares in self.channel_shares.items():
            for channel, share in shares.items():
                row[f"share_{channel}_{region}"] = share
        row["text"] = self.text
        if json_safe:
            return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
        return row


def _as_spatial(tensor: Any, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor)
    if tensor.ndim in (3, 4) and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim not in (2, 3):
        raise ValueError(f"{name} must be (*spatial) or (1, *spatial), 2D or 3D; got shape {tuple(tensor.shape)}.")
    return tensor


def _words(geometry: RegionGeometry, dims: int) -> tuple[str, str, str, str]:
    fraction = geometry.fraction
    size_word = "small" if fraction < SIZE_FRACTIONS[0] else "medium" if fraction < SIZE_FRACTIONS[1] else "large"
    lengths = geometry.axis_lengths
    if lengths[0] >= ELONGATION_CUTOFF * lengths[1]:
        shape = "elongated"
    elif dims == 3 and lengths[1] >= ELONGATION_CUTOFF * lengths[2]:
        shape = "flat"
    else:
        shape = "round"
    boundary = "irregular" if geometry.irregularity >= IRREGULARITY_CUTOFF else "smooth"
    intensity = (
        "sharply"
        if geometry.contrast >= CONTRAST_CUTOFFS[0]
        else "clearly"
        if geometry.contrast >= CONTRAST_CUTOFFS[1]
        else "faintly"
    )
    return size_word, shape, boundary, intensity


def is_distribution(values: torch.Tensor) -> bool:
    """Whether (num_classes,) ``values`` are class probabilities: at least two, finite, >= 0, summing to 1 (+-1e-3)."""
    values = values.double()
    return (
        values.numel() >= 2
        and bool(torch.isfinite(values).all())
        and not bool((values < 0).any())
        and abs(float(values.sum()) - 1.0) <= 1e-3
    )


def _confidence(
    probabilities: Any, class_names: Sequence[str] | None, calibrated: bool, explained: int | None, wording: Wording
) -> tuple[str, int | None, str | None, float | None, tuple[tuple[str, float], ...]]:
    if probabilities is None:
        if explained is None:
            return "", None, None, None, ()
        name = class_names[explained] if class_names else str(explained)
        return wording.explained_class.format(name=name).lstrip(), None, None, None, ()
    p = torch.as_tensor(probabilities, dtype=torch.float64).flatten()
    if not is_distribution(p):
        raise ValueError(
            "probabilities must be one case's class probabilities (>= 0, summing to 1); apply softmax to logits "
            f"first. Got {p.tolist()}."
        )
    names = list(class_names) if class_names else [str(index) for index in range(p.numel())]
    if len(names) != p.numel():
        raise ValueError(f"{len(names)} class names for {p.numel()} probabilities.")
    predicted = int(p.argmax())
    confidence = float(p[predicted])
    alternatives = tuple(
        (names[index], float(p[index]))
        for index in torch.argsort(p, descending=True).tolist()
        if index != predicted and float(p[index]) >= CLOSE_ALTERNATIVE * confidence
    )
    calibration = wording.calibrated if calibrated else wording.uncalibrated
    text = wording.prediction.format(name=names[predicted], percent=100 * confidence, calibration=calibration)
    if alternatives:
        items = [wording.alternative_item.format(name=name, percent=100 * q) for name, q in alternatives]
        text += wording.alternatives.format(items=wording.join(items))
    if explained is not None and explained != predicted:
        text += wording.explained_class.format(name=names[explained])
    return text, predicted, names[predicted], confidence, alternatives


def describe(
    saliency: Any,
    affine: Any = None,
    probabilities: Any = None,
    class_names: Sequence[str] | None = None,
    explained: int | None = None,
    calibrated: bool = False,
    masks: Mapping[str, Any] | None = None,
    atlas: Any = None,
    atlas_names: Mapping[int, str] | None = None,
    method: str | None = None,
    sanity_passed: bool | Mapping[str, bool] | None = None,
    threshold: float | str = 0.5,
    space: str = "RAS",
    axes_2d: str = "xy",
    units: str | None = None,
    channel_shares: Mapping[str, Sequence[float]] | None = None,
    channel_names: Sequence[str] | None = None,
    wording: Wording = ENGLISH,
) -> CaseDescription:
    """Describe one case's saliency map in words, with the numbers behind them.

    Args:
        saliency: (*spatial) or (1, *spatial) map of one case, 2D or 3D, at the image's resolution (a MetaTensor
            brings its affine).
        affine: (4, 4) voxel index -> world (mm); default the MetaTensor's. Without one, sizes are in pixels / voxels
            and 3D sides assume RAS voxel axes. 2D sizes use its top-left 2 x 2 block.
        probabilities: (num_classes,) the case's class probabilities (softmax of the logits, or of logits / T for a
            calibrated model); None for a segmentation map.
        class_names: names of the classes, in index order.
        explained: the class the map explains, when it is not (only) the predicted one.
        calibrated: ``probabilities`` come from a temperature-scaled model; the text says "uncalibrated" otherwise.
        masks: ``{name: (*spatial) bool mask}`` on the map's grid, e.g. ``{"predicted tumour": pred == 2}``: the text
            says how much of each the hot area covers.
        atlas: (*spatial) integer label map on the map's grid (e.g. AAL registered to the image).
        atlas_names: label -> name (:func:`~monai_xai.describe.read_label_names`); needed with ``atlas``.
        method: the CAM method, named in the trust note.
        sanity_passed: the method's randomisation checks for this model, ``{check: passed}`` (checks as
            :class:`~monai_xai.enums.SanityCheck` values, e.g. from :func:`~monai_xai.describe.read_sanity_verdicts`),
            or one bool for the top-down check alone; None or empty: unknown, no note.
        threshold: hot voxels: a fraction of the map's range (0.5: at least half way from its minimum to its peak) or
            ``"otsu"``.
        space: world axes of the affine, ``"RAS"`` (nibabel, MONAI) or ``"LPS"`` (ITK, DICOM).
        axes_2d: ``"xy"`` (MONAI's 2D arrays: axis 0 = column) or ``"rc"`` (axis 0 = row).
        units: how sizes are worded: ``"mm"`` (mm² in 2D; ml, or mm³ below 0.1 ml, in 3D) or ``"pixels"`` (pixels /
            voxels in the affine's scale: for a resized photo, pixels of the original file, which has no physical
            spacing); None: ``"mm"`` with an affine, ``"pixels"`` without.
        channel_shares: an input attribution's share of each input channel, ``{region: (share of channel 0, ...)}``
            (:func:`~monai_xai.cams.channel_shares`): :data:`WHOLE_IMAGE` for the whole image, else the name of a region
            (e.g. ``"ground-truth region"``); the text gives one sentence per region, largest share first (NaN shares,
            a region without attribution, are left out).
        channel_names: the input channels' names (e.g. ``["T1", "FLAIR"]``); default ``"channel 0"``, ...
        wording: the words (:data:`~monai_xai.describe.ENGLISH` or a translation).

    Returns:
        :class:`CaseDescription`: ``text`` plus the measurements (``as_dict()`` for a table row).

    Raises:
        ValueError: a map that is not one 2D/3D case, NaNs in it, masks or an atlas on another grid, probabilities
            that are not a distribution.
    """
    affine = getattr(saliency, "affine", None) if affine is None else affine
    heat = _as_spatial(saliency, "saliency").detach().cpu().double()
    dims = heat.ndim
    if not torch.isfinite(heat).all():
        raise ValueError("the saliency map contains NaN or inf; describe a finite map (check the method's output).")
    units = units or ("mm" if affine is not None else "pixels")
    if units not in ("mm", "pixels"):
        raise ValueError(f'units must be "mm" or "pixels", got {units!r}.')
    affine = torch.eye(4, dtype=torch.float64) if affine is None else torch.as_tensor(affine, dtype=torch.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be (4, 4), got {tuple(affine.shape)}.")
    confidence_text, predicted, predicted_name, confidence, alternatives = _confidence(
        probabilities, class_names, calibrated, explained, wording
    )
    named_masks = {name: _as_spatial(mask, f"mask {name!r}").cpu().bool() for name, mask in (masks or {}).items()}
    for name, mask in named_masks.items():
        if mask.shape != heat.shape:
            raise ValueError(f"mask {name!r} {tuple(mask.shape)} is not on the map's grid {tuple(heat.shape)}.")
    if atlas is not None:
        atlas = _as_spatial(atlas, "atlas").cpu()
        if atlas.shape != heat.shape or atlas_names is None:
            raise ValueError(
                f"atlas {tuple(atlas.shape)} must be on the map's grid {tuple(heat.shape)} and come with atlas_names."
            )

    sentences = [confidence_text] if confidence_text else []
    flat = float(heat.max() - heat.min()) <= 1e-12
    regions: list[HotRegion] = []
    overlaps: dict[str, tuple[float, float]] = {}
    cut = None
    if flat:
        sentences.append(wording.flat)
    else:
        hot, cut = hot_area(heat, threshold)
        for mask in split_regions(hot):
            geometry = measure_region(mask, heat, hot, affine[:dims, :dims])
            size_word, shape, boundary, intensity = _words(geometry, dims)
            location = (
                image_location(geometry.centroid, tuple(heat.shape), axes_2d)
                if dims == 2
                else patient_location(geometry.centroid, tuple(heat.shape), affine, space)
            )
            shares = atlas_shares(mask, atlas, atlas_names) if atlas is not None else []
            regions.append(HotRegion(geometry, size_word, shape, boundary, intensity, location, tuple(shares)))
        sentences.append(_focus_sentence(regions[0], dims, units, wording))
        if len(regions) > 1:
            sentences.append(wording.more_regions.format(count=len(regions)).lstrip())
        for name, mask in named_masks.items():
            both = float((hot & mask).sum())
            covered = both / float(mask.sum()) if mask.any() else math.nan
            overlaps[name] = (covered, both / float(hot.sum()))
            if mask.any():
                sentence = wording.overlap.format(name=name, covered=100 * covered, inside=100 * overlaps[name][1])
                sentences.append(sentence.lstrip())
        if regions[0].atlas:
            items = [
                wording.atlas_item.format(name=readable_atlas_name(name, wording), percent=100 * share)
                for name, share in regions[0].atlas
            ]
            sentences.append(wording.atlas.format(items=wording.join(items)).lstrip())
    named_shares = _named_channel_shares(channel_shares or {}, channel_names, wording)
    sentences += _channel_sentences(named_shares, wording)
    one_check = isinstance(sanity_passed, bool)  # the top-down check alone
    verdicts = {SanityCheck.TOP_DOWN.value: sanity_passed} if one_check else dict(sanity_passed or {})
    if verdicts and method:
        sentences.append(_trust_note(method, verdicts, wording))
    return CaseDescription(
        text=" ".join(sentences),
        predicted=predicted,
        predicted_name=predicted_name,
        confidence=confidence,
        calibrated=calibrated,
        alternatives=alternatives,
        explained=explained,
        threshold=cut,
        flat=flat,
        regions=tuple(regions),
        overlaps=overlaps,
        method=method,
        sanity_passed=all(verdicts.values()) if verdicts else None,
        sanity_failed=tuple(check for check, passed in verdicts.items() if not passed),
        channel_shares=named_shares,
    )


def _trust_note(method: str, verdicts: Mapping[str, bool], wording: Wording) -> str:
    """The sentence(s) on the method's randomisation checks: those it failed, with a caution, and those it passed."""

    def named(checks: list[str]) -> tuple[str, str]:
        words = wording.check_words[0] if len(checks) == 1 else wording.check_words[1]
        return words, wording.join([wording.check_names.get(check, check) for check in checks])

    passed = [check for check, result in verdicts.items() if result]
    failed = [check for check, result in verdicts.items() if not result]
    if not failed:
        words, names = named(passed)
        return wording.sanity_passed.format(method=method, checks=words, names=names).lstrip()
    words, names = named(failed)
    risks = [wording.sanity_risk_weights] if any(check != SanityCheck.RANDOM_LOGIT for check in failed) else []
    risks += [wording.sanity_risk_class] if SanityCheck.RANDOM_LOGIT in failed else []
    note = wording.sanity_failed.format(method=method, checks=words, names=names, risks="; ".join(risks)).lstrip()
    return note + (wording.sanity_also_passed.format(names=named(passed)[1]) if passed else "")


def _named_channel_shares(
    shares: Mapping[str, Sequence[float]], names: Sequence[str] | None, wording: Wording
) -> dict[str, dict[str, float]]:
    """``{region: {channel name: share}}`` of ``{region: per-channel shares}``.

    Raises:
        ValueError: names that do not match the channels.
    """
    named: dict[str, dict[str, float]] = {}
    for region, values in shares.items():
        values = [float(v) for v in values]
        if names is not None and len(names) != len(values):
            raise ValueError(f"{len(names)} channel names {list(names)} for {len(values)} input channels.")
        labels = (
            list(names) if names is not None else [wording.channel_name.format(index=i) for i in range(len(values))]
        )
        named[region] = dict(zip(labels, values))
    return named


def _channel_sentences(shares: Mapping[str, Mapping[str, float]], wording: Wording) -> list[str]:
    """One sentence per region with a defined share: the channels, largest share first."""
    sentences = []
    for region, by_channel in shares.items():
        if any(math.isnan(share) for share in by_channel.values()):
            continue
        items = [
            wording.channel_item.format(name=name, percent=100 * share)
            for name, share in sorted(by_channel.items(), key=lambda item: -item[1])
        ]
        where = "" if region == WHOLE_IMAGE else wording.channel_where.format(region=region)
        sentences.append(wording.channel_shares.format(where=where, items=", ".join(items)).lstrip())
    return sentences


def _focus_sentence(region: HotRegion, dims: int, units: str, wording: Wording) -> str:
    geometry = region.geometry
    size_word = wording.size_words[region.size_word]
    if units == "pixels":
        size = wording.size_voxels[dims - 2].format(word=size_word, amount=round(geometry.size))
    elif dims == 2:
        size = wording.size_2d.format(word=size_word, amount=geometry.size)
    elif geometry.size < 100.0:  # below 0.1 ml
        size = wording.size_3d_small.format(word=size_word, amount=geometry.size)
    else:
        size = wording.size_3d.format(word=size_word, amount=geometry.size / 1000.0)
    if dims == 2:
        sides = "-".join(wording.image_sides[side] for side in region.location) if region.location else wording.central
        location = wording.location_2d.format(where=sides)
    else:
        sides = [wording.patient_sides[code] for code in region.location]
        location = wording.location_3d.format(where=wording.join(sides) if sides else wording.central)
    return wording.focus.format(
        size=size,
        shape=wording.shape_words[region.shape],
        boundary=wording.boundary_words[region.boundary],
        location=location,
        intensity=wording.intensity_words[region.intensity],
    )
