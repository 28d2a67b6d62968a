/* kernels.c: the front end of kernels.h. Chooses the backend, checks every
 * kernel's shapes, dtypes and required buffers (so all backends refuse the
 * same misuse with the same message), and dispatches through the backend's
 * table (backend.h). Also the host-side helpers that both backends share:
 * RoPE frequencies, the Philox generator, the clipping factor. */
#include "backend.h"
#include "philox.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- backends and contexts ---- */

int tf_backend_parse(const char *name, TfBackend *out, TfError *err)
{
    if (name && !strcmp(name, "cpu"))
        *out = TF_BACKEND_CPU;
    else if (name && !strcmp(name, "cuda"))
        *out = TF_BACKEND_CUDA;
    else
        return tf_fail(err, "unknown device '%s' (expected cpu or cuda)", name ? name : "");
    return 0;
}

const char *tf_backend_name(TfBackend backend)
{
    switch (backend) {
    case TF_BACKEND_CPU:
        return "cpu";
    case TF_BACKEND_CUDA:
        return "cuda";
    }
    return "unknown";
}

TfKernels *tf_kernels_new(TfBackend backend, int threads, TfError *err)
{
    TfKernels *k = calloc(1, sizeof *k);
    if (!k) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    k->backend = backend;
    k->threads = threads;
    k->winograd = 1;
    int rc;
    switch (backend) {
    case TF_BACKEND_CPU:
        rc = tf_cpu_backend_init(k, err);
        break;
    case TF_BACKEND_CUDA:
#ifdef TF_HAVE_CUDA
        rc = tf_cuda_backend_init(k, err);
#else
        rc = tf_fail(err, "the cuda backend is not built into this binary (CPU only)");
#endif
        break;
    default:
        rc = tf_fail(err, "unknown backend %d", (int)backend);
    }
    if (rc) {
        free(k);
        return NULL;
    }
    return k;
}

void tf_kernels_free(TfKernels *k)
{
    if (!k)
        return;
    if (k->ops && k->ops->destroy)
        k->ops->destroy(k);
    free(k);
}

TfBackend tf_kernels_backend(const TfKernels *k)
{
    return k->backend;
}

const char *tf_kernels_backend_name(const TfKernels *k)
{
    return tf_backend_name(k->backend);
}

int tf_kernels_threads(const TfKernels *k)
{
    return k->threads;
}

void tf_kernels_set_winograd(TfKernels *k, int on)
{
    k->winograd = on;
}

int tf_kernels_sync(TfKernels *k, TfError *err)
{
    return k->ops->sync ? k->ops->sync(k, err) : 0;
}

double tf_kernels_sgemm_peak(TfKernels *k, int n, int reps)
{
    if (n <= 0 || n > 16384 || reps <= 0 || !k->ops->sgemm_peak)
        return 0.0;
    return k->ops->sgemm_peak(k, n, reps);
}

/* ---- checks ---- */

/* The largest element count a buffer may have: well inside size_t for
 * byte offsets, and what any backend can index. */
#define MAX_ELEMS ((size_t)1 << 40)

static int not_implemented(const TfKernels *k, const char *kernel, TfError *err)
{
    return tf_fail(err, "%s is not implemented on the %s backend", kernel, tf_kernels_backend_name(k));
}

/* Calls the backend's entry `name` after the checks, or reports it missing. */
#define DISPATCH(name, ...) (k->ops->name ? k->ops->name(k, __VA_ARGS__) : not_implemented(k, #name, err))

/* Element count of a tensor whose dims are given as `ndims` ints (each >=
 * 0), or -1 with err naming the kernel when one is negative or the product
 * exceeds MAX_ELEMS. */
static int elems(TfError *err, const char *kernel, size_t *out, int ndims, ...)
{
    va_list ap;
    va_start(ap, ndims);
    size_t n = 1;
    int bad = 0;
    for (int i = 0; i < ndims; i++) {
        long long d = va_arg(ap, long long);
        if (d < 0)
            bad = 1;
        else if (d && n > MAX_ELEMS / (size_t)d)
            bad = 2;
        else
            n *= (size_t)d;
    }
    va_end(ap);
    if (bad == 1)
        return tf_fail(err, "%s: negative dimension", kernel);
    if (bad == 2)
        return tf_fail(err, "%s: tensor too large (over 2^40 elements)", kernel);
    *out = n;
    return 0;
}
#define ELEMS(kernel, out, ...) elems(err, kernel, out, TF_NARGS(__VA_ARGS__), TF_LL(__VA_ARGS__))
/* Up to 5 dims, each promoted to long long for the va_list. */
#define TF_NARGS(...) TF_NARGS_(__VA_ARGS__, 5, 4, 3, 2, 1)
#define TF_NARGS_(a, b, c, d, e, n, ...) n
#define TF_LL(...) TF_LL_N(TF_NARGS(__VA_ARGS__), __VA_ARGS__)
#define TF_LL_N(n, ...) TF_LL_N_(n, __VA_ARGS__)
#define TF_LL_N_(n, ...) TF_LL_##n(__VA_ARGS__)
#define TF_LL_1(a) (long long)(a)
#define TF_LL_2(a, b) (long long)(a), (long long)(b)
#define TF_LL_3(a, b, c) (long long)(a), (long long)(b), (long long)(c)
#define TF_LL_4(a, b, c, d) (long long)(a), (long long)(b), (long long)(c), (long long)(d)
#define TF_LL_5(a, b, c, d, e) (long long)(a), (long long)(b), (long long)(c), (long long)(d), (long long)(e)

