/*
 * edgeoss.h - quantized dot-product kernels of edgeoss (public C interface).
 *
 * Plain C99; no threads are created anywhere in this library: the caller owns
 * threading (it calls the matmuls on tiles of rows from its own threads).
 *
 * Data layouts (all little-endian; a "block" is 32 consecutive values along the
 * input dimension K; nb = K / 32):
 *   mxfp4 weights  wq uint8 [nrows, nb, 16]: in block b, byte i holds element
 *                  32b+i in its low nibble and element 32b+i+16 in its high
 *                  nibble.  Code c: sign = bit 3, magnitude =
 *                  {0, .5, 1, 1.5, 2, 3, 4, 6}[c & 7].
 *                  we uint8 [nrows, nb]: e8m0 scale, factor 2**(e - 127).
 *   q8 weights     wq int8 [nrows, nb, 32], wd uint16 [nrows, nb] (fp16 bits);
 *                  value = wq * fp16(wd).
 *   q4 weights     wq uint8 [nrows, nb, 16] (nibbles arranged as mxfp4),
 *                  wd uint16 [nrows, nb] (fp16 bits); value = (nibble-8)*fp16(wd).
 *   bf16 weights   w uint16 [nrows, K]; value = float32 from bits << 16.
 *   q8 activations xq int8 [ntok, K] in [-127, 127], xd float32 [ntok, nb];
 *                  value = xq * xd (as written by eo_q8_quantize).
 * Weight rows are contiguous.  Outputs: out[t * out_stride + r] (float32) for
 * token t and row r; the matmuls overwrite (never accumulate into) out.
 *
 * The machine-specific code path ("level") is picked at run time; see
 * eo_cpu_best_level / eo_set_level.  All levels compute the same values up to
 * float32 rounding/accumulation order (eo_q8_quantize is bit-exact on every
 * level).
 *
 * Everything between EO_CDEF_BEGIN and EO_CDEF_END is also fed (comments
 * stripped) to cffi's cdef by edgeoss/kernels/_build.py: keep it plain C
 * declarations, without macros or preprocessor lines.
 */
#ifndef EDGEOSS_H
#define EDGEOSS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* EO_CDEF_BEGIN */

/* Version of this C interface; bumped when a declaration below changes. */
int eo_abi_version(void);

/* Best level this CPU (and OS) can run, among the levels compiled into this
 * build: 0 scalar, 1 avx2 (with fma and f16c), 2 avx512 (f, bw, vl; uses
 * vnni and vbmi when present), 3 neon (aarch64). */
int eo_cpu_best_level(void);

/* 1 if this CPU can run `level` and it was compiled into this build, else 0. */
int eo_level_supported(int level);

/* Switch every kernel to `level`.  Returns 0 on success, -1 (and changes
 * nothing) if this CPU cannot run it.  Not thread-safe: call it while no
 * kernel is running.  The level starts at eo_cpu_best_level(). */
int eo_set_level(int level);

/* As eo_set_level, but `disable` is a mask of optional extensions the level's
 * code must not use even if the CPU has them: 1 VNNI, 2 VBMI (both avx512
 * only; -1 = all).  0 is what eo_set_level does.  To test every code path
 * on one machine; eo_variant_name() tells what was picked. */
int eo_set_level_variant(int level, int disable);

/* Level in use now. */
int eo_get_level(void);

/* "scalar", "avx2", "avx512", "neon", or "unknown" for other numbers. */
const char *eo_level_name(int level);

/* Name of the code in use within the current level, for diagnostics:
 * "avx512-vnni-vbmi", "avx512-vnni", "avx512" (neither), else the level
 * name. */
const char *eo_variant_name(void);

/* Quantize n float32 values (n % 32 == 0) into q8 blocks:
 *   per block of 32: d = max|x| / 127 (float32); q = rint(x * (1.0f / d))
 *   rounding half to even, in float32, clamped to [-127, 127];
 *   xd[block] = d.  A block whose d is 0 gives q = 0.  A NaN product (0 * inf
 *   when d is so small that 1/d overflows) gives q = 0.  NaN inputs are
 *   undefined.  x [n] -> xq [n], xd [n / 32]. */
void eo_q8_quantize(const float *x, int64_t n, int8_t *xq, float *xd);

