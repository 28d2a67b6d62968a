/* kernels_cpu.c: the fp32 CPU build of kernels.h, the reference every other
 * build is tested against.
 *
 * Matrix work goes to OpenBLAS sgemm, run single-threaded on each of our
 * OpenMP threads (column slices, or independent GEMMs side by side), so one
 * thread pool does everything and no two pools fight over the cores. Convolutions: 1x1 stride 1 is a plain
 * GEMM; 3x3 stride 1 uses Winograd F(2x2,3x3) (2.25x fewer multiplies; its
 * transforms use only 0, +-1 and +-1/2, so fp32 accuracy stays close to the
 * direct sum); every other convolution lowers to im2col + GEMM, in chunks
 * of output rows so the column buffer stays a few MiB. */
#include "kernels.h"

#include <cblas.h>
#include <dlfcn.h>
#include <omp.h>
#include <pthread.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct TfKernels {
    int threads;
    int winograd;
    float *scratch; /* grows to the largest request, reused */
    size_t scratch_n;
};

/* OpenBLAS is loaded when the first kernels are created, not at program
 * start: Debian's build starts a pool of threads when it loads, which spin
 * in sched_yield for a while (about 0.1 s of CPU per process and core, a
 * third of a `shards verify` run by perf), and its dynamic linking costs
 * about 10 ms; commands that do no matrix work should pay neither. Loading
 * late also lets the environment be set first:
 *   - OPENBLAS_NUM_THREADS=1: the kernels call sgemm single-threaded from
 *     their own OpenMP threads, so OpenBLAS's pool would only spin;
 *   - OPENBLAS_CORETYPE=SkylakeX on CPUs with AVX-512 (F, BW, VL, DQ):
 *     Debian 12's OpenBLAS (0.3.21) does not recognise AVX-512 on AMD Zen 4
 *     and falls back to its Haswell kernels, 1.6-2x slower there
 *     (docs/PERFORMANCE.md, VAE).
 * Settings already in the environment are kept. setenv is not thread-safe:
 * create the first kernels before starting threads that read the
 * environment. */
static struct {
    void *lib;
    __typeof__(&cblas_sgemm) sgemm;
    __typeof__(&openblas_set_num_threads) set_num_threads;
    __typeof__(&openblas_get_corename) get_corename;
    char error[512];
} blas;

static void blas_load(void)
{
    setenv("OPENBLAS_NUM_THREADS", "1", 0);
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (!getenv("OPENBLAS_CORETYPE") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        setenv("OPENBLAS_CORETYPE", "SkylakeX", 0);
#endif
    static const char *const names[] = {"libopenblas.so.0", "libopenblas.so"};
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !blas.lib; i++)
        blas.lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!blas.lib) {
        snprintf(blas.error, sizeof blas.error, "cannot load OpenBLAS (libopenblas.so.0: %s); install libopenblas0",
                 dlerror());
        return;
    }
    *(void **)&blas.sgemm = dlsym(blas.lib, "cblas_sgemm");
    *(void **)&blas.set_num_threads = dlsym(blas.lib, "openblas_set_num_threads");
    *(void **)&blas.get_corename = dlsym(blas.lib, "openblas_get_corename");
    if (!blas.sgemm || !blas.set_num_threads || !blas.get_corename) {
        snprintf(blas.error, sizeof blas.error, "the loaded OpenBLAS lacks cblas_sgemm or openblas_* functions");
        blas.sgemm = NULL;
        return;
    }
    tf_log(TF_LOG_DEBUG, "kernels", "OpenBLAS %s kernels", blas.get_corename());
}

int tf_backend_parse(const char *name, TfBackend *out, TfError *err)
{
    if (!strcmp(name, "cpu"))
        *out = TF_BACKEND_CPU;
    else if (!strcmp(name, "cuda"))
        *out = TF_BACKEND_CUDA;
    else
        return tf_fail(err, "unknown device '%s' (cpu or cuda)", name);
    return 0;
}

