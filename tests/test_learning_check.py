"""The learning check (issue 12): the demo's pretraining, at the demo's size and steps, must
make the teacher's features better than its own random initialisation.

Trains the demo's tiny model (config/demo.yaml `defaults` + the `tanh` run) for the demo's
steps on the demo's generated set (2,000 train / 500 val images) and compares the k-NN
top-1 (best depth) of the trained teacher with that of the same seed's untrained teacher.

Weight decay is off here (the demo trains with the reference's 0.05): weight decay alone
moves the k-NN top-1 of the random init on this set, so with it a broken objective gains
too. Measured: a run whose loss used another row's targets gained +5.4 with it and +0.2
without (seed 0, an earlier measurement whose exact settings were not recorded); remeasured
with the current demo config on 2026-12-08: +1.6 / +2.0 (tanh, seeds 0 / 1) and +1.8 / +1.6
(ln) with it, against the demo's +8.5 (tanh) and +6.1 (ln) for the working objective.

Why MARGIN is 3 points (measured, CPU, one thread; a run is deterministic given its seed):
with seed 0, the one this test uses, the working objective gains +7.4 points, the loss
against another row's targets +0.2, an EMA that never updates the teacher 0.0. Across seeds
the effect is noisy at this scale: working +7.4 / +5.4 / +3.8 (seeds 0-2, mean +5.5),
wrong targets +0.2 / +4.4 / -3.2 (mean +0.5); the binomial standard error of one accuracy
on 500 images is about 2 points. So this is a fixed-seed regression test of the objective,
not a statement about every seed; the demo's table reports the mean over seeds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from featnorm.config import deep_merge, run_config_from_dict
from featnorm.data.demo_classification import write_classification_demo
from featnorm.data.eval_pipeline import eval_batches
from featnorm.data.imagefolder import pack_imagefolder
from featnorm.evaluation.features import mean_pool
from featnorm.evaluation.knn_probe import knn_probe
from featnorm.ijepa.run_model import initial_model

ROOT = Path(__file__).resolve().parents[1]
MARGIN = 3.0  # k-NN top-1 points (see the module docstring)
IMAGE_SIZE = 128  # the demo's evaluation.image_size


def demo_run_config(shards: Path, seed: int = 0, run: str = "tanh"):
    """The demo's resolved run config (defaults + the run's overrides), training on `shards`."""
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    overrides = {k: v for k, v in demo["runs"][run].items() if k not in ("description", "enabled", "seeds")}
    cfg = deep_merge(demo["defaults"], overrides)
    cfg = deep_merge(cfg, {"name": run, "seed": seed, "data": {"train_shards": str(shards), "num_workers": 0},
                           "train": {"lidar_every": 0, "rankme_every": 0, "checkpoint_every": 10**9,
                                     "weight_decay": 0.0}})
    return run_config_from_dict(cfg)


def make_data(root: Path, n_train: int = 2000, n_val: int = 500) -> Path:
    write_classification_demo(root / "raw", seed=0, n_train=n_train, n_val=n_val)
    for split in ("train", "val"):
        pack_imagefolder(root / "raw" / split, root / split, split=split, shard_bytes=8_000_000)
    return root


@torch.no_grad()
def knn_top1(encoder: torch.nn.Module, data: Path) -> float:
    """Best-depth k-NN top-1 (%) of `encoder`'s mean-pooled features, train bank -> val."""
    encoder.eval()
    feats = {}
    for split in ("train", "val"):
        xs, ys = [], []
        for b in eval_batches(data / split, batch_size=250, image_size=IMAGE_SIZE, patch_size=16):
            _, hiddens = encoder(b.pixels, b.token_ids, return_all_depths=True)
            xs.append(mean_pool(hiddens, b.token_ids))
            ys.append(b.labels)
        feats[split] = torch.cat(xs), torch.cat(ys)
    result = knn_probe(*feats["train"], *feats["val"], num_classes=10)
    return float(result["best_top1"])


def learning_gain(data: Path, work: Path, seed: int = 0, run: str = "tanh") -> tuple[float, float]:
    """(k-NN top-1 of the untrained teacher, of the trained teacher) for one demo training."""
    from featnorm.train.data_source import build_train_data
    from featnorm.train.trainer import Trainer

    cfg = demo_run_config(data / "train", seed, run)
    before = knn_top1(initial_model(cfg).teacher, data)
    trainer = Trainer(cfg, build_train_data(cfg, work / "ckpt"), work / "out", work / "ckpt", device="cpu", progress=False)
    trainer.run()
    return before, knn_top1(trainer.model.teacher, data)


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    return make_data(tmp_path_factory.mktemp("learning_check"))


@pytest.mark.slow
def test_demo_pretraining_beats_its_own_random_init_on_knn(demo_data, tmp_path):
    before, after = learning_gain(demo_data, tmp_path)
    assert after - before >= MARGIN, f"k-NN top-1 {before:.1f}% at init -> {after:.1f}% trained: gain below {MARGIN} points"
