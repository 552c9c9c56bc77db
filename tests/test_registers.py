"""Registers through the predictor: the encoder's registers reach every predictor copy (never
sampled away), pass or wipe, learned predictor registers per image, never in the loss."""

import pytest
import torch

from featnorm.batch import PackedBatch
from featnorm.config import EncoderConfig, ModelConfig, ObjectiveConfig, PredictorConfig
from featnorm.ijepa import IJEPA
from featnorm.models import Predictor
from featnorm.tokens import PAD_ID, is_patch, is_register, padding_ids

ENC_REGISTERS = 3  # one register window of 4 slots per image


def _cfg(num_registers=0, encoder_registers="pass", **objective):
    return ModelConfig(
        patch_size=2,
        encoder=EncoderConfig(dim=16, depth=1, num_heads=2, num_registers=ENC_REGISTERS),
        predictor=PredictorConfig(dim=16, depth=1, num_heads=2, num_registers=num_registers, encoder_registers=encoder_registers),
        objective=ObjectiveConfig(**objective),
    )


@pytest.fixture
def batch(make_image, make_batch):
    a = make_image(0, 6, 6, 3, num_registers=ENC_REGISTERS, seed=1)
    b = make_image(1, 4, 4, 1, num_registers=ENC_REGISTERS, seed=2)
    c = make_image(2, 8, 6, 5, num_registers=ENC_REGISTERS, seed=3)
    return make_batch([[a, b], [c]], 32, 40)


def _capture_predictor_inputs(model):
    seen = {}

    def hook(module, args):
        seen["context"], seen["context_ids"], seen["target_ids"] = (a.detach().clone() for a in args)

    model.predictor.register_forward_pre_hook(hook)
    return seen


def _register_keys(ids):
    """Set of (sample, register) of the register tokens in `(L, 4)` ids (asserting no duplicates)."""
    keys = [tuple(t) for t in ids[is_register(ids)][:, :2].tolist()]
    assert len(keys) == len(set(keys))
    return set(keys)


@pytest.mark.parametrize("with_replacement", [True, False])
def test_every_predictor_copy_gets_every_encoder_register_of_its_row_once(batch, with_replacement):
    torch.manual_seed(0)
    model = IJEPA(_cfg(batch_repeat=4, context_capacity=0.25, target_capacity=0.25,
                       context_with_replacement=with_replacement, target_with_replacement=with_replacement))
    seen = _capture_predictor_inputs(model)
    model(batch, torch.Generator().manual_seed(0))
    B = batch.pixels.shape[0]
    student = model.student(batch.context_pixels, batch.context_ids).detach()
    for row in range(4 * B):
        b = row % B
        expected = _register_keys(batch.context_ids[b])
        assert _register_keys(seen["context_ids"][row]) == expected
        # with their student features, unchanged
        reg = is_register(seen["context_ids"][row])
        src = is_register(batch.context_ids[b])
        torch.testing.assert_close(seen["context"][row][reg], student[b][src])
    # register windows are drawn last, like padding: copies take patch windows first
    patches = is_patch(seen["context_ids"]).view(4, B, -1, 4).all(-1).sum(-1)  # (copy, row)
    if with_replacement:
        assert torch.all(patches == 2)  # floor(0.25 x 8 windows) each; rows hold 4 and 5 patch windows
    else:
        assert patches.sum(0).tolist() == [4, 5]  # disjoint draws take every patch window before any other


def test_registers_never_count_in_the_loss(batch):
    torch.manual_seed(0)
    model = IJEPA(_cfg(num_registers=2, batch_repeat=2, target_capacity=0.5))
    seen = _capture_predictor_inputs(model)
    out = model(batch, torch.Generator().manual_seed(0))
    assert out.token_losses.shape[1] == seen["target_ids"].shape[1]  # predictions only for target slots
    assert torch.equal(out.token_mask, is_patch(seen["target_ids"]))
    torch.testing.assert_close(out.loss.detach(), out.token_losses[out.token_mask].mean())
    # a register placed among the targets does not count and does not move the loss
    Lc = batch.context_length
    ids = batch.token_ids.clone()
    slot = Lc + int((ids[1, Lc:, 0] == PAD_ID).nonzero()[0, 0])
    ids[1, slot, :2] = torch.tensor([2, 0])
    moved = PackedBatch(batch.pixels, ids, Lc)
    out_a = model(moved, torch.Generator().manual_seed(1), predict_all_targets=True)
    assert not out_a.token_mask[1, slot - Lc]
    pixels = batch.pixels.clone()
    pixels[1, slot] = torch.randn(pixels.shape[-1]) * 30
    out_b = model(PackedBatch(pixels, ids, Lc), torch.Generator().manual_seed(1), predict_all_targets=True)
    torch.testing.assert_close(out_b.loss, out_a.loss)


