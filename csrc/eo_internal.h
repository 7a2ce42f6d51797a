/*
 * eo_internal.h - shared between the kernel files of edgeoss; not public.
 */
#ifndef EO_INTERNAL_H
#define EO_INTERNAL_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include "edgeoss.h"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#define EO_X86 1
#else
#define EO_X86 0
#endif

#if defined(__aarch64__) || defined(_M_ARM64)
#define EO_ARM64 1
#else
#define EO_ARM64 0
#endif

/* x86 SIMD levels are compiled with per-function target attributes, which
 * need GCC or clang; other compilers (MSVC) get the scalar level only. */
#if EO_X86 && (defined(__GNUC__) || defined(__clang__))
#define EO_HAVE_X86_SIMD 1
#else
#define EO_HAVE_X86_SIMD 0
#endif

#if EO_ARM64 && defined(__ARM_NEON) && (defined(__GNUC__) || defined(__clang__))
#define EO_HAVE_NEON 1
#else
#define EO_HAVE_NEON 0
#endif

#if defined(_MSC_VER) && !defined(__clang__)
#define EO_INLINE static __inline
#define EO_RESTRICT __restrict
#else
#define EO_INLINE static inline
#define EO_RESTRICT __restrict__
#endif

#define EO_LEVEL_SCALAR 0
#define EO_LEVEL_AVX2 1
#define EO_LEVEL_AVX512 2
#define EO_LEVEL_NEON 3
#define EO_NLEVELS 4

typedef void (*eo_q8_quantize_fn)(const float *x, int64_t n, int8_t *xq, float *xd);
typedef void (*eo_q8_mxfp4w_fn)(const uint8_t *wq, const uint8_t *we, int64_t nrows, int64_t nb,
                                const int8_t *xq, const float *xd, int64_t ntok,
                                float *out, int64_t out_stride);
typedef void (*eo_q8_q8w_fn)(const int8_t *wq, const uint16_t *wd, int64_t nrows, int64_t nb,
                             const int8_t *xq, const float *xd, int64_t ntok,
                             float *out, int64_t out_stride);
typedef void (*eo_q8_q4w_fn)(const uint8_t *wq, const uint16_t *wd, int64_t nrows, int64_t nb,
                             const int8_t *xq, const float *xd, int64_t ntok,
                             float *out, int64_t out_stride);
typedef void (*eo_f32_mxfp4w_fn)(const uint8_t *wq, const uint8_t *we, int64_t nrows, int64_t nb,
                                 const float *x, int64_t ntok, float *out, int64_t out_stride);
typedef void (*eo_f32_bf16w_fn)(const uint16_t *w, int64_t nrows, int64_t k,
                                const float *x, int64_t ntok, float *out, int64_t out_stride);

/* eo_f32_attention_block's type (a function type, so that it also declares each level's) */
typedef void eo_f32_attention_kernel(const float *qt, int64_t rows, int64_t hd, const float *k,
                                     const float *v, int64_t kv_stride, int64_t nkeys,
                                     const int32_t *lo, const int32_t *hi, float *m, float *l,
                                     float *acct, float *scores);
typedef eo_f32_attention_kernel *eo_f32_attention_fn;

/* the KV cache's float16 conversions (kv16.c) */
typedef void (*eo_f32_to_f16_fn)(const float *src, uint16_t *dst, int64_t n);
typedef void (*eo_f16_to_f32_fn)(const uint16_t *src, float *dst, int64_t n);
typedef void (*eo_f16_round_fn)(float *x, int64_t n);

typedef struct eo_kernels {
    const char *variant;
    eo_q8_quantize_fn q8_quantize;
    eo_q8_mxfp4w_fn q8_mxfp4w;
    eo_q8_q8w_fn q8_q8w;
    eo_q8_q4w_fn q8_q4w;
    eo_f32_mxfp4w_fn f32_mxfp4w;
    eo_f32_bf16w_fn f32_bf16w;
    eo_f32_attention_fn f32_attention;
    eo_f32_to_f16_fn f32_to_f16;
    eo_f16_to_f32_fn f16_to_f32;
    eo_f16_round_fn f16_round;
} eo_kernels;

