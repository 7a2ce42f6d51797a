"""Compute kernels of edgeoss. Imports nothing else of edgeoss (only its own C extension).

dot: the quantized dot products (C with SIMD via cffi, or the Numba fallback);
loops: the Numba loops around them.  Import the submodules directly; this
package imports nothing by itself (importing dot registers the kernel symbols
with Numba and may compile the fallback).
"""
