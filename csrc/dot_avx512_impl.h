/*
 * dot_avx512_impl.h - body of the AVX-512 integer kernels, included three
 * times by dot_avx512.c: EO_VNNI 1 (vpdpbusd) or 0 (vpmaddubsw + vpmaddwd),
 * and with VNNI also EO_VBMI 1 (vpermb for the mxfp4 lookup: no nibble
 * masking needed); each copy with its own function-name suffix and target
 * attribute.  Not a standalone header.
 *
 * Integer matmuls (q8 activations x mxfp4 / q8 / q4 weights):
 *  - Activations of a tile of up to TT tokens are first rearranged ("prep")
 *    into a stack buffer: per group of 4 blocks, one 64-byte vector holding
 *    elements 0..15 of the 4 blocks (one 128-bit lane per block) and one with
 *    elements 16..31.  That matches the nibble layout of the 4-bit weights: a
 *    64-byte load of 4 blocks of codes gives the low nibbles (elements 0..15)
 *    and high nibbles (16..31) with one block per 128-bit lane.
 *  - Weights are turned into unsigned bytes u = w + c (c = 12 for mxfp4,
 *    8 for q4, 128 for q8 with VNNI) so that u8 x s8 instructions apply; the
 *    prep stores c * sum(x) per block, which is subtracted from the block sum.
 *  - Four groups (16 blocks) of per-lane int32 sums are reduced with a
 *    shuffle tree to one int32 per block (in a fixed "tree order"), converted
 *    to float32 and scaled by xd * weight scale (both in tree order).
 *  - Loop order: token tile outer (prep once), rows, then blocks; each group
 *    of weights is decoded once in registers and used for all TT tokens.
 *  - Without VNNI, q8 weights use the sign trick (|w| x sign(x, w)) since
 *    w + 128 could saturate vpmaddubsw; activations must be in [-127, 127].
 * With VNNI, every weight kind with >= EO512_BMIN tokens goes through the
 * "block per lane" path below instead (bmatmul: 16 blocks transposed so that
 * vpdpbusd accumulates each block in its own lane, no tree; tiles of 2 rows x
 * 8 tokens), which computes the same float operations in the same order, so
 * both paths give the same results to the bit.
 */

#if EO_VNNI && EO_VBMI
#define EO_T __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")))
#define EO_S(name) name##_vbmi
#elif EO_VNNI
#define EO_T __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define EO_S(name) name##_vnni
#else
#define EO_T __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")))
#define EO_S(name) name##_novnni
#endif
#define EO_TI EO_T __attribute__((always_inline)) static inline
#ifndef EO_UNROLL
#if defined(__clang__)
#define EO_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define EO_UNROLL _Pragma("GCC unroll 16")
#else
#define EO_UNROLL
#endif
#endif

#define EO512_TT 4 /* tokens per tile */

typedef struct {
    int8_t xs[EO_CHUNK_BLOCKS * 32]; /* rearranged activations */
    int32_t corr[EO_CHUNK_BLOCKS];   /* c * sum of the block's x, tree order */
    float xd[EO_CHUNK_BLOCKS];       /* activation scales, tree order */
} EO_S(eo512_prep);

/* u8 x s8 dot products of 4-byte groups added to the int32 lanes of acc. */
EO_TI __m512i EO_S(dp)(__m512i acc, __m512i u, __m512i s)
{
#if EO_VNNI
    return _mm512_dpbusd_epi32(acc, u, s);
#else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)));
#endif
}

/* u0.s0 + u1.s1 per int32 lane.  `small`: every u <= 24 (then the pair sums
 * cannot saturate int16 and the two halves may be added before widening). */
EO_TI __m512i EO_S(dp2)(__m512i u0, __m512i s0, __m512i u1, __m512i s1, int small)
{
#if EO_VNNI
    (void)small;
    return _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), u0, s0), u1, s1);
#else
    const __m512i one = _mm512_set1_epi16(1);
    if (small)
        return _mm512_madd_epi16(
            _mm512_add_epi16(_mm512_maddubs_epi16(u0, s0), _mm512_maddubs_epi16(u1, s1)), one);
    return _mm512_add_epi32(_mm512_madd_epi16(_mm512_maddubs_epi16(u0, s0), one),
                            _mm512_madd_epi16(_mm512_maddubs_epi16(u1, s1), one));
#endif
}

/* r[m] holds 4 int32 partial sums of block 4m+j in 128-bit lane j.  Returns one
 * total per block; int32 lane 4j+m holds block 4m+j ("tree order"). */
EO_TI __m512i EO_S(tree4)(__m512i r0, __m512i r1, __m512i r2, __m512i r3)
{
    __m512 a0 = _mm512_castsi512_ps(r0), a1 = _mm512_castsi512_ps(r1);
    __m512 a2 = _mm512_castsi512_ps(r2), a3 = _mm512_castsi512_ps(r3);
    __m512i s01 = _mm512_add_epi32(_mm512_castps_si512(_mm512_shuffle_ps(a0, a1, 0x88)),
                                   _mm512_castps_si512(_mm512_shuffle_ps(a0, a1, 0xDD)));
    __m512i s23 = _mm512_add_epi32(_mm512_castps_si512(_mm512_shuffle_ps(a2, a3, 0x88)),
                                   _mm512_castps_si512(_mm512_shuffle_ps(a2, a3, 0xDD)));
    __m512 b01 = _mm512_castsi512_ps(s01), b23 = _mm512_castsi512_ps(s23);
    return _mm512_add_epi32(_mm512_castps_si512(_mm512_shuffle_ps(b01, b23, 0x88)),
                            _mm512_castps_si512(_mm512_shuffle_ps(b01, b23, 0xDD)));
}

/* natural order (16 blocks) -> tree order */
EO_TI __m512 EO_S(to_tree_ps)(__m512 v)
{
    const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(idx, v);
}

EO_TI __mmask64 EO_S(bytemask)(int64_t nbytes)
{
    if (nbytes <= 0)
        return 0;
    return nbytes >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << nbytes) - 1);
}

