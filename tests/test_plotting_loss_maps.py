"""Loss maps: the random splits follow the training rule, and the batched, accumulated map
equals the mean over masks (and, in the training forward, over copies) of each position's token
loss computed one mask (one predictor row) at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featnorm.ijepa import IJEPA
from featnorm.plotting.image_sources import patchify
from featnorm.plotting.loss_maps import (
    accumulate_token_losses,
    compute_loss_map,
    draw_mask_rows,
    mask_layout,
)
from featnorm.plotting.predicted_tokens import predicted_tokens, row_loss_stats
from featnorm.plotting.synthetic_runs import synthetic_image, tiny_config
from featnorm.tokens import COL, PAD_ID, REGISTER, ROW, SAMPLE, is_patch
from predictor_reference import one_row_at_a_time, record_predictor_calls


def test_mask_rows_are_window_splits_within_the_training_bounds():
    cfg = tiny_config("t", num_registers=1)
    image = synthetic_image(64, 0)
    pixels, _, _ = patchify(image, 8)
    layout = mask_layout(cfg, 8, 8)
    assert (layout.lo, layout.hi) == (4, 8)  # 16 windows: round(16 * 0.25) .. round(16 * 0.5)
    assert layout.context_length == 32 + 4  # one register, padded to a whole window
    batch = draw_mask_rows(pixels, layout, 50, np.random.default_rng(0))
    ids = batch.token_ids
    n_ctx_seen = set()
    for b in range(ids.shape[0]):
        ctx, tgt = ids[b, : layout.context_length], ids[b, layout.context_length :]
        # register slot first: register 0 of sample 0, then 3 padding slots
        assert ctx[0, REGISTER] == 0 and ctx[0, SAMPLE] == 0 and ctx[0, ROW] == PAD_ID
        assert (ctx[1:4] == PAD_ID).all()
        c_pos = {(int(r), int(c)) for r, c in ctx[is_patch(ctx)][:, [ROW, COL]]}
        t_pos = {(int(r), int(c)) for r, c in tgt[is_patch(tgt)][:, [ROW, COL]]}
        assert not c_pos & t_pos and len(c_pos | t_pos) == 64
        assert len(c_pos) % 4 == 0 and layout.lo <= len(c_pos) // 4 <= layout.hi
        n_ctx_seen.add(len(c_pos) // 4)
        # window-contiguous: every aligned group of 4 real tokens is one 2x2 window
        for seg in (ctx[4:], tgt):
            for w in seg.view(-1, 4, 4):
                if (w[:, SAMPLE] == PAD_ID).all():
                    continue
                assert (w[:, ROW] // 2).unique().numel() == 1 and (w[:, COL] // 2).unique().numel() == 1
                assert {(int(r) % 2, int(c) % 2) for r, c in w[:, [ROW, COL]]} == {(0, 0), (0, 1), (1, 0), (1, 1)}
        # each real token carries its own patch's pixels; padding and registers carry zeros
        real = is_patch(ids[b])
        flat = ids[b, real, ROW] * 8 + ids[b, real, COL]
        assert torch.equal(batch.pixels[b, real], pixels[flat])
        assert (batch.pixels[b, ~real] == 0).all()
    assert len(n_ctx_seen) > 2  # the number of context windows is drawn, not fixed


def test_images_larger_than_the_training_rows_keep_the_split_ratios():
    cfg = tiny_config("t")  # rows of 32 + 48 tokens: sized for 64 px images (16 windows)
    layout = mask_layout(cfg, 16, 16)  # a 128 px image: 64 windows
    assert not layout.fits_training_rows
    assert (layout.lo, layout.hi) == (16, 32)
    assert (layout.context_length, layout.target_length) == (32 * 4, 48 * 4)
    assert mask_layout(cfg, 8, 8).fits_training_rows
    torch.manual_seed(0)
    lm = compute_loss_map(IJEPA(cfg.model).eval(), cfg, synthetic_image(128, 1), 6, 6)
    assert lm.count.sum() > 0 and lm.mean.shape == (16, 16)


def test_accumulate_averages_each_position_over_the_masks_where_it_was_a_target():
    # two rows over a 1 x 2 grid: position 0 is a target twice (losses 1, 3), position 1 once (5)
    ids = torch.full((2, 2, 4), PAD_ID)
    ids[0, 0] = torch.tensor([0, PAD_ID, 0, 0])
    ids[0, 1] = torch.tensor([0, PAD_ID, 0, 1])
    ids[1, 0] = torch.tensor([0, PAD_ID, 0, 0])
    losses = torch.tensor([[1.0, 5.0], [3.0, 99.0]])  # 99 sits on padding and must not count
    sums, counts = torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    kept = accumulate_token_losses(losses, ids, 2, sums, counts)
    assert torch.equal(counts, torch.tensor([2.0, 1.0], dtype=torch.float64))
    assert torch.allclose(sums / counts, torch.tensor([2.0, 5.0], dtype=torch.float64))
    assert sorted(kept.tolist()) == [1.0, 3.0, 5.0]


@pytest.mark.parametrize("out_norm,target_norm,registers",
                         [("dyntanh", "disabled", 0), ("layernorm", "layernorm", 0), ("dyntanh", "disabled", 2)])
def test_predict_all_loss_map_equals_mean_over_masks_of_single_mask_losses(out_norm, target_norm, registers):
    cfg = tiny_config("t", out_norm=out_norm, target_norm=target_norm, num_registers=registers)
    torch.manual_seed(0)
    model = IJEPA(cfg.model).eval()
    image = synthetic_image(64, 3)
    num_masks, batch_size, seed = 23, 8, 7  # 23 = 8 + 8 + 7: a short last batch too
    lm = compute_loss_map(model, cfg, image, num_masks, batch_size, seed, keep_token_losses=True,
                          forward="predict-all")

    # direct: the same masks (same seed, same draws), each row through the model on its own
    pixels, _, _ = patchify(image, 8)
    layout = mask_layout(cfg, 8, 8)
    rng = np.random.default_rng(seed)
    per_position: dict[tuple[int, int], list[float]] = {}
    all_losses = []
    done = 0
    with torch.no_grad():
        while done < num_masks:
            b = min(batch_size, num_masks - done)
            batch = draw_mask_rows(pixels, layout, b, rng)
            for row in range(b):
                single = type(batch)(batch.pixels[row : row + 1], batch.token_ids[row : row + 1], batch.context_length)
                out = model(single, predict_all_targets=True)
                tgt = single.target_ids[0]
                for j in range(tgt.shape[0]):
                    if tgt[j, SAMPLE] == PAD_ID:
                        continue
                    loss = float(out.token_losses[0, j])
                    per_position.setdefault((int(tgt[j, ROW]), int(tgt[j, COL])), []).append(loss)
                    all_losses.append(loss)
            done += b
    expected = np.full((8, 8), np.nan)
    counts = np.zeros((8, 8))
    for (r, c), values in per_position.items():
        expected[r, c] = np.mean(values)
        counts[r, c] = len(values)
    np.testing.assert_array_equal(lm.count, counts)
    np.testing.assert_allclose(lm.mean, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.sort(lm.token_losses), np.sort(all_losses), rtol=1e-5, atol=1e-7)
    assert lm.count.sum() == len(all_losses) and np.isfinite(lm.mean).any()


@pytest.mark.parametrize("out_norm,target_norm,registers",
                         [("dyntanh", "disabled", 0), ("layernorm", "layernorm", 0), ("dyntanh", "disabled", 2)])
def test_training_forward_loss_map_equals_mean_over_masks_and_copies_of_one_row_at_a_time(out_norm, target_norm,
                                                                                           registers):
    cfg = tiny_config("t", out_norm=out_norm, target_norm=target_norm, num_registers=registers)
    torch.manual_seed(0)
    model = IJEPA(cfg.model).eval()
    image = synthetic_image(64, 3)
    num_masks, batch_size, seed = 11, 4, 5  # 4 + 4 + 3
    with record_predictor_calls(model) as calls:
        lm = compute_loss_map(model, cfg, image, num_masks, batch_size, seed, keep_token_losses=True)
    assert len(calls) == 3

    # the same masks (same seed), every predictor row recomputed on its own
    pixels, _, _ = patchify(image, 8)
    layout = mask_layout(cfg, 8, 8)
    rng = np.random.default_rng(seed)
    per_position: dict[tuple[int, int], list[float]] = {}
    row_means, row_vars = [], []
    done = 0
    for call in calls:
        b = min(batch_size, num_masks - done)
        batch = draw_mask_rows(pixels, layout, b, rng)
        assert call["tgt_ids"].shape[0] == cfg.model.objective.batch_repeat * b
        for _, keys, losses in one_row_at_a_time(model, batch, call):
            token = losses.mean(-1).double()
            for (_, _, r, c), v in zip(keys, token.tolist()):
                per_position.setdefault((r, c), []).append(v)
            row_means.append(float(token.mean()))
            row_vars.append(float(token.var()))
        done += b
    expected = np.full((8, 8), np.nan)
    counts = np.zeros((8, 8))
    for (r, c), values in per_position.items():
        expected[r, c] = np.mean(values)
        counts[r, c] = len(values)
    np.testing.assert_array_equal(lm.count, counts)
    np.testing.assert_allclose(lm.mean, expected, rtol=1e-4, atol=1e-6)
    assert lm.sample_mean == pytest.approx(np.mean(row_means), rel=1e-4)
    assert lm.sample_var == pytest.approx(np.mean(row_vars), rel=1e-3)
    # 4 copies per mask, each predicting floor(0.25 x 12) = 3 of the segment's 12 target windows (all real)
    kt = int(0.25 * layout.target_length // 4)
    assert lm.count.sum() == num_masks * cfg.model.objective.batch_repeat * kt * 4 == len(lm.token_losses)


def test_training_and_predict_all_forwards_differ_and_predict_all_counts_every_target():
    cfg = tiny_config("t")
    torch.manual_seed(0)
    model = IJEPA(cfg.model).eval()
    image = synthetic_image(64, 4)
    train = compute_loss_map(model, cfg, image, 8, 8, 0)
    every = compute_loss_map(model, cfg, image, 8, 8, 0, forward="predict-all")
    layout = mask_layout(cfg, 8, 8)
    batch = draw_mask_rows(patchify(image, 8)[0], layout, 8, np.random.default_rng(0))
    assert every.count.sum() == int(is_patch(batch.target_ids).sum())
    assert train.count.sum() == 8 * 4 * 3 * 4
    assert not np.allclose(np.nan_to_num(train.mean), np.nan_to_num(every.mean))
    with pytest.raises(ValueError, match="'decoder'"):
        compute_loss_map(model, cfg, image, 2, 2, 0, forward="decoder")


def test_per_channel_losses_average_to_the_token_losses_and_match_one_row_at_a_time():
    cfg = tiny_config("t", out_norm="layernorm", target_norm="layernorm")
    torch.manual_seed(1)
    model = IJEPA(cfg.model).eval()
    layout = mask_layout(cfg, 8, 8)
    batch = draw_mask_rows(patchify(synthetic_image(64, 5), 8)[0], layout, 3, np.random.default_rng(2))
    with record_predictor_calls(model) as calls:
        pred = predicted_tokens(model, batch, "training", torch.Generator().manual_seed(0), channel_losses=True)
    assert pred.copies == 4 and pred.channel_losses.shape == (12, pred.target_ids.shape[1], 32)
    torch.testing.assert_close(pred.channel_losses.mean(-1) * pred.token_mask, pred.token_losses)
    direct = one_row_at_a_time(model, batch, calls[0])
    for q, (b, keys, losses) in enumerate(direct):
        assert b == q % 3
        mine = pred.channel_losses[q][pred.token_mask[q]]
        torch.testing.assert_close(mine, losses, rtol=1e-4, atol=1e-6)
    means, variances = row_loss_stats(pred)
    ref = torch.stack([(pred.token_losses[q][pred.token_mask[q]]).double().var() for q in range(12)])
    torch.testing.assert_close(variances, ref)


def test_predicted_tokens_find_their_targets_by_id_also_registers_and_whole_rows():
    from featnorm.plotting.predicted_tokens import _targets_of_predicted

    # two packed rows, each: sample s's 2 registers, then 2 x 3 patches of sample s and 1 patch of s + 1
    rows = []
    for b in range(2):
        ids = [[2 * b, r, PAD_ID, PAD_ID] for r in range(2)]
        ids += [[2 * b, PAD_ID, y, x] for y in range(2) for x in range(3)]
        ids += [[2 * b + 1, PAD_ID, 0, 0], [PAD_ID] * 4]
        rows.append(ids)
    seg = torch.tensor(rows)  # (2, 10, 4): the whole row's slots
    targets = torch.randn(2, 10, 5, generator=torch.Generator().manual_seed(0))
    # 3 copies of each row (copy-major), each asking for a shuffled subset of its row's tokens
    g = torch.Generator().manual_seed(1)
    pred_rows, expected = [], []
    for j in range(3):
        for b in range(2):
            pick = torch.randperm(10, generator=g)[:6]
            pred_rows.append(seg[b, pick])
            expected.append(targets[b, pick] * (seg[b, pick, SAMPLE] != PAD_ID)[:, None])
    got = _targets_of_predicted(targets, seg, torch.stack(pred_rows), copies=3)
    torch.testing.assert_close(got, torch.stack(expected))
