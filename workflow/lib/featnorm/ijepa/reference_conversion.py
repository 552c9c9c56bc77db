"""Convert a checkpoint of the paper author's reference code into our `model.pt` format.

The reference saves `{"model": state_dict, "training_state": {...}, "optimizer", "grad_scaler"}`
next to a `config.yaml` (`{"conf": MainConfig as a mapping}`). `convert_reference` maps its
settings to a `RunConfig` and its weights to our module layout, so the author's trained
models go through our evaluation (features, probes, LiDAR, figures) unchanged.

What differs besides names:
- RoPE pairing. The reference rotates interleaved channel pairs (2j, 2j + 1) of each axis
  half of a head; ours rotates (j, j + head_dim / 4) ("rotate half" inside each axis half).
  Attention scores only see q.k, so permuting the q and k channels of every head the same
  way (rows of the qkv projection) and the per-head q/k-norm parameters with them gives the
  same attention. LayerNorm and DynTanh over a head are permutation-equivariant.
- DynTanh's affine parameters are `gamma` / `beta` there, `weight` / `bias` here.
- Running batchnorm keeps a running std there; we convert to whatever our buffer holds
  (std, or var = std^2).
Options our model does not have (DiffMoE routing of the reference's own package, ToMe, an MLP
predictor input, predictor registers, predicting from all targets, ...) raise
`ReferenceConversionError` with one line naming the setting.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import yaml

from featnorm.config import RunConfig, run_config_from_dict, to_dict


class ReferenceConversionError(ValueError):
    """A reference setting or weight that has no counterpart in our model."""


def rope_channel_permutation(head_dim: int) -> torch.Tensor:
    """`(head_dim,)` index p with ours[c] = reference[p[c]] inside one head.

    Each axis half of `head_dim / 2` channels: our channel j < head_dim / 4 is the reference's
    2j (the pair's first element), our j + head_dim / 4 its 2j + 1."""
    if head_dim % 4:
        raise ReferenceConversionError(f"2-D RoPE needs a head dim divisible by 4, got {head_dim}")
    q = head_dim // 4
    half = torch.cat((torch.arange(q) * 2, torch.arange(q) * 2 + 1))
    return torch.cat((half, half + head_dim // 2))


# --------------------------------------------------------------------------- config


def _get(d: dict, path: str, default=None):
    cur = d
    for k in path.split("."):
        if not isinstance(cur, dict) or k not in cur:
            return default
        cur = cur[k]
    return cur


def _unsupported(ok: bool, setting: str, value) -> None:
    if not ok:
        raise ReferenceConversionError(
            f"reference setting {setting} = {value!r} has no counterpart in featnorm; this checkpoint cannot be converted"
        )


def _net(net: dict, where: str, patch_dim: int | None) -> dict:
    """Our encoder/predictor section from the reference's encoder/predictor config."""
    block = net.get("block_config", {})
    attn = block.get("attention_config", {})
    dim, heads, head_dim = block.get("embed_dim"), attn.get("num_attention_heads"), attn.get("head_dim")
    _unsupported(attn.get("embed_dim", dim) == dim, f"{where}.block_config.attention_config.embed_dim", attn.get("embed_dim"))
    _unsupported(heads * head_dim == dim, f"{where}: heads x head_dim != embed_dim ({heads} x {head_dim} vs {dim})", head_dim)
    _unsupported(attn.get("should_use_qk_norm", True), f"{where}...should_use_qk_norm", attn.get("should_use_qk_norm"))
    _unsupported(block.get("mlp_mode", "vanilla") == "vanilla", f"{where}.block_config.mlp_mode", block.get("mlp_mode"))
    rope, absolute = net.get("use_rope2d", True), net.get("use_abs_pos_emb", False)
    _unsupported(rope != absolute, f"{where}.use_rope2d/use_abs_pos_emb", (rope, absolute))
    rows, cols = net.get("max_num_height_tokens", 64), net.get("max_num_width_tokens", 64)
    _unsupported(rows == cols, f"{where}.max_num_height_tokens != max_num_width_tokens", (rows, cols))
    if patch_dim is not None:
        _unsupported(net.get("input_size") == patch_dim, f"{where}.input_size (patch dim {patch_dim})", net.get("input_size"))
    out = {
        "dim": dim,
        "depth": net["num_transformer_blocks"],
        "num_heads": heads,
        "mlp_ratio": 4.0,
        "qk_norm": attn.get("qk_norm_mode", "layernorm"),
        "block_norm": block.get("norm_mode", "layernorm"),
        "out_norm": net.get("norm_out_mode", "layernorm"),
        "pos_embed": "rope" if rope else "absolute",
        "max_grid_size": rows,
        "num_registers": int(net.get("max_num_register_tokens") or 0),
    }
    return out


def run_config_from_reference(conf: dict, name: str = "reference") -> RunConfig:
    """Our RunConfig from the reference's `conf` mapping (config.yaml's top-level `conf`)."""
    model = conf.get("model", {})
    enc, pred = model.get("encoder", {}), model.get("predictor", {})
    data = conf.get("context_target_dataset", {})
    patch = conf.get("patch_size", 16)
    patch_dim = conf.get("num_image_channels", 3) * patch * patch
    _unsupported(conf.get("num_image_channels", 3) == 3, "num_image_channels", conf.get("num_image_channels"))
    _unsupported(enc.get("tome_layerwise_merge_rate") is None, "model.encoder.tome_layerwise_merge_rate", enc.get("tome_layerwise_merge_rate"))
    _unsupported(not (pred.get("max_num_register_tokens") or 0), "model.predictor.max_num_register_tokens", pred.get("max_num_register_tokens"))
    ctx_repl = model.get("sample_predictor_context_with_replacement", True)
    tgt_repl = model.get("sample_predictor_targets_with_replacement", True)

    encoder = _net(enc, "model.encoder", patch_dim)
    encoder["out_norm_affine"] = bool(enc.get("norm_elementwise_affine", True)) and encoder["out_norm"] != "batchnorm"
    predictor = _net(pred, "model.predictor", None)
    predictor["mlp_in"] = bool(pred.get("should_mlp_in", False))
    _unsupported(pred.get("input_size") == encoder["dim"], "model.predictor.input_size (encoder dim)", pred.get("input_size"))
    _unsupported(predictor["out_norm"] in ("layernorm", "dyntanh"), "model.predictor.norm_out_mode", predictor["out_norm"])

    ws = data.get("mask_window_size", 2)
    max_side = data.get("max_side_length", 256)
    max_patches = (max_side // patch) ** 2
    max_ctx = int(round(max_patches * data.get("absolute_max_context_capacity", 0.5)))
    min_ctx_windows = int((max_patches // ws**2) * data.get("min_context_capacity", 0.25))
    steady = conf.get("num_lr_steady_steps", 250000)
    cfg = {
        "name": name,
        "seed": conf.get("seed") or 0,
        "model": {
            "patch_size": patch,
            "window_size": ws,
            "encoder": encoder,
            "predictor": predictor,
            "objective": {
                "target_norm": model.get("target_norm_mode", "layernorm"),
                "batch_repeat": model.get("predictor_batch_repeat", 8),
                "context_capacity": model.get("predictor_context_capacity", 0.125),
                "target_capacity": model.get("predictor_target_capacity", 0.125),
                "context_with_replacement": bool(ctx_repl),
                "target_with_replacement": bool(tgt_repl),
                "targets_include_context": bool(model.get("should_predict_from_all_target", False)),
                "padding_windows_last": bool(model.get("should_attempt_mask_dropping", True)),
                "predict_registers": bool(model.get("should_predict_register_tokens", False)),
            },
        },
        "data": {
            "min_side": data.get("min_side_length", 64),
            "max_side": max_side,
            "context_ratio_min": data.get("min_context_capacity", 0.25),
            "context_ratio_max": data.get("max_context_capacity", 0.5),
            "max_context_tokens": max_ctx - max_ctx % (ws * ws),
            "max_target_tokens": max_patches - min_ctx_windows * ws * ws,
            "rows_per_pack": data.get("packer_batch_size", 64),
        },
        "train": {
            "batch_size": conf.get("batch_size", 256),
            "epochs": float(conf.get("num_epochs", 350)),
            "lr_start": conf.get("start_lr", 1e-4),
            "lr_peak": conf.get("steady_lr", 5e-4),
            "lr_warmup_steps": conf.get("num_lr_warmup_steps", 10000),
            # ours cools down over the last N steps of the run, the reference after a fixed
            # steady phase; a steady phase longer than any run (conf/small.yaml) means none
            "lr_cooldown_steps": 0 if steady >= 10**9 else conf.get("num_lr_cooldown_steps", 50000),
            "lr_end": conf.get("end_lr", 1e-5),
            "ema_start": conf.get("ema_beta_start", 0.8),
            "ema_mid": conf.get("ema_beta_steady", 0.996),
            "ema_warmup_steps": conf.get("ema_beta_warmup_steps", 1000),
            "ema_end": conf.get("ema_beta_end", 0.9999),
            "ema_anneal_steps": conf.get("ema_beta_steady_steps", 400000),
        },
    }
    return run_config_from_dict(cfg)


# --------------------------------------------------------------------------- weights

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_NORM_NAMES = {"gamma": "weight", "beta": "bias"}


def _norm_param(name: str) -> str:
    return _NORM_NAMES.get(name, name)


def _head_permuted(t: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """A per-head q/k-norm parameter `(head_dim,)` in our channel order."""
    return t[perm] if t.ndim == 1 and t.shape[0] == perm.shape[0] else t


def _qkv_permuted(w: torch.Tensor, num_heads: int, head_dim: int, perm: torch.Tensor) -> torch.Tensor:
    """`(3 * heads * head_dim, dim)` rows laid out (three, head, channel): q and k channels permuted."""
    w = w.view(3, num_heads, head_dim, -1).clone()
    w[0], w[1] = w[0][:, perm], w[1][:, perm]
    return w.view(3 * num_heads * head_dim, -1)


def _block_key(rest: str, t: torch.Tensor, num_heads: int, head_dim: int, perm: torch.Tensor | None):
    parts = rest.split(".")
    if parts[0] in ("norm1", "norm2") and len(parts) == 2:
        return f"{parts[0]}.{_norm_param(parts[1])}", t
    if parts[0] == "mlp" and len(parts) == 3 and parts[1] in ("fc1", "fc2"):
        return rest, t
    if parts[0] == "attention":
        if parts[1:] == ["proj_qkv", "weight"]:
            return "attn.qkv.weight", t if perm is None else _qkv_permuted(t, num_heads, head_dim, perm)
        if parts[1:] == ["proj_out", "weight"]:
            return "attn.proj.weight", t
        if parts[1] in ("q_norm", "k_norm") and len(parts) == 3:
            return f"attn.{parts[1]}.{_norm_param(parts[2])}", t if perm is None else _head_permuted(t, perm)
    return None, t


def convert_net_state(
    ref: dict, kind: str, num_heads: int, head_dim: int, rope: bool
) -> dict:
    """Our Encoder (`kind='encoder'`) or Predictor state dict from the reference's module
    state dict (keys without the model-level prefix).
    """
    perm = rope_channel_permutation(head_dim) if rope else None
    top = {
        "encoder": {"proj_in.weight": "patch_embed.weight", "proj_in.bias": "patch_embed.bias", "reg_emb": "registers"},
        "predictor": {"proj_in.weight": "embed.weight", "proj_in.bias": "embed.bias", "pred_emb": "mask_token",
                      "proj_out.weight": "out_proj.weight", "proj_out.bias": "out_proj.bias"},
    }[kind]
    top.update({"h_emb": "abs_pos.row", "w_emb": "abs_pos.col"})
    if kind == "predictor":  # should_mlp_in: proj_in is Linear -> GELU -> Linear, as our embed
        top.update({f"proj_in.{i}.{p}": f"embed.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")})
    out = {}
    for key, t in ref.items():
        new = None
        if key in top:
            new = top[key]
        elif (m := _BLOCK.match(key)) is not None:
            name, t = _block_key(m.group(2), t, num_heads, head_dim, perm)
            new = None if name is None else f"blocks.{m.group(1)}.{name}"
        elif key.startswith("norm_out."):
            leaf = key.split(".", 1)[1]
            if leaf == "is_initted":  # the reference's float flag; ours is a bool buffer
                leaf, t = "initialized", t.reshape(()) > 0
            new = f"out_norm.{_norm_param(leaf)}"
        if new is None:
            raise ReferenceConversionError(f"reference weight {kind}.{key} has no counterpart in our {kind}")
        out[new] = t
    return out


def _target_norm_state(ref: dict, ours: dict) -> dict:
    """Our TargetNorm buffers (`running.running_mean`, `running.running_std`,
    `running.initialized`) from the reference's `running_batchnorm`."""
    out = dict(ours)
    for leaf, t in ref.items():
        if leaf == "is_initted":
            leaf, t = "initialized", t.reshape(()) > 0
        out[f"running.{leaf}"] = t
    return out


def convert_reference(model_state: dict, conf: dict, training_state: dict | None = None, name: str = "reference") -> dict:
    """Our `model.pt` dict (config, teacher, student, predictor, target_norm, step,
    images_seen) from the reference's model state dict and its `conf` mapping.

    Loads the result into a freshly built IJEPA (strict), so a mismatch fails here."""
    from featnorm.ijepa.objective import IJEPA

    cfg = run_config_from_reference(conf, name)
    m = cfg.model
    model = IJEPA(m)
    parts: dict[str, dict] = {"encoder": {}, "ema_encoder": {}, "predictor": {}, "running_batchnorm": {}}
    for key, t in model_state.items():
        head, _, rest = key.partition(".")
        if head not in parts:
            raise ReferenceConversionError(f"reference weight {key} has no counterpart in featnorm")
        parts[head][rest] = t
    enc_rope, pred_rope = m.encoder.pos_embed == "rope", m.predictor.pos_embed == "rope"
    args = (m.encoder.num_heads, m.encoder.head_dim, enc_rope)
    student = convert_net_state(parts["encoder"], "encoder", *args)
    teacher = convert_net_state(parts["ema_encoder"], "encoder", *args)
    predictor = convert_net_state(parts["predictor"], "predictor", m.predictor.num_heads, m.predictor.head_dim, pred_rope)
    target_norm = _target_norm_state(parts["running_batchnorm"], model.target_norm.state_dict())
    for net, sd, what in ((model.student, student, "student"), (model.teacher, teacher, "teacher"),
                          (model.predictor, predictor, "predictor"), (model.target_norm, target_norm, "target_norm")):
        ref_shapes = net.state_dict()
        for k, v in sd.items():
            if k in ref_shapes:
                sd[k] = v.to(ref_shapes[k].dtype).reshape(ref_shapes[k].shape)
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise ReferenceConversionError(f"converted {what} weights do not fit our model: {' '.join(first[:2])}") from None
    ts = training_state or {}
    return {
        "config": to_dict(cfg),
        "teacher": model.teacher.state_dict(),
        "student": model.student.state_dict(),
        "predictor": model.predictor.state_dict(),
        "target_norm": model.target_norm.state_dict(),
        "step": int(ts.get("global_step", 0)),
        "images_seen": int(ts.get("num_total_samples", 0)),
    }


def load_reference_checkpoint(checkpoint: str | Path, config: str | Path | None = None) -> tuple[dict, dict, dict]:
    """`(model_state, conf, training_state)` of a reference checkpoint and its config.yaml
    (default: the config.yaml beside the checkpoint, where the reference writes it).

    The checkpoint holds only tensors, numbers and plain containers (the reference saves
    model / optimizer / GradScaler state dicts and a dict of counters), so it loads with
    `weights_only=True`; the YAML is read with `safe_load`."""
    checkpoint = Path(checkpoint)
    config = Path(config) if config is not None else checkpoint.parent / "config.yaml"
    for path, what in ((checkpoint, "checkpoint"), (config, "config.yaml")):
        if not path.is_file():
            raise ReferenceConversionError(f"reference {what} {path} does not exist")
    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file becomes one sentence
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ReferenceConversionError(f"{checkpoint}: cannot be read as a reference checkpoint ({reason})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise ReferenceConversionError(f"{checkpoint}: expected the reference's dict with a 'model' state dict")
    with config.open() as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict) or not isinstance(data.get("conf"), dict):
        raise ReferenceConversionError(f"{config}: expected the reference's config.yaml with a top-level 'conf' mapping")
    return ckpt["model"], data["conf"], ckpt.get("training_state") or {}
