"""The outcome of the sanity checks of one CAM method, and the acceptance figures it is held to."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from monai_xai.cams import get_method
from monai_xai.enums import MethodFamily, SanityCheck
from monai_xai.sanity.randomisation import MAX_RANDOMISATION_SPEARMAN
from monai_xai.sanity.trust import CheckVerdict, non_discriminating

__all__ = ["MIN_LOCALISATION_RATIO", "MethodSanity", "sanity_verdicts"]

# Acceptance figure: a gradient CAM's mean localisation score must be at least this multiple of a random map's.
MIN_LOCALISATION_RATIO = 2.0


@dataclass
class MethodSanity:
    """Sanity figures of one CAM method over a test set.

    The localisation figures are means over the cases with a non-empty ground-truth region, NaN when there is none.

    Attributes:
        method: CAM method name.
        ehr_auc: mean EHR-AUC of the method's maps against the ground-truth masks.
        randomised_ehr_auc: the same for the weight-randomised network's maps. Close to ``ehr_auc`` (or above it), the
            maps localise the lesion whatever the weights, even when their rank correlation is low: for segmentation
            CAMs the rank correlation over the whole image can be driven by the faint background alone.
        random_uniform: mean EHR-AUC of i.i.d. uniform random maps (expected value: the mask's share of the image).
        random_smooth: mean EHR-AUC of smooth random maps on the target layer's feature grid.
        spearman: mean Spearman correlation between trained and randomised maps over the cases where it exists.
        spearman_undefined: number of cases with a constant map (no rank correlation).
        uses_gradients: whether the method is a gradient CAM (the localisation acceptance applies to these).
        checks: the verdict of each further randomisation check that was run (:mod:`monai_xai.sanity.trust`; empty
            when none was asked for).
    """

    method: str
    ehr_auc: float
    randomised_ehr_auc: float
    random_uniform: float
    random_smooth: float
    spearman: float
    spearman_undefined: int
    uses_gradients: bool
    checks: dict[SanityCheck, CheckVerdict] = field(default_factory=dict)

    @property
    def is_control(self) -> bool:
        """Whether the row is a control that must fail every check (:mod:`monai_xai.cams.controls`)."""
        return get_method(self.method).family == MethodFamily.CONTROL

    @property
    def localisation_ratio(self) -> float:
        """EHR-AUC over the larger of the two random baselines (the stricter comparison); NaN without ground truth."""
        return self.ehr_auc / max(self.random_uniform, self.random_smooth)

    @property
    def has_ground_truth(self) -> bool:
        """Whether any checked case had a ground-truth region, so that the localisation figures exist."""
        return not math.isnan(self.ehr_auc)

    @property
    def localisation_passed(self) -> bool:
        return self.localisation_ratio >= MIN_LOCALISATION_RATIO

    @property
    def randomisation_passed(self) -> bool:
        # NaN (every case constant) compares False: no evidence that the map depends on the weights.
        return self.spearman <= MAX_RANDOMISATION_SPEARMAN


def sanity_verdicts(summary: Sequence[MethodSanity]) -> dict[str, dict[str, bool]]:
    """``{method: {check: passed}}`` of the checked methods (not the controls), as a bundle's ``xai_sanity`` and
    :func:`~monai_xai.describe.read_sanity_verdicts` take them (checks as :class:`~monai_xai.enums.SanityCheck`
    values).

    With further checks (``checks``), each method gets those that discriminate for this bundle: a check that a
    control passed says nothing and is left out. Without, each gets the top-down check alone (its Spearman,
    :attr:`MethodSanity.randomisation_passed`).
    """
    passed_by_control = non_discriminating({row.method: row.checks for row in summary})
    return {
        row.method: (
            {check.value: verdict.passed for check, verdict in row.checks.items() if check not in passed_by_control}
            if row.checks
            else {SanityCheck.TOP_DOWN.value: row.randomisation_passed}
        )
        for row in summary
        if not row.is_control
    }
