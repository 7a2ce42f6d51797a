/*
 * simd.c - CPU detection and run-time dispatch of the kernels.
 *
 * Every level is compiled into one build (per-function target attributes); a
 * table of function pointers selects the one in use.  The public functions
 * handle empty shapes, then call through the table.
 */
#include "eo_internal.h"

#if EO_HAVE_X86_SIMD
#include <cpuid.h>
#endif

static eo_kernels g_kernels;
static int g_level = -1;

int eo_abi_version(void) { return 4; }

#if EO_HAVE_X86_SIMD
static int x86_has_f16c(void)
{
    /* not every compiler knows __builtin_cpu_supports("f16c"): CPUID.1:ECX[29] */
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    return (c >> 29) & 1u;
}

static int x86_has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && x86_has_f16c();
}

static int x86_has_avx512(void)
{
    __builtin_cpu_init();
    return x86_has_avx2() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}

static int x86_has_avx512vnni(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni");
}

static int x86_has_avx512vbmi(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vbmi");
}
#endif

int eo_level_supported(int level)
{
    switch (level) {
    case EO_LEVEL_SCALAR:
        return 1;
#if EO_HAVE_X86_SIMD
    case EO_LEVEL_AVX2:
        return x86_has_avx2();
    case EO_LEVEL_AVX512:
        return x86_has_avx512();
#endif
#if EO_HAVE_NEON
    case EO_LEVEL_NEON:
        return 1; /* Advanced SIMD is part of the aarch64 baseline */
#endif
    default:
        return 0;
    }
}

int eo_cpu_best_level(void)
{
    if (eo_level_supported(EO_LEVEL_NEON))
        return EO_LEVEL_NEON;
    if (eo_level_supported(EO_LEVEL_AVX512))
        return EO_LEVEL_AVX512;
    if (eo_level_supported(EO_LEVEL_AVX2))
        return EO_LEVEL_AVX2;
    return EO_LEVEL_SCALAR;
}

int eo_set_level(int level) { return eo_set_level_variant(level, 0); }

int eo_set_level_variant(int level, int disable)
{
    eo_kernels k;
    int ok = 0;
    (void)disable; /* only some levels have optional extensions */
    if (!eo_level_supported(level))
        return -1;
    memset(&k, 0, sizeof k);
    switch (level) {
    case EO_LEVEL_SCALAR:
        ok = eo_kernels_scalar(&k);
        break;
    case EO_LEVEL_AVX2:
        ok = eo_kernels_avx2(&k);
        break;
    case EO_LEVEL_AVX512:
#if EO_HAVE_X86_SIMD
        ok = eo_kernels_avx512(&k, !(disable & EO_EXT_VNNI) && x86_has_avx512vnni(),
                               !(disable & EO_EXT_VBMI) && x86_has_avx512vbmi());
#endif
        break;
    case EO_LEVEL_NEON:
        ok = eo_kernels_neon(&k);
        break;
    default:
        break;
    }
    if (!ok)
        return -1;
    g_kernels = k;
    g_level = level;
    return 0;
}

static void eo_init(void)
{
    /* Racing first calls from several threads all store the same values. */
    if (g_level < 0 && eo_set_level(eo_cpu_best_level()) != 0)
        eo_set_level(EO_LEVEL_SCALAR);
}

int eo_get_level(void)
{
    eo_init();
    return g_level;
}

const char *eo_level_name(int level)
{
    switch (level) {
    case EO_LEVEL_SCALAR:
        return "scalar";
    case EO_LEVEL_AVX2:
        return "avx2";
    case EO_LEVEL_AVX512:
        return "avx512";
    case EO_LEVEL_NEON:
        return "neon";
    default:
        return "unknown";
    }
}

const char *eo_variant_name(void)
{
    eo_init();
    return g_kernels.variant;
}

static void zero_out(float *out, int64_t nrows, int64_t ntok, int64_t out_stride)
{
    int64_t t, r;
    for (t = 0; t < ntok; t++)
        for (r = 0; r < nrows; r++)
            out[t * out_stride + r] = 0.0f;
}

void eo_q8_quantize(const float *x, int64_t n, int8_t *xq, float *xd)
{
    if (n < 32)
        return;
    if (g_level < 0)
        eo_init();
    g_kernels.q8_quantize(x, n - n % 32, xq, xd);
}

