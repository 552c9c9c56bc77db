"""The I-JEPA step: gradients, target norms, window sampling, the paper ViT-S, RankMe."""

import pytest
import torch
import torch.nn.functional as F

from featnorm.batch import PackedBatch
from featnorm.config import EncoderConfig, ModelConfig, ObjectiveConfig, PredictorConfig, RunConfig
from featnorm.ijepa import IJEPA, TargetNorm, gather_windows, padding_windows, sample_windows, targets_rankme
from featnorm.tokens import PAD_ID

PATCH_SIZE = 2  # patch_dim 12, as the conftest packer


def tiny_cfg(**objective):
    return ModelConfig(
        patch_size=PATCH_SIZE,
        encoder=EncoderConfig(dim=32, depth=2, num_heads=2, num_registers=1),
        predictor=PredictorConfig(dim=16, depth=1, num_heads=2),
        objective=ObjectiveConfig(**objective),
    )


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_teacher_gets_no_gradient_and_student_and_predictor_do(batch):
    torch.manual_seed(0)
    model = IJEPA(tiny_cfg())
    out = model(batch, torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(not p.requires_grad and p.grad is None for p in model.teacher.parameters())
    assert all(p.grad is not None for p in model.student.parameters())
    assert all(p.grad is not None for p in model.predictor.parameters())


@pytest.mark.parametrize("predict_all_targets", [False, True])
@pytest.mark.parametrize("target_norm", ["batchnorm", "layernorm"])
def test_padding_and_register_targets_change_neither_loss_nor_gradients(batch, target_norm, predict_all_targets):
    Lc = batch.context_length
    # Put a register token of image 2 into a padding window of row 1's target segment.
    ids = batch.token_ids.clone()
    slots = (ids[1, Lc:, 0] == PAD_ID).nonzero()[:, 0] + Lc
    ids[1, slots[0], :2] = torch.tensor([2, 0])
    batch = PackedBatch(batch.pixels, ids, Lc)
    changed = batch.pixels.clone()
    tgt = changed[:, Lc:]
    not_patch = (ids[:, Lc:, 0] == PAD_ID) | (ids[:, Lc:, 1] != PAD_ID)
    assert not_patch.any()
    tgt[not_patch] = torch.randn(int(not_patch.sum()), tgt.shape[-1]) * 30
    torch.manual_seed(0)
    model = IJEPA(tiny_cfg(target_norm=target_norm, batch_repeat=3, target_capacity=0.5))
    results = []
    for pixels in (batch.pixels, changed):
        model.zero_grad()
        out = model(PackedBatch(pixels, ids, Lc), torch.Generator().manual_seed(0), predict_all_targets)
        out.loss.backward()
        results.append((out.loss.detach(), _grads(model), out.targets))
    (l0, g0, t0), (l1, g1, t1) = results
    torch.testing.assert_close(l1, l0, atol=1e-7, rtol=0)
    torch.testing.assert_close(t1, t0, atol=1e-6, rtol=0)
    assert g0.keys() == g1.keys() and len(g0) > 0
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-7, rtol=1e-5, msg=name)


def test_predict_all_targets_gives_per_slot_losses_zero_off_image_tokens(batch):
    torch.manual_seed(0)
    model = IJEPA(tiny_cfg(target_norm="layernorm"))
    out = model(batch, predict_all_targets=True)
    Lt = batch.pixels.shape[1] - batch.context_length
    assert out.token_losses.shape == (2, Lt)
    real = (batch.target_ids[..., 0] != PAD_ID) & (batch.target_ids[..., 1] == PAD_ID)
    assert torch.equal(out.token_mask, real)
    assert torch.all(out.token_losses[~real] == 0)
    assert out.targets.shape == (int(real.sum()), 32)
    # the loss is the mean over real target tokens of the channel-mean smooth-L1
    with torch.no_grad():
        teacher = model.teacher(batch.pixels, batch.token_ids)[:, batch.context_length :]
        targets = F.layer_norm(teacher, (32,), eps=1e-5)
        pred = model.predictor(model.student(batch.context_pixels, batch.context_ids), batch.context_ids, batch.target_ids)
        expected = F.smooth_l1_loss(pred, targets, reduction="none").mean(-1)[real].mean()
    torch.testing.assert_close(out.loss.detach(), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.token_losses[real], F.smooth_l1_loss(pred, targets, reduction="none").mean(-1)[real], atol=1e-6, rtol=1e-5)


def test_batch_repeat_output_shapes_and_deterministic_given_generator(batch):
    torch.manual_seed(0)
    model = IJEPA(tiny_cfg(batch_repeat=4, target_capacity=0.25))
    a = model(batch, torch.Generator().manual_seed(3))
    b = model(batch, torch.Generator().manual_seed(3))
    # 32 target slots = 8 windows; floor(0.25 * 8) = 2 windows of 4 tokens per copy
    assert a.token_losses.shape == (4 * 2, 8)
    torch.testing.assert_close(a.loss, b.loss)


