"""Converting the reference code's checkpoints: RoPE pairing, settings, the script, errors."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from featnorm.batch import PackedBatch
from featnorm.evaluation.checkpoint_loading import load_checkpoint_dict, load_encoder, run_config_of
from featnorm.ijepa import IJEPA
from featnorm.ijepa.reference_conversion import (
    ReferenceConversionError,
    convert_reference,
    rope_channel_permutation,
    run_config_from_reference,
)
from featnorm.layers import RoPE2D, apply_rope
from featnorm.tokens import is_patch

FIXTURES = Path(__file__).parent / "fixtures" / "reference"
REPO = Path(__file__).resolve().parents[1]


def _interleaved_rope(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """2-D RoPE with interleaved pairs, written from its definition: in each axis half of
    n = head_dim / 2 channels, the pair (2j, 2j + 1) is a complex number rotated by
    pos * base^(-2j / n); the first half by the row, the second by the column. x `(L, head_dim)`."""
    L, hd = x.shape
    n = hd // 2
    out = torch.empty_like(x, dtype=torch.float64)
    for half, pos in ((0, rows), (1, cols)):
        for j in range(n // 2):
            ang = pos.double() * base ** (-2 * j / n)
            a, b = x[:, half * n + 2 * j].double(), x[:, half * n + 2 * j + 1].double()
            out[:, half * n + 2 * j] = a * ang.cos() - b * ang.sin()
            out[:, half * n + 2 * j + 1] = b * ang.cos() + a * ang.sin()
    return out


@pytest.mark.parametrize("head_dim", [8, 16, 64])
def test_rope_permutation_maps_interleaved_pairs_onto_our_rotate_half(head_dim):
    g = torch.Generator().manual_seed(head_dim)
    L = 11
    x = torch.randn(L, head_dim, generator=g, dtype=torch.float64)
    rows, cols = torch.randint(0, 16, (L,), generator=g), torch.randint(0, 16, (L,), generator=g)
    perm = rope_channel_permutation(head_dim)
    assert sorted(perm.tolist()) == list(range(head_dim))
    ids = torch.stack((torch.zeros(L, dtype=torch.long), torch.full((L,), -100), rows, cols), -1)[None]
    cos, sin = RoPE2D(head_dim).tables(ids)
    ours = apply_rope(x[None, None, :, perm].float(), cos, sin)[0, 0].double()
    theirs = _interleaved_rope(x, rows, cols)[:, perm]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def _conf(variant: str) -> dict:
    return yaml.safe_load((FIXTURES / f"config_{variant}.yaml").read_text())["conf"]


def test_settings_map_to_our_run_config():
    cfg = run_config_from_reference(_conf("tanh"), "author")
    m = cfg.model
    assert cfg.name == "author" and m.patch_size == 4 and m.window_size == 2
    assert (m.encoder.dim, m.encoder.depth, m.encoder.num_heads) == (32, 2, 2)
    assert (m.encoder.block_norm, m.encoder.out_norm, m.encoder.out_norm_affine) == ("dyntanh", "dyntanh", False)
    assert (m.predictor.dim, m.predictor.depth, m.predictor.num_heads, m.predictor.out_norm) == (16, 1, 1, "layernorm")
    assert (m.objective.target_norm, m.objective.batch_repeat, m.objective.context_capacity) == ("disabled", 1, 1.0)
    # 256-px sides in 4-px patches: 4096 patches, half of them context at most, and all but
    # the smallest context (a quarter of the windows) as targets
    assert (cfg.data.max_context_tokens, cfg.data.max_target_tokens) == (2048, 3072)
    assert run_config_from_reference(_conf("ln")).model.objective.target_norm == "layernorm"


@pytest.mark.parametrize(
    "path, value, named",
    [
        ("model.encoder.block_config.mlp_mode", "diffmoe", "mlp_mode"),
        ("model.encoder.tome_layerwise_merge_rate", 0.05, "tome_layerwise_merge_rate"),
        ("model.predictor.max_num_register_tokens", 4, "max_num_register_tokens"),
    ],
)
def test_unsupported_reference_options_fail_in_one_line_naming_them(path, value, named):
    conf = copy.deepcopy(_conf("tanh"))
    cur = conf
    *parents, leaf = path.split(".")
    for k in parents:
        cur = cur[k]
    cur[leaf] = value
    with pytest.raises(ReferenceConversionError) as e:
        run_config_from_reference(conf)
    assert named in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "path, value, ours",
    [
        ("model.predictor.should_mlp_in", True, ("predictor", "mlp_in", True)),
        ("model.should_predict_from_all_target", True, ("objective", "targets_include_context", True)),
        ("model.should_attempt_mask_dropping", False, ("objective", "padding_windows_last", False)),
        ("model.sample_predictor_targets_with_replacement", False, ("objective", "target_with_replacement", False)),
        ("model.sample_predictor_context_with_replacement", False, ("objective", "context_with_replacement", False)),
    ],
)
def test_the_reference_hidden_options_map_to_ours(path, value, ours):
    conf = copy.deepcopy(_conf("tanh"))
    cur = conf
    *parents, leaf = path.split(".")
    for k in parents:
        cur = cur[k]
    cur[leaf] = value
    if "with_replacement" in leaf:  # disjoint draws need capacity x repeat <= 1
        conf["model"]["predictor_batch_repeat"] = 1
    m = run_config_from_reference(conf).model
    section, key, expected = ours
    assert getattr(getattr(m, section), key) == expected


def _write_reference_checkpoint(tmp_path: Path, variant: str) -> Path:
    """A checkpoint in the reference's format (weights of the loss fixture) and its config.yaml."""
    z = np.load(FIXTURES / "loss.npz")
    model = {k[len(variant) + 1:]: torch.from_numpy(z[k]) for k in z.files if k.startswith(f"{variant}/")}
    folder = tmp_path / "checkpoints" / "2025-01-01 00:00:00"
    folder.mkdir(parents=True)
    torch.save({"training_state": {"global_step": 12, "epoch": 0, "num_total_samples": 345}, "grad_scaler": {},
                "model": model, "optimizer": {"state": {}, "param_groups": []}}, folder / "00000.pt")
    (folder / "config.yaml").write_text((FIXTURES / f"config_{variant}.yaml").read_text())
    return folder / "00000.pt"


