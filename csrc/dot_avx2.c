/*
 * dot_avx2.c - level "avx2" (AVX2 + FMA + F16C).
 *
 * Same scheme as the AVX-512 kernels (see dot_avx512_impl.h), at half width:
 * groups of 2 blocks (one 128-bit lane per block), vpmaddubsw + vpmaddwd for
 * the u8 x s8 products, 8 blocks per shuffle-tree reduction.  q8 weights use
 * the sign trick (|w| x sign(x, w)) since w + 128 could saturate vpmaddubsw.
 */
#include "eo_internal.h"

#if EO_HAVE_X86_SIMD
#include <immintrin.h>

#define EO_T2 __attribute__((target("avx2,fma,f16c")))
#define EO_T2I EO_T2 __attribute__((always_inline)) static inline

#define EO256_TT 4 /* tokens per tile of the integer kernels */
#define EO256_FT 2 /* tokens per tile of the float32-activation kernels */

typedef struct {
    int8_t xs[EO_CHUNK_BLOCKS * 32];
    int32_t corr[EO_CHUNK_BLOCKS];
    float xd[EO_CHUNK_BLOCKS];
} eo256_prep;

/* ---- q8 quantization (bit-identical to eo_q8_quantize_block_scalar) ---- */

EO_T2I __m256i q8_quant8_avx2(__m256 v, __m256 id)
{
    const __m256 lim = _mm256_set1_ps(127.0f);
    v = _mm256_mul_ps(v, id);
    v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q)); /* NaN -> 0 */
    v = _mm256_min_ps(_mm256_max_ps(v, _mm256_sub_ps(_mm256_setzero_ps(), lim)), lim);
    return _mm256_cvtps_epi32(v); /* current rounding mode: RNE */
}

EO_T2 static void q8_quantize_avx2(const float *x, int64_t n, int8_t *xq, float *xd)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    int64_t b;
    for (b = 0; b < n / 32; b++) {
        const float *p = x + b * 32;
        __m256 a0 = _mm256_loadu_ps(p), a1 = _mm256_loadu_ps(p + 8);
        __m256 a2 = _mm256_loadu_ps(p + 16), a3 = _mm256_loadu_ps(p + 24);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(a0, absmask), _mm256_and_ps(a1, absmask)),
                                 _mm256_max_ps(_mm256_and_ps(a2, absmask), _mm256_and_ps(a3, absmask)));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        float amax, d;
        __m256 id;
        __m256i q0, q1, q2, q3, q;
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
        amax = _mm_cvtss_f32(h);
        d = amax / 127.0f;
        id = _mm256_set1_ps(d > 0.0f ? 1.0f / d : 0.0f);
        q0 = q8_quant8_avx2(a0, id);
        q1 = q8_quant8_avx2(a1, id);
        q2 = q8_quant8_avx2(a2, id);
        q3 = q8_quant8_avx2(a3, id);
        q = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
        q = _mm256_permutevar8x32_epi32(q, perm);
        _mm256_storeu_si256((__m256i *)(xq + b * 32), q);
        xd[b] = d;
    }
}

/* ---- q8 activations x integer weights ---- */

/* u0.s0 + u1.s1 per int32 lane, every u <= 24 (no int16 saturation) */
EO_T2I __m256i dp2_small_avx2(__m256i u0, __m256i s0, __m256i u1, __m256i s1)
{
    return _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(u0, s0), _mm256_maddubs_epi16(u1, s1)),
                             _mm256_set1_epi16(1));
}

/* r[m]: 4 int32 partial sums of block 2m+j in 128-bit lane j -> one total per
 * block, int32 lane 4j+m holding block 2m+j ("tree order"). */
EO_T2I __m256i tree4_avx2(__m256i r0, __m256i r1, __m256i r2, __m256i r3)
{
    __m256 a0 = _mm256_castsi256_ps(r0), a1 = _mm256_castsi256_ps(r1);
    __m256 a2 = _mm256_castsi256_ps(r2), a3 = _mm256_castsi256_ps(r3);
    __m256i s01 = _mm256_add_epi32(_mm256_castps_si256(_mm256_shuffle_ps(a0, a1, 0x88)),
                                   _mm256_castps_si256(_mm256_shuffle_ps(a0, a1, 0xDD)));
    __m256i s23 = _mm256_add_epi32(_mm256_castps_si256(_mm256_shuffle_ps(a2, a3, 0x88)),
                                   _mm256_castps_si256(_mm256_shuffle_ps(a2, a3, 0xDD)));
    __m256 b01 = _mm256_castsi256_ps(s01), b23 = _mm256_castsi256_ps(s23);
    return _mm256_add_epi32(_mm256_castps_si256(_mm256_shuffle_ps(b01, b23, 0x88)),
                            _mm256_castps_si256(_mm256_shuffle_ps(b01, b23, 0xDD)));
}

