/* test_kernels_cuda.c: the CUDA backend against the CPU backend in one
 * process (the reason the backend is chosen at run time): every kernel the
 * CUDA build implements, on the same inputs, within float rounding; the
 * Philox noise to float rounding; a kernel not written for the GPU yet is
 * reported as such. Without a device it exits 77 (ctest: skipped). */
#include "kref.h"

static void compare(const char *what, TfKernels *gpu, const float *dev, const float *cpu, size_t n, double tol)
{
    float *host = zeros(n);
    TfError err = {{0}};
    CHECKF(tf_kernels_download(gpu, host, dev, n, &err) == 0, "%s", err.msg);
    double *ref = to_double(cpu, n);
    CHECK_REL(what, host, ref, n, tol);
    free(host);
    free(ref);
}

int main(void)
{
    TfError err = {{0}};
    TfKernels *gpu = tf_kernels_new(TF_BACKEND_CUDA, 1, &err);
    if (!gpu) {
        printf("test_kernels_cuda: %s: skipped\n", err.msg);
        return 77;
    }
    TfKernels *cpu = tf_kernels_new(TF_BACKEND_CPU, 2, &err);
    REQUIRE(cpu);
    const size_t n = 100003;
    float *a = rand_buf(n), *b = rand_buf(n), *c = rand_buf(n), *out = zeros(n), *out2 = zeros(n);
    float *da = tf_kernels_alloc(gpu, n, &err), *db = tf_kernels_alloc(gpu, n, &err), *dc = tf_kernels_alloc(gpu, n, &err);
    float *dy = tf_kernels_alloc(gpu, n, &err), *dz = tf_kernels_alloc(gpu, n, &err);
    REQUIRE(da && db && dc && dy && dz);
    CHECK(tf_kernels_upload(gpu, da, a, n, &err) == 0 && tf_kernels_upload(gpu, db, b, n, &err) == 0 &&
          tf_kernels_upload(gpu, dc, c, n, &err) == 0);

    CHECK(tf_add(cpu, out, a, b, n, &err) == 0 && tf_add(gpu, dy, da, db, n, &err) == 0);
    compare("add", gpu, dy, out, n, 1e-7);
    CHECK(tf_mul(cpu, out, a, b, n, &err) == 0 && tf_mul(gpu, dy, da, db, n, &err) == 0);
    compare("mul", gpu, dy, out, n, 1e-7);
    memcpy(out, c, n * sizeof *out);
    CHECK(tf_axpby(cpu, out, 0.5f, a, -2.0f, n, &err) == 0 && tf_copy(gpu, dy, dc, n, &err) == 0 &&
          tf_axpby(gpu, dy, 0.5f, da, -2.0f, n, &err) == 0);
    compare("axpby", gpu, dy, out, n, 1e-6);
    CHECK(tf_scale_shift(cpu, out, a, 3.0f, 0.25f, n, &err) == 0 && tf_scale_shift(gpu, dy, da, 3.0f, 0.25f, n, &err) == 0);
    compare("scale_shift", gpu, dy, out, n, 1e-6);
    CHECK(tf_silu(cpu, out, a, n, &err) == 0 && tf_silu(gpu, dy, da, n, &err) == 0);
    compare("silu", gpu, dy, out, n, 1e-6);
    CHECK(tf_silu_backward(cpu, out, b, a, n, &err) == 0 && tf_silu_backward(gpu, dy, db, da, n, &err) == 0);
    compare("silu_backward", gpu, dy, out, n, 1e-6);
    CHECK(tf_swiglu(cpu, out, a, b, n, &err) == 0 && tf_swiglu(gpu, dy, da, db, n, &err) == 0);
    compare("swiglu", gpu, dy, out, n, 1e-6);
    CHECK(tf_swiglu_backward(cpu, out, out2, c, a, b, n, &err) == 0 &&
          tf_swiglu_backward(gpu, dy, dz, dc, da, db, n, &err) == 0);
    compare("swiglu_backward dg", gpu, dy, out, n, 1e-6);
    compare("swiglu_backward du", gpu, dz, out2, n, 1e-6);
    CHECK(tf_fill(cpu, out, 1.5f, n, &err) == 0 && tf_fill(gpu, dy, 1.5f, n, &err) == 0);
    compare("fill", gpu, dy, out, n, 0);

    /* AdamW: 3 steps on both */
    float *m = zeros(n), *v = zeros(n), *p = copy_buf(a, n);
    CHECK(tf_fill(gpu, dy, 0.0f, n, &err) == 0 && tf_fill(gpu, dz, 0.0f, n, &err) == 0 &&
          tf_copy(gpu, dc, da, n, &err) == 0);
    for (long s = 1; s <= 3; s++) {
        TfAdamW h = {1e-3, 0.9, 0.95, 1e-8, 0.1, s};
        CHECK(tf_adamw(cpu, p, b, m, v, n, &h, 0.5f, &err) == 0);
        CHECK(tf_adamw(gpu, dc, db, dy, dz, n, &h, 0.5f, &err) == 0);
    }
    compare("adamw params (3 steps)", gpu, dc, p, n, 1e-6);

    /* noise and the squared sum */
    CHECK(tf_randn(cpu, out, n, 42, 3, 17, 0.0f, 1.0f, &err) == 0 && tf_randn(gpu, dy, n, 42, 3, 17, 0.0f, 1.0f, &err) == 0);
    compare("randn (same Philox stream)", gpu, dy, out, n, 1e-6);
    double sc = 0, sg = 0;
    CHECK(tf_sum_squares(cpu, &sc, a, n, &err) == 0 && tf_sum_squares(gpu, &sg, da, n, &err) == 0);
    CHECKF(fabs(sc - sg) < 1e-12 * sc, "sum_squares %.17g vs %.17g", sg, sc);

    /* not written for the GPU yet: reported, not run */
    CHECK(tf_matmul(gpu, dy, da, tf_buf_f32(db), 2, 2, 2, 0, 0, 1, 0, NULL, &err) == -1 &&
          strstr(err.msg, "not implemented on the cuda backend"));
    CHECK(tf_kernels_sync(gpu, &err) == 0);

    tf_kernels_release(gpu, da);
    tf_kernels_release(gpu, db);
    tf_kernels_release(gpu, dc);
    tf_kernels_release(gpu, dy);
    tf_kernels_release(gpu, dz);
    free(a);
    free(b);
    free(c);
    free(out);
    free(out2);
    free(m);
    free(v);
    free(p);
    tf_kernels_free(cpu);
    tf_kernels_free(gpu);
    return test_main_end("test_kernels_cuda");
}
