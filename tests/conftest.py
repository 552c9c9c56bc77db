"""Shared test setup: few CPU threads (the test machine is shared) and a hand-written packer
for small packed batches (the model tests must not depend on featnorm.data)."""

from __future__ import annotations

import pytest
import torch

from featnorm.batch import PackedBatch
from featnorm.tokens import PAD_ID, padding_ids

torch.set_num_threads(1)


def image_tokens(sample_id, h, w, num_context_windows, window_size=2, patch_dim=12, num_registers=0, seed=0):
    """One image of h x w patches split by whole windows into context and target.

    Returns (context_ids, context_pixels, target_ids, target_pixels); each window's tokens
    adjacent; the context starts with `num_registers` register tokens padded to whole windows.
    """
    g = torch.Generator().manual_seed(seed)
    ws, w2 = window_size, window_size**2
    windows = []
    for wr in range(h // ws):
        for wc in range(w // ws):
            ids = [[sample_id, PAD_ID, wr * ws + i, wc * ws + j] for i in range(ws) for j in range(ws)]
            windows.append(torch.tensor(ids))
    order = torch.randperm(len(windows), generator=g)
    windows = [windows[i] for i in order]
    ctx, tgt = windows[:num_context_windows], windows[num_context_windows:]
    if num_registers:
        n = -(-num_registers // w2) * w2
        reg = padding_ids(n)
        reg[:num_registers, 0] = sample_id
        reg[:num_registers, 1] = torch.arange(num_registers)
        ctx = [reg] + ctx
    ctx_ids, tgt_ids = torch.cat(ctx), torch.cat(tgt)
    ctx_pix = torch.randn(len(ctx_ids), patch_dim, generator=g) * (ctx_ids[:, 1:2] == PAD_ID)
    tgt_pix = torch.randn(len(tgt_ids), patch_dim, generator=g)
    ctx_pix = ctx_pix * (ctx_ids[:, 0:1] != PAD_ID)
    return ctx_ids, ctx_pix, tgt_ids, tgt_pix


def pack(rows, context_length, target_length, patch_dim=12):
    """rows: a list of lists of `image_tokens` tuples -> PackedBatch (images in order, then padding)."""
    B, L = len(rows), context_length + target_length
    ids = padding_ids(B, L)
    pixels = torch.zeros(B, L, patch_dim)
    for b, images in enumerate(rows):
        c = t = 0
        for ci, cp, ti, tp in images:
            ids[b, c : c + len(ci)], pixels[b, c : c + len(ci)] = ci, cp
            c += len(ci)
            s = context_length + t
            ids[b, s : s + len(ti)], pixels[b, s : s + len(ti)] = ti, tp
            t += len(ti)
        assert c <= context_length and t <= target_length, "images do not fit the row"
    return PackedBatch(pixels, ids, context_length)


@pytest.fixture
def make_image():
    return image_tokens


@pytest.fixture
def make_batch():
    return pack


@pytest.fixture
def batch(make_image, make_batch):
    """Two packed rows: images a (4x6 patches) and b (4x4) in one row, c (6x4) in the other,
    each with one register; context 24 and target 32 tokens."""
    a = make_image(0, 4, 6, 2, num_registers=1, seed=1)
    b = make_image(1, 4, 4, 1, num_registers=1, seed=2)
    c = make_image(2, 6, 4, 3, num_registers=1, seed=3)
    return make_batch([[a, b], [c]], 24, 32)

