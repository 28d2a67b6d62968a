/* kernels_bench.c: the trainer's kernels against the machine's matrix peak.
 *
 * Measures OpenBLAS's sgemm peak (2048^3, tf_kernels_sgemm_peak) and then,
 * in the same process with the same threads, the GFLOP/s of: linear layers
 * (forward, backward with and without weight gradients, fp32 and bf16
 * weights) at transformer shapes; masked GQA attention forward and
 * backward under no mask, a causal mask and a Transfusion layout (packed
 * documents with image spans), counting only the visible query-key pairs;
 * the LM-head cross-entropy over 128,256 words; a U-Net 3x3 convolution
 * forward and backward. Each figure is the best of --reps runs after a
 * warm-up, printed with its share of the peak: one line per case, then a
 * Markdown table for docs/PERFORMANCE.md. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

static int reps = 3;
static double peak;

typedef struct Row {
    char name[96];
    double gflop, seconds;
} Row;
static Row rows[64];
static int nrows;

/* The 1-minute load average (the figures mean little on a busy machine),
 * or -1. */
static double loadavg(void)
{
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1)
            l = -1;
        fclose(f);
    }
    return l;
}

static float *rnd(size_t n)
{
    float *p = malloc(n * sizeof *p);
    if (!p) {
        fprintf(stderr, "kernels_bench: out of memory\n");
        exit(1);
    }
    uint64_t s = n * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (float)((s >> 40) & 0xffff) / 32767.5f - 1.0f;
    }
    return p;
}

/* Runs `body` reps+1 times (the first warms up), keeps the best time. */
#define TIME(label, flops, body)                                                                   \
    do {                                                                                           \
        double best_ = 1e30;                                                                       \
        for (int r_ = 0; r_ <= reps; r_++) {                                                       \
            double t_ = tf_now();                                                                  \
            if (body) {                                                                            \
                fprintf(stderr, "kernels_bench: %s: %s\n", (label), err.msg);                      \
                exit(1);                                                                           \
            }                                                                                      \
            t_ = tf_now() - t_;                                                                    \
            if (r_ && t_ < best_)                                                                  \
                best_ = t_;                                                                        \
        }                                                                                          \
        Row *row_ = &rows[nrows++];                                                                \
        snprintf(row_->name, sizeof row_->name, "%s", (label));                                    \
        row_->gflop = (flops) / 1e9;                                                               \
        row_->seconds = best_;                                                                     \
        printf("{\"case\": \"%s\", \"gflop\": %.3f, \"seconds\": %.4f, \"gflops\": %.1f, \"of_peak\": %.2f}\n", \
               row_->name, row_->gflop, best_, row_->gflop / best_, row_->gflop / best_ / peak);    \
        fflush(stdout);                                                                            \
    } while (0)

static void bench_linear(TfKernels *k, int N, int in, int out)
{
    TfError err = {{0}};
    float *x = rnd((size_t)N * in), *w = rnd((size_t)out * in), *y = rnd((size_t)N * out);
    float *dx = rnd((size_t)N * in), *dw = rnd((size_t)out * in);
    uint16_t *wh = malloc((size_t)out * in * sizeof *wh);
    for (size_t i = 0; i < (size_t)out * in; i++)
        wh[i] = tf_f32_to_bf16(w[i]);
    const double f = 2.0 * N * in * out;
    char l[96];
    snprintf(l, sizeof l, "linear fwd N%d %d->%d", N, in, out);
    TIME(l, f, tf_linear(k, y, x, tf_buf_f32(w), NULL, N, in, out, &err));
    snprintf(l, sizeof l, "linear fwd N%d %d->%d bf16 w", N, in, out);
    TIME(l, f, tf_linear(k, y, x, tf_buf_bf16(wh), NULL, N, in, out, &err));
    snprintf(l, sizeof l, "linear bwd dx+dw N%d %d->%d", N, in, out);
    TIME(l, 2 * f, tf_linear_backward(k, dx, dw, NULL, y, x, tf_buf_f32(w), N, in, out, 0, &err));
    snprintf(l, sizeof l, "linear bwd dx only (frozen) bf16 N%d %d->%d", N, in, out);
    TIME(l, f, tf_linear_backward(k, dx, NULL, NULL, y, NULL, tf_buf_bf16(wh), N, in, out, 0, &err));
    free(x);
    free(w);
    free(y);
    free(dx);
    free(dw);
    free(wh);
}

