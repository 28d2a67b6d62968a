/* backend.h: the private interface between the kernels front end
 * (kernels.c: shape checks, dispatch) and a backend (cpu/, cuda/).
 *
 * A backend fills a TfKernelsOps table; kernels.c has validated every
 * shape, dtype and required pointer before calling an entry, so entries
 * trust their arguments except for the contents of index buffers (ids,
 * positions, mask bounds), which only the backend can read. An entry left
 * NULL makes the front end report "<kernel> is not implemented on <backend>".
 * Each entry has the signature of the public function of the same name. */
#ifndef TRANSFUSE_KERNELS_BACKEND_H
#define TRANSFUSE_KERNELS_BACKEND_H

#include "kernels.h"

typedef struct TfKernelsOps TfKernelsOps;

struct TfKernels {
    TfBackend backend;
    int threads;
    int winograd;
    const TfKernelsOps *ops;
    void *impl; /* the backend's own state */
};

struct TfKernelsOps {
    void (*destroy)(TfKernels *k);
    int (*sync)(TfKernels *k, TfError *err);
    void *(*alloc)(TfKernels *k, size_t bytes, TfError *err);
    void (*release)(TfKernels *k, void *buf);
    int (*upload)(TfKernels *k, void *dst, const void *host, size_t bytes, TfError *err);
    int (*download)(TfKernels *k, void *host, const void *src, size_t bytes, TfError *err);
    double (*sgemm_peak)(TfKernels *k, int n, int reps);

    int (*fill)(TfKernels *k, float *y, float value, size_t n, TfError *err);
    int (*copy)(TfKernels *k, float *y, const float *x, size_t n, TfError *err);
    int (*convert)(TfKernels *k, void *y, TfDtype y_dtype, TfBuf x, size_t n, TfError *err);
    int (*add)(TfKernels *k, float *y, const float *a, const float *b, size_t n, TfError *err);
    int (*mul)(TfKernels *k, float *y, const float *a, const float *b, size_t n, TfError *err);
    int (*axpby)(TfKernels *k, float *y, float alpha, const float *x, float beta, size_t n, TfError *err);
    int (*scale_shift)(TfKernels *k, float *y, const float *a, float scale, float shift, size_t n, TfError *err);
    int (*silu)(TfKernels *k, float *y, const float *x, size_t n, TfError *err);
    int (*silu_backward)(TfKernels *k, float *dx, const float *dy, const float *x, size_t n, TfError *err);
    int (*swiglu)(TfKernels *k, float *h, const float *g, const float *u, size_t n, TfError *err);
    int (*swiglu_backward)(TfKernels *k, float *dg, float *du, const float *dh, const float *g, const float *u,
                           size_t n, TfError *err);
    int (*add_rows)(TfKernels *k, float *y, const float *b, int N, int D, TfError *err);
    int (*sum_rows)(TfKernels *k, float *db, const float *dy, int N, int D, TfError *err);
    int (*add_channels)(TfKernels *k, float *y, const float *v, int B, int C, size_t HW, TfError *err);
    int (*sum_channels)(TfKernels *k, float *dv, const float *dy, int B, int C, size_t HW, TfError *err);

    int (*transpose)(TfKernels *k, float *y, const float *x, int B, int M, int N, TfError *err);
    int (*concat_channels)(TfKernels *k, float *y, const float *a, const float *b, int B, int C1, int C2, size_t HW,
                           TfError *err);
    int (*split_channels)(TfKernels *k, float *da, float *db, const float *dy, int B, int C1, int C2, size_t HW,
                          TfError *err);
    int (*patchify)(TfKernels *k, float *rows, const float *x, int B, int C, int H, int W, int p, TfError *err);
    int (*unpatchify)(TfKernels *k, float *x, const float *rows, int B, int C, int H, int W, int p, TfError *err);
    int (*rows_gather)(TfKernels *k, float *y, const float *x, const int32_t *idx, int R, int N, int D, TfError *err);
    int (*rows_scatter)(TfKernels *k, float *y, const float *x, const int32_t *idx, int R, int N, int D,
                        int accumulate, TfError *err);

    int (*matmul)(TfKernels *k, float *c, const float *a, TfBuf b, int M, int N, int K, int trans_a, int trans_b,
                  float alpha, float beta, const float *bias, TfError *err);

