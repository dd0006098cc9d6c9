"""ROAD: RemOve And Debias (Rong et al., ICML 2022), a faithfulness metric for saliency maps, 2D and 3D.

Pixels are removed in saliency order and replaced by noisy linear imputation (``noisy_linear_impute``), and the
model's score for the explained class is read again. Removing the most relevant pixels first (MoRF) should make
the score drop fast; removing the least relevant first (LeRF) should barely move it.

The score is the CAM target (``monai_xai.cams.targets.build_target``), so it means what it means for the explanation:
a classifier's class logit (or probability), or for a segmentation network the class logit (or probability) over a
pixel set M fixed on the unperturbed image (Seg-Grad-CAM's target; by default M is the region predicted as the class),
reported as its mean over M so that values read like a classifier's and do not grow with the region (NaN for an
empty M). "Still predicted" is the target's ``predicted``: the class is the arg-max, or, for segmentation, at least half
of M is still predicted as the class.

Percentile convention (pytorch-grad-cam's): a percentile p is the share of pixels KEPT, in percent. MoRF at p removes
the (100 - p)% most salient pixels, LeRF at p removes the (100 - p)% least salient ones. Exactly
``N - round(N * p / 100)`` of the N pixels are removed (half rounds up). Pixels are ranked by (saliency, flat index in
C order), so ties, e.g. a map that is zero on most of the image, are broken in raster order: a flat map removes a fixed
share of pixels instead of everything or nothing (pytorch-grad-cam thresholds with a strict ``<`` and removes every
tied pixel).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from monai.utils import MetricReduction

from monai_xai.budgets import check_metric_passes, check_percentiles, shown
from monai_xai.cams.targets import PixelSetSpec, build_target, per_voxel_scale
from monai_xai.enums import RoadOrder, Score, as_choice
from monai_xai.metrics.imputation import NoisyLinearImputer
from monai_xai.metrics.per_sample import CurveMetric, MetricCurve
from monai_xai.utils import check_batch_map, preserved_model_state

__all__ = ["DEFAULT_PERCENTILES", "ROADCurve", "ROADMetric", "removal_masks", "road", "road_combined"]

DEFAULT_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
# imputer(images (N, C, *spatial), remove_mask (N, 1, *spatial) bool) -> imputed images
Imputer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_REMOVAL_ORDERS = (RoadOrder.MORF, RoadOrder.LERF)


@dataclass(frozen=True)
class ROADCurve:
    """ROAD result of one removal order for a batch.

    Attributes:
        order: ``"morf"`` or ``"lerf"``.
        percentiles: share of pixels kept at each step, in percent, length P.
        score_change: (B, P) target score after imputation minus before ("confidence increase"; negative = drop).
        still_predicted: (B, P) bool, the explained class is still predicted after imputation (the ROAD paper's
            accuracy per percentage, with the explained class as the label): the arg-max of a classifier, or at least
            half of the pixel set of a segmentation network.
    """

    order: RoadOrder
    percentiles: tuple[float, ...]
    score_change: torch.Tensor
    still_predicted: torch.Tensor

    @property
    def mean_score_change(self) -> torch.Tensor:
        """(B,) score change averaged over the percentiles (pytorch-grad-cam's ROAD*Average)."""
        return self.score_change.mean(dim=1)

    @property
    def accuracy(self) -> torch.Tensor:
        """(P,) share of samples whose explained class is still predicted at each percentile."""
        return self.still_predicted.to(self.score_change.dtype).mean(dim=0)


def removal_masks(
    saliency: torch.Tensor, percentiles: Sequence[float] = DEFAULT_PERCENTILES, order: RoadOrder | str = RoadOrder.MORF
) -> torch.Tensor:
    """Pixels removed by ROAD at each percentile, with deterministic tie-breaking (see the module docstring).

    Args:
        saliency: (B, 1, *spatial) real tensor, larger = more relevant.
        percentiles: share of pixels kept, in percent, each in (0, 100].
        order: ``"morf"`` removes the most salient pixels, ``"lerf"`` the least salient.

    Returns:
        (B, P, *spatial) bool tensor, True where a pixel is removed; every sample loses exactly
        ``N - round(N * p / 100)`` pixels at percentile p.
    """
    order = _removal_order(order)
    if saliency.ndim < 3 or saliency.shape[1] != 1:
        raise ValueError(f"saliency must have shape (B, 1, *spatial), got {tuple(saliency.shape)}.")
    flat = saliency.reshape(saliency.shape[0], -1)
    pixels = flat.shape[1]
    kept = _kept_counts(percentiles, pixels)
    ascending = torch.sort(flat, dim=1, stable=True).indices
    rank = torch.empty_like(ascending)
    rank.scatter_(1, ascending, torch.arange(pixels, device=flat.device).expand_as(ascending))
    kept = torch.tensor(kept, device=flat.device).reshape(1, -1, 1)
    rank = rank.unsqueeze(1)
    removed = rank >= kept if order == RoadOrder.MORF else rank < pixels - kept
    return removed.reshape(saliency.shape[0], len(percentiles), *saliency.shape[2:])


def road(
    model: torch.nn.Module,
    images: torch.Tensor,
    saliency: torch.Tensor,
    class_idx: int | Sequence[int] | torch.Tensor | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    order: RoadOrder | str = RoadOrder.MORF,
    pixel_set: PixelSetSpec = None,
    score: Score | str = Score.LOGIT,
    imputer: Imputer | None = None,
    batch_size: int | None = None,
) -> ROADCurve:
    """ROAD curve of one removal order for a batch of classifier or segmentation inputs.

    Args:
        model: classifier returning (B, num_classes) logits, or segmentation network returning (B, num_classes,
            *spatial) logits; run in eval mode under ``torch.no_grad`` and given back with every module's train/eval
            mode as it was.
        images: (B, C, *spatial) model input, 2D or 3D; imputation works on these values as given (normalised or not).
        saliency: (B, 1, *spatial) map per sample, larger = more relevant (e.g. a CAM at input resolution).
        class_idx: explained class, an int for the batch or one per sample; ``None`` uses the predicted class
            (classifiers only: a segmentation network needs the class).
        percentiles: share of pixels kept, in percent, each in (0, 100] and given once; see the module docstring. At
            most ``MONAI_XAI_MAX_PERCENTILES`` of them, and the call's imputed images x voxels at most
            ``MONAI_XAI_MAX_METRIC_VOXEL_PASSES`` (:mod:`monai_xai.budgets`), checked before any forward pass.
        order: ``"morf"`` (most relevant first) or ``"lerf"`` (least relevant first).
        pixel_set: segmentation only, the pixel set M whose class score is averaged, defined on the unperturbed images
            as in ``CAMExplainer``: ``None`` or ``"pred"`` (voxels predicted as the class), ``"largest_component"``,
            ``"image"``, a (B or 1, 1, *spatial) tensor in [0, 1] on the output grid (e.g. the ground truth), a tuple
            of ints (one voxel) or of slices (a box). Must be None for classifiers.
        score: ``"logit"`` (pytorch-grad-cam's ClassifierOutputTarget) or ``"probability"`` (softmax over classes,
            sigmoid for a single output channel).
        imputer: ``imputer(images, remove_mask) -> imputed images``; default ``NoisyLinearImputer()`` (ROAD's noisy
            linear imputation, noise 0.01 in image units).
        batch_size: most images per imputation and forward pass; ``None`` does all B * P at once.

    Returns:
        ``ROADCurve`` with (B, P) ``score_change`` and ``still_predicted``.
    """
    order = _removal_order(order)
    curves = _road_curves(
        model, images, saliency, class_idx, percentiles, (order,), pixel_set, score, imputer, batch_size
    )
    return curves[order]


def road_combined(
    model: torch.nn.Module,
    images: torch.Tensor,
    saliency: torch.Tensor,
    class_idx: int | Sequence[int] | torch.Tensor | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    pixel_set: PixelSetSpec = None,
    score: Score | str = Score.LOGIT,
    imputer: Imputer | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """``(mean LeRF score change - mean MoRF score change) / 2`` per sample (pytorch-grad-cam's ROADCombined).

    Higher is better: a faithful map keeps the score when its least relevant pixels go and loses it when its most
    relevant pixels go. Arguments as in ``road``; the unperturbed forward pass is shared by both orders.

    Returns:
        (B,) tensor.
    """
    curves = _road_curves(
        model, images, saliency, class_idx, percentiles, _REMOVAL_ORDERS, pixel_set, score, imputer, batch_size
    )
    return (curves[RoadOrder.LERF].mean_score_change - curves[RoadOrder.MORF].mean_score_change) / 2


class ROADMetric(CurveMetric):
    """ROAD scores buffered per case across iterations (and distributed ranks), reduced like MONAI's DiceMetric.

    Call signature (what an ignite handler's ``output_transform`` must produce)::

        metric(y_pred=saliency, y=images, class_idx=None, pixel_set=None)

    with ``saliency`` (B, 1, *spatial), ``images`` (B, C, *spatial) the model input, ``class_idx`` the explained
    class (int, per-sample sequence or tensor; ``None`` = a classifier's predicted class, which is what a plain
    ``IgniteMetricHandler`` gets since it passes only ``(y_pred, y)``) and ``pixel_set`` the pixel set of a
    segmentation network (see ``road``). Per-sample ``class_idx`` and tensor pixel sets need batch-first tensors: with
    lists of channel-first tensors every item is computed on its own.

    Each case adds one row: the score change at every percentile of each order, then the headline value, the mean
    over percentiles (``order="morf"`` or ``"lerf"``, P + 1 columns) or, for ``order="combined"``, the MoRF curve, the
    LeRF curve and ``road_combined`` (2 P + 1 columns). :meth:`curves` turns an aggregated row back into its curves.

    Example::

        metric = ROADMetric(model, order="combined")
        for batch in loader:
            saliency = explainer(batch["image"])["gradcam"]
            metric(y_pred=saliency, y=batch["image"], class_idx=batch["label"])
        curve = metric.aggregate()  # (2 P + 1,) mean over cases; curve[-1] is the mean ROADCombined

    Args:
        model: classifier or segmentation network (see ``road``), on the images' device.
        percentiles, score, imputer, batch_size: as in ``road``.
        order: ``"morf"``, ``"lerf"`` or ``"combined"``.
        reduction: MONAI reduction over the buffered (cases, columns) tensor; the default ``"mean_batch"`` averages
            over cases and keeps the columns. NaN rows (segmentation cases with an empty pixel set) are left out; a
            column without any defined case is NaN (:class:`~monai_xai.metrics.per_sample.PerSampleMetric`).
        get_not_nans: also return the number of non-NaN values per reduced entry.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        percentiles: Sequence[float] = DEFAULT_PERCENTILES,
        order: RoadOrder | str = RoadOrder.COMBINED,
        score: Score | str = Score.LOGIT,
        imputer: Imputer | None = None,
        batch_size: int | None = None,
        reduction: MetricReduction | str = MetricReduction.MEAN_BATCH,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(reduction, get_not_nans)
        _kept_counts(percentiles, None)
        self.model = model
        self.percentiles = tuple(percentiles)
        self.order = as_choice(RoadOrder, order, "order")
        self.score = as_choice(Score, score, "score")
        self.imputer = imputer
        self.batch_size = batch_size

    @property
    def _orders(self) -> tuple[RoadOrder, ...]:
        return _REMOVAL_ORDERS if self.order == RoadOrder.COMBINED else (self.order,)

    def curves(self, row: torch.Tensor) -> dict[str, MetricCurve]:
        """The curves of one row (aggregated over cases, or of one case): ``{"morf": ..., "lerf": ...}``, score
        change against the percentage of pixels kept."""
        values = row.reshape(-1).tolist()
        per_order = len(self.percentiles)
        return {
            str(order): MetricCurve(
                self.percentiles, tuple(values[k * per_order : (k + 1) * per_order]), "pixels kept (%)", "score change"
            )
            for k, order in enumerate(self._orders)
        }

    def _compute_tensor(
        self,
        y_pred: torch.Tensor,
        y: torch.Tensor | None = None,
        class_idx: int | Sequence[int] | torch.Tensor | None = None,
        pixel_set: PixelSetSpec = None,
    ) -> torch.Tensor:
        """ROAD scores of one batch.

        Args:
            y_pred: (B, 1, *spatial) saliency maps.
            y: (B, C, *spatial) model input the maps explain.
            class_idx: explained class per sample; ``None`` = predicted class (classifiers only).
            pixel_set: segmentation pixel set (see ``road``); None for classifiers.

        Returns:
            (B, P + 1) or, combined, (B, 2 P + 1) float tensor; the last column is the headline value.
        """
        if y is None:
            raise ValueError("ROADMetric needs the model input: call metric(y_pred=saliency, y=images).")
        curves = _road_curves(
            self.model,
            y,
            y_pred,
            class_idx,
            self.percentiles,
            self._orders,
            pixel_set,
            self.score,
            self.imputer,
            self.batch_size,
        )
        if self.order == RoadOrder.COMBINED:
            morf, lerf = curves[RoadOrder.MORF], curves[RoadOrder.LERF]
            combined = (lerf.mean_score_change - morf.mean_score_change) / 2
            return torch.cat([morf.score_change, lerf.score_change, combined[:, None]], dim=1)
        curve = curves[self.order]
        return torch.cat([curve.score_change, curve.mean_score_change[:, None]], dim=1)


def _kept_counts(percentiles: Sequence[float], pixels: int | None) -> list[int]:
    """Number of pixels kept per percentile; validates the percentiles (and, given ``pixels``, that one is kept)."""
    values = tuple(percentiles) if isinstance(percentiles, Iterable) and not isinstance(percentiles, str) else ()
    wrong = [p for p in values if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 < p <= 100]
    if not values or wrong:
        got = f"{shown(wrong)} among {shown(values)}" if wrong else repr(percentiles)
        raise ValueError(f"percentiles are shares of pixels kept, each in (0, 100], e.g. [10, 50, 90], got {got}.")
    check_percentiles(values)
    if pixels is None:
        return []
    kept = [math.floor(pixels * p / 100 + 0.5) for p in values]
    if min(kept) == 0:
        raise ValueError(
            f"Percentile {min(values)} keeps no pixel of an image with {pixels} pixels, so everything would be "
            "removed; use larger percentiles or larger images."
        )
    return kept


def _removal_order(order: RoadOrder | str) -> RoadOrder:
    order = as_choice(RoadOrder, order, "order")
    if order not in _REMOVAL_ORDERS:
        raise ValueError(f"order must be 'morf' or 'lerf' here (use road_combined for both), got {order!r}.")
    return order


def _road_curves(
    model: torch.nn.Module,
    images: torch.Tensor,
    saliency: torch.Tensor,
    class_idx: int | Sequence[int] | torch.Tensor | None,
    percentiles: Sequence[float],
    orders: Sequence[RoadOrder],
    pixel_set: PixelSetSpec,
    score: Score | str,
    imputer: Imputer | None,
    batch_size: int | None,
) -> dict[RoadOrder, ROADCurve]:
    """ROAD curves for several orders sharing one unperturbed forward pass; see ``road`` for the arguments."""
    score = as_choice(Score, score, "score")
    imputer = NoisyLinearImputer() if imputer is None else imputer
    if images.ndim not in (4, 5):
        raise ValueError(f"images must be (B, C, H, W) or (B, C, D, H, W), got shape {tuple(images.shape)}.")
    saliency = saliency.to(images.device)
    check_batch_map("saliency", saliency, images)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of images per forward pass, got {batch_size}.")
    _kept_counts(percentiles, None)
    batch, steps = images.shape[0], len(tuple(percentiles))
    check_metric_passes(  # before any imputation or forward pass
        batch * (1 + len(orders) * steps),
        math.prod(images.shape[2:]),
        "percentiles",
        f"{batch} image(s) x (1 + {len(orders)} order(s) x {steps} percentiles) forward passes",
    )
    # (orders, B, P, *spatial); every (order, sample, percentile) triple is one imputed image
    masks = torch.stack([removal_masks(saliency, percentiles, order) for order in orders])
    triples = masks.shape[0] * masks.shape[1] * masks.shape[2]
    chunk = batch_size or triples
    order_index, sample_index, step_index = (
        index.flatten().to(images.device)
        for index in torch.meshgrid(*(torch.arange(n) for n in masks.shape[:3]), indexing="ij")
    )
    with preserved_model_state(model), torch.no_grad():
        outputs = torch.cat([model(part) for part in images.split(chunk)])
        # the target (class, and pixel set of a segmentation) is fixed on the unperturbed images
        target = build_target(outputs, class_idx, pixel_set, score)
        before = target(outputs)
        after_scores, after_predicted = [], []
        for start in range(0, triples, chunk):
            part = slice(start, start + chunk)
            samples_part = sample_index[part]
            remove = masks[order_index[part], samples_part, step_index[part]].unsqueeze(1)
            outputs_after = model(imputer(images[samples_part], remove))
            after_scores.append(target(outputs_after, samples_part))
            after_predicted.append(target.predicted(outputs_after, samples_part))
    shape = masks.shape[:3]
    # segmentation: mean over the pixel set; an empty set has no score to change: NaN, so reductions skip it
    change = (torch.cat(after_scores).reshape(shape) - before[None, :, None]) / per_voxel_scale(target)[None, :, None]
    still = torch.cat(after_predicted).reshape(shape)
    return {order: ROADCurve(order, tuple(percentiles), change[k], still[k]) for k, order in enumerate(orders)}
