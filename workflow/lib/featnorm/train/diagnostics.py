"""What the trainer logs: per-step rows in `train_log.jsonl`, RankMe and LiDAR rows.

Row schema (one JSON object per line, keys always present unless marked):
    step            optimizer steps taken, counted from 1 (the row describes that step)
    epoch           images_seen / dataset size (float; absent when the size is unknown)
    images_seen     images trained on so far, this step included
    loss            the step's loss (float)
    lr              learning rate used for the step
    ema_beta        EMA momentum applied to the teacher after the step
    grad_norm       gradient norm before clipping (only when train.grad_clip > 0)
    images          images in the step's batch
    images_per_s    images / wall time of the step (data loading included)
    tokens_per_s    real (non-padding) tokens / wall time of the step
    step_tflop      model FLOPs of the step / 1e12, all processes (featnorm.train.flops)
    tflop_per_s     step_tflop / wall time of the step
    mfu             tflop_per_s / peak bf16 dense TFLOP/s of the devices (only when the peak
                    is known: a listed GPU or FEATNORM_PEAK_TFLOPS; featnorm.train.throughput)
    hours_left      projected hours to the end of the run, at the rate of the last 50 steps
    run_hours       projected hours of the whole run at that rate
    predictor_tokens, predictor_attention_pairs, predictor_context_tokens, predictor_target_tokens, predictor_slots,
    num_predicted_tokens, num_target_tokens, target_std, target_token_norm
                    the objective's statistics (featnorm.ijepa.objective)
    mask_rate       context fraction: real context patches / real patches of the batch
    mean_side       mean over the batch's images of sqrt(height * width), in pixels
Extra rows, also keyed by `step` (the step after which they were measured):
    {"step", "rankme"}                     RankMe of the step's (normalised) targets
    {"step", "lidar", "lidar_images", "lidar_augmentations"}   LiDAR on the run's fixed set

On resume the log is cut back to the rows of steps the checkpoint covers, so the file of a
resumed run equals that of an uninterrupted one (apart from timing fields).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import torch

from featnorm.batch import PackedBatch
from featnorm.metrics import lidar_score, smooth_rank
from featnorm.tokens import COL, PAD_ID, ROW, SAMPLE, is_patch


def batch_stats(batch: PackedBatch, patch_size: int) -> dict[str, float]:
    """Images, real tokens, context fraction and mean image side of a packed batch."""
    ids = batch.token_ids
    real = ids[..., SAMPLE] != PAD_ID
    patch = is_patch(ids)
    ctx_patches = int(patch[:, : batch.context_length].sum())
    all_patches = int(patch.sum())
    samples = ids[..., SAMPLE][patch]
    uniq, inverse = torch.unique(samples, return_inverse=True)
    n = int(uniq.numel())
    if n:
        rows = torch.zeros(n, dtype=torch.long).scatter_reduce(0, inverse, ids[..., ROW][patch], "amax")
        cols = torch.zeros(n, dtype=torch.long).scatter_reduce(0, inverse, ids[..., COL][patch], "amax")
        side = float(((rows + 1) * (cols + 1)).double().sqrt().mean()) * patch_size
    else:
        side = 0.0
    return {
        "images": n,
        "real_tokens": int(real.sum()),
        "mask_rate": ctx_patches / all_patches if all_patches else 0.0,
        "mean_side": side,
    }


class JsonlLog:
    """Append-only JSONL file, one flushed line per row."""

    def __init__(self, path: str | Path, resume_step: int | None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.unlink(missing_ok=True)
        else:
            self._truncate_after(resume_step)
        self._f = self.path.open("a")

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            if row.get("step", 0) <= step:
                kept.append(line)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)

    def write(self, row: dict[str, Any]) -> None:
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def rankme_of_targets(targets: torch.Tensor) -> float:
    """RankMe of `(N, dim)` targets."""
    return smooth_rank(targets.float())


def lidar_of_views(
    encoder: torch.nn.Module,
    views: Iterable[tuple[PackedBatch, torch.Tensor]],
    num_images: int,
    num_augmentations: int,
    device: torch.device | str = "cpu",
) -> float:
    """LiDAR of the mean-pooled context features of the run's fixed view set.

    `views` yields `(batch, view_of_sample)` as `featnorm.evaluation.lidar.view_batches`
    makes them; the embeddings are computed by the evaluation's own code, in eval mode, and
    the encoder's training mode is restored afterwards.
    """
    from featnorm.evaluation.lidar import view_embeddings

    was_training = encoder.training
    try:
        emb = view_embeddings(encoder, views, num_images, num_augmentations, device=device, progress=False)
    finally:
        encoder.train(was_training)
    return lidar_score(emb)


class ExternalSinks:
    """Optional TensorBoard / W&B mirrors of the log rows; imported only when switched on."""

    def __init__(self, tensorboard: bool, wandb: bool, out_dir: Path, run_name: str, config: dict) -> None:
        self._tb = None
        self._wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise RuntimeError("train.tensorboard is true but tensorboard is not installed; pip install tensorboard") from e
            self._tb = SummaryWriter(log_dir=str(out_dir / "tensorboard"))
        if wandb:
            try:
                import wandb as wandb_module
            except ImportError as e:
                raise RuntimeError("train.wandb is true but wandb is not installed; pip install wandb") from e
            os.environ.setdefault("WANDB_MODE", "offline")
            self._wandb = wandb_module.init(project="featnorm", name=run_name, config=config, dir=str(out_dir))

    def write(self, row: dict[str, Any]) -> None:
        step = row["step"]
        scalars = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
