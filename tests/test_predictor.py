"""Predictor: shapes, rows that mix images behave like separate rows, mask token, registers."""

import pytest
import torch

from featnorm.config import PredictorConfig
from featnorm.models import Predictor
from featnorm.tokens import padding_ids

ENC_DIM = 24


def tiny(**kw):
    base = dict(dim=16, depth=2, num_heads=2)
    base.update(kw)
    return PredictorConfig(**base)


def _pieces(make_image, sample_id, seed):
    ci, _, ti, _ = make_image(sample_id, 4, 4, 2, num_registers=1, seed=seed)
    return ci, torch.randn(len(ci), ENC_DIM), ti


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
@pytest.mark.parametrize("pos_embed", ["rope", "absolute"])
def test_predictor_rows_mixing_images_match_separate_rows(make_image, pos_embed, backend):
    torch.manual_seed(0)
    pred = Predictor(tiny(pos_embed=pos_embed), ENC_DIM, attention_backend=backend).eval()
    a, b = _pieces(make_image, 0, 1), _pieces(make_image, 1, 2)
    # mixed row: [A ctx, B ctx, pad] [B tgt, A tgt, pad]
    pad = padding_ids(4)
    ctx_ids = torch.cat((a[0], b[0], pad))[None]
    ctx = torch.cat((a[1], b[1], torch.randn(4, ENC_DIM) * 100))[None]
    tgt_ids = torch.cat((b[2], a[2], pad))[None]
    with torch.no_grad():
        mixed = pred(ctx, ctx_ids, tgt_ids)
        alone_a = pred(a[1][None], a[0][None], a[2][None])
        alone_b = pred(b[1][None], b[0][None], b[2][None])
    assert mixed.shape == (1, tgt_ids.shape[1], ENC_DIM)
    nb, na = len(b[2]), len(a[2])
    assert (mixed[0, :nb] - alone_b[0]).abs().max() <= 1e-5
    assert (mixed[0, nb : nb + na] - alone_a[0]).abs().max() <= 1e-5
    assert torch.isfinite(mixed).all()


def test_mask_token_and_every_weight_get_gradient(make_image):
    torch.manual_seed(0)
    pred = Predictor(tiny(), ENC_DIM)
    ci, c, ti = _pieces(make_image, 0, 1)
    pred(c[None], ci[None], ti[None]).square().sum().backward()
    assert pred.mask_token.grad is not None and pred.mask_token.grad.abs().sum() > 0
    assert all(p.grad is not None for p in pred.parameters())


def test_wiping_encoder_registers_hides_them_from_the_predictor(make_image):
    torch.manual_seed(0)
    ci, c, ti = _pieces(make_image, 0, 1)
    c2 = c.clone()
    c2[0] = torch.randn(ENC_DIM)  # the register's encoder output
    for mode, changes in (("pass", True), ("wipe", False)):
        torch.manual_seed(0)
        pred = Predictor(tiny(encoder_registers=mode), ENC_DIM)
        with torch.no_grad():
            diff = (pred(c[None], ci[None], ti[None]) - pred(c2[None], ci[None], ti[None])).abs().max()
        assert (diff > 1e-4) == changes, mode


def test_target_positions_matter_through_rope(make_image):
    torch.manual_seed(0)
    pred = Predictor(tiny(), ENC_DIM)
    ci, c, ti = _pieces(make_image, 0, 1)
    moved = ti.clone()
    moved[:, 2] = ti[:, 2].flip(0)
    with torch.no_grad():
        assert not torch.allclose(pred(c[None], ci[None], ti[None]), pred(c[None], ci[None], moved[None]))


def test_predictor_with_registers_returns_one_prediction_per_target_slot(make_image):
    torch.manual_seed(0)
    pred = Predictor(tiny(num_registers=4), ENC_DIM)
    ci, c, ti = _pieces(make_image, 0, 1)
    out = pred(c[None], ci[None], ti[None])
    assert out.shape == (1, len(ti), ENC_DIM) and torch.isfinite(out).all()