    int (*rms_norm)(TfKernels *k, float *y, float *rstd, const float *x, TfBuf w, int N, int D, float eps,
                    TfError *err);
    int (*rms_norm_backward)(TfKernels *k, float *dx, float *dw, const float *dy, const float *x, const float *rstd,
                             TfBuf w, int N, int D, TfError *err);
    int (*layer_norm)(TfKernels *k, float *y, float *mean, float *rstd, const float *x, const float *w,
                      const float *b, int N, int D, float eps, TfError *err);
    int (*layer_norm_backward)(TfKernels *k, float *dx, float *dw, float *db, const float *dy, const float *x,
                               const float *mean, const float *rstd, const float *w, int N, int D, TfError *err);
    int (*group_norm)(TfKernels *k, float *y, float *mean, float *rstd, const float *x, const float *gamma,
                      const float *beta, int B, int C, size_t HW, int groups, float eps, int fuse_silu, TfError *err);
    int (*group_norm_backward)(TfKernels *k, float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                               const float *mean, const float *rstd, const float *gamma, int B, int C, size_t HW,
                               int groups, TfError *err);

    int (*conv2d)(TfKernels *k, float *y, const float *x, const float *w, const float *bias, const TfConv2dShape *s,
                  TfError *err);
    int (*conv2d_backward)(TfKernels *k, float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *w, const TfConv2dShape *s, TfError *err);
    int (*upsample_nearest2x)(TfKernels *k, float *y, const float *x, int B, int C, int H, int W, TfError *err);
    int (*upsample_nearest2x_backward)(TfKernels *k, float *dx, const float *dy, int B, int C, int H, int W,
                                       TfError *err);

    /* inv_freq: the host-computed table (HD/2 doubles, host memory). */
    int (*rope_table)(TfKernels *k, float *cos, float *sin, const double *inv_freq, int half, int P, TfError *err);
    /* sign +1 forward, -1 backward. */
    int (*rope)(TfKernels *k, float *x, const float *cos, const float *sin, const int32_t *pos, int N, int H, int HD,
                int P, int sign, TfError *err);

    int (*attention_gqa)(TfKernels *k, float *y, float *lse, const float *q, const float *kk, const float *v,
                         const int32_t *lo, const int32_t *hi, const TfAttnShape *s, TfError *err);
    int (*attention_gqa_backward)(TfKernels *k, float *dq, float *dk, float *dv, const float *dy, const float *y,
                                  const float *lse, const float *q, const float *kk, const float *v,
                                  const int32_t *lo, const int32_t *hi, const TfAttnShape *s, TfError *err);
    int (*attention)(TfKernels *k, float *y, const float *q, const float *kk, const float *v, int B, int C, int T,
                     float scale, TfError *err);

    int (*embedding)(TfKernels *k, float *y, TfBuf table, const int32_t *ids, int N, int D, int V, TfError *err);
    int (*embedding_backward)(TfKernels *k, float *dtable, const float *dy, const int32_t *ids, const int32_t *rows,
                              int R, int N, int D, int V, TfError *err);
    int (*timestep_embedding)(TfKernels *k, float *y, const float *t, int n, int D, int flip_sin_to_cos,
                              float freq_shift, float max_period, TfError *err);

    int (*cross_entropy_lm_head)(TfKernels *k, float *losses, double *mean_loss, float *dh, float *dw,
                                 const int32_t *w_rows, int R, const float *h, TfBuf w, const int32_t *targets,
                                 int N, int D, int V, float grad_scale, TfError *err);
    int (*mse)(TfKernels *k, float *losses, double *mean_loss, float *dpred, const float *pred, const float *target,
               int B, size_t n, float grad_scale, TfError *err);

    int (*noise_mix)(TfKernels *k, float *xt, const float *x0, const float *eps, const float *a, const float *s,
                     int B, size_t n, TfError *err);
    int (*latent_sample)(TfKernels *k, float *z, const float *mean, const float *logvar, const float *eps, size_t n,
                         float shift, float scale, TfError *err);
    int (*randn)(TfKernels *k, float *y, size_t n, uint64_t seed, uint64_t stream, uint64_t offset, float mean,
                 float std, TfError *err);

    int (*adamw)(TfKernels *k, float *param, const float *grad, float *m, float *v, size_t n, const TfAdamW *h,
                 float grad_scale, TfError *err);
    int (*sum_squares)(TfKernels *k, double *out, const float *x, size_t n, TfError *err);
};

/* AdamW's per-step scalars, computed in double as Python does and rounded
 * to float (kernels.c), so every backend applies the same numbers. */
typedef struct TfAdamWScalars {
    float decay;     /* 1 - lr wd */
    float w1;        /* 1 - beta1, the lerp weight */
    float b2, w2;    /* beta2, 1 - beta2 */
    float step_size; /* lr / (1 - beta1^t) */
    float bc2_sqrt;  /* sqrt(1 - beta2^t) */
    float eps;
} TfAdamWScalars;
void tf_adamw_scalars(const TfAdamW *h, TfAdamWScalars *s);

/* Backend constructors: fill k->ops and k->impl, or return -1 with err. */
int tf_cpu_backend_init(TfKernels *k, TfError *err);
#ifdef TF_HAVE_CUDA
int tf_cuda_backend_init(TfKernels *k, TfError *err);
#endif

#endif