/* Rearrange nc blocks of one token (x, dx at the chunk start) into p.
 * c: correction multiplier (0: none). */
EO_TI void EO_S(prep)(const int8_t *x, const float *dx, int64_t nc, int c, EO_S(eo512_prep) *p)
{
    const __m512i cv = _mm512_set1_epi8((char)(unsigned char)c);
    int64_t g, m;
    for (g = 0; g < nc; g += 16) {
        __m512i r[4];
        int64_t ng = nc - g;
        __m512 d;
        for (m = 0; m < 4; m++) {
            int64_t b = g + 4 * m, nblk = nc - b;
            __m512i x0, x1, xlo, xhi;
            if (nblk >= 4) {
                x0 = _mm512_loadu_si512((const void *)(x + b * 32));
                x1 = _mm512_loadu_si512((const void *)(x + b * 32 + 64));
            } else if (nblk > 0) {
                x0 = _mm512_maskz_loadu_epi8(EO_S(bytemask)(nblk * 32), x + b * 32);
                x1 = _mm512_maskz_loadu_epi8(EO_S(bytemask)(nblk * 32 - 64), x + b * 32 + 64);
            } else {
                x0 = x1 = _mm512_setzero_si512();
            }
            xlo = _mm512_shuffle_i64x2(x0, x1, 0x88);
            xhi = _mm512_shuffle_i64x2(x0, x1, 0xDD);
            _mm512_store_si512((void *)(p->xs + b * 32), xlo);
            _mm512_store_si512((void *)(p->xs + b * 32 + 64), xhi);
            r[m] = c ? EO_S(dp2)(cv, xlo, cv, xhi, c <= 24) : _mm512_setzero_si512();
        }
        _mm512_store_si512((void *)(p->corr + g), EO_S(tree4)(r[0], r[1], r[2], r[3]));
        if (ng >= 16)
            d = _mm512_loadu_ps(dx + g);
        else
            d = _mm512_maskz_loadu_ps((__mmask16)((1u << ng) - 1), dx + g);
        _mm512_store_ps(p->xd + g, EO_S(to_tree_ps)(d));
    }
}

/* 64 bytes of 4-bit codes (4 blocks, one per 128-bit lane) -> unsigned bytes of
 * the low nibbles (elements 0..15) and high nibbles (16..31): mxfp4 (kind 0)
 * through `lut` (doubled magnitudes offset by 12), q4 (kind 2) as stored. */
EO_TI void EO_S(unpack4)(int kind, __m512i wv, __m512i lut, __m512i *ulo, __m512i *uhi)
{
    const __m512i m0f = _mm512_set1_epi8(0x0F);
    __m512i lo, hi;
#if EO_VBMI
    if (kind == 0) {
        /* vpermb indexes 64 entries with bits 0..5: the 16-entry table
         * repeated 4 times ignores the other nibble's bits */
        *ulo = _mm512_permutexvar_epi8(wv, lut);
        *uhi = _mm512_permutexvar_epi8(_mm512_srli_epi16(wv, 4), lut);
        return;
    }
#endif
    lo = _mm512_and_si512(wv, m0f);
    hi = _mm512_and_si512(_mm512_srli_epi16(wv, 4), m0f);
    *ulo = kind == 0 ? _mm512_shuffle_epi8(lut, lo) : lo;
    *uhi = kind == 0 ? _mm512_shuffle_epi8(lut, hi) : hi;
}

/* One weight row (chunk of nc blocks) against a tile of TT prepared tokens.
 * kind: 0 mxfp4 (w uint8 codes, s e8m0 bytes), 1 q8 (w int8, s fp16),
 * 2 q4 (w uint8 nibbles, s fp16).  Loops over groups of 16 blocks; the last
 * group may be partial (masked loads, zero padding from the prep). */
