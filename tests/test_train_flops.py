"""FLOP accounting (featnorm.train.flops): the count from a packed batch's token counts equals
torch's FlopCounterMode on each image run alone (dense, no padding, no mask), the
independent reference of what block-diagonal attention over packed rows should cost."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from featnorm.config import EncoderConfig, ModelConfig, MoEConfig, PredictorConfig
from featnorm.layers import DiffMoE
from featnorm.models import Encoder, Predictor
from featnorm.tokens import PAD_ID, SAMPLE, is_patch, padding_ids
from featnorm.train.flops import TokenCounts, encoder_counts, forward_flops, step_flops

PATCH_DIM = 12
NONE = TokenCounts(0.0, 0.0, 0.0, 0.0)


def counted(fn) -> int:
    """FLOPs torch counts for `fn()` (sdpa on its math path, which FlopCounterMode sees)."""
    with FlopCounterMode(display=False) as fc, sdpa_kernel(SDPBackend.MATH):
        fn()
    return fc.get_total_flops()


def _encoder_batch(make_image, make_batch):
    """Two rows: images 0 (4x6 patches) and 1 (4x4) in one, 2 (6x4) in the other, 2 registers each."""
    rows = [[make_image(0, 4, 6, 2, num_registers=2, seed=1), make_image(1, 4, 4, 1, num_registers=2, seed=2)],
            [make_image(2, 6, 4, 3, num_registers=2, seed=3)]]
    return make_batch(rows, 32, 40, patch_dim=PATCH_DIM)


def _alone(pixels, ids):
    """[(pixels (1, n, D), ids (1, n, 4))] for each image of a `(B, L, ...)` batch, without padding."""
    out = []
    for b in range(ids.shape[0]):
        for s in ids[b, :, SAMPLE].unique():
            if s == PAD_ID:
                continue
            keep = ids[b, :, SAMPLE] == s
            out.append((pixels[b, keep][None], ids[b, keep][None]))
    return out


def test_encoder_counts_are_real_tokens_and_same_image_pairs(make_image, make_batch):
    batch = _encoder_batch(make_image, make_batch)
    c = encoder_counts(batch.token_ids)
    sizes = [24 + 4, 16 + 4, 24 + 4]  # patches + a register window (2 registers, 2 padding slots)
    real = [n - 2 for n in sizes]
    assert c.tokens == sum(real) and c.pairs == sum(n * n for n in real)
    assert c.input_tokens == 24 + 16 + 24 and c.slots == 2 * 72


@pytest.mark.parametrize("pos_embed", ["rope", "absolute"])
def test_teacher_and_student_flops_equal_the_flop_counter_on_each_image_alone(make_image, make_batch, pos_embed):
    torch.manual_seed(0)
    cfg = EncoderConfig(dim=32, depth=2, num_heads=2, num_registers=2, pos_embed=pos_embed)
    enc = Encoder(cfg, PATCH_DIM)
    batch = _encoder_batch(make_image, make_batch)
    model = ModelConfig(patch_size=2, encoder=cfg)
    assert model.patch_dim == PATCH_DIM

    # The encoder multiplies register slots by the patch embedding too and then discards
    # them (torch.where); model FLOPs count the patch embedding on patches only.
    def discarded(ids):
        return 2 * PATCH_DIM * cfg.dim * int((~is_patch(ids) & (ids[..., SAMPLE] != PAD_ID)).sum())

    teacher_ref = 0
    with torch.no_grad():
        for pix, ids in _alone(batch.pixels, batch.token_ids):
            teacher_ref += counted(lambda: enc(pix, ids)) - discarded(ids)
    student_ref = 0
    for pix, ids in _alone(batch.context_pixels, batch.context_ids):
        student_ref += counted(lambda: enc(pix, ids).square().sum().backward()) - 2 * discarded(ids)  # fwd + weight grad

    f = step_flops(model, encoder_counts(batch.token_ids), encoder_counts(batch.context_ids), NONE)
    assert f["teacher"] == pytest.approx(teacher_ref, rel=1e-12)
    assert f["student"] == pytest.approx(student_ref, rel=1e-12)
    # packing saves nothing on attention: the packed rows' dense attention would cost more
    assert f["attention"] < counted(lambda: enc(batch.pixels, batch.token_ids).detach())


@pytest.mark.parametrize("registers, encoder_registers", [(0, "pass"), (2, "pass"), (2, "wipe")])
def test_predictor_flops_equal_the_flop_counter_on_each_image_alone(make_image, registers, encoder_registers):
    torch.manual_seed(0)
    enc_dim = 24
    cfg = PredictorConfig(dim=16, depth=2, num_heads=2, num_registers=registers, encoder_registers=encoder_registers)
    pred = Predictor(cfg, enc_dim)
    images = [make_image(i, 4, 4, 1 + i % 2, num_registers=1, seed=i) for i in range(3)]
    # row 0: images 0 and 1 (context and targets), row 1: image 2 (context) and image 0 again (targets only)
    ctx_ids, tgt_ids = padding_ids(2, 24), padding_ids(2, 28)
    a, b, c = images
    ctx_ids[0, : len(a[0])] = a[0]
    ctx_ids[0, len(a[0]) : len(a[0]) + len(b[0])] = b[0]
    tgt_ids[0, : len(a[2])] = a[2]
    tgt_ids[0, len(a[2]) : len(a[2]) + len(b[2])] = b[2]
    ctx_ids[1, : len(c[0])] = c[0]
    tgt_ids[1, : len(c[2])] = c[2]
    tgt_ids[1, len(c[2]) : len(c[2]) + 8] = a[2][:8]
    ctx = torch.randn(2, 24, enc_dim)

    # the reference: each image of each row alone, forward and backward
    reference = 0
    for r in range(2):
        samples = {int(s) for s in torch.cat((ctx_ids[r, :, SAMPLE], tgt_ids[r, :, SAMPLE])) if s != PAD_ID}
        for s in sorted(samples):
            ck, tk = ctx_ids[r, :, SAMPLE] == s, tgt_ids[r, :, SAMPLE] == s
            ci, x = ctx_ids[r, ck][None], ctx[r, ck][None]
            if encoder_registers == "wipe":
                keep = is_patch(ci[0])
                ci, x = ci[:, keep], x[:, keep]
            ti = tgt_ids[r, tk][None]
            x = x.clone().requires_grad_()
            reference += counted(lambda: pred(x, ci, ti).square().sum().backward())

    work = {k: float(v) for k, v in pred.token_counts(ctx_ids, tgt_ids).items()}
    counts = TokenCounts(work["tokens"], work["pairs"], work["slots"], work["context_tokens"], work["target_tokens"])
    model = ModelConfig(patch_size=2, encoder=EncoderConfig(dim=enc_dim, num_heads=2), predictor=cfg)
    assert step_flops(model, NONE, NONE, counts)["predictor"] == pytest.approx(reference, rel=1e-12)


@pytest.mark.parametrize("registers, encoder_registers", [(0, "pass"), (3, "pass"), (3, "wipe")])
def test_predictor_token_counts_match_the_sequence_it_builds(make_image, registers, encoder_registers):
    """`Predictor.token_counts` (arithmetic, no host sync) against the ids `prepare` really builds."""
    torch.manual_seed(0)
    pred = Predictor(PredictorConfig(dim=16, depth=1, num_heads=2, num_registers=registers, encoder_registers=encoder_registers), 24)
    a, b = make_image(0, 4, 4, 2, num_registers=1, seed=1), make_image(1, 4, 6, 3, num_registers=1, seed=2)
    ctx_ids, tgt_ids = padding_ids(3, 32), padding_ids(3, 32)
    ctx_ids[0, : len(a[0])], tgt_ids[0, : len(a[2])] = a[0], a[2]
    ctx_ids[1, : len(a[0])], ctx_ids[1, len(a[0]) : len(a[0]) + len(b[0])] = a[0], b[0]
    tgt_ids[1, :8] = b[2][:8]
    ctx_ids[2, :4] = b[0][:4]  # row 2: only image b's register window, no patch at all
    work = pred.token_counts(ctx_ids, tgt_ids)
    _, ids = pred.prepare(torch.zeros(3, 32, 24), ctx_ids, tgt_ids)
    direct = encoder_counts(ids)
    assert float(work["tokens"]) == direct.tokens
    assert float(work["pairs"]) == direct.pairs
    assert float(work["slots"]) == direct.slots
    assert float(work["context_tokens"]) == float(((ids[:, ids.shape[1] - 64 : ids.shape[1] - 32, SAMPLE]) != PAD_ID).sum())
    assert float(work["target_tokens"]) == float((tgt_ids[..., SAMPLE] != PAD_ID).sum())


def test_diffmoe_mlp_flops_equal_the_flop_counter_in_training_routing():
    torch.manual_seed(0)
    cfg = EncoderConfig(dim=32, depth=1, num_heads=2, moe=MoEConfig(num_experts=4, capacity=0.5))
    moe = DiffMoE(32, 128, 4, capacity=0.5).train()
    x, real = torch.randn(3, 10, 32), torch.rand(3, 10) > 0.3
    with torch.no_grad():
        ref = counted(lambda: moe(x, real))
    c = TokenCounts(tokens=float(real.sum()), pairs=0.0, slots=30.0, input_tokens=0.0)
    assert forward_flops(cfg, c, PATCH_DIM)["mlp"] == ref


def test_paper_step_counts_scale_with_tokens_and_attention_with_squared_image_size():
    m = ModelConfig()
    one = TokenCounts(tokens=320.0, pairs=320.0**2, slots=320.0, input_tokens=320.0)
    f = forward_flops(m.encoder, one, m.patch_dim)
    # per token: qkv + proj (4 D^2) and MLP (8 D^2 at ratio 4), x 2 FLOPs, x 12 blocks
    assert f["linear"] + f["mlp"] == 12 * 2 * 12 * 384**2 * 320
    assert f["attention"] == 12 * 4 * 384 * 320**2
    assert f["input"] == 2 * 768 * 384 * 320
    split = TokenCounts(tokens=320.0, pairs=2 * 160.0**2, slots=320.0, input_tokens=320.0)
    assert forward_flops(m.encoder, split, m.patch_dim)["attention"] == f["attention"] / 2


def test_a_predictor_input_mlp_counts_both_of_its_layers():
    """`predictor.mlp_in` (the reference's input MLP, encoder_dim -> 4 encoder_dim -> dim)."""
    cfg = PredictorConfig(dim=16, depth=1, num_heads=2)
    c = TokenCounts(tokens=10.0, pairs=50.0, slots=12.0, input_tokens=6.0, output_tokens=4.0)
    assert forward_flops(cfg, c, 24, 24)["input"] == 2 * 24 * 16 * 6
    cfg.mlp_in = True  # a field of PredictorConfig where that option exists
    assert forward_flops(cfg, c, 24, 24)["input"] == 2 * (24 * 96 + 96 * 16) * 6
