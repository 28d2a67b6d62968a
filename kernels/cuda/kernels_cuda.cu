/* kernels_cuda.cu: the first kernels of the CUDA backend (the rest of
 * kernels.h is the next issue: their table entries stay NULL and the front
 * end says so). One stream per context; errors of a launch are caught at
 * the launch (bad configuration) or by the next call / tfc_sync (faults
 * while running), and the first one sticks to the context.
 *
 * Arithmetic matches the CPU backend's formulas; it agrees to rounding,
 * not to the bit (nvcc fuses multiply-adds). The noise of tfc_randn is the
 * same Philox4x32-10 stream as the CPU's: both use philox.h
 * (tests/kernels/test_kernels_cuda.c compares them). */
#include "cuda_impl.h"
#include "../philox.h"

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct TfcState {
    int device;
    cudaStream_t stream;
    double *partial; /* device partial sums of tfc_sum_squares */
    double *host_partial;
};

enum { BLOCK = 256, SUM_BLOCKS = 256 };

static int fail(char *msg, const char *what, cudaError_t e)
{
    snprintf(msg, TFC_MSG, "cuda: %s: %s", what, cudaGetErrorString(e));
    return -1;
}

/* The status after queuing a launch (configuration errors show here). */
static int launched(char *msg, const char *what)
{
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? 0 : fail(msg, what, e);
}

static unsigned grid_for(size_t n)
{
    size_t g = (n + BLOCK - 1) / BLOCK;
    return g > 65535u * 16 ? 65535u * 16 : (unsigned)g; /* kernels stride over the rest */
}

#define FOR_EACH(i, n) for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)blockDim.x * gridDim.x)

extern "C" int tfc_init(TfcState **out, char *msg)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        snprintf(msg, TFC_MSG, "no CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "none found");
        return -1;
    }
    TfcState *st = (TfcState *)calloc(1, sizeof *st);
    if (!st) {
        snprintf(msg, TFC_MSG, "out of memory");
        return -1;
    }
    if ((e = cudaGetDevice(&st->device)) != cudaSuccess || (e = cudaStreamCreate(&st->stream)) != cudaSuccess ||
        (e = cudaMalloc((void **)&st->partial, SUM_BLOCKS * sizeof(double))) != cudaSuccess ||
        (e = cudaMallocHost((void **)&st->host_partial, SUM_BLOCKS * sizeof(double))) != cudaSuccess) {
        fail(msg, "context", e);
        tfc_destroy(st);
        return -1;
    }
    *out = st;
    return 0;
}

extern "C" void tfc_destroy(TfcState *st)
{
    if (!st)
        return;
    if (st->stream)
        cudaStreamSynchronize(st->stream);
    cudaFree(st->partial);
    cudaFreeHost(st->host_partial);
    if (st->stream)
        cudaStreamDestroy(st->stream);
    free(st);
}

extern "C" int tfc_sync(TfcState *st, char *msg)
{
    cudaError_t e = cudaStreamSynchronize(st->stream);
    return e == cudaSuccess ? 0 : fail(msg, "queued work", e);
}

extern "C" void *tfc_alloc(TfcState *st, size_t bytes, char *msg)
{
    (void)st;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        fail(msg, "cudaMalloc", e);
        return NULL;
    }
    return p;
}

extern "C" void tfc_release(TfcState *st, void *p)
{
    cudaStreamSynchronize(st->stream); /* queued kernels may still read it */
    cudaFree(p);
}

extern "C" int tfc_upload(TfcState *st, void *dst, const void *host, size_t bytes, char *msg)
{
    cudaError_t e = cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, st->stream);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(st->stream); /* the host buffer may be reused at once */
    return e == cudaSuccess ? 0 : fail(msg, "upload", e);
}

extern "C" int tfc_download(TfcState *st, void *host, const void *src, size_t bytes, char *msg)
{
    cudaError_t e = cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, st->stream);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(st->stream);
    return e == cudaSuccess ? 0 : fail(msg, "download", e);
}

/* ---- elementwise ---- */

__global__ void k_fill(float *y, float v, size_t n)
{
    FOR_EACH(i, n) y[i] = v;
}

