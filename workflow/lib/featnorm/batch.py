"""The packed batch: the one data structure that crosses from the data pipeline to the model.

Each row holds a context segment of fixed length `context_length` followed by a target
segment; tokens stay window-contiguous (each window's `window_size**2` tokens adjacent,
windows aligned to multiples of `window_size**2` within each segment). Register tokens,
when the encoder has them, sit in the context segment (an image's registers first, then its
context windows; register slots rounded up to whole windows). Ids follow `featnorm.tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PackedBatch:
    pixels: torch.Tensor  # (batch, seq, patch_size * patch_size * 3) float in [-1, 1]; 0 on padding/registers
    token_ids: torch.Tensor  # (batch, seq, 4) long, see featnorm.tokens
    context_length: int  # length of the context segment; seq - context_length is the target segment

    @property
    def context_pixels(self) -> torch.Tensor:
        return self.pixels[:, : self.context_length]

    @property
    def context_ids(self) -> torch.Tensor:
        return self.token_ids[:, : self.context_length]

    @property
    def target_pixels(self) -> torch.Tensor:
        return self.pixels[:, self.context_length :]

    @property
    def target_ids(self) -> torch.Tensor:
        return self.token_ids[:, self.context_length :]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "PackedBatch":
        return PackedBatch(
            self.pixels.to(device, non_blocking=non_blocking),
            self.token_ids.to(device, non_blocking=non_blocking),
            self.context_length,
        )

    def pin_memory(self) -> "PackedBatch":
        return PackedBatch(self.pixels.pin_memory(), self.token_ids.pin_memory(), self.context_length)