def test_ijepa_init_is_deterministic_and_teacher_starts_as_student():
    torch.manual_seed(1)
    a = IJEPA(tiny_cfg()).state_dict()
    torch.manual_seed(1)
    b = IJEPA(tiny_cfg()).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for k in a:
        if k.startswith("student."):
            assert torch.equal(a[k], a["teacher." + k[len("student.") :]])


# ----------------------------------------------------------------------------- target norms


def _features():
    torch.manual_seed(0)
    x = torch.randn(3, 8, 5) * torch.tensor([1.0, 2, 3, 4, 5]) + torch.tensor([5.0, -1, 0, 2, 9])
    mask = torch.rand(3, 8) > 0.3
    x[~mask] = 1e4  # padding/registers must not enter any statistic
    return x, mask


def test_target_norm_disabled_and_layernorm():
    x, mask = _features()
    assert torch.equal(TargetNorm("disabled", 5)(x, mask), x)
    y = TargetNorm("layernorm", 5)(x, mask)[mask]
    torch.testing.assert_close(y.mean(-1), torch.zeros(len(y)), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(-1, unbiased=False), torch.ones(len(y)), atol=1e-3, rtol=0)


def test_target_batchnorm_gives_zero_mean_unit_std_per_channel_over_real_tokens():
    x, mask = _features()
    y = TargetNorm("batchnorm", 5)(x, mask)[mask]
    torch.testing.assert_close(y.mean(0), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(0, unbiased=True), torch.ones(5), atol=1e-4, rtol=0)  # the reference's torch.std


