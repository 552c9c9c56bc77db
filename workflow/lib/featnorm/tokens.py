"""The token-id convention, defined once for the whole package.

Every token of a packed batch carries four integer ids, stored as the last axis of a
`token_ids` tensor of shape `(batch, seq, 4)`:

    token_ids[..., SAMPLE]    image index, unique per image within the batch; PAD_ID on padding
    token_ids[..., REGISTER]  register index for register tokens, PAD_ID for image patches
    token_ids[..., ROW]       patch row in the image's patch grid, PAD_ID on registers/padding
    token_ids[..., COL]       patch column, PAD_ID on registers/padding

A padding token has PAD_ID in every field. Attention is allowed only between tokens
with the same (non-pad) sample id, so a row holding several images behaves like
separate images.
"""

from __future__ import annotations

import torch

PAD_ID: int = -100

SAMPLE: int = 0
REGISTER: int = 1
ROW: int = 2
COL: int = 3
NUM_IDS: int = 4


def is_padding(token_ids: torch.Tensor) -> torch.Tensor:
    """`(..., 4)` ids -> `(...)` bool, True on padding tokens."""
    return token_ids[..., SAMPLE] == PAD_ID


def is_register(token_ids: torch.Tensor) -> torch.Tensor:
    """`(..., 4)` ids -> `(...)` bool, True on (non-padding) register tokens."""
    return (token_ids[..., REGISTER] != PAD_ID) & ~is_padding(token_ids)


def is_patch(token_ids: torch.Tensor) -> torch.Tensor:
    """`(..., 4)` ids -> `(...)` bool, True on real image patches (not padding, not registers)."""
    return (token_ids[..., REGISTER] == PAD_ID) & ~is_padding(token_ids)


def padding_ids(*shape: int, device: torch.device | str | None = None) -> torch.Tensor:
    """A `(*shape, 4)` long tensor of padding ids."""
    return torch.full((*shape, NUM_IDS), PAD_ID, dtype=torch.long, device=device)
