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
 * (A variant that transposes 16 blocks so that vpdpbusd accumulates each
 * block in its own lane, with no tree, measured no faster on Zen 4.)
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

/* One weight row (chunk of nc blocks) against a tile of TT prepared tokens.
 * kind: 0 mxfp4 (w uint8 codes, s e8m0 bytes), 1 q8 (w int8, s fp16),
 * 2 q4 (w uint8 nibbles, s fp16).  Loops over groups of 16 blocks; the last
 * group may be partial (masked loads, zero padding from the prep). */
EO_TI void EO_S(row_tile)(int kind, int TT, const uint8_t *w, const void *s, int64_t nc,
                           const EO_S(eo512_prep) *P, float *out, int64_t out_stride, int accumulate)
{
    const __m512i m0f = _mm512_set1_epi8(0x0F);
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
             * 64 B line of q8: more measured no better) */
            if (full)
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
#if EO_VBMI
                if (kind == 0) {
                    /* vpermb indexes 64 entries with bits 0..5: the 16-entry
                     * table repeated 4 times ignores the other nibble's bits */
                    ulo = _mm512_permutexvar_epi8(wv, lut);
                    uhi = _mm512_permutexvar_epi8(_mm512_srli_epi16(wv, 4), lut);
                } else
#endif
                {
                    __m512i lo = _mm512_and_si512(wv, m0f);
                    __m512i hi = _mm512_and_si512(_mm512_srli_epi16(wv, 4), m0f);
                    if (kind == 0) {
                        ulo = _mm512_shuffle_epi8(lut, lo);
                        uhi = _mm512_shuffle_epi8(lut, hi);
                    } else {
                        ulo = lo;
                        uhi = hi;
                    }
                }
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

EO_T static void EO_S(q8_mxfp4w_avx512)(const uint8_t *wq, const uint8_t *we, int64_t nrows,
                                         int64_t nb, const int8_t *xq, const float *xd,
                                         int64_t ntok, float *out, int64_t out_stride)
{
    EO_S(int_matmul)(0, wq, we, nrows, nb, xq, xd, ntok, out, out_stride);
}

EO_T static void EO_S(q8_q8w_avx512)(const int8_t *wq, const uint16_t *wd, int64_t nrows,
                                      int64_t nb, const int8_t *xq, const float *xd,
                                      int64_t ntok, float *out, int64_t out_stride)
{
    EO_S(int_matmul)(1, (const uint8_t *)wq, wd, nrows, nb, xq, xd, ntok, out, out_stride);
}

EO_T static void EO_S(q8_q4w_avx512)(const uint8_t *wq, const uint16_t *wd, int64_t nrows,
                                      int64_t nb, const int8_t *xq, const float *xd,
                                      int64_t ntok, float *out, int64_t out_stride)
{
    EO_S(int_matmul)(2, wq, wd, nrows, nb, xq, xd, ntok, out, out_stride);
}

#undef EO_T
#undef EO_S
#undef EO_TI
