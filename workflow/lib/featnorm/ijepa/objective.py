"""One I-JEPA step's loss (SPEC 3, steps 1-5).

1. The EMA teacher encodes whole rows (context + target segments) without gradient; the
   targets are its outputs at the target segment, normalized by `TargetNorm`.
2. The student encodes the context segment only.
3. Batch repeat: for each of r copies, random context windows and target windows
   (capacities of the config) are gathered window-contiguously. The encoder's register
   windows are never sampled: every copy gets all register windows of its row, first.
   With `objective.targets_include_context` the targets are drawn from every window of
   the row (the teacher's outputs at context windows included), as the reference's
   should_predict_from_all_target.
4. The predictor maps the chosen context features + target positions to predictions.
5. Smooth-L1 between predictions and targets, averaged over real, non-register target
   tokens, plus the DiffMoE capacity-predictor losses of the student and the predictor.

Under torch.distributed (training mode), step 5 divides this process's token-loss sum by
the mean token count per process (the all-reduced count / world size): averaged over
ranks - as DDP averages gradients - that is exactly the loss over the whole global batch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from featnorm.batch import PackedBatch
from featnorm.config import ModelConfig
from featnorm.ijepa.ema import ema_update
from featnorm.ijepa.target_norm import TargetNorm
from featnorm.ijepa.window_sampling import (
    gather_windows,
    padding_windows,
    register_window_index,
    register_windows,
    sample_windows,
    windows_per_copy,
)
from featnorm.layers import DiffMoE
from featnorm.metrics import smooth_rank
from featnorm.models import Encoder, Predictor
from featnorm.tokens import PAD_ID, is_patch, is_register


@dataclass
class IJEPAOutput:
    loss: torch.Tensor  # () mean smooth-L1 over real, non-register predicted target tokens (+ DiffMoE aux loss)
    targets: torch.Tensor  # (N, encoder_dim) normalized teacher targets of the real target tokens, detached
    token_losses: torch.Tensor  # (rows, Lt') smooth-L1 per predicted token (mean over channels), 0 elsewhere
    token_mask: torch.Tensor  # (rows, Lt') bool, True where token_losses counts in the loss
    # Detached 0-dim tensors for logging: num_predicted_tokens, num_target_tokens, target_std,
    # target_token_norm, predictor_{tokens,attention_pairs,context_tokens,target_tokens,slots} (the
    # predictor's work, `Predictor.token_counts`). With DiffMoE also moe_aux_loss, prediction_loss and, for encoder /
    # predictor, *_experts_per_token (this forward's routing) and *_eval_experts_per_token
    # (what eval-mode threshold routing picks on the same tokens).
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class IJEPA(nn.Module):
    """Student encoder, EMA teacher (no grad), predictor and target norm of one run.

    `forward(batch, generator=None, predict_all_targets=False) -> IJEPAOutput`.
    With `predict_all_targets` the batch repeat and window sampling are skipped: the
    predictor sees every context and target token and `token_losses` is `(B, Lt)`, aligned
    with `batch.target_ids` (loss maps). Otherwise `token_losses` is
    `(batch_repeat * B, kt * window_size**2)` over the sampled target windows.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.student = Encoder(cfg.encoder, cfg.patch_dim, init=cfg.init, attention_backend=cfg.attention_backend)
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)
        self.predictor = Predictor(cfg.predictor, cfg.encoder.dim, init=cfg.init, attention_backend=cfg.attention_backend)
        o = cfg.objective
        self.target_norm = TargetNorm(o.target_norm, cfg.encoder.dim, beta=o.target_norm_beta)
        # A plain dict (not registered as submodules): the layers whose aux losses train.
        self._moe_layers = {
            name: [m for m in net.modules() if isinstance(m, DiffMoE)]
            for name, net in (("encoder", self.student), ("predictor", self.predictor))
        }

    def ema_update(self, beta: float) -> None:
        """teacher <- beta * teacher + (1 - beta) * student (non-trainable state copied)."""
        ema_update(self.teacher, self.student, beta)

    def forward(
        self,
        batch: PackedBatch,
        generator: torch.Generator | None = None,
        predict_all_targets: bool = False,
    ) -> IJEPAOutput:
        o, ws = self.cfg.objective, self.cfg.window_size
        Lc = batch.context_length
        ctx_ids = batch.context_ids
        # the tokens the predictor may be asked for: the target segment, or the whole row
        from_all = o.targets_include_context and not predict_all_targets
        tgt_ids = batch.token_ids if from_all else batch.target_ids

        with torch.no_grad():
            teacher_out = self.teacher(batch.pixels, batch.token_ids)
            scored = self._scored(tgt_ids)
            targets = self.target_norm(teacher_out if from_all else teacher_out[:, Lc:], scored)
        context = self.student(batch.context_pixels, ctx_ids)

        if predict_all_targets:
            pred_ctx, pred_ctx_ids, pred_tgt_ids, pred_targets = context, ctx_ids, tgt_ids, targets
        else:
            r = o.batch_repeat
            ctx_pad, tgt_pad = padding_windows(ctx_ids, ws), padding_windows(tgt_ids, ws)
            if not o.padding_windows_last:
                ctx_pad, tgt_pad = torch.zeros_like(ctx_pad), torch.zeros_like(tgt_pad)
            kc = windows_per_copy(ctx_pad.shape[1], o.context_capacity, r, o.context_with_replacement)
            kt = windows_per_copy(tgt_pad.shape[1], o.target_capacity, r, o.target_with_replacement)
            ctx_reg = register_windows(ctx_ids, ws) if self.cfg.encoder.num_registers > 0 else None
            ctx_last = ctx_pad if ctx_reg is None else ctx_pad | ctx_reg
            cw = sample_windows(ctx_last, r, kc, o.context_with_replacement, generator)
            tw = sample_windows(tgt_pad, r, kt, o.target_with_replacement, generator)
            pred_ctx = gather_windows(context, cw, ws)
            pred_ctx_ids = gather_windows(ctx_ids, cw, ws)
            pred_tgt_ids = gather_windows(tgt_ids, tw, ws)
            pred_targets = gather_windows(targets, tw, ws)
            if ctx_reg is not None:
                pred_ctx, pred_ctx_ids = self._with_registers(context, ctx_ids, ctx_reg, pred_ctx, pred_ctx_ids, r)

        predictions = self.predictor(pred_ctx, pred_ctx_ids, pred_tgt_ids)
        token_mask = self._scored(pred_tgt_ids)
        per_channel = F.smooth_l1_loss(predictions.float(), pred_targets, reduction="none", beta=o.smooth_l1_beta)
        token_losses = per_channel.mean(-1) * token_mask
        count = token_mask.sum()
        loss = token_losses.sum() / _mean_count_per_process(count, self.training).clamp_min(1)
        moe_stats = self._moe_stats()
        if "moe_aux_loss" in moe_stats:
            moe_stats["prediction_loss"] = loss  # the smooth-L1 alone, comparable with dense runs
            loss = loss + moe_stats["moe_aux_loss"]

        real_targets = targets[scored]
        with torch.no_grad():
            # what the predictor computed (FLOP counting, featnorm.train.flops)
            work = self.predictor.token_counts(pred_ctx_ids, pred_tgt_ids)
            stats = {
                "num_predicted_tokens": count.detach(),
                "predictor_tokens": work["tokens"],
                "predictor_attention_pairs": work["pairs"],
                "predictor_context_tokens": work["context_tokens"],
                "predictor_target_tokens": work["target_tokens"],
                "predictor_slots": work["slots"],
                "num_target_tokens": torch.tensor(real_targets.shape[0], device=loss.device),
                "target_std": real_targets.std(0).mean() if real_targets.shape[0] > 1 else loss.new_zeros(()),
                "target_token_norm": real_targets.norm(dim=-1).mean() if real_targets.numel() else loss.new_zeros(()),
            }
            stats.update({k: v.detach() for k, v in moe_stats.items()})
        return IJEPAOutput(
            loss=loss,
            targets=real_targets.detach(),
            token_losses=token_losses.detach(),
            token_mask=token_mask,
            stats=stats,
        )

    def _scored(self, ids: torch.Tensor) -> torch.Tensor:
        """`(B, L, 4)` ids -> `(B, L)` bool: the tokens whose prediction counts in the loss
        (image patches; also registers with `objective.predict_registers`)."""
        if self.cfg.objective.predict_registers:
            return is_patch(ids) | is_register(ids)
        return is_patch(ids)

    def _with_registers(self, context, ctx_ids, ctx_reg, pred_ctx, pred_ctx_ids, r):
        """Prepend every register window of each row to all r copies of it, and wipe any
        register a copy drew among its sampled windows (it is there once already).

        context `(B, Lc, D)`, ctx_ids `(B, Lc, 4)`, ctx_reg `(B, Wc)` register-window flags,
        pred_ctx `(r * B, Lc', D)`, pred_ctx_ids `(r * B, Lc', 4)` ->
        `(r * B, M * w2 + Lc', D)` and ids, M the most register windows of a row."""
        ws = self.cfg.window_size
        pred_ctx_ids = pred_ctx_ids.masked_fill(is_register(pred_ctx_ids)[..., None], PAD_ID)
        idx, live = register_window_index(ctx_reg)  # (B, M)
        reg = gather_windows(context, idx[None], ws)
        reg_ids = gather_windows(ctx_ids, idx[None], ws)
        reg_ids = reg_ids.masked_fill(~live.repeat_interleave(ws**2, dim=1)[..., None], PAD_ID)
        return torch.cat((reg.repeat(r, 1, 1), pred_ctx), 1), torch.cat((reg_ids.repeat(r, 1, 1), pred_ctx_ids), 1)

    def _moe_stats(self) -> dict[str, torch.Tensor]:
        """Aux loss (with grad) and experts-per-token of the last forward of the student's and
        the predictor's DiffMoE layers (the teacher's are not trained); {} without DiffMoE."""
        stats: dict[str, torch.Tensor] = {}
        aux = []
        for name, layers in self._moe_layers.items():
            if not layers:
                continue
            aux += [m.aux_loss for m in layers if m.aux_loss is not None]
            stats[f"{name}_experts_per_token"] = torch.stack([m.experts_per_token for m in layers]).mean()
            stats[f"{name}_eval_experts_per_token"] = torch.stack([m.eval_experts_per_token for m in layers]).mean()
        if aux:
            stats["moe_aux_loss"] = torch.stack(aux).sum()
        return stats


def _mean_count_per_process(count: torch.Tensor, training: bool) -> torch.Tensor:
    """`count` itself in one process; in training under torch.distributed the count summed
    over processes divided by their number (a constant: no gradient flows through it)."""
    if not (training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return count
    total = count.detach().float().reshape(1)
    dist.all_reduce(total)
    return (total / dist.get_world_size()).reshape(())


def targets_rankme(targets: torch.Tensor, max_tokens: int | None = None, generator: torch.Generator | None = None) -> float:
    """RankMe smooth rank of `(N, dim)` targets (e.g. `IJEPAOutput.targets`), in float64.

    With `max_tokens`, a random subset of that many tokens (drawn with `generator`) is used."""
    if max_tokens is not None and targets.shape[0] > max_tokens:
        gen_device = generator.device if generator is not None else "cpu"
        idx = torch.randperm(targets.shape[0], generator=generator, device=gen_device)[:max_tokens]
        targets = targets[idx.to(targets.device)]
    return smooth_rank(targets)
