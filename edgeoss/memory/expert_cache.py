"""Experts streamed from disk through a fixed pool of cache slots (the memory planner's
streaming mode).

The pool is allocated once: `slots` experts per layer, each slot one expert's aligned byte
range, so a miss is one contiguous read straight into its slot (docs/FORMAT.md lays every
expert out for this). Reads bypass the page cache where the platform allows (O_DIRECT; see
fileio), so it does not keep a second copy of what the pool already holds. They run on I/O
threads (positional reads release the GIL) in 2 MiB pieces, several in flight, while the
layer's cached experts are computed: a layer's misses are requested the moment its router has
run.
"""

from __future__ import annotations

import mmap
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import cache_policy as cp
from ..format import model_dir as fmt
from ..format.fileio import PositionalReader, advise_huge_pages
from ..kernels import loops

READ_PIECE = 2 << 20   # bytes per read request: several per expert keep the disk's queue full
IO_THREADS = 8


class ExpertCache:
    """Every layer's experts behind `slots` cache slots per layer.

    `run_layer` is the MoE block of one layer: it looks the layer's experts up, starts reading
    the missing ones into slots freed by the eviction policy, computes the cached ones meanwhile,
    then the rest as they arrive. Counters: hits, misses (one per expert per call: a decoded
    token, a prompt chunk, or a batch of a long prompt's pairs), bytes_read, io_busy_s (seconds with reads in flight: from a
    layer's first read requested to its last one landed) and io_wait_s (seconds the forward
    pass stood waiting for reads)."""

    def __init__(self, files: fmt.ModelFiles, slots: int, policy: str = cp.DEFAULT_POLICY,
                 halflife: float = cp.DEFAULT_HALFLIFE, io_threads: int = IO_THREADS):
        cfg = files.config
        self.config = cfg
        names = [fmt.layer_tensor_names(i)["experts"] for i in range(cfg.num_hidden_layers)]
        t = files.tensors[names[0]]
        self.num_experts, self.stride = t["count"], t["stride"]
        if not cfg.num_experts_per_tok <= slots <= self.num_experts:
            raise ValueError(f"expert cache slots per layer must be in [{cfg.num_experts_per_tok}, "
                             f"{self.num_experts}]; got {slots}")
        self.slots = slots
        self.offsets = [files.tensors[n]["offset"] for n in names]
        parts = files.expert_part_offsets(names[0])
        self.part_offsets = np.array([parts[k] for k in ("gate_up_blocks", "gate_up_scales", "gate_up_bias",
                                                         "down_blocks", "down_scales", "down_bias")], np.int64)
        self.policy_name, self.policy = policy, cp.POLICIES[policy]
        self.decay = cp.decay_of(halflife)
        L = cfg.num_hidden_layers
        # anonymous mapping: page-aligned (O_DIRECT needs it), zero pages until first read
        self._mem = mmap.mmap(-1, L * slots * self.stride)
        advise_huge_pages(self._mem)
        self.pool = np.frombuffer(self._mem, np.uint8).reshape(L, slots, self.stride)
        self.states = [cp.new_state(self.num_experts, slots) for _ in range(L)]
        self.clock = np.zeros(L, np.int64)
        self._pinned = np.zeros(self.num_experts, np.bool_)
        self._placed = np.empty(self.num_experts, np.int64)
        self.reader = PositionalReader(files.weights_path, uncached=True)
        self.io_mode = self.reader.mode
        self._io = ThreadPoolExecutor(io_threads, thread_name_prefix="edgeoss-io")
        self.reset_counters()

    def reset_counters(self) -> None:
        self.hits = self.misses = self.bytes_read = 0
        self.io_busy_s = self.io_wait_s = 0.0

    def close(self) -> None:
        """Stop the I/O threads and close the file (also done when the cache is collected)."""
        io = getattr(self, "_io", None)
        if io is not None:
            io.shutdown(wait=True)
        reader = getattr(self, "reader", None)
        if reader is not None:
            reader.close()

    __del__ = close

    # -- reads ------------------------------------------------------------------------------
    def _read_piece(self, view: memoryview, offset: int) -> float:
        self.reader.read_into(view, offset)
        return time.perf_counter()  # when it landed (the forward pass may look later)

    def _start_read(self, layer: int, expert: int, slot: int) -> list:
        view = memoryview(self._mem)[(layer * self.slots + slot) * self.stride:][:self.stride]
        src = self.offsets[layer] + expert * self.stride
        self.bytes_read += self.stride
        return [self._io.submit(self._read_piece, view[o:o + READ_PIECE], src + o)
                for o in range(0, self.stride, READ_PIECE)]

    # -- one layer's MoE block ------------------------------------------------------------------
    def run_layer_pairs(self, li: int, h, idx, wts, use_q8: bool, limit, alpha, out, scratch, pairs) -> None:
        """out += the MoE block of layer li for more tokens than `scratch` holds (a long prompt):
        their (token, expert) pairs run in batches that fill the scratch, sorted by expert, the
        cached ones first, so each expert is read at most once for all of them, not once per
        chunk of the prompt. pairs: workspace.long_prefill_arrays' "pair_*" and "ly", "lrows"
        buffers. Results are the same as run_layer's, bit for bit: each pair's expert output is
        kept, then every token sums its experts' in its own order (loops.moe_combine)."""
        T, k = idx.shape
        rows = scratch[0].shape[0]
        slot_of = self.states[li][0]
        flat = idx.reshape(-1)
        order = np.argsort((slot_of[flat] < 0) * self.num_experts + flat, kind="stable")
        hb, yb, ib, wb, hq, hd, y_all, rows_of = (pairs[n] for n in ("pair_h", "pair_y", "pair_idx", "pair_w",
                                                                     "pair_hq", "pair_hd", "ly", "lrows"))
        big = scratch[:-2] + (hq, hd)  # a batch is up to `rows` one-expert pseudo-tokens
        wb[:] = 1.0
        for b0 in range(0, T * k, rows):
            sel = order[b0:b0 + rows]
            n = sel.size
            np.take(h, sel // k, axis=0, out=hb[:n], mode="clip")  # clip: no hidden copy of out (ids are valid)
            ib[:n, 0] = flat[sel]
            yb[:n] = 0.0
            self.run_layer(li, hb[:n], ib[:n], wb[:n], use_q8, limit, alpha, yb[:n], big)  # yb = 0 + 1 * y
            y_all[sel] = yb[:n]
        loops.moe_combine(y_all[:T * k], rows_of[:T * k], idx, wts, out)

    def run_layer(self, li: int, h, idx, wts, use_q8: bool, limit, alpha, out, scratch) -> None:
        """out += the MoE block of layer li for tokens h [T, H] routed to idx/wts [T, k]."""
        slot_of, owner, last, crf = self.states[li]
        E = self.num_experts
        counts = np.bincount(idx.ravel(), minlength=E)
        needed = np.flatnonzero(counts)
        cached = slot_of[needed] >= 0
        hits, missing = needed[cached], needed[~cached]
        self.hits += hits.size
        self.misses += missing.size
        order = np.concatenate([hits, missing, np.flatnonzero(counts == 0)])
        now = float(self.clock[li])
        self.clock[li] += 1
        pinned = self._pinned
        pinned[needed] = True
        (xe, xq, xd, gu, act, aq, ad, y, row_of, expert_of, start, gexp, nxt, bits, hq, hd) = scratch
        cfg = self.config
        H, I = cfg.hidden_size, cfg.intermediate_size
        blob = self.pool[li]
        ngroups = loops.moe_route(h, idx, order, use_q8, xe, xq, xd, row_of, expert_of, start, gexp, nxt, hq, hd)
        done, ready, next_miss = 0, hits.size, 0   # groups [0, ready) are in their slots
        inflight: list = []
        first_read = last_landed = 0.0
        try:
            while done < ngroups:
                if next_miss < missing.size:  # give free slots to the next misses, start reading
                    got = cp.place(missing[next_miss:], missing.size - next_miss, pinned, slot_of, owner, last,
                                   crf, now, self.policy, self.decay, self._placed)
                    if got and not first_read:
                        first_read = time.perf_counter()
                    for i in range(got):
                        e = int(missing[next_miss + i])
                        inflight.append((e, self._start_read(li, e, int(self._placed[i]))))
                    next_miss += got
                if done < ready:  # compute what is in its slots while the reads run
                    loops.moe_experts(done, ready, blob, slot_of, self.part_offsets, H, I, use_q8, limit, alpha,
                                      xe, xq, xd, gu, act, aq, ad, y, expert_of, start, gexp, bits)
                    pinned[gexp[done:ready]] = False
                    done = ready
                else:  # the oldest read: compute its expert as soon as it lands, while the rest load
                    t0 = time.perf_counter()
                    for f in inflight[0][1]:
                        last_landed = max(last_landed, f.result())
                    self.io_wait_s += time.perf_counter() - t0
                    landed = 1  # and those after it already in, computed together
                    while landed < len(inflight) and all(f.done() for f in inflight[landed][1]):
                        for f in inflight[landed][1]:
                            last_landed = max(last_landed, f.result())
                        landed += 1
                    ready += landed
                    del inflight[:landed]
        except BaseException:
            # a failed or interrupted read leaves its slot's bytes unknown: wait for the reads in
            # flight, then forget every missing expert given a slot but not yet seen loaded
            for _, futures in inflight:
                for f in futures:
                    f.cancel()
                for f in futures:
                    try:
                        f.result()
                    except BaseException:
                        pass
            for e in missing[ready - hits.size:]:
                s = slot_of[e]
                if s >= 0:
                    owner[s] = -1
                    slot_of[e] = -1
            pinned[:] = False
            raise
        if first_read:  # a layer's reads all land before the next layer's start: busy spans add up
            self.io_busy_s += last_landed - first_read
        cp.touch(needed, counts[needed].astype(np.float64), needed.size, now, last, crf, self.decay)
        loops.moe_combine(y, row_of, idx, wts, out)
