"""Test helper: the training forward's token losses recomputed one predictor row at a time.

`record_predictor_calls` captures what the I-JEPA module handed its predictor in a batched
forward (the chosen context and target tokens of every copy). `one_row_at_a_time` then
recomputes every copy's per-token (and per-channel) losses on its own: the teacher and the
student on that copy's batch row alone, the chosen tokens picked by their ids, the predictor on
one row, the smooth-L1 written out. No code of featnorm.plotting is used.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from featnorm.batch import PackedBatch
from featnorm.tokens import COL, REGISTER, ROW, SAMPLE, is_padding, is_patch


@contextlib.contextmanager
def record_predictor_calls(model):
    """Yields a list that fills with one dict per forward of `model`: the batch it got and
    the context and target ids its predictor got."""
    calls: list[dict] = []

    def on_model(_m, args, kwargs):
        calls.append({"batch": args[0] if args else kwargs["batch"]})

    def on_predictor(_m, args, _out):
        calls[-1].update({"ctx_ids": args[1].clone(), "tgt_ids": args[2].clone()})

    hooks = [model.register_forward_pre_hook(on_model, with_kwargs=True),
             model.predictor.register_forward_hook(on_predictor)]
    try:
        yield calls
    finally:
        for h in hooks:
            h.remove()


def _key(ids: torch.Tensor) -> list[tuple[int, int, int, int]]:
    return [tuple(int(v) for v in t[[SAMPLE, REGISTER, ROW, COL]]) for t in ids]


@torch.no_grad()
def one_row_at_a_time(model, batch: PackedBatch, call: dict) -> list[tuple[int, list[tuple[int, int, int, int]], torch.Tensor]]:
    """For every predictor row q of `call`: (batch row, keys of its counted target tokens,
    `(n, D)` per-channel smooth-L1 losses of those tokens)."""
    B, Lc = batch.pixels.shape[0], batch.context_length
    R = call["tgt_ids"].shape[0]
    beta = model.cfg.objective.smooth_l1_beta
    out = []
    for q in range(R):
        b = q % B  # the objective's copies are copy-major
        row = PackedBatch(batch.pixels[b : b + 1], batch.token_ids[b : b + 1], Lc)
        teacher = model.teacher(row.pixels, row.token_ids)[:, Lc:]
        targets = model.target_norm(teacher, is_patch(row.target_ids))[0]
        student = model.student(row.context_pixels, row.context_ids)[0]
        ctx_slot = {k: i for i, k in enumerate(_key(row.context_ids[0])) if k[0] != -100}
        tgt_slot = {k: i for i, k in enumerate(_key(row.target_ids[0])) if k[0] != -100}
        ctx_ids, tgt_ids = call["ctx_ids"][q : q + 1], call["tgt_ids"][q : q + 1]
        ctx = torch.zeros(1, ctx_ids.shape[1], student.shape[-1])
        for j, k in enumerate(_key(ctx_ids[0])):
            if not is_padding(ctx_ids[0, j]):
                ctx[0, j] = student[ctx_slot[k]]
        pred = model.predictor(ctx, ctx_ids, tgt_ids)[0].float()
        keys, losses = [], []
        for j, k in enumerate(_key(tgt_ids[0])):
            if is_patch(tgt_ids[0, j]):
                keys.append(k)
                losses.append(F.smooth_l1_loss(pred[j], targets[tgt_slot[k]], reduction="none", beta=beta))
        out.append((b, keys, torch.stack(losses) if losses else torch.zeros(0, pred.shape[-1])))
    return out
