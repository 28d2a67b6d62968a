/* kernels: the tensor kernels models in transfuse run on.
 *
 * One interface, several builds: kernels_cpu.c is the fp32 CPU reference
 * (OpenBLAS for matrix products, OpenMP threads for the rest); a CUDA build
 * of this same header implements the functions on a stream, with the
 * buffers then living on the device. So that both fit, every kernel takes
 * the context first (threads and scratch on the CPU, stream and BLAS handle
 * on a GPU), buffers come from tf_kernels_alloc, and each tensor argument
 * has its shape written beside it. Layouts are row-major, channels first:
 * (B,C,H,W) images, (B,C,T) sequences in channel-major form (T = H*W), so
 * 1x1 convolutions double as linear layers with no transposes.
 *
 * Kernels that need scratch memory return 0 / -1 (TfError filled); the
 * others cannot fail. Output buffers must not alias inputs unless a
 * comment says so.
 */
#ifndef TRANSFUSE_KERNELS_H
#define TRANSFUSE_KERNELS_H

#include <stddef.h>

#include "core.h"

typedef struct TfKernels TfKernels;

/* A context running kernels with `threads` threads (0: all online CPUs).
 * Owns its scratch memory, so one thread uses a context at a time (give
 * each worker its own). Returns NULL with err filled on failure. */
TfKernels *tf_kernels_new(int threads, TfError *err);
void tf_kernels_free(TfKernels *k);

/* "cpu" for this build; a CUDA build says "cuda". */
const char *tf_kernels_backend(void);
int tf_kernels_threads(const TfKernels *k);

/* Turns the Winograd F(2x2,3x3) path for 3x3 stride-1 convolutions on (the
 * default) or off (im2col + GEMM for everything; the reference the fast
 * path is tested against). */
void tf_kernels_set_winograd(TfKernels *k, int on);

/* Buffers kernels read and write: n floats, 64-byte aligned (device memory
 * in a CUDA build). tf_kernels_release(NULL) is a no-op. Upload/download
 * copy between host memory and such buffers (memcpy on the CPU). */
float *tf_kernels_alloc(TfKernels *k, size_t n, TfError *err);
void tf_kernels_release(TfKernels *k, float *buf);
void tf_kernels_upload(TfKernels *k, float *dst, const float *host, size_t n);
void tf_kernels_download(TfKernels *k, float *host, const float *src, size_t n);

/* ---- convolution -------------------------------------------------------- */

/* Geometry of a 2-D convolution: input (B,C,H,W), K filters (K,C,R,R),
 * stride, and padding per side (diffusers' downsampler pads only right and
 * bottom, so the sides are separate). */
typedef struct TfConv2dShape {
    int B, C, H, W;
    int K, R;
    int stride;
    int pad_top, pad_left, pad_bottom, pad_right;
} TfConv2dShape;

/* Output height and width of a convolution. */
int tf_conv2d_out_h(const TfConv2dShape *s);
int tf_conv2d_out_w(const TfConv2dShape *s);

/* y = conv(x, w) + bias. Fails (err filled) only when scratch memory
 * cannot be had or the shape is invalid.
 *   y    (B,K,Ho,Wo)
 *   x    (B,C,H,W)
 *   w    (K,C,R,R)
 *   bias (K) or NULL */
int tf_conv2d(TfKernels *k, float *y, const float *x, const float *w, const float *bias, const TfConv2dShape *s,
              TfError *err);

/* ---- normalisation and pointwise ------------------------------------------ */

/* GroupNorm over `groups` groups of C/groups channels, statistics over each
 * (group, image) as PyTorch computes them (biased variance), then per-channel
 * affine; with fuse_silu, SiLU applied after. y may equal x.
 *   y, x        (B,C,HW)
 *   gamma, beta (C) */
void tf_group_norm(TfKernels *k, float *y, const float *x, const float *gamma, const float *beta, int B, int C,
                   size_t HW, int groups, float eps, int fuse_silu);

/* y = x * sigmoid(x). y may equal x.   y, x (n) */
void tf_silu(TfKernels *k, float *y, const float *x, size_t n);

/* y = a + b. y may equal a or b.   y, a, b (n) */
void tf_add(TfKernels *k, float *y, const float *a, const float *b, size_t n);

/* y = a * scale + shift, elementwise; y may equal a.   y, a (n) */
void tf_scale_shift(TfKernels *k, float *y, const float *a, float scale, float shift, size_t n);

/* Nearest-neighbour 2x upsampling.
 *   y (B,C,2H,2W)
 *   x (B,C,H,W) */
void tf_upsample_nearest2x(TfKernels *k, float *y, const float *x, int B, int C, int H, int W);

/* ---- attention ---------------------------------------------------------- */

/* Single-head softmax attention in channel-major layout:
 * y[:, :, i] = sum_j softmax_j(scale * q[:, :, i] . k[:, :, j]) v[:, :, j].
 * Softmax in fp32 with the row maximum subtracted. Query rows go in
 * blocks, so scratch stays near 16M floats for any T.
 *   y, q, kk, v (B,C,T) */
int tf_attention(TfKernels *k, float *y, const float *q, const float *kk, const float *v, int B, int C, int T,
                 float scale, TfError *err);

/* ---- measurement ---------------------------------------------------------- */

/* Times an n x n x n sgemm with the context's threads and returns the
 * best GFLOP/s of `reps` runs: the machine's practical matrix peak, which
 * benchmarks report their own rate against. */
double tf_kernels_sgemm_peak(TfKernels *k, int n, int reps);

#endif