/* out[t*out_stride + r] = sum_k W[r, k] * X[t, k] for r < nrows, t < ntok, with
 * W mxfp4 (wq [nrows, nb, 16], we [nrows, nb]) and X q8 (xq [ntok, nb*32],
 * xd [ntok, nb]).  Per block: int32 sum of products, scaled in float32 by
 * xd * 2**(e - 127) (magnitudes doubled to integers, factor 2**(e - 128)). */
void eo_q8_mxfp4w_matmul(const uint8_t *wq, const uint8_t *we, int64_t nrows, int64_t nb,
                         const int8_t *xq, const float *xd, int64_t ntok,
                         float *out, int64_t out_stride);

/* As eo_q8_mxfp4w_matmul with q8 weights: wq int8 [nrows, nb, 32], wd fp16
 * bits [nrows, nb]. */
void eo_q8_q8w_matmul(const int8_t *wq, const uint16_t *wd, int64_t nrows, int64_t nb,
                      const int8_t *xq, const float *xd, int64_t ntok,
                      float *out, int64_t out_stride);

/* As eo_q8_mxfp4w_matmul with q4 weights: wq uint8 [nrows, nb, 16] (nibble
 * layout of mxfp4, value nibble - 8), wd fp16 bits [nrows, nb]. */
void eo_q8_q4w_matmul(const uint8_t *wq, const uint16_t *wd, int64_t nrows, int64_t nb,
                      const int8_t *xq, const float *xd, int64_t ntok,
                      float *out, int64_t out_stride);

/* float32 activations x [ntok, nb*32] times mxfp4 weights (dequantized
 * exactly to float32), float32 accumulation. */
void eo_f32_mxfp4w_matmul(const uint8_t *wq, const uint8_t *we, int64_t nrows, int64_t nb,
                          const float *x, int64_t ntok, float *out, int64_t out_stride);

/* float32 activations x [ntok, k] times bf16 weights w [nrows, k] (any k >= 0),
 * float32 accumulation (x is not rounded to bf16). */
void eo_f32_bf16w_matmul(const uint16_t *w, int64_t nrows, int64_t k,
                         const float *x, int64_t ntok, float *out, int64_t out_stride);

/* One block of nkeys keys of causal attention with a running ("online")
 * softmax, for `rows` query rows (rows % 8 == 0: pad with rows whose lo >= hi).
 *   qt [hd, rows]: the queries, transposed (row r's element i at qt[i*rows+r]),
 *                  already multiplied by the softmax scale;
 *   k, v:          key / value j (hd floats each) at k + j*kv_stride, v + ...;
 *   lo, hi [rows]: row r attends to the keys lo[r] <= j < hi[r] (clipped to
 *                  0..nkeys; empty: the row is left as it is);
 *   m, l [rows]:   running max and softmax denominator; start them at the
 *                  sink logit and 1 (or at -inf and 0 without a sink);
 *   acct [hd, rows]: running sum of exp(score - m) * v, transposed like qt;
 *   scores:        scratch of 8 * nkeys floats.
 * For each row: m' = max(m, scores), l = l*exp(m - m') + sum exp(s - m'),
 * acct = acct*exp(m - m') + sum exp(s - m') v, m = m'.  After the last block,
 * the attention output of row r is acct[., r] / l[r].  exp is float32-accurate
 * (~1e-6 relative) for arguments down to -87; below, it is <= 1.2e-38. */
void eo_f32_attention_block(const float *qt, int64_t rows, int64_t hd,
                            const float *k, const float *v, int64_t kv_stride, int64_t nkeys,
                            const int32_t *lo, const int32_t *hi, float *m, float *l,
                            float *acct, float *scores);

/* The KV cache's float16: n values converted between float32 and IEEE
 * binary16 bits (round to nearest, ties to even; subnormals kept; overflow to
 * infinity), and x rounded in place to the nearest float16 value, i.e. what
 * a store and a load give back. */
void eo_f32_to_f16(const float *src, uint16_t *dst, int64_t n);
void eo_f16_to_f32(const uint16_t *src, float *dst, int64_t n);
void eo_f16_round(float *x, int64_t n);

/* The KV cache's q8 rows: nrows rows of hd int8 values followed by hd/32
 * float32 block scales (hd + hd/8 bytes a row, hd a multiple of 32), widened
 * into dst [nrows, hd]: value * its block's scale, as float32. */
void eo_q8kv_to_f32(const int8_t *src, int64_t nrows, int64_t hd, float *dst);

/* EO_CDEF_END */

#ifdef __cplusplus
}
#endif

#endif /* EDGEOSS_H */
