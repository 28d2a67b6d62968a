/* test_kernels_errors.c: what the kernels refuse. Every kernel reports
 * misuse as -1 with a message naming the kernel, instead of dividing by
 * zero or reading out of bounds: bad dimensions (GroupNorm's groups and
 * the VAE attention's T once divided unchecked: an issue-9 finding, both
 * crashed with SIGFPE), mask bounds, indices and token ids outside their
 * ranges, unsupported dtypes, NULL buffers; also the backend choice
 * ("cuda" without a CUDA build or device is an error, not a crash), and
 * empty tensors being no-ops. */
#include "kref.h"

/* The call fails and its message contains `word`. */
#define REFUSES(call, word)                                                                          \
    do {                                                                                             \
        TfError e_ = {{0}};                                                                          \
        TfError *err = &e_;                                                                          \
        int rc_ = (call);                                                                            \
        CHECKF(rc_ == -1 && strstr(e_.msg, (word)), "%s: rc %d, message '%s' (wanted '%s')", #call, rc_, \
               e_.msg, (word));                                                                      \
    } while (0)

static void test_backend(void)
{
    TfBackend b;
    TfError err = {{0}};
    CHECK(tf_backend_parse("cpu", &b, &err) == 0 && b == TF_BACKEND_CPU);
    CHECK(tf_backend_parse("cuda", &b, &err) == 0 && b == TF_BACKEND_CUDA);
    CHECK(tf_backend_parse("gpu", &b, &err) == -1 && strstr(err.msg, "cpu or cuda"));
    CHECK(!strcmp(tf_backend_name(TF_BACKEND_CUDA), "cuda"));
    TfKernels *k = tf_kernels_new(TF_BACKEND_CUDA, 1, &err);
    if (k) { /* a CUDA build on a machine with a device */
        CHECK(tf_kernels_backend(k) == TF_BACKEND_CUDA && !strcmp(tf_kernels_backend_name(k), "cuda"));
        tf_kernels_free(k);
    } else {
        fprintf(stderr, "  %s\n", err.msg);
        CHECK(strstr(err.msg, "cuda") || strstr(err.msg, "CUDA"));
    }
    CHECK(tf_kernels_new((TfBackend)7, 1, &err) == NULL && strstr(err.msg, "unknown backend"));
    k = tf_kernels_new(TF_BACKEND_CPU, 0, &err); /* 0: every online CPU */
    REQUIRE(k);
    CHECK(tf_kernels_threads(k) >= 1 && tf_kernels_sync(k, &err) == 0);
    CHECK(tf_kernels_alloc_as(k, TF_DTYPE_F64, 4, &err) == NULL && strstr(err.msg, "F64"));
    CHECK(tf_kernels_alloc(k, (size_t)1 << 62, &err) == NULL);
    int32_t *ib = tf_kernels_alloc_as(k, TF_DTYPE_I32, 3, &err);
    const int32_t host[3] = {1, 2, 3};
    int32_t back[3] = {0};
    CHECK(ib && tf_kernels_upload_bytes(k, ib, host, sizeof host, &err) == 0 &&
          tf_kernels_download_bytes(k, back, ib, sizeof back, &err) == 0 && back[2] == 3);
    tf_kernels_release(k, ib);
    tf_kernels_release(k, NULL);
    CHECK(tf_kernels_sgemm_peak(k, 0, 1) == 0.0);
    tf_kernels_free(k);
    tf_kernels_free(NULL);
}

