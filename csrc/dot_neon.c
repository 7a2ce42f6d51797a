/*
 * dot_neon.c - level "neon" (aarch64 Advanced SIMD, baseline ARMv8.0-A: no
 * dotprod/i8mm instructions are assumed).
 *
 * Structure of the scalar code: a chunk (<= EO_CHUNK_BLOCKS blocks) of a
 * weight row is decoded once into a small stack buffer (int8 values, or
 * float32 for the float kernels) with NEON, then every token's dot product
 * with it runs in NEON: int8 x int8 -> int16 (vmull) -> int32 (vpadal) per
 * block, scaled in float32 like the scalar code.
 */
#include "eo_internal.h"

#if EO_HAVE_NEON
#include <arm_neon.h>

/* ---- q8 quantization (bit-identical to eo_q8_quantize_block_scalar) ---- */

static int8x8_t q8_quant8_neon(float32x4_t a, float32x4_t b, float id)
{
    const float32x4_t lim = vdupq_n_f32(127.0f), nlim = vdupq_n_f32(-127.0f);
    float32x4_t va = vmulq_n_f32(a, id), vb = vmulq_n_f32(b, id);
    /* NaN -> 0 (a NaN fails x == x), then clamp; vcvtnq rounds to nearest even */
    va = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(va), vceqq_f32(va, va)));
    vb = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(vb), vceqq_f32(vb, vb)));
    va = vminq_f32(vmaxq_f32(va, nlim), lim);
    vb = vminq_f32(vmaxq_f32(vb, nlim), lim);
    return vmovn_s16(vcombine_s16(vmovn_s32(vcvtnq_s32_f32(va)), vmovn_s32(vcvtnq_s32_f32(vb))));
}

static void q8_quantize_neon(const float *x, int64_t n, int8_t *xq, float *xd)
{
    int64_t b;
    int i;
    for (b = 0; b < n / 32; b++) {
        const float *p = x + b * 32;
        float32x4_t v[8], m;
        float amax, d, id;
        for (i = 0; i < 8; i++)
            v[i] = vld1q_f32(p + 4 * i);
        m = vabsq_f32(v[0]);
        for (i = 1; i < 8; i++)
            m = vmaxq_f32(m, vabsq_f32(v[i]));
        amax = vmaxvq_f32(m);
        d = amax / 127.0f;
        id = d > 0.0f ? 1.0f / d : 0.0f;
        for (i = 0; i < 4; i++)
            vst1_s8(xq + b * 32 + 8 * i, q8_quant8_neon(v[2 * i], v[2 * i + 1], id));
        xd[b] = d;
    }
}

/* ---- q8 activations x integer weights ---- */

/* int32 dot of 32 int8 weights (|w| <= 12: mxfp4 doubled, q4) with 32 int8
 * activations: two products fit in int16 before widening. */
static inline int32_t dot32_small_neon(const int8_t *w, const int8_t *x)
{
    int8x16_t w0 = vld1q_s8(w), w1 = vld1q_s8(w + 16);
    int8x16_t x0 = vld1q_s8(x), x1 = vld1q_s8(x + 16);
    int16x8_t p0 = vmlal_s8(vmull_s8(vget_low_s8(w0), vget_low_s8(x0)), vget_low_s8(w1), vget_low_s8(x1));
    int16x8_t p1 = vmlal_high_s8(vmull_high_s8(w0, x0), w1, x1);
    return vaddvq_s32(vpadalq_s16(vpaddlq_s16(p0), p1));
}

/* the same for full-range int8 weights (q8): widen every product */
static inline int32_t dot32_neon(const int8_t *w, const int8_t *x)
{
    int8x16_t w0 = vld1q_s8(w), w1 = vld1q_s8(w + 16);
    int8x16_t x0 = vld1q_s8(x), x1 = vld1q_s8(x + 16);
    int32x4_t a = vpaddlq_s16(vmull_s8(vget_low_s8(w0), vget_low_s8(x0)));
    a = vpadalq_s16(a, vmull_high_s8(w0, x0));
    a = vpadalq_s16(a, vmull_s8(vget_low_s8(w1), vget_low_s8(x1)));
    a = vpadalq_s16(a, vmull_high_s8(w1, x1));
    return vaddvq_s32(a);
}