/* Fails naming the first NULL among the `count` (name, pointer) pairs. */
static int need(TfError *err, const char *kernel, int count, ...)
{
    va_list ap;
    va_start(ap, count);
    const char *missing = NULL;
    for (int i = 0; i < count; i++) {
        const char *name = va_arg(ap, const char *);
        const void *p = va_arg(ap, const void *);
        if (!p && !missing)
            missing = name;
    }
    va_end(ap);
    return missing ? tf_fail(err, "%s: buffer '%s' is NULL", kernel, missing) : 0;
}
#define NEED1(kn, a) need(err, kn, 1, #a, (const void *)(a))
#define NEED2(kn, a, b) need(err, kn, 2, #a, (const void *)(a), #b, (const void *)(b))
#define NEED3(kn, a, b, c) need(err, kn, 3, #a, (const void *)(a), #b, (const void *)(b), #c, (const void *)(c))
#define NEED4(kn, a, b, c, d) \
    need(err, kn, 4, #a, (const void *)(a), #b, (const void *)(b), #c, (const void *)(c), #d, (const void *)(d))

static int positive(TfError *err, const char *kernel, const char *what, long long v)
{
    return v > 0 ? 0 : tf_fail(err, "%s: %s must be positive (got %lld)", kernel, what, v);
}
#define POSITIVE(kn, v) positive(err, kn, #v, (long long)(v))

static int weight_dtype(TfError *err, const char *kernel, const char *what, TfBuf w)
{
    if (!w.data)
        return tf_fail(err, "%s: buffer '%s' is NULL", kernel, what);
    if (w.dtype != TF_DTYPE_F32 && w.dtype != TF_DTYPE_BF16)
        return tf_fail(err, "%s: %s is %s; weights must be F32 or BF16", kernel, what, tf_dtype_name(w.dtype));
    return 0;
}

/* ---- buffers ---- */

static int buffer_dtype(TfDtype dtype)
{
    return dtype == TF_DTYPE_F32 || dtype == TF_DTYPE_BF16 || dtype == TF_DTYPE_I32;
}

void *tf_kernels_alloc_as(TfKernels *k, TfDtype dtype, size_t n, TfError *err)
{
    if (!buffer_dtype(dtype)) {
        tf_fail(err, "kernel buffers hold F32, BF16 or I32, not %s", tf_dtype_name(dtype));
        return NULL;
    }
    if (n > MAX_ELEMS) {
        tf_fail(err, "buffer of %zu elements is too large", n);
        return NULL;
    }
    return k->ops->alloc(k, n * tf_dtype_size(dtype), err);
}

float *tf_kernels_alloc(TfKernels *k, size_t n, TfError *err)
{
    return tf_kernels_alloc_as(k, TF_DTYPE_F32, n, err);
}

void tf_kernels_release(TfKernels *k, void *buf)
{
    if (buf)
        k->ops->release(k, buf);
}

int tf_kernels_upload_bytes(TfKernels *k, void *dst, const void *host, size_t bytes, TfError *err)
{
    if (!bytes)
        return 0;
    if (NEED2("upload", dst, host))
        return -1;
    return k->ops->upload(k, dst, host, bytes, err);
}

int tf_kernels_download_bytes(TfKernels *k, void *host, const void *src, size_t bytes, TfError *err)
{
    if (!bytes)
        return 0;
    if (NEED2("download", host, src))
        return -1;
    return k->ops->download(k, host, src, bytes, err);
}

int tf_kernels_upload(TfKernels *k, float *dst, const float *host, size_t n, TfError *err)
{
    if (n > MAX_ELEMS)
        return tf_fail(err, "upload: %zu floats is too many", n);
    return tf_kernels_upload_bytes(k, dst, host, n * sizeof(float), err);
}

int tf_kernels_download(TfKernels *k, float *host, const float *src, size_t n, TfError *err)
{
    if (n > MAX_ELEMS)
        return tf_fail(err, "download: %zu floats is too many", n);
    return tf_kernels_download_bytes(k, host, src, n * sizeof(float), err);
}

/* ---- elementwise ---- */

/* Checks shared by the flat kernels over n elements: n within limits, and
 * returns 1 (done, nothing to do) for n = 0. */
static int flat(TfError *err, const char *kernel, size_t n, int *rc)
{
    *rc = 0;
    if (n > MAX_ELEMS) {
        *rc = tf_fail(err, "%s: %zu elements is too many", kernel, n);
        return 1;
    }
    return n == 0;
}

int tf_fill(TfKernels *k, float *y, float value, size_t n, TfError *err)
{
    int rc;
    if (flat(err, "fill", n, &rc))
        return rc;
    if (NEED1("fill", y))
        return -1;
    return DISPATCH(fill, y, value, n, err);
}

int tf_copy(TfKernels *k, float *y, const float *x, size_t n, TfError *err)
{
    int rc;
    if (flat(err, "copy", n, &rc))
        return rc;
    if (NEED2("copy", y, x))
        return -1;
    return DISPATCH(copy, y, x, n, err);
}

int tf_convert(TfKernels *k, void *y, TfDtype y_dtype, TfBuf x, size_t n, TfError *err)
{
    int rc;
    if (flat(err, "convert", n, &rc))
        return rc;
    if (NEED1("convert", y) || weight_dtype(err, "convert", "x", x))
        return -1;
    if (y_dtype != TF_DTYPE_F32 && y_dtype != TF_DTYPE_BF16)
        return tf_fail(err, "convert: cannot convert to %s", tf_dtype_name(y_dtype));
    return DISPATCH(convert, y, y_dtype, x, n, err);
}

int tf_add(TfKernels *k, float *y, const float *a, const float *b, size_t n, TfError *err)
{
    int rc;
    if (flat(err, "add", n, &rc))
        return rc;
    if (NEED3("add", y, a, b))
        return -1;
    return DISPATCH(add, y, a, b, n, err);
}

int tf_mul(TfKernels *k, float *y, const float *a, const float *b, size_t n, TfError *err)
{
    int rc;
    if (flat(err, "mul", n, &rc))
        return rc;
    if (NEED3("mul", y, a, b))
        return -1;
    return DISPATCH(mul, y, a, b, n, err);
}

int tf_axpby(TfKernels *k, float *y, float alpha, const float *x, float beta, size_t n, TfError *err)
{
    int rc;
    if (flat(err, "axpby", n, &rc))
        return rc;
    if (NEED2("axpby", y, x))
        return -1;
    return DISPATCH(axpby, y, alpha, x, beta, n, err);
}

int tf_scale_shift(TfKernels *k, float *y, const float *a, float scale, float shift, size_t n, TfError *err)
{
    int rc;
    if (flat(err, "scale_shift", n, &rc))
        return rc;
    if (NEED2("scale_shift", y, a))
        return -1;
    return DISPATCH(scale_shift, y, a, scale, shift, n, err);
}

int tf_silu(TfKernels *k, float *y, const float *x, size_t n, TfError *err)
{
    int rc;
    if (flat(err, "silu", n, &rc))
        return rc;
    if (NEED2("silu", y, x))
        return -1;
    return DISPATCH(silu, y, x, n, err);
}

int tf_silu_backward(TfKernels *k, float *dx, const float *dy, const float *x, size_t n, TfError *err)
{
    int rc;
    if (flat(err, "silu_backward", n, &rc))
        return rc;
    if (NEED3("silu_backward", dx, dy, x))
        return -1;
    return DISPATCH(silu_backward, dx, dy, x, n, err);
}

int tf_swiglu(TfKernels *k, float *h, const float *g, const float *u, size_t n, TfError *err)
{
    int rc;
    if (flat(err, "swiglu", n, &rc))
        return rc;
    if (NEED3("swiglu", h, g, u))
        return -1;
    return DISPATCH(swiglu, h, g, u, n, err);
}

int tf_swiglu_backward(TfKernels *k, float *dg, float *du, const float *dh, const float *g, const float *u, size_t n,
                       TfError *err)
{
    int rc;
    if (flat(err, "swiglu_backward", n, &rc))
        return rc;
    if (NEED3("swiglu_backward", dh, g, u))
        return -1;
    if (!dg && !du)
        return 0;
    return DISPATCH(swiglu_backward, dg, du, dh, g, u, n, err);
}

int tf_add_rows(TfKernels *k, float *y, const float *b, int N, int D, TfError *err)
{
    size_t n;
    if (ELEMS("add_rows", &n, N, D) || POSITIVE("add_rows", D))
        return -1;
    if (!n)
        return 0;
    if (NEED2("add_rows", y, b))
        return -1;
    return DISPATCH(add_rows, y, b, N, D, err);
}

int tf_sum_rows(TfKernels *k, float *db, const float *dy, int N, int D, TfError *err)
{
    size_t n;
    if (ELEMS("sum_rows", &n, N, D) || POSITIVE("sum_rows", D))
        return -1;
    if (!n)
        return 0;
    if (NEED2("sum_rows", db, dy))
        return -1;
    return DISPATCH(sum_rows, db, dy, N, D, err);
}

static int channel_map_check(TfError *err, const char *kernel, int B, int C, size_t HW, size_t *n)
{
    if (ELEMS(kernel, n, B, C) || POSITIVE(kernel, C) || POSITIVE(kernel, HW))
        return -1;
    if (HW > MAX_ELEMS / (*n ? *n : 1))
        return tf_fail(err, "%s: tensor too large", kernel);
    return 0;
}

int tf_add_channels(TfKernels *k, float *y, const float *v, int B, int C, size_t HW, TfError *err)
{
    size_t n;
    if (channel_map_check(err, "add_channels", B, C, HW, &n))
        return -1;
    if (!n)
        return 0;
    if (NEED2("add_channels", y, v))
        return -1;
    return DISPATCH(add_channels, y, v, B, C, HW, err);
}

int tf_sum_channels(TfKernels *k, float *dv, const float *dy, int B, int C, size_t HW, TfError *err)
{
    size_t n;
    if (channel_map_check(err, "sum_channels", B, C, HW, &n))
        return -1;
    if (!n)
        return 0;
    if (NEED2("sum_channels", dv, dy))
        return -1;
    return DISPATCH(sum_channels, dv, dy, B, C, HW, err);
}

/* ---- layout ---- */

int tf_transpose(TfKernels *k, float *y, const float *x, int B, int M, int N, TfError *err)
{
    size_t n;
    if (ELEMS("transpose", &n, B, M, N))
        return -1;
    if (!n)
        return 0;
    if (NEED2("transpose", y, x))
        return -1;
    if ((const float *)y == x)
        return tf_fail(err, "transpose: y must not alias x");
    return DISPATCH(transpose, y, x, B, M, N, err);
}

static int channels_check(TfError *err, const char *kernel, int B, int C1, int C2, size_t HW, size_t *n)
{
    if (ELEMS(kernel, n, B, C1) || POSITIVE(kernel, C1) || POSITIVE(kernel, C2) || POSITIVE(kernel, HW))
        return -1;
    if ((size_t)C1 + (size_t)C2 > MAX_ELEMS / HW || (size_t)B * ((size_t)C1 + C2) > MAX_ELEMS / HW)
        return tf_fail(err, "%s: tensor too large", kernel);
    return 0;
}

int tf_concat_channels(TfKernels *k, float *y, const float *a, const float *b, int B, int C1, int C2, size_t HW,
                       TfError *err)
{
    size_t n;
    if (channels_check(err, "concat_channels", B, C1, C2, HW, &n))
        return -1;
    if (!B)
        return 0;
    if (NEED3("concat_channels", y, a, b))
        return -1;
    return DISPATCH(concat_channels, y, a, b, B, C1, C2, HW, err);
}

int tf_split_channels(TfKernels *k, float *da, float *db, const float *dy, int B, int C1, int C2, size_t HW,
                      TfError *err)
{
    size_t n;
    if (channels_check(err, "split_channels", B, C1, C2, HW, &n))
        return -1;
    if (!B || (!da && !db))
        return 0;
    if (NEED1("split_channels", dy))
        return -1;
    return DISPATCH(split_channels, da, db, dy, B, C1, C2, HW, err);
}

static int patch_check(TfError *err, const char *kernel, int B, int C, int H, int W, int p, size_t *n)
{
    if (ELEMS(kernel, n, B, C, H, W) || POSITIVE(kernel, C) || POSITIVE(kernel, H) || POSITIVE(kernel, W) ||
        POSITIVE(kernel, p))
        return -1;
    if (H % p || W % p)
        return tf_fail(err, "%s: %dx%d is not a multiple of the patch size %d", kernel, W, H, p);
    return 0;
}

int tf_patchify(TfKernels *k, float *rows, const float *x, int B, int C, int H, int W, int p, TfError *err)
{
    size_t n;
    if (patch_check(err, "patchify", B, C, H, W, p, &n))
        return -1;
    if (!n)
        return 0;
    if (NEED2("patchify", rows, x))
        return -1;
    return DISPATCH(patchify, rows, x, B, C, H, W, p, err);
}

int tf_unpatchify(TfKernels *k, float *x, const float *rows, int B, int C, int H, int W, int p, TfError *err)
{
    size_t n;
    if (patch_check(err, "unpatchify", B, C, H, W, p, &n))
        return -1;
    if (!n)
        return 0;
    if (NEED2("unpatchify", x, rows))
        return -1;
    return DISPATCH(unpatchify, x, rows, B, C, H, W, p, err);
}

int tf_rows_gather(TfKernels *k, float *y, const float *x, const int32_t *idx, int R, int N, int D, TfError *err)
{
    size_t ny, nx;
    if (ELEMS("rows_gather", &ny, R, D) || ELEMS("rows_gather", &nx, N, D) || POSITIVE("rows_gather", D))
        return -1;
    if (!R)
        return 0;
    if (NEED3("rows_gather", y, x, idx))
        return -1;
    if (!N)
        return tf_fail(err, "rows_gather: %d rows from an empty tensor", R);
    return DISPATCH(rows_gather, y, x, idx, R, N, D, err);
}

int tf_rows_scatter(TfKernels *k, float *y, const float *x, const int32_t *idx, int R, int N, int D, int accumulate,
                    TfError *err)
{
    size_t ny, nx;
    if (ELEMS("rows_scatter", &ny, N, D) || ELEMS("rows_scatter", &nx, R, D) || POSITIVE("rows_scatter", D))
        return -1;
    if (!R)
        return 0;
    if (NEED3("rows_scatter", y, x, idx))
        return -1;
    if (!N)
        return tf_fail(err, "rows_scatter: %d rows into an empty tensor", R);
    return DISPATCH(rows_scatter, y, x, idx, R, N, D, accumulate, err);
}

/* ---- matrix products ---- */

int tf_matmul(TfKernels *k, float *c, const float *a, TfBuf b, int M, int N, int K, int trans_a, int trans_b,
              float alpha, float beta, const float *bias, TfError *err)
{
    size_t n;
    if (ELEMS("matmul", &n, M, N) || ELEMS("matmul", &n, M, K) || ELEMS("matmul", &n, K, N))
        return -1;
    if (!M || !N)
        return 0;
    if (NEED1("matmul", c) || (K && (NEED1("matmul", a) || weight_dtype(err, "matmul", "b", b))))
        return -1;
    return DISPATCH(matmul, c, a, b, M, N, K, trans_a != 0, trans_b != 0, alpha, beta, bias, err);
}

int tf_linear(TfKernels *k, float *y, const float *x, TfBuf w, const float *bias, int N, int in, int out,
              TfError *err)
{
    if (POSITIVE("linear", in) || POSITIVE("linear", out))
        return -1;
    return tf_matmul(k, y, x, w, N, out, in, 0, 1, 1.0f, 0.0f, bias, err);
}

int tf_linear_backward(TfKernels *k, float *dx, float *dw, float *db, const float *dy, const float *x, TfBuf w, int N,
                       int in, int out, int accumulate, TfError *err)
{
    if (POSITIVE("linear_backward", in) || POSITIVE("linear_backward", out))
        return -1;
    if (N > 0 && NEED1("linear_backward", dy))
        return -1;
    if (dw && N > 0 && NEED1("linear_backward", x))
        return -1;
    /* dx (N,in) = dy (N,out) w (out,in) */
    if (dx && tf_matmul(k, dx, dy, w, N, in, out, 0, 0, 1.0f, accumulate ? 1.0f : 0.0f, NULL, err))
        return -1;
    /* dw (out,in) += dy^T (out,N) x (N,in) */
    if (dw && tf_matmul(k, dw, dy, tf_buf_f32(x), out, in, N, 1, 0, 1.0f, 1.0f, NULL, err))
        return -1;
    return db ? tf_sum_rows(k, db, dy, N, out, err) : 0;
}

/* ---- normalisation ---- */

int tf_rms_norm(TfKernels *k, float *y, float *rstd, const float *x, TfBuf w, int N, int D, float eps, TfError *err)
{
    size_t n;
    if (ELEMS("rms_norm", &n, N, D) || POSITIVE("rms_norm", D))
        return -1;
    if (!(eps >= 0.0f))
        return tf_fail(err, "rms_norm: eps must be >= 0");
    if (!N)
        return 0;
    if (NEED2("rms_norm", y, x) || weight_dtype(err, "rms_norm", "w", w))
        return -1;
    return DISPATCH(rms_norm, y, rstd, x, w, N, D, eps, err);
}

int tf_rms_norm_backward(TfKernels *k, float *dx, float *dw, const float *dy, const float *x, const float *rstd,
                         TfBuf w, int N, int D, TfError *err)
{
    size_t n;
    if (ELEMS("rms_norm_backward", &n, N, D) || POSITIVE("rms_norm_backward", D))
        return -1;
    if (!N || (!dx && !dw))
        return 0;
    if (NEED3("rms_norm_backward", dy, x, rstd) || weight_dtype(err, "rms_norm_backward", "w", w))
        return -1;
    return DISPATCH(rms_norm_backward, dx, dw, dy, x, rstd, w, N, D, err);
}

int tf_layer_norm(TfKernels *k, float *y, float *mean, float *rstd, const float *x, const float *w, const float *b,
                  int N, int D, float eps, TfError *err)
{
    size_t n;
    if (ELEMS("layer_norm", &n, N, D) || POSITIVE("layer_norm", D))
        return -1;
    if (!(eps >= 0.0f))
        return tf_fail(err, "layer_norm: eps must be >= 0");
    if (!N)
        return 0;
    if (NEED2("layer_norm", y, x))
        return -1;
    return DISPATCH(layer_norm, y, mean, rstd, x, w, b, N, D, eps, err);
}

int tf_layer_norm_backward(TfKernels *k, float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *mean, const float *rstd, const float *w, int N, int D, TfError *err)
{
    size_t n;
    if (ELEMS("layer_norm_backward", &n, N, D) || POSITIVE("layer_norm_backward", D))
        return -1;
    if (!N || (!dx && !dw && !db))
        return 0;
    if (NEED4("layer_norm_backward", dy, x, mean, rstd))
        return -1;
    return DISPATCH(layer_norm_backward, dx, dw, db, dy, x, mean, rstd, w, N, D, err);
}

static int group_check(TfError *err, const char *kernel, int B, int C, size_t HW, int groups)
{
    size_t n;
    if (ELEMS(kernel, &n, B, C) || POSITIVE(kernel, C) || POSITIVE(kernel, HW) || POSITIVE(kernel, groups))
        return -1;
    if (C % groups)
        return tf_fail(err, "%s: %d channels do not split into %d groups", kernel, C, groups);
    if (HW > MAX_ELEMS / (n ? n : 1))
        return tf_fail(err, "%s: tensor too large", kernel);
    return 0;
}

int tf_group_norm(TfKernels *k, float *y, float *mean, float *rstd, const float *x, const float *gamma,
                  const float *beta, int B, int C, size_t HW, int groups, float eps, int fuse_silu, TfError *err)
{
    if (group_check(err, "group_norm", B, C, HW, groups))
        return -1;
    if (!(eps >= 0.0f))
        return tf_fail(err, "group_norm: eps must be >= 0");
    if (!B)
        return 0;
    if (NEED2("group_norm", y, x))
        return -1;
    return DISPATCH(group_norm, y, mean, rstd, x, gamma, beta, B, C, HW, groups, eps, fuse_silu != 0, err);
}

int tf_group_norm_backward(TfKernels *k, float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                           const float *mean, const float *rstd, const float *gamma, int B, int C, size_t HW,
                           int groups, TfError *err)
{
    if (group_check(err, "group_norm_backward", B, C, HW, groups))
        return -1;
    if (!B || (!dx && !dgamma && !dbeta))
        return 0;
    if (NEED4("group_norm_backward", dy, x, mean, rstd))
        return -1;
    return DISPATCH(group_norm_backward, dx, dgamma, dbeta, dy, x, mean, rstd, gamma, B, C, HW, groups, err);
}

/* ---- convolution ---- */

int tf_conv2d_out_h(const TfConv2dShape *s)
{
    if (s->stride <= 0)
        return 0;
    long long span = (long long)s->H + s->pad_top + s->pad_bottom - s->R;
    return span < 0 || span / s->stride >= INT_MAX ? 0 : (int)(span / s->stride + 1);
}

int tf_conv2d_out_w(const TfConv2dShape *s)
{
    if (s->stride <= 0)
        return 0;
    long long span = (long long)s->W + s->pad_left + s->pad_right - s->R;
    return span < 0 || span / s->stride >= INT_MAX ? 0 : (int)(span / s->stride + 1);
}

static int conv_check(TfError *err, const char *kernel, const TfConv2dShape *s)
{
    if (!s)
        return tf_fail(err, "%s: no shape", kernel);
    size_t n;
    if (s->B < 0 || s->C <= 0 || s->H <= 0 || s->W <= 0 || s->K <= 0 || s->R <= 0 || s->stride <= 0 ||
        s->pad_top < 0 || s->pad_left < 0 || s->pad_bottom < 0 || s->pad_right < 0 || tf_conv2d_out_h(s) <= 0 ||
        tf_conv2d_out_w(s) <= 0)
        return tf_fail(err, "%s: invalid geometry (B %d, C %d, %dx%d, K %d, R %d, stride %d, pad %d/%d/%d/%d)",
                       kernel, s->B, s->C, s->W, s->H, s->K, s->R, s->stride, s->pad_top, s->pad_left,
                       s->pad_bottom, s->pad_right);
    if (ELEMS(kernel, &n, s->B, s->C, s->H, s->W) || ELEMS(kernel, &n, s->K, s->C, s->R, s->R) ||
        ELEMS(kernel, &n, s->B, s->K, tf_conv2d_out_h(s), tf_conv2d_out_w(s)))
        return -1;
    return 0;
}

int tf_conv2d(TfKernels *k, float *y, const float *x, const float *w, const float *bias, const TfConv2dShape *s,
              TfError *err)
{
    if (conv_check(err, "conv2d", s))
        return -1;
    if (!s->B)
        return 0;
    if (NEED3("conv2d", y, x, w))
        return -1;
    return DISPATCH(conv2d, y, x, w, bias, s, err);
}

int tf_conv2d_backward(TfKernels *k, float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                       const TfConv2dShape *s, TfError *err)
{
    if (conv_check(err, "conv2d_backward", s))
        return -1;
    if (!s->B || (!dx && !dw && !db))
        return 0;
    if (NEED1("conv2d_backward", dy) || (dx && NEED1("conv2d_backward", w)) || (dw && NEED1("conv2d_backward", x)))
        return -1;
    return DISPATCH(conv2d_backward, dx, dw, db, dy, x, w, s, err);
}

static int upsample_check(TfError *err, const char *kernel, int B, int C, int H, int W)
{
    size_t n;
    if (ELEMS(kernel, &n, B, C, 2 * (long long)H, 2 * (long long)W) || POSITIVE(kernel, C) || POSITIVE(kernel, H) ||
        POSITIVE(kernel, W))
        return -1;
    if (H > (1 << 29) || W > (1 << 29))
        return tf_fail(err, "%s: %dx%d too large", kernel, W, H);
    return 0;
}

int tf_upsample_nearest2x(TfKernels *k, float *y, const float *x, int B, int C, int H, int W, TfError *err)
{
    if (upsample_check(err, "upsample_nearest2x", B, C, H, W))
        return -1;
    if (!B)
        return 0;
    if (NEED2("upsample_nearest2x", y, x))
        return -1;
    return DISPATCH(upsample_nearest2x, y, x, B, C, H, W, err);
}

int tf_upsample_nearest2x_backward(TfKernels *k, float *dx, const float *dy, int B, int C, int H, int W, TfError *err)
{
    if (upsample_check(err, "upsample_nearest2x_backward", B, C, H, W))
        return -1;
    if (!B)
        return 0;
    if (NEED2("upsample_nearest2x_backward", dx, dy))
        return -1;
    return DISPATCH(upsample_nearest2x_backward, dx, dy, B, C, H, W, err);
}

/* ---- rotary position embedding ---- */

/* The most head dims RoPE accepts: a bound for the stack table below. */
#define ROPE_MAX_HD 1024

int tf_rope_inv_freq(const TfRope *r, double *inv_freq, TfError *err)
{
    if (!r || !inv_freq)
        return tf_fail(err, "rope: no parameters");
    if (r->head_dim <= 0 || r->head_dim % 2 || r->head_dim > ROPE_MAX_HD)
        return tf_fail(err, "rope: head_dim %d must be even and in 2..%d", r->head_dim, ROPE_MAX_HD);
    if (!(r->theta > 1.0))
        return tf_fail(err, "rope: theta %g must be > 1", r->theta);
    const int scaled = r->factor != 0.0;
    if (scaled && !(r->factor >= 1.0 && r->low_freq_factor > 0.0 && r->high_freq_factor > r->low_freq_factor &&
                    r->original_max_position > 0))
        return tf_fail(err,
                       "rope: llama3 scaling needs factor >= 1, 0 < low_freq_factor < high_freq_factor and "
                       "original_max_position > 0 (got %g, %g, %g, %d)",
                       r->factor, r->low_freq_factor, r->high_freq_factor, r->original_max_position);
    const int half = r->head_dim / 2;
    for (int i = 0; i < half; i++) {
        double f = 1.0 / pow(r->theta, (double)(2 * i) / r->head_dim);
        if (scaled) { /* transformers' _compute_llama3_parameters */
            const double orig = r->original_max_position;
            const double low_wl = orig / r->low_freq_factor, high_wl = orig / r->high_freq_factor;
            const double wl = 2.0 * M_PI / f;
            if (wl > low_wl) {
                f /= r->factor;
            } else if (wl >= high_wl) {
                double smooth = (orig / wl - r->low_freq_factor) / (r->high_freq_factor - r->low_freq_factor);
                f = (1.0 - smooth) * f / r->factor + smooth * f;
            }
        }
        inv_freq[i] = f;
    }
    return 0;
}

int tf_rope_table(TfKernels *k, float *cos, float *sin, const TfRope *rope, int P, TfError *err)
{
    double inv_freq[ROPE_MAX_HD / 2];
    if (tf_rope_inv_freq(rope, inv_freq, err))
        return tf_fail_context(err, "rope_table");
    size_t n;
    if (ELEMS("rope_table", &n, P, rope->head_dim / 2) || POSITIVE("rope_table", P))
        return -1;
    if (NEED2("rope_table", cos, sin))
        return -1;
    return DISPATCH(rope_table, cos, sin, inv_freq, rope->head_dim / 2, P, err);
}

static int rope_check(TfError *err, const char *kernel, int N, int H, int HD, int P)
{
    size_t n;
    if (ELEMS(kernel, &n, N, H, HD) || POSITIVE(kernel, H) || POSITIVE(kernel, HD) || POSITIVE(kernel, P))
        return -1;
    if (HD % 2 || HD > ROPE_MAX_HD)
        return tf_fail(err, "%s: head dim %d must be even and at most %d", kernel, HD, ROPE_MAX_HD);
    return 0;
}

int tf_rope(TfKernels *k, float *x, const float *cos, const float *sin, const int32_t *pos, int N, int H, int HD, int P,
            TfError *err)
{
    if (rope_check(err, "rope", N, H, HD, P))
        return -1;
    if (!N)
        return 0;
    if (NEED4("rope", x, cos, sin, pos))
        return -1;
    return DISPATCH(rope, x, cos, sin, pos, N, H, HD, P, 1, err);
}

int tf_rope_backward(TfKernels *k, float *dx, const float *cos, const float *sin, const int32_t *pos, int N, int H,
                     int HD, int P, TfError *err)
{
    if (rope_check(err, "rope_backward", N, H, HD, P))
        return -1;
    if (!N)
        return 0;
    if (NEED4("rope_backward", dx, cos, sin, pos))
        return -1;
    return DISPATCH(rope, dx, cos, sin, pos, N, H, HD, P, -1, err);
}

/* ---- attention ---- */

static int attn_check(TfError *err, const char *kernel, const TfAttnShape *s, const int32_t *lo, const int32_t *hi)
{
    if (!s)
        return tf_fail(err, "%s: no shape", kernel);
    size_t n;
    if (ELEMS(kernel, &n, s->B, s->T, s->NH, s->HD) || POSITIVE(kernel, s->T) || POSITIVE(kernel, s->NH) ||
        POSITIVE(kernel, s->NKV) || POSITIVE(kernel, s->HD))
        return -1;
    if (s->NH % s->NKV)
        return tf_fail(err, "%s: %d query heads do not share %d key/value heads evenly", kernel, s->NH, s->NKV);
    if (!isfinite(s->scale))
        return tf_fail(err, "%s: scale is not finite", kernel);
    if (!lo != !hi)
        return tf_fail(err, "%s: give both mask bounds (lo, hi) or neither", kernel);
    return 0;
}

int tf_attention_gqa(TfKernels *k, float *y, float *lse, const float *q, const float *kk, const float *v,
                     const int32_t *lo, const int32_t *hi, const TfAttnShape *s, TfError *err)
{
    if (attn_check(err, "attention_gqa", s, lo, hi))
        return -1;
    if (!s->B)
        return 0;
    if (NEED4("attention_gqa", y, q, kk, v))
        return -1;
    return DISPATCH(attention_gqa, y, lse, q, kk, v, lo, hi, s, err);
}

int tf_attention_gqa_backward(TfKernels *k, float *dq, float *dk, float *dv, const float *dy, const float *y,
                              const float *lse, const float *q, const float *kk, const float *v, const int32_t *lo,
                              const int32_t *hi, const TfAttnShape *s, TfError *err)
{
    if (attn_check(err, "attention_gqa_backward", s, lo, hi))
        return -1;
    if (!s->B || (!dq && !dk && !dv))
        return 0;
    if (NEED3("attention_gqa_backward", dy, y, lse) || NEED3("attention_gqa_backward", q, kk, v))
        return -1;
    return DISPATCH(attention_gqa_backward, dq, dk, dv, dy, y, lse, q, kk, v, lo, hi, s, err);
}

int tf_attention(TfKernels *k, float *y, const float *q, const float *kk, const float *v, int B, int C, int T,
                 float scale, TfError *err)
{
    size_t n;
    if (ELEMS("attention", &n, B, C, T) || POSITIVE("attention", C) || POSITIVE("attention", T))
        return -1;
    if (!B)
        return 0;
    if (NEED4("attention", y, q, kk, v))
        return -1;
    return DISPATCH(attention, y, q, kk, v, B, C, T, scale, err);
}

/* ---- embeddings ---- */

int tf_embedding(TfKernels *k, float *y, TfBuf table, const int32_t *ids, int N, int D, int V, TfError *err)
{
    size_t n;
    if (ELEMS("embedding", &n, N, D) || ELEMS("embedding", &n, V, D) || POSITIVE("embedding", D) ||
        POSITIVE("embedding", V))
        return -1;
    if (!N)
        return 0;
    if (NEED2("embedding", y, ids) || weight_dtype(err, "embedding", "table", table))
        return -1;
    return DISPATCH(embedding, y, table, ids, N, D, V, err);
}

int tf_embedding_backward(TfKernels *k, float *dtable, const float *dy, const int32_t *ids, const int32_t *rows, int R,
                          int N, int D, int V, TfError *err)
{
    size_t n;
    if (ELEMS("embedding_backward", &n, N, D) || ELEMS("embedding_backward", &n, R, D) ||
        POSITIVE("embedding_backward", D) || POSITIVE("embedding_backward", V))
        return -1;
    if (!rows && R != V)
        return tf_fail(err, "embedding_backward: without a row list R (%d) must equal V (%d)", R, V);
    if (!N || !R)
        return 0;
    if (NEED3("embedding_backward", dtable, dy, ids))
        return -1;
    return DISPATCH(embedding_backward, dtable, dy, ids, rows, R, N, D, V, err);
}

int tf_timestep_embedding(TfKernels *k, float *y, const float *t, int n, int D, int flip_sin_to_cos, float freq_shift,
                          float max_period, TfError *err)
{
    size_t m;
    if (ELEMS("timestep_embedding", &m, n, D) || POSITIVE("timestep_embedding", D))
        return -1;
    if (D >= 2 && !(D / 2 - (double)freq_shift > 0.0))
        return tf_fail(err, "timestep_embedding: D/2 - freq_shift must be positive");
    if (!(max_period > 0.0f))
        return tf_fail(err, "timestep_embedding: max_period must be positive");
    if (!n)
        return 0;
    if (NEED2("timestep_embedding", y, t))
        return -1;
    return DISPATCH(timestep_embedding, y, t, n, D, flip_sin_to_cos != 0, freq_shift, max_period, err);
}

/* ---- losses ---- */

int tf_cross_entropy_lm_head(TfKernels *k, float *losses, double *mean_loss, float *dh, float *dw,
                             const int32_t *w_rows, int R, const float *h, TfBuf w, const int32_t *targets, int N,
                             int D, int V, float grad_scale, TfError *err)
{
    const char *kn = "cross_entropy_lm_head";
    size_t n;
    if (ELEMS(kn, &n, N, D) || ELEMS(kn, &n, V, D) || ELEMS(kn, &n, R, D) || POSITIVE(kn, D) || POSITIVE(kn, V))
        return -1;
    if (dw && (R <= 0 || !w_rows))
        return tf_fail(err, "%s: dw needs its row list (w_rows, R > 0)", kn);
    if (!isfinite(grad_scale))
        return tf_fail(err, "%s: grad_scale is not finite", kn);
    if (!N) {
        if (mean_loss)
            *mean_loss = 0.0;
        return 0;
    }
    if (NEED2(kn, h, targets) || weight_dtype(err, kn, "w", w))
        return -1;
    return DISPATCH(cross_entropy_lm_head, losses, mean_loss, dh, dw, w_rows, dw ? R : 0, h, w, targets, N, D, V,
                    grad_scale, err);
}

int tf_mse(TfKernels *k, float *losses, double *mean_loss, float *dpred, const float *pred, const float *target, int B,
           size_t n, float grad_scale, TfError *err)
{
    if (B < 0 || n == 0 || n > MAX_ELEMS / (B ? (size_t)B : 1))
        return tf_fail(err, "mse: invalid shape (%d, %zu)", B, n);
    if (!isfinite(grad_scale))
        return tf_fail(err, "mse: grad_scale is not finite");
    if (!B) {
        if (mean_loss)
            *mean_loss = 0.0;
        return 0;
    }
    if (NEED2("mse", pred, target))
        return -1;
    return DISPATCH(mse, losses, mean_loss, dpred, pred, target, B, n, grad_scale, err);
}

/* ---- diffusion inputs ---- */

int tf_noise_mix(TfKernels *k, float *xt, const float *x0, const float *eps, const float *a, const float *s, int B,
                 size_t n, TfError *err)
{
    if (B < 0 || n == 0 || n > MAX_ELEMS / (B ? (size_t)B : 1))
        return tf_fail(err, "noise_mix: invalid shape (%d, %zu)", B, n);
    if (!B)
        return 0;
    if (NEED3("noise_mix", xt, x0, eps) || NEED2("noise_mix", a, s))
        return -1;
    return DISPATCH(noise_mix, xt, x0, eps, a, s, B, n, err);
}

int tf_latent_sample(TfKernels *k, float *z, const float *mean, const float *logvar, const float *eps, size_t n,
                     float shift, float scale, TfError *err)
{
    int rc;
    if (flat(err, "latent_sample", n, &rc))
        return rc;
    if (NEED2("latent_sample", z, mean) || (logvar && NEED1("latent_sample", eps)))
        return -1;
    return DISPATCH(latent_sample, z, mean, logvar, eps, n, shift, scale, err);
}

int tf_randn(TfKernels *k, float *y, size_t n, uint64_t seed, uint64_t stream, uint64_t offset, float mean, float std,
             TfError *err)
{
    int rc;
    if (flat(err, "randn", n, &rc))
        return rc;
    if (NEED1("randn", y))
        return -1;
    if (offset > UINT64_MAX - n)
        return tf_fail(err, "randn: offset + n overflows the counter");
    return DISPATCH(randn, y, n, seed, stream, offset, mean, std, err);
}

void tf_philox4x32(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4])
{
    tf_philox_block(counter, key, out);
}