/* Visible pairs of a mask: the useful work of attention. */
static double visible_pairs(const int32_t *lo, const int32_t *hi, int T)
{
    if (!lo)
        return (double)T * T;
    double s = 0;
    for (int i = 0; i < T; i++)
        s += hi[i] - lo[i];
    return s;
}

static void bench_attention(TfKernels *k, int T, int NH, int NKV, int HD)
{
    TfError err = {{0}};
    const size_t nq = (size_t)T * NH * HD, nk = (size_t)T * NKV * HD;
    float *q = rnd(nq), *kk = rnd(nk), *v = rnd(nk), *y = rnd(nq), *dy = rnd(nq), *lse = rnd((size_t)NH * T);
    float *dq = rnd(nq), *dk = rnd(nk), *dv = rnd(nk);
    int32_t *lo = malloc((size_t)T * sizeof *lo), *hi = malloc((size_t)T * sizeof *hi);
    TfAttnShape s = {1, T, NH, NKV, HD, 1.0f / sqrtf((float)HD)};
    for (int mode = 0; mode < 3; mode++) {
        const char *name = mode == 0 ? "full" : mode == 1 ? "causal" : "transfusion";
        for (int i = 0; i < T; i++) {
            lo[i] = 0;
            hi[i] = i + 1;
        }
        if (mode == 2) { /* documents of 512: caption 64, image 256, text 192 */
            for (int i = 0; i < T; i++) {
                int d = i / 512 * 512, o = i % 512;
                lo[i] = d;
                hi[i] = o >= 64 && o < 320 ? (d + 320 < T ? d + 320 : T) : i + 1;
            }
        }
        const int32_t *ml = mode ? lo : NULL, *mh = mode ? hi : NULL;
        const double f = 4.0 * visible_pairs(ml, mh, T) * HD * NH;
        char l[96];
        snprintf(l, sizeof l, "attention fwd %s T%d NH%d NKV%d HD%d", name, T, NH, NKV, HD);
        TIME(l, f, tf_attention_gqa(k, y, lse, q, kk, v, ml, mh, &s, &err));
        snprintf(l, sizeof l, "attention bwd %s T%d NH%d NKV%d HD%d", name, T, NH, NKV, HD);
        TIME(l, 2.5 * f, tf_attention_gqa_backward(k, dq, dk, dv, dy, y, lse, q, kk, v, ml, mh, &s, &err));
    }
    free(q);
    free(kk);
    free(v);
    free(y);
    free(dy);
    free(lse);
    free(dq);
    free(dk);
    free(dv);
    free(lo);
    free(hi);
}

static void bench_cross_entropy(TfKernels *k, int N, int D, int V)
{
    TfError err = {{0}};
    float *h = rnd((size_t)N * D), *w = rnd((size_t)V * D), *dh = rnd((size_t)N * D), *loss = rnd(N);
    uint16_t *wh = malloc((size_t)V * D * sizeof *wh);
    for (size_t i = 0; i < (size_t)V * D; i++)
        wh[i] = tf_f32_to_bf16(w[i] * 0.1f);
    int32_t *tg = malloc((size_t)N * sizeof *tg);
    for (int n = 0; n < N; n++)
        tg[n] = (n * 7919) % V;
    double mean;
    char l[96];
    snprintf(l, sizeof l, "cross-entropy loss+dh N%d D%d V%d bf16 head", N, D, V);
    TIME(l, 4.0 * N * D * V,
         tf_cross_entropy_lm_head(k, loss, &mean, dh, NULL, NULL, 0, h, tf_buf_bf16(wh), tg, N, D, V, 1.0f / N, &err));
    snprintf(l, sizeof l, "cross-entropy loss only N%d D%d V%d bf16 head", N, D, V);
    TIME(l, 2.0 * N * D * V,
         tf_cross_entropy_lm_head(k, loss, &mean, NULL, NULL, NULL, 0, h, tf_buf_bf16(wh), tg, N, D, V, 1.0f, &err));
    free(h);
    free(w);
    free(dh);
    free(loss);
    free(wh);
    free(tg);
}