@pytest.mark.parametrize("mode", ["running-batchnorm", "running-batchnorm-singleton"])
def test_running_target_norms_start_from_the_first_batch_then_follow_their_ema(mode):
    x, mask = _features()
    beta = 0.9
    tn = TargetNorm(mode, 5, beta=beta)
    real = x[mask].double()
    if mode.endswith("singleton"):
        batch_mean, batch_std = real.mean().reshape(1), real.std().reshape(1)
    else:
        batch_mean, batch_std = real.mean(0), real.std(0)
    mean, std = batch_mean, batch_std  # the first training batch sets them
    for i in range(3):
        y = tn(x, mask)
        if i:
            mean, std = beta * mean + (1 - beta) * batch_mean, beta * std + (1 - beta) * batch_std
        torch.testing.assert_close(tn.running.running_mean.double(), mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tn.running.running_std.double(), std, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(y.double(), (x.double() - mean) / std, atol=1e-4, rtol=1e-5)
    tn.eval()
    tn(x * 3 + 1, mask)
    torch.testing.assert_close(tn.running.running_mean.double(), mean, atol=1e-5, rtol=1e-5)  # eval does not update


# ----------------------------------------------------------------------------- window sampling


def test_sampling_without_replacement_gives_disjoint_draws():
    g = torch.Generator().manual_seed(0)
    pad = torch.zeros(5, 16, dtype=torch.bool)
    pad[1, 10:] = True
    idx = sample_windows(pad, 4, 4, with_replacement=False, generator=g)
    assert idx.shape == (4, 5, 4)
    for b in range(5):
        assert len(set(idx[:, b].flatten().tolist())) == 16
    with pytest.raises(ValueError, match="without replacement"):
        sample_windows(pad, 5, 4, with_replacement=False, generator=g)


def test_sampling_with_replacement_draws_each_copy_independently():
    g = torch.Generator().manual_seed(0)
    pad = torch.zeros(20, 16, dtype=torch.bool)
    idx = sample_windows(pad, 2, 4, with_replacement=True, generator=g)
    assert all(len(set(idx[r, b].tolist())) == 4 for r in range(2) for b in range(20))  # none twice in a copy
    overlaps = [len(set(idx[0, b].tolist()) & set(idx[1, b].tolist())) for b in range(20)]
    assert any(o > 0 for o in overlaps)  # copies may share windows: independent draws
    assert not torch.equal(idx[0], idx[1])


@pytest.mark.parametrize("with_replacement", [True, False])
def test_all_padding_windows_are_chosen_only_after_every_real_window(with_replacement):
    g = torch.Generator().manual_seed(0)
    W, real = 12, torch.tensor([3, 7, 12, 0])
    pad = torch.arange(W)[None] >= real[:, None]
    pad = pad[:, torch.randperm(W, generator=g)]  # padding windows anywhere in the row
    r, k = (3, 4) if not with_replacement else (6, 5)
    for _ in range(20):
        idx = sample_windows(pad, r, k, with_replacement, generator=g)
        for b in range(4):
            if with_replacement:
                draws = [idx[j, b].tolist() for j in range(r)]
            else:
                draws = [idx[:, b].flatten().tolist()]  # one permutation, chunked in order
            for d in draws:
                chosen_pad = pad[b, d]
                n_real = int(real[b])
                # in draw order: first all real windows (up to the draw size), then padding
                assert torch.equal(chosen_pad, torch.arange(len(d)) >= min(n_real, len(d)))


def test_gather_windows_keeps_window_tokens_together_copy_major():
    B, W, w2 = 2, 5, 4
    x = torch.arange(B * W * w2).view(B, W * w2, 1)
    idx = torch.tensor([[[4, 1], [0, 2]], [[3, 3], [1, 4]]])  # (r=2, B=2, k=2)
    out = gather_windows(x, idx, 2)
    assert out.shape == (4, 8, 1)
    assert out[0, :, 0].tolist() == [16, 17, 18, 19, 4, 5, 6, 7]  # copy 0 row 0
    assert out[3, :, 0].tolist() == [24, 25, 26, 27, 36, 37, 38, 39]  # copy 1 row 1
    ids = torch.full((1, 8, 4), PAD_ID)
    ids[0, :4, 0] = 0
    assert padding_windows(ids, 2).tolist() == [[False, True]]


# ----------------------------------------------------------------------------- the paper ViT-S


def test_paper_vit_s_student_and_predictor_forward_backward_gives_finite_loss(make_image, make_batch):
    cfg = RunConfig().model
    assert cfg.encoder.dim == 384 and cfg.encoder.depth == 12 and cfg.predictor.depth == 6
    torch.manual_seed(0)
    model = IJEPA(cfg)
    pd = cfg.patch_dim
    a = make_image(0, 4, 4, 2, patch_dim=pd, seed=1)
    b = make_image(1, 4, 8, 3, patch_dim=pd, seed=2)
    batch = make_batch([[a], [b]], 16, 20, patch_dim=pd)
    out = model(batch, torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.loss > 0
    assert all(torch.isfinite(p.grad).all() for p in model.predictor.parameters())
    assert model.student.patch_embed.weight.grad.abs().sum() > 0
    rank = targets_rankme(out.targets)
    assert 1.0 <= rank <= min(out.targets.shape)


def _vit_params(dim, depth, mlp_ratio, head_dim, in_dim, out_norm_params):
    """Parameter count from layer shapes: pre-norm blocks with DynTanh block norms (vector
    alpha, gain and bias: 3 x dim, the reference's), qkv/proj without bias, per-head q/k
    LayerNorm (weight + bias over head_dim), MLP with biases."""
    hidden = int(dim * mlp_ratio)
    block = (
        3 * dim  # norm1
        + dim * 3 * dim  # qkv, no bias
        + 2 * (2 * head_dim)  # q_norm, k_norm
        + dim * dim  # proj, no bias
        + 3 * dim  # norm2
        + dim * hidden + hidden  # fc1
        + hidden * dim + dim  # fc2
    )
    return in_dim * dim + dim + depth * block + out_norm_params


def test_count_params_script_matches_the_count_from_layer_shapes(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "count_params.py"
    spec = importlib.util.spec_from_file_location("count_params", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([]) == 0
    printed = dict(line.split(": ") for line in capsys.readouterr().out.strip().splitlines())
    counts = {k: int(v.replace(",", "")) for k, v in printed.items()}

    # paper ViT-S: encoder 768 -> 384, 12 blocks, 6 heads of 64, output DynTanh without affine
    encoder = _vit_params(384, 12, 4.0, 64, 768, out_norm_params=384)
    # predictor: 384 -> 256 in, 6 blocks, 4 heads of 64, mask token, output LayerNorm, 256 -> 384 out
    predictor = _vit_params(256, 6, 4.0, 64, 384, out_norm_params=2 * 256) + 256 + (256 * 384 + 384)
    assert counts == {"encoder": encoder, "predictor": predictor, "trainable": encoder + predictor}
    print(f"ViT-S encoder {encoder:,} parameters, predictor {predictor:,}")


def test_targets_rankme_is_smooth_rank_optionally_on_a_seeded_subset():
    from featnorm.metrics import smooth_rank

    x = torch.randn(200, 8)
    assert targets_rankme(x) == pytest.approx(smooth_rank(x))
    a = targets_rankme(x, max_tokens=50, generator=torch.Generator().manual_seed(0))
    b = targets_rankme(x, max_tokens=50, generator=torch.Generator().manual_seed(0))
    assert a == b and 1.0 <= a <= 8.0