def _row(make_image):
    """A predictor row: [A ctx with 3 registers, B ctx with 3 registers] [A tgt, B tgt, pad]."""
    a = make_image(0, 4, 4, 2, num_registers=ENC_REGISTERS, seed=1)
    b = make_image(1, 4, 4, 1, num_registers=ENC_REGISTERS, seed=2)
    ctx_ids = torch.cat((a[0], b[0]))[None]
    tgt_ids = torch.cat((a[2], b[2], padding_ids(4)))[None]
    return torch.randn(1, ctx_ids.shape[1], 24), ctx_ids, tgt_ids


@pytest.mark.parametrize("mode", ["pass", "wipe"])
def test_wipe_turns_encoder_registers_into_padding_and_pass_keeps_them(make_image, mode):
    torch.manual_seed(0)
    pred = Predictor(PredictorConfig(dim=16, depth=1, num_heads=2, encoder_registers=mode), 24)
    ctx, ctx_ids, tgt_ids = _row(make_image)
    x, ids = pred.prepare(ctx, ctx_ids, tgt_ids)
    Lc = ctx_ids.shape[1]
    reg = is_register(ctx_ids[0])
    if mode == "pass":
        assert torch.equal(ids[0, :Lc], ctx_ids[0])
        torch.testing.assert_close(x[0, :Lc][reg], pred.embed(ctx)[0][reg])
    else:
        assert torch.all(ids[0, :Lc][reg] == PAD_ID)
        assert torch.equal(ids[0, :Lc][~reg], ctx_ids[0][~reg])
    # the encoder registers' features reach the predictions only when passed
    ctx2 = ctx.clone()
    ctx2[0, reg] = torch.randn(int(reg.sum()), 24) * 10
    with torch.no_grad():
        diff = (pred(ctx, ctx_ids, tgt_ids) - pred(ctx2, ctx_ids, tgt_ids)).abs().max()
    assert (diff > 1e-4) == (mode == "pass")


def test_predictor_registers_are_learned_and_given_to_each_image_present_in_the_row(make_image):
    torch.manual_seed(0)
    pred = Predictor(PredictorConfig(dim=16, depth=1, num_heads=2, num_registers=2), 24)
    ctx, ctx_ids, tgt_ids = _row(make_image)
    # a second row holding image 2 only (no registers from the encoder)
    c = make_image(2, 4, 4, 1, seed=3)
    ctx_ids = torch.cat((ctx_ids, torch.cat((c[0], padding_ids(ctx_ids.shape[1] - len(c[0]))))[None]))
    tgt_ids = torch.cat((tgt_ids, torch.cat((c[2], padding_ids(tgt_ids.shape[1] - len(c[2]))))[None]))
    ctx = torch.randn(2, ctx_ids.shape[1], 24)
    x, ids = pred.prepare(ctx, ctx_ids, tgt_ids)
    R = ids.shape[1] - ctx_ids.shape[1] - tgt_ids.shape[1]
    assert R == 2 * 2  # two images in the first row, two registers each
    assert ids[0, :R, :2].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert ids[1, :R, :2].tolist() == [[2, 0], [2, 1], [PAD_ID, PAD_ID], [PAD_ID, PAD_ID]]
    assert torch.all(ids[:, :R, 2:] == PAD_ID)  # registers have no position
    torch.testing.assert_close(x[0, :R], pred.registers.repeat(2, 1))
    torch.testing.assert_close(x[1, :2], pred.registers)
    assert torch.all(x[1, 2:R] == 0)
    out = pred(ctx, ctx_ids, tgt_ids)
    assert out.shape == (2, tgt_ids.shape[1], 24)
    out[is_patch(tgt_ids)].square().sum().backward()
    assert pred.registers.grad is not None and pred.registers.grad.abs().sum() > 0


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
def test_predictor_rows_mixing_images_match_separate_rows_with_registers(make_image, backend):
    torch.manual_seed(0)
    pred = Predictor(PredictorConfig(dim=16, depth=2, num_heads=2, num_registers=2), 24, attention_backend=backend).eval()
    ctx, ctx_ids, tgt_ids = _row(make_image)
    na_ctx = 4 + 8  # register window + 2 context windows of image A
    na_tgt = int((tgt_ids[0, :, 0] == 0).sum())
    with torch.no_grad():
        mixed = pred(ctx, ctx_ids, tgt_ids)
        alone = pred(ctx[:, :na_ctx], ctx_ids[:, :na_ctx], tgt_ids[:, :na_tgt])
    assert (mixed[0, :na_tgt] - alone[0]).abs().max() <= 1e-5
