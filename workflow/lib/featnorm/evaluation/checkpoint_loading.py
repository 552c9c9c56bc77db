"""Load the evaluation encoder (the EMA teacher) from a `model.pt`.

`model.pt` is a dict saved with `torch.save`:
    config       the resolved RunConfig as a plain dict (`featnorm.config.to_dict`)
    teacher      state_dict of the teacher Encoder (what evaluation uses)
    student      state_dict of the student Encoder
    predictor    state_dict of the Predictor
    step, images_seen
"""

from __future__ import annotations

from pathlib import Path

import torch

from featnorm.config import ConfigError, RunConfig, run_config_from_dict


class CheckpointError(RuntimeError):
    """A model.pt that cannot be turned into an encoder; the message names the file and why."""


def load_checkpoint_dict(path: str | Path) -> dict:
    """torch.load(weights_only=True) of a model.pt, with one-line errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file becomes one sentence
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint ({reason})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict with 'config' and 'teacher', got {type(ckpt).__name__}")
    return ckpt


def run_config_of(ckpt: dict, path: str | Path) -> RunConfig:
    """The RunConfig stored in a checkpoint dict; CheckpointError when it cannot be built."""
    if "config" not in ckpt:
        raise CheckpointError(f"{path}: has no 'config' entry, so the model cannot be rebuilt")
    if not isinstance(ckpt["config"], dict):
        raise CheckpointError(f"{path}: 'config' is a {type(ckpt['config']).__name__}, not a dict of settings")
    try:
        return run_config_from_dict(ckpt["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: model config cannot be built: {e}") from None


def load_encoder(
    path: str | Path, which: str = "teacher", device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, RunConfig]:
    """Rebuild the Encoder of `model.pt`, load the `which` weights, move to device, eval mode.

    eval() matters: DiffMoE layers route tokens differently in eval mode.
    """
    from featnorm.models.encoder import Encoder  # models land later than this module in the tree

    ckpt = load_checkpoint_dict(path)
    cfg = run_config_of(ckpt, path)
    if which not in ckpt:
        raise CheckpointError(f"{path}: has no '{which}' weights (keys: {sorted(ckpt)})")
    try:
        encoder = Encoder(cfg.model.encoder, cfg.model.patch_dim)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: the encoder of its config cannot be built ({type(e).__name__}: {e})") from None
    try:
        missing, unexpected = encoder.load_state_dict(ckpt[which], strict=False)
    except RuntimeError as e:  # shape mismatches
        first = str(e).strip().splitlines()
        raise CheckpointError(f"{path}: '{which}' weights do not fit the encoder of its config ({first[-1].strip()})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: '{which}' weights do not match the encoder of its config "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})"
        )
    encoder.to(device).eval()
    encoder.requires_grad_(False)
    return encoder, cfg
