"""The fixed input set of the LiDAR diagnostic: n training images x q augmentations.

    lidar = LidarSet(shards, spec, n_images=1000, n_augmentations=50, seed=run_seed)
    lidar.describe()          # {"seed", "n_images", "n_augmentations", "keys"}: store with the run
    for batch, index in lidar.batches(rows=64):
        # batch: PackedBatch; index: (num_samples, 2) long, index[s] = (image i, augmentation a)
        # of sample id s in this batch. Use the context segment: mean-pool the student's
        # context features per sample id -> features[i, a].

The images are chosen once from the seed (shards in a seeded order, the first `n_images`
readable images that pass the size filter) and kept as encoded bytes. Augmentation a of
image i is the training transform (random resize + random context/target split) drawn
from a generator seeded by (seed, i, a), so `batches()` yields the same inputs at every
call, after a resume too, independently of `rows`.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ..batch import PackedBatch
from .packing import packs_to_batch
from .resize import keep_image, open_image
from .shards import BadInputLog, iter_samples, resolve_shards
from .train_pipeline import PipelineSpec, image_bytes, make_item


class LidarSet:
    def __init__(self, shards, spec: PipelineSpec, n_images: int = 1000, n_augmentations: int = 50, seed: int = 0):
        self.spec = spec
        self.n_augmentations = n_augmentations
        self.seed = seed
        paths = resolve_shards(shards)
        order = np.random.default_rng([seed, 0x11DA]).permutation(len(paths))
        self.keys: list[str] = []
        self.images: list[bytes] = []
        self.bad_inputs = BadInputLog()
        for i in order:
            for sample in iter_samples(paths[i], self.bad_inputs):
                data = image_bytes(sample)
                if data is None:
                    continue
                try:
                    img = open_image(data)
                    w, h = img.size
                    img.load()  # a damaged body would otherwise fail later, inside batches()
                except Exception as e:
                    self.bad_inputs.add(sample["__shard__"], sample["__key__"], f"undecodable image ({e})")
                    continue
                if not keep_image(h, w, spec.min_side):
                    continue
                self.keys.append(f"{sample['__shard__']}/{sample['__key__']}")
                self.images.append(data)
                if len(self.images) == n_images:
                    break
            if len(self.images) == n_images:
                break
        if len(self.images) < n_images:
            raise ValueError(f"LiDAR set wants {n_images} images but the shards {shards} hold only {len(self.images)} usable ones")
        self.n_images = n_images

    def describe(self) -> dict:
        return {"seed": self.seed, "n_images": self.n_images, "n_augmentations": self.n_augmentations, "keys": self.keys}

    def batches(self, rows: int = 64) -> Iterator[tuple[PackedBatch, torch.Tensor]]:
        packer = self.spec.packer(rows)
        for i, data in enumerate(self.images):
            for a in range(self.n_augmentations):
                rng = np.random.default_rng([self.seed, 0x11DA, i, a])
                item = make_item(data, (i, a), rng, self.spec)
                packer.add(item)
                if packer.ready():
                    yield self._out(packer.pack())
        for pack in packer.flush():
            yield self._out(pack)

    @staticmethod
    def _out(pack) -> tuple[PackedBatch, torch.Tensor]:
        return packs_to_batch([pack]), torch.tensor(pack.keys, dtype=torch.long).reshape(-1, 2)
