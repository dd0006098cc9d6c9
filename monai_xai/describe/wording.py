"""Every word and sentence of a description, and the cut-offs that choose between words: the one place to translate.

A :class:`Wording` holds templates (``str.format`` fields in braces) and word lists; :data:`ENGLISH` is the default.
To translate, copy it with :func:`dataclasses.replace` and new strings; the numbers in the record do not change.

Cut-offs (documented here because each word depends on one):

- **size**: share of the image's pixels / voxels in the hot region: ``small`` below 5 %, ``medium`` below 20 %,
  ``large`` from 20 %.
- **location**: the region's centroid relative to the image, per axis in [-1, 1] (-1 at one border, +1 at the
  other); beyond +-1/3 the side is named, within it the axis is central. The patient's left / right (3D) is named
  beyond +-0.1: which side of the midline matters clinically, and the hemispheres are only half the field of view.
- **shape**: ratio of the principal axes' lengths (from the second moments in millimetres): ``elongated`` when the
  longest is at least 1.5 x the next, ``flat`` (3D) when the two longest are at least 1.5 x the shortest, else
  ``round``.
- **boundary**: boundary length (2D) / area (3D) over that of the ellipse / ellipsoid with the same moments, drawn on
  the same grid: ``smooth`` below 1.25, ``irregular`` from 1.25.
- **intensity**: the region's mean over the mean of the map outside every hot region: ``sharply`` from 3, ``clearly``
  from 1.5, ``faintly`` below.
- **close alternatives**: classes whose probability is at least half the prediction's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ENGLISH", "Wording"]


@dataclass(frozen=True)
class Wording:
    """Words and sentence templates of a description (see the module docstring for the cut-offs)."""

    prediction: str = "Prediction: {name} ({percent:.2f}% confidence, {calibration})."
    calibrated: str = "calibrated"
    uncalibrated: str = "uncalibrated"
    alternatives: str = " Close alternatives: {items}."
    alternative_item: str = "{name} ({percent:.2f}%)"
    explained_class: str = " The map explains {name}."
    focus: str = (
        "Focus: {size}, {shape} region with {boundary} boundary {location}, standing out {intensity} from the rest of "
        "the map."
    )
    size_2d: str = "{word} ({amount:.0f} mm²)"
    size_3d: str = "{word} ({amount:.1f} ml)"
    size_3d_small: str = "{word} ({amount:.0f} mm³)"
    size_voxels: tuple[str, str] = ("{word} ({amount} pixels)", "{word} ({amount} voxels)")
    location_2d: str = "in the {where} part of the image"
    location_3d: str = "in the {where} part of the volume (patient terms)"
    central: str = "central"
    more_regions: str = " {count} separate hot regions; the largest is described."
    overlap: str = " It covers {covered:.0f}% of the {name} ({inside:.0f}% of the hot area lies inside it)."
    atlas: str = " In the {items}."
    atlas_item: str = "{name} ({percent:.0f}% of the hot region)"
    channel_shares: str = " Attribution by input channel{where}: {items}."
    channel_where: str = " in the {region}"
    channel_item: str = "{name} {percent:.0f}%"
    channel_name: str = "channel {index}"
    flat: str = "No focus: the map is flat."
    sanity_passed: str = " The {method} map passed the randomisation {checks} for this model: {names}."
    sanity_failed: str = " Caution: the {method} map failed the randomisation {checks} {names} for this model; {risks}."
    # what a failure means: the random-logit check asks whether the map follows the class, the others whether it
    # follows the weights (or, for the data check, what the labels taught them)
    sanity_risk_weights: str = "it may not depend on what the model learned"
    sanity_risk_class: str = "it may not tell the explained class from the others"
    sanity_also_passed: str = " It passed {names}."
    check_words: tuple[str, str] = ("check", "checks")
    check_names: dict[str, str] = field(
        default_factory=lambda: {
            "top_down": "top-down",
            "bottom_up": "bottom-up",
            "smprt": "sMPRT",
            "emprt": "eMPRT",
            "random_logit": "random logit",
            "data": "data randomisation",
        }
    )
    size_words: dict[str, str] = field(default_factory=lambda: {"small": "small", "medium": "medium", "large": "large"})
    shape_words: dict[str, str] = field(
        default_factory=lambda: {"round": "round", "elongated": "elongated", "flat": "flat"}
    )
    boundary_words: dict[str, str] = field(default_factory=lambda: {"smooth": "a smooth", "irregular": "an irregular"})
    intensity_words: dict[str, str] = field(
        default_factory=lambda: {"sharply": "sharply", "clearly": "clearly", "faintly": "faintly"}
    )
    # 2D: the sides of the image as the file looks; 3D: the patient's sides by their codes
    image_sides: dict[str, str] = field(
        default_factory=lambda: {"upper": "upper", "lower": "lower", "left": "left", "right": "right"}
    )
    patient_sides: dict[str, str] = field(
        default_factory=lambda: {
            "L": "left",
            "R": "right",
            "A": "anterior",
            "P": "posterior",
            "S": "superior",
            "I": "inferior",
        }
    )
    atlas_hemispheres: dict[str, str] = field(default_factory=lambda: {"L": "left", "R": "right"})

    def join(self, words: list[str]) -> str:
        """``a``, ``a and b``, ``a, b and c``."""
        return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


ENGLISH = Wording()

# cut-offs of the words (see the module docstring)
SIZE_FRACTIONS = (0.05, 0.20)
SIDE_CUTOFF = 1.0 / 3.0
LATERAL_CUTOFF = 0.1
ELONGATION_CUTOFF = 1.5
IRREGULARITY_CUTOFF = 1.25
CONTRAST_CUTOFFS = (3.0, 1.5)
CLOSE_ALTERNATIVE = 0.5
