"""Throughput of training: achieved TFLOP/s, MFU and the projected wall time of a run.

MFU (model FLOPs utilisation) = model FLOPs per second (`featnorm.train.flops`) / the
device's peak. The peak is the bf16 dense tensor-core figure of the device's data sheet
(`PEAK_BF16_DENSE_TFLOPS`, matched against `torch.cuda.get_device_name()`), or the value
of the environment variable `FEATNORM_PEAK_TFLOPS` when set (any device, the CPU
included). Without either (the CPU, an unlisted GPU), MFU is not reported.
"""

from __future__ import annotations

import os
from collections import deque

import torch

PEAK_ENV = "FEATNORM_PEAK_TFLOPS"

# (part of the CUDA device name, bf16 dense TFLOP/s per GPU), from the vendors' data sheets
# (sparsity figures halved). The first match wins, so longer names come before their prefixes.
PEAK_BF16_DENSE_TFLOPS: tuple[tuple[str, float], ...] = (
    ("B200", 2250.0),
    ("H200 NVL", 835.0),
    ("H200", 989.0),  # SXM, also GH200
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("RTX 4090", 165.0),  # with fp32 accumulation, as PyTorch's bf16 matmuls
    ("RTX A6000", 155.0),
)


def peak_tflops(device: torch.device | str | None = None) -> tuple[float | None, str]:
    """`(peak bf16 dense TFLOP/s of one device or None, where the figure comes from)`."""
    env = os.environ.get(PEAK_ENV, "").strip()
    if env:
        try:
            value = float(env)
        except ValueError:
            raise ValueError(f"{PEAK_ENV} = {env!r} is not a number; give the device's peak in TFLOP/s, e.g. 989") from None
        if value <= 0:
            raise ValueError(f"{PEAK_ENV} = {env!r} must be positive (TFLOP/s)")
        return value, PEAK_ENV
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda":
        return None, f"no peak for {device.type} (set {PEAK_ENV})"
    name = torch.cuda.get_device_name(device)
    return peak_for_name(name), name


def peak_for_name(name: str) -> float | None:
    """The table's peak for a CUDA device name, or None when it is not listed."""
    for key, value in PEAK_BF16_DENSE_TFLOPS:
        if key.lower() in name.lower():
            return value
    return None


class ThroughputMeter:
    """Per-step rates and the projection of the whole run from the last `window` steps.

    `update(seconds, images, tokens, flops)` -> a dict for the log: `images_per_s`,
    `tokens_per_s`, `tflop_per_s` (this step), `mfu` (when the peak is known; `devices`
    processes share the work, so the peak is `devices x peak`), and the seconds per step
    and images per second over the window, which `projection` uses.
    """

    def __init__(self, peak: float | None, devices: int = 1, window: int = 50):
        self.peak = peak * devices if peak else None
        self.recent: deque[tuple[float, float]] = deque(maxlen=window)  # (seconds, images)

    def update(self, seconds: float, images: float, tokens: float, flops: float) -> dict[str, float]:
        seconds = max(seconds, 1e-9)
        self.recent.append((seconds, images))
        row = {
            "images_per_s": images / seconds,
            "tokens_per_s": tokens / seconds,
            "step_tflop": flops / 1e12,
            "tflop_per_s": flops / seconds / 1e12,
        }
        if self.peak:
            row["mfu"] = row["tflop_per_s"] / self.peak
        return row

    def projection(self, steps_done: int, images_done: int, total_steps: int | None, total_images: int | None) -> dict[str, float]:
        """`hours_left` and `run_hours` (the whole run at the window's rate): from steps when
        the run is counted in steps, else from images (epochs)."""
        if not self.recent:
            return {}
        seconds = sum(s for s, _ in self.recent)
        if total_steps is not None:
            per_step = seconds / len(self.recent)
            return {"hours_left": max(total_steps - steps_done, 0) * per_step / 3600, "run_hours": total_steps * per_step / 3600}
        rate = sum(i for _, i in self.recent) / seconds
        if not total_images or rate <= 0:
            return {}
        return {"hours_left": max(total_images - images_done, 0) / rate / 3600, "run_hours": total_images / rate / 3600}
