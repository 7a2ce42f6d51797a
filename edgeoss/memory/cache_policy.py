"""Which experts stay in a layer's cache slots: the eviction policies, shared by the engine's
expert cache and the simulator that replays routing traces (so their hit counts agree).

A layer's cache state is four arrays (see `new_state`): slot_of[e] (expert e's slot or -1),
owner[s] (slot s's expert or -1), last[e] (time of e's last use), crf[e] (its decayed use
count, kept for every expert, cached or not). Time is a step counter:
one step is one token decoded, or one prompt chunk.

Policies:
- LRU: evict the slot whose expert was used longest ago.
- LFRU (least frequently/recently used, "LRFU" in the literature): every use adds 1 to the
  expert's count, and counts halve every `halflife` steps; evict the smallest count. A long
  half-life is LFU, a short one is LRU; gpt-oss's routing has both hot experts and runs of
  reuse, which the middle catches (see `edgeoss plan --simulate`).
- Belady's optimum (evict the expert used farthest in the future) needs the future, so it
  exists only in the simulator, as the bound to measure the others against; so does LFRU told
  the next few steps (`foresight_layer`, whose unlimited window is Belady), which measures how
  much foresight the gap between them would take.
"""

from __future__ import annotations

import numpy as np
from numba import njit

POLICY_LRU, POLICY_LFRU = 0, 1
POLICIES = {"lru": POLICY_LRU, "lfru": POLICY_LFRU}
DEFAULT_POLICY = "lfru"
DEFAULT_HALFLIFE = 16.0  # steps; best of 2..256 on the gpt-oss-20b routing trace (docs/MEMORY.md)


def new_state(num_experts: int, slots: int) -> tuple:
    """(slot_of, owner, last, crf) of an empty cache."""
    return (np.full(num_experts, -1, np.int64), np.full(slots, -1, np.int64),
            np.full(num_experts, -1e30, np.float64), np.zeros(num_experts, np.float64))


@njit(cache=True, nogil=True)
def _score(policy, e, now, last, crf, decay):
    if policy == POLICY_LRU:
        return last[e]
    return crf[e] * decay ** (now - last[e])


@njit(cache=True, nogil=True)
def touch(experts, counts, n, now, last, crf, decay):
    """Record that experts[:n] were used counts[:n] times at step `now`."""
    for i in range(n):
        e = experts[i]
        crf[e] = crf[e] * decay ** (now - last[e]) + counts[i]
        last[e] = now


@njit(cache=True, nogil=True)
def place(missing, n, pinned, slot_of, owner, last, crf, now, policy, decay, placed):
    """Give slots to as many of missing[:n] as can have one, evicting by the policy; slots whose
    expert is pinned[e] (needed now, not yet computed) are never taken. placed[i] = the slot of
    missing[i], or -1 where none was free (the caller retries once pinned experts are done).
    Returns how many got a slot."""
    S = owner.shape[0]
    got = 0
    for i in range(n):
        best, best_score = -1, 0.0
        for s in range(S):
            o = owner[s]
            if o < 0:
                best = s
                break
            if pinned[o]:
                continue
            sc = _score(policy, o, now, last, crf, decay)
            if best < 0 or sc < best_score:
                best, best_score = s, sc
        placed[i] = best
        if best < 0:
            continue
        if owner[best] >= 0:
            slot_of[owner[best]] = -1
        owner[best] = missing[i]
        slot_of[missing[i]] = best
        pinned[missing[i]] = True
        got += 1
    return got


def decay_of(halflife: float) -> float:
    return 0.5 ** (1.0 / halflife) if halflife > 0 else 0.0


# -- simulation over a routing trace -----------------------------------------------------------

@njit(cache=True)
def simulate_layer(experts, num_experts, slots, policy, decay):
    """Replay one layer's expert choices experts [steps, k] through a cache of `slots` slots
    (one step per token); returns the number of hits (requests are steps * k)."""
    T, k = experts.shape
    slot_of = np.full(num_experts, -1, np.int64)
    owner = np.full(slots, -1, np.int64)
    last = np.full(num_experts, -1e30, np.float64)
    crf = np.zeros(num_experts, np.float64)
    pinned = np.zeros(num_experts, np.bool_)
    missing = np.empty(k, np.int64)
    placed = np.empty(k, np.int64)
    ones = np.ones(k, np.float64)
    hits = 0
    for t in range(T):
        nm = 0
        for j in range(k):
            e = experts[t, j]
            pinned[e] = True
            if slot_of[e] >= 0:
                hits += 1
            else:
                missing[nm] = e
                nm += 1
        place(missing, nm, pinned, slot_of, owner, last, crf, float(t), policy, decay, placed)
        touch(experts[t], ones, k, float(t), last, crf, decay)
        for j in range(k):
            pinned[experts[t, j]] = False
    return hits


