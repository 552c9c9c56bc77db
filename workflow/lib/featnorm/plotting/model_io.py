"""The model of a run, as the per-image figures need it.

`load_ijepa` rebuilds the whole I-JEPA module (student, EMA teacher, predictor) of a `model.pt`
for the loss maps; `load_teacher` only the teacher encoder (PCA, token energy), through the
evaluation package's loader. `image_row` turns one evaluation image into a one-row batch and
`teacher_features` runs the teacher on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from featnorm.config import RunConfig
from featnorm.data.eval_pipeline import eval_token_ids
from featnorm.evaluation.checkpoint_loading import CheckpointError, load_checkpoint_dict, run_config_of
from featnorm.evaluation.features import autocast_for
from featnorm.plotting.image_sources import patchify
from featnorm.plotting.run_results import FigureInputError
from featnorm.tokens import COL, REGISTER, ROW, SAMPLE, is_patch, padding_ids


def resolve_device(name: str | None) -> torch.device:
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_ijepa(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, RunConfig]:
    """The I-JEPA module of `model.pt` with student, teacher and predictor weights, in eval mode
    (DiffMoE routes differently in eval mode) and without gradients."""
    from featnorm.ijepa import IJEPA  # the objective module; imported lazily so tables need no model code

    ckpt = load_checkpoint_dict(path)
    cfg = run_config_of(ckpt, path)
    try:
        model = IJEPA(cfg.model)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: the model of its config cannot be built ({type(e).__name__}: {e})") from None
    for part in ("student", "teacher", "predictor"):
        if part not in ckpt:
            raise CheckpointError(f"{path}: has no '{part}' weights, which the loss maps need (keys: {sorted(ckpt)})")
        try:
            getattr(model, part).load_state_dict(ckpt[part])
        except RuntimeError as e:
            raise CheckpointError(f"{path}: '{part}' weights do not fit the model of its config ({str(e).splitlines()[0]})") from None
    if model.target_norm.state_dict():  # the running-batchnorm modes keep statistics
        if "target_norm" not in ckpt:
            raise CheckpointError(f"{path}: has no 'target_norm' statistics, which its target norm "
                                  f"{cfg.model.objective.target_norm!r} needs; retrain or rewrite model.pt")
        model.target_norm.load_state_dict(ckpt["target_norm"])
    model.to(device).eval()
    model.requires_grad_(False)
    return model, cfg


def load_teacher(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, RunConfig]:
    from featnorm.evaluation.checkpoint_loading import load_encoder

    return load_encoder(path, "teacher", device)


def count_parameters(ckpt: dict, path: str | Path = "model.pt") -> dict[str, int | None]:
    """Trainable parameters of the encoder and the predictor of a loaded `model.pt`: the modules are
    rebuilt from the stored config and the state-dict entries that are parameters are counted
    (buffers such as running statistics are not). Falls back to all floating state-dict entries
    when the model cannot be built."""
    out: dict[str, int | None] = {"encoder": None, "predictor": None}
    try:
        cfg = run_config_of(ckpt, path)
        from featnorm.models import Encoder, Predictor

        with torch.device("meta"):  # only the parameter names are needed: allocate nothing
            modules = {
                "encoder": (Encoder(cfg.model.encoder, cfg.model.patch_dim), "teacher"),
                "predictor": (Predictor(cfg.model.predictor, cfg.model.encoder.dim), "predictor"),
            }
    except Exception:  # noqa: BLE001 - the count is a nice-to-have; fall back below
        modules = None
    for key, state_key in (("encoder", "teacher"), ("predictor", "predictor")):
        sd = ckpt.get(state_key)
        if not isinstance(sd, dict):
            continue
        if modules is not None:
            names = {n for n, _ in modules[key][0].named_parameters()}
            out[key] = int(sum(v.numel() for n, v in sd.items() if n in names))
        else:
            out[key] = int(sum(v.numel() for n, v in sd.items() if torch.is_floating_point(v)
                               and not n.endswith(("running_mean", "running_std"))))
    return out


def image_row(image: np.ndarray, cfg: RunConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One `(H, W, 3)` uint8 image -> a one-row batch: pixels `(1, R + L, patch_dim)` and ids
    `(1, R + L, 4)`, the encoder's R registers first, then the L patches row-major."""
    pixels, rows, cols = patchify(image, cfg.model.patch_size)
    num_reg = cfg.model.encoder.num_registers
    if image.shape[0] == image.shape[1]:
        ids = eval_token_ids(image.shape[0] // cfg.model.patch_size, num_reg)  # the evaluation pipeline's row
    else:
        ids = padding_ids(num_reg + pixels.shape[0])
        ids[:, SAMPLE] = 0
        ids[:num_reg, REGISTER] = torch.arange(num_reg)
        ids[num_reg:, ROW] = rows
        ids[num_reg:, COL] = cols
    pix = torch.cat([torch.zeros(num_reg, pixels.shape[1]), pixels])
    return pix[None], ids[None]


@torch.no_grad()
def teacher_features(
    encoder: torch.nn.Module, image: np.ndarray, cfg: RunConfig, device: torch.device, depth: int | None = None
) -> torch.Tensor:
    """Teacher features of the image's patches as a `(gh, gw, dim)` float32 grid: the encoder's
    output (after its output norm) when `depth` is None, else `hiddens[depth]` (0 = embedding,
    -1 = last block, -4 = 4th block from the end; before the output norm)."""
    pixels, ids = image_row(image, cfg)
    pixels, ids = pixels.to(device), ids.to(device)
    with autocast_for(device):
        if depth is None:
            feats = encoder(pixels, ids)
        else:
            _, hiddens = encoder(pixels, ids, return_all_depths=True)
            if not -hiddens.shape[0] <= depth < hiddens.shape[0]:
                raise FigureInputError(
                    f"depth {depth} does not exist in an encoder of {hiddens.shape[0] - 1} blocks: use 0..{hiddens.shape[0] - 1} "
                    f"(0 = patch embedding) or -1..-{hiddens.shape[0]} (from the end)")
            feats = hiddens[depth]
    feats = feats.float()[0]
    keep = is_patch(ids[0])
    rows, cols = ids[0, keep, ROW], ids[0, keep, COL]
    gh, gw = int(rows.max()) + 1, int(cols.max()) + 1
    grid = torch.zeros(gh, gw, feats.shape[-1], device=feats.device)
    grid[rows, cols] = feats[keep]
    return grid.cpu()


__all__ = [
    "autocast_for",
    "count_parameters",
    "image_row",
    "load_ijepa",
    "load_teacher",
    "resolve_device",
    "teacher_features",
]
