"""A lock-file GPU allocator: each concurrently running GPU job gets its own devices.

Snakemake counts GPUs (`resources: gpu=1`, `--resources gpu=4`) but does not say which
device a job should use. `acquire(n)` takes an exclusive `flock` on one lock file per
device and holds it for the lifetime of the returned lease; the job runs with
`CUDA_VISIBLE_DEVICES` set to the devices it holds. A crashed job's locks vanish with its
process (flock), so no stale lock ever blocks a device.

Device pool, first match wins:
1. `FEATNORM_GPUS` (comma list; empty or `none` means no GPU), e.g. for tests or to keep
   some devices free;
2. `CUDA_VISIBLE_DEVICES` as set by the caller (e.g. SLURM's allocation);
3. the indices listed by `nvidia-smi`;
4. none: the job runs on the CPU, unchanged.

Locks live in `FEATNORM_GPU_LOCK_DIR`, by default a per-user folder in the temporary
directory, separate per SLURM job so that jobs of different allocations never share locks.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Mapping


class GpuAllocationError(RuntimeError):
    """More devices asked for than exist, or none became free in time."""


def device_pool(env: Mapping[str, str] | None = None) -> list[str]:
    """The devices jobs may use (strings as `CUDA_VISIBLE_DEVICES` takes them)."""
    env = os.environ if env is None else env
    for key in ("FEATNORM_GPUS", "CUDA_VISIBLE_DEVICES"):
        if key in env:
            value = env[key].strip()
            if value.lower() in ("", "none", "-1"):
                return []
            return [d.strip() for d in value.split(",") if d.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def default_lock_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("FEATNORM_GPU_LOCK_DIR"):
        return Path(env["FEATNORM_GPU_LOCK_DIR"])
    name = f"featnorm-gpu-locks-{os.getuid()}"
    if env.get("SLURM_JOB_ID"):
        name += f"-slurm{env['SLURM_JOB_ID']}"
    return Path(tempfile.gettempdir()) / name


class GpuLease:
    """Devices held by this process until `release()` (or the end of the process)."""

    def __init__(self, devices: list[str], fds: list[int]):
        self.devices = devices
        self._fds = fds

    @property
    def cuda_visible_devices(self) -> str:
        return ",".join(self.devices)

    def release(self) -> None:
        for fd in self._fds:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        self._fds = []

    def __enter__(self) -> "GpuLease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _lock_path(lock_dir: Path, device: str) -> Path:
    return lock_dir / ("gpu-" + re.sub(r"[^A-Za-z0-9_.-]", "_", device) + ".lock")


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def acquire(
    n: int,
    devices: list[str] | None = None,
    lock_dir: str | Path | None = None,
    timeout: float | None = None,
    poll: float = 0.5,
) -> GpuLease:
    """Lock `n` free devices of `devices` (default: `device_pool()`), waiting while all are busy.

    With an empty pool the lease is empty (CPU). Raises GpuAllocationError when `n` exceeds
    the pool or when `timeout` seconds pass without `n` free devices.
    """
    devices = device_pool() if devices is None else list(devices)
    if n <= 0 or not devices:
        return GpuLease([], [])
    if n > len(devices):
        raise GpuAllocationError(
            f"the job asks for {n} GPUs but only {len(devices)} exist ({','.join(devices)}); "
            "lower the rule's `gpu` resource or set FEATNORM_GPUS"
        )
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    while True:
        held: list[tuple[str, int]] = []
        for device in devices:
            fd = _try_lock(_lock_path(lock_dir, device))
            if fd is not None:
                held.append((device, fd))
                if len(held) == n:
                    return GpuLease([d for d, _ in held], [f for _, f in held])
        # Not enough free devices: give back what we took so that no two waiting jobs
        # each hold part of what the other needs.
        GpuLease([d for d, _ in held], [f for _, f in held]).release()
        if timeout is not None and time.monotonic() - start > timeout:
            raise GpuAllocationError(
                f"no {n} of the GPUs {','.join(devices)} became free within {timeout:.0f} s "
                f"(locks in {lock_dir})"
            )
        time.sleep(poll)
