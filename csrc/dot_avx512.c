/*
 * dot_avx512.c - level "avx512" (AVX-512 F/BW/VL; variants using VNNI, and
 * VNNI + VBMI, when present).
 *
 * Compiled for any x86 target with GCC/clang: functions carry target
 * attributes, and are only called after run-time CPU detection (simd.c).
 */
#include "eo_internal.h"

#if EO_HAVE_X86_SIMD
#include <immintrin.h>

#define EO_VNNI 1
#define EO_VBMI 1
#include "dot_avx512_impl.h"
#undef EO_VBMI
#define EO_VBMI 0
#include "dot_avx512_impl.h"
#undef EO_VNNI
#define EO_VNNI 0
#include "dot_avx512_impl.h"
#undef EO_VNNI
#undef EO_VBMI

#define EO_T5 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")))
#define EO_T5I EO_T5 __attribute__((always_inline)) static inline

/* ---- q8 quantization (bit-identical to eo_q8_quantize_block_scalar) ---- */

EO_T5I __m128i q8_quant16_avx512(__m512 v, __m512 id)
{
    const __m512 lim = _mm512_set1_ps(127.0f);
    v = _mm512_mul_ps(v, id);
    v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v); /* NaN -> 0 */
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_sub_ps(_mm512_setzero_ps(), lim)), lim);
    return _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)); /* current rounding mode: RNE */
}

EO_T5 static void q8_quantize_avx512(const float *x, int64_t n, int8_t *xq, float *xd)
{
    int64_t b;
    for (b = 0; b < n / 32; b++) {
        __m512 a0 = _mm512_loadu_ps(x + b * 32);
        __m512 a1 = _mm512_loadu_ps(x + b * 32 + 16);
        __m512 m = _mm512_max_ps(_mm512_abs_ps(a0), _mm512_abs_ps(a1));
        float amax = _mm512_reduce_max_ps(m);
        float d = amax / 127.0f;
        __m512 id = _mm512_set1_ps(d > 0.0f ? 1.0f / d : 0.0f);
        _mm_storeu_si128((__m128i *)(xq + b * 32), q8_quant16_avx512(a0, id));
        _mm_storeu_si128((__m128i *)(xq + b * 32 + 16), q8_quant16_avx512(a1, id));
        xd[b] = d;
    }
}

/* ---- float32 activations x mxfp4 weights ---- */

#define EO512_FTT 4

EO_T5I void f32_mxfp4w_row_avx512(int TT, const uint8_t *wr, const uint8_t *er, int64_t nb,
                                  const float *x, int64_t xstride, float *out, int64_t out_stride)
{
    const __m512 lut = _mm512_setr_ps(0.f, 1.f, 2.f, 3.f, 4.f, 6.f, 8.f, 12.f,
                                      -0.f, -1.f, -2.f, -3.f, -4.f, -6.f, -8.f, -12.f);
    const __m512i m0f = _mm512_set1_epi32(0x0F);
    __m512 a0[EO512_FTT], a1[EO512_FTT];
    int64_t b;
    int t;
    for (t = 0; t < TT; t++) {
        a0[t] = _mm512_setzero_ps();
        a1[t] = _mm512_setzero_ps();
    }
    for (b = 0; b < nb; b++) {
        __m512i c;
        __m512 ls, w0, w1;
#if EO_PF
        EO_PREFETCH(wr + b * 16 + EO_PF);
#endif
        /* codes as int32 lanes -> vpermps from the doubled-value table times
         * 2^(e-128): exact float32 weights */
        c = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(wr + b * 16)));
        ls = _mm512_mul_ps(lut, _mm512_set1_ps(eo_e8m0_half(er[b])));
        w0 = _mm512_permutexvar_ps(_mm512_and_si512(c, m0f), ls);
        w1 = _mm512_permutexvar_ps(_mm512_srli_epi32(c, 4), ls);
        for (t = 0; t < TT; t++) {
            const float *xb = x + t * xstride + b * 32;
            a0[t] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xb), a0[t]);
            a1[t] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xb + 16), a1[t]);
        }
    }
    for (t = 0; t < TT; t++)
        out[t * out_stride] = _mm512_reduce_add_ps(_mm512_add_ps(a0[t], a1[t]));
}

EO_T5 static void f32_mxfp4w_avx512(const uint8_t *wq, const uint8_t *we, int64_t nrows, int64_t nb,
                                    const float *x, int64_t ntok, float *out, int64_t out_stride)
{
    int64_t t0, r;
    for (t0 = 0; t0 < ntok; t0 += EO512_FTT) {
        int64_t tt = ntok - t0 < EO512_FTT ? ntok - t0 : EO512_FTT;
        const float *xt = x + t0 * nb * 32;
        for (r = 0; r < nrows; r++) {
            const uint8_t *wr = wq + r * nb * 16, *er = we + r * nb;
            float *o = out + t0 * out_stride + r;
            switch (tt) {
            case 4:
                f32_mxfp4w_row_avx512(4, wr, er, nb, xt, nb * 32, o, out_stride);
                break;
            case 3:
                f32_mxfp4w_row_avx512(3, wr, er, nb, xt, nb * 32, o, out_stride);
                break;
            case 2:
                f32_mxfp4w_row_avx512(2, wr, er, nb, xt, nb * 32, o, out_stride);
                break;
            default:
                f32_mxfp4w_row_avx512(1, wr, er, nb, xt, nb * 32, o, out_stride);
                break;
            }
        }
    }
}