__global__ void k_binary(int op, float *y, const float *a, const float *b, size_t n)
{
    FOR_EACH(i, n) y[i] = op == 0 ? a[i] + b[i] : a[i] * b[i];
}

__global__ void k_axpby(float *y, float alpha, const float *x, float beta, size_t n)
{
    FOR_EACH(i, n) y[i] = beta == 0.0f ? alpha * x[i] : alpha * x[i] + beta * y[i];
}

__global__ void k_scale_shift(float *y, const float *a, float scale, float shift, size_t n)
{
    FOR_EACH(i, n) y[i] = a[i] * scale + shift;
}

__device__ float d_silu(float v)
{
    return v / (1.0f + expf(-v));
}

__device__ float d_silu_grad(float x)
{
    float s = 1.0f / (1.0f + expf(-x));
    return s * (1.0f + x * (1.0f - s));
}

__global__ void k_silu(float *y, const float *x, size_t n)
{
    FOR_EACH(i, n) y[i] = d_silu(x[i]);
}

__global__ void k_silu_backward(float *dx, const float *dy, const float *x, size_t n)
{
    FOR_EACH(i, n) dx[i] = dy[i] * d_silu_grad(x[i]);
}

__global__ void k_swiglu(float *h, const float *g, const float *u, size_t n)
{
    FOR_EACH(i, n) h[i] = d_silu(g[i]) * u[i];
}

__global__ void k_swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, size_t n)
{
    FOR_EACH(i, n)
    {
        const float d = dh[i], gi = g[i];
        if (du)
            du[i] = d * d_silu(gi);
        if (dg)
            dg[i] = d * u[i] * d_silu_grad(gi);
    }
}

extern "C" int tfc_fill(TfcState *st, float *y, float value, size_t n, char *msg)
{
    k_fill<<<grid_for(n), BLOCK, 0, st->stream>>>(y, value, n);
    return launched(msg, "fill");
}

extern "C" int tfc_copy(TfcState *st, float *y, const float *x, size_t n, char *msg)
{
    cudaError_t e = cudaMemcpyAsync(y, x, n * sizeof *y, cudaMemcpyDeviceToDevice, st->stream);
    return e == cudaSuccess ? 0 : fail(msg, "copy", e);
}

extern "C" int tfc_binary(TfcState *st, int op, float *y, const float *a, const float *b, size_t n, char *msg)
{
    k_binary<<<grid_for(n), BLOCK, 0, st->stream>>>(op, y, a, b, n);
    return launched(msg, op == 0 ? "add" : "mul");
}

extern "C" int tfc_axpby(TfcState *st, float *y, float alpha, const float *x, float beta, size_t n, char *msg)
{
    k_axpby<<<grid_for(n), BLOCK, 0, st->stream>>>(y, alpha, x, beta, n);
    return launched(msg, "axpby");
}

extern "C" int tfc_scale_shift(TfcState *st, float *y, const float *a, float scale, float shift, size_t n, char *msg)
{
    k_scale_shift<<<grid_for(n), BLOCK, 0, st->stream>>>(y, a, scale, shift, n);
    return launched(msg, "scale_shift");
}

extern "C" int tfc_silu(TfcState *st, float *y, const float *x, size_t n, char *msg)
{
    k_silu<<<grid_for(n), BLOCK, 0, st->stream>>>(y, x, n);
    return launched(msg, "silu");
}

extern "C" int tfc_silu_backward(TfcState *st, float *dx, const float *dy, const float *x, size_t n, char *msg)
{
    k_silu_backward<<<grid_for(n), BLOCK, 0, st->stream>>>(dx, dy, x, n);
    return launched(msg, "silu_backward");
}

extern "C" int tfc_swiglu(TfcState *st, float *h, const float *g, const float *u, size_t n, char *msg)
{
    k_swiglu<<<grid_for(n), BLOCK, 0, st->stream>>>(h, g, u, n);
    return launched(msg, "swiglu");
}

extern "C" int tfc_swiglu_backward(TfcState *st, float *dg, float *du, const float *dh, const float *g, const float *u,
                                   size_t n, char *msg)
{
    k_swiglu_backward<<<grid_for(n), BLOCK, 0, st->stream>>>(dg, du, dh, g, u, n);
    return launched(msg, "swiglu_backward");
}

