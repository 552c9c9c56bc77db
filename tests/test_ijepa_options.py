"""The reference's hidden objective options, the init choice and the predictor's MLP input."""

import math

import pytest
import torch
import torch.nn.functional as F

from featnorm.config import EncoderConfig, ModelConfig, MoEConfig, ObjectiveConfig, PredictorConfig
from featnorm.ijepa import IJEPA, sample_windows, windows_per_copy
from featnorm.models import Encoder, Predictor
from featnorm.tokens import PAD_ID, is_patch, is_register

PATCH_SIZE = 2  # patch_dim 12, as the conftest packer


def tiny_cfg(num_registers=1, **objective):
    return ModelConfig(
        patch_size=PATCH_SIZE,
        encoder=EncoderConfig(dim=32, depth=2, num_heads=2, num_registers=num_registers),
        predictor=PredictorConfig(dim=16, depth=1, num_heads=2),
        objective=ObjectiveConfig(**objective),
    )


def test_targets_from_the_whole_row_give_the_loss_against_every_token_of_the_row(batch):
    # With one copy at capacity 1 every window is drawn; the predictor is equivariant to the
    # order of its tokens, so the mean loss equals the direct computation over the full row.
    torch.manual_seed(0)
    model = IJEPA(tiny_cfg(num_registers=1, target_norm="layernorm", batch_repeat=1, context_capacity=1.0,
                           target_capacity=1.0, targets_include_context=True))
    out = model(batch, torch.Generator().manual_seed(0))
    with torch.no_grad():
        targets = F.layer_norm(model.teacher(batch.pixels, batch.token_ids), (32,), eps=1e-5)
        context = model.student(batch.context_pixels, batch.context_ids)
        pred = model.predictor(context, batch.context_ids, batch.token_ids)
        scored = is_patch(batch.token_ids)
        expected = F.smooth_l1_loss(pred, targets, reduction="none").mean(-1)[scored].mean()
    torch.testing.assert_close(out.loss.detach(), expected, atol=1e-6, rtol=1e-5)
    # context tokens are among the scored targets: more than the target segment holds
    assert int(out.token_mask.sum()) == int(scored.sum()) > int(is_patch(batch.target_ids).sum())


def test_predict_registers_scores_register_targets_only_when_asked(batch):
    cfg = dict(num_registers=1, batch_repeat=1, context_capacity=1.0, target_capacity=1.0, targets_include_context=True)
    counts = {}
    for flag in (False, True):
        torch.manual_seed(0)
        out = IJEPA(tiny_cfg(predict_registers=flag, **cfg))(batch, torch.Generator().manual_seed(0))
        counts[flag] = int(out.token_mask.sum())
    registers = int(is_register(batch.token_ids).sum())
    assert registers > 0 and counts[True] == counts[False] + registers


def test_padding_windows_are_drawn_only_last_unless_the_option_is_off():
    g = torch.Generator().manual_seed(0)
    last = torch.zeros(64, 8, dtype=torch.bool)
    last[:, 4:] = True  # half the windows are padding
    always_real = sample_windows(last, 4, 2, True, g)
    assert bool((always_real < 4).all())
    anywhere = sample_windows(torch.zeros_like(last), 4, 2, True, g)
    assert bool((anywhere >= 4).any())


def test_padding_windows_anywhere_changes_which_windows_the_objective_draws(batch):
    seen = {}
    for flag in (True, False):
        torch.manual_seed(0)
        model = IJEPA(tiny_cfg(num_registers=1, batch_repeat=4, target_capacity=0.5, padding_windows_last=flag))
        total = 0
        for seed in range(20):
            out = model(batch, torch.Generator().manual_seed(seed))
            total += out.token_mask.numel() - int(out.token_mask.sum())  # predicted slots that score nothing
        seen[flag] = total
    assert seen[True] < seen[False]


