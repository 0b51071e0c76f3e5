"""SASRec (Kang & McAuley, 2018): a small causal transformer over a user's recent items.

Input: token rows (B, L), left-padded (``jobs.seq.sequences``). Embedding: item embedding
(padding row 0) plus a learned position embedding, LayerNorm, dropout; then ``blocks``
pre-LayerNorm blocks of causal multi-head self-attention and a position-wise feed-forward
layer, and a last LayerNorm. A position attends to itself and to earlier non-padding
positions only, so no row is fully masked (no NaN) and a real item never reads padding.

Scores: the output ``h`` at a position, dotted with the item embedding matrix (the same
matrix as the input, without the padding row) — ``h @ E[1:]ᵀ`` is the next-item logit of every
item. Hence the export: ``user_factors`` = ``h`` at the last position of each user's latest
history, ``item_factors`` = ``E[1:]``, ``item_bias`` = 0; ``jobs.core.model.top_k`` then ranks
exactly as the model does. Losses: ``full`` softmax cross-entropy over the catalogue (small
catalogues), or ``sampled`` softmax over shared uniform negatives (accidental hits masked).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("full", "sampled")


class Block(nn.Module):
    """Pre-LN causal self-attention + feed-forward, each with dropout and a residual."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.ff = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, length, hidden = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, self.heads, hidden // self.heads).unbind(2)
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        x = x + self.drop(self.out(att.transpose(1, 2).reshape(b, length, hidden)))
        return x + self.drop(self.ff(self.norm2(x)))


class SASRec(nn.Module):
    """Next-item model; ``forward`` returns (summed loss, number of predicted positions)."""

    def __init__(
        self,
        n_items: int,
        hidden: int = 64,
        max_len: int = 50,
        blocks: int = 2,
        heads: int = 1,
        dropout: float = 0.2,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
        self.n_items, self.max_len = n_items, max_len
        self.item = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        self.pos = nn.Embedding(max_len, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden, heads, dropout) for _ in range(blocks))
        self.last_norm = nn.LayerNorm(hidden)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, 0.0, init_std)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def item_matrix(self) -> torch.Tensor:
        """The item embeddings without the padding row (n_items, hidden): the output layer too."""
        return self.item.weight[1:]

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, L, hidden) of token rows (B, L), L ≤ ``max_len``."""
        length = tokens.shape[1]
        x = self.item(tokens) + self.pos.weight[self.max_len - length :]
        x = self.drop(self.norm(x))
        real = tokens != 0
        causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=tokens.device)
        mask = (causal & (real[:, None, :] | eye)).unsqueeze(1)  # (B, 1, L, L): True = may attend
        for block in self.blocks:
            x = block(x, mask)
        return self.last_norm(x)

    def user_state(self, tokens: torch.Tensor) -> torch.Tensor:
        """The state at the last position (B, hidden): the user's factors in the artifact."""
        return self.encode(tokens)[:, -1]

    def scores(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-item logits (B, n_items) after each row's last item: the model's own ranking."""
        return self.user_state(tokens) @ self.item_matrix().T

    def forward(
        self, tokens: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of the cross-entropy over positions with a target, their count), float32.

        ``negatives`` (S,) item indices: sampled softmax over {target} ∪ negatives; None: full softmax.
        """
        h = self.encode(tokens)
        valid = targets > 0
        h, y = h[valid], targets[valid] - 1
        items = self.item_matrix()
        if negatives is None:
            logits = (h @ items.T).float()
            loss = F.cross_entropy(logits, y, reduction="sum")
        else:
            pos = (h * items[y]).sum(-1, keepdim=True)
            neg = (h @ items[negatives].T).masked_fill(negatives[None, :] == y[:, None], float("-inf"))
            logits = torch.cat([pos, neg], dim=1).float()
            loss = torch.logsumexp(logits, dim=1).sum() - logits[:, 0].sum()
        return loss, valid.sum()


def build_model(n_items: int, seed: int, **kwargs: int | float) -> SASRec:
    """A freshly initialised model; the same seed gives the same parameters."""
    torch.manual_seed(seed)
    return SASRec(n_items, **kwargs)
