/*
 * attention_impl.h - one block of keys of attention with online softmax, on
 * GCC/clang generic vectors of 8 floats; included by attention.c once per
 * SIMD level with EO_AT (the level's function attributes) and EO_AN(name)
 * (the level's name suffix).  The compiler maps the vectors to one AVX
 * register, two NEON registers, ...
 *
 * Layout "rows in lanes": the 8 lanes of a vector are 8 query rows, so the
 * scores of one key for 8 rows are one vector (q^T k as 64 FMAs of a q^T
 * column by a broadcast key element), the softmax's max and sum are lane-wise
 * (no horizontal reductions) and the output is 8 rows' accumulators per
 * dimension updated by a broadcast value element.  Keys and values are read
 * where they lie (any stride), never copied.
 */

EO_ATI eo_vf EO_AN(splat)(float x)
{
    eo_vf v = {x, x, x, x, x, x, x, x};
    return v;
}

EO_ATI eo_vi EO_AN(splati)(int32_t x)
{
    eo_vi v = {x, x, x, x, x, x, x, x};
    return v;
}

EO_ATI eo_vf EO_AN(sel)(eo_vi mask, eo_vf a, eo_vf b)
{
    return (eo_vf)((mask & (eo_vi)a) | (~mask & (eo_vi)b));
}

EO_ATI eo_vf EO_AN(vmax)(eo_vf a, eo_vf b) { return EO_AN(sel)(a > b, a, b); }

