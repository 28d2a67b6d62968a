/* matmul_cpu.c: row-major matrix products on the CPU (tf_matmul; linear
 * layers and their backward are built on it in the front end).
 *
 * fp32 operands go straight to the tiled sgemm (cpu_gemm). A bf16 right
 * operand is converted a block of its N columns at a time (about 16 MiB
 * of fp32) into scratch, so an 8B model's bf16 weights never exist in fp32
 * whole; blocks over N leave every output's sum unchanged in order. */
#include "cpu.h"

#include <string.h>

/* Columns of op(b) per conversion block, from the shape only. */
static int convert_block(int N, int K)
{
    size_t nb = ((size_t)4 << 20) / (size_t)(K > 0 ? K : 1);
    nb = nb < 64 ? 64 : nb & ~(size_t)63;
    return nb >= (size_t)N ? N : (int)nb;
}

/* op(b)'s columns [j0, j0+nb) as fp32 in `dst`: (nb,K) rows when trans_b,
 * else (K,nb). */
static void convert_cols(TfKernels *k, float *dst, TfBuf b, int N, int K, int trans_b, int j0, int nb)
{
    if (trans_b) {
        const size_t rows_per = 64;
        const int tasks = (int)((nb + rows_per - 1) / rows_per);
#pragma omp parallel for num_threads(k->threads) schedule(static)
        for (int t = 0; t < tasks; t++) {
            size_t r0 = (size_t)t * rows_per, nr = (size_t)nb - r0 < rows_per ? (size_t)nb - r0 : rows_per;
            cpu_to_f32(dst + r0 * K, b, ((size_t)j0 + r0) * K, nr * K);
        }
        return;
    }
#pragma omp parallel for num_threads(k->threads) schedule(static)
    for (int r = 0; r < K; r++)
        cpu_to_f32(dst + (size_t)r * nb, b, (size_t)r * N + j0, (size_t)nb);
}

static int cpu_matmul(TfKernels *k, float *c, const float *a, TfBuf b, int M, int N, int K, int trans_a, int trans_b,
                      float alpha, float beta, const float *bias, TfError *err)
{
    const int lda = trans_a ? M : K;
    if (bias && beta == 0.0f) { /* start from the bias, as torch's addmm */
#pragma omp parallel for num_threads(k->threads) schedule(static)
        for (int i = 0; i < M; i++)
            memcpy(c + (size_t)i * N, bias, (size_t)N * sizeof *c);
        beta = 1.0f;
        bias = NULL;
    }
    if (b.dtype == TF_DTYPE_F32 || K == 0) {
        cpu_gemm(k, trans_a, trans_b, M, N, K, alpha, a, lda, b.data, trans_b ? K : N, beta, c, N);
    } else {
        const int nb = convert_block(N, K);
        float *blk = cpu_scratch(k, CPU_SCRATCH_CONVERT, (size_t)nb * K, err);
        if (!blk)
            return -1;
        for (int j0 = 0; j0 < N; j0 += nb) {
            const int nj = N - j0 < nb ? N - j0 : nb;
            convert_cols(k, blk, b, N, K, trans_b, j0, nj);
            cpu_gemm(k, trans_a, trans_b, M, nj, K, alpha, a, lda, blk, trans_b ? K : nj, beta, c + j0, N);
        }
    }
    if (bias) {
#pragma omp parallel for num_threads(k->threads) schedule(static)
        for (int i = 0; i < M; i++) {
            float *row = c + (size_t)i * N;
            for (int j = 0; j < N; j++)
                row[j] += bias[j];
        }
    }
    return 0;
}

void cpu_register_matmul(TfKernelsOps *ops)
{
    ops->matmul = cpu_matmul;
}
