"""Learning-rate and EMA-momentum schedules (SPEC section 3, "Training schedule").

Both are pure functions of the number of optimizer steps already taken (`step`, 0-based:
the first step uses `step = 0`), so a resumed run that restores `step` gets the same values.

Learning rate: linear warm-up `lr_start -> lr_peak` over `lr_warmup_steps`, then steady at
`lr_peak`; with `lr_cooldown_steps > 0`, a linear cool-down to `lr_end` over the last
`lr_cooldown_steps` steps of the run. A run whose length is given in epochs (images seen)
does not know its step count in advance; the trainer then passes an estimate of the steps
left (images left / mean images per step so far), which is itself a function of the
restored counters and so resumes exactly.

EMA beta: `ema_start -> ema_mid` linearly over `ema_warmup_steps`, then linearly from
`ema_mid` toward `ema_end` over `ema_anneal_steps`, capped at `ema_end`.
"""

from __future__ import annotations

from featnorm.config import TrainConfig


def _lerp(a: float, b: float, frac: float) -> float:
    frac = min(max(frac, 0.0), 1.0)
    return a + (b - a) * frac


def learning_rate(cfg: TrainConfig, step: int, steps_left: float | None = None) -> float:
    """The learning rate of step `step` (0-based).

    `steps_left`: steps remaining after this one is taken into account (total - step);
    only used for the cool-down; `None` means "unknown / far away" (no cool-down yet).
    """
    if cfg.lr_warmup_steps > 0 and step < cfg.lr_warmup_steps:
        lr = _lerp(cfg.lr_start, cfg.lr_peak, step / cfg.lr_warmup_steps)
    else:
        lr = cfg.lr_peak
    if cfg.lr_cooldown_steps > 0 and steps_left is not None and steps_left < cfg.lr_cooldown_steps:
        # At steps_left == cooldown the rate is still `lr`; on the last step it reaches lr_end.
        frac = 1.0 - max(steps_left - 1, 0) / max(cfg.lr_cooldown_steps - 1, 1)
        lr = _lerp(lr, cfg.lr_end, frac)
    return lr


def ema_beta(cfg: TrainConfig, step: int) -> float:
    """The teacher's EMA momentum after step `step` (0-based)."""
    if cfg.ema_warmup_steps > 0 and step < cfg.ema_warmup_steps:
        return _lerp(cfg.ema_start, cfg.ema_mid, step / cfg.ema_warmup_steps)
    if cfg.ema_anneal_steps <= 0:
        return cfg.ema_mid
    return _lerp(cfg.ema_mid, cfg.ema_end, (step - cfg.ema_warmup_steps) / cfg.ema_anneal_steps)
