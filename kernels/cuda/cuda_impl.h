/* cuda_impl.h: the C boundary of the CUDA backend (private to
 * kernels/cuda/). kernels_cuda.cu implements these with the CUDA runtime
 * and plain C types only, so it needs neither core.h nor backend.h;
 * backend_cuda.c adapts them to the ops table. Each returns 0, or -1 with
 * a message in msg (TFC_MSG bytes). A launch's asynchronous failure shows
 * at a later call or at tfc_sync. */
#ifndef TRANSFUSE_KERNELS_CUDA_IMPL_H
#define TRANSFUSE_KERNELS_CUDA_IMPL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TFC_MSG 512

typedef struct TfcState TfcState;

int tfc_init(TfcState **out, char *msg);
void tfc_destroy(TfcState *st);
int tfc_sync(TfcState *st, char *msg);
void *tfc_alloc(TfcState *st, size_t bytes, char *msg);
void tfc_release(TfcState *st, void *p);
int tfc_upload(TfcState *st, void *dst, const void *host, size_t bytes, char *msg);
int tfc_download(TfcState *st, void *host, const void *src, size_t bytes, char *msg);

int tfc_fill(TfcState *st, float *y, float value, size_t n, char *msg);
int tfc_copy(TfcState *st, float *y, const float *x, size_t n, char *msg);
/* op: 0 add (y = a + b), 1 mul (y = a b). */
int tfc_binary(TfcState *st, int op, float *y, const float *a, const float *b, size_t n, char *msg);
int tfc_axpby(TfcState *st, float *y, float alpha, const float *x, float beta, size_t n, char *msg);
int tfc_scale_shift(TfcState *st, float *y, const float *a, float scale, float shift, size_t n, char *msg);
int tfc_silu(TfcState *st, float *y, const float *x, size_t n, char *msg);
int tfc_silu_backward(TfcState *st, float *dx, const float *dy, const float *x, size_t n, char *msg);
int tfc_swiglu(TfcState *st, float *h, const float *g, const float *u, size_t n, char *msg);
int tfc_swiglu_backward(TfcState *st, float *dg, float *du, const float *dh, const float *g, const float *u, size_t n,
                        char *msg);
/* AdamW with the scalars prepared on the host (kernels_cuda.cu's comment). */
int tfc_adamw(TfcState *st, float *p, const float *g, float *m, float *v, size_t n, float decay, float w1, float b2,
              float w2, float step_size, float bc2_sqrt, float eps, float grad_scale, char *msg);
int tfc_randn(TfcState *st, float *y, size_t n, uint64_t seed, uint64_t stream, uint64_t offset, float mean, float std,
              char *msg);
int tfc_sum_squares(TfcState *st, double *out, const float *x, size_t n, char *msg);

#ifdef __cplusplus
}
#endif

#endif