def test_windows_per_copy_rounds_half_to_even_as_the_reference_and_stays_disjoint_without_replacement():
    assert windows_per_copy(48, 0.25) == 12
    assert windows_per_copy(10, 0.25) == 2  # round(2.5) = 2
    assert windows_per_copy(14, 0.25) == 4  # round(3.5) = 4
    assert windows_per_copy(14, 0.25, num_copies=4, with_replacement=False) == 3
    assert windows_per_copy(2, 0.1) == 1


@pytest.mark.parametrize("seg", ["context", "target"])
def test_with_replacement_is_set_per_segment(batch, seg):
    # without replacement the r copies of a row draw disjoint windows of that segment
    torch.manual_seed(0)
    model = IJEPA(tiny_cfg(num_registers=0, batch_repeat=2, context_capacity=0.5, target_capacity=0.5,
                           **{f"{seg}_with_replacement": False}))
    captured = {}
    original = model.predictor.forward

    def spy(context, context_ids, target_ids):
        captured["ids"] = context_ids if seg == "context" else target_ids
        return original(context, context_ids, target_ids)

    model.predictor.forward = spy
    model(batch, torch.Generator().manual_seed(3))
    ids = captured["ids"]
    B = batch.pixels.shape[0]
    for b in range(B):
        copies = [ids[j * B + b] for j in range(2)]
        keys = [{tuple(t) for t in c[c[:, 0] != PAD_ID].tolist()} for c in copies]
        assert not keys[0] & keys[1]


def test_torch_default_init_gives_kaiming_uniform_linears_and_trunc_normal_gives_std_002():
    cfg = EncoderConfig(dim=96, depth=2, num_heads=3, moe=MoEConfig(num_experts=2))
    torch.manual_seed(0)
    default = Encoder(cfg, 768)
    vit = Encoder(cfg, 768, init="trunc-normal")
    bound = 1 / math.sqrt(96)
    qkv = default.blocks[0].attn.qkv.weight.detach()
    assert qkv.abs().max() <= bound and float(qkv.std()) == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert default.patch_embed.bias.abs().max() > 0  # uniform biases
    assert float(vit.blocks[0].attn.qkv.weight.detach().std()) == pytest.approx(0.02 * 0.88, rel=0.1)  # truncated at 2 std
    assert torch.all(vit.patch_embed.bias == 0)
    moe_default, moe_vit = default.blocks[1].mlp, vit.blocks[1].mlp
    assert moe_default.w1.abs().max() <= 1 / math.sqrt(96) and moe_default.b1.abs().max() > 0
    assert moe_vit.w1.abs().max() <= 0.04 and torch.all(moe_vit.b1 == 0)
    with pytest.raises(ValueError, match="unknown init"):
        Encoder(cfg, 768, init="xavier")


def test_model_init_reaches_student_and_predictor_and_the_teacher_starts_equal():
    torch.manual_seed(0)
    model = IJEPA(ModelConfig(init="trunc-normal", encoder=EncoderConfig(dim=32, depth=1, num_heads=2),
                              predictor=PredictorConfig(dim=16, depth=1, num_heads=2)))
    assert torch.all(model.student.patch_embed.bias == 0) and torch.all(model.predictor.out_proj.bias == 0)
    for (n, t), s in zip(model.teacher.state_dict().items(), model.student.state_dict().values()):
        assert torch.equal(t, s), n


def test_predictor_mlp_in_is_a_two_layer_mlp_of_four_times_the_encoder_width():
    plain = Predictor(PredictorConfig(dim=16, depth=1, num_heads=2), 32)
    mlp = Predictor(PredictorConfig(dim=16, depth=1, num_heads=2, mlp_in=True), 32)
    extra = sum(p.numel() for p in mlp.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == (32 * 128 + 128 + 128 * 16 + 16) - (32 * 16 + 16)
    ctx = torch.randn(1, 4, 32)
    ids = torch.tensor([[[0, PAD_ID, 0, 0], [0, PAD_ID, 0, 1], [0, PAD_ID, 1, 0], [0, PAD_ID, 1, 1]]])
    tgt = torch.tensor([[[0, PAD_ID, 2, 0], [0, PAD_ID, 2, 1]]])
    assert mlp(ctx, ids, tgt).shape == (1, 2, 32)
