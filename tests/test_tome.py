"""ToMe token merging: per-image bipartite matching, size-weighted means, unmerge, and the
packed-row invariance of encoder and predictor with merging on."""

import pytest
import torch

from featnorm.config import EncoderConfig, MoEConfig, PredictorConfig, ToMeConfig
from featnorm.layers import MergeState, RoPE2D, merge_plan, merge_tokens, unmerge
from featnorm.models import Encoder, Predictor
from featnorm.tokens import PAD_ID, is_patch, padding_ids

PATCH_DIM = 12


def _alone_and_packed(make_image):
    """A alone and a row [B ctx, A ctx, pad | B tgt, A tgt, pad]; the index of A's tokens in the row."""
    a = make_image(0, 6, 6, 4, num_registers=2, seed=1)
    b = make_image(1, 6, 4, 3, num_registers=2, seed=2)
    a_ids, a_pix = torch.cat((a[0], a[2])), torch.cat((a[1], a[3]))
    Lc, Lt = 40, 48
    ids, pix = padding_ids(1, Lc + Lt), torch.randn(1, Lc + Lt, PATCH_DIM) * 50
    nbc, nac, nbt, nat = len(b[0]), len(a[0]), len(b[2]), len(a[2])
    ids[0, :nbc], pix[0, :nbc] = b[0], b[1]
    ids[0, nbc : nbc + nac], pix[0, nbc : nbc + nac] = a[0], a[1]
    ids[0, Lc : Lc + nbt], pix[0, Lc : Lc + nbt] = b[2], b[3]
    ids[0, Lc + nbt : Lc + nbt + nat], pix[0, Lc + nbt : Lc + nbt + nat] = a[2], a[3]
    a_index = torch.cat((torch.arange(nbc, nbc + nac), torch.arange(Lc + nbt, Lc + nbt + nat)))
    return (a_pix[None], a_ids[None]), (pix, ids), a_index


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
@pytest.mark.parametrize("moe", [False, True])
@pytest.mark.parametrize("pos_embed", ["rope", "absolute"])
@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_packed_rows_match_images_encoded_alone_with_merging(make_image, ratio, pos_embed, moe, backend):
    torch.manual_seed(0)
    cfg = EncoderConfig(dim=32, depth=4, num_heads=2, num_registers=2, pos_embed=pos_embed, tome=ToMeConfig(ratio=ratio),
                        moe=MoEConfig(num_experts=4 if moe else 0))
    enc = Encoder(cfg, PATCH_DIM, attention_backend=backend).eval()  # eval: DiffMoE routes per token, not over the batch
    (a_pix, a_ids), (pix, ids), a_index = _alone_and_packed(make_image)
    with torch.no_grad():
        alone, alone_h = enc(a_pix, a_ids, return_all_depths=True)
        packed, packed_h = enc(pix, ids, return_all_depths=True)
    assert packed.shape == (1, ids.shape[1], 32) and packed_h.shape == (5, 1, ids.shape[1], 32)
    assert (packed[0, a_index] - alone[0]).abs().max() <= 1e-5
    assert (packed_h[:, 0, a_index] - alone_h[:, 0]).abs().max() <= 1e-5
    # merging happened: some of A's patches share their final features with another patch
    feats = alone[0][is_patch(a_ids[0])]
    assert torch.unique(feats, dim=0).shape[0] < feats.shape[0]


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
def test_predictor_rows_mixing_images_match_separate_rows_with_merging(make_image, backend):
    torch.manual_seed(0)
    cfg = PredictorConfig(dim=16, depth=3, num_heads=2, num_registers=2, tome=ToMeConfig(ratio=0.4))
    pred = Predictor(cfg, 24, attention_backend=backend).eval()

    def pieces(sample_id, seed):
        ci, _, ti, _ = make_image(sample_id, 4, 6, 3, num_registers=1, seed=seed)
        return ci, torch.randn(len(ci), 24), ti

    a, b = pieces(0, 1), pieces(1, 2)
    ctx_ids = torch.cat((a[0], b[0], padding_ids(4)))[None]
    ctx = torch.cat((a[1], b[1], torch.randn(4, 24) * 100))[None]
    tgt_ids = torch.cat((b[2], a[2], padding_ids(4)))[None]
    with torch.no_grad():
        mixed = pred(ctx, ctx_ids, tgt_ids)
        alone_a = pred(a[1][None], a[0][None], a[2][None])
        alone_b = pred(b[1][None], b[0][None], b[2][None])
    nb, na = len(b[2]), len(a[2])
    assert (mixed[0, :nb] - alone_b[0]).abs().max() <= 1e-5
    assert (mixed[0, nb : nb + na] - alone_a[0]).abs().max() <= 1e-5


