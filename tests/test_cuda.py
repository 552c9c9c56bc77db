"""What only a GPU can check (marker `cuda`; skipped without CUDA): bf16 autocast, torch.compile,
FlexAttention's compiled kernels against sdpa, exact resume on CUDA, the pinned uint8 loader.

benchmarks/device_check.sh runs them (`pytest -m "cuda or not slow"`) on a lent GPU.
"""

import pytest
import torch

from featnorm.batch import PackedBatch
from featnorm.ijepa import IJEPA

from test_train_trainer import read_log, synthetic_data, tiny_config  # noqa: F401 (fixture)

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")


def _batch(synthetic_data):  # noqa: F811
    return next(synthetic_data.epoch_batches(0, 0)).to(CUDA)


def _loss(model, batch, seed=1, backward=False):
    """Loss of one forward with a seeded window draw; with `backward` also the parameter gradients."""
    gen = torch.Generator(device=CUDA).manual_seed(seed)
    out = model(batch, generator=gen)
    if not backward:
        return out.loss.detach().float()
    model.zero_grad(set_to_none=True)
    out.loss.backward()
    grads = {n.removeprefix("_orig_mod."): p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach().float(), grads


def _model(backend="sdpa", seed=0):
    cfg = tiny_config().model
    cfg.attention_backend = backend
    torch.manual_seed(seed)
    return IJEPA(cfg).to(CUDA)


def test_bf16_autocast_loss_is_finite_and_within_tolerance_of_fp32(synthetic_data):  # noqa: F811
    model, batch = _model(), _batch(synthetic_data)
    fp32, _ = _loss(model, batch, backward=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        bf16, grads = _loss(model, batch, backward=True)
    assert torch.isfinite(bf16) and all(torch.isfinite(g).all() for g in grads.values())
    assert abs(float(bf16) - float(fp32)) <= 0.03 * abs(float(fp32))


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
def test_compiled_model_gives_the_same_loss_and_gradients_as_eager(synthetic_data, backend):  # noqa: F811
    model, batch = _model(backend), _batch(synthetic_data)
    eager, g_eager = _loss(model, batch, backward=True)
    compiled, g_comp = _loss(torch.compile(model), batch, backward=True)
    assert float(compiled) == pytest.approx(float(eager), rel=1e-4, abs=1e-5)
    for name, g in g_eager.items():
        torch.testing.assert_close(g_comp[name], g, rtol=1e-3, atol=1e-5, msg=name)


def test_flex_and_sdpa_train_steps_agree_on_cuda(synthetic_data):  # noqa: F811
    batch = _batch(synthetic_data)
    sdpa, g_sdpa = _loss(_model("sdpa"), batch, backward=True)
    flex, g_flex = _loss(_model("flex"), batch, backward=True)
    assert float(flex) == pytest.approx(float(sdpa), rel=1e-5, abs=1e-6)
    for name, g in g_sdpa.items():
        torch.testing.assert_close(g_flex[name], g, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
def test_flex_and_sdpa_agree_in_bf16_on_cuda(synthetic_data, backend):  # noqa: F811
    batch = _batch(synthetic_data)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ref = _loss(_model("sdpa"), batch)
        other = _loss(_model(backend), batch)
    assert torch.isfinite(other) and abs(float(other) - float(ref)) <= 0.02 * abs(float(ref))


def test_checkpoint_save_and_load_on_cuda_resume_the_run(tmp_path, synthetic_data):  # noqa: F811
    from featnorm.train.trainer import Trainer

    cfg = tiny_config(steps=6, checkpoint_every=3, precision="bf16")
    Trainer(cfg, synthetic_data, tmp_path / "a", tmp_path / "cka", progress=False, device=CUDA).run()
    tr = Trainer(cfg, synthetic_data, tmp_path / "b", tmp_path / "ckb", progress=False, device=CUDA)
    tr.total_steps = 3
    tr.run()
    tr2 = Trainer(cfg, synthetic_data, tmp_path / "b", tmp_path / "ckb", progress=False, device=CUDA)
    assert tr2.step == 3 and next(tr2.model.parameters()).is_cuda
    tr2.run()
    full, resumed = read_log(tmp_path / "a" / "train_log.jsonl"), read_log(tmp_path / "b" / "train_log.jsonl")
    assert [r["step"] for r in resumed] == [r["step"] for r in full]
    for a, b in zip(full, resumed):
        if "loss" in a:
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6), (a, b)
    ta = torch.load(tmp_path / "a" / "model.pt", map_location="cpu", weights_only=True)["teacher"]
    tb = torch.load(tmp_path / "b" / "model.pt", map_location="cpu", weights_only=True)["teacher"]
    for k in ta:
        torch.testing.assert_close(tb[k], ta[k], rtol=1e-4, atol=1e-5, msg=k)


def test_the_loader_sends_pinned_uint8_batches_that_train_like_float_ones(tmp_path):
    from featnorm.config import run_config_from_dict
    from featnorm.data.demo_classification import write_classification_demo
    from featnorm.data.imagefolder import pack_imagefolder
    from featnorm.data.packing import to_unit_pixels
    from featnorm.train.data_source import build_train_data

    write_classification_demo(tmp_path / "img", seed=0, n_train=24, n_val=0)
    pack_imagefolder(tmp_path / "img" / "train", tmp_path / "shards", "train")
    cfg = run_config_from_dict({
        "model": {"encoder": {"dim": 64, "depth": 1, "num_heads": 2}, "predictor": {"dim": 32, "depth": 1, "num_heads": 1}},
        "data": {"train_shards": str(tmp_path / "shards"), "max_side": 128, "max_context_tokens": 32,
                 "max_target_tokens": 48, "rows_per_pack": 4, "shuffle_buffer": 8, "num_workers": 0},
        "train": {"batch_size": 4, "steps": 1, "lidar_every": 0},
    })
    batch = next(build_train_data(cfg, tmp_path / "ck", device=CUDA).epoch_batches(0, 0))
    assert batch.pixels.dtype == torch.uint8 and batch.pixels.is_pinned() and batch.token_ids.is_pinned()
    on_gpu = to_unit_pixels(batch.pixels.to(CUDA, non_blocking=True), batch.token_ids.to(CUDA))
    assert torch.equal(on_gpu.cpu(), to_unit_pixels(batch.pixels, batch.token_ids))
    cpu_float = next(build_train_data(cfg, tmp_path / "ck", device="cpu").epoch_batches(0, 0))
    assert cpu_float.pixels.dtype == torch.float32 and torch.equal(cpu_float.pixels, on_gpu.cpu())
    model = IJEPA(cfg.model).to(CUDA)
    with torch.no_grad():
        a = _loss(model, PackedBatch(on_gpu, batch.token_ids.to(CUDA), batch.context_length))
        b = _loss(model, cpu_float.to(CUDA))
    assert float(a) == float(b)


def test_flop_peak_of_this_gpu_is_known():
    from featnorm.train.throughput import peak_tflops

    peak, name = peak_tflops(CUDA)
    assert peak is not None, f"{name} is not in featnorm.train.throughput.PEAK_BF16_DENSE_TFLOPS: add its bf16 dense peak"
