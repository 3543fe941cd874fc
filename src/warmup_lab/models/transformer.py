"""A tiny decoder-only Transformer (nanoGPT-like) for warmup experiments.

The two switches the warmup literature turns on are here: `norm_position` (Post-LN needs warmup,
Pre-LN trains without it; Xiong et al. 2020) and `qk_layernorm` (LayerNorm on queries and keys,
which lowers LR sensitivity; Wortsman et al. 2023). No dropout, and weights drawn from a generator
seeded by the run's seed, so a run is a deterministic function of its config.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from warmup_lab.errors import require

NORM_POSITIONS = ("pre", "post")
INITS = ("gpt2", "xavier")


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, qk_layernorm: bool):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        # Per-head LayerNorm on q and k bounds the attention logits (Wortsman et al. 2023).
        self.q_ln = nn.LayerNorm(self.head_dim) if qk_layernorm else nn.Identity()
        self.k_ln = nn.LayerNorm(self.head_dim) if qk_layernorm else nn.Identity()
        # The fused CPU/CUDA kernels have no double backward; Hessian-vector products need the math one.
        self.math_attention = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_ln(q), self.k_ln(k)
        with sdpa_kernel(SDPBackend.MATH) if self.math_attention else nullcontext():
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, norm_position: str, qk_layernorm: bool):
        super().__init__()
        self.pre = norm_position == "pre"
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, qk_layernorm)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre:  # x + f(LN(x)): the residual stream is never normalised
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))
        x = self.ln1(x + self.attn(x))  # LN(x + f(x)): the original (Vaswani) placement
        return self.ln2(x + self.mlp(x))


class Transformer(nn.Module):
    """Token + learned position embeddings, `n_layers` blocks, a linear head; returns logits (B, T, V)."""

    def __init__(self, vocab_size: int, max_len: int, d_model: int = 64, n_layers: int = 2,
                 n_heads: int = 4, d_ff: int | None = None, norm_position: str = "pre",
                 qk_layernorm: bool = False, seed: int = 0, init: str = "gpt2"):
        super().__init__()
        require(norm_position in NORM_POSITIONS, "model.norm_position", norm_position, "pre or post")
        require(init in INITS, "model.init", init, f"one of {', '.join(INITS)}")
        require(d_model > 0 and n_heads > 0 and d_model % n_heads == 0, "model.n_heads", n_heads,
                f"a positive divisor of model.d_model={d_model}")
        require(n_layers >= 1, "model.n_layers", n_layers, "at least 1")
        self.max_len = max_len
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, d_ff or 4 * d_model, norm_position, qk_layernorm) for _ in range(n_layers))
        # Post-LN blocks already end in a LayerNorm; Pre-LN needs one before the head.
        self.ln_f = nn.LayerNorm(d_model) if norm_position == "pre" else nn.Identity()
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self._init_weights(seed, n_layers, init)

    @torch.no_grad()
    def _init_weights(self, seed: int, n_layers: int, init: str = "gpt2") -> None:
        """From the run's seed. gpt2: N(0, 0.02), residual projections scaled by 1/sqrt(2L).
        xavier: the original Transformer's (Vaswani et al.; Xiong et al. 2020 analyse Post-LN with it),
        Xavier-uniform matrices with no depth scaling, embeddings N(0, 1/d_model)."""
        g = torch.Generator().manual_seed(int(seed))
        for name, p in self.named_parameters():  # fixed order: same seed => same weights
            if p.dim() == 1:  # biases 0, LayerNorm gains 1
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif init == "xavier" and name.startswith(("tok.", "pos.")):
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
            elif init == "xavier":
                bound = math.sqrt(6.0 / (p.shape[0] + p.shape[1]))
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)
            else:
                std = 0.02 / math.sqrt(2 * n_layers) if name.endswith(("proj.weight", "mlp.2.weight")) else 0.02
                p.copy_(torch.randn(p.shape, generator=g) * std)

    @property
    def math_attention(self) -> bool:
        return all(b.attn.math_attention for b in self.blocks)

    @math_attention.setter
    def math_attention(self, on: bool) -> None:
        """Use the math SDPA kernel, which supports double backward (sharpness monitor)."""
        for b in self.blocks:
            b.attn.math_attention = bool(on)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        if T > self.max_len:
            raise ValueError(f"sequence length {T} exceeds max_len {self.max_len}")
        x = self.tok(idx) + self.pos(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def build_transformer(cfg: Any, vocab_size: int, seq_len: int, seed: int) -> Transformer:
    """The model of `cfg.model` for a vocabulary and input length given by the data."""
    require(cfg.get("family", "transformer") == "transformer", "model", cfg.get("name"),
            "a transformer (sequence tasks need model=transformer)")
    max_len = cfg.get("max_len") or seq_len
    require(max_len >= seq_len, "model.max_len", max_len, f"null or at least the data's length {seq_len}")
    d_ff = cfg.get("d_ff")
    return Transformer(
        vocab_size, int(max_len), d_model=int(cfg.d_model), n_layers=int(cfg.n_layers),
        n_heads=int(cfg.n_heads), d_ff=int(d_ff) if d_ff else None,
        norm_position=str(cfg.norm_position), qk_layernorm=bool(cfg.qk_layernorm), seed=seed,
        init=str(cfg.get("init", "gpt2")),
    )