const char *tf_backend_name(TfBackend backend)
{
    return backend == TF_BACKEND_CUDA ? "cuda" : "cpu";
}

TfBackend tf_kernels_backend(const TfKernels *k)
{
    (void)k;
    return TF_BACKEND_CPU;
}

const char *tf_kernels_backend_name(const TfKernels *k)
{
    return tf_backend_name(tf_kernels_backend(k));
}

int tf_kernels_sync(TfKernels *k, TfError *err)
{
    (void)k;
    (void)err;
    return 0;
}

TfKernels *tf_kernels_new(TfBackend backend, int threads, TfError *err)
{
    if (backend != TF_BACKEND_CPU) {
        tf_fail(err, "the %s backend is not built into this binary", tf_backend_name(backend));
        return NULL;
    }
    TfKernels *k = calloc(1, sizeof *k);
    if (!k) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    k->threads = threads;
    k->winograd = 1;
    static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
    pthread_once(&blas_once, blas_load);
    if (!blas.sgemm) {
        tf_fail(err, "%s", blas.error);
        free(k);
        return NULL;
    }
    blas.set_num_threads(1);
    return k;
}

void tf_kernels_free(TfKernels *k)
{
    if (!k)
        return;
    free(k->scratch);
    free(k);
}

int tf_kernels_threads(const TfKernels *k)
{
    return k->threads;
}

void tf_kernels_set_winograd(TfKernels *k, int on)
{
    k->winograd = on;
}

float *tf_kernels_alloc(TfKernels *k, size_t n, TfError *err)
{
    (void)k;
    if (n > SIZE_MAX / sizeof(float) - 64) {
        tf_fail(err, "buffer of %zu floats is too large", n);
        return NULL;
    }
    size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes ? bytes : 64);
    if (!p)
        tf_fail(err, "out of memory for %zu floats", n);
    return p;
}

void tf_kernels_release(TfKernels *k, void *buf)
{
    (void)k;
    free(buf);
}

int tf_kernels_upload(TfKernels *k, float *dst, const float *host, size_t n, TfError *err)
{
    (void)k;
    (void)err;
    memcpy(dst, host, n * sizeof *dst);
    return 0;
}

int tf_kernels_download(TfKernels *k, float *host, const float *src, size_t n, TfError *err)
{
    (void)k;
    (void)err;
    memcpy(host, src, n * sizeof *host);
    return 0;
}

static float *scratch_get(TfKernels *k, size_t n, TfError *err)
{
    if (n > k->scratch_n) {
        free(k->scratch);
        k->scratch = NULL;
        k->scratch_n = 0;
        k->scratch = tf_kernels_alloc(k, n, err);
        if (!k->scratch)
            return NULL;
        k->scratch_n = n;
    }
    return k->scratch;
}

/* Row-major C(m,n) = A(m,kd) B(kd,n) (+ C when beta is 1) in the calling
 * thread: OpenBLAS runs single-threaded here (set in tf_kernels_new). */
static void gemm1(int transa, int transb, int m, int n, int kd, const float *a, int lda, const float *b, int ldb,
                  float beta, float *c, int ldc)
{
    blas.sgemm(CblasRowMajor, transa ? CblasTrans : CblasNoTrans, transb ? CblasTrans : CblasNoTrans, m, n, kd,
                1.0f, a, lda, b, ldb, beta, c, ldc);
}

/* The same on all threads, each taking a slice of C's columns. One pool
 * (OpenMP) does all the work: OpenBLAS's own threads spinning beside
 * OpenMP's cost several times the run time on a small shared machine. */