EO_T2I __m256 to_tree_avx2(__m256 v)
{
    return _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
}

/* Rearrange nc blocks of one token; c: correction multiplier (0: none). */
EO_T2I void prep_avx2(const int8_t *x, const float *dx, int64_t nc, int c, eo256_prep *p)
{
    const __m256i cv = _mm256_set1_epi8((char)(unsigned char)c);
    int64_t g, m, i;
    for (g = 0; g < nc; g += 8) {
        __m256i r[4];
        float dtmp[8];
        for (m = 0; m < 4; m++) {
            int64_t b = g + 2 * m, nblk = nc - b;
            __m256i x0 = _mm256_setzero_si256(), x1 = _mm256_setzero_si256(), xlo, xhi;
            if (nblk > 0)
                x0 = _mm256_loadu_si256((const __m256i *)(x + b * 32));
            if (nblk > 1)
                x1 = _mm256_loadu_si256((const __m256i *)(x + b * 32 + 32));
            xlo = _mm256_permute2x128_si256(x0, x1, 0x20);
            xhi = _mm256_permute2x128_si256(x0, x1, 0x31);
            _mm256_store_si256((__m256i *)(p->xs + b * 32), xlo);
            _mm256_store_si256((__m256i *)(p->xs + b * 32 + 32), xhi);
            r[m] = c ? dp2_small_avx2(cv, xlo, cv, xhi) : _mm256_setzero_si256();
        }
        _mm256_store_si256((__m256i *)(p->corr + g), tree4_avx2(r[0], r[1], r[2], r[3]));
        for (i = 0; i < 8; i++)
            dtmp[i] = g + i < nc ? dx[g + i] : 0.0f;
        _mm256_store_ps(p->xd + g, to_tree_avx2(_mm256_loadu_ps(dtmp)));
    }
}

