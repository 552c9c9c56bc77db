"""The per-depth linear probe: learns separable features, stays at chance on shuffled labels."""

import pytest
import torch

from featnorm.evaluation.linear_probe import MultiDepthLinear, train_linear_probes


def _features(n: int, num_classes: int, seed: int):
    """Depth 0: pure noise; depth 1: noisy but linearly separable; depth 2: separable."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    centres = 4 * torch.randn(num_classes, 16, generator=torch.Generator().manual_seed(99))
    noise = torch.randn(n, 3, 16, generator=g)
    feats = noise.clone()
    feats[:, 1] = centres[labels] + 1.0 * noise[:, 1]
    feats[:, 2] = centres[labels] + 0.3 * noise[:, 2] + 10.0  # an offset, as raw residual features have
    return feats.half(), labels


def test_probe_is_independent_per_depth():
    probe = MultiDepthLinear(3, 8, 5)
    x = torch.randn(4, 3, 8)
    out = probe(x)
    x2 = x.clone()
    x2[:, 0] += 10
    out2 = probe(x2)
    assert out.shape == (4, 3, 5)
    assert torch.equal(out[:, 1:], out2[:, 1:]) and not torch.allclose(out[:, 0], out2[:, 0])
    assert torch.equal(probe.bias, torch.zeros(3, 5))  # the reference's init: zero biases
    assert probe.weight.abs().max() <= 8**-0.5


def test_default_trains_on_raw_features_and_standardize_is_an_option():
    tx, ty = _features(400, 4, seed=0)
    vx, vy = _features(200, 4, seed=1)
    kw = dict(epochs=2, batch_size=128, progress=False, seed=3)
    raw = train_linear_probes(tx, ty, vx, vy, **kw)
    # raw features: shifting a depth's features changes what the probe learns
    shifted = tx.clone()
    shifted[:, 1] += 50
    vshifted = vx.clone()
    vshifted[:, 1] += 50
    raw_shift = train_linear_probes(shifted, ty, vshifted, vy, **kw)
    assert raw["standardize"] is False
    assert raw["loss_curve"]["train_loss_per_depth"][0][1] != pytest.approx(
        raw_shift["loss_curve"]["train_loss_per_depth"][0][1], rel=1e-3)
    # standardised: a per-channel shift of the training and validation features changes nothing
    std = train_linear_probes(tx, ty, vx, vy, standardize=True, **kw)
    std_shift = train_linear_probes(shifted, ty, vshifted, vy, standardize=True, **kw)
    assert std["standardize"] is True
    assert std["loss_curve"]["train_loss_per_depth"][0][1] == pytest.approx(
        std_shift["loss_curve"]["train_loss_per_depth"][0][1], rel=1e-3)
    assert std["top1"][1] == pytest.approx(std_shift["top1"][1], abs=0.6)


def test_depth_indices_label_the_results():
    tx, ty = _features(100, 4, seed=0)
    res = train_linear_probes(tx[:, 2:], ty, tx[:, 2:], ty, epochs=1, batch_size=64, progress=False, depth_indices=[12])
    assert res["depths"] == [12] and res["best_depth"] == 12 and res["last_depth"] == 12
    with pytest.raises(ValueError, match="2 depth indices"):
        train_linear_probes(tx[:, 2:], ty, tx[:, 2:], ty, epochs=1, progress=False, depth_indices=[1, 2])


def test_linear_probe_reaches_near_100_percent_on_separable_features():
    tx, ty = _features(800, 4, seed=0)
    vx, vy = _features(400, 4, seed=1)
    res = train_linear_probes(tx, ty, vx, vy, epochs=15, batch_size=128, progress=False)
    assert res["top1"][2] > 98 and res["top1"][1] > 95
    assert res["top1"][0] < 45  # noise depth stays near chance (25 %)
    assert res["best_depth"] in (1, 2) and res["last_depth"] == 2
    assert res["top5"][2] == pytest.approx(100.0)  # 4 classes: top-5 is top-4
    curve = res["loss_curve"]["train_loss_mean"]
    assert len(curve) == 15 and curve[-1] < curve[0]
    assert len(res["loss_curve"]["train_loss_per_depth"][0]) == 3


def test_linear_probe_is_near_chance_with_shuffled_labels():
    tx, ty = _features(800, 4, seed=0)
    vx, vy = _features(400, 4, seed=1)
    g = torch.Generator().manual_seed(5)
    ty = ty[torch.randperm(len(ty), generator=g)]
    vy = vy[torch.randperm(len(vy), generator=g)]
    res = train_linear_probes(tx, ty, vx, vy, epochs=15, batch_size=128, progress=False)
    assert max(res["top1"]) < 40  # chance is 25 %


def test_linear_probe_rejects_unlabelled_features():
    x = torch.randn(10, 2, 4)
    with pytest.raises(ValueError, match="label"):
        train_linear_probes(x, torch.full((10,), -1), x, torch.zeros(10, dtype=torch.long), epochs=1, progress=False)
