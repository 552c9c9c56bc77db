"""The trainer's device path on the CPU: uint8 batches (what the loader sends to a GPU) train
exactly like float ones, and FlexAttention is refused before a CPU run starts."""

import pytest
import torch

from featnorm.batch import PackedBatch
from featnorm.config import ConfigError
from featnorm.train.trainer import Trainer

from test_train_trainer import synthetic_data, tiny_config  # noqa: F401 (fixture)


def _as_uint8(batch):
    """The uint8 pixels that scale to `batch.pixels` (the fixture's pixels are random floats)."""
    from featnorm.data.packing import to_unit_pixels

    u8 = ((batch.pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return PackedBatch(u8, batch.token_ids, batch.context_length), PackedBatch(
        to_unit_pixels(u8, batch.token_ids), batch.token_ids, batch.context_length)


def test_uint8_batches_give_the_same_step_as_their_float_scaling(tmp_path, synthetic_data):  # noqa: F811
    u8, f32 = _as_uint8(next(synthetic_data.epoch_batches(0, 0)))
    losses = []
    for b, name in ((u8, "u"), (f32, "f")):
        tr = Trainer(tiny_config(), synthetic_data, tmp_path / name, tmp_path / f"ck{name}", progress=False, device="cpu")
        row, _ = tr.train_step(b)
        losses.append(row["loss"])
        params = [p.detach().clone() for p in tr.model.parameters()]
        if name == "u":
            first = params
    assert losses[0] == losses[1]
    assert all(torch.equal(a, b) for a, b in zip(first, params))


def test_flex_attention_refuses_to_train_on_the_cpu_before_the_run(tmp_path, synthetic_data):  # noqa: F811
    cfg = tiny_config()
    cfg.model.attention_backend = "flex"
    with pytest.raises(ConfigError, match="attention_backend = flex trains only on CUDA"):
        Trainer(cfg, synthetic_data, tmp_path / "out", tmp_path / "ck", progress=False, device="cpu")