EO_ATI eo_vf EO_AN(load)(const float *p)
{
    eo_vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

EO_ATI void EO_AN(store)(float *p, eo_vf v) { memcpy(p, &v, sizeof v); }

/* exp(x) as 2^n 2^f, |f| <= 1/2, n clamped to [-126, 126]: the polynomial of
 * loops.exp_inplace (relative error ~2e-7 near 0, ~1e-6 at |x| = 20). */
EO_ATI eo_vf EO_AN(vexp)(eo_vf x)
{
    eo_vf t = x * EO_AN(splat)(1.4426950408889634f), y, f, p;
    eo_vi n;
    t = EO_AN(vmax)(t, EO_AN(splat)(-126.0f));
    t = EO_AN(sel)(t > EO_AN(splat)(126.0f), EO_AN(splat)(126.0f), t);
    y = t + EO_AN(splat)(0.5f);
    n = __builtin_convertvector(y, eo_vi);                /* truncates toward zero */
    n += (eo_vi)(__builtin_convertvector(n, eo_vf) > y);  /* -1 where that rounded up: floor */
    f = t - __builtin_convertvector(n, eo_vf);
    p = EO_AN(splat)(1.5403530393381608e-4f);
    p = p * f + EO_AN(splat)(1.3333558146428443e-3f);
    p = p * f + EO_AN(splat)(9.618129107628477e-3f);
    p = p * f + EO_AN(splat)(5.550410866482158e-2f);
    p = p * f + EO_AN(splat)(2.402265069591007e-1f);
    p = p * f + EO_AN(splat)(6.931471805599453e-1f);
    p = p * f + EO_AN(splat)(1.0f);
    return p * (eo_vf)((n + EO_AN(splati)(127)) << 23);
}

/* -1 in the lanes whose rows may see key j */
EO_ATI eo_vi EO_AN(valid)(int64_t j, eo_vi lo, eo_vi hi)
{
    eo_vi jv = EO_AN(splati)((int32_t)j);
    return (jv >= lo) & (jv < hi);
}

/* 8 rows (lanes) of eo_f32_attention_block; sc: 8 * nkeys floats of scratch */
EO_ATI void EO_AN(rows8)(const float *qt, int64_t rs, int64_t hd, const float *k, const float *v,
                         int64_t ks, int64_t nkeys, const int32_t *lo, const int32_t *hi,
                         float *m, float *l, float *at, float *sc, int fetch)
{
    eo_vi lov, hiv;
    eo_vf mx = EO_AN(splat)(-INFINITY), mold, mnew, corr, tot = EO_AN(splat)(0.0f);
    int64_t a = nkeys, b = 0, j, i;
    int u;
    for (u = 0; u < 8; u++) {
        int64_t x = lo[u] > 0 ? lo[u] : 0, y = hi[u] < nkeys ? hi[u] : nkeys;
        if (x < y) {
            a = x < a ? x : a;
            b = y > b ? y : b;
        }
    }
    if (a >= b)
        return;
    memcpy(&lov, lo, sizeof lov);
    memcpy(&hiv, hi, sizeof hiv);

    /* scores, 8 keys per pass over q^T (8 independent FMA chains) */
    for (j = a; j < b; j += 8) {
        const int64_t nk = b - j < 8 ? b - j : 8;
        const float *kp[8];
        eo_vf s[8];
        for (u = 0; u < 8; u++) {
            kp[u] = k + (j + (u < nk ? u : 0)) * ks;
            s[u] = EO_AN(splat)(0.0f);
        }
        /* keys and values of a cache lie kv_stride apart, a stride the hardware
         * prefetchers do not follow across pages: fetch the next pass's keys and
         * this pass's values (used right after the scores); the first 8 rows'
         * pass brings the block into the cache for the others */
        for (u = 0; fetch && u < nk; u++) {
            const float *kn = k + (j + 8 + u < b ? j + 8 + u : j + u) * ks, *vn = v + (j + u) * ks;
            int64_t o;
            for (o = 0; o < hd; o += 16) {
                EO_PREFETCH(kn + o);
                EO_PREFETCH(vn + o);
            }
        }
        for (i = 0; i < hd; i++) {
            eo_vf q = EO_AN(load)(qt + i * rs);
            EO_UNROLL8
            for (u = 0; u < 8; u++)
                s[u] += q * kp[u][i];
        }
        for (u = 0; u < nk; u++) {
            eo_vf x = EO_AN(sel)(EO_AN(valid)(j + u, lov, hiv), s[u], EO_AN(splat)(-INFINITY));
            mx = EO_AN(vmax)(mx, x);
            EO_AN(store)(sc + (j + u) * 8, x);
        }
    }

    /* online softmax: the running max only grows; earlier sums are rescaled */
    mold = EO_AN(load)(m);
    mnew = EO_AN(vmax)(mold, mx);
    corr = EO_AN(vexp)(mold - mnew);
    for (j = a; j < b; j++) {
        eo_vf p = EO_AN(vexp)(EO_AN(load)(sc + j * 8) - mnew);
        p = (eo_vf)((eo_vi)p & EO_AN(valid)(j, lov, hiv));
        tot += p;
        EO_AN(store)(sc + j * 8, p);
    }
    EO_AN(store)(l, EO_AN(load)(l) * corr + tot);
    EO_AN(store)(m, mnew);

    /* acc = acc * corr + p v, 8 dimensions per pass over the keys */
    for (i = 0; i + 8 <= hd; i += 8) {
        eo_vf c0 = EO_AN(load)(at + i * rs) * corr, c1 = EO_AN(load)(at + (i + 1) * rs) * corr,
              c2 = EO_AN(load)(at + (i + 2) * rs) * corr, c3 = EO_AN(load)(at + (i + 3) * rs) * corr,
              c4 = EO_AN(load)(at + (i + 4) * rs) * corr, c5 = EO_AN(load)(at + (i + 5) * rs) * corr,
              c6 = EO_AN(load)(at + (i + 6) * rs) * corr, c7 = EO_AN(load)(at + (i + 7) * rs) * corr;
        for (j = a; j < b; j++) {
            const eo_vf p = EO_AN(load)(sc + j * 8);
            const float *vj = v + j * ks + i;
            c0 += p * vj[0];
            c1 += p * vj[1];
            c2 += p * vj[2];
            c3 += p * vj[3];
            c4 += p * vj[4];
            c5 += p * vj[5];
            c6 += p * vj[6];
            c7 += p * vj[7];
        }
        EO_AN(store)(at + i * rs, c0);
        EO_AN(store)(at + (i + 1) * rs, c1);
        EO_AN(store)(at + (i + 2) * rs, c2);
        EO_AN(store)(at + (i + 3) * rs, c3);
        EO_AN(store)(at + (i + 4) * rs, c4);
        EO_AN(store)(at + (i + 5) * rs, c5);
        EO_AN(store)(at + (i + 6) * rs, c6);
        EO_AN(store)(at + (i + 7) * rs, c7);
    }
    for (; i < hd; i++) {
        eo_vf c = EO_AN(load)(at + i * rs) * corr;
        for (j = a; j < b; j++)
            c += EO_AN(load)(sc + j * 8) * v[j * ks + i];
        EO_AN(store)(at + i * rs, c);
    }
}

EO_AT void EO_AN(eo_attention_block)(const float *qt, int64_t rows, int64_t hd,
                                             const float *k, const float *v, int64_t kv_stride,
                                             int64_t nkeys, const int32_t *lo, const int32_t *hi,
                                             float *m, float *l, float *acct, float *scores)
{
    int64_t r;
    for (r = 0; r < rows; r += 8)
        EO_AN(rows8)(qt + r, rows, hd, k, v, kv_stride, nkeys, lo + r, hi + r, m + r, l + r, acct + r,
                     scores, r == 0);
}
