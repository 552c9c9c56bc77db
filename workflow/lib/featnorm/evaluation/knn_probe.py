"""Weighted k-nearest-neighbour probe on cached features (as DINO's `eval_knn`).

Per encoder depth: features are L2-normalised, each validation feature's k most cosine-similar
training features vote for their labels with weight exp(similarity / T), and the classes are
ranked by their summed votes. No parameters are trained, so the result does not depend on a
probe's learning rate, epochs or batch size. Defaults as DINO: k = 20, T = 0.07.

Ties are resolved deterministically (DINO leaves them to the sort): among training features of
equal similarity the one with the lower index is the nearer, and among classes with equal
votes the lower class index ranks first. Top-5 counts a hit only for a class that got votes
(with k < 5 fewer than five classes can be ranked at all; DINO narrows its top-5 to k).

Memory: the similarity matrix is computed in blocks of `query_chunk x train_chunk`, keeping only
the running k best per query, so ImageNet's 50,000 x 1,281,167 fits on one GPU (one depth's
training features in float32, 1.28M x 384 x 4 bytes = 2 GB, plus a 1024 x 65536 block).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DEFAULT_K = 20
DEFAULT_TEMPERATURE = 0.07


def _canonical_order(values: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of (similarity, train index) sorted by similarity descending, index ascending."""
    order = index.argsort(dim=1, stable=True)
    values, index = values.gather(1, order), index.gather(1, order)
    order = values.argsort(dim=1, descending=True, stable=True)
    return values.gather(1, order), index.gather(1, order)


