/* kernels_cpu.c: the CPU backend of kernels.h, the fp32 reference every
 * other backend is tested against: the context (threads, scratch), OpenBLAS
 * loading, the GEMM helpers the kernel files share, memory, and the ops
 * table the files fill (pointwise_cpu.c, matmul_cpu.c, norm_cpu.c,
 * conv_cpu.c, attention_cpu.c, loss_cpu.c).
 *
 * Matrix work goes to OpenBLAS sgemm, run single-threaded on each of our
 * OpenMP threads (tiles of one product, or independent products side by
 * side), so one thread pool does everything and no two pools fight over
 * the cores. Results do not depend on the thread count: products are cut
 * into a grid that depends on the shape only, and reductions run over
 * fixed chunks in a fixed order. */
#include "cpu.h"

#include <cblas.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct CpuState {
    float *scratch[CPU_SCRATCH_SLOTS]; /* each grows to its largest request */
    size_t scratch_n[CPU_SCRATCH_SLOTS];
} CpuState;

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


static void *cpu_alloc(TfKernels *k, size_t bytes, TfError *err)
{
    (void)k;
    if (bytes > SIZE_MAX - 64) {
        tf_fail(err, "buffer of %zu bytes is too large", bytes);
        return NULL;
    }
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p)
        tf_fail(err, "out of memory for %zu bytes", bytes);
    return p;
}

static void cpu_release(TfKernels *k, void *buf)
{
    (void)k;
    free(buf);
}

static int cpu_copy_bytes(TfKernels *k, void *dst, const void *src, size_t bytes, TfError *err)
{
    (void)k;
    (void)err;
    memcpy(dst, src, bytes);
    return 0;
}

float *cpu_scratch(TfKernels *k, int slot, size_t n, TfError *err)
{
    CpuState *st = k->impl;
    if (n > st->scratch_n[slot]) {
        free(st->scratch[slot]);
        st->scratch[slot] = NULL;
        st->scratch_n[slot] = 0;
        if (n > SIZE_MAX / sizeof(float)) {
            tf_fail(err, "scratch of %zu floats is too large", n);
            return NULL;
        }
        if (!(st->scratch[slot] = cpu_alloc(k, n * sizeof(float), err)))
            return NULL;
        st->scratch_n[slot] = n;
    }
    return st->scratch[slot];
}

void cpu_gemm1(int transa, int transb, int m, int n, int kd, float alpha, const float *a, int lda, const float *b,
               int ldb, float beta, float *c, int ldc)
{
    if (kd == 0) { /* BLAS would leave C alone for beta 1; make beta 0 mean zero too */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                c[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : c[(size_t)i * ldc + j] * beta;
        return;
    }
    blas.sgemm(CblasRowMajor, transa ? CblasTrans : CblasNoTrans, transb ? CblasTrans : CblasNoTrans, m, n, kd,
               alpha, a, lda, b, ldb, beta, c, ldc);
}

/* Tile edge for a dimension of x: the whole of it up to 128, else a
 * quarter rounded up to 64 (at least 128): at most 4 x 4 tiles, each large
 * enough for sgemm to run near its peak. */
static int gemm_tile(int x)
{
    if (x <= 128)
        return x;
    int t = ((x + 3) / 4 + 63) & ~63;
    return t < 128 ? 128 : t;
}

void cpu_gemm(TfKernels *k, int transa, int transb, int m, int n, int kd, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc)
{
    const int tm = gemm_tile(m), tn = gemm_tile(n);
    const int gm = (m + tm - 1) / tm, gn = (n + tn - 1) / tn, tiles = gm * gn;
    const int nt = k->threads < tiles ? k->threads : tiles;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1)
    for (int t = 0; t < tiles; t++) {
        const int i0 = (t / gn) * tm, j0 = (t % gn) * tn;
        const int mi = m - i0 < tm ? m - i0 : tm, nj = n - j0 < tn ? n - j0 : tn;
        const float *ai = transa ? a + i0 : a + (size_t)i0 * lda;
        const float *bj = transb ? b + (size_t)j0 * ldb : b + j0;
        cpu_gemm1(transa, transb, mi, nj, kd, alpha, ai, lda, bj, ldb, beta, c + (size_t)i0 * ldc + j0, ldc);
    }
}

size_t cpu_chunk_size(size_t n, size_t min_chunk)
{
    size_t c = (n + CPU_MAX_CHUNKS - 1) / CPU_MAX_CHUNKS;
    return c < min_chunk ? min_chunk : c;
}

void cpu_to_f32(float *y, TfBuf x, size_t offset, size_t n)
{
    if (x.dtype == TF_DTYPE_F32) {
        memcpy(y, (const float *)x.data + offset, n * sizeof *y);
        return;
    }
    const uint16_t *h = (const uint16_t *)x.data + offset;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)h[i] << 16;
        memcpy(&y[i], &u, sizeof u);
    }
}

static double cpu_sgemm_peak(TfKernels *k, int n, int reps)
{
    size_t nn = (size_t)n * n;
    float *a = cpu_alloc(k, 3 * nn * sizeof(float), NULL);
    if (!a)
        return 0.0;
    float *b = a + nn, *c = b + nn;
    for (size_t i = 0; i < 2 * nn; i++)
        a[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    double best = 0.0;
    /* Both ways of using the threads: OpenBLAS's own, and tiles on ours
     * (what the kernels do); the peak is the better of the two. */
    for (int mode = 0; mode < 2; mode++) {
        blas.set_num_threads(mode == 0 ? k->threads : 1);
        for (int r = 0; r < reps + 1; r++) { /* the first run warms up */
            double t = tf_now();
            if (mode == 0)
                cpu_gemm1(0, 0, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
            else
                cpu_gemm(k, 0, 0, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
            double dt = tf_now() - t;
            double g = 2.0 * n * (double)n * n / dt / 1e9;
            if (r > 0 && g > best)
                best = g;
        }
    }
    blas.set_num_threads(1);
    free(a);
    return best;
}

static void cpu_destroy(TfKernels *k)
{
    CpuState *st = k->impl;
    if (!st)
        return;
    for (int i = 0; i < CPU_SCRATCH_SLOTS; i++)
        free(st->scratch[i]);
    free(st);
    k->impl = NULL;
}

static TfKernelsOps cpu_ops;
static pthread_once_t cpu_ops_once = PTHREAD_ONCE_INIT;

static void cpu_ops_build(void)
{
    cpu_ops.destroy = cpu_destroy;
    cpu_ops.alloc = cpu_alloc;
    cpu_ops.release = cpu_release;
    cpu_ops.upload = cpu_copy_bytes;
    cpu_ops.download = cpu_copy_bytes;
    cpu_ops.sgemm_peak = cpu_sgemm_peak;
    cpu_register_pointwise(&cpu_ops);
    cpu_register_matmul(&cpu_ops);
    cpu_register_norm(&cpu_ops);
    cpu_register_conv(&cpu_ops);
    cpu_register_attention(&cpu_ops);
    cpu_register_loss(&cpu_ops);
}

int tf_cpu_backend_init(TfKernels *k, TfError *err)
{
    static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
    pthread_once(&blas_once, blas_load);
    if (!blas.sgemm)
        return tf_fail(err, "%s", blas.error);
    blas.set_num_threads(1);
    pthread_once(&cpu_ops_once, cpu_ops_build);
    if (k->threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        k->threads = n > 0 ? (int)n : 1;
    }
    if (!(k->impl = calloc(1, sizeof(CpuState))))
        return tf_fail(err, "out of memory");
    k->ops = &cpu_ops;
    return 0;
}