/* eo_f32_attention_block of each level (attention.c) */
eo_f32_attention_kernel eo_attention_block_scalar, eo_attention_block_avx2, eo_attention_block_avx512,
    eo_attention_block_neon;

/* the float16 conversions of each level (kv16.c; x86 levels share the F16C ones) */
void eo_f32_to_f16_scalar(const float *src, uint16_t *dst, int64_t n);
void eo_f16_to_f32_scalar(const uint16_t *src, float *dst, int64_t n);
void eo_f16_round_scalar(float *x, int64_t n);
void eo_f32_to_f16_f16c(const float *src, uint16_t *dst, int64_t n);
void eo_f16_to_f32_f16c(const uint16_t *src, float *dst, int64_t n);
void eo_f16_round_f16c(float *x, int64_t n);
void eo_f32_to_f16_neon(const float *src, uint16_t *dst, int64_t n);
void eo_f16_to_f32_neon(const uint16_t *src, float *dst, int64_t n);
void eo_f16_round_neon(float *x, int64_t n);

/* Each fills *k and returns 1 if that level is compiled in, else returns 0. */
int eo_kernels_scalar(eo_kernels *k);
int eo_kernels_avx2(eo_kernels *k);
int eo_kernels_avx512(eo_kernels *k, int vnni, int vbmi);

/* Optional extensions within a level, as bits of eo_set_level_variant's mask */
#define EO_EXT_VNNI 1
#define EO_EXT_VBMI 2
int eo_kernels_neon(eo_kernels *k);

/* Doubled mxfp4 values: 2 * {0,.5,1,1.5,2,3,4,6} with sign bit 3. */
extern const int8_t eo_mxfp4_x2[16];

/* 2**(e - 128) as float32 (exact; subnormal for e < 2). */
EO_INLINE float eo_e8m0_half(uint8_t e)
{
    uint32_t bits;
    float f;
    if (e >= 2)
        bits = (uint32_t)(e - 1) << 23;
    else
        bits = (uint32_t)0x00200000u << e; /* e=0: 2^-128, e=1: 2^-127 */
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* 2**(e - 127) as float32 (exact). */
EO_INLINE float eo_e8m0(uint8_t e)
{
    uint32_t bits;
    float f;
    if (e >= 1)
        bits = (uint32_t)e << 23;
    else
        bits = 0x00400000u; /* 2^-127 */
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* IEEE binary16 bits -> float32 (exact, including subnormals, inf, nan). */
EO_INLINE float eo_fp16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t ex = (h >> 10) & 0x1Fu;
    uint32_t man = h & 0x3FFu;
    uint32_t bits;
    float f;
    if (ex == 0) {
        f = (float)man * 5.9604644775390625e-8f; /* man * 2^-24, exact */
        return sign ? -f : f;
    }
    if (ex == 31)
        bits = sign | 0x7F800000u | (man << 13);
    else
        bits = sign | ((ex + 112u) << 23) | (man << 13);
    memcpy(&f, &bits, sizeof f);
    return f;
}

EO_INLINE float eo_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Scalar reference of the quantization of one block (shared so that every
 * level's tail/fallback code is bit-identical). */
void eo_q8_quantize_block_scalar(const float *x, int8_t *q, float *d);

/* Upper bound of blocks handled per pass by the SIMD matmuls (activation
 * scratch lives on the stack; larger K is processed in chunks). */
#define EO_CHUNK_BLOCKS 128

/* Software prefetch distance (bytes ahead in a weight stream).  Decode is
 * bound by memory bandwidth; prefetching a few KB ahead measurably helps the
 * hardware prefetchers on the row-tile access pattern. */
#ifndef EO_PF
#define EO_PF 4096
#endif
#if defined(__GNUC__) || defined(__clang__)
#define EO_PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 3)
#else
#define EO_PREFETCH(p) ((void)0)
#endif

#endif /* EO_INTERNAL_H */