@njit(cache=True)
def next_use_steps(experts, num_experts):
    """[T, k]: the step after t where experts[t, j] is used again (T + 1 for never)."""
    T, k = experts.shape
    nxt = np.full(num_experts, T + 1, np.int64)
    next_use = np.empty((T, k), np.int64)
    for t in range(T - 1, -1, -1):
        for j in range(k):
            next_use[t, j] = nxt[experts[t, j]]
        for j in range(k):
            nxt[experts[t, j]] = t
    return next_use


@njit(cache=True)
def foresight_layer(experts, num_experts, slots, decay, look):
    """Hits on one layer's choices experts [steps, k] of LFRU *told* the next `look` steps (an
    oracle, simulator only): on a miss with no free slot it evicts, among the cached experts this
    step does not need, the one with the lowest LFRU score that is not used within the window,
    and if every one is, the one used farthest ahead. look = 0 is LFRU; look >= steps is
    Belady's optimum (evict the expert used farthest in the future)."""
    T, k = experts.shape
    next_use = next_use_steps(experts, num_experts)
    when = np.full(num_experts, T + 1, np.int64)  # next use of each expert after its last one
    cached = np.zeros(num_experts, np.bool_)
    need = np.zeros(num_experts, np.bool_)
    last = np.full(num_experts, -1e30)
    crf = np.zeros(num_experts)
    ones = np.ones(k)
    n_cached = 0
    hits = 0
    for t in range(T):
        for j in range(k):
            need[experts[t, j]] = True
        for j in range(k):
            e = experts[t, j]
            if cached[e]:
                hits += 1
                continue
            if n_cached == slots:
                victim, v_soon, v_key = -1, True, 0.0
                for c in range(num_experts):
                    if not cached[c] or need[c]:
                        continue
                    soon = when[c] - t <= look
                    # outside the window: lowest LFRU score; inside: farthest next use
                    key = -float(when[c]) if soon else _score(POLICY_LFRU, c, float(t), last, crf, decay)
                    if victim < 0 or (v_soon and not soon) or (soon == v_soon and key < v_key):
                        victim, v_soon, v_key = c, soon, key
                cached[victim] = False
                n_cached -= 1
            cached[e] = True
            n_cached += 1
        touch(experts[t], ones, k, float(t), last, crf, decay)
        for j in range(k):
            when[experts[t, j]] = next_use[t, j]
            need[experts[t, j]] = False
    return hits


def simulate(sequences, slots: int, policy: str, halflife: float = DEFAULT_HALFLIFE,
             num_experts: int | None = None) -> float:
    """Hit rate of `policy` ("lru", "lfru" or "belady") with `slots` slots per layer over
    routing sequences (each uint8 [tokens, layers, k]), replayed one after another through
    caches that persist between them, as a server's do."""
    seqs = [np.asarray(s) for s in sequences]
    allsteps = np.concatenate(seqs).astype(np.int64)  # [steps, layers, k]
    E = int(num_experts or allsteps.max() + 1)
    k = allsteps.shape[2]
    if slots < k:
        raise ValueError(f"a cache needs at least {k} slots per layer (one token's experts); got {slots}")
    hits = 0
    for layer in range(allsteps.shape[1]):
        ex = np.ascontiguousarray(allsteps[:, layer, :])
        if policy == "belady":
            hits += foresight_layer(ex, E, slots, 0.0, ex.shape[0])
        else:
            hits += simulate_layer(ex, E, slots, POLICIES[policy], decay_of(halflife))
    return hits / allsteps.size


SIM_SLOTS = (8, 12, 16, 24)


def simulate_trace(path, slots=SIM_SLOTS, extra: int | None = None) -> dict:
    """{slots: {policy: hit rate}} for LRU, LFRU and Belady's optimum over a routing trace."""
    from .routing_trace import load_trace
    seqs = [e for e, _ in load_trace(path)]
    k = seqs[0].shape[2]
    wanted = sorted({s for s in slots if s >= k} | ({extra} if extra and extra >= k else set()))
    return {s: {p: simulate(seqs, s, p) for p in ("lru", "lfru", "belady")} for s in wanted}
