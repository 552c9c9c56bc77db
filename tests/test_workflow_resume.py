"""A pretraining job killed mid-way (SIGKILL of Snakemake and its jobs) resumes from its
checkpoint on the next `snakemake` call instead of starting over. Slow (a minute or two):
trains a tiny demo model; reuses the demo's data shards when they exist.
"""

from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from workflow_helpers import REPO, snakemake, snakemake_env


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_killed_pretraining_resumes_on_the_next_call(tmp_path):
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    results = tmp_path / "results"
    demo_data = REPO / demo["results"] / "data"
    if (demo_data / "imagenet" / "train" / "manifest.json").is_file():
        results.mkdir()
        (results / "data").symlink_to(demo_data)
    cfg = dict(demo, results=str(results))
    cfg["runs"] = {"tanh": demo["runs"]["tanh"]}
    cfg.pop("seeds", None)  # one run, named plainly `tanh`
    cfg["figures"] = dict(demo.get("figures", {}), compare=["tanh"])
    cfg["defaults"]["train"].update(steps=60, checkpoint_every=10, lidar_every=1000, rankme_every=1000)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    model = results / "runs" / "tanh" / "model.pt"
    checkpoints = results / "checkpoints"
    args = [str(model), "--cores", "2", "--configfile", str(config)]

    proc = subprocess.Popen([sys.executable, "-m", "snakemake", *args], cwd=REPO, env=snakemake_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 900
        while time.time() < deadline:
            if len(list(checkpoints.glob("*/*.pt"))) >= 2:
                break
            assert proc.poll() is None, "snakemake ended before the first checkpoints"
            time.sleep(1)
        else:
            pytest.fail("no checkpoint within 15 minutes")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not model.exists()

    assert snakemake(*args, "--unlock").returncode == 0
    res = snakemake(*args, timeout=1200)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    assert model.is_file()
    steps = [json.loads(line)["step"] for line in
             (results / "runs" / "tanh" / "train_log.jsonl").read_text().splitlines() if line.strip()]
    log = (results / "logs" / "pretrain" / "tanh.log").read_text().lower()
    resumed = re.search(r"resuming from .*\(step (\d+)", log)
    assert resumed and int(resumed.group(1)) >= 10, log[-3000:]
    assert max(steps) == 59 or max(steps) == 60