EO_TI void EO_S(row_tile)(int kind, int TT, const uint8_t *w, const void *s, int64_t nc,
                           const EO_S(eo512_prep) *P, float *out, int64_t out_stride, int accumulate)
{
    const __m512i lut = _mm512_broadcast_i32x4(
        _mm_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0));
    const __m512i x80 = _mm512_set1_epi8((char)0x80);
    const int64_t bpb = kind == 1 ? 32 : 16; /* weight bytes per block */
    const int use_corr = !(kind == 1 && !EO_VNNI);
    __m512 facc[EO512_TT];
    int64_t g;
    int t;
    for (t = 0; t < TT; t++)
        facc[t] = _mm512_setzero_ps();
    for (g = 0; g < nc; g += 16) {
        const int full = nc - g >= 16;
        const int64_t ng = full ? 16 : nc - g;
        __m512i r[EO512_TT][4];
        __m512 ws;
        int64_t m;
        if (kind == 0) {
            const uint8_t *e = (const uint8_t *)s + g;
            __m128i ev = full ? _mm_loadu_si128((const __m128i *)e)
                              : _mm_maskz_loadu_epi8((__mmask16)((1u << ng) - 1), e);
            __m512 ef = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(ev), _mm512_set1_epi32(128)));
            ws = _mm512_scalef_ps(_mm512_set1_ps(1.0f), ef);
        } else {
            const uint16_t *h = (const uint16_t *)s + g;
            __m256i hv = full ? _mm256_loadu_si256((const __m256i *)h)
                              : _mm256_maskz_loadu_epi16((__mmask16)((1u << ng) - 1), h);
            ws = _mm512_cvtph_ps(hv);
        }
        ws = EO_S(to_tree_ps)(ws);
        for (m = 0; m < 4; m++) {
            const int64_t b = g + 4 * m, nblk = full ? 4 : nc - b;
            const uint8_t *wb = w + b * bpb;
            __m512i ulo, uhi;
#if !EO_VNNI
            __mmask64 klo = 0, khi = 0;
#endif
            if (nblk <= 0) {
                for (t = 0; t < TT; t++)
                    r[t][m] = _mm512_setzero_si512();
                continue;
            }
#if EO_PF
            /* one prefetch per group (every 64 B of 4-bit weights, every other
             * 64 B line of q8: more measured no better).  Not for one token
             * (decoding): there the hardware prefetchers alone stream faster
             * (28 vs 15 GB/s per core on Zen 4, q8 weights of the mapped
             * model), while several tokens per row gain from it. */
            if (full && TT > 1)
                EO_PREFETCH(wb + EO_PF);
#endif
            if (kind == 1) {
                __m512i w0, w1, wlo, whi;
                if (nblk >= 4) {
                    w0 = _mm512_loadu_si512((const void *)wb);
                    w1 = _mm512_loadu_si512((const void *)(wb + 64));
                } else {
                    w0 = _mm512_maskz_loadu_epi8(EO_S(bytemask)(nblk * 32), wb);
                    w1 = _mm512_maskz_loadu_epi8(EO_S(bytemask)(nblk * 32 - 64), wb + 64);
                }
                wlo = _mm512_shuffle_i64x2(w0, w1, 0x88);
                whi = _mm512_shuffle_i64x2(w0, w1, 0xDD);
#if EO_VNNI
                ulo = _mm512_xor_si512(wlo, x80);
                uhi = _mm512_xor_si512(whi, x80);
#else
                (void)x80;
                ulo = _mm512_abs_epi8(wlo);
                uhi = _mm512_abs_epi8(whi);
                klo = _mm512_movepi8_mask(wlo);
                khi = _mm512_movepi8_mask(whi);
#endif
            } else {
                __m512i wv = nblk >= 4 ? _mm512_loadu_si512((const void *)wb)
                                       : _mm512_maskz_loadu_epi8(EO_S(bytemask)(nblk * 16), wb);
                EO_S(unpack4)(kind, wv, lut, &ulo, &uhi);
            }
            for (t = 0; t < TT; t++) {
                __m512i xlo = _mm512_load_si512((const void *)(P[t].xs + b * 32));
                __m512i xhi = _mm512_load_si512((const void *)(P[t].xs + b * 32 + 64));
#if !EO_VNNI
                if (kind == 1) {
                    const __m512i z = _mm512_setzero_si512();
                    xlo = _mm512_mask_sub_epi8(xlo, klo, z, xlo);
                    xhi = _mm512_mask_sub_epi8(xhi, khi, z, xhi);
                }
#endif
                r[t][m] = EO_S(dp2)(ulo, xlo, uhi, xhi, kind != 1);
            }
        }
        for (t = 0; t < TT; t++) {
            __m512i d = EO_S(tree4)(r[t][0], r[t][1], r[t][2], r[t][3]);
            if (use_corr)
                d = _mm512_sub_epi32(d, _mm512_load_si512((const void *)(P[t].corr + g)));
            facc[t] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(d), _mm512_load_ps(P[t].xd + g)), ws,
                                      facc[t]);
        }
    }
    for (t = 0; t < TT; t++) {
        float v = _mm512_reduce_add_ps(facc[t]);
        if (accumulate)
            out[t * out_stride] += v;
        else
            out[t * out_stride] = v;
    }
}

/* ---- one token ("decode"): RT rows per pass ----
 * The same integer sums and float operations as row_tile with TT = 1 (so the
 * same results to the bit), but RT rows share every activation load and the
 * corr / xd loads of a group: per row and group only the weight loads, the
 * decode, 8 vpdpbusd, the tree and cvt / mul / fma remain.  mxfp4 scales are
 * decoded with integer ops ((e - 1) << 23 is 2**(e - 128) for e >= 2; the
 * rare e < 2, denormal, goes through vscalefps as in row_tile).
 * Used for 4-bit weights only (q8 weights stay on row_tile), one row per
 * pass (EO512_RT1 = 1) with a software prefetch EO_PF1 bytes ahead: measured
 * single-thread, weights from DRAM (Zen 4), mxfp4 5760 x 90 / 2880 x 90:
 * RT 1 + prefetch 4096 about +15-25 % over row_tile (~14 -> ~16.5 GB/s);
 * RT 2 / 4 interleave the rows' streams and lose (4 rows without prefetch:
 * half the speed; with prefetch at best even), although they compute ~10 %
 * faster from L2; the same prefetch slows q8 weights down (~0.85x). */
#ifndef EO512_RT1
#define EO512_RT1 1
#endif
#ifndef EO_PF1
#define EO_PF1 4096
#endif

EO_TI __m512 EO_S(escale)(const uint8_t *e, int full, __mmask16 sm)
{
    __m128i ev = full ? _mm_loadu_si128((const __m128i *)e) : _mm_maskz_loadu_epi8(sm, e);
    __m512i ei = _mm512_cvtepu8_epi32(ev);
    __m512 ws;
    if (_mm512_cmplt_epu32_mask(ei, _mm512_set1_epi32(2)))
        ws = _mm512_scalef_ps(_mm512_set1_ps(1.0f), _mm512_cvtepi32_ps(_mm512_sub_epi32(ei, _mm512_set1_epi32(128))));
    else
        ws = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_sub_epi32(ei, _mm512_set1_epi32(1)), 23));
    if (!full)
        ws = _mm512_maskz_mov_ps(sm, ws);
    return EO_S(to_tree_ps)(ws);
}

