"""Key/value caches: a growing buffer for full-attention layers, a ring for sliding ones."""

from __future__ import annotations

import numpy as np

from ..config import GptOssConfig
from ..memory.workspace import DEFAULT_KV, SLIDING_ROLLBACK, kv_dtype, kv_row_width


class LayerCache:
    """k, v: [kv_heads, capacity, row], float32 or float16 bits (uint16) with row = head_dim,
    or q8 rows (int8, see memory.workspace.KV_DTYPES): each head's positions contiguous, so
    attention streams them in order. A sliding layer's ring holds the last window +
    SLIDING_ROLLBACK positions (position p lives at p % capacity; attention reads only the
    window); a full layer's buffer holds every position and grows by doubling up to the
    context limit."""

    def __init__(self, cfg: GptOssConfig, sliding: bool, capacity: int, kv: str = DEFAULT_KV):
        self.ring = sliding
        self.window = cfg.sliding_window if sliding else 0
        cap = cfg.sliding_window + SLIDING_ROLLBACK if sliding else capacity
        self.k = np.zeros((cfg.num_key_value_heads, cap, kv_row_width(kv, cfg.head_dim)), kv_dtype(kv))
        self.v = np.zeros(self.k.shape, self.k.dtype)  # not zeros_like: that writes every page now

    def reserve(self, n_positions: int) -> None:
        if self.ring or n_positions <= self.k.shape[1]:
            return
        cap = max(n_positions, 2 * self.k.shape[1])
        for name in ("k", "v"):
            old = getattr(self, name)
            new = np.zeros((old.shape[0], cap, old.shape[2]), old.dtype)
            new[:, :old.shape[1]] = old
            setattr(self, name, new)

    def ring_slots(self, end: int) -> np.ndarray:
        """Where the ring keeps the window of positions before `end`."""
        return np.arange(max(0, end - self.window), end) % self.k.shape[1]

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


class KVCache:
    """All layers' caches plus the tokens they hold (for reusing a shared prompt prefix)."""

    def __init__(self, cfg: GptOssConfig, capacity: int, limit: int | None = None, kv: str = DEFAULT_KV):
        self.cfg = cfg
        self.kv = kv
        self.max_positions = cfg.max_position_embeddings
        self.limit = limit  # positions a memory plan made room for (None: grow up to the model's limit)
        self.layers = [LayerCache(cfg, cfg.is_sliding(i), capacity, kv) for i in range(cfg.num_hidden_layers)]
        self.tokens: list[int] = []

    @property
    def capacity(self) -> int:
        """Positions the full-attention layers hold without growing."""
        full = [layer.k.shape[1] for layer in self.layers if not layer.ring]
        return min(full) if full else self.max_positions

    @property
    def length(self) -> int:
        return len(self.tokens)

    def reset(self) -> None:
        self.tokens = []

    def reserve(self, n_positions: int) -> None:
        if n_positions > self.max_positions:
            raise ValueError(f"context of {n_positions} tokens exceeds the model's limit of {self.max_positions}")
        if self.limit is not None and n_positions > self.limit:
            raise ValueError(f"context of {n_positions} tokens exceeds the {self.limit} the memory plan made room "
                             "for: load the model with a larger --context (and, if needed, --memory)")
        for layer in self.layers:
            layer.reserve(n_positions)

    @property
    def nbytes(self) -> int:
        return sum(layer.nbytes for layer in self.layers)
