"""The mask picture (make-viz): it draws the trainer's first packed rows, marks exactly the
context patches the packer put in each row's context segment, and keeps every pixel."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from featnorm.config import save_run_config
from featnorm.data.demo_classification import jpeg_bytes, render
from featnorm.data.packing import to_unit_pixels
from featnorm.data.shards import ShardWriter
from featnorm.data.train_pipeline import TrainLoader
from featnorm.plotting.mask_picture import first_training_rows, sample_pictures, x_mark
from featnorm.plotting.synthetic_runs import tiny_config
from featnorm.tokens import COL, ROW, SAMPLE, is_patch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import fig_mask_picture  # noqa: E402


@pytest.fixture(scope="module")
def run_cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("maskpic")
    rng = np.random.default_rng(0)
    with ShardWriter(root / "train", "train", shard_bytes=60_000, split="train") as w:
        for i in range(40):
            side = int(rng.integers(40, 90))
            img = np.asarray(Image.fromarray(render(i % 3, rng)).resize((side, int(side * 0.8))))
            w.write({"__key__": f"{i:06d}", "jpg": jpeg_bytes(img), "cls": str(i % 3)})
    cfg = tiny_config("t")
    cfg.data.train_shards = str(root / "train")
    cfg.data.num_workers = 0
    cfg.data.shuffle_buffer = 8
    cfg.data.rows_per_pack = 4
    save_run_config(cfg, root / "config.yaml")
    return cfg, root


def test_mask_picture_marks_exactly_the_context_patches_of_each_row(run_cfg):
    cfg, _ = run_cfg
    batch = first_training_rows(cfg, 3)
    pics = sample_pictures(batch, 8)
    ids, px = batch.token_ids, batch.pixels
    real = is_patch(ids)
    assert len(pics) == sum(ids[r, real[r], SAMPLE].unique().numel() for r in range(3))
    assert any(p.context.sum() > 0 for p in pics) and len(pics) > 3  # several images per row
    mark = x_mark(8)
    for pic in pics:
        r, lc = pic.row, batch.context_length
        mine = real[r] & (ids[r, :, SAMPLE] == pic.sample)
        ctx = {(int(a), int(b)) for a, b in ids[r, :lc][mine[:lc]][:, [ROW, COL]]}
        tgt = {(int(a), int(b)) for a, b in ids[r, lc:][mine[lc:]][:, [ROW, COL]]}
        assert {tuple(p) for p in np.argwhere(pic.context)} == ctx
        assert {tuple(p) for p in np.argwhere(pic.target)} == tgt
        for j in torch.nonzero(mine).flatten().tolist():
            y, x = int(ids[r, j, ROW]), int(ids[r, j, COL])
            drawn = pic.pixels[y * 8 : (y + 1) * 8, x * 8 : (x + 1) * 8]
            original = px[r, j].to(torch.uint8).numpy().reshape(8, 8, 3)
            if j < lc:
                assert (drawn[mark] == 0).all()
                np.testing.assert_array_equal(drawn[~mark], original[~mark])
            else:
                np.testing.assert_array_equal(drawn, original)


def test_the_rows_are_the_trainers_first_rows(run_cfg):
    cfg, _ = run_cfg
    picture_rows = first_training_rows(cfg, 3)
    cfg_train = cfg
    trainer_batch = next(iter(TrainLoader.from_config(cfg_train)))
    assert torch.equal(picture_rows.token_ids, trainer_batch.token_ids[:3])
    unit = to_unit_pixels(picture_rows.pixels.clone(), picture_rows.token_ids)
    torch.testing.assert_close(unit.float(), trainer_batch.pixels[:3])


def test_script_writes_the_figure_and_reports_a_missing_config(run_cfg, tmp_path, capsys):
    _, root = run_cfg
    fig_mask_picture.main(["--config", str(root / "config.yaml"), "--rows", "2", "--out", str(tmp_path / "m")])
    assert (tmp_path / "m.png").stat().st_size > 0 and (tmp_path / "m.pdf").stat().st_size > 0
    with pytest.raises(SystemExit, match="does not exist"):
        fig_mask_picture.main(["--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "x")])
