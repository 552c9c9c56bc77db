"""DiffMoE MLP: top-k routing over the batch in training, threshold routing in eval, the
capacity predictor and its thresholds, the aux loss in the I-JEPA loss, eval in evaluation."""

import pytest
import torch

from featnorm.config import EncoderConfig, ModelConfig, MoEConfig, PredictorConfig
from featnorm.ijepa import IJEPA
from featnorm.layers import DiffMoE
from featnorm.layers import diffmoe as diffmoe_module
from featnorm.models import Encoder

PATCH_DIM = 12


def _tokens(seed=0, B=3, L=20, dim=16, num_padding=(0, 5, 12)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, dim, generator=g)
    real = torch.ones(B, L, dtype=torch.bool)
    for b, n in enumerate(num_padding):
        if n:
            real[b, -n:] = False
    return x, real


def test_training_selects_exactly_k_tokens_per_expert_and_never_padding():
    torch.manual_seed(0)
    moe = DiffMoE(16, 32, num_experts=4, capacity=0.5).train()
    x, real = _tokens()
    x[~real] = 50.0  # padding that would win every gate if it were scored
    with torch.no_grad():
        moe.gate.weight.fill_(0.1)
    flat, flat_real = x.flatten(0, 1), real.flatten()
    N = flat.shape[0]
    k = int(N * 0.5 / 4)
    assert moe.tokens_per_expert(N) == k
    idx, weight = moe.route(flat, flat_real)
    assert idx.shape == (k, 4) and weight.shape == (k, 4)
    for e in range(4):
        assert len(set(idx[:, e].tolist())) == k  # k distinct tokens
    assert flat_real[idx].all()
    assert (weight > 0).all() and (weight <= 1).all()
    # each expert's picks are its k best real tokens by gate score
    gates = (torch.tanh(moe.gate(flat)) + 1) / 2
    for e in range(4):
        best = gates[flat_real, e].topk(k).values
        torch.testing.assert_close(gates[idx[:, e], e].sort(descending=True).values, best)


def test_padding_never_changes_the_output_of_real_tokens_in_eval_mode():
    torch.manual_seed(0)
    moe = DiffMoE(16, 32, num_experts=4).eval()
    moe.thresholds.fill_(0.5)
    x, real = _tokens()
    y = moe(x, real)
    x2 = x.clone()
    x2[~real] = torch.randn(int((~real).sum()), 16) * 100
    torch.testing.assert_close(moe(x2, real)[real], y[real])


def test_gate_scores_are_tanh_mapped_to_zero_one_and_scale_the_expert_output():
    torch.manual_seed(0)
    moe = DiffMoE(8, 16, num_experts=2, capacity=1.0).train()
    x = torch.randn(1, 6, 8)
    y = moe(x)
    # capacity 1, two experts: each takes 3 of 6 tokens; recompute expert 0's contribution
    idx, weight = moe.route(x[0], torch.ones(6, dtype=torch.bool))
    gates = (torch.tanh(x[0] @ moe.gate.weight.t()) + 1) / 2
    torch.testing.assert_close(weight, gates.gather(0, idx))
    expected = torch.zeros(6, 8)
    for e in range(2):
        h = torch.nn.functional.gelu(x[0, idx[:, e]] @ moe.w1[e] + moe.b1[e], approximate="tanh")
        expected[idx[:, e]] += (h @ moe.w2[e] + moe.b2[e]) * weight[:, e, None]
    torch.testing.assert_close(y[0], expected, atol=1e-6, rtol=1e-5)


def test_after_a_short_fit_eval_selection_count_is_within_20_percent_of_training_count():
    torch.manual_seed(0)
    moe = DiffMoE(16, 32, num_experts=4, capacity=0.5, threshold_beta=0.9).train()
    x, real = _tokens(seed=1, B=4, L=64, num_padding=(0, 10, 20, 30))
    flat, flat_real = x.flatten(0, 1), real.flatten()
    opt = torch.optim.Adam(moe.capacity_predictor.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        moe(x, real)
        moe.aux_loss.backward()
        opt.step()
    train_count = int((moe.route(flat, flat_real)[1] > 0).sum())
    assert train_count == 4 * moe.tokens_per_expert(flat.shape[0])
    moe.eval()
    with torch.no_grad():
        idx, weight = moe.route(flat, flat_real)
    eval_count = int((weight > 0).sum())
    assert abs(eval_count - train_count) <= 0.2 * train_count, (eval_count, train_count)
    assert flat_real[idx[weight > 0]].all()  # eval never picks padding either
    torch.testing.assert_close(moe.experts_per_token, torch.tensor(eval_count / int(flat_real.sum())))


def test_eval_routes_by_thresholds_so_calling_eval_changes_the_forward():
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(dim=16, depth=2, num_heads=2, moe=MoEConfig(num_experts=4, capacity=0.5)), PATCH_DIM)
    x, ids = torch.randn(2, 8, PATCH_DIM), torch.zeros(2, 8, 4, dtype=torch.long)
    ids[1, :, 0] = 1
    ids[..., 1] = -100
    ids[..., 2], ids[..., 3] = torch.arange(8) // 4, torch.arange(8) % 4
    with torch.no_grad():
        train_out = enc(x, ids)
        train_epe = enc.experts_per_token
        for m in enc.modules():
            if isinstance(m, DiffMoE):
                m.thresholds.fill_(0.45)  # eval then picks another number of tokens than top-k
        enc.eval()
        eval_out = enc(x, ids)
        eval_epe = enc.experts_per_token
    assert not torch.allclose(train_out, eval_out)
    assert train_epe == pytest.approx(0.5)  # k x E / N = capacity on a pool without padding
    assert eval_epe != pytest.approx(0.5)


