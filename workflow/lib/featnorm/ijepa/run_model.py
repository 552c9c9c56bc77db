"""A run's IJEPA module at step 0, and the `model.pt` dict of a module: one place for both.

The trainer starts from `initial_model(cfg)` and writes `model_file(...)` at the end (and at
`train.snapshot_steps`); the random-init baseline (`scripts/init_model.py`) writes
`model_file(initial_model(cfg), cfg, 0, 0)`, so a baseline of seed s is exactly the step-0
state of the trained run of seed s. `featnorm.evaluation.checkpoint_loading` reads the file.
"""

from __future__ import annotations

import torch

from featnorm.config import RunConfig, to_dict
from featnorm.ijepa.objective import IJEPA


def initial_model(cfg: RunConfig) -> IJEPA:
    """`IJEPA(cfg.model)` built on the CPU right after `torch.manual_seed(cfg.seed)`.

    Seeding the global generator is part of the contract: the trainer's later random draws
    (dropout, the data loader's base seed) continue from the state this leaves.
    """
    torch.manual_seed(cfg.seed)
    return IJEPA(cfg.model)


def model_file(model: IJEPA, cfg: RunConfig, step: int, images_seen: int) -> dict:
    """The `model.pt` dict: resolved config, teacher / student / predictor / target-norm state
    dicts (the target norm's running statistics: loss maps need them), step, images seen."""
    return {
        "config": to_dict(cfg),
        "teacher": model.teacher.state_dict(),
        "student": model.student.state_dict(),
        "predictor": model.predictor.state_dict(),
        "target_norm": model.target_norm.state_dict(),
        "step": int(step),
        "images_seen": int(images_seen),
    }
