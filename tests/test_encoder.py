"""Encoder: packed rows behave like separate images, RoPE is shift invariant, depths, registers."""

import pytest
import torch

from featnorm.config import EncoderConfig, ToMeConfig
from featnorm.models import Encoder
from featnorm.tokens import PAD_ID, padding_ids

PATCH_DIM = 12


def tiny(**kw):
    base = dict(dim=32, depth=2, num_heads=2, num_registers=2)
    base.update(kw)
    return EncoderConfig(**base)


def _alone_and_packed(make_image, a_seed=1, b_seed=2):
    """A alone (no padding) and a row [B ctx, A ctx, pad | B tgt, A tgt, pad]; index of A's tokens."""
    a = make_image(0, 4, 6, 2, num_registers=2, seed=a_seed)
    b = make_image(1, 6, 4, 3, num_registers=2, seed=b_seed)
    a_ids, a_pix = torch.cat((a[0], a[2])), torch.cat((a[1], a[3]))
    Lc, Lt = 32, 32
    ids, pix = padding_ids(1, Lc + Lt), torch.zeros(1, Lc + Lt, PATCH_DIM)
    pix[:] = torch.randn(Lc + Lt, PATCH_DIM) * 50  # garbage pixels on padding must not matter
    nbc, nac, nbt, nat = len(b[0]), len(a[0]), len(b[2]), len(a[2])
    ids[0, :nbc], pix[0, :nbc] = b[0], b[1]
    ids[0, nbc : nbc + nac], pix[0, nbc : nbc + nac] = a[0], a[1]
    ids[0, Lc : Lc + nbt], pix[0, Lc : Lc + nbt] = b[2], b[3]
    ids[0, Lc + nbt : Lc + nbt + nat], pix[0, Lc + nbt : Lc + nbt + nat] = a[2], a[3]
    a_index = torch.cat((torch.arange(nbc, nbc + nac), torch.arange(Lc + nbt, Lc + nbt + nat)))
    assert nbc + nac <= Lc and nbt + nat <= Lt
    return (a_pix[None], a_ids[None]), (pix, ids), a_index


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
@pytest.mark.parametrize("pos_embed", ["rope", "absolute"])
@pytest.mark.parametrize("out_norm", ["layernorm", "dyntanh", "batchnorm", "disabled"])
@pytest.mark.parametrize("block_norm", ["layernorm", "dyntanh"])
def test_packed_rows_match_images_encoded_alone(make_image, block_norm, out_norm, pos_embed, backend):
    torch.manual_seed(0)
    cfg = tiny(block_norm=block_norm, qk_norm=block_norm, out_norm=out_norm, pos_embed=pos_embed, out_norm_affine=True)
    enc = Encoder(cfg, PATCH_DIM, attention_backend=backend)
    if out_norm == "batchnorm":
        enc.out_norm.running_mean.normal_()
        enc.out_norm.running_std.uniform_(0.5, 2.0)
    enc.eval()
    (a_pix, a_ids), (pix, ids), a_index = _alone_and_packed(make_image)
    with torch.no_grad():
        alone, alone_h = enc(a_pix, a_ids, return_all_depths=True)
        packed, packed_h = enc(pix, ids, return_all_depths=True)
    assert torch.isfinite(packed).all()
    assert (packed[0, a_index] - alone[0]).abs().max() <= 1e-5
    assert (packed_h[:, 0, a_index] - alone_h[:, 0]).abs().max() <= 1e-5


def test_rope_encoder_output_is_invariant_to_shifting_an_image(make_image):
    torch.manual_seed(0)
    # Without registers: an unrotated register acts like a fixed origin, so shifts move it relatively.
    enc = Encoder(tiny(pos_embed="rope", num_registers=0), PATCH_DIM).eval()
    ci, cp, ti, tp = make_image(0, 4, 6, 2, seed=3)
    ids, pix = torch.cat((ci, ti))[None], torch.cat((cp, tp))[None]
    shifted = ids.clone()
    patch = shifted[..., 2] != PAD_ID
    shifted[..., 2][patch] += 7
    shifted[..., 3][patch] += 3
    with torch.no_grad():
        torch.testing.assert_close(enc(pix, shifted), enc(pix, ids), atol=1e-5, rtol=1e-5)


