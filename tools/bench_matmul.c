/*
 * bench_matmul.c - A/B microbenchmark of eo_q8_*_matmul between two builds of
 * the C kernels (e.g. the committed code and a working copy), interleaved in
 * one process so that machine noise hits both alike.
 *
 *   gcc -O2 -o /tmp/bench_matmul tools/bench_matmul.c -ldl
 *   /tmp/bench_matmul A.so B.so kind rows nb ntok reps [cold] [disable]
 *
 * A.so / B.so: shared objects built from csrc/*.c (gcc -O3 -fno-math-errno
 * -fno-strict-aliasing -fPIC -shared -Icsrc csrc/*.c).  kind: mxfp4, q4, q8.
 * cold: 1 = cycle through enough copies of the weights (>= 96 MB) that they
 * come from DRAM, as in a real model.  disable: eo_set_level_variant mask.
 * Prints the median G int-ops/s (2 * rows * K * ntok / time) of each library
 * and the largest difference between their outputs relative to max |out|.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <math.h>

typedef void (*mm_fn)(const void *wq, const void *ws, int64_t nrows, int64_t nb, const int8_t *xq,
                      const float *xd, int64_t ntok, float *out, int64_t out_stride);
typedef int (*setv_fn)(int level, int disable);

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static uint64_t rs = 88172645463325252ull;
static uint32_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs >> 16);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static mm_fn load(const char *so, const char *sym, int disable)
{
    void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "%s\n", dlerror());
        exit(1);
    }
    setv_fn sv = (setv_fn)dlsym(h, "eo_set_level_variant");
    if (sv(2, disable) != 0) {
        fprintf(stderr, "%s: no avx512\n", so);
        exit(1);
    }
    return (mm_fn)dlsym(h, sym);
}

int main(int argc, char **argv)
{
    if (argc < 8) {
        fprintf(stderr, "usage: %s A.so B.so kind rows nb ntok reps [cold] [disable]\n", argv[0]);
        return 2;
    }
    const char *kind = argv[3];
    int64_t rows = atoll(argv[4]), nb = atoll(argv[5]), ntok = atoll(argv[6]);
    int reps = atoi(argv[7]), cold = argc > 8 ? atoi(argv[8]) : 0, disable = argc > 9 ? atoi(argv[9]) : 0;
    const char *sym = !strcmp(kind, "mxfp4") ? "eo_q8_mxfp4w_matmul"
                    : !strcmp(kind, "q4")    ? "eo_q8_q4w_matmul"
                                             : "eo_q8_q8w_matmul";
    int64_t bpb = !strcmp(kind, "q8") ? 32 : 16, sb = !strcmp(kind, "mxfp4") ? 1 : 2;
    mm_fn f[2] = {load(argv[1], sym, disable), load(argv[2], sym, disable)};
    int64_t wbytes = rows * nb * bpb, sbytes = rows * nb * sb, i, t;
    int ncopies = cold ? (int)((96 << 20) / wbytes + 1) : 1;
    uint8_t *wq = malloc(wbytes * ncopies);
    uint8_t *ws = malloc(sbytes * ncopies);
    int8_t *xq = malloc(ntok * nb * 32);
    float *xd = malloc(ntok * nb * 4), *out[2];
    for (i = 0; i < wbytes * ncopies; i++)
        wq[i] = (uint8_t)rnd();
    for (i = 0; i < rows * nb * ncopies; i++) {
        if (sb == 1)
            ws[i] = (uint8_t)(118 + rnd() % 16);
        else
            ((uint16_t *)ws)[i] = (uint16_t)(0x1C00 + rnd() % 0x0800); /* ~2^-8 .. 2^-6 */
    }
    for (i = 0; i < ntok * nb * 32; i++)
        xq[i] = (int8_t)((int)(rnd() % 255) - 127);
    for (i = 0; i < ntok * nb; i++)
        xd[i] = 0.01f * (1 + rnd() % 100);
    out[0] = malloc(ntok * rows * 4);
    out[1] = malloc(ntok * rows * 4);
    double *tm[2] = {malloc(reps * sizeof(double)), malloc(reps * sizeof(double))};
    int copy = 0;
    for (int rep = -1; rep < reps; rep++) {
        for (int k = 0; k < 2; k++) {
            int which = (rep & 1) ? 1 - k : k; /* alternate who goes first */
            const uint8_t *w = wq + copy * wbytes, *s = ws + copy * sbytes;
            copy = (copy + 1) % ncopies;
            double t0 = now();
            f[which](w, s, rows, nb, xq, xd, ntok, out[which], rows);
            double dt = now() - t0;
            if (rep >= 0)
                tm[which][rep] = dt;
        }
        if (rep == -1 || rep == reps - 1) {
            /* outputs compared on the same weights */
            const uint8_t *w = wq, *s = ws;
            f[0](w, s, rows, nb, xq, xd, ntok, out[0], rows);
            f[1](w, s, rows, nb, xq, xd, ntok, out[1], rows);
        }
    }
    double maxabs = 0, maxdiff = 0;
    for (t = 0; t < ntok * rows; t++) {
        double a = fabs(out[0][t]), d = fabs((double)out[0][t] - out[1][t]);
        maxabs = a > maxabs ? a : maxabs;
        maxdiff = d > maxdiff ? d : maxdiff;
    }
    double ops = 2.0 * rows * nb * 32 * ntok;
    qsort(tm[0], reps, sizeof(double), cmp);
    qsort(tm[1], reps, sizeof(double), cmp);
    double a = ops / tm[0][reps / 2] * 1e-9, b = ops / tm[1][reps / 2] * 1e-9;
    printf("%-5s rows=%5lld nb=%4lld ntok=%4lld %s  A %7.1f  B %7.1f Gop/s  B/A %.2fx  (GB/s w: A %.1f B %.1f)  "
           "maxdiff/maxabs %.1e\n",
           kind, (long long)rows, (long long)nb, (long long)ntok, cold ? "cold" : "hot ", a, b, b / a,
           wbytes / tm[0][reps / 2] * 1e-9, wbytes / tm[1][reps / 2] * 1e-9, maxdiff / (maxabs + 1e-30));
    return 0;
}
