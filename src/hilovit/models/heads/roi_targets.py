"""Training targets of the Mask R-CNN RoI heads: RoI sampling and box-regression targets.

As mmdet 3.2: ``RandomSampler`` (``num``, ``pos_fraction``, ``neg_pos_ub``, ``add_gt_as_proposals``)
on an assignment in mmdet's convention (``assigned_gt_inds``: 0 negative, -1 ignored, ``k > 0`` the
``k``-th ground truth, 1-based), ``BBoxHead.get_targets`` (positives first, background label
``num_classes``) and the ``DeltaXYWHBBoxCoder`` encoding. Assignment itself (``MaxIoUAssigner``)
belongs with the box operators. Sampling is vectorised and draws from an optional ``torch.Generator``.
"""

from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["SamplingResult", "bbox_targets", "encode_deltas", "random_sample", "sample_rois"]


class SamplingResult(NamedTuple):
    """The RoIs sampled for one image (mmdet's ``SamplingResult`` fields).

    ``pos_inds``/``neg_inds``: indices into the priors (ground truths first when they were added),
    ascending; ``pos_priors`` ``(P, 4)``, ``neg_priors`` ``(Q, 4)``; ``pos_assigned_gt_inds`` ``(P,)``
    0-based; ``pos_gt_bboxes`` ``(P, 4)``, ``pos_gt_labels`` ``(P,)``; ``pos_is_gt`` ``(P,)`` bool.
    """

    pos_inds: Tensor
    neg_inds: Tensor
    pos_priors: Tensor
    neg_priors: Tensor
    pos_assigned_gt_inds: Tensor
    pos_gt_bboxes: Tensor
    pos_gt_labels: Tensor
    pos_is_gt: Tensor

    @property
    def priors(self) -> Tensor:
        """``(P + Q, 4)``: positives then negatives, the order of the bbox head's RoIs and targets."""
        return torch.cat([self.pos_priors, self.neg_priors], 0)


def _random_subset(gallery: Tensor, num: int, generator: Optional[torch.Generator]) -> Tensor:
    """``num`` entries of ``gallery`` drawn without replacement (all of them when there are fewer), sorted."""
    if gallery.numel() > num:
        device = generator.device if generator is not None else torch.device("cpu")
        perm = torch.randperm(gallery.numel(), generator=generator, device=device)[:num]
        gallery = gallery[perm.to(gallery.device)]
    return gallery.unique()  # mmdet's `.unique()`: sorted and distinct


