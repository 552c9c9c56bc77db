"""One linear classifier per encoder depth, all trained together on cached features.

As the reference (`src/validate.py`): raw mean-pooled features; weights uniform in
+-1/sqrt(dim), biases zero; cross-entropy averaged over the batch and the depths; AdamW lr 1e-3
(constant, no schedule), betas (0.9, 0.999) and weight decay 0.01 (torch's defaults), batch
2048, 50 epochs; the accuracy reported is that of the final epoch on the validation set, per
depth, and the best over depths. Ours shuffles the whole training set every epoch (the
reference shuffles through buffers).

Option `standardize`: standardise each depth and channel with the training set's mean and std
first. A linear probe is invariant to that up to the optimiser's conditioning, which it helps
for raw residual-stream features whose scale grows with depth; it is not what the paper did.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm


class MultiDepthLinear(nn.Module):
    """`(B, num_depths, dim)` -> logits `(B, num_depths, num_classes)`, an independent
    linear map per depth (weights uniform in +-1/sqrt(dim), biases zero, as the reference)."""

    def __init__(self, num_depths: int, dim: int, num_classes: int):
        super().__init__()
        bound = 1 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(num_depths, dim, num_classes).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(num_depths, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bnd,ndc->bnc", x, self.weight) + self.bias


def channel_stats(features: torch.Tensor, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std `(num_depths, dim)` of `(N, num_depths, dim)` features, float64 accumulation in chunks."""
    s = torch.zeros(features.shape[1:], dtype=torch.float64, device=features.device)
    s2 = torch.zeros_like(s)
    for i in range(0, features.shape[0], chunk):
        x = features[i : i + chunk].double()
        s += x.sum(0)
        s2 += (x * x).sum(0)
    n = features.shape[0]
    mean = s / n
    var = (s2 / n - mean * mean).clamp_min(0)
    return mean.float(), var.sqrt().float().clamp_min(1e-6)


@torch.no_grad()
def evaluate_probes(
    probe: MultiDepthLinear, features: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
    batch_size: int = 8192,
) -> tuple[list[float], list[float]]:
    """Top-1 and top-5 accuracy (percent) per depth."""
    device = probe.weight.device
    num_classes = probe.weight.shape[-1]
    k = min(5, num_classes)
    top1 = torch.zeros(probe.weight.shape[0], dtype=torch.float64, device=device)
    top5 = torch.zeros_like(top1)
    for i in range(0, features.shape[0], batch_size):
        x = (features[i : i + batch_size].to(device).float() - mean) / std
        y = labels[i : i + batch_size].to(device)
        pred = probe(x).topk(k, dim=-1).indices  # (B, D, k)
        hit = pred == y[:, None, None]
        top1 += hit[..., 0].sum(0)
        top5 += hit.any(-1).sum(0)
    n = features.shape[0]
    return (100 * top1 / n).tolist(), (100 * top5 / n).tolist()


def train_linear_probes(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    num_classes: int | None = None,
    epochs: int = 50,
    batch_size: int = 2048,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    standardize: bool = False,
    depth_indices: list[int] | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train one classifier per depth on `(N, num_depths, dim)` features; evaluate on val.

    `depth_indices`: the encoder depth of each feature column (0 = patch embedding, d = output
    of block d; default 0..num_depths-1), as the feature cache's manifest records them.
    Returns the JSON-ready result: per-depth top-1/top-5 (percent) on the validation
    features, the best and the last depth, and the training loss per epoch (mean over depths
    and per depth).
    """
    device = torch.device(device)
    if train_features.ndim != 3 or val_features.ndim != 3:
        raise ValueError("features must be (N, num_depths, dim)")
    if train_features.shape[1:] != val_features.shape[1:]:
        raise ValueError(f"train features {tuple(train_features.shape[1:])} and val features "
                         f"{tuple(val_features.shape[1:])} differ in depths or width")
    if (train_labels < 0).any() or (val_labels < 0).any():
        raise ValueError("features without labels (label -1) cannot train a classifier")
    if num_classes is None:
        num_classes = int(max(train_labels.max(), val_labels.max())) + 1
    n, num_depths, dim = train_features.shape
    if depth_indices is None:
        depth_indices = list(range(num_depths))
    if len(depth_indices) != num_depths:
        raise ValueError(f"{len(depth_indices)} depth indices given for features of {num_depths} depths")
    torch.manual_seed(seed)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    # On a GPU the whole cache fits (ImageNet: 1.28M x 13 x 384 x 2 bytes = 12.8 GB).
    train_features = train_features.to(device)
    train_labels = train_labels.to(device)
    if standardize:
        mean, std = channel_stats(train_features)
    else:
        mean = torch.zeros(num_depths, dim, device=device)
        std = torch.ones(num_depths, dim, device=device)

    probe = MultiDepthLinear(num_depths, dim, num_classes).to(device)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    curve_mean: list[float] = []
    curve_depth: list[list[float]] = []
    for epoch in tqdm(range(epochs), desc="linear probe", unit="epoch", disable=not progress):
        order = torch.randperm(n, generator=gen).to(device)
        total = torch.zeros(num_depths, dtype=torch.float64, device=device)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            x = (train_features[idx].float() - mean) / std
            y = train_labels[idx]
            logits = probe(x)  # (B, D, C)
            per_depth = F.cross_entropy(logits.permute(0, 2, 1), y[:, None].expand(-1, num_depths),
                                        reduction="none").mean(0)  # (D,)
            # the mean over depths, as the reference: each classifier still gets only its own
            # gradient (scaled by 1/D, which AdamW's update ignores up to its eps)
            opt.zero_grad(set_to_none=True)
            per_depth.mean().backward()
            opt.step()
            total += per_depth.detach().double() * idx.numel()
        epoch_loss = (total / n).tolist()
        if not all(math.isfinite(v) for v in epoch_loss):
            raise FloatingPointError(f"linear probe loss is not finite at epoch {epoch}: {epoch_loss}")
        curve_depth.append(epoch_loss)
        curve_mean.append(sum(epoch_loss) / num_depths)

    probe.eval()
    top1, top5 = evaluate_probes(probe, val_features, val_labels, mean, std)
    best = max(range(num_depths), key=lambda d: top1[d])
    return {
        "metric_units": "percent",
        "depths": [int(d) for d in depth_indices],  # 0: patch embedding output, d: output of block d
        "top1": top1,
        "top5": top5,
        "best_depth": int(depth_indices[best]),
        "best_top1": top1[best],
        "best_top5": top5[best],
        "last_depth": int(depth_indices[-1]),
        "last_top1": top1[-1],
        "last_top5": top5[-1],
        "loss_curve": {"epoch": list(range(1, epochs + 1)), "train_loss_mean": curve_mean,
                       "train_loss_per_depth": curve_depth},
        "num_train": int(n),
        "num_val": int(val_features.shape[0]),
        "num_classes": int(num_classes),
        "feature_dim": int(dim),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "standardize": standardize,
        "seed": seed,
    }
