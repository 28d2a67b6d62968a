/* test_kernels.c: the CPU kernels (core/kernels.h) against direct
 * double-precision sums: convolutions of every kind the VAE uses (3x3
 * same, 3x3 stride 2 with right/bottom padding, 1x1), on both the Winograd
 * and the im2col path and at odd sizes, GroupNorm (+SiLU), attention and
 * upsampling. Prints the largest relative error per kernel. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "test.h"

static uint64_t rng = 88172645463325252ull;

static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static float *rand_buf(size_t n)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = frand();
    return p;
}

static double rel_err(const float *got, const double *want, size_t n)
{
    double md = 0, mw = 0;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs(got[i] - want[i]));
        mw = fmax(mw, fabs(want[i]));
    }
    return md / (mw > 0 ? mw : 1);
}

static void check_conv(TfKernels *k, TfConv2dShape s, const char *what)
{
    const int Ho = tf_conv2d_out_h(&s), Wo = tf_conv2d_out_w(&s);
    size_t nx = (size_t)s.B * s.C * s.H * s.W, nw = (size_t)s.K * s.C * s.R * s.R, ny = (size_t)s.B * s.K * Ho * Wo;
    float *x = rand_buf(nx), *w = rand_buf(nw), *b = rand_buf((size_t)s.K), *y = malloc(ny * sizeof *y);
    double *ref = calloc(ny, sizeof *ref);
    for (int n = 0; n < s.B; n++)
        for (int o = 0; o < s.K; o++)
            for (int i = 0; i < Ho; i++)
                for (int j = 0; j < Wo; j++) {
                    double acc = b[o];
                    for (int c = 0; c < s.C; c++)
                        for (int ky = 0; ky < s.R; ky++)
                            for (int kx = 0; kx < s.R; kx++) {
                                int iy = i * s.stride - s.pad_top + ky, ix = j * s.stride - s.pad_left + kx;
                                if (iy < 0 || iy >= s.H || ix < 0 || ix >= s.W)
                                    continue;
                                acc += (double)x[(((size_t)n * s.C + c) * s.H + iy) * s.W + ix] *
                                       w[(((size_t)o * s.C + c) * s.R + ky) * s.R + kx];
                            }
                    ref[(((size_t)n * s.K + o) * Ho + i) * Wo + j] = acc;
                }
    for (int wino = 0; wino < 2; wino++) {
        tf_kernels_set_winograd(k, wino);
        TfError err = {{0}};
        CHECKF(tf_conv2d(k, y, x, w, b, &s, &err) == 0, "%s", err.msg);
        double e = rel_err(y, ref, ny);
        fprintf(stderr, "conv %-34s %s path: max rel err %.2e\n", what, wino ? "default" : "im2col ", e);
        CHECKF(e < 1e-5, "conv %s (winograd %d): %.3e", what, wino, e);
    }
    free(x);
    free(w);
    free(b);
    free(y);
    free(ref);
}

static void test_conv(TfKernels *k)
{
    check_conv(k, (TfConv2dShape){2, 16, 9, 7, 12, 3, 1, 1, 1, 1, 1}, "3x3 same, odd 9x7");
    check_conv(k, (TfConv2dShape){1, 32, 16, 16, 24, 3, 1, 1, 1, 1, 1}, "3x3 same 16x16");
    check_conv(k, (TfConv2dShape){1, 3, 10, 12, 8, 3, 1, 1, 1, 1, 1}, "3x3 same, 3 channels");
    check_conv(k, (TfConv2dShape){2, 8, 12, 10, 8, 3, 2, 0, 0, 1, 1}, "3x3 stride 2, pad right/bottom");
    check_conv(k, (TfConv2dShape){1, 8, 11, 9, 4, 3, 2, 0, 0, 1, 1}, "3x3 stride 2, odd 11x9");
    check_conv(k, (TfConv2dShape){2, 20, 6, 5, 7, 1, 1, 0, 0, 0, 0}, "1x1");
    check_conv(k, (TfConv2dShape){1, 520, 4, 4, 9, 3, 1, 1, 1, 1, 1}, "3x3 many channels");
    check_conv(k, (TfConv2dShape){1, 64, 40, 256, 64, 3, 1, 1, 1, 1, 1}, "3x3 40x256 (chunked rows)");
    TfError err = {{0}};
    TfConv2dShape bad = {1, 4, 2, 2, 4, 5, 1, 0, 0, 0, 0};
    CHECK(tf_conv2d(k, NULL, NULL, NULL, NULL, &bad, &err) == -1);
}

static void test_group_norm(TfKernels *k)
{
    const int B = 2, C = 12, G = 3;
    const size_t HW = 50, n = (size_t)B * C * HW;
    float *x = rand_buf(n), *g = rand_buf(C), *bb = rand_buf(C), *y = malloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] * 3.0f + 100.0f; /* a large offset: needs careful statistics */
    double *ref = malloc(n * sizeof *ref);
    for (int silu = 0; silu < 2; silu++) {
        for (int b = 0; b < B; b++)
            for (int gi = 0; gi < G; gi++) {
                size_t off = ((size_t)b * C + (size_t)gi * (C / G)) * HW, m = (size_t)(C / G) * HW;
                double mean = 0, var = 0;
                for (size_t i = 0; i < m; i++)
                    mean += x[off + i];
                mean /= (double)m;
                for (size_t i = 0; i < m; i++)
                    var += (x[off + i] - mean) * (x[off + i] - mean);
                var /= (double)m;
                for (size_t i = 0; i < m; i++) {
                    int c = gi * (C / G) + (int)(i / HW);
                    double v = (x[off + i] - mean) / sqrt(var + 1e-6) * g[c] + bb[c];
                    ref[off + i] = silu ? v / (1 + exp(-v)) : v;
                }
            }
        CHECK(tf_group_norm(k, y, NULL, NULL, x, g, bb, B, C, HW, G, 1e-6f, silu, NULL) == 0);
        double e = rel_err(y, ref, n);
        fprintf(stderr, "group_norm%s: max rel err %.2e\n", silu ? "+silu" : "     ", e);
        CHECK(e < 1e-5);
    }
    free(x);
    free(g);
    free(bb);
    free(y);
    free(ref);
}

