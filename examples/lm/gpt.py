"""A small decoder-only transformer over bytes, GPT-2 style.

Pre-LayerNorm blocks (attention, then a 4x MLP with GELU, each behind a residual), causal
attention through ``scaled_dot_product_attention``, learned positions, the output layer tied
to the token embedding, GPT-2's initialisation (normal 0.02, the residual projections scaled
by 1/sqrt(2 * layers)). No dropout: every rank's computation is a function of its data only.

Named sizes (parameters with the tied embedding counted once)::

    tiny    1 layer,  width  32, 2 heads, context  32:     21,984   (tests only)
    1m      5 layers, width 128, 4 heads, context 128:  1,040,768
    3m      6 layers, width 192, 6 heads, context 128:  2,743,296
    10m     8 layers, width 320, 5 heads, context 256: 10,028,160
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

VOCAB = 256  # bytes


@dataclass(frozen=True)
class GPTConfig:
    layers: int
    width: int
    heads: int
    context: int
    vocab: int = VOCAB

    def __post_init__(self):
        for name in ("layers", "width", "heads", "context", "vocab"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not a multiple of heads {self.heads}")


SIZES = {
    "tiny": GPTConfig(layers=1, width=32, heads=2, context=32),
    "1m": GPTConfig(layers=5, width=128, heads=4, context=128),
    "3m": GPTConfig(layers=6, width=192, heads=6, context=128),
    "10m": GPTConfig(layers=8, width=320, heads=5, context=256),
}


class Block(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.heads = c.heads
        self.ln1 = nn.LayerNorm(c.width)
        self.qkv = nn.Linear(c.width, 3 * c.width)
        self.proj = nn.Linear(c.width, c.width)
        self.ln2 = nn.LayerNorm(c.width)
        self.fc = nn.Linear(c.width, 4 * c.width)
        self.out = nn.Linear(4 * c.width, c.width)

    def forward(self, x):
        b, t, w = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(w, dim=2)
        q, k, v = (z.view(b, t, self.heads, w // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, w))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tokens = nn.Embedding(config.vocab, config.width)
        self.positions = nn.Embedding(config.context, config.width)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(config.width)
        self.apply(self._init)
        for block in self.blocks:  # the projections that add to the residual stream
            for layer in (block.proj, block.out):
                nn.init.normal_(layer.weight, std=0.02 / math.sqrt(2 * config.layers))

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits of the next byte at every position: (batch, time, vocab)."""
        t = idx.shape[1]
        if t > self.config.context:
            raise ValueError(f"a sequence of {t} bytes is longer than the context "
                             f"{self.config.context}")
        x = self.tokens(idx) + self.positions(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return F.linear(self.ln_f(x), self.tokens.weight)  # tied to the embedding

    def loss(self, idx: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"):
        """Cross-entropy of the next byte, in nats."""
        logits = self(idx)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                               reduction=reduction)


def make_gpt(size: str) -> GPT:
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    return GPT(SIZES[size])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def decay_groups(model: nn.Module, weight_decay: float):
    """Parameter groups for AdamW: weight decay on the matrices (linear weights and the
    embeddings), none on biases and LayerNorm parameters."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": rest, "weight_decay": 0.0}]