EO_TI void EO_S(row_tile1)(int kind, int RT, const uint8_t *w, int64_t wstride, const void *s,
                            int64_t sstride, int64_t nc, const EO_S(eo512_prep) *P, float *out,
                            int accumulate)
{
    const __m512i lut = _mm512_broadcast_i32x4(
        _mm_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0));
    const int64_t bpb = 16; /* weight bytes per block: 4-bit kinds only (0 mxfp4, 2 q4) */
    __m512 facc[EO512_RT1];
    int64_t g;
    int r;
    EO_UNROLL
    for (r = 0; r < RT; r++)
        facc[r] = _mm512_setzero_ps();
    for (g = 0; g < nc; g += 16) {
        const int full = nc - g >= 16;
        const int64_t ng = full ? 16 : nc - g;
        const __mmask16 sm = (__mmask16)((1u << ng) - 1);
        __m512i acc[EO512_RT1][4];
        __m512 xdv, ws;
        __m512i corr;
        int m;
#if EO_PF1
        if (EO_PF1 > 0) {
            /* the rows of a pass are read interleaved, which the hardware
             * prefetchers follow badly: fetch EO_PF1 bytes ahead of a sweep
             * of the pass's span in address order, as much per group as
             * this pass reads */
            const int64_t ch = RT * bpb * 16;
            const uint8_t *pf = w + EO_PF1 + (g / 16) * ch;
            int64_t o;
            for (o = 0; o < ch; o += 64)
                EO_PREFETCH(pf + o);
        }
#endif
        EO_UNROLL
        for (m = 0; m < 4; m++) {
            const int64_t b = g + 4 * m, nblk = full ? 4 : nc - b;
            __m512i xlo, xhi;
            if (nblk <= 0) {
                EO_UNROLL
                for (r = 0; r < RT; r++)
                    acc[r][m] = _mm512_setzero_si512();
                continue;
            }
            xlo = _mm512_load_si512((const void *)(P->xs + b * 32));
            xhi = _mm512_load_si512((const void *)(P->xs + b * 32 + 64));
            if (RT > 1)
                __asm__("" : "+v"(xlo), "+v"(xhi)); /* one load for all the rows */
            EO_UNROLL
            for (r = 0; r < RT; r++) {
                const uint8_t *wb = w + r * wstride + b * bpb;
                __m512i ulo, uhi;
                __m512i wv = nblk >= 4 ? _mm512_loadu_si512((const void *)wb)
                                       : _mm512_maskz_loadu_epi8(EO_S(bytemask)(nblk * 16), wb);
                EO_S(unpack4)(kind, wv, lut, &ulo, &uhi);
                acc[r][m] = EO_S(dp2)(ulo, xlo, uhi, xhi, 1);
            }
        }
        xdv = _mm512_load_ps(P->xd + g);
        corr = _mm512_load_si512((const void *)(P->corr + g));
        EO_UNROLL
        for (r = 0; r < RT; r++) {
            __m512i d = EO_S(tree4)(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
            if (kind == 0) {
                ws = EO_S(escale)((const uint8_t *)s + r * sstride + g, full, sm);
            } else {
                const uint16_t *h = (const uint16_t *)((const uint8_t *)s + r * sstride) + g;
                __m256i hv = full ? _mm256_loadu_si256((const __m256i *)h) : _mm256_maskz_loadu_epi16(sm, h);
                ws = EO_S(to_tree_ps)(_mm512_cvtph_ps(hv));
            }
            d = _mm512_sub_epi32(d, corr);
            facc[r] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(d), xdv), ws, facc[r]);
        }
    }
    EO_UNROLL
    for (r = 0; r < RT; r++) {
        float v = _mm512_reduce_add_ps(facc[r]);
        if (accumulate)
            out[r] += v;
        else
            out[r] = v;
    }
}

EO_TI void EO_S(int_matmul)(int kind, const uint8_t *wq, const void *ws, int64_t nrows, int64_t nb,
                             const int8_t *xq, const float *xd, int64_t ntok, float *out,
                             int64_t out_stride)
{
    EO_S(eo512_prep) P[EO512_TT] __attribute__((aligned(64)));
    const int64_t bpb = kind == 1 ? 32 : 16;
    const int64_t sbytes = kind == 0 ? 1 : 2;
    const int c = kind == 0 ? 12 : kind == 2 ? 8 : (EO_VNNI ? 128 : 0);
    int64_t c0, t0, r;
    for (c0 = 0; c0 < nb; c0 += EO_CHUNK_BLOCKS) {
        int64_t nc = nb - c0 < EO_CHUNK_BLOCKS ? nb - c0 : EO_CHUNK_BLOCKS;
        for (t0 = 0; t0 < ntok; t0 += EO512_TT) {
            int tt = ntok - t0 < EO512_TT ? (int)(ntok - t0) : EO512_TT;
            int i;
            for (i = 0; i < tt; i++)
                EO_S(prep)(xq + (t0 + i) * nb * 32 + c0 * 32, xd + (t0 + i) * nb + c0, nc, c, &P[i]);
            if (tt == 1 && kind != 1) {
                const uint8_t *w = wq + c0 * bpb;
                const uint8_t *s = (const uint8_t *)ws + c0 * sbytes;
                float *o = out + t0 * out_stride;
                for (r = 0; r + EO512_RT1 <= nrows; r += EO512_RT1)
                    EO_S(row_tile1)(kind, EO512_RT1, w + r * nb * bpb, nb * bpb, s + r * nb * sbytes,
                                    nb * sbytes, nc, P, o + r, c0 > 0);
                for (; r < nrows; r++)
                    EO_S(row_tile1)(kind, 1, w + r * nb * bpb, nb * bpb, s + r * nb * sbytes,
                                    nb * sbytes, nc, P, o + r, c0 > 0);
                continue;
            }
            for (r = 0; r < nrows; r++) {
                const uint8_t *w = wq + (r * nb + c0) * bpb;
                const void *s = (const uint8_t *)ws + (r * nb + c0) * sbytes;
                float *o = out + t0 * out_stride + r;
                switch (tt) {
                case 4:
                    EO_S(row_tile)(kind, 4, w, s, nc, P, o, out_stride, c0 > 0);
                    break;
                case 3:
                    EO_S(row_tile)(kind, 3, w, s, nc, P, o, out_stride, c0 > 0);
                    break;
                case 2:
                    EO_S(row_tile)(kind, 2, w, s, nc, P, o, out_stride, c0 > 0);
                    break;
                default:
                    EO_S(row_tile)(kind, 1, w, s, nc, P, o, out_stride, c0 > 0);
                    break;
                }
            }
        }
    }
}

