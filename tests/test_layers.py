"""Layers: DynTanh, norms, RoPE-2D, absolute positions, the packed attention mask, MLP, block."""

import pytest
import torch

from featnorm.config import DynTanhConfig, MoEConfig
from featnorm.layers import (
    AbsolutePositionEmbedding,
    Attention,
    DiffMoE,
    DynTanh,
    RunningNorm,
    RoPE2D,
    apply_rope,
    attention_mask,
    make_attention_mask,
    make_mlp,
    make_norm,
)
from featnorm.tokens import PAD_ID, padding_ids


def _ids(sample, rows, cols, registers=None):
    n = len(sample)
    ids = padding_ids(1, n)
    ids[0, :, 0] = torch.tensor(sample)
    ids[0, :, 1] = torch.tensor(registers if registers is not None else [PAD_ID] * n)
    ids[0, :, 2] = torch.tensor(rows)
    ids[0, :, 3] = torch.tensor(cols)
    return ids


@pytest.mark.parametrize("alpha", ["vector", "scalar"])
@pytest.mark.parametrize("affine", [False, True])
def test_dyntanh_equals_its_formula(alpha, affine):
    torch.manual_seed(0)
    m = DynTanh(8, alpha=alpha, alpha_init=0.5, affine=affine)
    assert m.alpha.shape == ((8,) if alpha == "vector" else (1,))
    assert torch.all(m.alpha == 0.5)
    with torch.no_grad():
        m.alpha.copy_(torch.rand_like(m.alpha) + 0.1)
        if affine:
            m.weight.copy_(torch.randn(8))
            m.bias.copy_(torch.randn(8))
    x = torch.randn(3, 5, 8) * 3
    expected = torch.tanh(m.alpha * x)
    if affine:
        expected = expected * m.weight + m.bias
    else:
        assert m.weight is None and len(list(m.parameters())) == 1
    torch.testing.assert_close(m(x), expected, rtol=0, atol=1e-6)


def test_make_norm_builds_each_kind_with_the_affine_switch():
    assert isinstance(make_norm("layernorm", 4), torch.nn.LayerNorm)
    assert make_norm("layernorm", 4, affine=False).weight is None
    d = make_norm("dyntanh", 4, dyntanh=DynTanhConfig(alpha="scalar", alpha_init=0.7))
    assert d.alpha.shape == (1,) and d.alpha.item() == pytest.approx(0.7) and d.weight is not None
    assert isinstance(make_norm("disabled", 4), torch.nn.Identity)
    with pytest.raises(ValueError, match="unknown norm kind"):
        make_norm("rmsnorm", 4)