/* kind: 0 mxfp4, 1 q8, 2 q4 (as in the AVX-512 version). */
EO_T2I void row_tile_avx2(int kind, int TT, const uint8_t *w, const void *s, int64_t nc,
                          const eo256_prep *P, float *out, int64_t out_stride, int accumulate)
{
    const __m256i m0f = _mm256_set1_epi8(0x0F);
    const __m256i lut = _mm256_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0,
                                         12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0);
    const __m256i one16 = _mm256_set1_epi16(1);
    const int64_t bpb = kind == 1 ? 32 : 16;
    __m256 facc[EO256_TT];
    int64_t g, m, i;
    int t;
    for (t = 0; t < TT; t++)
        facc[t] = _mm256_setzero_ps();
    for (g = 0; g < nc; g += 8) {
        __m256i r[EO256_TT][4];
        int64_t ng = nc - g;
        __m256 ws;
        if (kind == 0) {
            const uint8_t *e = (const uint8_t *)s + g;
            __m256i ev;
            if (ng >= 8) {
                ev = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)e));
            } else {
                uint8_t et[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                for (i = 0; i < ng; i++)
                    et[i] = e[i];
                ev = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)et));
            }
            /* 2^(e-128) = 0.5 * float(bits e << 23) for e >= 1; e = 0 separately */
            ws = _mm256_mul_ps(_mm256_castsi256_ps(_mm256_slli_epi32(ev, 23)), _mm256_set1_ps(0.5f));
            ws = _mm256_blendv_ps(ws, _mm256_castsi256_ps(_mm256_set1_epi32(0x00200000)),
                                  _mm256_castsi256_ps(_mm256_cmpeq_epi32(ev, _mm256_setzero_si256())));
        } else {
            const uint16_t *h = (const uint16_t *)s + g;
            if (ng >= 8) {
                ws = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
            } else {
                uint16_t ht[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                for (i = 0; i < ng; i++)
                    ht[i] = h[i];
                ws = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)ht));
            }
        }
        ws = to_tree_avx2(ws);
        for (m = 0; m < 4; m++) {
            int64_t b = g + 2 * m, nblk = nc - b;
            const uint8_t *wb = w + b * bpb;
            __m256i ulo, uhi, wlo = _mm256_setzero_si256(), whi = _mm256_setzero_si256();
            if (nblk <= 0) {
                for (t = 0; t < TT; t++)
                    r[t][m] = _mm256_setzero_si256();
                continue;
            }
#if EO_PF
            /* once per 64 B, decoding too: unlike the AVX-512 machine's (see avx512), a
             * Zen 2 core's own prefetchers leave one token's stream latency-bound (mxfp4,
             * one thread, out of cache: 8.2 -> 11.9 GB/s; q8: 9.0 -> 10.6) */
            if ((kind == 1 || (m & 1) == 0) && nblk > 1)
                EO_PREFETCH(wb + EO_PF);
#endif
            if (kind == 1) {
                __m256i w0 = _mm256_loadu_si256((const __m256i *)wb);
                __m256i w1 = nblk > 1 ? _mm256_loadu_si256((const __m256i *)(wb + 32)) : _mm256_setzero_si256();
                wlo = _mm256_permute2x128_si256(w0, w1, 0x20);
                whi = _mm256_permute2x128_si256(w0, w1, 0x31);
                ulo = _mm256_abs_epi8(wlo);
                uhi = _mm256_abs_epi8(whi);
            } else {
                __m256i wv = nblk > 1 ? _mm256_loadu_si256((const __m256i *)wb)
                                      : _mm256_inserti128_si256(_mm256_setzero_si256(),
                                                                _mm_loadu_si128((const __m128i *)wb), 0);
                __m256i lo = _mm256_and_si256(wv, m0f);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(wv, 4), m0f);
                if (kind == 0) {
                    ulo = _mm256_shuffle_epi8(lut, lo);
                    uhi = _mm256_shuffle_epi8(lut, hi);
                } else {
                    ulo = lo;
                    uhi = hi;
                }
            }
            for (t = 0; t < TT; t++) {
                __m256i xlo = _mm256_load_si256((const __m256i *)(P[t].xs + b * 32));
                __m256i xhi = _mm256_load_si256((const __m256i *)(P[t].xs + b * 32 + 32));
                if (kind == 1) {
                    __m256i plo = _mm256_madd_epi16(_mm256_maddubs_epi16(ulo, _mm256_sign_epi8(xlo, wlo)), one16);
                    __m256i phi = _mm256_madd_epi16(_mm256_maddubs_epi16(uhi, _mm256_sign_epi8(xhi, whi)), one16);
                    r[t][m] = _mm256_add_epi32(plo, phi);
                } else {
                    r[t][m] = dp2_small_avx2(ulo, xlo, uhi, xhi);
                }
            }
        }
        for (t = 0; t < TT; t++) {
            __m256i d = tree4_avx2(r[t][0], r[t][1], r[t][2], r[t][3]);
            if (kind != 1)
                d = _mm256_sub_epi32(d, _mm256_load_si256((const __m256i *)(P[t].corr + g)));
            facc[t] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(d), _mm256_load_ps(P[t].xd + g)),
                                      ws, facc[t]);
        }
    }
    for (t = 0; t < TT; t++) {
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(facc[t]), _mm256_extractf128_ps(facc[t], 1));
        float v;
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
        v = _mm_cvtss_f32(h);
        if (accumulate)
            out[t * out_stride] += v;
        else
            out[t * out_stride] = v;
    }
}

