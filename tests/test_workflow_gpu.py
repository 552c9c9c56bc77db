"""The GPU lock-file allocator and the step wrapper, on fake device lists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from featnorm.workflow import gpu
from workflow_helpers import REPO

RUN_STEP = str(REPO / "scripts" / "run_step.py")

# Prints "<device> <start> <end>" after holding the device for `hold` seconds.
HOLDER = (
    "import os, sys, time; s = time.time(); time.sleep(float(sys.argv[1])); "
    "print(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'), s, time.time())"
)


def launch(n_procs, devices, lock_dir, hold=1.0, gpus=1):
    env = dict(os.environ, FEATNORM_GPUS=devices, FEATNORM_GPU_LOCK_DIR=str(lock_dir))
    procs = [
        subprocess.Popen(
            [sys.executable, RUN_STEP, "--gpus", str(gpus), "--", sys.executable, "-c", HOLDER, str(hold)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for _ in range(n_procs)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        dev, start, end = out.split()
        results.append((dev, float(start), float(end)))
    return results


def test_concurrent_jobs_get_distinct_devices(tmp_path):
    results = launch(3, "0,1,2", tmp_path)
    assert sorted(d for d, _, _ in results) == ["0", "1", "2"]


def test_jobs_beyond_the_pool_wait_and_never_share_a_device(tmp_path):
    results = launch(4, "3,7", tmp_path, hold=0.8)
    assert {d for d, _, _ in results} == {"3", "7"}
    for dev in ("3", "7"):
        spans = sorted((s, e) for d, s, e in results if d == dev)
        for (_, e1), (s2, _) in zip(spans, spans[1:]):
            assert s2 >= e1, f"device {dev} held by two jobs at once"


def test_multi_gpu_jobs_get_disjoint_sets(tmp_path):
    results = launch(2, "a,b,c,d", tmp_path, gpus=2)
    sets = [set(d.split(",")) for d, _, _ in results]
    assert all(len(s) == 2 for s in sets) and not sets[0] & sets[1]


def test_lock_is_released_when_the_holder_dies(tmp_path):
    lease = gpu.acquire(1, ["0"], tmp_path)
    assert lease.devices == ["0"]
    with pytest.raises(gpu.GpuAllocationError, match="became free"):
        gpu.acquire(1, ["0"], tmp_path, timeout=0.3, poll=0.05)
    lease.release()
    with gpu.acquire(1, ["0"], tmp_path, timeout=1) as again:
        assert again.devices == ["0"]


def test_asking_for_more_gpus_than_exist_is_an_error(tmp_path):
    with pytest.raises(gpu.GpuAllocationError, match="only 2 exist"):
        gpu.acquire(3, ["0", "1"], tmp_path)


def test_no_gpu_means_cpu_and_the_environment_is_left_alone(tmp_path):
    assert gpu.acquire(1, [], tmp_path).devices == []
    env = dict(os.environ, FEATNORM_GPUS="none", FEATNORM_GPU_LOCK_DIR=str(tmp_path))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    out = subprocess.run(
        [sys.executable, RUN_STEP, "--gpus", "1", "--", sys.executable, "-c", HOLDER, "0"],
        capture_output=True, text=True, env=env, check=True,
    ).stdout
    assert out.split()[0] == "unset"


def test_device_pool_sources():
    assert gpu.device_pool({"FEATNORM_GPUS": "0, 2"}) == ["0", "2"]
    assert gpu.device_pool({"FEATNORM_GPUS": "", "CUDA_VISIBLE_DEVICES": "1"}) == []
    assert gpu.device_pool({"CUDA_VISIBLE_DEVICES": "GPU-abc,GPU-def"}) == ["GPU-abc", "GPU-def"]
    assert gpu.default_lock_dir({"SLURM_JOB_ID": "42"}).name.endswith("-slurm42")


def test_run_step_records_provenance_and_passes_the_exit_status(tmp_path):
    prov = tmp_path / "p" / "step.json"
    env = dict(os.environ, FEATNORM_GPUS="none")
    ok = subprocess.run(
        [sys.executable, RUN_STEP, "--threads", "3", "--step", "demo", "--provenance", str(prov), "--",
         sys.executable, "-c", "import os; print(os.environ['OMP_NUM_THREADS'])"],
        capture_output=True, text=True, env=env,
    )
    assert ok.returncode == 0 and ok.stdout.strip() == "3"
    record = json.loads(prov.read_text())
    assert record["step"] == "demo" and record["threads"] == 3
    assert "torch" in record["packages"] and "commit" in record["git"]
    bad = subprocess.run(
        [sys.executable, RUN_STEP, "--provenance", str(tmp_path / "no.json"), "--",
         sys.executable, "-c", "raise SystemExit(3)"],
        capture_output=True, text=True, env=env,
    )
    assert bad.returncode == 3 and not (tmp_path / "no.json").exists()


def test_run_step_forwards_sigterm_to_the_command(tmp_path):
    marker = tmp_path / "got_sigterm"
    child = (
        "import signal, sys, time, pathlib\n"
        f"def h(*a): pathlib.Path({str(marker)!r}).write_text('x'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, h)\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    env = dict(os.environ, FEATNORM_GPUS="none")
    p = subprocess.Popen([sys.executable, RUN_STEP, "--", sys.executable, "-c", child],
                         stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    p.terminate()
    assert p.wait(timeout=20) == 0
    assert marker.exists()


def test_run_step_fails_when_a_required_file_is_missing(tmp_path):
    env = dict(os.environ, FEATNORM_GPUS="none")
    prov = tmp_path / "p.json"
    res = subprocess.run(
        [sys.executable, RUN_STEP, "--provenance", str(prov), "--require", str(tmp_path / "model.pt"), "--",
         sys.executable, "-c", "pass"],
        capture_output=True, text=True, env=env,
    )
    assert res.returncode == 1 and "model.pt" in res.stderr and not prov.exists()
