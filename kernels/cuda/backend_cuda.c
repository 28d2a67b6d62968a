/* backend_cuda.c: the CUDA backend's ops table (backend.h) over the C
 * boundary of kernels_cuda.cu (cuda_impl.h). Kernels not written for the
 * GPU yet stay NULL, so the front end reports "<kernel> is not implemented
 * on the cuda backend" instead of running something else. Built only
 * where nvcc was found (TF_HAVE_CUDA). */
#include "../backend.h"
#include "cuda_impl.h"

#define ST(k) ((TfcState *)(k)->impl)

/* Runs a tfc_* call with a message buffer and turns -1 into err. */
#define CALL(expr)                          \
    do {                                    \
        char msg[TFC_MSG] = "";             \
        if ((expr))                         \
            return tf_fail(err, "%s", msg); \
        return 0;                           \
    } while (0)

static void cuda_destroy(TfKernels *k)
{
    tfc_destroy(ST(k));
    k->impl = NULL;
}

static int cuda_sync(TfKernels *k, TfError *err)
{
    CALL(tfc_sync(ST(k), msg));
}

static void *cuda_alloc(TfKernels *k, size_t bytes, TfError *err)
{
    char msg[TFC_MSG] = "";
    void *p = tfc_alloc(ST(k), bytes, msg);
    if (!p)
        tf_fail(err, "%s", msg);
    return p;
}

static void cuda_release(TfKernels *k, void *buf)
{
    tfc_release(ST(k), buf);
}

static int cuda_upload(TfKernels *k, void *dst, const void *host, size_t bytes, TfError *err)
{
    CALL(tfc_upload(ST(k), dst, host, bytes, msg));
}

static int cuda_download(TfKernels *k, void *host, const void *src, size_t bytes, TfError *err)
{
    CALL(tfc_download(ST(k), host, src, bytes, msg));
}

static int cuda_fill(TfKernels *k, float *y, float value, size_t n, TfError *err)
{
    CALL(tfc_fill(ST(k), y, value, n, msg));
}

static int cuda_copy(TfKernels *k, float *y, const float *x, size_t n, TfError *err)
{
    CALL(tfc_copy(ST(k), y, x, n, msg));
}

static int cuda_add(TfKernels *k, float *y, const float *a, const float *b, size_t n, TfError *err)
{
    CALL(tfc_binary(ST(k), 0, y, a, b, n, msg));
}

static int cuda_mul(TfKernels *k, float *y, const float *a, const float *b, size_t n, TfError *err)
{
    CALL(tfc_binary(ST(k), 1, y, a, b, n, msg));
}

static int cuda_axpby(TfKernels *k, float *y, float alpha, const float *x, float beta, size_t n, TfError *err)
{
    CALL(tfc_axpby(ST(k), y, alpha, x, beta, n, msg));
}

static int cuda_scale_shift(TfKernels *k, float *y, const float *a, float scale, float shift, size_t n, TfError *err)
{
    CALL(tfc_scale_shift(ST(k), y, a, scale, shift, n, msg));
}

static int cuda_silu(TfKernels *k, float *y, const float *x, size_t n, TfError *err)
{
    CALL(tfc_silu(ST(k), y, x, n, msg));
}

static int cuda_silu_backward(TfKernels *k, float *dx, const float *dy, const float *x, size_t n, TfError *err)
{
    CALL(tfc_silu_backward(ST(k), dx, dy, x, n, msg));
}

static int cuda_swiglu(TfKernels *k, float *h, const float *g, const float *u, size_t n, TfError *err)
{
    CALL(tfc_swiglu(ST(k), h, g, u, n, msg));
}

static int cuda_swiglu_backward(TfKernels *k, float *dg, float *du, const float *dh, const float *g, const float *u,
                                size_t n, TfError *err)
{
    CALL(tfc_swiglu_backward(ST(k), dg, du, dh, g, u, n, msg));
}

static int cuda_adamw(TfKernels *k, float *param, const float *grad, float *m, float *v, size_t n, const TfAdamW *h,
                      float grad_scale, TfError *err)
{
    TfAdamWScalars c;
    tf_adamw_scalars(h, &c);
    CALL(tfc_adamw(ST(k), param, grad, m, v, n, c.decay, c.w1, c.b2, c.w2, c.step_size, c.bc2_sqrt, c.eps, grad_scale,
                   msg));
}

static int cuda_randn(TfKernels *k, float *y, size_t n, uint64_t seed, uint64_t stream, uint64_t offset, float mean,
                      float std, TfError *err)
{
    CALL(tfc_randn(ST(k), y, n, seed, stream, offset, mean, std, msg));
}

static int cuda_sum_squares(TfKernels *k, double *out, const float *x, size_t n, TfError *err)
{
    CALL(tfc_sum_squares(ST(k), out, x, n, msg));
}

static const TfKernelsOps cuda_ops = {
    .destroy = cuda_destroy,
    .sync = cuda_sync,
    .alloc = cuda_alloc,
    .release = cuda_release,
    .upload = cuda_upload,
    .download = cuda_download,
    .fill = cuda_fill,
    .copy = cuda_copy,
    .add = cuda_add,
    .mul = cuda_mul,
    .axpby = cuda_axpby,
    .scale_shift = cuda_scale_shift,
    .silu = cuda_silu,
    .silu_backward = cuda_silu_backward,
    .swiglu = cuda_swiglu,
    .swiglu_backward = cuda_swiglu_backward,
    .adamw = cuda_adamw,
    .randn = cuda_randn,
    .sum_squares = cuda_sum_squares,
};

int tf_cuda_backend_init(TfKernels *k, TfError *err)
{
    char msg[TFC_MSG] = "";
    TfcState *st = NULL;
    if (tfc_init(&st, msg))
        return tf_fail(err, "cuda backend: %s", msg);
    if (k->threads <= 0)
        k->threads = 1;
    k->impl = st;
    k->ops = &cuda_ops;
    return 0;
}