#if EO_VNNI
/* ---- "block per lane" path for 4-bit weights (mxfp4, q4) with VNNI ----
 *
 * The 16 blocks of a group are transposed in registers so that int32 lane
 * p(b) of vector j (j = 0..3) holds dword j (bytes 4j..4j+3) of block b, with
 * p(4m+k) = 4k+m (the tree order above: it is what two rounds of in-lane
 * unpacks give; the scales use the same order).  The low / high nibbles of
 * vector j are then elements 4j..4j+3 / 16+4j..16+4j+3 of each block, and the
 * prep stores the activations in the matching order (per group, for
 * j = 0..3: low-half vector, high-half vector).  All 8 vpdpbusd of a group
 * and a token accumulate into ONE vector whose lane p(b) is the whole int32
 * sum of block b: no reduction tree, only cvt, mul and fma by xd * scale per
 * token and group.  The accumulator starts at -c * sum(x) (the correction
 * for the unsigned weights).
 *
 * Tiles of EO512_BRT rows x EO512_BTT tokens: the transpose and decode (~20
 * ops per row and group) are shared by the tokens, each activation load by
 * the rows.  On Zen 4, a 512-bit load, vpdpbusd, vmulps and vfmadd each take
 * about a cycle of the same budget, so loads and float ops per vpdpbusd are
 * what this layout minimizes.  K is cut into chunks of <= EO512_BCHUNK blocks
 * so that the prepared activations of a token tile stay in L1, and rows into
 * panels whose weights (~EO512_BPANEL bytes) stay in L2 while every token
 * tile goes over them.
 *
 * A group of 16 needs nc >= 16: a chunk's last partial group is the 16
 * blocks that end the chunk, overlapping the previous group, with the
 * already counted blocks zeroed in the prep (no masked weight loads).  Only
 * chunks of fewer than 16 blocks (nb < 16) use masked loads. */

/* fewest tokens for which the path is used */
#ifndef EO512_BMIN
#define EO512_BMIN 6
#endif
#ifndef EO512_BTT
#define EO512_BTT 8
#endif
#ifndef EO512_BRT
#define EO512_BRT 2
#endif
#ifndef EO512_BPANEL
#define EO512_BPANEL (256 * 1024)
#endif

typedef struct {
    int8_t xs[EO_CHUNK_BLOCKS * 32]; /* per group: for j = 0..3, low then high vector */
    int32_t ncorr[EO_CHUNK_BLOCKS];  /* -c * sum of the block's x, tree order */
    float xd[EO_CHUNK_BLOCKS];       /* activation scales, tree order (as row_tile) */
} EO_S(eo512_bprep);

/* w[m] holds blocks 4m..4m+3 (one per 128-bit lane); z[j] lane p(b) = dword j of block b */
EO_TI void EO_S(btr)(const __m512i w[4], __m512i z[4])
{
    __m512i a = _mm512_unpacklo_epi32(w[0], w[1]), b = _mm512_unpackhi_epi32(w[0], w[1]);
    __m512i c = _mm512_unpacklo_epi32(w[2], w[3]), d = _mm512_unpackhi_epi32(w[2], w[3]);
    z[0] = _mm512_unpacklo_epi64(a, c);
    z[1] = _mm512_unpackhi_epi64(a, c);
    z[2] = _mm512_unpacklo_epi64(b, d);
    z[3] = _mm512_unpackhi_epi64(b, d);
}

/* first block of group slot i of a chunk of nc blocks (see above) */
EO_TI int64_t EO_S(bgstart)(int64_t i, int64_t nc)
{
    return (16 * i + 16 <= nc || nc < 16) ? 16 * i : nc - 16;
}

/* Prepare one token's chunk of nc blocks (x, dx at the chunk start). */
EO_TI void EO_S(bprep)(const int8_t *x, const float *dx, int64_t nc, int c, EO_S(eo512_bprep) *p)
{
    const __m512i cv = _mm512_set1_epi8((char)(unsigned char)c);
    int64_t i, m;
    int j;
    for (i = 0; 16 * i < nc; i++) {
        const int64_t b0 = EO_S(bgstart)(i, nc);
        const int64_t lo = (16 * i - b0) * 32, hi = (nc - b0 < 16 ? nc - b0 : 16) * 32; /* valid bytes */
        const int plain = lo == 0 && hi == 512;
        const int8_t *xb = x + b0 * 32;
        __m512i xl[4], xh[4], zl[4], zh[4], s = _mm512_setzero_si512();
        __m512 d;
        for (m = 0; m < 4; m++) {
            __m512i x0, x1;
            if (plain) {
                x0 = _mm512_loadu_si512((const void *)(xb + 128 * m));
                x1 = _mm512_loadu_si512((const void *)(xb + 128 * m + 64));
            } else {
                int64_t o = 128 * m;
                x0 = _mm512_maskz_loadu_epi8(EO_S(bytemask)(hi - o) & ~EO_S(bytemask)(lo - o), xb + o);
                o += 64;
                x1 = _mm512_maskz_loadu_epi8(EO_S(bytemask)(hi - o) & ~EO_S(bytemask)(lo - o), xb + o);
            }
            xl[m] = _mm512_shuffle_i64x2(x0, x1, 0x88);
            xh[m] = _mm512_shuffle_i64x2(x0, x1, 0xDD);
        }
        EO_S(btr)(xl, zl);
        EO_S(btr)(xh, zh);
        for (j = 0; j < 4; j++) {
            _mm512_store_si512((void *)(p->xs + i * 512 + j * 128), zl[j]);
            _mm512_store_si512((void *)(p->xs + i * 512 + j * 128 + 64), zh[j]);
            s = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(s, cv, zl[j]), cv, zh[j]);
        }
        _mm512_store_si512((void *)(p->ncorr + 16 * i), _mm512_sub_epi32(_mm512_setzero_si512(), s));
        /* the scales in the lanes of the row_tile path (block 16i + k at
         * p(k)) even for an overlapping group, whose int sums are permuted
         * there (see bgroup): every float operation then matches row_tile */
        if (plain)
            d = _mm512_loadu_ps(dx + b0);
        else
            d = _mm512_maskz_loadu_ps((__mmask16)((1u << (nc - 16 * i < 16 ? nc - 16 * i : 16)) - 1),
                                      dx + 16 * i);
        _mm512_store_ps(p->xd + 16 * i, EO_S(to_tree_ps)(d));
    }
}