static void bench_conv(TfKernels *k, int B, int C, int HW)
{
    TfError err = {{0}};
    TfConv2dShape s = {B, C, HW, HW, C, 3, 1, 1, 1, 1, 1};
    const size_t n = (size_t)B * C * HW * HW;
    float *x = rnd(n), *y = rnd(n), *w = rnd((size_t)C * C * 9), *dx = rnd(n), *dw = rnd((size_t)C * C * 9);
    const double f = 2.0 * B * C * C * 9.0 * HW * HW;
    char l[96];
    snprintf(l, sizeof l, "conv3x3 fwd B%d C%d %dx%d", B, C, HW, HW);
    TIME(l, f, tf_conv2d(k, y, x, w, NULL, &s, &err));
    snprintf(l, sizeof l, "conv3x3 bwd dx+dw B%d C%d %dx%d", B, C, HW, HW);
    TIME(l, 2 * f, tf_conv2d_backward(k, dx, dw, NULL, y, x, w, &s, &err));
    free(x);
    free(y);
    free(w);
    free(dx);
    free(dw);
}

int main(int argc, char **argv)
{
    int threads = 2, quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--quick"))
            quick = 1;
        else {
            fprintf(stderr, "usage: kernels_bench [--threads 2] [--reps 3] [--quick]\n");
            return 2;
        }
    }
    if (threads < 1 || reps < 1) {
        fprintf(stderr, "kernels_bench: --threads and --reps must be positive\n");
        return 2;
    }
    TfError err = {{0}};
    TfKernels *k = tf_kernels_new(TF_BACKEND_CPU, threads, &err);
    if (!k) {
        fprintf(stderr, "kernels_bench: %s\n", err.msg);
        return 1;
    }
    peak = tf_kernels_sgemm_peak(k, 2048, 3);
    const double load0 = loadavg();
    printf("{\"case\": \"sgemm peak 2048^3\", \"gflops\": %.1f, \"threads\": %d, \"loadavg\": %.2f}\n", peak, threads,
           load0);
    if (quick) {
        bench_linear(k, 256, 128, 256);
        bench_attention(k, 256, 4, 2, 32);
        bench_cross_entropy(k, 16, 64, 128256);
        bench_conv(k, 1, 16, 16);
    } else {
        bench_linear(k, 2048, 512, 512);   /* ~50M config: attention projections */
        bench_linear(k, 2048, 512, 2048);  /* ~50M config: FFN up */
        bench_linear(k, 512, 2048, 8192);  /* Llama-3.2-1B FFN, 512 rows */
        bench_attention(k, 2048, 8, 2, 64);
        bench_cross_entropy(k, 256, 512, 128256);
        bench_conv(k, 4, 128, 32);
    }
    printf("\n%d threads, load average %.2f before and %.2f after\n", threads, load0, loadavg());
    printf("\n| case | GFLOP | best s | GFLOP/s | of sgemm peak (%.0f GFLOP/s) |\n|---|---|---|---|---|\n", peak);
    for (int i = 0; i < nrows; i++)
        printf("| %s | %.2f | %.4f | %.1f | %.0f%% |\n", rows[i].name, rows[i].gflop, rows[i].seconds,
               rows[i].gflop / rows[i].seconds, 100.0 * rows[i].gflop / rows[i].seconds / peak);
    tf_kernels_free(k);
    return 0;
}