void eo_q8_mxfp4w_matmul(const uint8_t *wq, const uint8_t *we, int64_t nrows, int64_t nb,
                         const int8_t *xq, const float *xd, int64_t ntok, float *out,
                         int64_t out_stride)
{
    if (nrows <= 0 || ntok <= 0)
        return;
    if (nb <= 0) {
        zero_out(out, nrows, ntok, out_stride);
        return;
    }
    if (g_level < 0)
        eo_init();
    g_kernels.q8_mxfp4w(wq, we, nrows, nb, xq, xd, ntok, out, out_stride);
}

void eo_q8_q8w_matmul(const int8_t *wq, const uint16_t *wd, int64_t nrows, int64_t nb,
                      const int8_t *xq, const float *xd, int64_t ntok, float *out,
                      int64_t out_stride)
{
    if (nrows <= 0 || ntok <= 0)
        return;
    if (nb <= 0) {
        zero_out(out, nrows, ntok, out_stride);
        return;
    }
    if (g_level < 0)
        eo_init();
    g_kernels.q8_q8w(wq, wd, nrows, nb, xq, xd, ntok, out, out_stride);
}

void eo_q8_q4w_matmul(const uint8_t *wq, const uint16_t *wd, int64_t nrows, int64_t nb,
                      const int8_t *xq, const float *xd, int64_t ntok, float *out,
                      int64_t out_stride)
{
    if (nrows <= 0 || ntok <= 0)
        return;
    if (nb <= 0) {
        zero_out(out, nrows, ntok, out_stride);
        return;
    }
    if (g_level < 0)
        eo_init();
    g_kernels.q8_q4w(wq, wd, nrows, nb, xq, xd, ntok, out, out_stride);
}

void eo_f32_mxfp4w_matmul(const uint8_t *wq, const uint8_t *we, int64_t nrows, int64_t nb,
                          const float *x, int64_t ntok, float *out, int64_t out_stride)
{
    if (nrows <= 0 || ntok <= 0)
        return;
    if (nb <= 0) {
        zero_out(out, nrows, ntok, out_stride);
        return;
    }
    if (g_level < 0)
        eo_init();
    g_kernels.f32_mxfp4w(wq, we, nrows, nb, x, ntok, out, out_stride);
}

void eo_f32_bf16w_matmul(const uint16_t *w, int64_t nrows, int64_t k, const float *x,
                         int64_t ntok, float *out, int64_t out_stride)
{
    if (nrows <= 0 || ntok <= 0)
        return;
    if (k <= 0) {
        zero_out(out, nrows, ntok, out_stride);
        return;
    }
    if (g_level < 0)
        eo_init();
    g_kernels.f32_bf16w(w, nrows, k, x, ntok, out, out_stride);
}

void eo_f32_attention_block(const float *qt, int64_t rows, int64_t hd, const float *k,
                            const float *v, int64_t kv_stride, int64_t nkeys, const int32_t *lo,
                            const int32_t *hi, float *m, float *l, float *acct, float *scores)
{
    if (rows <= 0 || nkeys <= 0)
        return;
    if (g_level < 0)
        eo_init();
    g_kernels.f32_attention(qt, rows, hd, k, v, kv_stride, nkeys, lo, hi, m, l, acct, scores);
}

void eo_f32_to_f16(const float *src, uint16_t *dst, int64_t n)
{
    if (n <= 0)
        return;
    if (g_level < 0)
        eo_init();
    g_kernels.f32_to_f16(src, dst, n);
}

void eo_f16_to_f32(const uint16_t *src, float *dst, int64_t n)
{
    if (n <= 0)
        return;
    if (g_level < 0)
        eo_init();
    g_kernels.f16_to_f32(src, dst, n);
}

void eo_f16_round(float *x, int64_t n)
{
    if (n <= 0)
        return;
    if (g_level < 0)
        eo_init();
    g_kernels.f16_round(x, n);
}

/* Levels not compiled into this build. */
#if !EO_HAVE_X86_SIMD
int eo_kernels_avx2(eo_kernels *k)
{
    (void)k;
    return 0;
}
int eo_kernels_avx512(eo_kernels *k, int vnni, int vbmi)
{
    (void)k;
    (void)vnni;
    (void)vbmi;
    return 0;
}
#endif
#if !EO_HAVE_NEON
int eo_kernels_neon(eo_kernels *k)
{
    (void)k;
    return 0;
}
#endif