/* Weight scales of blocks g..g+15 of one row, tree order (!full: masked by sm). */
EO_TI __m512 EO_S(bscale)(int kind, const void *s, int64_t g, int full, __mmask16 sm)
{
    __m512 ws;
    if (kind == 0) {
        const uint8_t *e = (const uint8_t *)s + g;
        __m128i ev = full ? _mm_loadu_si128((const __m128i *)e) : _mm_maskz_loadu_epi8(sm, e);
        __m512 ef = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(ev), _mm512_set1_epi32(128)));
        ws = _mm512_scalef_ps(_mm512_set1_ps(1.0f), ef);
    } else {
        const uint16_t *h = (const uint16_t *)s + g;
        __m256i hv = full ? _mm256_loadu_si256((const __m256i *)h) : _mm256_maskz_loadu_epi16(sm, h);
        ws = _mm512_cvtph_ps(hv);
    }
    return EO_S(to_tree_ps)(ws);
}

/* One group of RT rows x TT tokens: weights of blocks g..g+15 (!full: the
 * only group of a chunk of < 16 blocks, loaded with the byte masks wm[4] and
 * scale mask sm) against prep slot i; adds to facc[r * TT + t].  perm: an
 * overlapping last group, whose int sums and scales are moved to the lanes
 * of row_tile (lane pidx[l] to lane l, lanes not in pkeep zeroed). */
EO_TI void EO_S(bgroup)(int kind, int RT, int TT, int full, int perm, const uint8_t *w,
                         int64_t wstride, const void *s, int64_t sstride, int64_t g, int64_t i,
                         const __mmask64 *wm, __mmask16 sm, __m512i pidx, __mmask16 pkeep,
                         const EO_S(eo512_bprep) *P, __m512 *facc)
{
    const __m512i m0f = _mm512_set1_epi8(0x0F);
    const __m512i x80 = _mm512_set1_epi8((char)0x80);
    const __m512i lut = _mm512_broadcast_i32x4(
        _mm_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0));
    const int64_t bpb = kind == 1 ? 32 : 16; /* weight bytes per block */
    __m512i acc[EO512_BRT][EO512_BTT];
    int t, r, h, jj, m;
    EO_UNROLL
    for (t = 0; t < TT; t++) {
        __m512i nc0 = _mm512_load_si512((const void *)(P[t].ncorr + 16 * i));
        EO_UNROLL
        for (r = 0; r < RT; r++)
            acc[r][t] = nc0;
    }
    /* the transpose in two halves (dwords 0, 1 then 2, 3): fewer registers live */
    EO_UNROLL
    for (h = 0; h < 2; h++) {
        __m512i z[EO512_BRT][2], zh[EO512_BRT][2];
        EO_UNROLL
        for (r = 0; r < RT; r++) {
            const uint8_t *wb = w + r * wstride + g * bpb;
            __m512i wv[4], a, c;
#if EO_PF
            if (h == 0 && full)
                for (m = 0; m < bpb / 4; m++)
                    EO_PREFETCH(wb + EO_PF + 64 * m);
#endif
            if (kind == 1) {
                /* q8: blocks 4m..4m+3 are 128 bytes; their first halves (elements
                 * 0..15) play the low nibbles, their second halves the high ones */
                __m512i wh[4];
                EO_UNROLL
                for (m = 0; m < 4; m++) {
                    __m512i w0, w1;
                    if (full) {
                        w0 = _mm512_loadu_si512((const void *)(wb + 128 * m));
                        w1 = _mm512_loadu_si512((const void *)(wb + 128 * m + 64));
                    } else {
                        w0 = _mm512_maskz_loadu_epi8(wm[2 * m], wb + 128 * m);
                        w1 = _mm512_maskz_loadu_epi8(wm[2 * m + 1], wb + 128 * m + 64);
                    }
                    wv[m] = _mm512_shuffle_i64x2(w0, w1, 0x88);
                    wh[m] = _mm512_shuffle_i64x2(w0, w1, 0xDD);
                }
                a = h ? _mm512_unpackhi_epi32(wh[0], wh[1]) : _mm512_unpacklo_epi32(wh[0], wh[1]);
                c = h ? _mm512_unpackhi_epi32(wh[2], wh[3]) : _mm512_unpacklo_epi32(wh[2], wh[3]);
                zh[r][0] = _mm512_unpacklo_epi64(a, c);
                zh[r][1] = _mm512_unpackhi_epi64(a, c);
            } else {
                EO_UNROLL
                for (m = 0; m < 4; m++) {
                    if (full)
                        wv[m] = _mm512_loadu_si512((const void *)(wb + 64 * m));
                    else
                        wv[m] = _mm512_maskz_loadu_epi8(wm[m], wb + 64 * m);
                }
            }
            a = h ? _mm512_unpackhi_epi32(wv[0], wv[1]) : _mm512_unpacklo_epi32(wv[0], wv[1]);
            c = h ? _mm512_unpackhi_epi32(wv[2], wv[3]) : _mm512_unpacklo_epi32(wv[2], wv[3]);
            z[r][0] = _mm512_unpacklo_epi64(a, c);
            z[r][1] = _mm512_unpackhi_epi64(a, c);
        }
        EO_UNROLL
        for (jj = 0; jj < 2; jj++) {
            const int j = 2 * h + jj;
            __m512i lo[EO512_BRT], hi[EO512_BRT];
            EO_UNROLL
            for (r = 0; r < RT; r++) {
                if (kind == 1) { /* signed bytes + 128: unsigned for vpdpbusd (ncorr takes 128 sum x back) */
                    lo[r] = _mm512_xor_si512(z[r][jj], x80);
                    hi[r] = _mm512_xor_si512(zh[r][jj], x80);
                    continue;
                }
#if EO_VBMI
                if (kind == 0) {
                    /* vpermb indexes 64 entries with bits 0..5: the 16-entry
                     * table repeated 4 times ignores the other nibble's bits */
                    lo[r] = _mm512_permutexvar_epi8(z[r][jj], lut);
                    hi[r] = _mm512_permutexvar_epi8(_mm512_srli_epi16(z[r][jj], 4), lut);
                } else
#endif
                {
                    lo[r] = _mm512_and_si512(z[r][jj], m0f);
                    hi[r] = _mm512_and_si512(_mm512_srli_epi16(z[r][jj], 4), m0f);
                    if (kind == 0) {
                        lo[r] = _mm512_shuffle_epi8(lut, lo[r]);
                        hi[r] = _mm512_shuffle_epi8(lut, hi[r]);
                    }
                }
            }
            EO_UNROLL
            for (t = 0; t < TT; t++) {
                const int8_t *xp = P[t].xs + i * 512 + j * 128;
                __m512i xl = _mm512_load_si512((const void *)xp);
                __m512i xh = _mm512_load_si512((const void *)(xp + 64));
                if (RT > 1) {
                    /* one load for all the rows (the compiler would fold a
                     * copy into every vpdpbusd) */
                    __asm__("" : "+v"(xl), "+v"(xh));
                }
                EO_UNROLL
                for (r = 0; r < RT; r++)
                    acc[r][t] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(acc[r][t], lo[r], xl), hi[r], xh);
            }
        }
    }
    EO_UNROLL
    for (r = 0; r < RT; r++) {
        __m512 ws = EO_S(bscale)(kind, (const uint8_t *)s + r * sstride, g, full, sm);
        if (perm)
            ws = _mm512_maskz_permutexvar_ps(pkeep, pidx, ws);
        EO_UNROLL
        for (t = 0; t < TT; t++) {
            if (perm)
                acc[r][t] = _mm512_maskz_permutexvar_epi32(pkeep, pidx, acc[r][t]);
            facc[r * TT + t] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[r][t]),
                                                             _mm512_load_ps(P[t].xd + 16 * i)),
                                               ws, facc[r * TT + t]);
        }
    }
}