def test_feature_extraction_runs_the_encoder_in_eval_mode(tmp_path):
    from featnorm.evaluation.features import ShardBatch, extract_features

    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(dim=16, depth=1, num_heads=2, moe=MoEConfig(num_experts=2)), PATCH_DIM).train()
    modes = []
    enc.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    ids = torch.zeros(1, 4, 4, dtype=torch.long)
    ids[..., 1] = -100
    ids[..., 2], ids[..., 3] = torch.arange(4) // 2, torch.arange(4) % 2
    batch = ShardBatch("shard-0", torch.randn(1, 4, PATCH_DIM), ids, torch.tensor([3]), last=True)
    extract_features(enc, lambda done: [batch], ["shard-0"], tmp_path, progress=False)
    assert modes == [False]


def test_thresholds_follow_the_kth_predicted_score_by_ema_averaged_across_processes(monkeypatch):
    torch.manual_seed(0)
    moe = DiffMoE(16, 32, num_experts=4, capacity=0.5, threshold_beta=0.9).train()
    x, real = _tokens()
    flat, flat_real = x.flatten(0, 1), real.flatten()
    k = moe.tokens_per_expert(flat.shape[0])

    def kth():
        with torch.no_grad():
            p = torch.sigmoid(moe.capacity_predictor(flat)).masked_fill(~flat_real[:, None], -1)
        return p.topk(k, dim=0).values[-1]

    expected = kth()
    moe(x, real)
    torch.testing.assert_close(moe.thresholds, expected)  # the first update copies
    moe(x, real)
    torch.testing.assert_close(moe.thresholds, expected)  # EMA of a constant stays put
    # another process reports 0.2 for every expert: the thresholds move toward the mean
    other = torch.full((4,), 0.2)
    monkeypatch.setattr(diffmoe_module.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(diffmoe_module.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(diffmoe_module.dist, "all_reduce", lambda t: t.add_(other))
    moe(x, real)
    torch.testing.assert_close(moe.thresholds, 0.9 * expected + 0.1 * (expected + other) / 2)


def _moe_model():
    return IJEPA(
        ModelConfig(
            patch_size=2,
            encoder=EncoderConfig(dim=16, depth=2, num_heads=2, num_registers=1, moe=MoEConfig(num_experts=4, capacity=0.5)),
            predictor=PredictorConfig(dim=16, depth=1, num_heads=2, moe=MoEConfig(num_experts=2)),
        )
    )


def test_capacity_predictor_loss_is_added_to_the_ijepa_loss_and_trains_only_the_capacity_predictors(batch):
    torch.manual_seed(0)
    model = _moe_model()
    out = model(batch, torch.Generator().manual_seed(0))
    s = out.stats
    torch.testing.assert_close(out.loss.detach(), s["prediction_loss"] + s["moe_aux_loss"])
    assert s["moe_aux_loss"] > 0 and "encoder_eval_experts_per_token" in s and "predictor_experts_per_token" in s
    aux = sum(m.aux_loss for m in list(model.student.modules()) + list(model.predictor.modules()) if isinstance(m, DiffMoE))
    aux.backward()
    for name, p in list(model.student.named_parameters()) + list(model.predictor.named_parameters()):
        assert (p.grad is not None and p.grad.abs().sum() > 0) == ("capacity_predictor" in name), name
    assert all(m.aux_loss is None for m in model.teacher.modules() if isinstance(m, DiffMoE))


def test_teacher_thresholds_follow_the_students_through_the_ema_update(batch):
    torch.manual_seed(0)
    model = _moe_model()
    t_before = model.teacher.blocks[0].mlp.thresholds.clone()
    model(batch, torch.Generator().manual_seed(0))
    s_thr = model.student.blocks[0].mlp.thresholds
    assert not torch.equal(s_thr, t_before)
    assert torch.equal(model.teacher.blocks[0].mlp.thresholds, t_before)  # a frozen teacher does not learn them
    model.ema_update(0.99)
    for t, s in zip(model.teacher.modules(), model.student.modules()):
        if isinstance(t, DiffMoE):
            assert torch.equal(t.thresholds, s.thresholds) and bool(t.thresholds_initialized)


def test_loaded_evaluation_encoder_is_in_eval_mode_with_the_saved_thresholds(tmp_path):
    from featnorm.config import RunConfig, to_dict
    from featnorm.evaluation.checkpoint_loading import load_encoder

    cfg = RunConfig()
    cfg.model.encoder = EncoderConfig(dim=16, depth=1, num_heads=2, moe=MoEConfig(num_experts=4))
    torch.manual_seed(0)
    teacher = Encoder(cfg.model.encoder, cfg.model.patch_dim)
    teacher.blocks[0].mlp.thresholds.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    torch.save({"config": to_dict(cfg), "teacher": teacher.state_dict()}, tmp_path / "model.pt")
    encoder, _ = load_encoder(tmp_path / "model.pt")
    assert not encoder.training and not any(m.training for m in encoder.modules())
    assert torch.equal(encoder.blocks[0].mlp.thresholds, torch.tensor([0.1, 0.2, 0.3, 0.4]))