static void gemm(TfKernels *k, int transa, int transb, int m, int n, int kd, const float *a, int lda, const float *b,
                 int ldb, float beta, float *c, int ldc)
{
    const int nt = k->threads;
    if (nt == 1 || n < 64 * nt) {
        gemm1(transa, transb, m, n, kd, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    const int chunk = ((n + nt - 1) / nt + 15) & ~15;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int t = 0; t < nt; t++) {
        int j0 = t * chunk;
        if (j0 >= n)
            continue;
        int nj = n - j0 < chunk ? n - j0 : chunk;
        const float *bj = transb ? b + (size_t)j0 * ldb : b + j0;
        gemm1(transa, transb, m, nj, kd, a, lda, bj, ldb, beta, c + j0, ldc);
    }
}

/* ---- convolution ---- */

int tf_conv2d_out_h(const TfConv2dShape *s)
{
    return (s->H + s->pad_top + s->pad_bottom - s->R) / s->stride + 1;
}

int tf_conv2d_out_w(const TfConv2dShape *s)
{
    return (s->W + s->pad_left + s->pad_right - s->R) / s->stride + 1;
}

/* Fills y (K, n) rows with the bias, so GEMMs accumulate onto it. */
static void fill_bias(TfKernels *k, float *y, const float *bias, int K, size_t n, size_t ld)
{
#pragma omp parallel for num_threads(k->threads) schedule(static)
    for (int o = 0; o < K; o++) {
        float b = bias ? bias[o] : 0.0f;
        float *row = y + (size_t)o * ld;
        for (size_t i = 0; i < n; i++)
            row[i] = b;
    }
}

/* col (C*R*R, rows*Wo) for output rows [r0, r0+rows) of one image x (C,H,W). */
static void im2col(TfKernels *k, float *col, const float *x, const TfConv2dShape *s, int Wo, int r0, int rows)
{
    const int R = s->R, st = s->stride, H = s->H, W = s->W;
    const int nrows = s->C * R * R;
    const size_t n = (size_t)rows * (size_t)Wo;
#pragma omp parallel for num_threads(k->threads) schedule(static)
    for (int q = 0; q < nrows; q++) {
        int c = q / (R * R), ky = (q / R) % R, kx = q % R;
        const float *xc = x + (size_t)c * H * W;
        float *dst = col + (size_t)q * n;
        for (int oy = r0; oy < r0 + rows; oy++) {
            int iy = oy * st - s->pad_top + ky;
            float *d = dst + (size_t)(oy - r0) * Wo;
            if (iy < 0 || iy >= H) {
                memset(d, 0, (size_t)Wo * sizeof *d);
                continue;
            }
            const float *xr = xc + (size_t)iy * W;
            for (int ox = 0; ox < Wo; ox++) {
                int ix = ox * st - s->pad_left + kx;
                d[ox] = (ix >= 0 && ix < W) ? xr[ix] : 0.0f;
            }
        }
    }
}

static int conv_im2col(TfKernels *k, float *y, const float *x, const float *w, const float *bias,
                       const TfConv2dShape *s, TfError *err)
{
    const int Ho = tf_conv2d_out_h(s), Wo = tf_conv2d_out_w(s);
    const size_t HWo = (size_t)Ho * Wo, HW = (size_t)s->H * s->W;
    const int kd = s->C * s->R * s->R;
    const int direct = s->R == 1 && s->stride == 1 && !s->pad_top && !s->pad_left && !s->pad_bottom && !s->pad_right;
    int rows = Ho;
    float *col = NULL;
    if (!direct) {
        size_t budget = (size_t)4 << 20; /* floats per column chunk */
        size_t per_row = (size_t)kd * Wo;
        rows = (int)(budget / per_row);
        rows = rows < 1 ? 1 : rows > Ho ? Ho : rows;
        if (!(col = scratch_get(k, per_row * (size_t)rows, err)))
            return -1;
    }
    for (int b = 0; b < s->B; b++) {
        const float *xb = x + (size_t)b * s->C * HW;
        float *yb = y + (size_t)b * s->K * HWo;
        fill_bias(k, yb, bias, s->K, HWo, HWo);
        if (direct) {
            gemm(k, 0, 0, s->K, (int)HWo, kd, w, kd, xb, (int)HWo, 1.0f, yb, (int)HWo);
            continue;
        }
        for (int r0 = 0; r0 < Ho; r0 += rows) {
            int nr = Ho - r0 < rows ? Ho - r0 : rows;
            int n = nr * Wo;
            im2col(k, col, xb, s, Wo, r0, nr);
            gemm(k, 0, 0, s->K, n, kd, w, kd, col, n, 1.0f, yb + (size_t)r0 * Wo, (int)HWo);
        }
    }
    return 0;
}

/* Winograd F(2x2,3x3): each 4x4 input tile d gives a 2x2 output tile
 * A^T [(G g G^T) . (B^T d B)] A. The 16 element-wise products over channels
 * become 16 GEMMs (K,C) x (C,P) over a chunk of P tiles. */
static void wino_filter(TfKernels *k, float *u, const float *w, int K, int C)
{
    /* u (16, K, C) = G g G^T for each (K,C) filter g (3,3). */
    const size_t KC = (size_t)K * C;
#pragma omp parallel for num_threads(k->threads) schedule(static)
    for (size_t kc = 0; kc < KC; kc++) {
        const float *g = w + kc * 9;
        float t[4][3];
        for (int j = 0; j < 3; j++) {
            t[0][j] = g[j];
            t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
            t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
            t[3][j] = g[6 + j];
        }
        for (int i = 0; i < 4; i++) {
            float r[4] = {t[i][0], 0.5f * (t[i][0] + t[i][1] + t[i][2]), 0.5f * (t[i][0] - t[i][1] + t[i][2]),
                          t[i][2]};
            for (int j = 0; j < 4; j++)
                u[(size_t)(i * 4 + j) * KC + kc] = r[j];
        }
    }
}

static int conv_winograd(TfKernels *k, float *y, const float *x, const float *w, const float *bias,
                         const TfConv2dShape *s, TfError *err)
{
    const int C = s->C, K = s->K, H = s->H, W = s->W;
    const int th = (H + 1) / 2, tw = (W + 1) / 2;
    const size_t HW = (size_t)H * W;
    const int wide = C > K ? C : K;
    /* Tiles per chunk: whole tile rows, about 2M floats of V or M. */
    int trows = (int)(((size_t)2 << 20) / ((size_t)16 * wide * tw));
    trows = trows < 1 ? 1 : trows > th ? th : trows;
    const size_t pmax = (size_t)trows * tw;
    const size_t nu = (size_t)16 * K * C, nv = (size_t)16 * C * pmax, nm = (size_t)16 * K * pmax;
    const size_t per_thread = (size_t)8 * (2 * (size_t)tw + 2); /* row buffers of the transforms */
    float *u = scratch_get(k, nu + nv + nm + per_thread * (size_t)k->threads, err);
    if (!u)
        return -1;
    float *v = u + nu, *m = v + nv, *rows = m + nm;
    wino_filter(k, u, w, K, C);
    for (int b = 0; b < s->B; b++) {
        const float *xb = x + (size_t)b * C * HW;
        float *yb = y + (size_t)b * K * HW;
        for (int ty0 = 0; ty0 < th; ty0 += trows) {
            const int nty = th - ty0 < trows ? th - ty0 : trows;
            const size_t P = (size_t)nty * tw;
            /* Input transform: v (16, C, P). Per (channel, tile row): the
             * four input rows, zero-padded, combine row-wise (B^T d) over
             * the whole width, then column-wise per tile (. B), writing 16
             * contiguous streams over the tiles. */
#pragma omp parallel num_threads(k->threads)
            {
                const int wp = 2 * tw + 2;
                float *buf = rows + per_thread * (size_t)omp_get_thread_num();
#pragma omp for schedule(static) collapse(2)
                for (int c = 0; c < C; c++) {
                    for (int ty = 0; ty < nty; ty++) {
                        const float *xc = xb + (size_t)c * HW;
                        const int y0 = (ty0 + ty) * 2 - 1;
                        float *d[4], *t[4];
                        for (int i = 0; i < 4; i++) {
                            d[i] = buf + (size_t)i * wp;
                            t[i] = buf + (size_t)(4 + i) * wp;
                            int iy = y0 + i;
                            memset(d[i], 0, (size_t)wp * sizeof *d[i]);
                            if (iy >= 0 && iy < H)
                                memcpy(d[i] + 1, xc + (size_t)iy * W, (size_t)W * sizeof *d[i]);
                        }
                        for (int j = 0; j < wp; j++) {
                            t[0][j] = d[0][j] - d[2][j];
                            t[1][j] = d[1][j] + d[2][j];
                            t[2][j] = d[2][j] - d[1][j];
                            t[3][j] = d[1][j] - d[3][j];
                        }
                        const size_t step = (size_t)C * P, p0 = (size_t)ty * tw;
                        for (int i = 0; i < 4; i++) {
                            const float *ti = t[i];
                            float *v0 = v + ((size_t)(i * 4) * C + c) * P + p0;
                            float *v1 = v0 + step, *v2 = v1 + step, *v3 = v2 + step;
                            for (int tx = 0; tx < tw; tx++) {
                                float a0 = ti[2 * tx], a1 = ti[2 * tx + 1], a2 = ti[2 * tx + 2], a3 = ti[2 * tx + 3];
                                v0[tx] = a0 - a2;
                                v1[tx] = a1 + a2;
                                v2[tx] = a2 - a1;
                                v3[tx] = a1 - a3;
                            }
                        }
                    }
                }
            }
            /* 16 independent GEMMs: one per thread at a time. */
#pragma omp parallel for num_threads(k->threads) schedule(dynamic, 1)
            for (int e = 0; e < 16; e++)
                gemm1(0, 0, K, (int)P, C, u + (size_t)e * K * C, C, v + (size_t)e * C * P, (int)P, 0.0f,
                      m + (size_t)e * K * P, (int)P);
            /* Output transform: A^T m A plus bias, cropped at odd edges,
             * one (filter, tile row) at a time over contiguous tile streams. */
#pragma omp parallel num_threads(k->threads)
            {
                float *buf = rows + per_thread * (size_t)omp_get_thread_num();
#pragma omp for schedule(static) collapse(2)
                for (int o = 0; o < K; o++) {
                    for (int ty = 0; ty < nty; ty++) {
                        const float bo = bias ? bias[o] : 0.0f;
                        const size_t step = (size_t)K * P;
                        const float *mp = m + (size_t)o * P + (size_t)ty * tw;
                        float *r0 = buf, *r1 = buf + 2 * tw;
                        for (int tx = 0; tx < tw; tx++) {
                            float a[16];
                            for (int e = 0; e < 16; e++)
                                a[e] = mp[e * step + tx];
                            float s0[4], s1[4];
                            for (int j = 0; j < 4; j++) {
                                s0[j] = a[j] + a[4 + j] + a[8 + j];
                                s1[j] = a[4 + j] - a[8 + j] - a[12 + j];
                            }
                            r0[2 * tx] = bo + s0[0] + s0[1] + s0[2];
                            r0[2 * tx + 1] = bo + s0[1] - s0[2] - s0[3];
                            r1[2 * tx] = bo + s1[0] + s1[1] + s1[2];
                            r1[2 * tx + 1] = bo + s1[1] - s1[2] - s1[3];
                        }
                        float *yo = yb + (size_t)o * HW;
                        const int oy = (ty0 + ty) * 2;
                        memcpy(yo + (size_t)oy * W, r0, (size_t)W * sizeof *yo);
                        if (oy + 1 < H)
                            memcpy(yo + (size_t)(oy + 1) * W, r1, (size_t)W * sizeof *yo);
                    }
                }
            }
        }
    }
    return 0;
}

int tf_conv2d(TfKernels *k, float *y, const float *x, const float *w, const float *bias, const TfConv2dShape *s,
              TfError *err)
{
    if (s->B < 0 || s->C <= 0 || s->H <= 0 || s->W <= 0 || s->K <= 0 || s->R <= 0 || s->stride <= 0 ||
        s->pad_top < 0 || s->pad_left < 0 || s->pad_bottom < 0 || s->pad_right < 0 || tf_conv2d_out_h(s) <= 0 ||
        tf_conv2d_out_w(s) <= 0)
        return tf_fail(err, "conv2d: invalid geometry");
    if (k->winograd && s->R == 3 && s->stride == 1 && s->pad_top == 1 && s->pad_left == 1 && s->pad_bottom == 1 &&
        s->pad_right == 1 && s->C >= 8)
        return conv_winograd(k, y, x, w, bias, s, err);
    return conv_im2col(k, y, x, w, bias, s, err);
}

/* ---- normalisation and pointwise ---- */

static inline float silu1(float v)
{
    return v / (1.0f + expf(-v));
}

int tf_group_norm(TfKernels *k, float *y, float *mean_out, float *rstd_out, const float *x, const float *gamma,
                  const float *beta, int B, int C, size_t HW, int groups, float eps, int fuse_silu, TfError *err)
{
    if (B < 0 || C <= 0 || HW == 0 || groups <= 0 || C % groups)
        return tf_fail(err, "group_norm: %d channels in %d groups", C, groups);
    const int cg = C / groups;
    const size_t n = (size_t)cg * HW;
#pragma omp parallel for num_threads(k->threads) schedule(dynamic, 1)
    for (int bg = 0; bg < B * groups; bg++) {
        int b = bg / groups, g = bg % groups;
        const float *xs = x + ((size_t)b * C + (size_t)g * cg) * HW;
        float *ys = y + ((size_t)b * C + (size_t)g * cg) * HW;
        /* Two passes in double: the mean first, then the centred squares,
         * so large offsets do not cancel. */
        double sum = 0.0;
        for (size_t i = 0; i < n; i++)
            sum += xs[i];
        double mean = sum / (double)n, sq = 0.0;
        for (size_t i = 0; i < n; i++) {
            double d = xs[i] - mean;
            sq += d * d;
        }
        float rstd = (float)(1.0 / sqrt(sq / (double)n + eps)), fm = (float)mean;
        if (mean_out)
            mean_out[bg] = fm;
        if (rstd_out)
            rstd_out[bg] = rstd;
        for (int c = 0; c < cg; c++) {
            int ch = g * cg + c;
            float a = (gamma ? gamma[ch] : 1.0f) * rstd, bb = (beta ? beta[ch] : 0.0f) - fm * a;
            const float *xc = xs + (size_t)c * HW;
            float *yc = ys + (size_t)c * HW;
            if (fuse_silu)
                for (size_t i = 0; i < HW; i++)
                    yc[i] = silu1(xc[i] * a + bb);
            else
                for (size_t i = 0; i < HW; i++)
                    yc[i] = xc[i] * a + bb;
        }
    }
    return 0;
}

int tf_silu(TfKernels *k, float *y, const float *x, size_t n, TfError *err)
{
    (void)err;
#pragma omp parallel for num_threads(k->threads) schedule(static)
    for (size_t i = 0; i < n; i++)
        y[i] = silu1(x[i]);
    return 0;
}

int tf_add(TfKernels *k, float *y, const float *a, const float *b, size_t n, TfError *err)
{
    (void)err;
#pragma omp parallel for num_threads(k->threads) schedule(static)
    for (size_t i = 0; i < n; i++)
        y[i] = a[i] + b[i];
    return 0;
}

int tf_scale_shift(TfKernels *k, float *y, const float *a, float scale, float shift, size_t n, TfError *err)
{
    (void)err;
#pragma omp parallel for num_threads(k->threads) schedule(static)
    for (size_t i = 0; i < n; i++)
        y[i] = a[i] * scale + shift;
    return 0;
}

int tf_upsample_nearest2x(TfKernels *k, float *y, const float *x, int B, int C, int H, int W, TfError *err)
{
    if (B < 0 || C <= 0 || H <= 0 || W <= 0)
        return tf_fail(err, "upsample: invalid shape (%d,%d,%d,%d)", B, C, H, W);
    const int BC = B * C;
#pragma omp parallel for num_threads(k->threads) schedule(static)
    for (int bc = 0; bc < BC; bc++) {
        const float *xp = x + (size_t)bc * H * W;
        float *yp = y + (size_t)bc * 4 * H * W;
        for (int i = 0; i < H; i++) {
            float *r0 = yp + (size_t)(2 * i) * 2 * W, *r1 = r0 + 2 * W;
            for (int j = 0; j < W; j++)
                r0[2 * j] = r0[2 * j + 1] = xp[(size_t)i * W + j];
            memcpy(r1, r0, (size_t)2 * W * sizeof *r1);
        }
    }
    return 0;
}

/* ---- attention ---- */

int tf_attention(TfKernels *k, float *y, const float *q, const float *kk, const float *v, int B, int C, int T,
                 float scale, TfError *err)
{
    /* Query rows go in blocks so the (rows, T) score block stays within
     * about 16M floats whatever T is (a 1024x1024 image decodes with
     * T = 16384 in the mid block). */
    if (B < 0 || C <= 0 || T <= 0)
        return tf_fail(err, "attention: invalid shape (%d,%d,%d)", B, C, T);
    int rows = (int)(((size_t)16 << 20) / (size_t)T);
    rows = rows < 1 ? 1 : rows > T ? T : rows;
    float *s = scratch_get(k, (size_t)rows * T, err); /* (rows,T) scores, then probabilities */
    if (!s)
        return -1;
    for (int b = 0; b < B; b++) {
        const size_t off = (size_t)b * C * T;
        for (int i0 = 0; i0 < T; i0 += rows) {
            const int n = T - i0 < rows ? T - i0 : rows;
            /* s(i,j) = q(:,i0+i) . k(:,j): q^T k with q, k (C,T). */
            gemm(k, 1, 0, n, T, C, q + off + i0, T, kk + off, T, 0.0f, s, T);
#pragma omp parallel for num_threads(k->threads) schedule(static)
            for (int i = 0; i < n; i++) {
                float *row = s + (size_t)i * T, mx = -INFINITY;
                for (int j = 0; j < T; j++)
                    mx = row[j] * scale > mx ? row[j] * scale : mx;
                double sum = 0.0;
                for (int j = 0; j < T; j++) {
                    row[j] = expf(row[j] * scale - mx);
                    sum += row[j];
                }
                float inv = (float)(1.0 / sum);
                for (int j = 0; j < T; j++)
                    row[j] *= inv;
            }
            /* y(c,i0+i) = sum_j v(c,j) p(i,j): v p^T. */
            gemm(k, 0, 1, C, n, T, v + off, T, s, T, 0.0f, y + off + i0, T);
        }
    }
    return 0;
}

double tf_kernels_sgemm_peak(TfKernels *k, int n, int reps)
{
    size_t nn = (size_t)n * n;
    float *a = tf_kernels_alloc(k, 3 * nn, NULL);
    if (!a)
        return 0.0;
    float *b = a + nn, *c = b + nn;
    for (size_t i = 0; i < 2 * nn; i++)
        a[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    double best = 0.0;
    /* Both ways of using the threads: OpenBLAS's own, and column slices on
     * ours (what the kernels do); the peak is the better of the two. */
    for (int mode = 0; mode < 2; mode++) {
        blas.set_num_threads(mode == 0 ? k->threads : 1);
        for (int r = 0; r < reps + 1; r++) { /* the first run warms up */
            double t = tf_now();
            if (mode == 0)
                gemm1(0, 0, n, n, n, a, n, b, n, 0.0f, c, n);
            else
                gemm(k, 0, 0, n, n, n, a, n, b, n, 0.0f, c, n);
            double dt = tf_now() - t;
            double g = 2.0 * n * (double)n * n / dt / 1e9;
            if (r > 0 && g > best)
                best = g;
        }
    }
    blas.set_num_threads(1);
    tf_kernels_release(k, a);
    return best;
}
