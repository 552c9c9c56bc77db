"""What one I-JEPA forward predicted: the ids and losses of every predicted target token.

The loss figures (loss maps, token-loss distribution, per-sample losses, the dataset-averaged
loss map) run the I-JEPA module of a run on batches of masked images, in one of two modes:

- "training" (default, as the reference's plot-sample-losses / plot-mean-loss): the training
  forward. Each row is repeated `objective.batch_repeat` times (4) and every copy predicts a
  random subset of the row's target windows (`objective.target_capacity`, 25 %) from a random
  subset of its context windows (`context_capacity`, 25 %). A token counts once per copy that
  predicted it.
- "predict-all": the predictor sees every context token and predicts every target token of the
  row (`IJEPA.forward(..., predict_all_targets=True)`); one prediction per target token.

`IJEPAOutput` holds the token losses but not which tokens the predictor was asked for, so
`predicted_tokens` reads them off the predictor's inputs with a forward hook (the predictor's
interface is `forward(context, context_ids, target_ids)`). For per-channel losses it also
hooks the target norm's output (the normalised teacher targets of the whole target segment)
and gathers each predicted token's target by its (row, sample, patch row, patch col).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from featnorm.batch import PackedBatch
from featnorm.tokens import COL, REGISTER, ROW, SAMPLE, is_padding, is_register

FORWARD_MODES = ("training", "predict-all")


@dataclass
class PredictedTokens:
    """One forward's predictions; R predictor rows (`copies` x batch rows, copy-major: row
    j * B + b is copy j of batch row b), Lp predicted slots per row."""

    target_ids: torch.Tensor  # (R, Lp, 4) ids of the tokens the predictor was asked for
    token_losses: torch.Tensor  # (R, Lp) smooth-L1 averaged over channels, 0 where not counted
    token_mask: torch.Tensor  # (R, Lp) bool: the tokens the loss counts (real target patches; registers too
    # when the objective predicts registers)
    copies: int  # predictor rows per batch row (objective.batch_repeat, or 1 for predict-all)
    channel_losses: torch.Tensor | None = None  # (R, Lp, D) smooth-L1 per channel, when asked for

    @property
    def source_rows(self) -> torch.Tensor:
        """`(R,)` the batch row each predictor row copies."""
        b = self.target_ids.shape[0] // self.copies
        return torch.arange(self.target_ids.shape[0], device=self.target_ids.device) % b


def _token_keys(ids: torch.Tensor, rows: torch.Tensor, sizes: tuple[int, int, int, int]) -> torch.Tensor:
    """One integer per token from (batch row, sample, register, patch row, patch col); registers
    (whose row/col are padding) and patches never collide."""
    S, M, H, W = sizes
    reg = is_register(ids)
    r = torch.where(reg, ids[..., REGISTER] + 1, 0)
    y = torch.where(reg, 0, ids[..., ROW])
    x = torch.where(reg, 0, ids[..., COL])
    return (((rows * S + ids[..., SAMPLE]) * (M + 1) + r) * H + y) * W + x


def _targets_of_predicted(targets: torch.Tensor, segment_ids: torch.Tensor, pred_ids: torch.Tensor,
                          copies: int) -> torch.Tensor:
    """The normalised target `(R, Lp, D)` of every predicted token, looked up by (batch row,
    sample, register, patch row, patch col) among `segment_ids`; zeros where the slot is padding.

    targets `(B, Lt, D)` with `segment_ids` `(B, Lt, 4)` the ids of those slots (the target
    segment, or the whole row when the objective draws targets from every window),
    pred_ids `(R, Lp, 4)`."""
    B, Lt, D = targets.shape
    seg_real, pred_real = ~is_padding(segment_ids), ~is_padding(pred_ids)
    ids_all = torch.cat([segment_ids[seg_real], pred_ids[pred_real]])

    def extent(values: torch.Tensor) -> int:
        return int(values.max()) + 1 if values.numel() else 1

    reg = is_register(ids_all)
    sizes = (extent(ids_all[:, SAMPLE]), extent(ids_all[reg, REGISTER]) if reg.any() else 0,
             extent(ids_all[~reg, ROW]), extent(ids_all[~reg, COL]))
    seg_rows = torch.arange(B, device=targets.device)[:, None].expand(B, Lt)
    lookup = torch.full((B * sizes[0] * (sizes[1] + 1) * sizes[2] * sizes[3],), -1, dtype=torch.long,
                        device=targets.device)
    slots = torch.arange(B * Lt, device=targets.device).view(B, Lt)
    lookup[_token_keys(segment_ids, seg_rows, sizes)[seg_real]] = slots[seg_real]
    R, Lp, _ = pred_ids.shape
    pred_rows = (torch.arange(R, device=targets.device) % (R // copies))[:, None].expand(R, Lp)
    slot = torch.full((R, Lp), -1, dtype=torch.long, device=targets.device)
    slot[pred_real] = lookup[_token_keys(pred_ids, pred_rows, sizes)[pred_real]]
    if (slot[pred_real] < 0).any():
        raise RuntimeError("a predicted token is not among its row's target slots")
    out = targets.reshape(B * Lt, D)[slot.clamp_min(0)]
    return out * (slot >= 0)[..., None].to(out.dtype)


@torch.no_grad()
def predicted_tokens(
    model: torch.nn.Module,
    batch: PackedBatch,
    mode: str = "training",
    generator: torch.Generator | None = None,
    channel_losses: bool = False,
) -> PredictedTokens:
    """Run the I-JEPA module `model` (an `featnorm.ijepa.IJEPA`, in eval mode) on `batch` in
    `mode` and return what its predictor predicted. `generator` draws the training forward's
    window subsets (seed it to compare runs on the same draws)."""
    if mode not in FORWARD_MODES:
        raise ValueError(f"forward mode {mode!r} is not one of {FORWARD_MODES}")
    seen: dict[str, torch.Tensor] = {}

    def on_predictor(_module, args, kwargs, output):
        seen["target_ids"] = args[2] if len(args) > 2 else kwargs["target_ids"]
        seen["predictions"] = output

    def on_target_norm(_module, _args, output):
        seen["targets"] = output

    hooks = [model.predictor.register_forward_hook(on_predictor, with_kwargs=True)]
    if channel_losses:
        hooks.append(model.target_norm.register_forward_hook(on_target_norm))
    try:
        out = model(batch, generator=generator, predict_all_targets=mode == "predict-all")
    finally:
        for h in hooks:
            h.remove()
    pred_ids = seen["target_ids"]
    copies = pred_ids.shape[0] // batch.pixels.shape[0]
    if out.token_losses.shape != pred_ids.shape[:2]:
        raise RuntimeError(f"token losses {tuple(out.token_losses.shape)} do not align with the predicted "
                           f"ids {tuple(pred_ids.shape)}")
    per_channel = None
    if channel_losses:
        beta = model.cfg.objective.smooth_l1_beta
        targets = seen["targets"].float()
        # the target norm saw the target segment, or the whole row (targets drawn from every window)
        slots = batch.token_ids if targets.shape[1] == batch.token_ids.shape[1] else batch.target_ids
        targets = _targets_of_predicted(targets, slots, pred_ids, copies)
        per_channel = F.smooth_l1_loss(seen["predictions"].float(), targets, reduction="none", beta=beta)
        per_channel = per_channel * out.token_mask[..., None]
    return PredictedTokens(pred_ids, out.token_losses.float(), out.token_mask, copies, per_channel)


def row_loss_stats(pred: PredictedTokens) -> tuple[torch.Tensor, torch.Tensor]:
    """Per predictor row: the mean and the variance (unbiased; NaN below 2 tokens) of its
    counted token losses, two `(R,)` float64 tensors (the reference's per-sample statistics,
    one image per row)."""
    m = pred.token_mask.to(torch.float64)
    x = pred.token_losses.to(torch.float64) * m
    n = m.sum(1)
    mean = x.sum(1) / n.clamp_min(1)
    var = (((x - mean[:, None]) ** 2) * m).sum(1) / (n - 1).clamp_min(1)
    return torch.where(n > 0, mean, torch.nan), torch.where(n > 1, var, torch.nan)
