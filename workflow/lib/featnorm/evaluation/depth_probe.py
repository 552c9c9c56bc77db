"""NYU-Depth-v2 probe: a small conv head on a frozen encoder's 4th-from-last block.

As the reference (`src/validate_monocular_depth.py`): features of the 4th block from the end
(before the output norm) reshaped to the patch grid (16 x 16 for 256 x 256 images); head 3x3
conv D -> D/2, bilinear x2, 3x3 conv -> 32, GELU (exact), 1x1 conv -> 1, bilinear to the depth
map's size (the ground truth is centre-cropped and resized to the image size); loss and metrics
in `depth_losses` (the ground truth normalised, the raw prediction mapped back for the RMSE);
AdamW lr 5e-4, betas (0.9, 0.95), weight decay 0.01 (torch's default), batch 320, 10 epochs;
RMSE per image, averaged over the validation images.

Ours differs in how epochs are drawn: an epoch is one exact pass over the training images in a
shuffled order (the reference draws floor(N / batch) batches from resampled shards), and the
last batch of an epoch may be short.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from featnorm.evaluation.depth_losses import align_to_ground_truth, depth_metrics, depth_probe_loss, valid_depth_mask
from featnorm.evaluation.features import autocast_for, encode_all_depths
from featnorm.tokens import COL, ROW, is_patch

DepthBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # pixels (B,L,P), token_ids (B,L,4), depth (B,H,W)


class DepthHead(nn.Module):
    """`(B, D, gh, gw)` features -> `(B, out_h, out_w)` depth (arbitrary scale and shift)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim // 2, 3, padding=1)
        self.conv2 = nn.Conv2d(dim // 2, 32, 3, padding=1)
        self.out = nn.Conv2d(32, 1, 1)

    def forward(self, x: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        x = self.conv1(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.out(F.gelu(self.conv2(x)))
        return F.interpolate(x, size=out_size, mode="bilinear", align_corners=False)[:, 0]


def probe_depth_index(encoder_depth: int, feature_depth: int = -4) -> int:
    """Index into `hiddens` (0 = embedding, d = block d) of the probed features.

    `feature_depth` >= 0 is that index; negative counts blocks from the end as the
    reference's list of every depth (-4: the 4th block from the end, index depth - 3), and
    stops at the first block for encoders shallower than that (tiny test models)."""
    if feature_depth >= 0:
        if feature_depth > encoder_depth:
            raise ValueError(f"feature depth {feature_depth} is beyond the {encoder_depth} blocks of this encoder")
        return feature_depth
    return max(encoder_depth + 1 + feature_depth, 1 if encoder_depth >= 1 else 0)


def tokens_to_grid(tokens: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """`(B, L, D)` tokens -> `(B, D, gh, gw)` placed by their (row, col) ids; registers and
    padding dropped, so the token order within a row does not matter."""
    b, _, d = tokens.shape
    patch = is_patch(token_ids)
    rows = torch.where(patch, token_ids[..., ROW], 0)
    cols = torch.where(patch, token_ids[..., COL], 0)
    gh, gw = int(rows.max()) + 1, int(cols.max()) + 1
    grid = tokens.new_zeros(b, gh * gw, d)
    flat = torch.where(patch, rows * gw + cols, gh * gw)  # non-patches go to a dropped slot
    grid = torch.cat([grid, grid.new_zeros(b, 1, d)], 1)
    grid.scatter_(1, flat[..., None].expand(-1, -1, d), tokens)
    return grid[:, :-1].transpose(1, 2).reshape(b, d, gh, gw)


def probe_features(encoder: nn.Module, pixels: torch.Tensor, token_ids: torch.Tensor, depth_index: int) -> torch.Tensor:
    """Frozen encoder -> `(B, D, gh, gw)` float32 grid of the chosen depth."""
    hiddens = encode_all_depths(encoder, pixels, token_ids)
    return tokens_to_grid(hiddens[depth_index], token_ids)


def train_depth_probe(
    encoder: nn.Module,
    train_batches: Callable[[int], Iterable[DepthBatch]],
    val_batches: Callable[[], Iterable[DepthBatch]],
    *,
    encoder_depth: int,
    dim: int,
    epochs: int = 10,
    lr: float = 5e-4,
    betas: tuple[float, float] = (0.9, 0.95),
    weight_decay: float = 0.01,
    grad_weight: float = 0.2,
    normalize_prediction: bool = False,
    feature_depth: int = -4,
    device: str | torch.device = "cpu",
    seed: int = 0,
    num_strip_images: int = 4,
    progress: bool = True,
) -> tuple[dict, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """Train the head on `train_batches(epoch)`, evaluate on `val_batches()`.

    `normalize_prediction`: see `depth_losses` (default False: the reference's loss and RMSE).
    Returns the JSON-ready result (RMSE in metres, AbsRel, delta < 1.25, averaged over
    validation images; loss per epoch) and up to `num_strip_images` examples
    `(pixels (L, P), token_ids (L, 4), depth (H, W), aligned prediction (H, W))` for strips.
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    depth_index = probe_depth_index(encoder_depth, feature_depth)
    encoder.eval()  # frozen and in eval mode (DiffMoE routing)
    head = DepthHead(dim).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    curve = {"epoch": [], "train_loss": [], "train_ssi": [], "train_grad": []}
    num_train = 0
    for epoch in range(epochs):
        head.train()
        sums = torch.zeros(3, dtype=torch.float64)
        count = 0
        for pixels, token_ids, depth in tqdm(train_batches(epoch), desc=f"depth probe epoch {epoch + 1}/{epochs}",
                                             unit="batch", disable=not progress):
            pixels, token_ids = pixels.to(device), token_ids.to(device)
            depth = depth.to(device).float()
            feats = probe_features(encoder, pixels, token_ids, depth_index)
            with autocast_for(device):
                pred = head(feats, depth.shape[-2:])
            loss, parts = depth_probe_loss(pred.float(), depth, valid_depth_mask(depth), grad_weight,
                                           normalize_prediction=normalize_prediction)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"depth probe loss is not finite at epoch {epoch + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            b = depth.shape[0]
            sums += torch.tensor([loss.item(), parts["ssi"].item(), parts["grad"].item()], dtype=torch.float64) * b
            count += b
        if count == 0:
            raise ValueError("the depth training set yielded no images")
        num_train = count
        curve["epoch"].append(epoch + 1)
        for key, v in zip(("train_loss", "train_ssi", "train_grad"), (sums / count).tolist()):
            curve[key].append(v)

    head.eval()
    per_image: dict[str, list[torch.Tensor]] = {"rmse": [], "absrel": [], "delta1": []}
    strips = []
    with torch.no_grad():
        for pixels, token_ids, depth in tqdm(val_batches(), desc="depth probe eval", unit="batch", disable=not progress):
            pixels, token_ids = pixels.to(device), token_ids.to(device)
            depth = depth.to(device).float()
            with autocast_for(device):
                pred = head(probe_features(encoder, pixels, token_ids, depth_index), depth.shape[-2:])
            pred = pred.float()
            valid = valid_depth_mask(depth)
            for k, v in depth_metrics(pred, depth, valid, normalize_prediction=normalize_prediction).items():
                per_image[k].append(v.cpu())
            if len(strips) < num_strip_images:
                aligned = align_to_ground_truth(pred, depth, valid, normalize_prediction)
                for i in range(min(num_strip_images - len(strips), depth.shape[0])):
                    strips.append((pixels[i].cpu(), token_ids[i].cpu(), depth[i].cpu(), aligned[i].cpu()))
    metrics = {k: torch.cat(v).double() for k, v in per_image.items()}
    if metrics["rmse"].numel() == 0:
        raise ValueError("the depth validation set yielded no images")
    result = {
        "rmse": float(metrics["rmse"].mean()),  # metres, mean over images
        "absrel": float(metrics["absrel"].mean()),
        "delta1": float(metrics["delta1"].mean()),  # fraction of pixels with max ratio < 1.25
        "num_train": num_train,
        "num_val": int(metrics["rmse"].numel()),
        "feature_depth": depth_index,  # index into hiddens: 0 = embedding, d = output of block d
        "encoder_depth": encoder_depth,
        "epochs": epochs,
        "lr": lr,
        "betas": list(betas),
        "weight_decay": weight_decay,
        "grad_weight": grad_weight,
        # "gt": the ground truth normalised, the raw prediction mapped back (the reference);
        # "both": the prediction normalised too (MiDaS; RMSE not comparable with the paper's)
        "normalized": "both" if normalize_prediction else "gt",
        "seed": seed,
        "loss_curve": curve,
    }
    if not all(math.isfinite(result[k]) for k in ("rmse", "absrel", "delta1")):
        raise FloatingPointError(f"depth probe metrics are not finite: {result}")
    return result, strips


# ----------------------------------------------------------------------------- strips


def pixels_to_image(pixels: torch.Tensor, token_ids: torch.Tensor, patch_size: int) -> np.ndarray:
    """`(L, p*p*3)` patches in [-1, 1] (layout (p, p, 3)) -> `(H, W, 3)` uint8 image."""
    patch = is_patch(token_ids)
    px, ids = pixels[patch].float(), token_ids[patch]
    gh, gw = int(ids[:, ROW].max()) + 1, int(ids[:, COL].max()) + 1
    img = torch.zeros(gh, gw, patch_size, patch_size, 3)
    img[ids[:, ROW], ids[:, COL]] = px.reshape(-1, patch_size, patch_size, 3)
    img = img.permute(0, 2, 1, 3, 4).reshape(gh * patch_size, gw * patch_size, 3)
    return ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def _colorize(depth: np.ndarray, lo: float, hi: float) -> np.ndarray:
    from matplotlib import colormaps

    x = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
    return (colormaps["magma_r"](x)[..., :3] * 255).astype(np.uint8)


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if img.shape[:2] == size:
        return img
    return np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.BILINEAR))


def save_depth_strips(strips: list, path: str | Path, patch_size: int) -> None:
    """One row per example: image | true depth | predicted depth (same colour range, metres)."""
    from PIL import Image

    rows = []
    for pixels, token_ids, depth, pred in strips:
        image = pixels_to_image(pixels, token_ids, patch_size)
        d = depth.numpy()
        valid = np.isfinite(d) & (d > 0)
        lo, hi = (np.percentile(d[valid], [1, 99]) if valid.any() else (0.0, 1.0))
        size = image.shape[:2]
        sep = np.full((size[0], 4, 3), 255, np.uint8)
        rows.append(np.concatenate([image, sep, _resize(_colorize(d, lo, hi), size), sep,
                                    _resize(_colorize(pred.numpy(), lo, hi), size)], 1))
    if not rows:
        raise ValueError("no depth examples to draw")
    gap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    out = np.concatenate([r for row in rows for r in (row, gap)][:-1], 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    Image.fromarray(out).save(tmp)
    tmp.replace(path)
