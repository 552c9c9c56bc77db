"""Run configuration: plain dataclasses with the paper's ViT-S defaults.

A run is `RunConfig()` (the defaults, here and nowhere else) updated by the overrides of a
YAML file. `load_run_config(path)` reads YAML with `safe_load`, rejects unknown keys and
impossible values with a sentence naming the field, and returns a validated `RunConfig`.
`config_hash(cfg)` identifies a run's settings (checkpoints record it; the workflow keys
resume folders by it).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

NormKind = Literal["layernorm", "dyntanh"]
OutNormKind = Literal["layernorm", "dyntanh", "batchnorm", "disabled"]
TargetNormKind = Literal[
    "layernorm", "disabled", "batchnorm", "running-batchnorm", "running-batchnorm-singleton"
]


class ConfigError(ValueError):
    """A run configuration names an unknown key or an impossible value."""


@dataclass
class DynTanhConfig:
    alpha: Literal["vector", "scalar"] = "vector"  # per-channel alpha (reference) or one scalar (DyT paper)
    alpha_init: float = 0.5


@dataclass
class MoEConfig:
    """DiffMoE MLP (issue 8). `num_experts: 0` means a plain dense MLP."""

    num_experts: int = 0
    capacity: float = 1.0
    threshold_beta: float = 0.95


@dataclass
class ToMeConfig:
    """Token merging after each block (issue 8). `ratio: 0` disables it."""

    ratio: float = 0.0


@dataclass
class EncoderConfig:
    dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    qk_norm: NormKind = "layernorm"
    block_norm: NormKind = "dyntanh"  # the reference's conf/small.yaml (norm_mode: dyntanh)
    out_norm: OutNormKind = "dyntanh"
    out_norm_affine: bool = False
    pos_embed: Literal["rope", "absolute"] = "rope"
    rope_base: float = 10000.0
    max_grid_size: int = 64  # rows/cols of the learned absolute position tables
    num_registers: int = 0
    dyntanh: DynTanhConfig = field(default_factory=DynTanhConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)
    tome: ToMeConfig = field(default_factory=ToMeConfig)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


@dataclass
class PredictorConfig:
    dim: int = 256
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    qk_norm: NormKind = "layernorm"
    block_norm: NormKind = "dyntanh"  # the reference's conf/small.yaml (norm_mode: dyntanh)
    out_norm: NormKind = "layernorm"
    # Input projection: a linear map (reference default) or Linear -> tanh-GELU -> Linear with
    # a hidden width of 4 x encoder dim (the reference's should_mlp_in)
    mlp_in: bool = False
    pos_embed: Literal["rope", "absolute"] = "rope"
    rope_base: float = 10000.0
    max_grid_size: int = 64
    num_registers: int = 0
    encoder_registers: Literal["pass", "wipe"] = "pass"
    dyntanh: DynTanhConfig = field(default_factory=DynTanhConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)
    tome: ToMeConfig = field(default_factory=ToMeConfig)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


@dataclass
class ObjectiveConfig:
    """The I-JEPA step (SPEC section 3, steps 1-5)."""

    target_norm: TargetNormKind = "disabled"
    target_norm_beta: float = 0.99  # EMA of the running batchnorm modes
    batch_repeat: int = 4
    context_capacity: float = 0.25
    target_capacity: float = 0.25
    # per segment: independent draws per copy (true), or disjoint chunks of one permutation
    context_with_replacement: bool = True
    target_with_replacement: bool = True
    smooth_l1_beta: float = 1.0
    # The reference's hidden options (all off there, as here):
    # targets drawn from every window of the row, context windows included
    # (should_predict_from_all_target)
    targets_include_context: bool = False
    # windows made only of padding are drawn after every real window (should_attempt_mask_dropping);
    # false: drawn like any other window (they never count in the loss)
    padding_windows_last: bool = True
    # register tokens drawn as targets count in the loss (should_predict_register_tokens; only
    # with targets_include_context, since registers sit in the context segment)
    predict_registers: bool = False


@dataclass
class ModelConfig:
    patch_size: int = 16
    window_size: int = 2
    # Weight init of student, teacher and predictor: PyTorch's defaults (nn.Linear's
    # kaiming-uniform weights and uniform biases: the reference's) or ViT-style trunc-normal
    # std 0.02 weights with zero biases. Learned embeddings (registers, mask token, absolute
    # positions) are normal std 0.02 in both.
    init: Literal["torch-default", "trunc-normal"] = "torch-default"
    # Attention kernel of encoder and predictor (same function, fp32 outputs within 1e-5):
    # sdpa (dense boolean mask; CPU and CUDA, forward and backward) or flex (FlexAttention
    # with a block mask, compiled on CUDA; on the CPU only without gradients, so it cannot
    # train there). sdpa is the default because it is what runs everywhere and is faster on
    # the CPU (benchmarks/attention_backends.py); which is faster on a GPU is decided by the
    # device check (benchmarks/device_check.sh), not yet run.
    attention_backend: Literal["sdpa", "flex"] = "sdpa"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size * 3


@dataclass
class DataConfig:
    train_shards: str = ""  # brace pattern or directory holding manifest.json
    min_side: int = 64
    max_side: int = 256
    context_ratio_min: float = 0.25
    context_ratio_max: float = 0.5
    max_context_tokens: int = 128
    max_target_tokens: int = 192
    rows_per_pack: int = 64
    shuffle_buffer: int = 500  # images per (rank, worker) shuffle buffer before packing (the reference: 500)
    num_workers: int = 4
    # "first-fit" (the reference, SPEC 2): images in arrival order, each into the first row
    # where it fits, a pack emitted when one fits no row. "best-fit": a look-ahead buffer
    # placed largest first (featnorm.data.packing_best_fit). Fills: README "Speed".
    packing: Literal["first-fit", "best-fit"] = "first-fit"
    # best-fit only. False: every image keeps its drawn split. True: target windows move into
    # the context (each image within its allowed range) to fill both segments, which raises
    # the mean context fraction above the drawn one (0.379 -> 0.400 at the paper's settings)
    packing_rebalance: bool = False
    # JPEG decoder of the training pipeline: pil (DCT-domain draft for downscales of 2x or
    # more, then bilinear) or torchvision (torchvision.io.decode_jpeg of the full image, then
    # antialiased bilinear); see featnorm.data.resize. Speeds: README, benchmarks/data_pipeline.py.
    decode: Literal["pil", "torchvision"] = "pil"


@dataclass
class TrainConfig:
    batch_size: int = 320  # packed rows per step
    epochs: float = 600.0  # one epoch = one dataset's worth of images seen
    steps: int = 0  # if > 0, overrides epochs
    lr_start: float = 1e-4
    lr_peak: float = 5e-4
    lr_warmup_steps: int = 10_000
    lr_cooldown_steps: int = 0
    lr_end: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05
    # which parameters decay: "all" (the reference: biases, norm gains, DynTanh alphas, mask
    # token and registers too) or "matrices" (the usual ViT choice: weight matrices only)
    weight_decay_params: Literal["all", "matrices"] = "all"
    grad_clip: float = 0.0  # 0 disables
    ema_start: float = 0.95
    ema_mid: float = 0.999
    ema_warmup_steps: int = 1_000
    ema_end: float = 0.9995
    ema_anneal_steps: int = 300_000
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    compile: bool = False
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 1
    rankme_every: int = 1000
    lidar_every: int = 10_000
    lidar_images: int = 1000
    lidar_augmentations: int = 50
    tensorboard: bool = False
    wandb: bool = False
    # Steps after which the trainer also writes runs/<run>/snapshots/step-<N>.pt (model.pt's
    # format; not resume checkpoints): the learning curve of the k-NN gain over random init
    snapshot_steps: tuple[int, ...] = ()
    # GPUs (torchrun processes) the workflow gives this run; batch_size stays the global
    # batch (batch_size / gpus rows per process). Not part of config_hash: a run may
    # resume on another number of GPUs (see featnorm.train.trainer).
    gpus: int = 1


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# ----------------------------------------------------------------------------- loading


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping of {tp.__name__} fields, got {value!r}")
        return _from_dict(tp, value, where)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where} = {value!r} is not one of {list(allowed)}")
        return value
    if origin in (typing.Union, types.UnionType):
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[int, ...]: a list of any length
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{where} must be a list, got {value!r}")
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


def _from_dict(cls: type, data: dict, where: str = "") -> Any:
    hints = _field_types(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s}; known keys here: {sorted(known)}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(value, hints[name], key)
    return cls(**kwargs)


def deep_merge(base: dict, overrides: dict) -> dict:
    """Recursively merge `overrides` into a copy of `base` (mappings merge, other values replace)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def to_dict(cfg: Any) -> dict:
    """A plain, YAML/JSON-serialisable dict of a config dataclass (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def run_config_from_dict(data: dict | None) -> RunConfig:
    """Defaults updated by `data` (a nested mapping of overrides), validated."""
    cfg = _from_dict(RunConfig, data or {})
    validate(cfg)
    return cfg


def load_run_config(path: str | Path) -> RunConfig:
    """Read a run YAML (safe_load) and return the validated config; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    with path.open() as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys")
    try:
        return run_config_from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def save_run_config(cfg: RunConfig, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    tmp.replace(path)


def config_hash(cfg: RunConfig, section: str | None = None) -> str:
    """A short stable hash of the settings (or of one section such as 'model')."""
    d = to_dict(cfg)
    d["train"].pop("gpus", None)  # where a run trains does not change what it trains
    if section is not None:
        d = d[section]
    blob = json.dumps(d, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ----------------------------------------------------------------------------- validation


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _validate_net(c: EncoderConfig | PredictorConfig, where: str) -> None:
    _check(c.dim > 0 and c.depth > 0 and c.num_heads > 0, f"{where}: dim, depth and num_heads must be positive")
    _check(
        c.dim % c.num_heads == 0,
        f"{where}.dim = {c.dim} is not divisible by {where}.num_heads = {c.num_heads}",
    )
    hd = c.dim // c.num_heads
    _check(hd % 2 == 0, f"{where}: head dim {hd} (dim / num_heads) must be even")
    if c.pos_embed == "rope":
        _check(
            hd % 4 == 0,
            f"{where}: 2-D RoPE needs a head dim divisible by 4 (half per axis, in pairs); got {hd}",
        )
    _check(c.mlp_ratio > 0, f"{where}.mlp_ratio must be positive, got {c.mlp_ratio}")
    _check(c.num_registers >= 0, f"{where}.num_registers must be >= 0, got {c.num_registers}")
    _check(c.max_grid_size > 0, f"{where}.max_grid_size must be positive")
    _check(c.rope_base > 0, f"{where}.rope_base must be positive, got {c.rope_base}")
    _check(c.dyntanh.alpha_init > 0, f"{where}.dyntanh.alpha_init must be positive")
    _check(c.moe.num_experts >= 0, f"{where}.moe.num_experts must be >= 0")
    _check(0 < c.moe.capacity <= 1, f"{where}.moe.capacity = {c.moe.capacity} must be in (0, 1]")
    _check(0 < c.moe.threshold_beta < 1, f"{where}.moe.threshold_beta must be in (0, 1)")
    _check(0 <= c.tome.ratio < 1, f"{where}.tome.ratio = {c.tome.ratio} must be in [0, 1)")


def validate(cfg: RunConfig) -> None:
    """Raise ConfigError naming the field for settings that cannot work."""
    m = cfg.model
    _check(m.patch_size > 0, f"model.patch_size must be positive, got {m.patch_size}")
    _check(m.window_size > 0, f"model.window_size must be positive, got {m.window_size}")
    _validate_net(m.encoder, "model.encoder")
    _validate_net(m.predictor, "model.predictor")
    o = m.objective
    _check(o.batch_repeat >= 1, f"model.objective.batch_repeat must be >= 1, got {o.batch_repeat}")
    for seg in ("context", "target"):
        v = getattr(o, f"{seg}_capacity")
        _check(0 < v <= 1, f"model.objective.{seg}_capacity = {v} must be in (0, 1]")
        if not getattr(o, f"{seg}_with_replacement"):
            _check(
                v * o.batch_repeat <= 1 + 1e-9,
                f"model.objective.{seg}_capacity = {v} x batch_repeat = {o.batch_repeat} exceeds 1: "
                "sampling without replacement cannot give that many disjoint draws; "
                f"lower one of them or set {seg}_with_replacement: true",
            )
    _check(
        not o.predict_registers or o.targets_include_context,
        "model.objective.predict_registers needs targets_include_context: true "
        "(register tokens sit in the context segment, so only then can they be targets)",
    )
    _check(0 < o.target_norm_beta < 1, "model.objective.target_norm_beta must be in (0, 1)")
    _check(o.smooth_l1_beta > 0, "model.objective.smooth_l1_beta must be positive")

    d = cfg.data
    _check(0 < d.min_side <= d.max_side, f"data.min_side = {d.min_side} must be in (0, data.max_side = {d.max_side}]")
    unit = m.patch_size * m.window_size
    _check(
        d.max_side >= 2 * unit,
        f"data.max_side = {d.max_side} is below 2 x patch_size x window_size = {2 * unit}",
    )
    # the resize can put the long side of a very elongated image one multiple above max_side
    longest = (d.max_side // unit + 1) * m.window_size
    for net, where in ((m.encoder, "model.encoder"), (m.predictor, "model.predictor")):
        _check(
            net.pos_embed != "absolute" or longest <= net.max_grid_size,
            f"{where}.max_grid_size = {net.max_grid_size} is below the {longest} patches a side can have "
            f"(data.max_side = {d.max_side} plus {unit} px for very elongated images): raise it",
        )
    _check(
        0 < d.context_ratio_min <= d.context_ratio_max < 1,
        "data.context_ratio_min/max must satisfy 0 < min <= max < 1",
    )
    win = m.window_size**2
    _check(
        d.max_context_tokens % win == 0 and d.max_context_tokens > 0,
        f"data.max_context_tokens = {d.max_context_tokens} must be a positive multiple of window_size^2 = {win}",
    )
    _check(
        d.max_target_tokens % win == 0 and d.max_target_tokens > 0,
        f"data.max_target_tokens = {d.max_target_tokens} must be a positive multiple of window_size^2 = {win}",
    )
    _check(d.rows_per_pack > 0, "data.rows_per_pack must be positive")
    _check(
        not d.packing_rebalance or d.packing == "best-fit",
        "data.packing_rebalance: true needs data.packing: best-fit (first fit keeps every image's drawn split)",
    )
    _check(d.num_workers >= 0, "data.num_workers must be >= 0")

    t = cfg.train
    _check(t.batch_size > 0, f"train.batch_size must be positive, got {t.batch_size}")
    _check(t.gpus >= 1, f"train.gpus must be at least 1, got {t.gpus}")
    _check(
        t.batch_size % t.gpus == 0,
        f"train.batch_size = {t.batch_size} (the global batch) is not divisible by train.gpus = {t.gpus}; "
        f"each GPU takes batch_size / gpus rows: pick a multiple of {t.gpus}",
    )
    _check(t.epochs > 0 or t.steps > 0, "set train.epochs or train.steps to a positive value")
    _check(t.lr_start >= 0 and t.lr_peak > 0 and t.lr_end >= 0, "train learning rates must be >= 0 (lr_peak > 0)")
    for name in ("ema_start", "ema_mid", "ema_end"):
        v = getattr(t, name)
        _check(0 <= v < 1, f"train.{name} = {v} must be in [0, 1)")
    _check(all(0 <= b < 1 for b in t.betas), f"train.betas = {t.betas} must be in [0, 1)")
    _check(t.checkpoint_every > 0 and t.keep_checkpoints > 0, "train.checkpoint_every and keep_checkpoints must be positive")
    snaps = list(t.snapshot_steps)
    _check(all(s > 0 for s in snaps) and snaps == sorted(set(snaps)),
           f"train.snapshot_steps = {snaps} must be increasing positive steps")
    _check(t.steps <= 0 or not snaps or snaps[-1] <= t.steps,
           f"train.snapshot_steps = {snaps} go beyond train.steps = {t.steps}; training never reaches step {snaps[-1] if snaps else 0}")