/* Sums of the 16 lanes of v[0..7] -> lanes 0..7 of the result. */
EO_TI __m256 EO_S(hsum8)(const __m512 v[8])
{
    __m512 p[4], q[2], r;
    int i;
    for (i = 0; i < 4; i++) /* 256-bit halves: partial sums of v[2i], v[2i+1] */
        p[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
    for (i = 0; i < 2; i++) /* 128-bit lane k: partial sums of v[4i + k] */
        q[i] = _mm512_add_ps(_mm512_shuffle_f32x4(p[2 * i], p[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(p[2 * i], p[2 * i + 1], 0xDD));
    /* lane k: [v k: a0+a2, a1+a3, v 4+k: a0+a2, a1+a3] (the order of
     * _mm512_reduce_add_ps, as in row_tile: the same sums to the bit) */
    r = _mm512_add_ps(_mm512_shuffle_ps(q[0], q[1], 0x44), _mm512_shuffle_ps(q[0], q[1], 0xEE));
    /* lane k: [v k, v 4+k, v k, v 4+k] */
    r = _mm512_add_ps(_mm512_shuffle_ps(r, r, 0x88), _mm512_shuffle_ps(r, r, 0xDD));
    /* dword 4k -> k, 4k+1 -> 4+k */
    return _mm512_castps512_ps256(_mm512_permutexvar_ps(
        _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0), r));
}

/* RT rows (w, s at the chunk start, rows wstride / sstride bytes apart) x TT
 * prepared tokens (RT * TT <= 16), a chunk of nc blocks; kind 0 mxfp4, 1 q8, 2 q4. */
EO_TI void EO_S(btile)(int kind, int RT, int TT, const uint8_t *w, int64_t wstride, const void *s,
                        int64_t sstride, int64_t nc, const __mmask64 *wm, __mmask16 sm, __m512i pidx,
                        __mmask16 pkeep, const EO_S(eo512_bprep) *P, float *out, int64_t out_stride, int accumulate)
{
    const int64_t nl = nc % 16; /* blocks of an overlapping last group not in the one before */
    __m512 facc[16];
    float res[16];
    int64_t i;
    int t, r;
    EO_UNROLL
    for (t = 0; t < 16; t++)
        facc[t] = _mm512_setzero_ps();
    if (nc < 16) {
        EO_S(bgroup)(kind, RT, TT, 0, 0, w, wstride, s, sstride, 0, 0, wm, sm, pidx, 0, P, facc);
    } else {
        for (i = 0; 16 * i + 16 <= nc; i++)
            EO_S(bgroup)(kind, RT, TT, 1, 0, w, wstride, s, sstride, 16 * i, i, wm, sm, pidx, 0, P, facc);
        if (nl)
            EO_S(bgroup)(kind, RT, TT, 1, 1, w, wstride, s, sstride, nc - 16, i, wm, sm, pidx, pkeep, P, facc);
    }
    _mm256_storeu_ps(res, EO_S(hsum8)(facc));
    if (RT * TT > 8)
        _mm256_storeu_ps(res + 8, EO_S(hsum8)(facc + 8));
    EO_UNROLL
    for (r = 0; r < RT; r++)
        EO_UNROLL
        for (t = 0; t < TT; t++) {
            if (accumulate)
                out[t * out_stride + r] += res[r * TT + t];
            else
                out[t * out_stride + r] = res[r * TT + t];
        }
}

#define EO512_BCASE(RT_, TT_)                                                                      \
    case TT_:                                                                                      \
        EO_S(btile)(kind, RT_, TT_, w, wstride, s, sstride, nc, wm, sm, pidx, pkeep, P, o, out_stride, c0 > 0); \
        break;
#if EO512_BTT == 8
#define EO512_BSWITCH(RT_)                                                                         \
    switch (tt) {                                                                                  \
        EO512_BCASE(RT_, 8)                                                                        \
        EO512_BCASE(RT_, 7)                                                                        \
        EO512_BCASE(RT_, 6)                                                                        \
        EO512_BCASE(RT_, 5)                                                                        \
        EO512_BCASE(RT_, 4)                                                                        \
        EO512_BCASE(RT_, 3)                                                                        \
        EO512_BCASE(RT_, 2)                                                                        \
    default:                                                                                       \
        EO512_BCASE(RT_, 1)                                                                        \
    }
#elif EO512_BTT == 4
#define EO512_BSWITCH(RT_)                                                                         \
    switch (tt) {                                                                                  \
        EO512_BCASE(RT_, 4)                                                                        \
        EO512_BCASE(RT_, 3)                                                                        \
        EO512_BCASE(RT_, 2)                                                                        \
    default:                                                                                       \
        EO512_BCASE(RT_, 1)                                                                        \
    }
#else
#error "EO512_BTT: 4 or 8"
#endif

EO_TI void EO_S(bmatmul)(int kind, const uint8_t *wq, const void *ws, int64_t nrows, int64_t nb,
                          const int8_t *xq, const float *xd, int64_t ntok, float *out,
                          int64_t out_stride)
{
    EO_S(eo512_bprep) P[EO512_BTT] __attribute__((aligned(64)));
    const int64_t sbytes = kind == 0 ? 1 : 2, bpb = kind == 1 ? 32 : 16;
    const int64_t wstride = nb * bpb, sstride = nb * sbytes;
    const int c = kind == 0 ? 12 : kind == 1 ? 128 : 8; /* what the unsigned weights are offset by */
    int64_t panel = ntok <= EO512_BTT ? nrows : EO512_BPANEL / wstride;
    int64_t c0, t0, r0, r;
    panel = panel < 16 ? 16 : panel;
    for (r0 = 0; r0 < nrows; r0 += panel) {
        const int64_t r1 = nrows - r0 < panel ? nrows : r0 + panel;
        for (t0 = 0; t0 < ntok; t0 += EO512_BTT) {
            const int tt = ntok - t0 < EO512_BTT ? (int)(ntok - t0) : EO512_BTT;
            /* the chunks of row_tile (same sums to the bit) */
            for (c0 = 0; c0 < nb; c0 += EO_CHUNK_BLOCKS) {
                const int64_t nc = nb - c0 < EO_CHUNK_BLOCKS ? nb - c0 : EO_CHUNK_BLOCKS;
                const __mmask16 sm = (__mmask16)((1u << (nc < 16 ? nc : 0)) - 1);
                __mmask64 wm[8];
                __m512i pidx;
                __mmask16 pkeep = 0;
                int i;
                {
                    /* overlapping last group: lane p(k) of row_tile (block 16 * nfull + k)
                     * is lane p(k + sh) of the group; p(b) = 4 (b % 4) + b / 4 */
                    int32_t idx[16] = {0};
                    const int64_t nl = nc % 16, sh = 16 - nl;
                    int64_t k;
                    for (k = 0; k < nl; k++) {
                        idx[4 * (k % 4) + k / 4] = (int32_t)(4 * ((k + sh) % 4) + (k + sh) / 4);
                        pkeep |= (__mmask16)(1u << (4 * (k % 4) + k / 4));
                    }
                    pidx = _mm512_loadu_si512((const void *)idx);
                }
                for (i = 0; i < 8; i++)
                    wm[i] = EO_S(bytemask)((nc < 16 ? nc : 0) * bpb - 64 * i);
                for (i = 0; i < tt; i++)
                    EO_S(bprep)(xq + (t0 + i) * nb * 32 + c0 * 32, xd + (t0 + i) * nb + c0, nc, c, &P[i]);
                for (r = r0; r < r1;) {
                    const uint8_t *w = wq + r * wstride + c0 * bpb;
                    const void *s = (const uint8_t *)ws + r * sstride + c0 * sbytes;
                    float *o = out + t0 * out_stride + r;
                    if (EO512_BRT > 1 && r + EO512_BRT <= r1) {
                        EO512_BSWITCH(EO512_BRT)
                        r += EO512_BRT;
                    } else {
                        EO512_BSWITCH(1)
                        r += 1;
                    }
                }
            }
        }
    }
}
#undef EO512_BCASE
#undef EO512_BSWITCH
#endif /* EO_VNNI */

EO_T static void EO_S(q8_mxfp4w_avx512)(const uint8_t *wq, const uint8_t *we, int64_t nrows,
                                         int64_t nb, const int8_t *xq, const float *xd,
                                         int64_t ntok, float *out, int64_t out_stride)
{
#if EO_VNNI
    if (ntok >= EO512_BMIN) {
        EO_S(bmatmul)(0, wq, we, nrows, nb, xq, xd, ntok, out, out_stride);
        return;
    }
#endif
    EO_S(int_matmul)(0, wq, we, nrows, nb, xq, xd, ntok, out, out_stride);
}

EO_T static void EO_S(q8_q8w_avx512)(const int8_t *wq, const uint16_t *wd, int64_t nrows,
                                      int64_t nb, const int8_t *xq, const float *xd,
                                      int64_t ntok, float *out, int64_t out_stride)
{
#if EO_VNNI
    if (ntok >= EO512_BMIN) {
        EO_S(bmatmul)(1, (const uint8_t *)wq, wd, nrows, nb, xq, xd, ntok, out, out_stride);
        return;
    }
#endif
    EO_S(int_matmul)(1, (const uint8_t *)wq, wd, nrows, nb, xq, xd, ntok, out, out_stride);
}

EO_T static void EO_S(q8_q4w_avx512)(const uint8_t *wq, const uint16_t *wd, int64_t nrows,
                                      int64_t nb, const int8_t *xq, const float *xd,
                                      int64_t ntok, float *out, int64_t out_stride)
{
#if EO_VNNI
    if (ntok >= EO512_BMIN) {
        EO_S(bmatmul)(2, wq, wd, nrows, nb, xq, xd, ntok, out, out_stride);
        return;
    }
#endif
    EO_S(int_matmul)(2, wq, wd, nrows, nb, xq, xd, ntok, out, out_stride);
}

#undef EO_T
#undef EO_S
#undef EO_TI