/* ---- float32 activations x bf16 weights ----
 * AVX512-BF16 (vdpbf16ps) is deliberately not used: it would round the
 * float32 activations to bf16.  Widening the weights (<< 16) is exact and
 * the kernel is bound by memory bandwidth anyway. */

EO_T5I __m512 bf16x16_avx512(const uint16_t *p, __mmask16 m, int full)
{
    __m256i h = full ? _mm256_loadu_si256((const __m256i *)p) : _mm256_maskz_loadu_epi16(m, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* RT rows (1 or 2) x TT tokens (1..4) */
EO_T5I void f32_bf16w_tile_avx512(int RT, int TT, const uint16_t *w, int64_t k, const float *x,
                                  float *out, int64_t out_stride)
{
    __m512 acc[2][EO512_FTT];
    int64_t i;
    int t, j;
    for (j = 0; j < RT; j++)
        for (t = 0; t < TT; t++)
            acc[j][t] = _mm512_setzero_ps();
    for (i = 0; i + 16 <= k; i += 16) {
        __m512 wv[2];
        for (j = 0; j < RT; j++) {
#if EO_PF
            EO_PREFETCH(w + j * k + i + EO_PF / 2);
#endif
            wv[j] = bf16x16_avx512(w + j * k + i, 0, 1);
        }
        for (t = 0; t < TT; t++) {
            __m512 xv = _mm512_loadu_ps(x + t * k + i);
            for (j = 0; j < RT; j++)
                acc[j][t] = _mm512_fmadd_ps(wv[j], xv, acc[j][t]);
        }
    }
    if (i < k) {
        __mmask16 m = (__mmask16)((1u << (k - i)) - 1);
        __m512 wv[2];
        for (j = 0; j < RT; j++)
            wv[j] = bf16x16_avx512(w + j * k + i, m, 0);
        for (t = 0; t < TT; t++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, x + t * k + i);
            for (j = 0; j < RT; j++)
                acc[j][t] = _mm512_fmadd_ps(wv[j], xv, acc[j][t]);
        }
    }
    for (j = 0; j < RT; j++)
        for (t = 0; t < TT; t++)
            out[t * out_stride + j] = _mm512_reduce_add_ps(acc[j][t]);
}

EO_T5 static void f32_bf16w_avx512(const uint16_t *w, int64_t nrows, int64_t k, const float *x,
                                   int64_t ntok, float *out, int64_t out_stride)
{
    /* Pairs of rows share the activation loads, but two weight streams at
     * once measured slower from DRAM than one: pairs only when there are
     * enough tokens for compute to matter. */
    const int64_t rt = ntok > 2 ? 2 : 1;
    int64_t t0, r;
    for (t0 = 0; t0 < ntok; t0 += EO512_FTT) {
        int64_t tt = ntok - t0 < EO512_FTT ? ntok - t0 : EO512_FTT;
        const float *xt = x + t0 * k;
        for (r = 0; r < nrows; r += rt) {
            const uint16_t *wr = w + r * k;
            float *o = out + t0 * out_stride + r;
            if (rt == 2 && r + 2 <= nrows) {
                switch (tt) {
                case 4:
                    f32_bf16w_tile_avx512(2, 4, wr, k, xt, o, out_stride);
                    break;
                case 3:
                    f32_bf16w_tile_avx512(2, 3, wr, k, xt, o, out_stride);
                    break;
                case 2:
                    f32_bf16w_tile_avx512(2, 2, wr, k, xt, o, out_stride);
                    break;
                default:
                    f32_bf16w_tile_avx512(2, 1, wr, k, xt, o, out_stride);
                    break;
                }
            } else {
                switch (tt) {
                case 4:
                    f32_bf16w_tile_avx512(1, 4, wr, k, xt, o, out_stride);
                    break;
                case 3:
                    f32_bf16w_tile_avx512(1, 3, wr, k, xt, o, out_stride);
                    break;
                case 2:
                    f32_bf16w_tile_avx512(1, 2, wr, k, xt, o, out_stride);
                    break;
                default:
                    f32_bf16w_tile_avx512(1, 1, wr, k, xt, o, out_stride);
                    break;
                }
            }
        }
    }
}

int eo_kernels_avx512(eo_kernels *k, int vnni, int vbmi)
{
    k->q8_quantize = q8_quantize_avx512;
    k->f32_mxfp4w = f32_mxfp4w_avx512;
    k->f32_bf16w = f32_bf16w_avx512;
    k->f32_attention = eo_attention_block_avx512;
    k->f32_to_f16 = eo_f32_to_f16_f16c;
    k->f16_to_f32 = eo_f16_to_f32_f16c;
    k->f16_round = eo_f16_round_f16c;
    if (vnni && vbmi) {
        k->variant = "avx512-vnni-vbmi";
        k->q8_mxfp4w = q8_mxfp4w_avx512_vbmi;
        k->q8_q8w = q8_q8w_avx512_vbmi;
        k->q8_q4w = q8_q4w_avx512_vbmi;
    } else if (vnni) {
        k->variant = "avx512-vnni";
        k->q8_mxfp4w = q8_mxfp4w_avx512_vnni;
        k->q8_q8w = q8_q8w_avx512_vnni;
        k->q8_q4w = q8_q4w_avx512_vnni;
    } else {
        k->variant = "avx512";
        k->q8_mxfp4w = q8_mxfp4w_avx512_novnni;
        k->q8_q8w = q8_q8w_avx512_novnni;
        k->q8_q4w = q8_q4w_avx512_novnni;
    }
    return 1;
}

#endif /* EO_HAVE_X86_SIMD */
