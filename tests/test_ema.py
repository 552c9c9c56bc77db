"""EMA update of the teacher: trainable floats averaged, every other state copied."""

import torch

from featnorm.config import EncoderConfig, ModelConfig, PredictorConfig
from featnorm.ijepa import IJEPA, ema_update
from featnorm.models import Encoder


def _pair():
    torch.manual_seed(0)
    cfg = EncoderConfig(dim=16, depth=1, num_heads=2, out_norm="batchnorm", out_norm_affine=True)
    teacher, student = Encoder(cfg, 12), Encoder(cfg, 12)
    teacher.requires_grad_(False)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
        student.out_norm.running_mean.normal_()
        student.out_norm.running_std.uniform_(1, 2)
    return teacher, student


def test_ema_update_matches_its_formula_for_trainable_parameters():
    teacher, student = _pair()
    before = {n: p.clone() for n, p in teacher.named_parameters()}
    beta = 0.9
    ema_update(teacher, student, beta)
    s = dict(student.named_parameters())
    for n, p in teacher.named_parameters():
        torch.testing.assert_close(p, beta * before[n] + (1 - beta) * s[n], atol=1e-6, rtol=1e-6)


def test_ema_update_copies_buffers_and_frozen_parameters_from_the_student():
    teacher, student = _pair()
    student.patch_embed.bias.requires_grad_(False)  # a non-trainable parameter
    ema_update(teacher, student, 0.99)
    assert torch.equal(teacher.out_norm.running_mean, student.out_norm.running_mean)
    assert torch.equal(teacher.out_norm.running_std, student.out_norm.running_std)
    assert torch.equal(teacher.patch_embed.bias, student.patch_embed.bias)
    assert not torch.equal(teacher.patch_embed.weight, student.patch_embed.weight)


def test_ijepa_ema_update_moves_only_the_teacher():
    torch.manual_seed(0)
    model = IJEPA(ModelConfig(patch_size=2, encoder=EncoderConfig(dim=16, depth=1, num_heads=2), predictor=PredictorConfig(dim=16, depth=1, num_heads=2)))
    with torch.no_grad():
        model.student.patch_embed.weight.add_(1.0)
    s_before = model.student.patch_embed.weight.clone()
    t_before = model.teacher.patch_embed.weight.clone()
    model.ema_update(0.75)
    torch.testing.assert_close(model.teacher.patch_embed.weight, 0.75 * t_before + 0.25 * s_before)
    assert torch.equal(model.student.patch_embed.weight, s_before)
    assert not any(p.requires_grad for p in model.teacher.parameters())
