/* cpu.h: what the CPU backend's files share (private to kernels/cpu/).
 *
 * Every file registers its kernels into the ops table (cpu_register_*);
 * kernels_cpu.c owns the context, OpenBLAS, scratch memory and the GEMM
 * helpers the others call. */
#ifndef TRANSFUSE_KERNELS_CPU_H
#define TRANSFUSE_KERNELS_CPU_H

#include <math.h>

#include "../backend.h"

/* Scratch slots: a kernel may hold one slot while a helper it calls (the
 * bf16 conversion inside matmul) holds the other. */
enum { CPU_SCRATCH_MAIN = 0, CPU_SCRATCH_CONVERT = 1, CPU_SCRATCH_SLOTS };

/* n floats of the context's scratch slot, grown as needed and reused; valid
 * until the next request of the same slot. NULL with err on failure. */
float *cpu_scratch(TfKernels *k, int slot, size_t n, TfError *err);

/* Row-major C(m,n) = alpha A(m,kd) B(kd,n) + beta C in the calling
 * thread (OpenBLAS single-threaded), A and B transposed as flagged. */
void cpu_gemm1(int transa, int transb, int m, int n, int kd, float alpha, const float *a, int lda, const float *b,
               int ldb, float beta, float *c, int ldc);

/* The same on the context's threads. C is cut into a grid of tiles whose
 * size depends on (m, n) only, one sgemm per tile: OpenBLAS's result for
 * an element depends on how the call is cut, so a fixed grid is what makes
 * results independent of the thread count. */
void cpu_gemm(TfKernels *k, int transa, int transb, int m, int n, int kd, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc);

/* Fixed chunks for reductions over n items: the chunk count depends on n
 * only (at most CPU_MAX_CHUNKS), never on threads. */
#define CPU_MAX_CHUNKS 64
size_t cpu_chunk_size(size_t n, size_t min_chunk);

/* x (n) of a weight dtype (F32 or BF16) to fp32 at y. */
void cpu_to_f32(float *y, TfBuf x, size_t offset, size_t n);

/* Softmax helpers that vectorise (plain C, no fast-math): x[j] = exp(x[j] -
 * shift) over a row, returning its sum; and the row's maximum (at least
 * init). exp here is a Cephes-style polynomial, within 1.5 ulp of expf,
 * exactly 0 below -87.3 (so -inf, a masked score, gives 0). Sums use 8
 * lanes added in a fixed order: the same result on any thread. */
float cpu_exp_sum(float *x, int n, float shift);
float cpu_row_max(const float *x, int n, float init);

static inline float cpu_silu1(float v)
{
    return v / (1.0f + expf(-v));
}

void cpu_register_pointwise(TfKernelsOps *ops);
void cpu_register_matmul(TfKernelsOps *ops);
void cpu_register_norm(TfKernelsOps *ops);
void cpu_register_conv(TfKernelsOps *ops);
void cpu_register_attention(TfKernelsOps *ops);
void cpu_register_loss(TfKernelsOps *ops);

#endif
