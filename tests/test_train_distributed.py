"""Multi-process training on the CPU (gloo, 2 processes): the DDP step is the one-process
step on the whole batch; only rank 0 writes; ranks read disjoint images; scripts/pretrain.py
under torchrun trains, lowers the loss and resumes from its checkpoint.

The in-process tests spawn 2 workers with torch.multiprocessing; the script tests run
`python -m torch.distributed.run` in a subprocess. Together about a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from featnorm.batch import PackedBatch
from featnorm.train.trainer import Trainer, TrainData

from conftest import image_tokens, pack
from test_train_pretrain import ROOT, SCRIPT, demo_shards, env, rows, write_config  # noqa: F401
from test_train_trainer import PATCH, tiny_config

PD = PATCH * PATCH * 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fixed_batch() -> PackedBatch:
    """4 rows, 16 + 24 tokens; rows 2-3 (rank 1's half) hold fewer target windows than a
    predictor copy draws, so the two ranks predict different numbers of real tokens."""
    rows = []
    for r in range(4):
        if r < 2:
            imgs = [image_tokens(2 * r, 4, 4, 1 + r % 2, patch_dim=PD, seed=10 + r),
                    image_tokens(2 * r + 1, 2, 4, 1, patch_dim=PD, seed=20 + r)]
        else:
            imgs = [image_tokens(2 * r, 2, 4, 1, patch_dim=PD, seed=10 + r)]
        rows.append(imgs)
    return pack(rows, 16, 24, patch_dim=PD)


def rows_of(batch: PackedBatch, a: int, b: int) -> PackedBatch:
    return PackedBatch(batch.pixels[a:b].clone(), batch.token_ids[a:b].clone(), batch.context_length)


def patch_window_draws(monkeypatch_target, rows_total: int, row_offset: int) -> None:
    """Make the predictor's window draws a function of the global row: every call draws keys
    for all `rows_total` rows from a generator seeded by the call's index, and this process
    keeps its own rows. One process and the two ranks then pick the same windows per row."""
    import featnorm.ijepa.objective as objective
    from featnorm.ijepa.window_sampling import sample_windows as original

    calls = [0]

    def seeded(pad, num_copies, k, with_replacement=True, generator=None):
        g = torch.Generator().manual_seed(1000 + calls[0])
        calls[0] += 1
        full = torch.zeros(rows_total, pad.shape[1], dtype=pad.dtype)
        full[row_offset : row_offset + pad.shape[0]] = pad
        return original(full, num_copies, k, with_replacement, g)[:, row_offset : row_offset + pad.shape[0]]

    monkeypatch_target(objective, "sample_windows", seeded)


def one_step(cfg, batch, rows_total, row_offset, tmp, rank_dist=None):
    """Train one step; returns (grads, teacher params, target-norm buffers, loss)."""
    from featnorm.train.distributed import SINGLE

    patch_window_draws(setattr, rows_total, row_offset)  # undone by the caller (or the process ends)
    data = TrainData(lambda e, s: iter([batch]), num_images=4)
    tr = Trainer(cfg, data, tmp / "out", tmp / "ck", progress=False, device="cpu", dist=rank_dist or SINGLE)
    tr.model.train()
    row, _ = tr.train_step(batch)
    grads = {n: p.grad.clone() for n, p in tr.model.named_parameters() if p.grad is not None}
    teacher = {n: p.detach().clone() for n, p in tr.model.teacher.named_parameters()}
    buffers = {n: b.clone() for n, b in tr.model.named_buffers()}
    return grads, teacher, buffers, row["loss"]


CONFIGS = {
    "default": {},
    # running statistics that must be synchronised: target norm EMA + encoder output batchnorm
    "running-stats": {"model": {"objective": {"target_norm": "running-batchnorm"}, "encoder": {"out_norm": "batchnorm"}}},
    "batchnorm-targets": {"model": {"objective": {"target_norm": "batchnorm"}}},
}


def config(name):
    from featnorm.config import run_config_from_dict, to_dict

    d = to_dict(tiny_config(batch_size=4))
    d["model"]["objective"]["target_capacity"] = 0.5  # 3 target windows per copy: more than rows 2-3 hold
    for section, values in CONFIGS[name].get("model", {}).items():
        d["model"][section].update(values)
    return run_config_from_dict(d)


def _equivalence_worker(rank, world, port, tmp, queue):
    from featnorm.train.distributed import DistInfo

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        out = {}
        for name in CONFIGS:
            batch = rows_of(fixed_batch(), 2 * rank, 2 * rank + 2)
            grads, teacher, buffers, loss = one_step(config(name), batch, 4, 2 * rank, Path(tmp) / f"{name}-r{rank}", DistInfo(rank, world))
            # numpy pickles by value (a torch tensor would be passed as shared memory that dies with us)
            out[name] = tuple({k: v.numpy() for k, v in d.items()} for d in (grads, teacher, buffers)) + (loss,)
        queue.put((rank, out))
    finally:
        dist.destroy_process_group()


def _guarded(fn, rank, world, *args):
    queue = args[-1]
    try:
        fn(rank, world, *args)
    except BaseException:
        import traceback

        queue.put((rank, RuntimeError(f"rank {rank} failed:\n{traceback.format_exc()}")))
        raise


def spawn(fn, *args, world=2):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_guarded, args=(fn, r, world, *args, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results = {}
    for _ in procs:
        rank, value = queue.get(timeout=120)
        if isinstance(value, Exception):
            for p in procs:
                p.kill()
            raise value
        results[rank] = value
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results


def test_two_rank_step_matches_one_process_on_whole_batch(tmp_path, monkeypatch):
    import featnorm.ijepa.objective as objective

    monkeypatch.setattr(objective, "sample_windows", objective.sample_windows)  # restored after the test
    results = spawn(_equivalence_worker, free_port(), str(tmp_path))
    for name in CONFIGS:
        g1, t1, b1, loss1 = one_step(config(name), fixed_batch(), 4, 0, tmp_path / f"{name}-single")
        for rank in (0, 1):
            g2, t2, b2 = ({k: torch.from_numpy(v) for k, v in d.items()} for d in results[rank][name][:3])
            loss2 = results[rank][name][3]
            assert g2.keys() == g1.keys(), name
            for k in g1:
                assert torch.allclose(g2[k], g1[k], atol=1e-5, rtol=1e-4), (name, rank, k, (g2[k] - g1[k]).abs().max())
            for k in t1:
                assert torch.allclose(t2[k], t1[k], atol=1e-5), (name, rank, k)
            for k in b1:
                assert torch.allclose(b2[k].float(), b1[k].float(), atol=1e-5), (name, rank, k)
            assert loss2 == pytest.approx(loss1, abs=1e-5), name


def _writes_worker(rank, world, port, tmp, queue):
    from featnorm.train.distributed import DistInfo

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        def epoch_batches(epoch, skip):
            # rank 1 has one batch fewer per epoch: every rank must stop at the shorter count
            n = 3 if rank == 0 else 2
            for i in range(skip, n):
                yield rows_of(fixed_batch(), 2 * (i % 2), 2 * (i % 2) + 2)

        cfg = tiny_config(batch_size=4, steps=5, checkpoint_every=2, rankme_every=2)
        base = Path(tmp) / f"rank{rank}"  # each rank gets its own directories: rank 1's must stay empty
        tr = Trainer(cfg, TrainData(epoch_batches, num_images=8), base / "out", base / "ck", progress=False,
                     device="cpu", dist=DistInfo(rank, world))
        result = tr.run()
        queue.put((rank, (result.step, tr.epoch, tr.batch_in_epoch, result.images_seen)))
    finally:
        dist.destroy_process_group()


def test_only_rank_0_writes_and_ranks_stop_at_the_same_step(tmp_path):
    results = spawn(_writes_worker, free_port(), str(tmp_path))
    assert results[0] == results[1]
    step, epoch, batch_in_epoch, images = results[0]
    assert (step, epoch, batch_in_epoch) == (5, 2, 1)  # 2 synced batches per epoch
    assert not (tmp_path / "rank1").exists() or not any(p.is_file() for p in (tmp_path / "rank1").rglob("*"))
    written = {p.relative_to(tmp_path / "rank0").as_posix() for p in (tmp_path / "rank0").rglob("*") if p.is_file()}
    assert {"out/model.pt", "out/train_log.jsonl", "out/config.yaml"} <= written
    log = [json.loads(line) for line in (tmp_path / "rank0" / "out" / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5]
    assert images == steps[-1]["images_seen"] and steps[0]["images"] > 0


def test_ranks_read_disjoint_images_covering_the_epoch(demo_shards):  # noqa: F811
    from featnorm.config import run_config_from_dict
    from featnorm.data import PipelineSpec, TrainLoader

    from test_train_pretrain import TINY

    spec = PipelineSpec.from_config(run_config_from_dict(TINY))

    def keys(rank, world):
        loader = TrainLoader(str(demo_shards), spec, batch_size=4, seed=3, rank=rank, world_size=world)
        return [k for d in loader.packs(epoch=1) for k in d["keys"]]

    k0, k1, whole = keys(0, 2), keys(1, 2), keys(0, 1)
    assert len(k0) == len(set(k0)) and len(k1) == len(set(k1))
    assert not set(k0) & set(k1)
    assert set(k0) | set(k1) == set(whole)
    assert k0 and k1


# ----------------------------------------------------------------------------- torchrun


def torchrun(*args, nproc=2, timeout=300):
    e = env()
    e["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           str(SCRIPT), *map(str, args), "--threads", "1", "--device", "cpu", "--no-progress"]
    return subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=timeout)


def test_torchrun_two_processes_lower_the_loss_and_resume(tmp_path, demo_shards):  # noqa: F811
    cfg = write_config(tmp_path / "run.yaml", demo_shards, steps=20, checkpoint_every=5, keep_checkpoints=10,
                       lidar_every=10, lidar_images=4, lidar_augmentations=2, rankme_every=10, lr_warmup_steps=3)
    out, ck = tmp_path / "out", tmp_path / "ck"
    # A full 20-step run, then a second run resumed from a copy of its step-10 checkpoint:
    # the continuation must be the uninterrupted run's.
    p = torchrun("--config", cfg, "--out", out, "--checkpoint-dir", ck)
    assert p.returncode == 0, p.stderr[-3000:]
    log = rows(out)
    losses = [r["loss"] for r in log if "loss" in r]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 21))
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert any("lidar" in r for r in log) and any("rankme" in r for r in log)
    assert (out / "model.pt").is_file()
    # only rank 0 wrote: no leftover temporary files of other processes, one log row per step
    assert not list(ck.glob(".*tmp*")) and not list(out.glob(".*tmp*"))
    state = torch.load(sorted(ck.glob("ckpt-*.pt"))[-1], map_location="cpu", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng_per_rank"]) == 2

    # resume: keep only the step-10 checkpoint and rerun into a fresh out dir
    ck2, out2 = tmp_path / "ck2", tmp_path / "out2"
    ck2.mkdir()
    src = ck / "ckpt-000000010.pt"
    (ck2 / src.name).write_bytes(src.read_bytes())
    (ck2 / "lidar_set.pt").write_bytes((ck / "lidar_set.pt").read_bytes())
    p2 = torchrun("--config", cfg, "--out", out2, "--checkpoint-dir", ck2)
    assert p2.returncode == 0, p2.stderr[-3000:]
    assert "resuming from" in p2.stderr
    log2 = [r for r in rows(out2) if "loss" in r]
    assert [r["step"] for r in log2] == list(range(11, 21))
    want = {r["step"]: r["loss"] for r in log if "loss" in r}
    for r in log2:  # same number of ranks: the continuation is the uninterrupted run's
        assert r["loss"] == pytest.approx(want[r["step"]], rel=1e-4, abs=1e-5)


def test_a_two_process_checkpoint_resumes_on_one_process_at_the_next_epoch(tmp_path, demo_shards):  # noqa: F811
    from test_train_pretrain import pretrain

    cfg = write_config(tmp_path / "run.yaml", demo_shards, steps=12, checkpoint_every=3, keep_checkpoints=10,
                       lidar_every=0, rankme_every=0)
    out, ck = tmp_path / "out", tmp_path / "ck"
    p = torchrun("--config", cfg, "--out", out, "--checkpoint-dir", ck)
    assert p.returncode == 0, p.stderr[-3000:]
    # keep a mid-epoch checkpoint only (epoch ends also write one: pick a step that is not one)
    states = {int(q.name[5:14]): torch.load(q, map_location="cpu", weights_only=True) for q in ck.glob("ckpt-*.pt")}
    step, state = next((s, st) for s, st in sorted(states.items()) if st["data_position"]["batch_in_epoch"] > 0)
    ck1 = tmp_path / "ck1"
    ck1.mkdir()
    (ck1 / f"ckpt-{step:09d}.pt").write_bytes((ck / f"ckpt-{step:09d}.pt").read_bytes())
    p1 = pretrain("--config", cfg, "--out", tmp_path / "out1", "--checkpoint-dir", ck1, "--device", "cpu", "--no-progress")
    assert p1.returncode == 0, p1.stderr[-3000:]
    assert "resuming a 2-process checkpoint on 1 processes" in p1.stderr
    assert f"start of epoch {state['data_position']['epoch'] + 1}" in p1.stderr
    log1 = [r for r in rows(tmp_path / "out1") if "loss" in r]
    assert [r["step"] for r in log1] == list(range(step + 1, 13))
    assert log1[0]["images_seen"] > state["images_seen"]
