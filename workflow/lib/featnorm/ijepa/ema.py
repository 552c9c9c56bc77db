"""EMA update of the teacher from the student."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, beta: float) -> None:
    """teacher = beta * teacher + (1 - beta) * student for the student's trainable floating
    parameters; every other parameter and every buffer (e.g. running statistics) is copied
    from the student."""
    t_params = dict(teacher.named_parameters())
    s_params = dict(student.named_parameters())
    t_bufs = dict(teacher.named_buffers())
    s_bufs = dict(student.named_buffers())
    if t_params.keys() != s_params.keys() or t_bufs.keys() != s_bufs.keys():
        raise ValueError("ema_update: teacher and student have different parameters or buffers")
    avg_t, avg_s = [], []
    for name, s in s_params.items():
        t = t_params[name]
        if s.requires_grad and s.is_floating_point():
            avg_t.append(t)
            avg_s.append(s.to(t.dtype))
        else:
            t.copy_(s)
    if avg_t:
        torch._foreach_lerp_(avg_t, avg_s, 1.0 - beta)
    for name, s in s_bufs.items():
        t_bufs[name].copy_(s)