EO_T2I void int_matmul_avx2(int kind, const uint8_t *wq, const void *ws, int64_t nrows, int64_t nb,
                            const int8_t *xq, const float *xd, int64_t ntok, float *out,
                            int64_t out_stride)
{
    eo256_prep P[EO256_TT] __attribute__((aligned(32)));
    const int64_t bpb = kind == 1 ? 32 : 16;
    const int64_t sbytes = kind == 0 ? 1 : 2;
    const int c = kind == 0 ? 12 : kind == 2 ? 8 : 0;
    int64_t c0, t0, r;
    for (c0 = 0; c0 < nb; c0 += EO_CHUNK_BLOCKS) {
        int64_t nc = nb - c0 < EO_CHUNK_BLOCKS ? nb - c0 : EO_CHUNK_BLOCKS;
        for (t0 = 0; t0 < ntok; t0 += EO256_TT) {
            int tt = ntok - t0 < EO256_TT ? (int)(ntok - t0) : EO256_TT;
            int i;
            for (i = 0; i < tt; i++)
                prep_avx2(xq + (t0 + i) * nb * 32 + c0 * 32, xd + (t0 + i) * nb + c0, nc, c, &P[i]);
            for (r = 0; r < nrows; r++) {
                const uint8_t *w = wq + (r * nb + c0) * bpb;
                const void *s = (const uint8_t *)ws + (r * nb + c0) * sbytes;
                float *o = out + t0 * out_stride + r;
                if (tt == 4)
                    row_tile_avx2(kind, 4, w, s, nc, P, o, out_stride, c0 > 0);
                else if (tt == 3)
                    row_tile_avx2(kind, 3, w, s, nc, P, o, out_stride, c0 > 0);
                else if (tt == 2)
                    row_tile_avx2(kind, 2, w, s, nc, P, o, out_stride, c0 > 0);
                else
                    row_tile_avx2(kind, 1, w, s, nc, P, o, out_stride, c0 > 0);
            }
        }
    }
}

EO_T2 static void q8_mxfp4w_avx2(const uint8_t *wq, const uint8_t *we, int64_t nrows, int64_t nb,
                                 const int8_t *xq, const float *xd, int64_t ntok, float *out,
                                 int64_t out_stride)
{
    int_matmul_avx2(0, wq, we, nrows, nb, xq, xd, ntok, out, out_stride);
}

EO_T2 static void q8_q8w_avx2(const int8_t *wq, const uint16_t *wd, int64_t nrows, int64_t nb,
                              const int8_t *xq, const float *xd, int64_t ntok, float *out,
                              int64_t out_stride)
{
    int_matmul_avx2(1, (const uint8_t *)wq, wd, nrows, nb, xq, xd, ntok, out, out_stride);
}

EO_T2 static void q8_q4w_avx2(const uint8_t *wq, const uint16_t *wd, int64_t nrows, int64_t nb,
                              const int8_t *xq, const float *xd, int64_t ntok, float *out,
                              int64_t out_stride)
{
    int_matmul_avx2(2, wq, wd, nrows, nb, xq, xd, ntok, out, out_stride);
}

/* ---- float32 activations x mxfp4 weights ---- */

EO_T2I float hsum_avx2(__m256 v)
{
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    return _mm_cvtss_f32(h);
}

EO_T2I void f32_mxfp4w_row_avx2(int TT, const uint8_t *wr, const uint8_t *er, int64_t nb,
                                const float *x, int64_t xstride, float *out, int64_t out_stride)
{
    const __m128i lut = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
    const __m128i m0f = _mm_set1_epi8(0x0F);
    __m256 acc[EO256_FT][4];
    int64_t b;
    int t, j;
    for (t = 0; t < TT; t++)
        for (j = 0; j < 4; j++)
            acc[t][j] = _mm256_setzero_ps();
    for (b = 0; b < nb; b++) {
        __m128i c = _mm_loadu_si128((const __m128i *)(wr + b * 16));
        __m128i vlo = _mm_shuffle_epi8(lut, _mm_and_si128(c, m0f));
        __m128i vhi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(c, 4), m0f));
        __m256 s = _mm256_set1_ps(eo_e8m0_half(er[b]));
        __m256 w[4];
        w[0] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(vlo)), s);
        w[1] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(vlo, 8))), s);
        w[2] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(vhi)), s);
        w[3] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(vhi, 8))), s);
        for (t = 0; t < TT; t++) {
            const float *xb = x + t * xstride + b * 32;
            for (j = 0; j < 4; j++)
                acc[t][j] = _mm256_fmadd_ps(w[j], _mm256_loadu_ps(xb + 8 * j), acc[t][j]);
        }
    }
    for (t = 0; t < TT; t++)
        out[t * out_stride] = hsum_avx2(_mm256_add_ps(_mm256_add_ps(acc[t][0], acc[t][1]),
                                                      _mm256_add_ps(acc[t][2], acc[t][3])));
}

