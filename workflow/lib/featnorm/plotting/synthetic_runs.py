"""Small generated run directories and images, for the plotting tests and for previewing the
figures without training: a tiny (untrained, randomly initialised) model saved as `model.pt`
in the trainer's format, a resolved `config.yaml`, a made-up `train_log.jsonl` and made-up
`eval/*.json` files in the evaluation scripts' formats. The numbers mean nothing.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from featnorm.config import RunConfig, run_config_from_dict, save_run_config, to_dict

EVAL_FILES = ("linear_probe", "knn_probe", "depth_probe", "lidar")


def tiny_config(name: str, out_norm: str = "dyntanh", target_norm: str = "disabled", **encoder: object) -> RunConfig:
    """A model small enough for CPU tests: 8 px patches, 2x2 windows, width 32, 3 blocks; the
    data limits fit a 64 x 64 image (8 x 8 patches, 16 windows)."""
    return run_config_from_dict({
        "name": name,
        "model": {
            "patch_size": 8,
            "window_size": 2,
            "encoder": {"dim": 32, "depth": 3, "num_heads": 2, "out_norm": out_norm, **encoder},
            "predictor": {"dim": 32, "depth": 1, "num_heads": 2},
            "objective": {"target_norm": target_norm},
        },
        "data": {"min_side": 32, "max_side": 64, "max_context_tokens": 32, "max_target_tokens": 48},
        "train": {"steps": 60, "batch_size": 4},
    })


def write_run(
    run_dir: str | Path,
    cfg: RunConfig,
    seed: int = 0,
    steps: int = 60,
    with_model: bool = True,
    with_log: bool = True,
    evals: tuple[str, ...] = EVAL_FILES,
) -> Path:
    """Write a run directory in the layout of ARCHITECTURE.md ("Result layout")."""
    run_dir = Path(run_dir)
    (run_dir / "eval").mkdir(parents=True, exist_ok=True)
    save_run_config(cfg, run_dir / "config.yaml")
    rng = np.random.default_rng(seed)
    images_per_step = 12
    if with_model:
        from featnorm.ijepa import IJEPA

        torch.manual_seed(seed)
        model = IJEPA(cfg.model)
        torch.save({
            "config": to_dict(cfg),
            "teacher": model.teacher.state_dict(),
            "student": model.student.state_dict(),
            "predictor": model.predictor.state_dict(),
            "target_norm": model.target_norm.state_dict(),
            "step": steps,
            "images_seen": steps * images_per_step,
        }, run_dir / "model.pt")
    if with_log:
        with (run_dir / "train_log.jsonl").open("w") as f:
            for step in range(1, steps + 1):
                loss = 0.5 * math.exp(-step / (steps / 3)) + 0.1 + 0.01 * rng.standard_normal()
                f.write(json.dumps({"step": step, "images_seen": step * images_per_step, "loss": loss,
                                    "lr": 1e-4, "images": images_per_step, "images_per_s": 120.0}) + "\n")
                if step % 10 == 0:
                    f.write(json.dumps({"step": step, "rankme": 5.0 + step / 10 + rng.random()}) + "\n")
                if step % 25 == 0:
                    f.write(json.dumps({"step": step, "lidar": 3.0 + step / 25 + rng.random(),
                                        "lidar_images": 8, "lidar_augmentations": 4}) + "\n")
    depths = cfg.model.encoder.depth + 1
    if "linear_probe" in evals:
        top1 = [float(20 + 5 * d + rng.random()) for d in range(depths)]
        top1[-1] -= 8.0  # the best depth is not the last, as in the paper
        best = int(np.argmax(top1))
        (run_dir / "eval" / "linear_probe.json").write_text(json.dumps({
            "top1": top1, "top5": [min(100.0, t + 30) for t in top1], "best_depth": best,
            "best_top1": top1[best], "last_depth": depths - 1, "last_top1": top1[-1],
        }))
    if "knn_probe" in evals:
        top1 = [float(15 + 4 * d + rng.random()) for d in range(depths)]
        best = int(np.argmax(top1))
        (run_dir / "eval" / "knn_probe.json").write_text(json.dumps({
            "depths": list(range(depths)), "top1": top1, "top5": [min(100.0, t + 25) for t in top1],
            "best_depth": best, "best_top1": top1[best], "last_depth": depths - 1, "last_top1": top1[-1],
            "k": 20, "temperature": 0.07, "model_step": steps}))
    if "depth_probe" in evals:
        (run_dir / "eval" / "depth_probe.json").write_text(json.dumps(
            {"rmse": float(0.6 + 0.1 * rng.random()), "absrel": 0.2, "delta1": 0.7}))
    if "lidar" in evals:
        (run_dir / "eval" / "lidar.json").write_text(json.dumps(
            {"lidar": float(10 + rng.random()), "rankme": float(20 + rng.random())}))
    return run_dir


def synthetic_image(size: int, seed: int) -> np.ndarray:
    """A `(size, size, 3)` uint8 scene: a smooth background and a few bright shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.3 + 0.3 * xx, 0.3 + 0.3 * yy, 0.5 - 0.2 * xx * yy], -1)
    for _ in range(3):
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.2)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        img[inside] = rng.uniform(0.4, 1.0, 3)
    img += 0.03 * rng.standard_normal(img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def write_image_folder(folder: str | Path, count: int, size: int = 80) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(synthetic_image(size, i)).save(folder / f"image_{i:03d}.png")
    return folder


def write_shard(path: str | Path, count: int, size: int = 72) -> Path:
    """One WebDataset tar of `count` samples with keys `jpg` and `cls`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i in range(count):
            buf = io.BytesIO()
            Image.fromarray(synthetic_image(size, 100 + i)).save(buf, format="JPEG", quality=90)
            for ext, data in (("jpg", buf.getvalue()), ("cls", str(i % 10).encode())):
                info = tarfile.TarInfo(f"sample{i:06d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path
