"""Feature extraction: mean pooling over real patches, float16 shards, resume without duplicates,
and the checkpoint loader's refusals."""

import json

import pytest
import torch

from featnorm.config import run_config_from_dict, to_dict
from featnorm.evaluation.checkpoint_loading import CheckpointError, load_encoder
from featnorm.evaluation.features import (
    ShardBatch,
    extract_features,
    feature_depth_indices,
    load_features,
    mean_pool,
)
from featnorm.models.encoder import Encoder
from featnorm.tokens import PAD_ID

TINY = {"model": {"patch_size": 4, "encoder": {"dim": 32, "depth": 2, "num_heads": 2}}}


def grid_batch(b, gh=4, gw=4, patch_dim=48, seed=0, first_label=0):
    """One image per row, gh x gw patches in row-major order, labels first_label.. ."""
    g = torch.Generator().manual_seed(seed)
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    ids = torch.stack([torch.zeros(gh * gw, dtype=torch.long), torch.full((gh * gw,), PAD_ID),
                       rows.flatten(), cols.flatten()], -1)
    ids = ids.expand(b, -1, -1).clone()
    return torch.rand(b, gh * gw, patch_dim, generator=g) * 2 - 1, ids, torch.arange(first_label, first_label + b)


SHARDS = ["s0", "s1", "s2"]


def source(done=frozenset(), b=3, per_shard=2, interleave=False):
    """Two batches of b images per image shard; labels count images in dataset order."""
    out = []
    for k, name in enumerate(SHARDS):
        if name in done:
            continue
        for j in range(per_shard):
            i = k * per_shard + j
            out.append(ShardBatch(name, *grid_batch(b, seed=i, first_label=i * b), last=j == per_shard - 1))
    if interleave:  # as from two loader workers: shards s0/s2 and s1 alternate
        a = [x for x in out if SHARDS.index(x.shard) % 2 == 0]
        b = [x for x in out if SHARDS.index(x.shard) % 2 == 1]
        out = [x for pair in zip(a, b) for x in pair] + a[len(b):]
    return out


@pytest.fixture
def model_pt(tmp_path):
    torch.manual_seed(0)
    cfg = run_config_from_dict(TINY)
    enc = Encoder(cfg.model.encoder, cfg.model.patch_dim)
    path = tmp_path / "model.pt"
    torch.save({"config": to_dict(cfg), "teacher": enc.state_dict(), "student": enc.state_dict(),
                "predictor": {}, "step": 1, "images_seen": 8}, path)
    return path


def test_mean_pool_ignores_padding_and_registers_on_request():
    h = torch.randn(3, 2, 5, 4)
    ids = torch.zeros(2, 5, 4, dtype=torch.long)
    ids[..., 1] = PAD_ID
    ids[0, 3:] = PAD_ID  # padding
    ids[1, 0, 1] = 0  # a register
    pooled = mean_pool(h, ids)
    assert pooled.shape == (2, 3, 4)
    assert torch.allclose(pooled[0], h[:, 0, :3].mean(1))
    assert torch.allclose(pooled[1], h[:, 1, 1:].mean(1))
    # the reference's pooling: registers count, padding never does
    with_reg = mean_pool(h, ids, include_registers=True)
    assert torch.allclose(with_reg[0], h[:, 0, :3].mean(1))
    assert torch.allclose(with_reg[1], h[:, 1, :].mean(1))


def test_load_encoder_rebuilds_teacher_in_eval_mode(model_pt):
    enc, cfg = load_encoder(model_pt)
    assert not enc.training and cfg.model.encoder.depth == 2
    saved = torch.load(model_pt, weights_only=True)["teacher"]
    assert all(torch.equal(v, saved[k]) for k, v in enc.state_dict().items())