static void test_shapes(TfKernels *k)
{
    float buf[64] = {0}, g[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    int32_t idx[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    /* GroupNorm: groups 0 and groups not dividing C (issue 9: divided unchecked) */
    REFUSES(tf_group_norm(k, buf, NULL, NULL, buf, g, g, 1, 4, 2, 0, 1e-6f, 0, err), "group_norm");
    REFUSES(tf_group_norm(k, buf, NULL, NULL, buf, g, g, 1, 6, 2, 4, 1e-6f, 0, err), "do not split into 4 groups");
    REFUSES(tf_group_norm(k, buf, NULL, NULL, buf, g, g, 1, 4, 0, 2, 1e-6f, 0, err), "HW must be positive");
    REFUSES(tf_group_norm_backward(k, buf, NULL, NULL, buf, buf, buf, buf, g, 1, 4, 2, 3, err), "group_norm_backward");
    /* the VAE attention: T 0 (issue 9: divided unchecked) and C 0 */
    REFUSES(tf_attention(k, buf, buf, buf, buf, 1, 4, 0, 1.0f, err), "attention: T must be positive");
    REFUSES(tf_attention(k, buf, buf, buf, buf, 1, 0, 4, 1.0f, err), "attention: C");
    /* GQA geometry and mask bounds */
    TfAttnShape s = {1, 4, 3, 2, 2, 1.0f};
    REFUSES(tf_attention_gqa(k, buf, NULL, buf, buf, buf, NULL, NULL, &s, err), "do not share 2 key/value heads");
    s = (TfAttnShape){1, 0, 2, 1, 2, 1.0f};
    REFUSES(tf_attention_gqa(k, buf, NULL, buf, buf, buf, NULL, NULL, &s, err), "T must be positive");
    s = (TfAttnShape){1, 4, 2, 1, 2, 1.0f};
    int32_t lo[4] = {0, 0, 0, 0}, hi[4] = {1, 2, 3, 4};
    REFUSES(tf_attention_gqa(k, buf, NULL, buf, buf, buf, lo, NULL, &s, err), "both mask bounds");
    hi[2] = 0; /* empty row */
    REFUSES(tf_attention_gqa(k, buf, NULL, buf, buf, buf, lo, hi, &s, err), "row 2: mask [0,0)");
    hi[2] = 5; /* past T */
    REFUSES(tf_attention_gqa(k, buf, NULL, buf, buf, buf, lo, hi, &s, err), "row 2");
    hi[2] = 4;
    hi[3] = 3; /* decreasing */
    REFUSES(tf_attention_gqa(k, buf, NULL, buf, buf, buf, lo, hi, &s, err), "hi must not decrease");
    REFUSES(tf_attention_gqa_backward(k, buf, buf, buf, buf, buf, buf, buf, buf, buf, lo, hi, &s, err),
            "attention_gqa_backward");
    hi[3] = 4;
    lo[1] = -1;
    REFUSES(tf_attention_gqa(k, buf, NULL, buf, buf, buf, lo, hi, &s, err), "row 1");
    s.scale = INFINITY;
    REFUSES(tf_attention_gqa(k, buf, NULL, buf, buf, buf, NULL, NULL, &s, err), "scale");
    /* RoPE */
    TfRope rope = {6, 10000.0, 0, 0, 0, 0};
    double inv[8];
    REFUSES(tf_rope_inv_freq(&(TfRope){5, 10000.0, 0, 0, 0, 0}, inv, err), "head_dim 5");
    REFUSES(tf_rope_inv_freq(&(TfRope){8, 10000.0, 8.0, 4.0, 1.0, 8192}, inv, err), "llama3");
    REFUSES(tf_rope_table(k, buf, buf, &rope, 0, err), "P must be positive");
    int32_t pos[2] = {0, 9};
    REFUSES(tf_rope(k, buf, buf, buf, pos, 2, 1, 6, 4, err), "rope: index 9 at 1 outside [0,4)");
    REFUSES(tf_rope(k, buf, buf, buf, pos, 2, 1, 5, 4, err), "head dim 5");
    /* embeddings and rows */
    int32_t ids[3] = {0, 7, 2};
    REFUSES(tf_embedding(k, buf, tf_buf_f32(buf), ids, 3, 2, 5, err), "token id 7 at 1");
    REFUSES(tf_embedding_backward(k, buf, buf, idx, NULL, 3, 2, 2, 5, err), "R (3) must equal V (5)");
    const int32_t dup[2] = {1, 1};
    REFUSES(tf_embedding_backward(k, buf, buf, idx, dup, 2, 2, 2, 5, err), "listed twice");
    REFUSES(tf_embedding(k, buf, (TfBuf){buf, TF_DTYPE_F16}, idx, 2, 2, 5, err), "F32 or BF16");
    REFUSES(tf_rows_gather(k, buf, buf, ids, 3, 4, 2, err), "rows_gather: index 7");
    REFUSES(tf_rows_scatter(k, buf, buf, ids, 3, 4, 2, 1, err), "rows_scatter: index 7");
    /* losses */
    int32_t tg[2] = {1, 9};
    REFUSES(tf_cross_entropy_lm_head(k, NULL, NULL, buf, NULL, NULL, 0, buf, tf_buf_f32(buf), tg, 2, 2, 4, 1.0f, err),
            "target 9 at row 1");
    tg[1] = 0;
    REFUSES(tf_cross_entropy_lm_head(k, NULL, NULL, buf, buf, NULL, 2, buf, tf_buf_f32(buf), tg, 2, 2, 4, 1.0f, err),
            "row list");
    REFUSES(tf_mse(k, NULL, NULL, buf, buf, buf, 2, 0, 1.0f, err), "mse");
    /* products and convolutions */
    REFUSES(tf_matmul(k, buf, buf, tf_buf_f32(buf), -1, 2, 2, 0, 0, 1, 0, NULL, err), "negative dimension");
    REFUSES(tf_matmul(k, NULL, buf, tf_buf_f32(buf), 2, 2, 2, 0, 0, 1, 0, NULL, err), "'c' is NULL");
    REFUSES(tf_matmul(k, buf, buf, tf_buf_f32(NULL), 2, 2, 2, 0, 0, 1, 0, NULL, err), "'b' is NULL");
    REFUSES(tf_linear(k, buf, buf, tf_buf_f32(buf), NULL, 2, 0, 2, err), "in must be positive");
    REFUSES(tf_matmul(k, buf, buf, tf_buf_f32(buf), 1 << 30, 1 << 30, 4, 0, 0, 1, 0, NULL, err), "too large");
    TfConv2dShape bad = {1, 4, 2, 2, 4, 5, 1, 0, 0, 0, 0};
    REFUSES(tf_conv2d(k, buf, buf, buf, NULL, &bad, err), "conv2d: invalid geometry");
    bad = (TfConv2dShape){1, 4, 4, 4, 4, 3, 0, 1, 1, 1, 1};
    REFUSES(tf_conv2d_backward(k, buf, buf, buf, buf, buf, buf, &bad, err), "conv2d_backward: invalid geometry");
    REFUSES(tf_upsample_nearest2x(k, buf, buf, 1, 1, 0, 2, err), "upsample");
    REFUSES(tf_patchify(k, buf, buf, 1, 1, 5, 4, 2, err), "not a multiple of the patch size 2");
    /* optimiser, noise, layout */
    TfAdamW h = {1e-3, 1.0, 0.95, 1e-8, 0.1, 1};
    REFUSES(tf_adamw(k, buf, buf, buf, buf, 4, &h, 1.0f, err), "adamw");
    h.beta1 = 0.9;
    h.step = 0;
    REFUSES(tf_adamw(k, buf, buf, buf, buf, 4, &h, 1.0f, err), "step 0");
    REFUSES(tf_randn(k, buf, 4, 1, 0, UINT64_MAX - 1, 0, 1, err), "overflows");
    REFUSES(tf_transpose(k, buf, buf, 1, 2, 2, err), "alias");
    REFUSES(tf_convert(k, buf, TF_DTYPE_I32, tf_buf_f32(buf), 4, err), "cannot convert to I32");
    REFUSES(tf_timestep_embedding(k, buf, buf, 1, 2, 1, 1.0f, 10000.0f, err), "freq_shift");
    REFUSES(tf_add(k, buf, NULL, buf, 4, err), "'a' is NULL");

    /* empty tensors: nothing to do, not an error */
    TfError err = {{0}};
    CHECK(tf_add(k, NULL, NULL, NULL, 0, &err) == 0);
    CHECK(tf_matmul(k, NULL, NULL, tf_buf_f32(NULL), 0, 5, 5, 0, 0, 1, 0, NULL, &err) == 0);
    CHECK(tf_rms_norm(k, NULL, NULL, NULL, tf_buf_f32(NULL), 0, 8, 1e-5f, &err) == 0);
    double mean = 5;
    CHECK(tf_cross_entropy_lm_head(k, NULL, &mean, NULL, NULL, NULL, 0, NULL, tf_buf_f32(NULL), NULL, 0, 4, 10, 1.0f,
                                   &err) == 0 &&
          mean == 0);
    s = (TfAttnShape){0, 4, 2, 1, 2, 1.0f};
    CHECK(tf_attention_gqa(k, NULL, NULL, NULL, NULL, NULL, NULL, NULL, &s, &err) == 0);
    CHECK(tf_sum_squares(k, &mean, NULL, 0, &err) == 0 && mean == 0);
}

int main(void)
{
    test_backend();
    TfError err = {{0}};
    TfKernels *k = tf_kernels_new(TF_BACKEND_CPU, 2, &err);
    REQUIRE(k);
    test_shapes(k);
    tf_kernels_free(k);
    return test_main_end("test_kernels_errors");
}