@torch.no_grad()
def nearest_neighbours(
    train: torch.Tensor, query: torch.Tensor, k: int, train_chunk: int = 65536
) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` training rows most similar (dot product) to each query row.

    train `(N, dim)`, query `(Q, dim)`, both on one device -> similarities `(Q, k)` and train
    indices `(Q, k)` long, ordered by similarity descending, ties by lower index first.
    """
    n = train.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k = {k} neighbours asked from {n} training features; k must be between 1 and {n}")
    best_v = best_i = None
    for start in range(0, n, train_chunk):
        sims = query @ train[start : start + train_chunk].T  # (Q, c)
        kk = min(k, sims.shape[1])
        v, i = sims.topk(kk, dim=1)
        # topk picks arbitrarily among values equal to the k-th: redo those rows with a stable sort
        tied = (sims >= v[:, -1:]).sum(1) > kk
        if tied.any():
            sv, si = sims[tied].sort(dim=1, descending=True, stable=True)
            v[tied], i[tied] = sv[:, :kk], si[:, :kk]
        v, i = _canonical_order(v, i + start)
        if best_v is not None:
            # earlier chunks hold lower indices: a stable sort of the concatenation keeps them first on ties
            v, i = torch.cat([best_v, v], 1), torch.cat([best_i, i], 1)
            order = v.argsort(dim=1, descending=True, stable=True)[:, :k]
            v, i = v.gather(1, order), i.gather(1, order)
        best_v, best_i = v, i
    return best_v, best_i


@torch.no_grad()
def knn_votes(
    train: torch.Tensor, train_labels: torch.Tensor, query: torch.Tensor, num_classes: int, *,
    k: int = DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE, train_chunk: int = 65536,
) -> torch.Tensor:
    """Class votes `(Q, num_classes)` float32: the sum of exp(sim / T) over each query's k
    nearest training rows of that class. `train` `(N, dim)` and `query` `(Q, dim)` must be
    L2-normalised (so that the dot product is the cosine similarity); labels `(N,)` long."""
    sims, idx = nearest_neighbours(train, query, k, train_chunk)
    weights = (sims.float() / temperature).exp()
    votes = torch.zeros(query.shape[0], num_classes, dtype=torch.float32, device=query.device)
    return votes.scatter_add_(1, train_labels[idx], weights)


def rank_hits(votes: torch.Tensor, labels: torch.Tensor, top: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-1 hits, top-`top` hits) `(Q,)` bool from votes `(Q, C)`: classes ranked by votes
    descending, ties by lower class index; a class without votes never counts as a hit."""
    ranking = votes.argsort(dim=1, descending=True, stable=True)[:, :top]
    hit = (ranking == labels[:, None]) & (votes.gather(1, ranking) > 0)
    return hit[:, 0], hit.any(1)


def _resolve_depths(depths: list[int] | None, num_depths: int) -> list[int]:
    """Python-style indices (negative from the end) -> sorted distinct depths; None = all."""
    if depths is None:
        return list(range(num_depths))
    out = set()
    for d in depths:
        if not -num_depths <= d < num_depths:
            raise ValueError(f"depth {d} does not exist: the features have depths 0..{num_depths - 1} "
                             f"(or -{num_depths}..-1 from the end)")
        out.add(d % num_depths)
    if not out:
        raise ValueError("no depth to evaluate: give at least one depth (or none for all)")
    return sorted(out)


@torch.no_grad()
def knn_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    depths: list[int] | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    query_chunk: int = 1024,
    train_chunk: int = 65536,
) -> dict:
    """k-NN top-1 / top-5 (percent) of `(N, num_depths, dim)` features, per depth.

    Returns the JSON-ready result: per evaluated depth top-1/top-5, the best and the last
    (deepest evaluated) depth, and the settings. Raises ValueError on unusable input.
    """
    device = torch.device(device)
    if train_features.ndim != 3 or val_features.ndim != 3:
        raise ValueError("features must be (N, num_depths, dim)")
    if train_features.shape[1:] != val_features.shape[1:]:
        raise ValueError(f"train features {tuple(train_features.shape[1:])} and val features "
                         f"{tuple(val_features.shape[1:])} differ in depths or width")
    if val_features.shape[0] == 0:
        raise ValueError("there are no validation features to classify")
    if (train_labels < 0).any() or (val_labels < 0).any():
        raise ValueError("features without labels (label -1) cannot be classified")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature = {temperature}: must be a positive number")
    n, num_depths, dim = train_features.shape
    if not 1 <= k <= n:
        raise ValueError(f"k = {k} but there are {n} training features: choose 1 <= k <= {n} (evaluation.knn.k)")
    if num_classes is None:
        num_classes = int(max(train_labels.max(), val_labels.max())) + 1
    chosen = _resolve_depths(depths, num_depths)
    train_labels = train_labels.to(device)
    top1, top5 = [], []
    for d in chosen:
        train = F.normalize(train_features[:, d].to(device).float(), dim=1)
        if not torch.isfinite(train).all():
            raise ValueError(f"training features of depth {d} are not finite; re-extract them")
        hits1 = hits5 = 0
        for start in range(0, val_features.shape[0], query_chunk):
            query = F.normalize(val_features[start : start + query_chunk, d].to(device).float(), dim=1)
            if not torch.isfinite(query).all():
                raise ValueError(f"validation features of depth {d} are not finite; re-extract them")
            votes = knn_votes(train, train_labels, query, num_classes, k=k, temperature=temperature,
                              train_chunk=train_chunk)
            h1, h5 = rank_hits(votes, val_labels[start : start + query_chunk].to(device))
            hits1 += int(h1.sum())
            hits5 += int(h5.sum())
        m = val_features.shape[0]
        top1.append(100.0 * hits1 / m)
        top5.append(100.0 * hits5 / m)
        del train
    best = max(range(len(chosen)), key=lambda j: (top1[j], -j))
    return {
        "metric_units": "percent",
        "method": "cosine k-NN, votes weighted by exp(similarity / temperature) (DINO eval_knn)",
        "depths": chosen,  # 0: patch embedding output, d: output of block d
        "top1": top1,
        "top5": top5,
        "best_depth": chosen[best],
        "best_top1": top1[best],
        "best_top5": top5[best],
        "last_depth": chosen[-1],
        "last_top1": top1[-1],
        "last_top5": top5[-1],
        "k": k,
        "temperature": temperature,
        "num_train": int(n),
        "num_val": int(val_features.shape[0]),
        "num_classes": int(num_classes),
        "num_depths": int(num_depths),
        "feature_dim": int(dim),
    }
