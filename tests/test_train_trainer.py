"""The training loop in process on synthetic packed batches: EMA with the scheduled beta,
the NaN guard, epoch-end checkpoints, weight-decay groups, exact in-process resume."""

import json

import pytest
import torch

from featnorm.config import run_config_from_dict
from featnorm.train.checkpoint import checkpoint_paths
from featnorm.train.schedule import ema_beta
from featnorm.train.trainer import NonFiniteLossError, Trainer, TrainData, param_groups

PATCH = 4  # patch_dim 48: tiny and fast


def tiny_config(**train):
    return run_config_from_dict({
        "seed": 0,
        "model": {
            "patch_size": PATCH,
            "encoder": {"dim": 64, "depth": 2, "num_heads": 2},
            "predictor": {"dim": 32, "depth": 1, "num_heads": 1},
        },
        "data": {"min_side": 16, "max_side": 32, "max_context_tokens": 16, "max_target_tokens": 24},
        "train": {"batch_size": 2, "steps": 6, "lr_warmup_steps": 2, "ema_warmup_steps": 3,
                  "checkpoint_every": 2, "rankme_every": 3, "lidar_every": 0, **train},
    })


@pytest.fixture
def synthetic_data(make_image, make_batch):
    """5 batches per epoch of 2 rows, each row two 4x4-patch images; a function of (epoch, index)."""

    def epoch_batches(epoch, skip):
        for i in range(skip, 5):
            seed = epoch * 100 + i
            rows = [[make_image(2 * r, 4, 4, 1 + (seed + r) % 2, patch_dim=PATCH * PATCH * 3, seed=seed * 7 + r),
                     make_image(2 * r + 1, 4, 4, 2, patch_dim=PATCH * PATCH * 3, seed=seed * 11 + r)] for r in range(2)]
            yield make_batch(rows, 16, 24, patch_dim=PATCH * PATCH * 3)

    return TrainData(epoch_batches, num_images=20)


def read_log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_teacher_follows_ema_of_student_with_scheduled_beta(tmp_path, synthetic_data):
    tr = Trainer(tiny_config(), synthetic_data, tmp_path / "out", tmp_path / "ck", progress=False)
    teacher0 = {k: v.clone() for k, v in tr.model.teacher.named_parameters()}
    batch = next(synthetic_data.epoch_batches(0, 0))
    tr.train_step(batch)
    beta = ema_beta(tr.cfg.train, 0)
    for name, s in tr.model.student.named_parameters():
        want = beta * teacher0[name] + (1 - beta) * s.detach()
        assert torch.allclose(dict(tr.model.teacher.named_parameters())[name], want, atol=1e-6), name


def test_nan_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(tmp_path, synthetic_data, monkeypatch):
    tr = Trainer(tiny_config(), synthetic_data, tmp_path / "out", tmp_path / "ck", progress=False)
    forward = tr.model.forward

    def poisoned(batch, generator=None):
        out = forward(batch, generator=generator)
        if tr.step == 2:  # the third step
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(tr, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 3;.*ckpt-000000002\.pt"):
        tr.run()
    assert [p.name for p in checkpoint_paths(tmp_path / "ck")][0] == "ckpt-000000002.pt"
    assert not (tmp_path / "out" / "model.pt").exists()
    assert [r["step"] for r in read_log(tmp_path / "out" / "train_log.jsonl") if "loss" in r] == [1, 2]


def test_epoch_end_writes_a_checkpoint_at_the_next_epochs_start(tmp_path, synthetic_data):
    tr = Trainer(tiny_config(steps=6, checkpoint_every=1000, keep_checkpoints=5), synthetic_data,
                 tmp_path / "out", tmp_path / "ck", progress=False)
    tr.run()
    names = sorted(p.name for p in checkpoint_paths(tmp_path / "ck"))
    assert names == ["ckpt-000000000.pt", "ckpt-000000005.pt", "ckpt-000000006.pt"]
    state = torch.load(tmp_path / "ck" / "ckpt-000000005.pt", weights_only=True)
    assert state["data_position"] == {"epoch": 1, "batch_in_epoch": 0}
    assert state["images_seen"] == 20


def test_resume_in_process_repeats_the_uninterrupted_losses(tmp_path, synthetic_data):
    cfg = tiny_config(steps=8, checkpoint_every=3)
    Trainer(cfg, synthetic_data, tmp_path / "a", tmp_path / "cka", progress=False).run()
    full = read_log(tmp_path / "a" / "train_log.jsonl")
    # Simulate a crash after step 3: keep only that checkpoint and rerun.
    tr = Trainer(cfg, synthetic_data, tmp_path / "b", tmp_path / "ckb", progress=False)
    tr.total_steps = 3
    tr.run()
    tr2 = Trainer(cfg, synthetic_data, tmp_path / "b", tmp_path / "ckb", progress=False)
    assert tr2.step == 3
    tr2.run()
    resumed = read_log(tmp_path / "b" / "train_log.jsonl")
    assert [r["step"] for r in resumed] == [r["step"] for r in full]
    for a, b in zip(full, resumed):
        for key in ("loss", "rankme", "lr", "ema_beta", "images_seen"):
            if key in a:
                assert b[key] == pytest.approx(a[key], abs=1e-6, rel=0), (a, b)


def test_weight_decay_on_every_trainable_parameter_by_default_as_the_reference(synthetic_data):
    from featnorm.ijepa import IJEPA

    cfg = tiny_config()
    assert cfg.train.weight_decay_params == "all"
    model = IJEPA(cfg.model)
    (group,) = param_groups(model, 0.05, cfg.train.weight_decay_params)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in group["params"]} == trainable and group["weight_decay"] == 0.05
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in group["params"]}
    assert any(n.endswith("mask_token") for n in decayed) and any(n.endswith("alpha") for n in decayed)
    assert not any(n.startswith("teacher.") for n in decayed)


