"""Scale-and-shift-invariant depth loss and the aligned depth metrics (MiDaS, Ranftl et al.).

All maps are `(B, H, W)`; `valid` is a `(B, H, W)` bool mask of pixels with ground truth
(NYU's labeled frames are filled, so it is all True there; zeros/NaNs mark holes elsewhere).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def valid_depth_mask(depth: torch.Tensor) -> torch.Tensor:
    """True where the ground truth is a finite, positive depth."""
    return torch.isfinite(depth) & (depth > 0)


def normalize_depth(
    x: torch.Tensor, valid: torch.Tensor | None = None, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: (x - median) / mean|x - median| over valid pixels.

    Returns `(normalized (B, H, W), shift (B, 1, 1), scale (B, 1, 1))`.
    """
    b = x.shape[0]
    flat = x.reshape(b, -1).float()
    if valid is None:
        shift = flat.median(dim=1).values
        scale = (flat - shift[:, None]).abs().mean(dim=1)
    else:
        m = valid.reshape(b, -1)
        shift = torch.where(m, flat, torch.nan).nanmedian(dim=1).values.nan_to_num(0.0)
        dev = ((flat - shift[:, None]).abs() * m).sum(1)
        scale = dev / m.sum(1).clamp_min(1)
    shift, scale = shift[:, None, None], scale[:, None, None]
    return (x.float() - shift) / (scale + eps), shift, scale


def _masked_mean(x: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
    if m is None:
        return x.mean()
    return (x * m).sum() / m.sum().clamp_min(1)


def gradient_matching_loss(
    pred_n: torch.Tensor, gt_n: torch.Tensor, valid: torch.Tensor | None = None, scales: int = 4
) -> torch.Tensor:
    """Sum over `scales` (subsampled by 2^s) of the mean |grad (pred_n - gt_n)| along x and y."""
    loss = pred_n.new_zeros(())
    for s in range(scales):
        step = 2**s
        r = (pred_n - gt_n)[:, ::step, ::step]
        m = None if valid is None else valid[:, ::step, ::step].float()
        if r.shape[-1] > 1:
            mx = None if m is None else m[:, :, 1:] * m[:, :, :-1]
            loss = loss + _masked_mean((r[:, :, 1:] - r[:, :, :-1]).abs(), mx)
        if r.shape[-2] > 1:
            my = None if m is None else m[:, 1:, :] * m[:, :-1, :]
            loss = loss + _masked_mean((r[:, 1:, :] - r[:, :-1, :]).abs(), my)
    return loss


def depth_probe_loss(
    pred: torch.Tensor,
    gt: torch.Tensor,
    valid: torch.Tensor | None = None,
    grad_weight: float = 0.2,
    scales: int = 4,
    beta: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SPEC loss: smooth-L1 between per-image normalised prediction and ground truth
    + grad_weight x 4-scale gradient matching. Invariant to scaling/shifting `pred`.

    Returns `(loss, {"ssi": ..., "grad": ...})`.
    """
    pred_n, _, _ = normalize_depth(pred, valid)
    gt_n, _, _ = normalize_depth(gt, valid)
    ssi = _masked_mean(F.smooth_l1_loss(pred_n, gt_n, beta=beta, reduction="none"),
                       None if valid is None else valid.float())
    grad = gradient_matching_loss(pred_n, gt_n, valid, scales)
    return ssi + grad_weight * grad, {"ssi": ssi.detach(), "grad": grad.detach()}


def align_to_ground_truth(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Map the normalised prediction back into metres with the ground truth's median and scale."""
    pred_n, _, _ = normalize_depth(pred, valid)
    _, shift, scale = normalize_depth(gt, valid)
    return pred_n * scale + shift


@torch.no_grad()
def depth_metrics(
    pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None, min_depth: float = 1e-3
) -> dict[str, torch.Tensor]:
    """Per-image `(B,)` RMSE (metres), AbsRel and delta < 1.25 after aligning `pred` to `gt`."""
    if valid is None:
        valid = valid_depth_mask(gt)
    aligned = align_to_ground_truth(pred, gt, valid)
    gt = gt.float()
    m = valid.float()
    count = m.flatten(1).sum(1).clamp_min(1)
    rmse = (((aligned - gt) ** 2 * m).flatten(1).sum(1) / count).sqrt()
    # the aligned map can dip below zero; ratios need a positive depth
    pos = aligned.clamp_min(min_depth)
    safe_gt = torch.where(valid, gt, torch.ones_like(gt))
    absrel = (((pos - safe_gt).abs() / safe_gt) * m).flatten(1).sum(1) / count
    ratio = torch.maximum(pos / safe_gt, safe_gt / pos)
    delta1 = ((ratio < 1.25).float() * m).flatten(1).sum(1) / count
    return {"rmse": rmse, "absrel": absrel, "delta1": delta1}