static void check_attention(TfKernels *k, int B, int C, int T, float scale, const char *what)
{
    const size_t n = (size_t)B * C * T;
    float *q = rand_buf(n), *kk = rand_buf(n), *v = rand_buf(n), *y = malloc(n * sizeof *y);
    double *ref = calloc(n, sizeof *ref), *s = malloc((size_t)T * sizeof *s);
    for (int b = 0; b < B; b++) {
        const size_t o = (size_t)b * C * T;
        for (int i = 0; i < T; i++) {
            double mx = -1e300, sum = 0;
            for (int j = 0; j < T; j++) {
                double d = 0;
                for (int c = 0; c < C; c++)
                    d += (double)q[o + (size_t)c * T + i] * kk[o + (size_t)c * T + j];
                s[j] = d * scale;
                mx = fmax(mx, s[j]);
            }
            for (int j = 0; j < T; j++)
                sum += (s[j] = exp(s[j] - mx));
            for (int c = 0; c < C; c++) {
                double acc = 0;
                for (int j = 0; j < T; j++)
                    acc += s[j] / sum * v[o + (size_t)c * T + j];
                ref[o + (size_t)c * T + i] = acc;
            }
        }
    }
    TfError err = {{0}};
    CHECK(tf_attention(k, y, q, kk, v, B, C, T, scale, &err) == 0);
    double e = rel_err(y, ref, n);
    fprintf(stderr, "attention %-28s: max rel err %.2e\n", what, e);
    CHECKF(e < 1e-5, "attention %s: %.3e", what, e);
    free(q);
    free(kk);
    free(v);
    free(y);
    free(ref);
    free(s);
}

static void test_attention_misc(TfKernels *k)
{
    check_attention(k, 2, 8, 37, 2.8f, "sharp (max subtraction)");
    check_attention(k, 1, 4, 4200, 0.5f, "T=4200 (query row blocks)");

    /* Upsampling, add, scale/shift, silu: exact or nearly. */
    float x[6] = {1, 2, 3, 4, 5, 6}, up[24];
    CHECK(tf_upsample_nearest2x(k, up, x, 1, 1, 2, 3, NULL) == 0);
    static const float want[24] = {1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 4, 4, 5, 5, 6, 6};
    CHECK(!memcmp(up, want, sizeof want));
    float a[3] = {1, -2, 0.5f}, b2[3] = {3, 4, -1}, r[3];
    CHECK(tf_add(k, r, a, b2, 3, NULL) == 0);
    CHECK(r[0] == 4 && r[1] == 2 && r[2] == -0.5f);
    CHECK(tf_scale_shift(k, r, a, 2.0f, 1.0f, 3, NULL) == 0);
    CHECK(r[0] == 3 && r[1] == -3 && r[2] == 2);
    CHECK(tf_silu(k, r, a, 3, NULL) == 0);
    CHECK(fabsf(r[0] - 0.7310586f) < 1e-6f && fabsf(r[1] + 0.2384058f) < 1e-6f);
}

int main(void)
{
    TfError err = {{0}};
    for (int threads = 1; threads <= 2; threads++) {
        TfKernels *k = tf_kernels_new(TF_BACKEND_CPU, threads, &err);
        REQUIRE(k);
        CHECK(!strcmp(tf_kernels_backend_name(k), "cpu") && tf_kernels_threads(k) == threads);
        test_conv(k);
        test_group_norm(k);
        test_attention_misc(k);
        tf_kernels_free(k);
    }
    return test_main_end("test_kernels");
}
