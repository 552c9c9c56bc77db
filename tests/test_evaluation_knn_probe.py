"""The k-NN probe against a brute-force float64 reference written with loops, its tie rules,
chunking, cosine invariance and its errors."""

import math

import pytest
import torch

from featnorm.evaluation.knn_probe import knn_probe, knn_votes, nearest_neighbours, rank_hits


def brute_force(train, train_labels, val, val_labels, k, temperature, num_classes):
    """Per query: float64 cosine similarities to every training row, neighbours sorted by
    (similarity desc, index asc), votes exp(sim / T) summed per class, classes ranked by (votes
    desc, class asc); top-5 hits only among classes with votes. Returns (top1 %, top5 %, votes)."""
    def unit(v):
        v = [float(x) for x in v]
        norm = math.sqrt(sum(x * x for x in v))
        return [x / max(norm, 1e-12) for x in v]

    train_u = [unit(r) for r in train]
    hits1 = hits5 = 0
    all_votes = []
    for q, row in enumerate(val):
        u = unit(row)
        sims = sorted(((sum(a * b for a, b in zip(u, t)), j) for j, t in enumerate(train_u)), key=lambda s: (-s[0], s[1]))
        votes = [0.0] * num_classes
        for s, j in sims[:k]:
            votes[int(train_labels[j])] += math.exp(s / temperature)
        ranking = sorted(range(num_classes), key=lambda c: (-votes[c], c))
        y = int(val_labels[q])
        hits1 += ranking[0] == y
        hits5 += y in [c for c in ranking[:5] if votes[c] > 0]
        all_votes.append(votes)
    n = len(val)
    return 100.0 * hits1 / n, 100.0 * hits5 / n, torch.tensor(all_votes, dtype=torch.float64)


def clustered(n, num_classes, dim, spread, seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(1234))
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return centres[labels] + spread * torch.randn(n, dim, generator=g), labels


@pytest.mark.parametrize("k,num_classes", [(20, 7), (5, 3), (20, 3), (1, 12)])
def test_votes_and_accuracies_match_a_float64_brute_force_reference(k, num_classes):
    tx, ty = clustered(150, num_classes, 12, 1.2, seed=0)
    vx, vy = clustered(40, num_classes, 12, 1.2, seed=1)
    top1, top5, ref_votes = brute_force(tx, ty, vx, vy, k, 0.07, num_classes)
    votes = knn_votes(torch.nn.functional.normalize(tx, dim=1), ty, torch.nn.functional.normalize(vx, dim=1),
                      num_classes, k=k, temperature=0.07)
    assert torch.allclose(votes.double(), ref_votes, rtol=1e-4, atol=1e-6 * float(ref_votes.max()))
    res = knn_probe(tx[:, None], ty, vx[:, None], vy, k=k, temperature=0.07)
    assert res["top1"] == [pytest.approx(top1)] and res["top5"] == [pytest.approx(top5)]
    assert 0 < top1 < 100  # the data is neither trivial nor hopeless, so the comparison means something


def test_chunked_search_equals_one_block():
    tx, ty = clustered(97, 5, 8, 1.5, seed=2)
    vx, vy = clustered(23, 5, 8, 1.5, seed=3)
    feats_t, feats_v = tx[:, None].repeat(1, 2, 1), vx[:, None].repeat(1, 2, 1)
    whole = knn_probe(feats_t, ty, feats_v, vy, k=20)
    chunked = knn_probe(feats_t, ty, feats_v, vy, k=20, query_chunk=4, train_chunk=7)  # chunks smaller than k
    assert chunked["top1"] == whole["top1"] and chunked["top5"] == whole["top5"]
    a = nearest_neighbours(torch.nn.functional.normalize(tx, dim=1), torch.nn.functional.normalize(vx, dim=1), 20)
    b = nearest_neighbours(torch.nn.functional.normalize(tx, dim=1), torch.nn.functional.normalize(vx, dim=1), 20, train_chunk=3)
    assert torch.equal(a[1], b[1]) and torch.allclose(a[0], b[0], atol=1e-6)  # matmul blocking rounds differently


def test_equal_similarities_prefer_the_lower_training_index_across_chunks():
    a = torch.tensor([1.0, 0.0])
    train = torch.stack([torch.tensor([0.0, 1.0])] + [a] * 5)  # rows 1..5 identical to the query
    query = a[None]
    for chunk in (1, 2, 4, 100):
        sims, idx = nearest_neighbours(train, query, k=3, train_chunk=chunk)
        assert idx.tolist() == [[1, 2, 3]], chunk
        assert sims.tolist() == [[1.0, 1.0, 1.0]]


def test_equal_votes_rank_the_lower_class_first():
    a = torch.tensor([[1.0, 0.0]])
    train = a.repeat(4, 1)
    labels = torch.tensor([3, 1, 4, 1])
    # k = 2: rows 0 and 1 (labels 3 and 1) tie in votes; class 1 ranks first
    votes = knn_votes(train, labels, a, num_classes=5, k=2)
    assert votes[0, 1] == votes[0, 3] > 0
    top1, top5 = rank_hits(votes, torch.tensor([1]))
    assert top1.tolist() == [True] and top5.tolist() == [True]
    top1, top5 = rank_hits(votes, torch.tensor([3]))
    assert top1.tolist() == [False] and top5.tolist() == [True]
    # a class without votes is never a top-5 hit, although only two classes got votes
    assert rank_hits(votes, torch.tensor([0]))[1].tolist() == [False]


