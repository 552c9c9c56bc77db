"""Depth-probe loss and the aligned depth metrics (after MiDaS, Ranftl et al. 2019).

The reference (`src/validate_monocular_depth.py`) normalises only the ground truth, per image,
by its median (shift) and mean absolute deviation (scale), and trains the head's *raw* output
to match it: smooth-L1 + 0.2 x a 4-scale gradient-matching loss. For the RMSE in metres the raw
prediction is mapped back with the ground truth's shift and scale, `pred * scale + shift`. The
head must therefore learn the normalised scale itself, and a prediction off by a scale or a
shift is penalised. That is the default here (`normalize_prediction=False`).

`normalize_prediction=True` is MiDaS's fully scale-and-shift-invariant variant: the prediction
is normalised by its own median and mean absolute deviation too, before the loss and before
mapping it back. It forgives the head's scale and shift, so its RMSE is lower and not
comparable with the paper's; kept as an option for comparison with MiDaS-style probes.

All maps are `(B, H, W)`; `valid` is a `(B, H, W)` bool mask of pixels with ground truth
(NYU's labeled frames are filled, so it is all True there, as the reference assumes: it has no
mask; zeros/NaNs mark holes elsewhere).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def valid_depth_mask(depth: torch.Tensor) -> torch.Tensor:
    """True where the ground truth is a finite, positive depth."""
    return torch.isfinite(depth) & (depth > 0)


def normalize_depth(
    x: torch.Tensor, valid: torch.Tensor | None = None, eps: float = 1e-7
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: (x - median) / (mean|x - median| + eps) over valid pixels (the lower median
    for an even count, as torch.median; eps 1e-7 as the reference).

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
    normalize_prediction: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """smooth-L1(pred, normalised gt) + grad_weight x 4-scale gradient matching, each a mean
    over the batch's valid pixels (the reference's reduction). `pred` is the head's raw output;
    with `normalize_prediction` it is normalised per image first (invariant to its scale/shift).

    Returns `(loss, {"ssi": ..., "grad": ...})`.
    """
    pred_n = normalize_depth(pred, valid)[0] if normalize_prediction else pred.float()
    gt_n, _, _ = normalize_depth(gt, valid)
    ssi = _masked_mean(F.smooth_l1_loss(pred_n, gt_n, beta=beta, reduction="none"),
                       None if valid is None else valid.float())
    grad = gradient_matching_loss(pred_n, gt_n, valid, scales)
    return ssi + grad_weight * grad, {"ssi": ssi.detach(), "grad": grad.detach()}


def align_to_ground_truth(
    pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None, normalize_prediction: bool = False
) -> torch.Tensor:
    """The prediction in metres: `pred * scale + shift` with the ground truth's median (shift) and
    mean absolute deviation (scale); with `normalize_prediction`, `pred` is normalised first."""
    pred_n = normalize_depth(pred, valid)[0] if normalize_prediction else pred.float()
    _, shift, scale = normalize_depth(gt, valid)
    return pred_n * scale + shift


@torch.no_grad()
def depth_metrics(
    pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None, min_depth: float = 1e-3,
    normalize_prediction: bool = False,
) -> dict[str, torch.Tensor]:
    """Per-image `(B,)` RMSE (metres), AbsRel and delta < 1.25 of `align_to_ground_truth(pred)`.
    RMSE is the reference's metric (sqrt of the mean squared error over an image's pixels, then
    averaged over images by the caller); AbsRel and delta1 are ours."""
    if valid is None:
        valid = valid_depth_mask(gt)
    aligned = align_to_ground_truth(pred, gt, valid, normalize_prediction)
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
