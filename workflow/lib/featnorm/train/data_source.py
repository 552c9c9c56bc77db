"""The trainer's view of the data: the training pipeline and the run's fixed LiDAR set.

`build_train_data(cfg, checkpoint_dir)` wires `featnorm.data.TrainLoader` (seeded packed
batches, epoch by epoch, with a `skip` to resume mid-epoch) and the LiDAR view set into a
`TrainData`. The LiDAR set - `train.lidar_images` encoded images picked with the run's seed
plus the seed of their augmentations - is drawn once and stored as `lidar_set.pt` in the
checkpoint directory; a resumed run reads it back, so its LiDAR curve does not jump. The
views (random resize + random context mask, `featnorm.evaluation.lidar.view_batches`) are
regenerated from the stored images and seed at each measurement, identically every time.
"""

from __future__ import annotations

from pathlib import Path

import torch

from featnorm.config import RunConfig
from featnorm.train.checkpoint import save_atomic
from featnorm.train.trainer import TrainData

LIDAR_SET_FILE = "lidar_set.pt"


class LidarViews:
    """Re-iterable `(PackedBatch, view_of_sample)` batches of the stored LiDAR set."""

    def __init__(self, images: list[tuple[str, bytes]], spec, num_augmentations: int, seed: int) -> None:
        self.images, self.spec, self.q, self.seed = images, spec, num_augmentations, seed

    def __iter__(self):
        from featnorm.evaluation.lidar import view_batches

        return view_batches(self.images, self.spec, self.q, self.seed, rows_per_batch=256)


def lidar_set(cfg: RunConfig, checkpoint_dir: Path, shards: list) -> tuple[list[tuple[str, bytes]], int]:
    """The run's LiDAR images and augmentation seed: read from the checkpoint directory, or
    drawn (seeded by the run seed) and stored there on first use."""
    path = Path(checkpoint_dir) / LIDAR_SET_FILE
    t = cfg.train
    if path.is_file():
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if stored["num_images"] == t.lidar_images and stored["num_augmentations"] == t.lidar_augmentations:
            images = [(k, bytes(v.numpy().tobytes())) for k, v in zip(stored["keys"], stored["data"])]
            return images, int(stored["seed"])
    from featnorm.evaluation.lidar import pick_images

    seed = cfg.seed + 12345  # apart from the training stream's seeds
    images = pick_images(shards, t.lidar_images, seed, cfg.data.min_side)
    save_atomic(
        {
            "keys": [k for k, _ in images],
            "data": [torch.frombuffer(bytearray(b), dtype=torch.uint8) for _, b in images],
            "seed": seed,
            "num_images": t.lidar_images,
            "num_augmentations": t.lidar_augmentations,
        },
        path,
    )
    return images, seed


def build_train_data(
    cfg: RunConfig, checkpoint_dir: str | Path, rank: int = 0, world_size: int = 1, device: torch.device | str | None = None
) -> TrainData:
    """TrainData over `cfg.data.train_shards` (raises ShardError naming a missing path).

    With several processes, this rank's part of every epoch in batches of
    `train.batch_size / world_size` rows (a ValueError if that does not divide).
    For a CUDA `device` (default: CUDA when available) batches come as uint8 pixels in
    page-locked memory: a quarter of float32's bytes to copy, asynchronously, and no float
    conversion in the loading process (the trainer scales them on the device)."""
    from dataclasses import replace

    from featnorm.data import PipelineSpec, TrainLoader
    from featnorm.train.distributed import per_rank_batch_size

    if not cfg.data.train_shards:
        raise ValueError("data.train_shards is empty: set it to a shard directory (with manifest.json) or a brace pattern")
    rank_cfg = replace(cfg, train=replace(cfg.train, batch_size=per_rank_batch_size(cfg.train.batch_size, world_size)))
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    loader = TrainLoader.from_config(rank_cfg, rank=rank, world_size=world_size,
                                     pixels="uint8" if cuda else "float", pin_memory=cuda)

    def lidar_views() -> LidarViews:
        images, seed = lidar_set(cfg, Path(checkpoint_dir), loader.shards)
        return LidarViews(images, PipelineSpec.from_config(cfg), cfg.train.lidar_augmentations, seed)

    return TrainData(loader.epoch_batches, loader.dataset_size, lidar_views if cfg.train.lidar_every > 0 else None)