/* kind: 0 mxfp4, 1 q8, 2 q4 */
static void q8_int_matmul_neon(int kind, const void *wq_, const void *ws_, int64_t nrows, int64_t nb,
                               const int8_t *xq, const float *xd, int64_t ntok, float *out,
                               int64_t out_stride)
{
    int8_t w[EO_CHUNK_BLOCKS * 32] __attribute__((aligned(16)));
    float ws[EO_CHUNK_BLOCKS];
    const int8x16_t lut = vld1q_s8(eo_mxfp4_x2);
    const uint8x16_t m0f = vdupq_n_u8(0x0F);
    const int8x16_t eight = vdupq_n_s8(8);
    int64_t r, t, c0, b;
    for (r = 0; r < nrows; r++) {
        for (c0 = 0; c0 < nb; c0 += EO_CHUNK_BLOCKS) {
            int64_t nc = nb - c0 < EO_CHUNK_BLOCKS ? nb - c0 : EO_CHUNK_BLOCKS;
            for (b = 0; b < nc; b++) {
                int64_t gb = r * nb + c0 + b;
                if (kind == 1) {
                    memcpy(w + b * 32, (const int8_t *)wq_ + gb * 32, 32);
                    ws[b] = eo_fp16_to_f32(((const uint16_t *)ws_)[gb]);
                } else {
                    uint8x16_t v = vld1q_u8((const uint8_t *)wq_ + gb * 16);
                    uint8x16_t lo = vandq_u8(v, m0f), hi = vshrq_n_u8(v, 4);
                    if (kind == 0) {
                        vst1q_s8(w + b * 32, vqtbl1q_s8(lut, lo));
                        vst1q_s8(w + b * 32 + 16, vqtbl1q_s8(lut, hi));
                        ws[b] = eo_e8m0_half(((const uint8_t *)ws_)[gb]);
                    } else {
                        vst1q_s8(w + b * 32, vsubq_s8(vreinterpretq_s8_u8(lo), eight));
                        vst1q_s8(w + b * 32 + 16, vsubq_s8(vreinterpretq_s8_u8(hi), eight));
                        ws[b] = eo_fp16_to_f32(((const uint16_t *)ws_)[gb]);
                    }
                }
            }
            for (t = 0; t < ntok; t++) {
                const int8_t *x = xq + t * nb * 32 + c0 * 32;
                const float *dx = xd + t * nb + c0;
                float acc = c0 == 0 ? 0.0f : out[t * out_stride + r];
                for (b = 0; b < nc; b++) {
                    int32_t s = kind == 1 ? dot32_neon(w + b * 32, x + b * 32)
                                          : dot32_small_neon(w + b * 32, x + b * 32);
                    acc += (float)s * dx[b] * ws[b];
                }
                out[t * out_stride + r] = acc;
            }
        }
    }
}

static void q8_mxfp4w_neon(const uint8_t *wq, const uint8_t *we, int64_t nrows, int64_t nb,
                           const int8_t *xq, const float *xd, int64_t ntok, float *out,
                           int64_t out_stride)
{
    q8_int_matmul_neon(0, wq, we, nrows, nb, xq, xd, ntok, out, out_stride);
}

static void q8_q8w_neon(const int8_t *wq, const uint16_t *wd, int64_t nrows, int64_t nb,
                        const int8_t *xq, const float *xd, int64_t ntok, float *out,
                        int64_t out_stride)
{
    q8_int_matmul_neon(1, wq, wd, nrows, nb, xq, xd, ntok, out, out_stride);
}

static void q8_q4w_neon(const uint8_t *wq, const uint16_t *wd, int64_t nrows, int64_t nb,
                        const int8_t *xq, const float *xd, int64_t ntok, float *out,
                        int64_t out_stride)
{
    q8_int_matmul_neon(2, wq, wd, nrows, nb, xq, xd, ntok, out, out_stride);
}

/* ---- float32 activations ---- */