def test_k_larger_than_the_class_count_is_fine_and_k_larger_than_the_training_set_is_an_error():
    tx, ty = clustered(30, 2, 4, 0.3, seed=4)
    vx, vy = clustered(10, 2, 4, 0.3, seed=5)
    res = knn_probe(tx[:, None], ty, vx[:, None], vy, k=30)  # k = all training rows, 2 classes
    top1, _, _ = brute_force(tx, ty, vx, vy, 30, 0.07, 2)
    assert res["top1"][0] == pytest.approx(top1)
    with pytest.raises(ValueError, match=r"k = 31 but there are 30 training features"):
        knn_probe(tx[:, None], ty, vx[:, None], vy, k=31)
    with pytest.raises(ValueError, match="k = 0"):
        knn_probe(tx[:, None], ty, vx[:, None], vy, k=0)


def test_result_depends_only_on_directions_of_the_features():
    tx, ty = clustered(80, 4, 6, 1.0, seed=6)
    vx, vy = clustered(30, 4, 6, 1.0, seed=7)
    g = torch.Generator().manual_seed(8)
    base = knn_probe(tx[:, None], ty, vx[:, None], vy, k=10)
    scaled = knn_probe((tx * (0.1 + torch.rand(80, 1, generator=g) * 50))[:, None], ty,
                       (vx * (0.1 + torch.rand(30, 1, generator=g) * 50))[:, None], vy, k=10)
    assert scaled["top1"] == base["top1"] and scaled["top5"] == base["top5"]


def test_depths_selection_reports_best_and_deepest_evaluated_depth():
    n_classes = 4
    tx, ty = clustered(120, n_classes, 8, 0.2, seed=9)
    vx, vy = clustered(40, n_classes, 8, 0.2, seed=10)
    noise_t = torch.randn(120, 8, generator=torch.Generator().manual_seed(11))
    noise_v = torch.randn(40, 8, generator=torch.Generator().manual_seed(12))
    feats_t = torch.stack([noise_t, tx, noise_t], 1).half()  # depth 1 informative, depths 0 and 2 noise
    feats_v = torch.stack([noise_v, vx, noise_v], 1).half()
    res = knn_probe(feats_t, ty, feats_v, vy)
    assert res["depths"] == [0, 1, 2] and res["best_depth"] == 1 and res["top1"][1] > 95
    assert res["last_depth"] == 2 and res["last_top1"] == res["top1"][2] < 60
    some = knn_probe(feats_t, ty, feats_v, vy, depths=[-1, 1, 1])
    assert some["depths"] == [1, 2] and some["top1"] == res["top1"][1:]
    with pytest.raises(ValueError, match="depth 3 does not exist"):
        knn_probe(feats_t, ty, feats_v, vy, depths=[3])


def test_unusable_inputs_are_clear_errors():
    x, y = torch.randn(10, 2, 4), torch.zeros(10, dtype=torch.long)
    with pytest.raises(ValueError, match="label"):
        knn_probe(x, torch.full((10,), -1), x, y, k=3)
    with pytest.raises(ValueError, match="temperature"):
        knn_probe(x, y, x, y, k=3, temperature=0.0)
    with pytest.raises(ValueError, match="differ in depths or width"):
        knn_probe(x, y, torch.randn(10, 3, 4), y, k=3)
    bad = x.clone()
    bad[0, 1, 0] = float("inf")
    with pytest.raises(ValueError, match="depth 1 are not finite"):
        knn_probe(bad, y, x, y, k=3)


def _write_cache(path, features, labels, step):
    """A complete feature cache in featnorm.evaluation.features' format (one shard)."""
    import json

    from featnorm.evaluation.features import FORMAT

    path.mkdir(parents=True)
    torch.save({"features": features.half(), "labels": labels, "keys": None}, path / "features-00000.pt")
    manifest = {"format": FORMAT, "source": {"step": step, "images_seen": 10 * step}, "source_shards": ["s.tar"],
                "num_depths": features.shape[1], "dim": features.shape[2], "dtype": "float16",
                "shards": {"s.tar": {"file": "features-00000.pt", "count": features.shape[0]}},
                "count": features.shape[0], "complete": True}
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_script_writes_per_depth_json_with_the_model_step_and_refuses_bad_k_in_one_line(tmp_path, capsys):
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import knn_probe as script

    tx, ty = clustered(60, 3, 8, 0.5, seed=13)
    vx, vy = clustered(20, 3, 8, 0.5, seed=14)
    _write_cache(tmp_path / "train", torch.stack([tx, -tx], 1), ty, step=7)
    _write_cache(tmp_path / "val", torch.stack([vx, -vx], 1), vy, step=7)
    out = tmp_path / "eval" / "knn_probe.json"
    args = ["--train-features", str(tmp_path / "train"), "--val-features", str(tmp_path / "val"), "--device", "cpu"]
    assert script.main(args + ["--out", str(out), "--k", "5"]) == 0
    res = json.loads(out.read_text())
    top1, _, _ = brute_force(tx.half(), ty, vx.half(), vy, 5, 0.07, 3)
    assert res["top1"] == [pytest.approx(top1)] * 2 and res["k"] == 5 and res["model_step"] == 7
    assert res["num_train"] == 60 and res["num_val"] == 20 and res["depths"] == [0, 1]
    capsys.readouterr()
    assert script.main(args + ["--out", str(tmp_path / "x.json"), "--k", "61"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "k = 61" in err and not (tmp_path / "x.json").exists()
