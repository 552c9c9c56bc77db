"""Images for the per-image figures: from validation shards or a folder, centre-cropped."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from featnorm.plotting.image_sources import ImageSourceError, center_square, load_images, patchify
from featnorm.plotting.synthetic_runs import write_image_folder, write_shard


def test_center_square_crops_the_middle_and_resizes():
    img = np.zeros((40, 100, 3), np.uint8)
    img[:, 30:70] = 255  # the centre square of a 40 x 100 image is columns 30..69
    out = center_square(Image.fromarray(img), 16)
    assert out.shape == (16, 16, 3) and out[:, 1:-1].min() == 255  # edges may blend (bilinear filter support)


def test_images_come_from_shards_or_a_folder_in_a_stable_order(tmp_path):
    write_shard(tmp_path / "val" / "val-000000.tar", 3, size=50)
    write_image_folder(tmp_path / "mine", 3, size=70)
    a = load_images(shards=tmp_path / "val", count=2, size=32)
    assert [i.name for i in a] == ["sample000000", "sample000001"] and a[0].pixels.shape == (32, 32, 3)
    b = load_images(image_dir=tmp_path / "mine", count=5, size=32, skip=1)
    assert [i.name for i in b] == ["image_001", "image_002"]
    with pytest.raises(ImageSourceError, match="exactly one"):
        load_images(shards=tmp_path / "val", image_dir=tmp_path / "mine")
    with pytest.raises(ImageSourceError, match="no decodable images"):
        load_images(image_dir=tmp_path / "val", count=1)


def test_patchify_orders_patches_row_major_in_unit_range():
    img = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    pixels, rows, cols = patchify(img, 8)
    assert pixels.shape == (4, 8 * 8 * 3)
    assert rows.tolist() == [0, 0, 1, 1] and cols.tolist() == [0, 1, 0, 1]
    np.testing.assert_allclose(pixels[1].numpy().reshape(8, 8, 3), img[:8, 8:] / 127.5 - 1, atol=1e-6)