def _ids_of_images(sizes, registers=1, padding=3):
    """One row: for each image `registers` registers then `n` patches at (i // 4, i % 4); then padding."""
    parts = []
    for s, n in enumerate(sizes):
        reg = padding_ids(registers)
        reg[:, 0], reg[:, 1] = s, torch.arange(registers)
        p = padding_ids(n)
        p[:, 0], p[:, 2], p[:, 3] = s, torch.arange(n) // 4, torch.arange(n) % 4
        parts += [reg, p]
    return torch.cat(parts + [padding_ids(padding)])[None]


def test_no_token_merges_across_images_or_with_registers_and_padding():
    ids = _ids_of_images([7, 6, 9])
    L = ids.shape[1]
    # identical keys everywhere: every cross-image pair would be a perfect match
    keys = torch.ones(1, L, 8)
    target = merge_plan(keys, ids, ratio=0.45)
    sample = ids[0, :, 0]
    assert torch.equal(sample[target[0]], sample)
    moved = target[0] != torch.arange(L)
    assert is_patch(ids[0])[moved].all() and is_patch(ids[0])[target[0][moved]].all()
    # per image floor(0.45 n) merges (n // 2 at most), ties broken by order: the first A tokens go
    for s, n in enumerate([7, 6, 9]):
        assert int((moved & (sample == s)).sum()) == min(int(0.45 * n), n // 2)


def test_repeated_merges_give_size_weighted_means_and_unmerge_restores_the_input_length():
    g = torch.Generator().manual_seed(0)
    ids = torch.cat((_ids_of_images([10, 7], padding=1), _ids_of_images([5, 9, 3], padding=0)))
    B, L = ids.shape[:2]
    x0 = torch.randn(B, L, 6, generator=g)
    x, state = x0, MergeState.start(ids)
    for _ in range(3):
        keys = torch.randn(B, x.shape[1], 8, generator=g)
        x, state = merge_tokens(x, merge_plan(keys, state.ids, 0.3), state)
        assert x.shape[1] < L or _ == 0
    full = unmerge(x, state)
    assert full.shape == (B, L, 6)
    # every current token is the plain mean of the original tokens it holds (means of means, by size)
    count = torch.zeros(B, x.shape[1]).scatter_add_(1, state.source, torch.ones(B, L))
    sums = torch.zeros(B, x.shape[1], 6).scatter_add_(1, state.source[..., None].expand(B, L, 6), x0)
    live = count > 0
    torch.testing.assert_close(x[live], (sums / count.clamp_min(1)[..., None])[live], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state.size[live], count[live])
    # positions too, and tokens only ever hold tokens of their own image
    pos0 = ids[..., 2:].float()
    pos_sum = torch.zeros(B, x.shape[1], 2).scatter_add_(1, state.source[..., None].expand(B, L, 2), pos0)
    patch_live = live & is_patch(state.ids)
    torch.testing.assert_close(state.pos[patch_live], (pos_sum / count[..., None])[patch_live])
    assert torch.equal(state.ids[..., 0].gather(1, state.source), ids[..., 0])
    # non-patch tokens (registers, padding) stay alone
    assert torch.all(count.gather(1, state.source)[~is_patch(ids)] == 1)


def test_rope_tables_accept_fractional_positions():
    rope = RoPE2D(8)
    ids = padding_ids(1, 3)
    ids[0, :, 0] = 0
    ids[0, :2, 2], ids[0, :2, 3] = torch.tensor([1, 2]), torch.tensor([3, 5])
    cos, sin = rope.tables(ids)
    pos = ids[..., 2:].float()
    valid = ids[..., 2] != PAD_ID
    c2, s2 = rope.tables_from_positions(pos, valid)
    torch.testing.assert_close((c2, s2), (cos, sin))
    half = torch.tensor([[[1.5, 4.0], [0.0, 0.0], [0.0, 0.0]]])
    ch, _ = rope.tables_from_positions(half, torch.tensor([[True, False, False]]))
    expected = torch.cos(torch.tensor([1.5, 1.5 * 0.01, 1.5, 1.5 * 0.01, 4.0, 4.0 * 0.01, 4.0, 4.0 * 0.01]))
    torch.testing.assert_close(ch[0, 0, 0], expected)
    assert torch.all(ch[0, 0, 1:] == 1)  # no rotation off patches
