"""The depth probe head, token-to-grid placement, training on a tiny encoder and the strips."""

import pytest
import torch
from PIL import Image

from featnorm.config import run_config_from_dict
from featnorm.evaluation.depth_probe import (
    DepthHead,
    pixels_to_image,
    probe_depth_index,
    save_depth_strips,
    tokens_to_grid,
    train_depth_probe,
)
from featnorm.models.encoder import Encoder
from featnorm.tokens import PAD_ID


def _ids(gh, gw, registers=0):
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    ids = torch.stack([torch.zeros(gh * gw, dtype=torch.long), torch.full((gh * gw,), PAD_ID),
                       rows.flatten(), cols.flatten()], -1)
    if registers:
        reg = torch.tensor([[0, r, PAD_ID, PAD_ID] for r in range(registers)])
        ids = torch.cat([reg, ids])
    return ids


def test_head_maps_grid_to_depth_map_size():
    head = DepthHead(32)
    out = head(torch.randn(2, 32, 16, 16), (48, 64))
    assert out.shape == (2, 48, 64)
    assert head.conv1.out_channels == 16 and head.conv2.out_channels == 32


def test_fourth_from_last_block():
    assert probe_depth_index(12) == 9  # hiddens[9] = output of block 9 of 12
    assert probe_depth_index(2) == 1


def test_tokens_to_grid_places_by_row_col_ids_whatever_the_order():
    ids = _ids(3, 4, registers=2)
    tokens = torch.randn(1, len(ids), 5)
    perm = torch.randperm(len(ids))
    grid = tokens_to_grid(tokens[:, perm], ids[perm][None])
    assert grid.shape == (1, 5, 3, 4)
    patch_tokens = tokens[0, 2:]  # registers first, then row-major patches
    assert torch.equal(grid[0].permute(1, 2, 0).reshape(12, 5), patch_tokens)


def test_pixels_to_image_inverts_patch_layout():
    img = torch.randint(0, 256, (8, 12, 3), dtype=torch.uint8)
    p = 4
    patches = img.reshape(2, p, 3, p, 3).permute(0, 2, 1, 3, 4).reshape(6, p * p * 3)
    out = pixels_to_image(patches.float() / 127.5 - 1, _ids(2, 3), p)
    assert (torch.from_numpy(out).int() - img.int()).abs().max() <= 1


def _depth_batches(n_batches, b=4, gh=4, patch=4, seed=0):
    """Images whose brightness encodes depth: a learnable relation."""
    out = []
    for i in range(n_batches):
        g = torch.Generator().manual_seed(seed + i)
        slope = torch.rand(b, 1, 1, generator=g) * 2 + 0.5
        depth = 1 + slope * torch.linspace(0, 1, gh * patch).expand(b, gh * patch, gh * patch)
        img = (depth / depth.amax((1, 2), keepdim=True))[..., None].expand(-1, -1, -1, 3) * 2 - 1
        pixels = img.reshape(b, gh, patch, gh, patch, 3).permute(0, 1, 3, 2, 4, 5).reshape(b, gh * gh, -1)
        out.append((pixels.contiguous(), _ids(gh, gh).expand(b, -1, -1).clone(), depth.contiguous()))
    return out


def test_depth_probe_trains_and_reports_metrics_and_strips(tmp_path):
    torch.manual_seed(0)
    cfg = run_config_from_dict({"model": {"patch_size": 4, "encoder": {"dim": 32, "depth": 2, "num_heads": 2}}})
    enc = Encoder(cfg.model.encoder, cfg.model.patch_dim).eval()
    train = _depth_batches(3)
    val = _depth_batches(1, seed=100)
    res, strips = train_depth_probe(enc, lambda epoch: train, lambda: val, encoder_depth=2, dim=32,
                                    epochs=3, progress=False, num_strip_images=2)
    assert res["num_train"] == 12 and res["num_val"] == 4 and res["feature_depth"] == 1
    assert res["rmse"] >= 0 and 0 <= res["delta1"] <= 1 and res["absrel"] >= 0
    assert len(res["loss_curve"]["train_loss"]) == 3
    assert all(p.grad is None for p in enc.parameters())  # the encoder stays frozen
    path = tmp_path / "strips.png"
    save_depth_strips(strips, path, patch_size=4)
    w, h = Image.open(path).size
    assert w == 3 * 16 + 8 and h == 2 * 16 + 4


def test_feature_depth_counts_blocks_from_the_end_as_the_reference_and_stops_at_the_first_block():
    from featnorm.evaluation.depth_probe import probe_depth_index

    assert probe_depth_index(12) == 9  # the reference's all_layer_features[-4] of 13 entries
    assert probe_depth_index(4, -2) == 3 and probe_depth_index(4, -1) == 4
    assert probe_depth_index(2) == 1  # shallower than 4 blocks: the first block
    assert probe_depth_index(4, 0) == 0
    with pytest.raises(ValueError, match="beyond the 4 blocks"):
        probe_depth_index(4, 5)