EO_T2 static void f32_mxfp4w_avx2(const uint8_t *wq, const uint8_t *we, int64_t nrows, int64_t nb,
                                  const float *x, int64_t ntok, float *out, int64_t out_stride)
{
    int64_t t0, r;
    for (t0 = 0; t0 < ntok; t0 += EO256_FT) {
        int64_t tt = ntok - t0 < EO256_FT ? ntok - t0 : EO256_FT;
        const float *xt = x + t0 * nb * 32;
        for (r = 0; r < nrows; r++) {
            float *o = out + t0 * out_stride + r;
            if (tt == 2)
                f32_mxfp4w_row_avx2(2, wq + r * nb * 16, we + r * nb, nb, xt, nb * 32, o, out_stride);
            else
                f32_mxfp4w_row_avx2(1, wq + r * nb * 16, we + r * nb, nb, xt, nb * 32, o, out_stride);
        }
    }
}

/* ---- float32 activations x bf16 weights ---- */

EO_T2I __m256 bf16x8_avx2(const uint16_t *p)
{
    return _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

/* RT rows (1 or 2) x TT tokens (1 or 2), 2 accumulators each */
EO_T2I void f32_bf16w_tile_avx2(int RT, int TT, const uint16_t *w, int64_t k, const float *x,
                                float *out, int64_t out_stride)
{
    __m256 acc[2][EO256_FT][2];
    int64_t i;
    int t, j, u;
    for (j = 0; j < RT; j++)
        for (t = 0; t < TT; t++)
            acc[j][t][0] = acc[j][t][1] = _mm256_setzero_ps();
    for (i = 0; i + 16 <= k; i += 16) {
        for (u = 0; u < 2; u++) {
            __m256 wv[2];
            for (j = 0; j < RT; j++) {
#if EO_PF
                if (u == 0)
                    EO_PREFETCH(w + j * k + i + EO_PF / 2);
#endif
                wv[j] = bf16x8_avx2(w + j * k + i + 8 * u);
            }
            for (t = 0; t < TT; t++) {
                __m256 xv = _mm256_loadu_ps(x + t * k + i + 8 * u);
                for (j = 0; j < RT; j++)
                    acc[j][t][u] = _mm256_fmadd_ps(wv[j], xv, acc[j][t][u]);
            }
        }
    }
    for (j = 0; j < RT; j++) {
        for (t = 0; t < TT; t++) {
            float v = hsum_avx2(_mm256_add_ps(acc[j][t][0], acc[j][t][1]));
            int64_t q;
            for (q = i; q < k; q++)
                v += eo_bf16_to_f32(w[j * k + q]) * x[t * k + q];
            out[t * out_stride + j] = v;
        }
    }
}

EO_T2 static void f32_bf16w_avx2(const uint16_t *w, int64_t nrows, int64_t k, const float *x,
                                 int64_t ntok, float *out, int64_t out_stride)
{
    /* row pairs only with several tokens: see f32_bf16w_avx512 */
    const int64_t step = ntok > 2 ? 2 : 1;
    int64_t t0, r;
    for (t0 = 0; t0 < ntok; t0 += EO256_FT) {
        int64_t tt = ntok - t0 < EO256_FT ? ntok - t0 : EO256_FT;
        const float *xt = x + t0 * k;
        for (r = 0; r < nrows; r += step) {
            float *o = out + t0 * out_stride + r;
            int rt = step == 2 && r + 2 <= nrows ? 2 : 1;
            if (rt == 2 && tt == 2)
                f32_bf16w_tile_avx2(2, 2, w + r * k, k, xt, o, out_stride);
            else if (rt == 2)
                f32_bf16w_tile_avx2(2, 1, w + r * k, k, xt, o, out_stride);
            else if (tt == 2)
                f32_bf16w_tile_avx2(1, 2, w + r * k, k, xt, o, out_stride);
            else
                f32_bf16w_tile_avx2(1, 1, w + r * k, k, xt, o, out_stride);
        }
    }
}

int eo_kernels_avx2(eo_kernels *k)
{
    k->variant = "avx2";
    k->q8_quantize = q8_quantize_avx2;
    k->q8_mxfp4w = q8_mxfp4w_avx2;
    k->q8_q8w = q8_q8w_avx2;
    k->q8_q4w = q8_q4w_avx2;
    k->f32_mxfp4w = f32_mxfp4w_avx2;
    k->f32_bf16w = f32_bf16w_avx2;
    k->f32_attention = eo_attention_block_avx2;
    k->f32_to_f16 = eo_f32_to_f16_f16c;
    k->f16_to_f32 = eo_f16_to_f32_f16c;
    k->f16_round = eo_f16_round_f16c;
    return 1;
}

#endif /* EO_HAVE_X86_SIMD */
