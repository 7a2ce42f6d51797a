"""The gpt-oss forward pass: one flat schedule of kernel calls per layer.

Weights stay in their quantized form inside the memory-mapped weights.bin; nothing large is
ever dequantized. Every gpt-oss quirk (sinks, sliding windows, YaRN, top-4 softmax routing,
clamped SwiGLU with +1 on the linear half) is a kernel in kernels/loops.py, called from here.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from ..format import model_dir as fmt
from ..config import GptOssConfig, yarn_inv_freq
from ..format.fileio import PositionalReader
from ..kernels import loops
from ..memory.workspace import (DEFAULT_KV, LONG_PREFILL, PREFILL_CHUNK, Buffers, kv_dtype, long_prefill_arrays,
                                work_arrays)
from .sequence import Sequence, Usage
from .warmup import current_loops


# placeholders for the arrays a matrix of the other kind has (see loops.matmul)
_NO_BLOCKS, _NO_BITS = np.zeros((0, 1, 32), np.int8), np.zeros((0, 1), np.uint16)
_NO_XQ, _NO_XD = np.zeros((0, 32), np.int8), np.zeros((0, 1), np.float32)


@dataclass
class Matrix:
    """A [rows, cols] weight matrix as stored: q8 / q4 blocks or bf16 bits."""

    kind: str
    arrays: dict

    def __post_init__(self):
        # (kind, blocks, fp16 scale bits, bf16 bits): how loops.matmul takes it
        if self.kind == "bf16":
            self.parts = (loops.KIND_BF16, _NO_BLOCKS, _NO_BITS, self.arrays["data"])
        else:
            kind = loops.KIND_Q8 if self.kind == "q8" else loops.KIND_Q4
            self.parts = (kind, self.arrays["qs"], self.arrays["scales"].view(np.uint16), _NO_BITS)

    @property
    def rows(self) -> int:
        return next(iter(self.arrays.values())).shape[0]

    def apply(self, x: np.ndarray, out: np.ndarray, xq: np.ndarray | None = None,
              xd: np.ndarray | None = None, L=loops) -> np.ndarray:
        """out float32 [T, rows] = x float32 [T, cols] @ W^T. Quantized kinds quantize x into
        the work buffers xq int8 [T, cols] and xd float32 [T, cols / 32]. L: the loops module."""
        L.matmul(*self.parts, x, _NO_XQ if xq is None else xq, _NO_XD if xd is None else xd, out)
        return out


class FileRows:
    """Rows of a stored matrix read from the file on demand (positional reads into reused buffers), not
    mapped: the embedding is 0.6 GB of which a prompt touches a few rows, and rows read this way
    live in the page cache, never in the process's resident memory."""

    def __init__(self, files: fmt.ModelFiles, name: str):
        t = files.tensors[name]
        self.kind, self.shape = t["type"], t["shape"]
        self.parts = {k: (p["offset"], p["nbytes"] // self.shape[0], fmt.DTYPES[p["dtype"]], p["shape"][1:])
                      for k, p in t["parts"].items()}
        self.reader = PositionalReader(files.weights_path)

    def rows_f32(self, ids: np.ndarray, out: np.ndarray, buf: "Buffers", L=loops) -> np.ndarray:
        """Dequantized rows `ids` into out float32 [len(ids), cols] (L: the loops module)."""
        n = ids.shape[0]
        got = {}
        for part, (off, row_bytes, dtype, shape) in self.parts.items():
            a = got[part] = buf.get("rows_" + part, (n,) + tuple(shape), dtype)
            raw = a.reshape(n, -1).view(np.uint8)
            for i in range(n):
                self.reader.read_into(memoryview(raw[i]), off + int(ids[i]) * row_bytes)
        seq = buf.get("rows_ids", (n,), np.int64)
        seq[:] = np.arange(n)
        if self.kind == "bf16":
            L.bf16_rows(got["data"], seq, out.view(np.uint32))
        else:
            kind = loops.KIND_Q8 if self.kind == "q8" else loops.KIND_Q4
            L.dequant_rows(kind, got["qs"], got["scales"].view(np.uint16), loops.FP16_TO_F32, seq, out)
        return out


@dataclass
class Layer:
    attn_norm: np.ndarray     # [H]
    qkv: Matrix               # [q_dim + 2 kv_dim, H]
    qkv_bias: np.ndarray      # [q_dim + 2 kv_dim]
    o: Matrix                 # [H, q_dim]
    o_bias: np.ndarray        # [H]
    sinks: np.ndarray         # [heads]
    mlp_norm: np.ndarray      # [H]
    router: Matrix            # [E, H], always bf16 (format.py writes it so)
    router_bias: np.ndarray   # [E]
    experts: np.ndarray | None  # uint8 [E, stride]: expert e's bytes are row e (None: streamed)
    expert_offsets: np.ndarray  # int64 [6]: parts inside an expert (see loops.EXP_*)
    sliding: bool

    def __post_init__(self):
        # the weights loops.attention_block takes, in its order
        self.attention_weights = (self.attn_norm, *self.qkv.parts, self.qkv_bias, *self.o.parts, self.o_bias,
                                  self.sinks)


def default_threads() -> int:
    """Physical cores: the dot products saturate a core's SIMD units, hyperthreads add nothing."""
    try:
        import psutil
        n = psutil.cpu_count(logical=False)
    except Exception:  # pragma: no cover
        n = None
    return max(1, n or os.cpu_count() or 1)


class Model:
    """A loaded gpt-oss model: `logits(ids)` and `generate(ids, ...)`."""

    def __init__(self, files: fmt.ModelFiles, context: int = 4096, threads: int | None = None,
                 memory: int | str | None = None, kv_cache: str = DEFAULT_KV, sequences: int = 1,
                 cache_ram: int | str | None = None, prefix_cache: bool | None = None,
                 long_prefill: bool | None = None):
        import numba

        from ..memory import planner

        self.files = files
        self.config: GptOssConfig = files.config
        self.preset = files.preset
        self.threads = min(threads or default_threads(), numba.config.NUMBA_NUM_THREADS)
        numba.set_num_threads(self.threads)
        cfg = self.config
        context = min(context, cfg.max_position_embeddings)
        # decide what stays in memory before anything is mapped: refuses below the floor
        kv_dtype(kv_cache)  # an unknown type is refused before anything loads
        self.kv_cache = kv_cache
        self.plan = planner.make_plan(files, memory, context=context, kv=kv_cache, sequences=sequences,
                                      cache_ram=cache_ram,
                                      prefix_cache=(sequences > 1 or cache_ram is not None) if prefix_cache is None
                                      else prefix_cache, long_prefill=long_prefill)
        self.plan.require_fits()
        self.expert_cache = None
        if self.plan.streaming:
            from ..memory.expert_cache import ExpertCache
            self.expert_cache = ExpertCache(files, self.plan.slots_per_layer)
        self.embed = FileRows(files, "embed")
        self.lm_head = Matrix(*files.matrix("lm_head"))
        self.norm = files.vector("norm")
        self.layers = []
        for i in range(cfg.num_hidden_layers):
            n = fmt.layer_tensor_names(i)
            offs = files.expert_part_offsets(n["experts"])
            self.layers.append(Layer(
                attn_norm=files.vector(n["attn_norm"]), qkv=Matrix(*files.matrix(n["qkv"])),
                qkv_bias=files.vector(n["qkv_bias"]), o=Matrix(*files.matrix(n["o"])),
                o_bias=files.vector(n["o_bias"]), sinks=files.vector(n["sinks"]),
                mlp_norm=files.vector(n["mlp_norm"]), router=Matrix(*files.matrix(n["router"])),
                router_bias=files.vector(n["router_bias"]),
                experts=None if self.expert_cache else files.experts(n["experts"]),
                expert_offsets=np.array([offs[k] for k in ("gate_up_blocks", "gate_up_scales", "gate_up_bias",
                                                          "down_blocks", "down_scales", "down_bias")], np.int64),
                sliding=cfg.is_sliding(i)))
        # the bf16 preset is the accuracy reference: keep expert activations in float32 there
        self.expert_acts_q8 = self.preset != "bf16"
        self.all_experts = np.arange(cfg.num_local_experts, dtype=np.int64)
        inv_freq, self.rope_scale = yarn_inv_freq(cfg)
        self.inv_freq = np.array(inv_freq, np.float64)
        self._cos = self._sin = np.zeros((0, cfg.head_dim // 2), np.float32)
        # a streaming plan has no room for the cache to grow past the context it was planned for
        self._kv_limit = context if self.plan.streaming else None
        self.context = context
        self.sequence = self.new_sequence()  # the one logits/forward/generate use unless given another
        self.lock = threading.RLock()  # one forward pass at a time: they share the work buffers
        self._buf = Buffers()
        self._scratch_tokens = 0
        self._tokenizer = None
        self.last_routing = np.zeros((0, cfg.num_hidden_layers, cfg.num_experts_per_tok), np.int64)

    # -- the forward pass -------------------------------------------------------------------
    def _rope_tables(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self._cos.shape[0] < n:
            n = max(n, 2 * self._cos.shape[0], 256)
            ang = np.arange(n, dtype=np.float64)[:, None] * self.inv_freq[None, :]
            self._cos = (np.cos(ang) * self.rope_scale).astype(np.float32)
            self._sin = (np.sin(ang) * self.rope_scale).astype(np.float32)
        return self._cos, self._sin

    def _scratch(self, T: int) -> tuple[tuple, tuple]:
        """Work buffers of attention and the experts for chunks of up to T tokens."""
        if T > self._scratch_tokens:
            cfg = self.config
            self._att_scratch = loops.attention_scratch(T, cfg.num_attention_heads, cfg.num_key_value_heads,
                                                        cfg.head_dim)
            self._moe_scratch = loops.moe_scratch(T, cfg.hidden_size, cfg.intermediate_size,
                                                  cfg.num_local_experts, cfg.num_experts_per_tok)
            self._scratch_tokens = T
        return self._att_scratch, self._moe_scratch

    def new_sequence(self) -> Sequence:
        """A new, empty sequence (a conversation's KV cache) on this model."""
        return Sequence(self.config, self.context, limit=self._kv_limit, kv=self.kv_cache)

    @property
    def cache(self):
        """The default sequence's KV cache."""
        return self.sequence.cache

    def _token_ids(self, tokens) -> np.ndarray:
        ids = np.asarray(list(tokens), dtype=np.int64)
        if ids.size == 0:
            raise ValueError("no tokens to run")
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:
            raise ValueError(f"token ids must be in [0, {self.config.vocab_size}); got {ids.min()}..{ids.max()}")
        return ids

    def forward(self, tokens: Iterable[int], all_logits: bool = False, sequence: Sequence | None = None) -> np.ndarray:
        """Run `tokens` after what the sequence (default: the model's own) holds; returns float32
        logits for every new token [T, V] if all_logits, else for the last one [V]. Long inputs
        run in chunks of PREFILL_CHUNK tokens (bounded work memory, same results), or, when the
        plan streams experts with long_prefill, in blocks of LONG_PREFILL layer by layer
        (_forward_long; the same results too)."""
        cfg = self.config
        seq = sequence or self.sequence
        ids = self._token_ids(tokens)
        with self.lock:
            seq.cache.reserve(seq.length + ids.size)
            routing = self._buf.get("routing", (ids.size, cfg.num_hidden_layers, cfg.num_experts_per_tok), np.int64)
            parts = []
            # streaming experts, a long prompt runs in blocks layer by layer (_forward_long)
            step = LONG_PREFILL if self.plan.long_prefill and not all_logits else PREFILL_CHUNK
            for c0 in range(0, ids.size, step):
                chunk = ids[c0:c0 + step]
                last = c0 + chunk.size == ids.size
                if chunk.size > PREFILL_CHUNK:
                    logits = self._forward_long(chunk, routing[c0:c0 + chunk.size], last, seq)
                    continue
                logits = self._forward_chunk(chunk, routing[c0:c0 + chunk.size],
                                             "all" if all_logits else "last" if last else "none",
                                             [(seq, 0, chunk.size)])
                if all_logits:
                    parts.append(logits)
            self.last_routing = routing  # [T, layers, k]: the experts each new token used
            return np.concatenate(parts) if all_logits else logits[0].copy()

    def forward_batch(self, entries: list[tuple[Sequence, Iterable[int]]]) -> np.ndarray:
        """Run several sequences' new tokens in one pass (continuous batching): each weight row
        is read once for all of them and the experts are grouped across them, while attention
        runs per sequence over its own cache. entries: (sequence, its next tokens), a sequence
        at most once, PREFILL_CHUNK tokens in all at most. Returns each entry's logits after its
        last token, float32 [len(entries), V] (a new array)."""
        cfg = self.config
        runs = [(seq, self._token_ids(toks)) for seq, toks in entries]
        if len({id(seq) for seq, _ in runs}) != len(runs):
            raise ValueError("a sequence can appear only once in a batch")
        total = sum(ids.size for _, ids in runs)
        if total > PREFILL_CHUNK:
            raise ValueError(f"a batch runs at most {PREFILL_CHUNK} tokens; got {total}")
        spans, a = [], 0
        for seq, ids in runs:
            spans.append((seq, a, a + ids.size))
            a += ids.size
        with self.lock:
            for seq, ids in runs:
                seq.cache.reserve(seq.length + ids.size)
            routing = self._buf.get("routing", (total, cfg.num_hidden_layers, cfg.num_experts_per_tok), np.int64)
            logits = self._forward_chunk(np.concatenate([ids for _, ids in runs]), routing, "last", spans)
            self.last_routing = routing
            return logits.copy()

    def _forward_chunk(self, ids: np.ndarray, routing: np.ndarray, logits: str, spans: list) -> np.ndarray | None:
        """One chunk through every layer: tokens ids[a:b] of each span (sequence, a, b) run after
        what that sequence holds. logits: "all" (a new [T, V] array; one span only), "last" (each
        span's last token: a [spans, V] view of a reused buffer, valid until the next call) or
        "none"."""
        cfg = self.config
        T = ids.size
        pos0s = [seq.length for seq, _, _ in spans]
        cos, sin = self._rope_tables(max(p + b - a for p, (_, a, b) in zip(pos0s, spans)))
        H = cfg.hidden_size
        scale = np.float32(1.0 / np.sqrt(cfg.head_dim))
        eps = cfg.rms_norm_eps
        B = self._buf
        att_scratch, moe_scratch = self._scratch(T)
        L = current_loops()  # compiled, or NumPy while a first run compiles them

        w = work_arrays(cfg, T, B)
        x, h, hq, hd_, qkv, q, kk, v, attn, aq, ad, o, router_logits, idx, wts = w.values()
        attn_work = (x, h, hq, hd_, qkv, q, kk, v, attn, aq, ad, o)
        self.embed.rows_f32(ids, x, B, L)   # x: the residual stream; h: the normed input of a block
        forced = self._forced_rows(spans)  # (experts, weights, which tokens) or None
        use_router = forced is None or not forced[2].all()
        for li, layer in enumerate(self.layers):
            if len(spans) == 1:  # one compiled call for the whole block
                lc = spans[0][0].cache.layers[li]
                L.attention_block(*attn_work, *layer.attention_weights, eps, cos, sin, pos0s[0], lc.k, lc.v,
                                      lc.ring, lc.window, scale, *att_scratch)
            else:  # the same steps, attention per sequence
                L.f32_rmsnorm(x, layer.attn_norm, eps, h)
                L.matmul(*layer.qkv.parts, h, hq, hd_, qkv)
                for (seq, a, b), pos0 in zip(spans, pos0s):
                    lc = seq.cache.layers[li]
                    L.qkv_split_rope(qkv[a:b], layer.qkv_bias, cos, sin, pos0, q[a:b], kk[a:b], v[a:b])
                    L.kv_round_like_cache(kk[a:b], v[a:b], lc.k)
                    L.attention_sinks(q[a:b], kk[a:b], v[a:b], lc.k, lc.v, pos0, lc.ring, lc.window,
                                          layer.sinks, scale, attn[a:b], *att_scratch)
                    L.kv_store(kk[a:b], v[a:b], lc.k, lc.v, pos0, lc.ring)
                L.matmul(*layer.o.parts, attn.reshape((T, attn.shape[1] * attn.shape[2])), aq, ad, o)
                L.add_bias_residual(o, layer.o_bias, x)
            # mixture-of-experts block
            L.mlp_norm_route(x, layer.mlp_norm, eps, h, layer.router.arrays["data"], layer.router_bias,
                                 router_logits, use_router, idx, wts)
            if forced is not None:
                rows = forced[2]
                idx[rows], wts[rows] = forced[0][:, li], forced[1][:, li]
            routing[:, li] = idx
            if self.expert_cache is None:
                L.moe(h, idx, wts, layer.experts, self.all_experts, layer.expert_offsets, H,
                          cfg.intermediate_size, self.expert_acts_q8, cfg.swiglu_limit, cfg.swiglu_alpha, x,
                          *moe_scratch)
            else:
                self.expert_cache.run_layer(li, h, idx, wts, self.expert_acts_q8, cfg.swiglu_limit,
                                            cfg.swiglu_alpha, x, moe_scratch)
        for seq, a, b in spans:
            seq.cache.tokens.extend(ids[a:b].tolist())
        if logits == "none":
            return None
        if logits == "all":
            n, last = T, x
        else:  # each span's last token
            n = len(spans)
            last = x[T - 1:] if n == 1 else np.take(x, [b - 1 for _, _, b in spans], axis=0, out=B.get("last", (n, H)))
        return self._head(last, L, new_array=logits == "all")

    def _head(self, rows: np.ndarray, L, new_array: bool = False) -> np.ndarray:
        """Logits [n, V] of the residual rows [n, H]: final norm, then lm_head; in a reused buffer
        (valid until the next call) unless new_array."""
        cfg, B = self.config, self._buf
        n, H = rows.shape
        normed = B.get("normed", (n, H))
        L.f32_rmsnorm(rows, self.norm, cfg.rms_norm_eps, normed)
        out = np.empty((n, cfg.vocab_size), np.float32) if new_array else B.get("logits", (n, cfg.vocab_size))
        return self.lm_head.apply(normed, out, B.get("nq", (n, H), np.int8), B.get("nd", (n, H // 32)), L)

    def _forward_long(self, ids: np.ndarray, routing: np.ndarray, want_logits: bool, seq: Sequence):
        """A block of up to LONG_PREFILL prompt tokens when the experts stream, layer by layer:
        each layer's attention runs chunk after chunk (the KV cache fills in order, as in
        _forward_chunk), then its MoE block for the whole block at once, so each of the layer's
        experts is read from disk once a block, not once a chunk (a 2,048-token block of the
        120b would otherwise read its ~100 uncached experts a layer four times). The same
        results as chunk after chunk. Returns the logits after the last token if want_logits."""
        cfg = self.config
        S, eps = ids.size, cfg.rms_norm_eps
        B = self._buf
        pos0 = seq.length
        cos, sin = self._rope_tables(pos0 + S)
        scale = np.float32(1.0 / np.sqrt(cfg.head_dim))
        att_scratch, moe_scratch = self._scratch(PREFILL_CHUNK)
        L = current_loops()
        big = long_prefill_arrays(cfg, B)
        x, h, idx, wts = big["lx"][:S], big["lh"][:S], big["lidx"][:S], big["lwts"][:S]
        self.embed.rows_f32(ids, x, B, L)
        forced = self._forced_rows([(seq, 0, S)])
        use_router = forced is None
        for li, layer in enumerate(self.layers):
            lc = seq.cache.layers[li]
            for c0 in range(0, S, PREFILL_CHUNK):
                c1 = min(S, c0 + PREFILL_CHUNK)
                w = work_arrays(cfg, c1 - c0, B)
                L.attention_block(x[c0:c1], *list(w.values())[1:12], *layer.attention_weights, eps, cos, sin,
                                  pos0 + c0, lc.k, lc.v, lc.ring, lc.window, scale, *att_scratch)
                L.mlp_norm_route(x[c0:c1], layer.mlp_norm, eps, h[c0:c1], layer.router.arrays["data"],
                                 layer.router_bias, w["router"], use_router, idx[c0:c1], wts[c0:c1])
            if forced is not None:
                idx[:], wts[:] = forced[0][:, li], forced[1][:, li]
            routing[:, li] = idx
            self.expert_cache.run_layer_pairs(li, h, idx, wts, self.expert_acts_q8, cfg.swiglu_limit,
                                              cfg.swiglu_alpha, x, moe_scratch, big)
        seq.cache.tokens.extend(ids.tolist())
        return self._head(x[S - 1:], L) if want_logits else None

    def step(self, token: int, sequence: Sequence | None = None) -> np.ndarray:
        """Decode one token after what the sequence holds: its logits [V], a view of a buffer
        that the next call overwrites (copy it to keep it). Allocates no array data."""
        if not 0 <= token < self.config.vocab_size:
            raise ValueError(f"token id must be in [0, {self.config.vocab_size}); got {token}")
        seq = sequence or self.sequence
        with self.lock:
            seq.cache.reserve(seq.length + 1)
            ids = self._buf.get("step_id", (1,), np.int64)
            ids[0] = token
            self.last_routing = self._buf.get("step_routing", (1,) + self.last_routing.shape[1:], np.int64)
            return self._forward_chunk(ids, self.last_routing, "last", [(seq, 0, 1)])[0]

    def force_routing(self, experts: np.ndarray | None, weights: np.ndarray | None = None,
                      sequence: Sequence | None = None) -> None:
        """Replay a routing trace instead of the router on a sequence (default: the model's own):
        its token i run from now on uses experts[i % n] (int [n, layers, k]) with weights[i % n]
        (default: equal), while the experts are still really read and computed. None restores
        the router."""
        seq = sequence or self.sequence
        if experts is None:
            seq.forced = None
            return
        cfg = self.config
        experts = np.asarray(experts).astype(np.int64)
        want = (cfg.num_hidden_layers, cfg.num_experts_per_tok)
        if experts.ndim != 3 or experts.shape[1:] != want:
            raise ValueError(f"a routing trace for this model is [tokens, {want[0]}, {want[1]}]; got {experts.shape}")
        if experts.min() < 0 or experts.max() >= cfg.num_local_experts:
            raise ValueError(f"routing trace names experts outside [0, {cfg.num_local_experts})")
        if weights is None:
            weights = np.full(experts.shape, 1.0 / experts.shape[2], np.float32)
        seq.forced = [experts, np.asarray(weights, np.float32), 0]

    def _forced_rows(self, spans):
        """The replayed routing of a chunk's forced tokens: experts and weights [n, layers, k]
        and which of the chunk's tokens they belong to (bool [T]); None when none is forced."""
        if all(seq.forced is None for seq, _, _ in spans):
            return None
        which = np.zeros(spans[-1][2], np.bool_)
        ex, wt = [], []
        for seq, a, b in spans:
            if seq.forced is not None:
                e, w, c = seq.forced
                rows = (c + np.arange(b - a)) % e.shape[0]
                seq.forced[2] = int(rows[-1] + 1)
                ex.append(e[rows])
                wt.append(w[rows])
                which[a:b] = True
        return np.concatenate(ex), np.concatenate(wt), which

    # -- public API ---------------------------------------------------------------------------
    def reset(self) -> None:
        self.sequence.reset()

    def logits(self, ids: Iterable[int]) -> np.ndarray:
        """float32 [len(ids), vocab]: the logits after each token, for a fresh context."""
        self.reset()
        return self.forward(ids, all_logits=True)

    def prefill(self, ids: list[int], sequence: Sequence | None = None) -> tuple[np.ndarray, int]:
        """Bring the sequence to hold exactly `ids`, running only what it does not share with
        them already (Sequence.rewind), and checkpoint its sliding layers there: the logits
        after `ids` [V] and how many of them were kept rather than run."""
        seq = sequence or self.sequence
        with self.lock:
            kept = seq.rewind(ids)
            logits = self.forward(ids[kept:], sequence=seq)
            seq.checkpoint()
        return logits, kept

    def generate(self, ids: Iterable[int], max_tokens: int = 256, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, seed: int | None = None,
                 stop: Iterable[int] | None = None, sequence: Sequence | None = None) -> Iterator[int]:
        """Yield up to max_tokens sampled token ids after the prompt `ids`, on `sequence`
        (default: the model's own), which keeps what it shares with the prompt; its `usage`
        counts the prompt, the tokens kept and those generated.

        temperature 0 is greedy; top_k 0 and top_p 1 disable those filters. Generation ends
        after yielding a token in `stop` (default: the model's end-of-sequence tokens)."""
        ids = [int(t) for t in ids]
        if not ids:
            raise ValueError("generate needs at least one prompt token")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if temperature < 0 or top_k < 0:
            raise ValueError(f"temperature and top_k must be >= 0, got {temperature} and {top_k}")
        stop_ids = set(self.config.eos_token_ids if stop is None else (int(s) for s in stop))
        rng = np.random.default_rng(seed)
        seq = sequence or self.sequence
        logits, kept = self.prefill(ids, seq)
        seq.usage = usage = Usage(prompt_tokens=len(ids), cached_tokens=kept)
        for i in range(max_tokens):
            tok = int(current_loops().sample_token(logits, float(temperature), int(top_k), float(top_p), rng.random()))
            usage.completion_tokens += 1
            yield tok
            if tok in stop_ids or i == max_tokens - 1 or seq.length >= self.config.max_position_embeddings:
                return
            logits = self.step(tok, seq)

    # -- tokenizer ------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        """The harmony encoding from the vocabulary bundled with the model (None without one)."""
        if self._tokenizer is None and self.files.vocab_path is not None:
            from ..format.vocab import load_encoding
            self._tokenizer = load_encoding(self.files.vocab_path.parent)
        return self._tokenizer


def load(path: str | os.PathLike, context: int = 4096, threads: int | None = None,
         memory: int | str | None = None, kv_cache: str = DEFAULT_KV, sequences: int = 1,
         cache_ram: int | str | None = None, prefix_cache: bool | None = None,
         long_prefill: bool | None = None) -> Model:
    """Open a converted model directory (see `edgeoss convert`) within a memory budget: bytes or
    a size such as "8G" for the whole process (default: what this machine can spare). Experts
    that do not fit stream from disk; below the smallest budget that can run the model, this
    raises planner.MemoryBudgetError saying what that budget is. kv_cache: "f16" (default) or
    "f32", how the KV cache stores keys and values. sequences: how many will run at once (the
    plan makes room for each one's KV cache, and for a prefix cache of `cache_ram` bytes, or of what
    the budget spares when prefix_cache is True; a server always has one). long_prefill: whether
    streamed experts run a long prompt in blocks layer by layer (see planner.make_plan)."""
    return Model(fmt.ModelFiles(path), context=context, threads=threads, memory=memory, kv_cache=kv_cache,
                 sequences=sequences, cache_ram=cache_ram, prefix_cache=prefix_cache, long_prefill=long_prefill)
