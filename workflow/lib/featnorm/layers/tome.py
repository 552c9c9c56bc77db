"""ToMe token merging over packed rows (Bolya et al., ICLR 2023; SPEC 3 "Hidden options").

After a block, each image merges `floor(ratio x n)` of its n patch tokens (at most n // 2)
by bipartite soft matching of the block's head-averaged keys:
  * the image's patches, in row order, alternate between set A (even local index) and set
    B (odd); registers and padding never merge, and tokens of different images never meet;
  * every A token draws an edge to its most similar B token (cosine similarity of keys);
  * the image's r A tokens with the strongest edges merge into their B partners.
Merged features and (row, col) positions are size-weighted means (size = original tokens
per current token), so positions become fractional (RoPE accepts them). Merged-away
tokens are removed and each row is compacted (kept tokens in order, then padding) to the
longest row's length. `unmerge` copies every current token back to all the original
tokens it holds, restoring the input length.

Attention after a merge is plain (no ToMe "proportional attention" size bias; the
reference's merger tracks no sizes); each merge syncs once with the host for the new row length.

Every choice depends only on the image's own tokens and their relative order, and ties
are broken by that order (first B partner, earlier A token), so a row of images A and B
gives A exactly the merges of A alone: the packed-row invariance survives merging.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from featnorm.tokens import COL, PAD_ID, ROW, SAMPLE, is_patch


@dataclass
class MergeState:
    """Where the original tokens went; B rows, L0 original and L current tokens."""

    ids: torch.Tensor  # (B, L, 4) long: ids of the current tokens (a merged token keeps its B partner's ids)
    pos: torch.Tensor  # (B, L, 2) float: (row, col), size-weighted mean of the merged tokens; 0 off patches
    size: torch.Tensor  # (B, L) float: original tokens per current token (1 on registers/padding)
    source: torch.Tensor  # (B, L0) long: index of the current token holding each original token

    @classmethod
    def start(cls, token_ids: torch.Tensor) -> "MergeState":
        """The identity state of `(B, L, 4)` ids (nothing merged yet)."""
        B, L, _ = token_ids.shape
        pos = token_ids[..., [ROW, COL]].masked_fill(~is_patch(token_ids)[..., None], 0).float()
        size = torch.ones(B, L, device=token_ids.device)
        source = torch.arange(L, device=token_ids.device).expand(B, L)
        return cls(token_ids, pos, size, source)

    @property
    def positioned(self) -> torch.Tensor:
        """`(B, L)` bool, True on tokens that carry a position (image patches)."""
        return (self.ids[..., ROW] != PAD_ID) & (self.ids[..., COL] != PAD_ID)


def _gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x `(B, L, ...)`, index `(B, M)` -> `(B, M, ...)`."""
    return x.gather(1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand(*index.shape, *x.shape[2:]))


def merge_plan(keys: torch.Tensor, token_ids: torch.Tensor, ratio: float) -> torch.Tensor:
    """Bipartite soft matching per image.

    keys `(B, L, d)` (head-averaged), token_ids `(B, L, 4)` of the current tokens ->
    `(B, L)` long: for each token, the index of the token it merges into (itself if kept).
    """
    B, L, _ = keys.shape
    sample, patch = token_ids[..., SAMPLE], is_patch(token_ids)
    same = (sample[:, :, None] == sample[:, None, :]) & patch[:, :, None] & patch[:, None, :]  # (B, L, L)
    position = torch.arange(L, device=keys.device)
    before = position[None, :] < position[:, None]  # (L, L): key j comes before query i
    local = (same & before).sum(-1)  # (B, L) index among the image's patches, in row order
    n = same.sum(-1)  # (B, L) patches of the token's image
    r = torch.minimum((n.double() * ratio + 1e-9).floor().long(), n // 2)  # merges per image
    in_a, in_b = patch & (local % 2 == 0), patch & (local % 2 == 1)

    k = torch.nn.functional.normalize(keys.float(), dim=-1)
    edges = same & in_a[:, :, None] & in_b[:, None, :]  # (B, L, L) allowed A -> B edges
    sim = (k @ k.transpose(1, 2)).masked_fill(~edges, -torch.inf)
    best = sim.amax(-1)  # (B, L), -inf off A
    # Partner: the most similar B token, ties to the earliest one.
    partner = torch.where(edges & (sim == best[..., None]), position, L).amin(-1)
    # Rank of each A token among its image's A tokens: stronger edge first, ties by order.
    stronger = (best[:, None, :] > best[:, :, None]) | ((best[:, None, :] == best[:, :, None]) & before)
    rank = (stronger & same & in_a[:, None, :]).sum(-1)
    merged = in_a & (rank < r)
    return torch.where(merged, partner, position)


def merge_tokens(x: torch.Tensor, target: torch.Tensor, state: MergeState) -> tuple[torch.Tensor, MergeState]:
    """Apply a `merge_plan`: x `(B, L, dim)`, target `(B, L)` -> `(B, L', dim)` and the new state.

    Sums of `size x feature` and `size x position` are divided by the merged size (float32).
    """
    B, L, D = x.shape
    kept = target == torch.arange(L, device=x.device)
    w = state.size
    feat = torch.zeros(B, L, D, device=x.device).index_put_(
        (torch.arange(B, device=x.device)[:, None].expand(B, L), target), x.float() * w[..., None], accumulate=True
    )
    pos = torch.zeros(B, L, 2, device=x.device).scatter_add_(1, target[..., None].expand(B, L, 2), state.pos * w[..., None])
    size = torch.zeros(B, L, device=x.device).scatter_add_(1, target, w)
    feat, pos = feat / size.clamp_min(1e-12)[..., None], pos / size.clamp_min(1e-12)[..., None]

    num_kept = kept.sum(1)
    new_len = int(num_kept.max())
    order = torch.sort((~kept).to(torch.uint8), dim=1, stable=True).indices  # kept tokens first, in order
    new_index = torch.empty_like(order).scatter_(1, order, torch.arange(L, device=x.device).expand(B, L))
    order = order[:, :new_len]
    live = torch.arange(new_len, device=x.device)[None] < num_kept[:, None]  # (B, L'), False on the tail
    ids = _gather_rows(state.ids, order).masked_fill(~live[..., None], PAD_ID)
    state = MergeState(
        ids=ids,
        pos=_gather_rows(pos, order) * live[..., None],
        size=torch.where(live, _gather_rows(size, order), 1.0),
        source=new_index.gather(1, target.gather(1, state.source)),
    )
    return _gather_rows(feat, order).to(x.dtype), state


def unmerge(x: torch.Tensor, state: MergeState) -> torch.Tensor:
    """`(B, L, dim)` current tokens -> `(B, L0, dim)`: each original token gets the features
    of the token that holds it."""
    return _gather_rows(x, state.source)

