"""DiffMoE MLP: experts over a batch-wide token pool (DiffMoE, arXiv 2503.14487; SPEC 3).

E experts, each an MLP `dim -> hidden -> dim` (tanh-GELU). Every token of the whole batch
gets a gate score per expert, `(tanh(W x) + 1) / 2` in [0, 1].

Training: the N tokens of the flattened batch form one pool; expert e takes its top
k = floor(N x capacity / E) tokens by gate score (padding scored -1, below every real
token, so it is never chosen while k <= real tokens; if k exceeds them the padding picks are
dropped) and adds `gate x expert(x)` to those tokens' outputs. A capacity predictor (a
small MLP on the detached input) learns by binary cross-entropy which tokens each expert
chose; its loss is `aux_loss` (the objective adds it). Per-expert thresholds follow the
k-th largest predicted score by EMA (beta `threshold_beta`; averaged across processes
when torch.distributed is initialised).

Eval: expert e takes every real token whose predicted score passes its threshold, so the
number of experts per token varies. `eval()` therefore changes the forward.

Choices: gate scores are computed from the MLP's input (the block's `norm2(x)`; the
reference gates the un-normed residual); N counts padding slots as the reference does
(static shapes, no host sync in training), so a real token meets capacity x N / N_real
experts on average. Eval mode syncs once per layer (the busiest expert's count).

A module whose parameters do not require grad (the EMA teacher) never updates its
thresholds nor computes `aux_loss`: the EMA copies them from the student (buffers).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class DiffMoE(nn.Module):
    """`forward(x (B, L, dim), real (B, L) bool | None) -> (B, L, dim)`: the summed gated
    expert outputs (0 for tokens no expert took); the block adds it to the residual.

    After each forward: `aux_loss` (scalar tensor with grad; None in eval mode or when frozen),
    `experts_per_token` (detached scalar: mean number of experts that processed a real token),
    `eval_experts_per_token` (detached scalar: how many experts the eval-mode rule would pick
    per real token on this input; equals `experts_per_token` in eval mode).
    """

    def __init__(self, dim: int, hidden_dim: int, num_experts: int, capacity: float = 1.0, threshold_beta: float = 0.95):
        super().__init__()
        self.dim, self.hidden_dim, self.num_experts = dim, hidden_dim, num_experts
        self.capacity, self.threshold_beta = capacity, threshold_beta
        self.gate = nn.Linear(dim, num_experts, bias=False)
        self.w1 = nn.Parameter(torch.empty(num_experts, dim, hidden_dim))
        self.b1 = nn.Parameter(torch.zeros(num_experts, hidden_dim))
        self.w2 = nn.Parameter(torch.empty(num_experts, hidden_dim, dim))
        self.b2 = nn.Parameter(torch.zeros(num_experts, dim))
        predictor_hidden = max(num_experts, dim // 4)
        self.capacity_predictor = nn.Sequential(
            nn.Linear(dim, predictor_hidden), nn.GELU(approximate="tanh"), nn.Linear(predictor_hidden, num_experts)
        )
        self.register_buffer("thresholds", torch.full((num_experts,), 0.5))
        self.register_buffer("thresholds_initialized", torch.zeros((), dtype=torch.bool))
        self.aux_loss: torch.Tensor | None = None
        self.experts_per_token: torch.Tensor | None = None
        self.eval_experts_per_token: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each expert as a fresh nn.Linear pair: weights and biases uniform in
        +-1/sqrt(fan_in) (kaiming-uniform with a = sqrt(5), PyTorch's default)."""
        for w, b in ((self.w1, self.b1), (self.w2, self.b2)):
            bound = 1.0 / math.sqrt(w.shape[1])  # fan_in: the input width of one expert
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def vit_init(self) -> None:
        """ViT-style experts (model.init: trunc-normal): trunc-normal std 0.02, zero biases."""
        nn.init.trunc_normal_(self.w1, std=0.02, a=-0.04, b=0.04)
        nn.init.trunc_normal_(self.w2, std=0.02, a=-0.04, b=0.04)
        nn.init.zeros_(self.b1)
        nn.init.zeros_(self.b2)

    def no_weight_decay(self) -> set[str]:
        """Names of the parameters that are biases (2-D here, one row per expert), timm-style:
        optimizers should not decay them."""
        return {"b1", "b2"}

    def tokens_per_expert(self, num_tokens: int) -> int:
        """k = floor(N x capacity / E), at least 1."""
        return max(1, int(num_tokens * self.capacity / self.num_experts + 1e-9))

    def _experts(self, x: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """x `(N, dim)`, idx `(k, E)` token chosen as expert e's j-th, weight `(k, E)` (0 drops
        the pick) -> `(N, dim)` sum over picks of `weight x expert_e(x[idx])`."""
        k, E = idx.shape
        xe = x[idx.t()]  # (E, k, dim)
        h = F.gelu(torch.baddbmm(self.b1[:, None].to(xe.dtype), xe, self.w1.to(xe.dtype)), approximate="tanh")
        y = torch.baddbmm(self.b2[:, None].to(h.dtype), h, self.w2.to(h.dtype))  # (E, k, dim)
        y = y * weight.t()[..., None].to(y.dtype)
        return torch.zeros_like(x).index_add_(0, idx.t().reshape(-1), y.reshape(E * k, -1).to(x.dtype))

    @torch.no_grad()
    def _update_thresholds(self, kth: torch.Tensor) -> None:
        """EMA of the k-th predicted score per expert `(E,)`; the first update copies it."""
        kth = kth.float()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(kth)
            kth /= dist.get_world_size()
        ema = torch.lerp(self.thresholds, kth, 1.0 - self.threshold_beta)
        self.thresholds.copy_(torch.where(self.thresholds_initialized, ema, kth))
        self.thresholds_initialized.fill_(True)

    def route(self, x: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Choose each expert's tokens. x `(N, dim)` flattened tokens, real `(N,)` bool ->
        idx `(k, E)` token indices (expert e's picks in column e), weight `(k, E)` their gate
        scores (0 on dropped picks). Training also sets `aux_loss` and updates the thresholds."""
        N = x.shape[0]
        gates = (torch.tanh(self.gate(x)) + 1) / 2  # (N, E)
        learning = self.training and self.gate.weight.requires_grad
        logits = self.capacity_predictor(x.detach() if learning else x).float()  # (N, E)
        predicted = torch.sigmoid(logits)
        would_pick = (predicted > self.thresholds) & real[:, None]  # the eval-mode rule
        count = real.sum().clamp_min(1)
        self.eval_experts_per_token = (would_pick.sum() / count).detach()
        self.aux_loss = None
        if not self.training:
            # Each expert's picks first (stable), padded to the busiest expert's count.
            m = max(1, int(would_pick.sum(0).max()))
            idx = torch.sort(would_pick.to(torch.uint8), dim=0, descending=True, stable=True).indices[:m]
            self.experts_per_token = self.eval_experts_per_token
            return idx, gates.gather(0, idx) * would_pick.gather(0, idx)

        k = min(self.tokens_per_expert(N), N)
        scores = gates.detach().float().masked_fill(~real[:, None], -1.0)
        idx = scores.topk(k, dim=0, sorted=False).indices  # (k, E)
        picked = real[idx]  # (k, E): False only when k exceeds the real tokens
        self.experts_per_token = (picked.sum() / count).detach()
        if learning:
            chosen = torch.zeros_like(logits).scatter_(0, idx, picked.to(logits.dtype))
            bce = F.binary_cross_entropy_with_logits(logits, chosen, reduction="none")
            self.aux_loss = (bce * real[:, None]).sum() / (count * self.num_experts)
            self._update_thresholds(predicted.detach().masked_fill(~real[:, None], -1.0).topk(k, dim=0).values[-1])
        return idx, gates.gather(0, idx) * picked

    def forward(self, x: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # (N, dim)
        N = flat.shape[0]
        real = torch.ones(N, dtype=torch.bool, device=x.device) if real is None else real.reshape(N)
        idx, weight = self.route(flat, real)
        return self._experts(flat, idx, weight).reshape(shape)

    def extra_repr(self) -> str:
        return f"{self.dim}, hidden={self.hidden_dim}, experts={self.num_experts}, capacity={self.capacity}"
