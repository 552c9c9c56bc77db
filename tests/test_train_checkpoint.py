"""Resume checkpoints: atomic files, the last K kept, corrupt-newest fallback, RNG round trip,
config-hash refusal."""

import random

import pytest
import torch

from featnorm.train.checkpoint import (
    ConfigMismatchError,
    check_config_hash,
    checkpoint_paths,
    load_latest_checkpoint,
    rng_state,
    save_atomic,
    save_checkpoint,
    set_rng_state,
)


def test_only_the_last_k_checkpoints_are_kept(tmp_path):
    for step in (1, 2, 3, 4):
        save_checkpoint({"step": step}, tmp_path, step, keep=2)
    assert [p.name for p in checkpoint_paths(tmp_path)] == ["ckpt-000000004.pt", "ckpt-000000003.pt"]
    assert not list(tmp_path.glob(".*tmp*"))


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    save_checkpoint({"step": 1, "w": torch.ones(1000)}, tmp_path, 1, keep=3)
    newest = save_checkpoint({"step": 2, "w": torch.ones(1000)}, tmp_path, 2, keep=3)
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint"):
        state, path = load_latest_checkpoint(tmp_path)
    assert state["step"] == 1 and path.name == "ckpt-000000001.pt"


def test_no_checkpoint_gives_none(tmp_path):
    assert load_latest_checkpoint(tmp_path / "absent") is None


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    np = pytest.importorskip("numpy")
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    save_atomic({"rng": rng_state(gen)}, tmp_path / "r.pt")
    first = (torch.rand(3), random.random(), np.random.rand(), torch.rand(2, generator=gen))
    set_rng_state(torch.load(tmp_path / "r.pt", weights_only=True)["rng"], gen)
    again = (torch.rand(3), random.random(), np.random.rand(), torch.rand(2, generator=gen))
    assert torch.equal(first[0], again[0]) and first[1] == again[1] and first[2] == again[2]
    assert torch.equal(first[3], again[3])


def test_checkpoint_of_another_config_is_refused_unless_forced(tmp_path):
    with pytest.raises(ConfigMismatchError, match="--force-resume"):
        check_config_hash({"config_hash": "aaaa"}, "bbbb", tmp_path / "ckpt-000000001.pt", force=False)
    with pytest.warns(UserWarning, match="forced"):
        check_config_hash({"config_hash": "aaaa"}, "bbbb", tmp_path / "ckpt-000000001.pt", force=True)
    check_config_hash({"config_hash": "bbbb"}, "bbbb", tmp_path / "x", force=False)
