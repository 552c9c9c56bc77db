"""scripts/extract_features.py under torchrun (2 CPU processes, gloo): the image shards
are split by rank, and the merged feature directory equals the one-process one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from featnorm.evaluation.features import load_features, part_dir
from test_evaluation_end_to_end import extract_script, setup  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def torchrun_extract(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT / "workflow" / "lib") + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(ROOT / "scripts" / "extract_features.py"), *map(str, args), "--threads", "1"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_two_process_extraction_matches_one_process(setup, tmp_path):  # noqa: F811
    common = ["--model", setup / "model.pt", "--shards", setup / "cls" / "train", "--image-size", "64",
              "--batch-size", "5", "--no-progress", "--device", "cpu", "--num-workers", "0", "--max-images", "20"]
    assert extract_script.main([str(a) for a in common] + ["--out", str(tmp_path / "one")]) == 0
    p = torchrun_extract(*common, "--out", tmp_path / "two")
    assert p.returncode == 0, p.stderr[-3000:]
    f1, y1 = load_features(tmp_path / "one")
    f2, y2 = load_features(tmp_path / "two")
    assert torch.equal(y1, y2) and torch.equal(f1, f2)
    m1 = json.loads((tmp_path / "one" / "manifest.json").read_text())
    m2 = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert m1 == m2 and m2["count"] == 20
    assert not (tmp_path / "two" / ".parts").exists()
    # a finished directory is left alone by a second launch
    before = {q.name: q.stat().st_mtime_ns for q in (tmp_path / "two").iterdir()}
    p = torchrun_extract(*common, "--out", tmp_path / "two")
    assert p.returncode == 0, p.stderr[-3000:]
    assert {q.name: q.stat().st_mtime_ns for q in (tmp_path / "two").iterdir()} == before


def test_part_directories_are_per_rank_and_world_size(tmp_path):
    assert part_dir(tmp_path, 1, 2) != part_dir(tmp_path, 1, 4) != part_dir(tmp_path, 0, 4)