def test_script_writes_a_model_pt_our_evaluation_loads_with_the_reference_loss(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert", REPO / "scripts" / "convert_reference_checkpoint.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    ckpt = _write_reference_checkpoint(tmp_path, "ln")
    out = tmp_path / "model.pt"
    assert script.main(["--checkpoint", str(ckpt), "--out", str(out), "--name", "author-ln"]) == 0
    d = load_checkpoint_dict(out)
    assert {"config", "teacher", "student", "predictor", "target_norm"} <= set(d)
    assert (d["step"], d["images_seen"]) == (12, 345)
    cfg = run_config_of(d, out)
    encoder, _ = load_encoder(out)
    assert not encoder.training
    # the converted model reproduces the reference's loss on the fixture batch (the LN run's
    # loss is insensitive to our LayerNorm eps, see test_reference_fixtures)
    model = IJEPA(cfg.model)
    for name in ("teacher", "student", "predictor", "target_norm"):
        getattr(model, name).load_state_dict(d[name])
    z = np.load(FIXTURES / "loss.npz")
    batch = PackedBatch(torch.from_numpy(z["pixels"]), torch.from_numpy(z["token_ids"]), int(z["context_length"]))
    with torch.no_grad():
        loss = float(model.train()(batch, generator=torch.Generator().manual_seed(0)).loss)
    meta = yaml.safe_load((FIXTURES / "meta.json").read_text())
    assert loss == pytest.approx(meta["loss"]["ln"]["loss"], rel=1e-5)
    # teacher and student were converted separately (they differ in the fixture)
    assert not torch.equal(d["teacher"]["patch_embed.weight"], d["student"]["patch_embed.weight"])
    assert math.isfinite(float(encoder(batch.pixels, batch.token_ids)[is_patch(batch.token_ids)].sum()))


def test_script_reports_missing_files_and_unsupported_settings_in_one_line(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert", REPO / "scripts" / "convert_reference_checkpoint.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    ckpt = _write_reference_checkpoint(tmp_path, "tanh")
    conf = yaml.safe_load((ckpt.parent / "config.yaml").read_text())
    conf["conf"]["model"]["encoder"]["block_config"]["mlp_mode"] = "diffmoe"
    (ckpt.parent / "config.yaml").write_text(yaml.safe_dump(conf))
    assert script.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "mlp_mode" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m.pt").exists()


def test_conversion_refuses_weights_it_does_not_know():
    z = np.load(FIXTURES / "loss.npz")
    model = {k[len("tanh/"):]: torch.from_numpy(z[k]) for k in z.files if k.startswith("tanh/")}
    model["encoder.blocks.0.mlp.gate.weight"] = torch.zeros(2, 2)
    with pytest.raises(ReferenceConversionError, match="mlp.gate.weight"):
        convert_reference(model, _conf("tanh"))