/* ---- optimiser ---- */

/* The CPU backend's AdamW (torch's single-tensor step) with the same
 * host-prepared scalars (kernels.c: tf_adamw_scalars). */
__global__ void k_adamw(float *p, const float *g, float *m, float *v, size_t n, float decay, float w1, float b2,
                        float w2, float step_size, float bc2_sqrt, float eps, float grad_scale)
{
    FOR_EACH(i, n)
    {
        const float gi = grad_scale == 1.0f ? g[i] : g[i] * grad_scale;
        float pi = p[i];
        if (decay != 1.0f)
            pi *= decay;
        const float mi = w1 < 0.5f ? fmaf(w1, gi - m[i], m[i]) : fmaf(w1 - 1.0f, gi - m[i], gi);
        const float vi = __fadd_rn(__fmul_rn(v[i], b2), __fmul_rn(__fmul_rn(w2, gi), gi));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
        p[i] = __fadd_rn(pi, __fdiv_rn(__fmul_rn(-step_size, mi), denom));
        m[i] = mi;
        v[i] = vi;
    }
}

extern "C" int tfc_adamw(TfcState *st, float *p, const float *g, float *m, float *v, size_t n, float decay, float w1,
                         float b2, float w2, float step_size, float bc2_sqrt, float eps, float grad_scale, char *msg)
{
    k_adamw<<<grid_for(n), BLOCK, 0, st->stream>>>(p, g, m, v, n, decay, w1, b2, w2, step_size, bc2_sqrt, eps,
                                                    grad_scale);
    return launched(msg, "adamw");
}

/* ---- noise ---- */

/* One thread per counter pair, as the CPU's loop (philox.h). */
__global__ void k_randn(float *y, size_t n, uint64_t seed, uint64_t stream, uint64_t offset, float mean, float stdv,
                        uint64_t p0, uint64_t np)
{
    FOR_EACH(q, np)
    {
        const uint64_t p = p0 + q;
        double z[2];
        tf_randn_pair(seed, stream, p, z);
        for (int h = 0; h < 2; h++) {
            const uint64_t e = (p << 1) + (uint64_t)h;
            if (e >= offset && e - offset < n)
                y[e - offset] = (float)((double)mean + (double)stdv * z[h]);
        }
    }
}

extern "C" int tfc_randn(TfcState *st, float *y, size_t n, uint64_t seed, uint64_t stream, uint64_t offset,
                         float mean, float std, char *msg)
{
    const uint64_t p0 = offset >> 1, np = ((offset + n - 1) >> 1) - p0 + 1;
    k_randn<<<grid_for(np), BLOCK, 0, st->stream>>>(y, n, seed, stream, offset, mean, std, p0, np);
    return launched(msg, "randn");
}

/* ---- reductions ---- */

/* A fixed grid: thread t of block b sums elements b*BLOCK + t + k*(grid
 * size) in k order, the block adds its threads as a tree, and the host
 * adds the SUM_BLOCKS partials in order: the same result on every run. */
__global__ void k_sum_squares(double *partial, const float *x, size_t n)
{
    __shared__ double s[BLOCK];
    double acc = 0.0;
    FOR_EACH(i, n) acc += (double)x[i] * x[i];
    s[threadIdx.x] = acc;
    __syncthreads();
    for (int w = BLOCK / 2; w > 0; w /= 2) {
        if ((int)threadIdx.x < w)
            s[threadIdx.x] += s[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        partial[blockIdx.x] = s[0];
}

extern "C" int tfc_sum_squares(TfcState *st, double *out, const float *x, size_t n, char *msg)
{
    k_sum_squares<<<SUM_BLOCKS, BLOCK, 0, st->stream>>>(st->partial, x, n);
    if (launched(msg, "sum_squares"))
        return -1;
    cudaError_t e = cudaMemcpyAsync(st->host_partial, st->partial, SUM_BLOCKS * sizeof(double),
                                    cudaMemcpyDeviceToHost, st->stream);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(st->stream);
    if (e != cudaSuccess)
        return fail(msg, "sum_squares", e);
    double total = 0.0;
    for (int b = 0; b < SUM_BLOCKS; b++)
        total += st->host_partial[b];
    *out = total;
    return 0;
}
