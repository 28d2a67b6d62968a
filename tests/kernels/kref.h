/* kref.h: what the kernel tests share: random inputs, error measures,
 * contexts on several thread counts (results must match bit for bit), and
 * a central finite-difference gradient of a double-precision function.
 * Header-only, static: each test binary includes it once. */
#ifndef TRANSFUSE_TESTS_KREF_H
#define TRANSFUSE_TESTS_KREF_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "test.h"

static uint64_t kref_rng = 88172645463325252ull;

/* Uniform in [-1, 1). */
static inline float frand(void)
{
    kref_rng ^= kref_rng << 13;
    kref_rng ^= kref_rng >> 7;
    kref_rng ^= kref_rng << 17;
    return (float)((kref_rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

/* An integer in [0, n). */
static inline int irand(int n)
{
    return (int)((frand() * 0.5f + 0.5f) * n) % n;
}

static inline float *rand_buf(size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    REQUIRE(p);
    for (size_t i = 0; i < n; i++)
        p[i] = frand();
    return p;
}

static inline float *zeros(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof *p);
    REQUIRE(p);
    return p;
}

static inline double *dzeros(size_t n)
{
    double *p = calloc(n ? n : 1, sizeof *p);
    REQUIRE(p);
    return p;
}

static inline double *to_double(const float *x, size_t n)
{
    double *d = dzeros(n);
    for (size_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

static inline float *copy_buf(const float *x, size_t n)
{
    float *p = malloc((n ? n : 1) * sizeof *p);
    REQUIRE(p);
    memcpy(p, x, n * sizeof *p);
    return p;
}

/* Largest absolute difference over the largest reference magnitude. */
static inline double rel_err(const float *got, const double *want, size_t n)
{
    double md = 0, mw = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(got[i] - want[i]);
        md = d > md || isnan(d) ? d : md;
        mw = fmax(mw, fabs(want[i]));
    }
    return md / (mw > 0 ? mw : 1);
}

/* Checks and prints one comparison against a double reference. */
#define CHECK_REL(what, got, want, n, tol)                                      \
    do {                                                                        \
        double e_ = rel_err((got), (want), (n));                                \
        fprintf(stderr, "  %-52s max rel err %.2e\n", (what), e_);              \
        CHECKF(e_ < (tol), "%s: %.3e >= %.1e", (what), e_, (double)(tol));      \
    } while (0)

/* Contexts on 1, 2 and 3 threads: every kernel runs on all three and the
 * outputs must be identical to the bit (3 splits work unevenly). */
#define KREF_CONTEXTS 3
static TfKernels *kref_k[KREF_CONTEXTS];

static inline void kref_open(void)
{
    for (int i = 0; i < KREF_CONTEXTS; i++) {
        TfError err = {{0}};
        kref_k[i] = tf_kernels_new(TF_BACKEND_CPU, i + 1, &err);
        if (!kref_k[i]) {
            fprintf(stderr, "cannot create kernels: %s\n", err.msg);
            exit(1);
        }
    }
}

static inline void kref_close(void)
{
    for (int i = 0; i < KREF_CONTEXTS; i++)
        tf_kernels_free(kref_k[i]);
}

/* 1 when a and b hold the same bits. */
static inline int same_bits(const void *a, const void *b, size_t bytes)
{
    return !memcmp(a, b, bytes);
}

/* Checks that the buffer `outs[i]` (n floats each, from context i) agrees
 * bit for bit with context 0's. */
static inline void check_threads(const char *what, float *const outs[KREF_CONTEXTS], size_t n)
{
    for (int i = 1; i < KREF_CONTEXTS; i++)
        CHECKF(same_bits(outs[0], outs[i], n * sizeof(float)), "%s: %d threads differ from 1 thread", what, i + 1);
}

/* g = d f / d x by central differences (step h scaled to |x|), x (n)
 * changed in place and restored. f reads x through ctx. */
typedef double (*KrefFn)(void *ctx);
static inline void fd_grad(double *x, size_t n, KrefFn f, void *ctx, double *g)
{
    for (size_t i = 0; i < n; i++) {
        const double save = x[i], h = 1e-6 * fmax(1.0, fabs(save));
        x[i] = save + h;
        double lp = f(ctx);
        x[i] = save - h;
        double lm = f(ctx);
        x[i] = save;
        g[i] = (lp - lm) / (2 * h);
    }
}

/* The bf16 value of f as a double (the reference for bf16 weights). */
static inline double bf16_value(float f)
{
    return tf_bf16_to_f32(tf_f32_to_bf16(f));
}

#endif
