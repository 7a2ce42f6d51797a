"""Fitting a model into a memory budget: the plan, the engine's work buffers, the expert cache
that streams experts from disk, its eviction policies, and the routing traces they are tested on.
Imports format and kernels; never engine, chat, server or cli."""