/* ---- optimiser ---- */

int tf_adamw(TfKernels *k, float *param, const float *grad, float *m, float *v, size_t n, const TfAdamW *h,
             float grad_scale, TfError *err)
{
    int rc;
    if (!h)
        return tf_fail(err, "adamw: no hyper-parameters");
    if (!(h->lr >= 0.0) || !(h->beta1 >= 0.0 && h->beta1 < 1.0) || !(h->beta2 >= 0.0 && h->beta2 < 1.0) ||
        !(h->eps >= 0.0) || !(h->weight_decay >= 0.0) || h->step < 1 || !isfinite(grad_scale))
        return tf_fail(err, "adamw: invalid hyper-parameters (lr %g, betas %g %g, eps %g, wd %g, step %ld)", h->lr,
                       h->beta1, h->beta2, h->eps, h->weight_decay, h->step);
    if (flat(err, "adamw", n, &rc))
        return rc;
    if (NEED4("adamw", param, grad, m, v))
        return -1;
    return DISPATCH(adamw, param, grad, m, v, n, h, grad_scale, err);
}

void tf_adamw_scalars(const TfAdamW *h, TfAdamWScalars *s)
{
    const double t = (double)h->step;
    s->decay = (float)(1.0 - h->lr * h->weight_decay);
    s->w1 = (float)(1.0 - h->beta1);
    s->b2 = (float)h->beta2;
    s->w2 = (float)(1.0 - h->beta2);
    s->step_size = (float)(h->lr / (1.0 - pow(h->beta1, t)));
    s->bc2_sqrt = (float)sqrt(1.0 - pow(h->beta2, t));
    s->eps = (float)h->eps;
}

int tf_sum_squares(TfKernels *k, double *out, const float *x, size_t n, TfError *err)
{
    int rc;
    if (!out)
        return tf_fail(err, "sum_squares: no output");
    *out = 0.0;
    if (flat(err, "sum_squares", n, &rc))
        return rc;
    if (NEED1("sum_squares", x))
        return -1;
    return DISPATCH(sum_squares, out, x, n, err);
}

float tf_clip_grad_scale(double total_norm, double max_norm)
{
    if (!(max_norm > 0.0) || !isfinite(total_norm))
        return 1.0f;
    double coef = max_norm / (total_norm + 1e-6);
    return coef < 1.0 ? (float)coef : 1.0f;
}