/* dot of n floats (n % 16 == 0 not required) with 4 accumulators */
static inline float dotf_neon(const float *a, const float *b, int64_t n)
{
    float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;
    float s;
    int64_t i;
    for (i = 0; i + 16 <= n; i += 16) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
        s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
        s2 = vfmaq_f32(s2, vld1q_f32(a + i + 8), vld1q_f32(b + i + 8));
        s3 = vfmaq_f32(s3, vld1q_f32(a + i + 12), vld1q_f32(b + i + 12));
    }
    for (; i + 4 <= n; i += 4)
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
    s = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static void f32_mxfp4w_neon(const uint8_t *wq, const uint8_t *we, int64_t nrows, int64_t nb,
                            const float *x, int64_t ntok, float *out, int64_t out_stride)
{
    float w[EO_CHUNK_BLOCKS * 32] __attribute__((aligned(16)));
    const int8x16_t lut = vld1q_s8(eo_mxfp4_x2);
    const uint8x16_t m0f = vdupq_n_u8(0x0F);
    int64_t r, t, c0, b;
    int i;
    for (r = 0; r < nrows; r++) {
        for (c0 = 0; c0 < nb; c0 += EO_CHUNK_BLOCKS) {
            int64_t nc = nb - c0 < EO_CHUNK_BLOCKS ? nb - c0 : EO_CHUNK_BLOCKS;
            for (b = 0; b < nc; b++) {
                uint8x16_t v = vld1q_u8(wq + (r * nb + c0 + b) * 16);
                float32x4_t s = vdupq_n_f32(eo_e8m0_half(we[r * nb + c0 + b]));
                int8x16_t h[2];
                h[0] = vqtbl1q_s8(lut, vandq_u8(v, m0f));
                h[1] = vqtbl1q_s8(lut, vshrq_n_u8(v, 4));
                for (i = 0; i < 2; i++) {
                    int16x8_t a = vmovl_s8(vget_low_s8(h[i])), c = vmovl_high_s8(h[i]);
                    float *o = w + b * 32 + 16 * i;
                    vst1q_f32(o, vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(a))), s));
                    vst1q_f32(o + 4, vmulq_f32(vcvtq_f32_s32(vmovl_high_s16(a)), s));
                    vst1q_f32(o + 8, vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(c))), s));
                    vst1q_f32(o + 12, vmulq_f32(vcvtq_f32_s32(vmovl_high_s16(c)), s));
                }
            }
            for (t = 0; t < ntok; t++) {
                float v = dotf_neon(w, x + t * nb * 32 + c0 * 32, nc * 32);
                if (c0 == 0)
                    out[t * out_stride + r] = v;
                else
                    out[t * out_stride + r] += v;
            }
        }
    }
}

static void f32_bf16w_neon(const uint16_t *w, int64_t nrows, int64_t k, const float *x, int64_t ntok,
                           float *out, int64_t out_stride)
{
    enum { CH = EO_CHUNK_BLOCKS * 32 };
    float wf[CH] __attribute__((aligned(16)));
    int64_t r, t, c0, i;
    for (r = 0; r < nrows; r++) {
        const uint16_t *wr = w + r * k;
        for (c0 = 0; c0 < k; c0 += CH) {
            int64_t nc = k - c0 < CH ? k - c0 : CH;
            for (i = 0; i + 8 <= nc; i += 8) {
                uint16x8_t h = vld1q_u16(wr + c0 + i);
                vst1q_f32(wf + i, vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16)));
                vst1q_f32(wf + i + 4, vreinterpretq_f32_u32(vshll_high_n_u16(h, 16)));
            }
            for (; i < nc; i++)
                wf[i] = eo_bf16_to_f32(wr[c0 + i]);
            for (t = 0; t < ntok; t++) {
                float v = dotf_neon(wf, x + t * k + c0, nc);
                if (c0 == 0)
                    out[t * out_stride + r] = v;
                else
                    out[t * out_stride + r] += v;
            }
        }
    }
}

int eo_kernels_neon(eo_kernels *k)
{
    k->variant = "neon";
    k->q8_quantize = q8_quantize_neon;
    k->q8_mxfp4w = q8_mxfp4w_neon;
    k->q8_q8w = q8_q8w_neon;
    k->q8_q4w = q8_q4w_neon;
    k->f32_mxfp4w = f32_mxfp4w_neon;
    k->f32_bf16w = f32_bf16w_neon;
    k->f32_attention = eo_attention_block_neon;
    k->f32_to_f16 = eo_f32_to_f16_neon;
    k->f16_to_f32 = eo_f16_to_f32_neon;
    k->f16_round = eo_f16_round_neon;
    return 1;
}

#endif /* EO_HAVE_NEON */