def test_return_all_depths_gives_embedding_and_every_block_before_the_output_norm(make_image):
    torch.manual_seed(0)
    enc = Encoder(tiny(depth=3, out_norm="layernorm"), PATCH_DIM)
    (a_pix, a_ids), _, _ = _alone_and_packed(make_image)
    out, hiddens = enc(a_pix, a_ids, return_all_depths=True)
    assert hiddens.shape == (4, 1, a_ids.shape[1], 32)
    torch.testing.assert_close(hiddens[0], enc.embed(a_pix, a_ids))
    torch.testing.assert_close(out, enc.out_norm(hiddens[-1]))
    torch.testing.assert_close(enc(a_pix, a_ids), out)


def test_registers_get_their_embedding_and_ignore_pixels(make_image):
    torch.manual_seed(0)
    enc = Encoder(tiny(), PATCH_DIM)
    ci, cp, _, _ = make_image(0, 4, 4, 2, num_registers=2, seed=4)
    x = enc.embed(cp[None], ci[None])
    torch.testing.assert_close(x[0, 0], enc.registers[0])
    torch.testing.assert_close(x[0, 1], enc.registers[1])
    assert torch.all(x[0, 2:4] == 0)  # the register window's padding slots
    cp2 = cp.clone()
    cp2[:4] = torch.randn(4, PATCH_DIM)
    torch.testing.assert_close(enc.embed(cp2[None], ci[None]), x)


def test_batchnorm_output_norm_trains_on_real_tokens_and_evaluates_with_running_stats(make_image):
    torch.manual_seed(0)
    enc = Encoder(tiny(out_norm="batchnorm"), PATCH_DIM)
    _, (pix, ids), _ = _alone_and_packed(make_image)
    out = enc(pix, ids)
    real = (ids[..., 0] != PAD_ID) & (ids[..., 1] == PAD_ID)
    torch.testing.assert_close(out[real].mean(0), torch.zeros(32), atol=1e-4, rtol=0)
    assert not torch.all(enc.out_norm.running_mean == 0)
    enc.eval()
    before = enc.out_norm.running_mean.clone()
    enc(pix, ids)
    assert torch.equal(before, enc.out_norm.running_mean)


def test_encoder_init_is_deterministic_given_the_seed():
    torch.manual_seed(5)
    a = Encoder(tiny(pos_embed="absolute"), PATCH_DIM).state_dict()
    torch.manual_seed(5)
    b = Encoder(tiny(pos_embed="absolute"), PATCH_DIM).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_encoder_with_token_merging_returns_every_token_at_every_depth(make_image):
    torch.manual_seed(0)
    enc = Encoder(tiny(tome=ToMeConfig(ratio=0.25)), PATCH_DIM)
    _, (pix, ids), _ = _alone_and_packed(make_image)
    out, hiddens = enc(pix, ids, return_all_depths=True)
    assert out.shape == (1, ids.shape[1], 32) and hiddens.shape == (3, 1, ids.shape[1], 32)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("tome", [0.0, 0.25])
def test_flex_and_sdpa_encoders_give_the_same_outputs_on_packed_rows(make_image, make_batch, tome):
    rows = [[make_image(0, 4, 6, 2, seed=1), make_image(1, 4, 4, 1, seed=2)], [make_image(2, 6, 4, 3, seed=3)]]
    batch = make_batch(rows, 24, 32, patch_dim=PATCH_DIM)
    outs = []
    for backend in ("sdpa", "flex"):
        torch.manual_seed(0)
        enc = Encoder(tiny(num_registers=0, depth=3, tome=ToMeConfig(ratio=tome)), PATCH_DIM, attention_backend=backend).eval()
        with torch.no_grad():
            outs.append(enc(batch.pixels, batch.token_ids, return_all_depths=True))
    assert (outs[0][0] - outs[1][0]).abs().max() <= 1e-5
    assert (outs[0][1] - outs[1][1]).abs().max() <= 1e-5
    with pytest.raises(ValueError, match="attention backend 'flash' is not one of"):
        Encoder(tiny(), PATCH_DIM, attention_backend="flash")