def test_matrices_only_weight_decay_skips_norms_biases_and_embeddings(synthetic_data):
    from featnorm.ijepa import IJEPA

    cfg = tiny_config()
    cfg.model.encoder.pos_embed = "absolute"
    model = IJEPA(cfg.model)
    decay, no_decay = param_groups(model, 0.05, "matrices")
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim == 2 for p in decay["params"])
    nd = {names[id(p)] for p in no_decay["params"]}
    assert any(n.endswith("mask_token") for n in nd)
    assert any(".row" in n or ".col" in n for n in nd)
    assert not any(n.startswith("teacher.") for n in nd | {names[id(p)] for p in decay["params"]})


def test_diffmoe_expert_biases_get_no_weight_decay_with_matrices_only():
    from featnorm.ijepa import IJEPA

    cfg = tiny_config()
    cfg.model.encoder.moe.num_experts = 2
    model = IJEPA(cfg.model)
    decay, no_decay = param_groups(model, 0.05, "matrices")
    names = {id(p): n for n, p in model.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    moe_biases = {n for n in names.values() if n.startswith("student.") and n.rsplit(".", 1)[-1] in ("b1", "b2")}
    assert moe_biases and moe_biases <= nd
    assert not moe_biases & {names[id(p)] for p in decay["params"]}


def test_log_rows_carry_the_objectives_diagnostics(tmp_path, synthetic_data):
    cfg = tiny_config(steps=2)
    cfg.model.encoder.moe.num_experts = 2
    Trainer(cfg, synthetic_data, tmp_path / "out", tmp_path / "ck", progress=False).run()
    rows = [r for r in read_log(tmp_path / "out" / "train_log.jsonl") if "loss" in r]
    for r in rows:
        assert r["target_std"] > 0 and r["num_predicted_tokens"] > 0
        # with DiffMoE the logged loss is the prediction loss plus the auxiliary loss
        assert r["loss"] == pytest.approx(r["prediction_loss"] + r["moe_aux_loss"], rel=1e-5)


def test_length_in_epochs_counts_images_seen(tmp_path, synthetic_data):
    tr = Trainer(tiny_config(steps=0, epochs=1.5), synthetic_data, tmp_path / "out", tmp_path / "ck", progress=False)
    result = tr.run()
    # 4 images per batch, 20 per epoch: 30 images are reached after 8 steps (32 images).
    assert (result.step, result.images_seen) == (8, 32)
    last = [r for r in read_log(tmp_path / "out" / "train_log.jsonl") if "loss" in r][-1]
    assert last["epoch"] == pytest.approx(1.6)


def _tensors_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_snapshots_change_neither_training_nor_the_final_model(tmp_path, synthetic_data):
    Trainer(tiny_config(steps=7), synthetic_data, tmp_path / "a", tmp_path / "cka", progress=False).run()
    Trainer(tiny_config(steps=7, snapshot_steps=[2, 5]), synthetic_data, tmp_path / "b", tmp_path / "ckb",
            progress=False).run()
    plain = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    snap = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    for part in ("teacher", "student", "predictor", "target_norm"):
        assert _tensors_equal(plain[part], snap[part]), part
    losses = [[r["loss"] for r in read_log(d / "train_log.jsonl") if "loss" in r] for d in (tmp_path / "a", tmp_path / "b")]
    assert losses[0] == losses[1]
    assert sorted(p.name for p in (tmp_path / "b" / "snapshots").iterdir()) == ["step-2.pt", "step-5.pt"]
    assert not (tmp_path / "a" / "snapshots").exists()


def test_a_snapshot_is_the_model_at_its_step_in_model_pt_format(tmp_path, synthetic_data):
    from featnorm.evaluation.checkpoint_loading import load_encoder

    cfg = tiny_config(steps=6, snapshot_steps=[4], checkpoint_every=2, keep_checkpoints=10)
    Trainer(cfg, synthetic_data, tmp_path / "out", tmp_path / "ck", progress=False).run()
    snap = torch.load(tmp_path / "out" / "snapshots" / "step-4.pt", weights_only=True)
    state = torch.load(tmp_path / "ck" / "ckpt-000000004.pt", weights_only=True)
    assert snap["step"] == 4 and snap["images_seen"] == state["images_seen"]
    teacher = {k[len("teacher."):]: v for k, v in state["model"].items() if k.startswith("teacher.")}
    assert _tensors_equal(snap["teacher"], teacher)
    encoder, loaded_cfg = load_encoder(tmp_path / "out" / "snapshots" / "step-4.pt")
    assert loaded_cfg == cfg and all(torch.equal(v, teacher[k]) for k, v in encoder.state_dict().items())


def test_a_resumed_run_writes_the_same_later_snapshot(tmp_path, synthetic_data):
    cfg = tiny_config(steps=8, checkpoint_every=3, snapshot_steps=[2, 6])
    Trainer(cfg, synthetic_data, tmp_path / "a", tmp_path / "cka", progress=False).run()
    tr = Trainer(cfg, synthetic_data, tmp_path / "b", tmp_path / "ckb", progress=False)
    tr.total_steps = 3  # a crash after step 3
    tr.run()
    assert not (tmp_path / "b" / "snapshots" / "step-6.pt").exists()
    Trainer(cfg, synthetic_data, tmp_path / "b", tmp_path / "ckb", progress=False).run()
    for name in ("step-2.pt", "step-6.pt"):
        a = torch.load(tmp_path / "a" / "snapshots" / name, weights_only=True)
        b = torch.load(tmp_path / "b" / "snapshots" / name, weights_only=True)
        assert _tensors_equal(a["teacher"], b["teacher"]) and a["step"] == b["step"], name


def test_random_init_baseline_is_the_trainers_step_zero_state(tmp_path, synthetic_data):
    import sys
    from pathlib import Path

    from featnorm.config import save_run_config

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import init_model

    cfg = tiny_config(steps=2, keep_checkpoints=10)
    cfg.seed = 3
    Trainer(cfg, synthetic_data, tmp_path / "out", tmp_path / "ck", progress=False).run()
    step0 = torch.load(tmp_path / "ck" / "ckpt-000000000.pt", weights_only=True)["model"]
    save_run_config(cfg, tmp_path / "run.yaml")
    assert init_model.main(["--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "init" / "model.pt")]) == 0
    init = torch.load(tmp_path / "init" / "model.pt", weights_only=True)
    assert init["step"] == 0 and init["images_seen"] == 0 and init["config"]["seed"] == 3
    for part in ("teacher", "student", "predictor", "target_norm"):
        want = {k[len(part) + 1:]: v for k, v in step0.items() if k.startswith(part + ".")}
        assert _tensors_equal(init[part], want), part
    trained = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    assert not _tensors_equal(trained["student"], init["student"])  # training moved away from it
    # another seed, another initialisation
    cfg.seed = 4
    save_run_config(cfg, tmp_path / "run4.yaml")
    assert init_model.main(["--config", str(tmp_path / "run4.yaml"), "--out", str(tmp_path / "init4.pt")]) == 0
    other = torch.load(tmp_path / "init4.pt", weights_only=True)
    assert not _tensors_equal(other["teacher"], init["teacher"])