def random_sample(assigned_gt_inds: Tensor, num: int, pos_fraction: float, neg_pos_ub: float = -1,
                  generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """mmdet's ``RandomSampler``: up to ``int(num * pos_fraction)`` positives (``assigned_gt_inds > 0``)
    at random, then ``num - #positives`` negatives (``== 0``; at most ``neg_pos_ub * max(1, #pos)`` when
    ``neg_pos_ub >= 0``). Returns ``(pos_inds, neg_inds)``, each int64 and ascending."""
    if not isinstance(assigned_gt_inds, Tensor) or assigned_gt_inds.dim() != 1 or assigned_gt_inds.is_floating_point():
        shape = getattr(assigned_gt_inds, "shape", None)
        raise ValueError(f"assigned_gt_inds must be a 1-D integer tensor, got {shape}")
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be a positive int, got {num!r}")
    if isinstance(pos_fraction, bool) or not isinstance(pos_fraction, (int, float)) or not 0 <= pos_fraction <= 1:
        raise ValueError(f"pos_fraction must be in [0, 1], got {pos_fraction!r}")
    pos = _random_subset(torch.nonzero(assigned_gt_inds > 0).squeeze(1), int(num * pos_fraction), generator)
    num_neg = num - pos.numel()
    if neg_pos_ub >= 0:
        num_neg = min(num_neg, int(neg_pos_ub * max(1, pos.numel())))
    neg = _random_subset(torch.nonzero(assigned_gt_inds == 0).squeeze(1), num_neg, generator)
    return pos, neg


def sample_rois(proposals: Tensor, assigned_gt_inds: Tensor, gt_bboxes: Tensor, gt_labels: Tensor, num: int = 512,
                pos_fraction: float = 0.25, neg_pos_ub: float = -1, add_gt_as_proposals: bool = True,
                generator: Optional[torch.Generator] = None) -> SamplingResult:
    """Sample the R-CNN RoIs of one image (mmdet's ``BaseSampler.sample`` with ``RandomSampler``).

    Args:
        proposals: ``(N, 4)`` proposal boxes (the priors); assigned_gt_inds: ``(N,)`` their assignment.
        gt_bboxes: ``(G, 4)``; gt_labels: ``(G,)`` int64 in ``[0, num_classes)``.
        num, pos_fraction, neg_pos_ub: the sampler's settings (Mask R-CNN: 512, 0.25, -1).
        add_gt_as_proposals: prepend the ground truths as priors assigned to themselves.
        generator: the random source of the draws.
    """
    if proposals.dim() != 2 or proposals.shape[1] < 4 or assigned_gt_inds.shape != (proposals.shape[0],):
        raise ValueError(f"proposals must be (N, 4) with assigned_gt_inds (N,), got {tuple(proposals.shape)} "
                         f"and {tuple(assigned_gt_inds.shape)}")
    if gt_bboxes.dim() != 2 or gt_bboxes.shape[1] != 4 or gt_labels.shape != (gt_bboxes.shape[0],):
        raise ValueError(f"gt_bboxes must be (G, 4) with gt_labels (G,), got {tuple(gt_bboxes.shape)} "
                         f"and {tuple(gt_labels.shape)}")
    priors, gt_inds = proposals[:, :4], assigned_gt_inds.long()
    is_gt = torch.zeros(priors.shape[0], dtype=torch.bool, device=priors.device)
    G = gt_bboxes.shape[0]
    if add_gt_as_proposals and G > 0:
        priors = torch.cat([gt_bboxes.to(priors.dtype), priors], 0)
        gt_inds = torch.cat([torch.arange(1, G + 1, device=gt_inds.device), gt_inds], 0)
        is_gt = torch.cat([torch.ones(G, dtype=torch.bool, device=priors.device), is_gt], 0)
    if G > 0 and int(gt_inds.max()) > G:
        raise ValueError(f"assigned_gt_inds refers to ground truth {int(gt_inds.max())} but there are {G}")
    pos, neg = random_sample(gt_inds, num, pos_fraction, neg_pos_ub, generator)
    pos_assigned = gt_inds[pos] - 1
    pos_gt_bboxes = gt_bboxes[pos_assigned] if G > 0 else gt_bboxes.new_zeros((0, 4))
    pos_gt_labels = gt_labels[pos_assigned] if G > 0 else gt_labels.new_zeros((0,))
    return SamplingResult(pos, neg, priors[pos], priors[neg], pos_assigned, pos_gt_bboxes, pos_gt_labels, is_gt[pos])


def encode_deltas(proposals: Tensor, gt: Tensor, means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
                  stds: Sequence[float] = (0.1, 0.1, 0.2, 0.2)) -> Tensor:
    """Box deltas ``(dx, dy, dw, dh)`` of ``gt`` relative to ``proposals`` (both ``(N, 4)`` x1y1x2y2),
    normalised as ``(delta - means) / stds``: the encoding of mmdet's ``DeltaXYWHBBoxCoder``
    (``bbox2delta``: centres ``(x1 + x2) * 0.5``, sizes ``x2 - x1``, ``dx = (gx - px) / pw``,
    ``dw = log(gw / pw)``, in float32)."""
    p, g = proposals.float(), gt.float()
    pxy, pwh = (p[..., :2] + p[..., 2:]) * 0.5, p[..., 2:] - p[..., :2]
    gxy, gwh = (g[..., :2] + g[..., 2:]) * 0.5, g[..., 2:] - g[..., :2]
    deltas = torch.cat([(gxy - pxy) / pwh, torch.log(gwh / pwh)], -1)
    return (deltas - deltas.new_tensor(means)) / deltas.new_tensor(stds)


def bbox_targets(sampling_results: Sequence[SamplingResult], num_classes: int, pos_weight: float = -1.0,
                 encode: Optional[Callable[[Tensor, Tensor], Tensor]] = None) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """R-CNN classification and regression targets of the sampled RoIs (mmdet's ``BBoxHead.get_targets``,
    images concatenated, each image's positives then negatives as in :attr:`SamplingResult.priors`).

    Returns ``labels`` ``(R,)`` (``num_classes`` = background), ``label_weights`` ``(R,)`` (positives
    ``pos_weight`` when > 0, else 1; negatives 1), ``bbox_targets`` ``(R, 4)`` (``encode(pos_priors,
    pos_gt_bboxes)``, default :func:`encode_deltas`; 0 for negatives) and ``bbox_weights`` ``(R, 4)``
    (1 for positives)."""
    encode = encode or encode_deltas
    parts: List[Tuple[Tensor, ...]] = []
    for res in sampling_results:
        P, Q = res.pos_priors.shape[0], res.neg_priors.shape[0]
        ref = res.pos_priors
        labels = torch.full((P + Q,), num_classes, dtype=torch.long, device=ref.device)
        label_weights = ref.new_zeros(P + Q)
        targets = ref.new_zeros((P + Q, 4))
        weights = ref.new_zeros((P + Q, 4))
        if P > 0:
            labels[:P] = res.pos_gt_labels
            label_weights[:P] = 1.0 if pos_weight <= 0 else pos_weight
            targets[:P] = encode(res.pos_priors, res.pos_gt_bboxes).to(targets.dtype)
            weights[:P] = 1.0
        label_weights[P:] = 1.0
        parts.append((labels, label_weights, targets, weights))
    return tuple(torch.cat(t, 0) for t in zip(*parts))
