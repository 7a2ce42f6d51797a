/*
 * attention.c - eo_f32_attention_block at every level: plain C loops for the
 * scalar level (any compiler), generic 8-float vectors (attention_impl.h)
 * compiled with each SIMD level's target attributes.
 */
#include <math.h>
#include "eo_internal.h"

/* ---- scalar: one row at a time ---- */

void eo_attention_block_scalar(const float *qt, int64_t rows, int64_t hd, const float *k,
                               const float *v, int64_t ks, int64_t nkeys, const int32_t *lo,
                               const int32_t *hi, float *m, float *l, float *acct, float *sc)
{
    int64_t r, j, i;
    for (r = 0; r < rows; r++) {
        const int64_t a = lo[r] > 0 ? lo[r] : 0, b = hi[r] < nkeys ? hi[r] : nkeys;
        float mx = m[r], corr, tot = 0.0f;
        if (a >= b)
            continue;
        for (j = a; j < b; j++) {
            float s = 0.0f;
            for (i = 0; i < hd; i++)
                s += qt[i * rows + r] * k[j * ks + i];
            sc[j] = s;
            mx = s > mx ? s : mx;
        }
        corr = expf(m[r] - mx);
        for (j = a; j < b; j++) {
            sc[j] = expf(sc[j] - mx);
            tot += sc[j];
        }
        l[r] = l[r] * corr + tot;
        m[r] = mx;
        for (i = 0; i < hd; i++) {
            float c = acct[i * rows + r] * corr;
            for (j = a; j < b; j++)
                c += sc[j] * v[j * ks + i];
            acct[i * rows + r] = c;
        }
    }
}

/* ---- SIMD levels: generic vectors ---- */

#if EO_HAVE_X86_SIMD || EO_HAVE_NEON
#if defined(__clang__)
#define EO_UNROLL8 _Pragma("unroll")
#else
#define EO_UNROLL8 _Pragma("GCC unroll 8")
#endif
typedef float eo_vf __attribute__((vector_size(32)));
typedef int32_t eo_vi __attribute__((vector_size(32)));
#endif

#if EO_HAVE_X86_SIMD
#define EO_AT __attribute__((target("avx2,fma")))
#define EO_ATI EO_AT __attribute__((always_inline)) static inline
#define EO_AN(name) name##_avx2
#include "attention_impl.h"
#undef EO_AT
#undef EO_ATI
#undef EO_AN

/* 32 registers and EVEX encodings, still 8 lanes: on Zen 4 a 512-bit FMA
 * costs two 256-bit ones, and 8 query rows is gpt-oss's group size */
#define EO_AT __attribute__((target("avx2,fma,avx512f,avx512vl")))
#define EO_ATI EO_AT __attribute__((always_inline)) static inline
#define EO_AN(name) name##_avx512
#include "attention_impl.h"
#undef EO_AT
#undef EO_ATI
#undef EO_AN
#endif

#if EO_HAVE_NEON
#define EO_AT
#define EO_ATI __attribute__((always_inline)) static inline
#define EO_AN(name) name##_neon
#include "attention_impl.h"
#undef EO_AT
#undef EO_ATI
#undef EO_AN
#endif
