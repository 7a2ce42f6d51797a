/*
 * dot_scalar.c - portable C99 versions of every kernel (level "scalar").
 *
 * These are the fallback on any CPU and the model the SIMD versions follow.
 * Loop order: rows outer; a chunk of a weight row is decoded once into a
 * small stack buffer (<= EO_CHUNK_BLOCKS blocks) and reused for every token.
 */
#include <math.h>
#include "eo_internal.h"

const int8_t eo_mxfp4_x2[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

void eo_q8_quantize_block_scalar(const float *x, int8_t *q, float *d)
{
    float amax = 0.0f, dd, id;
    int i;
    for (i = 0; i < 32; i++) {
        float a = fabsf(x[i]);
        if (a > amax)
            amax = a;
    }
    dd = amax / 127.0f;
    id = dd > 0.0f ? 1.0f / dd : 0.0f;
    for (i = 0; i < 32; i++) {
        float v = x[i] * id;
        if (v != v)
            v = 0.0f;
        if (v > 127.0f)
            v = 127.0f;
        if (v < -127.0f)
            v = -127.0f;
        q[i] = (int8_t)(int)rintf(v);
    }
    *d = dd;
}

static void q8_quantize_scalar(const float *x, int64_t n, int8_t *xq, float *xd)
{
    int64_t b;
    for (b = 0; b < n / 32; b++)
        eo_q8_quantize_block_scalar(x + b * 32, xq + b * 32, xd + b);
}

/* Shared driver of the three integer kernels: `kind` 0 mxfp4, 1 q8, 2 q4. */
static void q8_int_matmul_scalar(int kind, const void *wq_, const void *ws_, int64_t nrows,
                                 int64_t nb, const int8_t *xq, const float *xd, int64_t ntok,
                                 float *out, int64_t out_stride)
{
    int8_t w[EO_CHUNK_BLOCKS * 32];
    float ws[EO_CHUNK_BLOCKS];
    int64_t r, t, c0, b;
    int i;
    for (r = 0; r < nrows; r++) {
        for (c0 = 0; c0 < nb; c0 += EO_CHUNK_BLOCKS) {
            int64_t nc = nb - c0 < EO_CHUNK_BLOCKS ? nb - c0 : EO_CHUNK_BLOCKS;
            /* decode this chunk of row r */
            for (b = 0; b < nc; b++) {
                int64_t gb = r * nb + c0 + b;
                int8_t *wb = w + b * 32;
                if (kind == 0) {
                    const uint8_t *p = (const uint8_t *)wq_ + gb * 16;
                    for (i = 0; i < 16; i++) {
                        wb[i] = eo_mxfp4_x2[p[i] & 15];
                        wb[i + 16] = eo_mxfp4_x2[p[i] >> 4];
                    }
                    ws[b] = eo_e8m0_half(((const uint8_t *)ws_)[gb]);
                } else if (kind == 1) {
                    memcpy(wb, (const int8_t *)wq_ + gb * 32, 32);
                    ws[b] = eo_fp16_to_f32(((const uint16_t *)ws_)[gb]);
                } else {
                    const uint8_t *p = (const uint8_t *)wq_ + gb * 16;
                    for (i = 0; i < 16; i++) {
                        wb[i] = (int8_t)((p[i] & 15) - 8);
                        wb[i + 16] = (int8_t)((p[i] >> 4) - 8);
                    }
                    ws[b] = eo_fp16_to_f32(((const uint16_t *)ws_)[gb]);
                }
            }
            for (t = 0; t < ntok; t++) {
                const int8_t *x = xq + t * nb * 32 + c0 * 32;
                const float *dx = xd + t * nb + c0;
                float acc = c0 == 0 ? 0.0f : out[t * out_stride + r];
                for (b = 0; b < nc; b++) {
                    const int8_t *wb = w + b * 32;
                    const int8_t *xb = x + b * 32;
                    int32_t s0 = 0, s1 = 0;
                    for (i = 0; i < 16; i++) {
                        s0 += (int32_t)wb[i] * xb[i];
                        s1 += (int32_t)wb[i + 16] * xb[i + 16];
                    }
                    acc += (float)(s0 + s1) * dx[b] * ws[b];
                }
                out[t * out_stride + r] = acc;
            }
        }
    }
}

static void q8_mxfp4w_scalar(const uint8_t *wq, const uint8_t *we, int64_t nrows, int64_t nb,
                             const int8_t *xq, const float *xd, int64_t ntok, float *out,
                             int64_t out_stride)
{
    q8_int_matmul_scalar(0, wq, we, nrows, nb, xq, xd, ntok, out, out_stride);
}

static void q8_q8w_scalar(const int8_t *wq, const uint16_t *wd, int64_t nrows, int64_t nb,
                          const int8_t *xq, const float *xd, int64_t ntok, float *out,
                          int64_t out_stride)
{
    q8_int_matmul_scalar(1, wq, wd, nrows, nb, xq, xd, ntok, out, out_stride);
}

static void q8_q4w_scalar(const uint8_t *wq, const uint16_t *wd, int64_t nrows, int64_t nb,
                          const int8_t *xq, const float *xd, int64_t ntok, float *out,
                          int64_t out_stride)
{
    q8_int_matmul_scalar(2, wq, wd, nrows, nb, xq, xd, ntok, out, out_stride);
}

static void f32_mxfp4w_scalar(const uint8_t *wq, const uint8_t *we, int64_t nrows, int64_t nb,
                              const float *x, int64_t ntok, float *out, int64_t out_stride)
{
    float w[EO_CHUNK_BLOCKS * 32];
    int64_t r, t, c0, b;
    int i;
    for (r = 0; r < nrows; r++) {
        for (c0 = 0; c0 < nb; c0 += EO_CHUNK_BLOCKS) {
            int64_t nc = nb - c0 < EO_CHUNK_BLOCKS ? nb - c0 : EO_CHUNK_BLOCKS;
            for (b = 0; b < nc; b++) {
                const uint8_t *p = wq + (r * nb + c0 + b) * 16;
                float s = eo_e8m0_half(we[r * nb + c0 + b]);
                for (i = 0; i < 16; i++) {
                    w[b * 32 + i] = (float)eo_mxfp4_x2[p[i] & 15] * s;
                    w[b * 32 + i + 16] = (float)eo_mxfp4_x2[p[i] >> 4] * s;
                }
            }
            for (t = 0; t < ntok; t++) {
                const float *xt = x + t * nb * 32 + c0 * 32;
                float acc = c0 == 0 ? 0.0f : out[t * out_stride + r];
                for (b = 0; b < nc; b++) {
                    const float *wb = w + b * 32, *xb = xt + b * 32;
                    float a[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                    for (i = 0; i < 32; i += 4) {
                        a[0] += wb[i] * xb[i];
                        a[1] += wb[i + 1] * xb[i + 1];
                        a[2] += wb[i + 2] * xb[i + 2];
                        a[3] += wb[i + 3] * xb[i + 3];
                    }
                    acc += (a[0] + a[1]) + (a[2] + a[3]);
                }
                out[t * out_stride + r] = acc;
            }
        }
    }
}

static void f32_bf16w_scalar(const uint16_t *w, int64_t nrows, int64_t k, const float *x,
                             int64_t ntok, float *out, int64_t out_stride)
{
    enum { CH = EO_CHUNK_BLOCKS * 32 };
    float wf[CH];
    int64_t r, t, c0, i;
    for (r = 0; r < nrows; r++) {
        const uint16_t *wr = w + r * k;
        if (k == 0) {
            for (t = 0; t < ntok; t++)
                out[t * out_stride + r] = 0.0f;
            continue;
        }
        for (c0 = 0; c0 < k; c0 += CH) {
            int64_t nc = k - c0 < CH ? k - c0 : CH;
            for (i = 0; i < nc; i++)
                wf[i] = eo_bf16_to_f32(wr[c0 + i]);
            for (t = 0; t < ntok; t++) {
                const float *xt = x + t * k + c0;
                float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                float acc;
                int j;
                for (i = 0; i + 8 <= nc; i += 8)
                    for (j = 0; j < 8; j++)
                        a[j] += wf[i + j] * xt[i + j];
                for (; i < nc; i++)
                    a[i & 7] += wf[i] * xt[i];
                acc = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
                if (c0 == 0)
                    out[t * out_stride + r] = acc;
                else
                    out[t * out_stride + r] += acc;
            }
        }
    }
}

int eo_kernels_scalar(eo_kernels *k)
{
    k->variant = "scalar";
    k->q8_quantize = q8_quantize_scalar;
    k->q8_mxfp4w = q8_mxfp4w_scalar;
    k->q8_q8w = q8_q8w_scalar;
    k->q8_q4w = q8_q4w_scalar;
    k->f32_mxfp4w = f32_mxfp4w_scalar;
    k->f32_bf16w = f32_bf16w_scalar;
    k->f32_attention = eo_attention_block_scalar;
    k->f32_to_f16 = eo_f32_to_f16_scalar;
    k->f16_to_f32 = eo_f16_to_f32_scalar;
    k->f16_round = eo_f16_round_scalar;
    return 1;
}