def test_load_encoder_refuses_unbuildable_config_naming_file_and_reason(model_pt, tmp_path):
    ckpt = torch.load(model_pt, weights_only=True)
    ckpt["config"]["model"]["encoder"]["num_heads"] = 5  # 32 not divisible by 5
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match=r"bad\.pt.*num_heads") as e:
        load_encoder(bad)
    assert "\n" not in str(e.value)
    ckpt["config"] = {"model": {"encoder": {"no_such_key": 1}}}
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match="no_such_key"):
        load_encoder(bad)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt: cannot be read"):
        load_encoder(tmp_path / "junk.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_encoder(tmp_path / "missing.pt")


def test_extraction_writes_float16_shards_of_every_depth(model_pt, tmp_path):
    enc, _ = load_encoder(model_pt)
    out = tmp_path / "feats"
    manifest = extract_features(enc, source, SHARDS, out, progress=False)
    assert manifest["complete"] and manifest["count"] == 18
    assert [manifest["shards"][s]["count"] for s in SHARDS] == [6, 6, 6]
    feats, labels = load_features(out)
    assert feats.dtype == torch.float16 and feats.shape == (18, 3, 32)
    assert torch.equal(labels, torch.arange(18))
    # matches a direct forward pass of the eval-mode teacher
    b = source()[0]
    with torch.no_grad():
        _, hiddens = enc(b.pixels, b.token_ids, return_all_depths=True)
    assert torch.allclose(feats[:3].float(), hiddens.mean(2).transpose(0, 1), atol=2e-3, rtol=2e-3)


def test_extraction_keeps_dataset_order_with_interleaved_workers(model_pt, tmp_path):
    enc, _ = load_encoder(model_pt)
    extract_features(enc, lambda done: source(done, interleave=True), SHARDS, tmp_path / "f", progress=False)
    _, labels = load_features(tmp_path / "f")
    assert torch.equal(labels, torch.arange(18))


def test_extraction_resumes_after_interruption_without_duplicates(model_pt, tmp_path):
    enc, _ = load_encoder(model_pt)
    extract_features(enc, source, SHARDS, tmp_path / "full", progress=False)
    ref_feats, ref_labels = load_features(tmp_path / "full")

    def interrupted(done):
        for i, b in enumerate(source(done)):
            if i == 3:  # in the middle of shard s1
                raise KeyboardInterrupt
            yield b

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        extract_features(enc, interrupted, SHARDS, out, progress=False)
    partial = json.loads((out / "manifest.json").read_text())
    assert not partial["complete"] and list(partial["shards"]) == ["s0"] and partial["count"] == 6
    with pytest.raises(Exception, match="incomplete"):
        load_features(out)
    asked = []

    def resumed(done):
        asked.append(set(done))
        return source(done)

    extract_features(enc, resumed, SHARDS, out, progress=False)
    feats, labels = load_features(out)
    assert asked == [{"s0"}]  # only the shards not complete are read again
    assert torch.equal(labels, ref_labels) and labels.unique().numel() == 18
    assert torch.equal(feats, ref_feats)


def test_extraction_refuses_to_mix_sources(model_pt, tmp_path):
    enc, _ = load_encoder(model_pt)
    extract_features(enc, source, SHARDS, tmp_path / "f", source={"model": "a"}, progress=False)
    with pytest.raises(Exception, match="delete the directory"):
        extract_features(enc, source, SHARDS, tmp_path / "f", source={"model": "b"}, progress=False)


def test_last_layer_mode_keeps_only_the_last_block_output_before_the_output_norm(model_pt, tmp_path):
    enc, _ = load_encoder(model_pt)
    extract_features(enc, source, SHARDS, tmp_path / "all", progress=False)
    manifest = extract_features(enc, source, SHARDS, tmp_path / "last", progress=False, mode="last-layer")
    assert manifest["num_depths"] == 1 and manifest["depth_indices"] == [2]
    assert feature_depth_indices(tmp_path / "last") == [2] and feature_depth_indices(tmp_path / "all") == [0, 1, 2]
    last, _ = load_features(tmp_path / "last")
    every, _ = load_features(tmp_path / "all")
    assert torch.equal(last[:, 0], every[:, -1])
    # block 2's output, not the encoder's normalised output
    b = source()[0]
    with torch.no_grad():
        out, hiddens = enc(b.pixels, b.token_ids, return_all_depths=True)
    assert torch.allclose(last[:3, 0].float(), hiddens[-1].mean(1), atol=2e-3, rtol=2e-3)
    assert not torch.allclose(last[:3, 0].float(), out.mean(1), atol=1e-2)
    with pytest.raises(ValueError, match="'first-layer'"):
        extract_features(enc, source, SHARDS, tmp_path / "x", progress=False, mode="first-layer")


def test_pool_registers_setting_changes_only_encoders_with_registers(tmp_path):
    torch.manual_seed(0)
    cfg = run_config_from_dict({"model": {"patch_size": 4, "encoder": {"dim": 32, "depth": 2, "num_heads": 2,
                                                                        "num_registers": 2}}})
    enc = Encoder(cfg.model.encoder, cfg.model.patch_dim).eval()
    pixels, ids, labels = grid_batch(3)
    reg = torch.tensor([[0, r, PAD_ID, PAD_ID] for r in range(2)]).expand(3, -1, -1)
    ids = torch.cat([reg, ids], 1)
    pixels = torch.cat([torch.zeros(3, 2, pixels.shape[-1]), pixels], 1)

    def one(done):
        return [] if "s0" in done else [ShardBatch("s0", pixels, ids, labels, last=True)]

    extract_features(enc, one, ["s0"], tmp_path / "all", progress=False)
    extract_features(enc, one, ["s0"], tmp_path / "patches", progress=False, pool_registers=False)
    with torch.no_grad():
        _, hiddens = enc(pixels, ids, return_all_depths=True)
    f_all, _ = load_features(tmp_path / "all")
    f_patch, _ = load_features(tmp_path / "patches")
    assert torch.allclose(f_all.float(), hiddens.mean(2).transpose(0, 1), atol=2e-3, rtol=2e-3)
    assert torch.allclose(f_patch.float(), hiddens[:, :, 2:].mean(2).transpose(0, 1), atol=2e-3, rtol=2e-3)
    assert (f_all[:, 1:].float() - f_patch[:, 1:].float()).abs().max() > 1e-3  # the registers moved the mean
