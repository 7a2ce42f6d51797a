/*
 * kv16.c - the KV cache's float16 conversions at every level: keys and values
 * are kept as IEEE binary16 (half the bytes of float32, the attention's reads
 * at long context) and widened to float32 a block at a time for the kernel.
 * Rounding is to nearest, ties to even, at every level (F16C and NEON convert
 * so; the scalar level does it in integers), so every level stores the same
 * bits. Also the q8 KV cache's rows (int8 blocks and float32 scales), widened
 * a block at a time the same way.
 */
#include "eo_internal.h"

/* float32 -> binary16 bits: round to nearest even, subnormals kept, overflow
 * to infinity, NaN stays a (quiet) NaN. */
EO_INLINE uint16_t eo_f32_to_fp16(float f)
{
    uint32_t x, ax, sign, e, m, q, rem, half;
    int shift;
    memcpy(&x, &f, sizeof x);
    sign = (x >> 16) & 0x8000u;
    ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u)                                  /* NaN */
        return (uint16_t)(sign | 0x7E00u | ((ax >> 13) & 0x3FFu));
    if (ax >= 0x477FF000u)                                 /* rounds past 65504: inf */
        return (uint16_t)(sign | 0x7C00u);
    if (ax >= 0x38800000u) {                               /* a normal half: 2^-14 and up */
        uint32_t r = ax + 0xFFFu + ((ax >> 13) & 1u);      /* ties to even at bit 13 */
        return (uint16_t)(sign | ((r - 0x38000000u) >> 13)); /* exponent bias 127 -> 15 */
    }
    /* a subnormal half (or zero): round |f| * 2^24 = m * 2^(e - 126) to an integer */
    e = ax >> 23;
    shift = 126 - (int)e;
    if (shift > 24)
        return (uint16_t)sign;                             /* below 2^-25: zero */
    m = (ax & 0x7FFFFFu) | 0x800000u;
    q = m >> shift;
    rem = m & ((1u << shift) - 1u);
    half = 1u << (shift - 1);
    q += rem > half || (rem == half && (q & 1u));
    return (uint16_t)(sign | q);
}

void eo_f32_to_f16_scalar(const float *src, uint16_t *dst, int64_t n)
{
    int64_t i;
    for (i = 0; i < n; i++)
        dst[i] = eo_f32_to_fp16(src[i]);
}

void eo_f16_to_f32_scalar(const uint16_t *src, float *dst, int64_t n)
{
    int64_t i;
    for (i = 0; i < n; i++)
        dst[i] = eo_fp16_to_f32(src[i]);
}

void eo_f16_round_scalar(float *x, int64_t n)
{
    int64_t i;
    for (i = 0; i < n; i++)
        x[i] = eo_fp16_to_f32(eo_f32_to_fp16(x[i]));
}

#if EO_HAVE_X86_SIMD
#include <immintrin.h>
#define EO_TH __attribute__((target("avx2,fma,f16c")))

EO_TH void eo_f32_to_f16_f16c(const float *src, uint16_t *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        dst[i] = eo_f32_to_fp16(src[i]);
}

EO_TH void eo_f16_to_f32_f16c(const uint16_t *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++)
        dst[i] = eo_fp16_to_f32(src[i]);
}

EO_TH void eo_f16_round_f16c(float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT)));
    for (; i < n; i++)
        x[i] = eo_fp16_to_f32(eo_f32_to_fp16(x[i]));
}
#endif

#if EO_HAVE_NEON
#include <arm_neon.h>

void eo_f32_to_f16_neon(const float *src, uint16_t *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
    for (; i < n; i++)
        dst[i] = eo_f32_to_fp16(src[i]);
}

void eo_f16_to_f32_neon(const uint16_t *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(src + i))));
    for (; i < n; i++)
        dst[i] = eo_fp16_to_f32(src[i]);
}

void eo_f16_round_neon(float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        vst1q_f32(x + i, vcvt_f32_f16(vcvt_f16_f32(vld1q_f32(x + i))));
    for (; i < n; i++)
        x[i] = eo_fp16_to_f32(eo_f32_to_fp16(x[i]));
}
#endif

void eo_q8kv_to_f32(const int8_t *src, int64_t nrows, int64_t hd, float *dst)
{
    int64_t r, b, j, nb = hd / 32, row = hd + 4 * nb;
    for (r = 0; r < nrows; r++) {
        const int8_t *q = src + r * row;
        float *o = dst + r * hd;
        for (b = 0; b < nb; b++) {
            float d;
            memcpy(&d, q + hd + 4 * b, sizeof d);      /* the row's scales follow its values */
            for (j = 0; j < 32; j++)                    /* vectorized by the compiler */
                o[b * 32 + j] = (float)q[b * 32 + j] * d;
        }
    }
}
