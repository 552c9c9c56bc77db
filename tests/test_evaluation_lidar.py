"""LiDAR/RankMe of a checkpoint: view embeddings land at their view index, every view counted."""

import pytest
import torch

from featnorm.config import run_config_from_dict
from featnorm.evaluation.lidar import lidar_and_rankme, pooled_context_by_sample, view_embeddings
from featnorm.models.encoder import Encoder


@pytest.fixture
def encoder():
    torch.manual_seed(0)
    cfg = run_config_from_dict({"model": {"encoder": {"dim": 32, "depth": 2, "num_heads": 2}}})
    return Encoder(cfg.model.encoder, 12).eval()


def _views(make_image, make_batch, n=3, q=2):
    """n images x q views (different masks), two views per packed row, sample ids shuffled."""
    items = [(i * q + a, make_image(0, 4, 4, 1 + a, seed=i)) for i in range(n) for a in range(q)]
    batches = []
    for start in range(0, len(items), 2):
        chunk = items[start : start + 2][::-1]
        rows, view_of_sample = [[]], torch.empty(len(chunk), dtype=torch.long)
        for s, (view, (ci, cp, ti, tp)) in enumerate(chunk):
            ci, ti = ci.clone(), ti.clone()
            ci[:, 0] = s
            ti[:, 0] = s
            rows[0].append((ci, cp, ti, tp))
            view_of_sample[s] = view
        batches.append((make_batch(rows, 16, 24), view_of_sample))
    return batches


def test_view_embeddings_land_at_their_view_index(encoder, make_image, make_batch):
    views = _views(make_image, make_batch)
    emb = view_embeddings(encoder, views, 3, 2, progress=False)
    assert emb.shape == (3, 2, 32) and emb.dtype == torch.float64
    # view 1 of image 0 encoded alone
    ci, cp, ti, tp = make_image(0, 4, 4, 2, seed=0)
    alone = make_batch([[(ci, cp, ti, tp)]], 16, 24)
    _, f = pooled_context_by_sample(encoder, alone)
    assert torch.allclose(emb[0, 1].float(), f[0], atol=1e-5)
    res = lidar_and_rankme(emb)
    assert set(res) == {"lidar", "rankme"} and all(isinstance(v, float) and v > 0 for v in res.values())


def test_view_embeddings_refuse_an_incomplete_view_set(encoder, make_image, make_batch):
    views = _views(make_image, make_batch)[:-1]
    with pytest.raises(ValueError, match="misses 2 of 6"):
        view_embeddings(encoder, views, 3, 2, progress=False)