def test_running_norm_starts_from_the_first_batch_then_follows_an_ema_of_real_tokens_only():
    torch.manual_seed(0)
    norm = RunningNorm(4, beta=0.75)
    x = torch.randn(2, 6, 4, dtype=torch.float64) * 2 + 1
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    x[1, 4:] = 1e6  # padding must not enter the statistics
    xr = x[mask]
    y = norm(x.float(), mask)
    # first batch: the running values are this batch's mean and unbiased std
    torch.testing.assert_close(norm.running_mean.double(), xr.mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(norm.running_std.double(), xr.std(0, unbiased=True), atol=1e-5, rtol=0)
    torch.testing.assert_close(y[mask].double(), (xr - xr.mean(0)) / xr.std(0), atol=1e-4, rtol=0)
    x2 = torch.randn(2, 6, 4, dtype=torch.float64) * 3 - 2
    x2r = x2[mask]
    y2 = norm(x2.float(), mask)
    mean = 0.75 * xr.mean(0) + 0.25 * x2r.mean(0)
    std = 0.75 * xr.std(0) + 0.25 * x2r.std(0)
    torch.testing.assert_close(norm.running_mean.double(), mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(norm.running_std.double(), std, atol=1e-5, rtol=0)
    torch.testing.assert_close(y2.double(), (x2 - mean) / std, atol=1e-4, rtol=1e-5)  # running values, in training too
    norm.eval()
    before = norm.running_mean.clone()
    norm(x, mask)
    assert torch.equal(norm.running_mean, before)


def test_running_norm_singleton_uses_one_scalar_over_tokens_and_channels_and_clamps_the_std():
    norm = RunningNorm(3, per_channel=False, eps=1e-5)
    x = torch.randn(1, 5, 3, dtype=torch.float64)
    mask = torch.ones(1, 5, dtype=torch.bool)
    norm(x.float(), mask)
    assert norm.running_mean.shape == (1,)
    torch.testing.assert_close(norm.running_mean.double(), x.mean().reshape(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(norm.running_std.double(), x.std().reshape(1), atol=1e-6, rtol=0)
    const = torch.full((1, 5, 3), 2.0)
    fresh = RunningNorm(3, per_channel=False, eps=1e-5)
    assert torch.isfinite(fresh(const, mask)).all()  # std 0 clamped at eps


def test_rope_does_not_rotate_registers_or_padding():
    rope = RoPE2D(8)
    ids = _ids([0, 0, 0, PAD_ID], [3, PAD_ID, 0, PAD_ID], [5, PAD_ID, 0, PAD_ID], [PAD_ID, 0, PAD_ID, PAD_ID])
    cos, sin = rope.tables(ids)
    assert cos.shape == (1, 1, 4, 8)
    x = torch.randn(1, 2, 4, 8)
    y = apply_rope(x, cos, sin)
    torch.testing.assert_close(y[:, :, 1:], x[:, :, 1:])  # register, position (0, 0), padding
    assert not torch.allclose(y[:, :, 0], x[:, :, 0])


def test_rope_rotates_first_half_by_row_and_second_half_by_column():
    rope = RoPE2D(8, base=10000.0)
    ids = _ids([0, 0], [2, 0], [0, 3])
    cos, sin = rope.tables(ids)
    x = torch.randn(1, 1, 2, 8)
    y = apply_rope(x, cos, sin)
    # token 0: only row moves -> column half unchanged; token 1: only column moves
    torch.testing.assert_close(y[0, 0, 0, 4:], x[0, 0, 0, 4:])
    torch.testing.assert_close(y[0, 0, 1, :4], x[0, 0, 1, :4])
    # within the row half, pair (0, 2) rotates by angle row * base^0 = 2 radians
    a = torch.tensor(2.0)
    x0, x2 = x[0, 0, 0, 0], x[0, 0, 0, 2]
    torch.testing.assert_close(y[0, 0, 0, 0], x0 * a.cos() - x2 * a.sin())
    torch.testing.assert_close(y[0, 0, 0, 2], x2 * a.cos() + x0 * a.sin())
    # norms are preserved (a rotation)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))


def test_rope_scores_depend_only_on_relative_positions():
    torch.manual_seed(0)
    rope = RoPE2D(16)
    q, k = torch.randn(1, 1, 3, 16), torch.randn(1, 1, 3, 16)

    def scores(rows, cols):
        cos, sin = rope.tables(_ids([0, 0, 0], rows, cols))
        return apply_rope(q, cos, sin) @ apply_rope(k, cos, sin).transpose(-1, -2)

    torch.testing.assert_close(scores([0, 1, 4], [2, 0, 3]), scores([7, 8, 11], [5, 3, 6]), atol=1e-5, rtol=1e-5)


def test_absolute_positions_are_row_plus_column_and_zero_on_registers_and_padding():
    torch.manual_seed(0)
    pe = AbsolutePositionEmbedding(6, max_grid_size=8)
    ids = _ids([0, 0, PAD_ID], [2, PAD_ID, PAD_ID], [5, PAD_ID, PAD_ID], [PAD_ID, 0, PAD_ID])
    out = pe(ids)
    torch.testing.assert_close(out[0, 0], pe.row[2] + pe.col[5])
    assert torch.all(out[0, 1:] == 0)
    with pytest.raises(ValueError, match="max_grid_size"):
        pe(_ids([0], [8], [0]))


def test_attention_mask_keeps_samples_apart_and_padding_to_itself():
    ids = _ids([0, 1, 0, PAD_ID, PAD_ID], [0] * 5, [0] * 5)
    m = attention_mask(ids)[0, 0]
    expected = torch.tensor(
        [
            [1, 0, 1, 0, 0],
            [0, 1, 0, 0, 0],
            [1, 0, 1, 0, 0],
            [0, 0, 0, 1, 0],
            [0, 0, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(m, expected)


@pytest.mark.parametrize("qk_norm", ["layernorm", "dyntanh"])
def test_attention_ignores_other_samples_and_padding_and_gives_no_nan(qk_norm):
    torch.manual_seed(0)
    attn = Attention(16, 2, qk_norm=qk_norm)
    assert attn.qkv.bias is None and attn.proj.bias is None
    ids = _ids([0, 1, 0, PAD_ID], [0, 0, 1, PAD_ID], [0, 1, 1, PAD_ID])
    rope = RoPE2D(8).tables(ids)
    x = torch.randn(1, 4, 16)
    y = attn(x, attention_mask(ids), rope)
    assert torch.isfinite(y).all()
    x2 = x.clone()
    x2[0, 1] = torch.randn(16) * 100  # the other image
    x2[0, 3] = torch.randn(16) * 100  # padding
    y2 = attn(x2, attention_mask(ids), rope)
    torch.testing.assert_close(y2[0, [0, 2]], y[0, [0, 2]], atol=1e-6, rtol=0)


def _random_rows(g, B=3, L=37, images=4):
    """`(B, L, 4)` ids of rows holding up to `images` images each in random order, then padding."""
    ids = padding_ids(B, L)
    for b in range(B):
        n = int(torch.randint(L // 2, L + 1, (1,), generator=g))
        ids[b, :n, 0] = torch.randint(0, images, (n,), generator=g) + 10 * b
        ids[b, :n, 2] = torch.randint(0, 8, (n,), generator=g)
        ids[b, :n, 3] = torch.randint(0, 8, (n,), generator=g)
    return ids


@pytest.mark.parametrize("qk_norm", ["layernorm", "dyntanh"])
def test_flex_attention_equals_sdpa_on_packed_rows_with_padding(qk_norm):
    g = torch.Generator().manual_seed(0)
    attn = Attention(32, 4, qk_norm=qk_norm)
    ids = _random_rows(g)
    x = torch.randn(ids.shape[0], ids.shape[1], 32, generator=g)
    rope = RoPE2D(8).tables(ids)
    with torch.no_grad():
        dense = attn(x, make_attention_mask(ids, "sdpa"), rope)
        flex = attn(x, make_attention_mask(ids, "flex"), rope)
        # a padding token attends only to itself: its output is proj(v of itself)
        v = attn.qkv(x)[..., 64:]
        own = attn.proj(v)
    assert torch.isfinite(flex).all()
    assert (flex - dense).abs().max() <= 1e-5
    pad = ids[..., 0] == PAD_ID
    assert pad.any()
    assert (flex[pad] - own[pad]).abs().max() <= 1e-5


def test_flex_attention_under_bf16_autocast_matches_sdpa_to_bf16_precision():
    g = torch.Generator().manual_seed(1)
    attn = Attention(32, 4)
    ids = _random_rows(g)
    x = torch.randn(ids.shape[0], ids.shape[1], 32, generator=g)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        dense = attn(x, make_attention_mask(ids, "sdpa"))
        flex = attn(x, make_attention_mask(ids, "flex"))
    assert flex.dtype == dense.dtype == torch.bfloat16
    assert (flex.float() - dense.float()).abs().max() <= 0.05 * dense.float().abs().max()


def test_flex_attention_refuses_to_train_on_the_cpu_with_a_clear_error():
    attn = Attention(16, 2)
    ids = _ids([0, 0, 1, PAD_ID], [0, 1, 0, PAD_ID], [0, 0, 0, PAD_ID])
    with pytest.raises(RuntimeError, match="attention_backend = flex cannot train on the CPU"):
        attn(torch.randn(1, 4, 16), make_attention_mask(ids, "flex"))
    with pytest.raises(ValueError, match="not one of"):
        make_attention_mask(ids, "flash")


def test_mlp_is_ratio_four_tanh_gelu_and_moe_config_builds_a_diffmoe():
    torch.manual_seed(0)
    mlp = make_mlp(8, 4.0)
    assert mlp.fc1.out_features == 32
    x = torch.randn(2, 8)
    h = torch.nn.functional.gelu(mlp.fc1(x), approximate="tanh")
    torch.testing.assert_close(mlp(x), mlp.fc2(h))
    moe = make_mlp(8, 4.0, MoEConfig(num_experts=16, capacity=0.5), "model.encoder")
    assert isinstance(moe, DiffMoE) and moe.num_experts == 16 and moe.w1.shape == (16, 8, 32)
