/* test_kernels_dense.c: the row-major kernels a transformer uses, against
 * double-precision references: matmul in every transpose combination with
 * alpha, beta, bias and bf16 right operands; linear layers and their
 * backward (dx only for frozen weights, dx accumulated); RMSNorm,
 * LayerNorm and their backward by finite differences; SiLU and SwiGLU;
 * embeddings (gather, trainable-row scatter-add); row gather/scatter;
 * the layout and elementwise helpers. Odd sizes throughout, and every
 * result compared bit for bit across 1, 2 and 3 threads. */
#include "kref.h"

/* ---- matmul ---- */

static void check_matmul(int M, int N, int K, int ta, int tb, float alpha, float beta, int use_bias, int bf16)
{
    float *a = rand_buf((size_t)M * K), *b = rand_buf((size_t)K * N), *bias = rand_buf((size_t)N);
    float *c0 = rand_buf((size_t)M * N);
    uint16_t *bh = malloc((size_t)K * N * sizeof *bh);
    for (size_t i = 0; i < (size_t)K * N; i++)
        bh[i] = tf_f32_to_bf16(b[i]);
    double *ref = dzeros((size_t)M * N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double acc = 0;
            for (int p = 0; p < K; p++) {
                double av = ta ? a[(size_t)p * M + i] : a[(size_t)i * K + p];
                size_t bi = tb ? (size_t)j * K + p : (size_t)p * N + j;
                acc += av * (bf16 ? bf16_value(b[bi]) : b[bi]);
            }
            ref[(size_t)i * N + j] = alpha * acc + beta * c0[(size_t)i * N + j] + (use_bias ? bias[j] : 0.0);
        }
    float *out[KREF_CONTEXTS];
    for (int t = 0; t < KREF_CONTEXTS; t++) {
        out[t] = copy_buf(c0, (size_t)M * N);
        TfError err = {{0}};
        TfBuf bb = bf16 ? tf_buf_bf16(bh) : tf_buf_f32(b);
        CHECKF(tf_matmul(kref_k[t], out[t], a, bb, M, N, K, ta, tb, alpha, beta, use_bias ? bias : NULL, &err) == 0,
               "%s", err.msg);
    }
    char what[128];
    snprintf(what, sizeof what, "matmul %dx%dx%d t%d%d a%.1f b%.1f%s%s", M, N, K, ta, tb, alpha, beta,
             use_bias ? " bias" : "", bf16 ? " bf16" : "");
    CHECK_REL(what, out[0], ref, (size_t)M * N, 1e-5);
    check_threads(what, out, (size_t)M * N);
    for (int t = 0; t < KREF_CONTEXTS; t++)
        free(out[t]);
    free(a);
    free(b);
    free(bias);
    free(c0);
    free(bh);
    free(ref);
}

static void test_matmul(void)
{
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            check_matmul(37, 29, 13, ta, tb, 1.0f, 0.0f, 0, 0);
            check_matmul(5, 301, 70, ta, tb, 0.5f, 1.0f, 1, 0);
            check_matmul(130, 70, 33, ta, tb, 1.0f, 0.0f, 1, 1);
        }
    check_matmul(300, 520, 64, 0, 1, 1.0f, 0.0f, 0, 0); /* several tiles both ways */
    check_matmul(260, 700, 96, 0, 0, -1.0f, 1.0f, 1, 1);
    check_matmul(3, 4, 0, 0, 1, 1.0f, 1.0f, 1, 0);      /* K = 0: beta c + bias */
    check_matmul(1, 1, 1, 0, 0, 2.0f, 0.0f, 0, 0);
}

/* ---- linear ---- */

static void test_linear(void)
{
    const int N = 23, in = 19, out = 31;
    float *x = rand_buf((size_t)N * in), *w = rand_buf((size_t)out * in), *b = rand_buf(out);
    float *dy = rand_buf((size_t)N * out);
    double *ry = dzeros((size_t)N * out), *rdx = dzeros((size_t)N * in), *rdw = dzeros((size_t)out * in);
    double *rdb = dzeros(out);
    float *dx0 = rand_buf((size_t)N * in), *dw0 = rand_buf((size_t)out * in), *db0 = rand_buf(out);
    for (int n = 0; n < N; n++)
        for (int o = 0; o < out; o++) {
            double acc = b[o];
            for (int i = 0; i < in; i++)
                acc += (double)x[(size_t)n * in + i] * w[(size_t)o * in + i];
            ry[(size_t)n * out + o] = acc;
        }
    for (int n = 0; n < N; n++)
        for (int i = 0; i < in; i++) {
            double acc = 0;
            for (int o = 0; o < out; o++)
                acc += (double)dy[(size_t)n * out + o] * w[(size_t)o * in + i];
            rdx[(size_t)n * in + i] = acc;
        }
    for (int o = 0; o < out; o++) {
        double sb = db0[o];
        for (int n = 0; n < N; n++)
            sb += dy[(size_t)n * out + o];
        rdb[o] = sb;
        for (int i = 0; i < in; i++) {
            double acc = dw0[(size_t)o * in + i];
            for (int n = 0; n < N; n++)
                acc += (double)dy[(size_t)n * out + o] * x[(size_t)n * in + i];
            rdw[(size_t)o * in + i] = acc;
        }
    }
    float *y[KREF_CONTEXTS], *dx[KREF_CONTEXTS], *dw[KREF_CONTEXTS], *db[KREF_CONTEXTS];
    for (int t = 0; t < KREF_CONTEXTS; t++) {
        TfError err = {{0}};
        y[t] = zeros((size_t)N * out);
        dx[t] = zeros((size_t)N * in);
        dw[t] = copy_buf(dw0, (size_t)out * in);
        db[t] = copy_buf(db0, out);
        CHECKF(tf_linear(kref_k[t], y[t], x, tf_buf_f32(w), b, N, in, out, &err) == 0, "%s", err.msg);
        CHECKF(tf_linear_backward(kref_k[t], dx[t], dw[t], db[t], dy, x, tf_buf_f32(w), N, in, out, 0, &err) == 0,
               "%s", err.msg);
    }
    CHECK_REL("linear forward", y[0], ry, (size_t)N * out, 1e-5);
    CHECK_REL("linear backward dx", dx[0], rdx, (size_t)N * in, 1e-5);
    CHECK_REL("linear backward dw (accumulated)", dw[0], rdw, (size_t)out * in, 1e-5);
    CHECK_REL("linear backward db (accumulated)", db[0], rdb, out, 1e-5);
    check_threads("linear forward", y, (size_t)N * out);
    check_threads("linear dx", dx, (size_t)N * in);
    check_threads("linear dw", dw, (size_t)out * in);
    check_threads("linear db", db, out);

    /* Frozen: dx only (accumulated onto dx0), bf16 weights. */
    uint16_t *wh = malloc((size_t)out * in * sizeof *wh);
    for (size_t i = 0; i < (size_t)out * in; i++)
        wh[i] = tf_f32_to_bf16(w[i]);
    for (int n = 0; n < N; n++)
        for (int i = 0; i < in; i++) {
            double acc = dx0[(size_t)n * in + i];
            for (int o = 0; o < out; o++)
                acc += (double)dy[(size_t)n * out + o] * bf16_value(w[(size_t)o * in + i]);
            rdx[(size_t)n * in + i] = acc;
        }
    float *dxa = copy_buf(dx0, (size_t)N * in);
    TfError err = {{0}};
    CHECKF(tf_linear_backward(kref_k[1], dxa, NULL, NULL, dy, NULL, tf_buf_bf16(wh), N, in, out, 1, &err) == 0, "%s",
           err.msg);
    CHECK_REL("linear backward dx only, bf16 w, accumulate", dxa, rdx, (size_t)N * in, 1e-5);
    for (int t = 0; t < KREF_CONTEXTS; t++) {
        free(y[t]);
        free(dx[t]);
        free(dw[t]);
        free(db[t]);
    }
    free(x);
    free(w);
    free(b);
    free(dy);
    free(ry);
    free(rdx);
    free(rdw);
    free(rdb);
    free(dx0);
    free(dw0);
    free(db0);
    free(wh);
    free(dxa);
}

/* ---- RMSNorm and LayerNorm ---- */

typedef struct NormCtx {
    double *x, *w, *b, *dy;
    int N, D, layer; /* layer: LayerNorm, else RMSNorm */
    double eps;
} NormCtx;

/* sum(dy * norm(x)) in double. */
static double norm_loss(void *p)
{
    NormCtx *c = p;
    double L = 0;
    for (int n = 0; n < c->N; n++) {
        const double *x = c->x + (size_t)n * c->D;
        double mu = 0, ms = 0;
        if (c->layer) {
            for (int j = 0; j < c->D; j++)
                mu += x[j];
            mu /= c->D;
        }
        for (int j = 0; j < c->D; j++)
            ms += (x[j] - mu) * (x[j] - mu);
        const double r = 1.0 / sqrt(ms / c->D + c->eps);
        for (int j = 0; j < c->D; j++)
            L += c->dy[(size_t)n * c->D + j] * ((x[j] - mu) * r * c->w[j] + (c->b ? c->b[j] : 0.0));
    }
    return L;
}

static void check_norm(int layer, int N, int D, int bf16)
{
    const float eps = 1e-5f;
    float *x = rand_buf((size_t)N * D), *w = rand_buf(D), *b = rand_buf(D), *dy = rand_buf((size_t)N * D);
    for (size_t i = 0; i < (size_t)N * D; i++)
        x[i] = x[i] * 2.0f + (layer ? 3.0f : 0.0f);
    uint16_t *wh = malloc((size_t)D * sizeof *wh);
    for (int j = 0; j < D; j++) {
        wh[j] = tf_f32_to_bf16(w[j]);
        if (bf16)
            w[j] = (float)bf16_value(w[j]);
    }
    NormCtx c = {to_double(x, (size_t)N * D), to_double(w, D), layer ? to_double(b, D) : NULL,
                 to_double(dy, (size_t)N * D), N, D, layer, eps};
    /* forward reference: d/d(dy) of the loss is the output itself */
    double *ry = dzeros((size_t)N * D), *rdx = dzeros((size_t)N * D), *rdw = dzeros(D), *rdb = dzeros(D);
    fd_grad(c.dy, (size_t)N * D, norm_loss, &c, ry);
    fd_grad(c.x, (size_t)N * D, norm_loss, &c, rdx);
    fd_grad(c.w, D, norm_loss, &c, rdw);
    if (layer)
        fd_grad(c.b, D, norm_loss, &c, rdb);
    float *y[KREF_CONTEXTS], *dx[KREF_CONTEXTS], *dw[KREF_CONTEXTS], *db[KREF_CONTEXTS];
    float *mean = zeros(N), *rstd = zeros(N);
    for (int t = 0; t < KREF_CONTEXTS; t++) {
        TfError err = {{0}};
        y[t] = zeros((size_t)N * D);
        dx[t] = zeros((size_t)N * D);
        dw[t] = zeros(D);
        db[t] = zeros(D);
        if (layer) {
            CHECKF(tf_layer_norm(kref_k[t], y[t], mean, rstd, x, w, b, N, D, eps, &err) == 0, "%s", err.msg);
            CHECKF(tf_layer_norm_backward(kref_k[t], dx[t], dw[t], db[t], dy, x, mean, rstd, w, N, D, &err) == 0,
                   "%s", err.msg);
        } else {
            TfBuf wb = bf16 ? tf_buf_bf16(wh) : tf_buf_f32(w);
            CHECKF(tf_rms_norm(kref_k[t], y[t], rstd, x, wb, N, D, eps, &err) == 0, "%s", err.msg);
            CHECKF(tf_rms_norm_backward(kref_k[t], dx[t], dw[t], dy, x, rstd, wb, N, D, &err) == 0, "%s", err.msg);
        }
    }
    char what[96];
    const char *name = layer ? "layer_norm" : bf16 ? "rms_norm bf16 w" : "rms_norm";
    snprintf(what, sizeof what, "%s %dx%d forward", name, N, D);
    CHECK_REL(what, y[0], ry, (size_t)N * D, 1e-5);
    snprintf(what, sizeof what, "%s %dx%d dx (finite differences)", name, N, D);
    CHECK_REL(what, dx[0], rdx, (size_t)N * D, 1e-5);
    snprintf(what, sizeof what, "%s %dx%d dw (finite differences)", name, N, D);
    CHECK_REL(what, dw[0], rdw, D, 1e-5);
    if (layer) {
        snprintf(what, sizeof what, "%s %dx%d db (finite differences)", name, N, D);
        CHECK_REL(what, db[0], rdb, D, 1e-5);
    }
    check_threads(name, y, (size_t)N * D);
    check_threads(name, dx, (size_t)N * D);
    check_threads(name, dw, D);
    check_threads(name, db, D);

    /* Frozen weights: dx alone is the same as with dw. */
    float *dx_only = zeros((size_t)N * D);
    TfError err = {{0}};
    if (layer)
        CHECK(tf_layer_norm_backward(kref_k[0], dx_only, NULL, NULL, dy, x, mean, rstd, w, N, D, &err) == 0);
    else
        CHECK(tf_rms_norm_backward(kref_k[0], dx_only, NULL, dy, x, rstd, bf16 ? tf_buf_bf16(wh) : tf_buf_f32(w), N,
                                   D, &err) == 0);
    CHECK(same_bits(dx_only, dx[0], (size_t)N * D * sizeof(float)));
    for (int t = 0; t < KREF_CONTEXTS; t++) {
        free(y[t]);
        free(dx[t]);
        free(dw[t]);
        free(db[t]);
    }
    free(dx_only);
    free(x);
    free(w);
    free(b);
    free(dy);
    free(wh);
    free(c.x);
    free(c.w);
    free(c.b);
    free(c.dy);
    free(ry);
    free(rdx);
    free(rdw);
    free(rdb);
    free(mean);
    free(rstd);
}

static void test_norms(void)
{
    check_norm(0, 7, 33, 0);
    check_norm(0, 130, 16, 0); /* more rows than the reduction's chunks */
    check_norm(0, 9, 20, 1);
    check_norm(1, 7, 33, 0);
    check_norm(1, 150, 12, 0);
    /* LayerNorm without affine parameters. */
    const int N = 3, D = 5;
    float x[15], y[15], mean[3], rstd[3];
    for (int i = 0; i < 15; i++)
        x[i] = (float)(i * i % 7);
    TfError err = {{0}};
    CHECK(tf_layer_norm(kref_k[0], y, mean, rstd, x, NULL, NULL, N, D, 1e-5f, &err) == 0);
    double worst = 0;
    for (int n = 0; n < N; n++) {
        double mu = 0, var = 0;
        for (int j = 0; j < D; j++)
            mu += x[n * D + j] / (double)D;
        for (int j = 0; j < D; j++)
            var += (x[n * D + j] - mu) * (x[n * D + j] - mu) / D;
        for (int j = 0; j < D; j++)
            worst = fmax(worst, fabs(y[n * D + j] - (x[n * D + j] - mu) / sqrt(var + 1e-5)));
    }
    CHECKF(worst < 1e-5, "layer_norm without affine: %.3e", worst);
}

/* ---- activations ---- */

static void test_activations(void)
{
    const size_t n = 1001;
    float *g = rand_buf(n), *u = rand_buf(n), *dh = rand_buf(n);
    for (size_t i = 0; i < n; i++)
        g[i] *= 8.0f;
    double *rh = dzeros(n), *rdg = dzeros(n), *rdu = dzeros(n), *rsilu = dzeros(n), *rdsilu = dzeros(n);
    for (size_t i = 0; i < n; i++) {
        double s = 1.0 / (1.0 + exp(-(double)g[i])), si = g[i] * s, ds = s * (1 + g[i] * (1 - s));
        rsilu[i] = si;
        rdsilu[i] = dh[i] * ds;
        rh[i] = si * u[i];
        rdu[i] = dh[i] * si;
        rdg[i] = dh[i] * u[i] * ds;
    }
    float *h[KREF_CONTEXTS], *dg[KREF_CONTEXTS], *du[KREF_CONTEXTS];
    float *s = zeros(n), *ds = zeros(n);
    TfError err = {{0}};
    for (int t = 0; t < KREF_CONTEXTS; t++) {
        h[t] = zeros(n);
        dg[t] = zeros(n);
        du[t] = zeros(n);
        CHECK(tf_swiglu(kref_k[t], h[t], g, u, n, &err) == 0);
        CHECK(tf_swiglu_backward(kref_k[t], dg[t], du[t], dh, g, u, n, &err) == 0);
    }
    CHECK(tf_silu(kref_k[1], s, g, n, &err) == 0);
    CHECK(tf_silu_backward(kref_k[1], ds, dh, g, n, &err) == 0);
    CHECK_REL("silu", s, rsilu, n, 1e-6);
    CHECK_REL("silu backward", ds, rdsilu, n, 1e-6);
    CHECK_REL("swiglu", h[0], rh, n, 1e-6);
    CHECK_REL("swiglu backward dg", dg[0], rdg, n, 1e-6);
    CHECK_REL("swiglu backward du", du[0], rdu, n, 1e-6);
    check_threads("swiglu", h, n);
    check_threads("swiglu dg", dg, n);
    /* silu backward in place (dx may alias dy) */
    float *inplace = copy_buf(dh, n);
    CHECK(tf_silu_backward(kref_k[0], inplace, inplace, g, n, &err) == 0);
    CHECK(same_bits(inplace, ds, n * sizeof(float)));
    for (int t = 0; t < KREF_CONTEXTS; t++) {
        free(h[t]);
        free(dg[t]);
        free(du[t]);
    }
    free(inplace);
    free(g);
    free(u);
    free(dh);
    free(s);
    free(ds);
    free(rh);
    free(rdg);
    free(rdu);
    free(rsilu);
    free(rdsilu);
}

/* ---- embeddings and rows ---- */

static void test_embedding(void)
{
    const int V = 50, D = 300, N = 17; /* D over one column block of the scatter */
    float *table = rand_buf((size_t)V * D), *dy = rand_buf((size_t)N * D);
    uint16_t *th = malloc((size_t)V * D * sizeof *th);
    for (size_t i = 0; i < (size_t)V * D; i++)
        th[i] = tf_f32_to_bf16(table[i]);
    int32_t ids[17];
    for (int n = 0; n < N; n++)
        ids[n] = n % 5 == 3 ? -1 : (n * 7) % V;
    ids[4] = 48;
    ids[9] = 48; /* the trainable rows appear several times */
    ids[12] = 49;
    float *y = rand_buf((size_t)N * D), *y0 = copy_buf(y, (size_t)N * D), *yb = copy_buf(y, (size_t)N * D);
    TfError err = {{0}};
    CHECKF(tf_embedding(kref_k[1], y, tf_buf_f32(table), ids, N, D, V, &err) == 0, "%s", err.msg);
    CHECK(tf_embedding(kref_k[1], yb, tf_buf_bf16(th), ids, N, D, V, &err) == 0);
    int ok = 1, okb = 1;
    for (int n = 0; n < N; n++)
        for (int j = 0; j < D; j++) {
            float want = ids[n] < 0 ? y0[(size_t)n * D + j] : table[(size_t)ids[n] * D + j];
            float wantb = ids[n] < 0 ? y0[(size_t)n * D + j] : tf_bf16_to_f32(th[(size_t)ids[n] * D + j]);
            ok &= y[(size_t)n * D + j] == want;
            okb &= yb[(size_t)n * D + j] == wantb;
        }
    CHECKF(ok, "embedding gather (rows with id < 0 unchanged)");
    CHECKF(okb, "embedding gather from a bf16 table");

    /* Scatter-add into the trainable rows 48 and 49 only. */
    const int32_t rows[2] = {49, 48};
    double *ref = dzeros((size_t)2 * D);
    for (int n = 0; n < N; n++)
        for (int r = 0; r < 2; r++)
            if (ids[n] == rows[r])
                for (int j = 0; j < D; j++)
                    ref[(size_t)r * D + j] += dy[(size_t)n * D + j];
    ref[0] += 1.0; /* accumulates onto what is there */
    float *dt[KREF_CONTEXTS];
    for (int t = 0; t < KREF_CONTEXTS; t++) {
        dt[t] = zeros((size_t)2 * D);
        dt[t][0] = 1.0f;
        CHECKF(tf_embedding_backward(kref_k[t], dt[t], dy, ids, rows, 2, N, D, V, &err) == 0, "%s", err.msg);
    }
    CHECK_REL("embedding backward, 2 trainable rows", dt[0], ref, (size_t)2 * D, 1e-6);
    check_threads("embedding backward", dt, (size_t)2 * D);
    /* Every row trainable (rows NULL, R = V). */
    float *full = zeros((size_t)V * D);
    double *rfull = dzeros((size_t)V * D);
    for (int n = 0; n < N; n++)
        if (ids[n] >= 0)
            for (int j = 0; j < D; j++)
                rfull[(size_t)ids[n] * D + j] += dy[(size_t)n * D + j];
    CHECK(tf_embedding_backward(kref_k[2], full, dy, ids, NULL, V, N, D, V, &err) == 0);
    CHECK_REL("embedding backward, every row", full, rfull, (size_t)V * D, 1e-6);
    for (int t = 0; t < KREF_CONTEXTS; t++)
        free(dt[t]);
    free(table);
    free(dy);
    free(th);
    free(y);
    free(y0);
    free(yb);
    free(ref);
    free(full);
    free(rfull);
}

static void test_rows(void)
{
    const int N = 11, R = 7, D = 300;
    float *x = rand_buf((size_t)N * D), *xr = rand_buf((size_t)R * D);
    const int32_t idx[7] = {3, 0, 10, 3, 5, 3, 9}; /* 3 repeated */
    float *g = zeros((size_t)R * D);
    TfError err = {{0}};
    CHECK(tf_rows_gather(kref_k[1], g, x, idx, R, N, D, &err) == 0);
    int ok = 1;
    for (int r = 0; r < R; r++)
        ok &= same_bits(g + (size_t)r * D, x + (size_t)idx[r] * D, (size_t)D * sizeof(float));
    CHECKF(ok, "rows_gather");
    double *ref = to_double(x, (size_t)N * D);
    for (int r = 0; r < R; r++)
        for (int j = 0; j < D; j++)
            ref[(size_t)idx[r] * D + j] += xr[(size_t)r * D + j];
    float *s[KREF_CONTEXTS];
    for (int t = 0; t < KREF_CONTEXTS; t++) {
        s[t] = copy_buf(x, (size_t)N * D);
        CHECK(tf_rows_scatter(kref_k[t], s[t], xr, idx, R, N, D, 1, &err) == 0);
    }
    CHECK_REL("rows_scatter accumulate (repeated rows add up)", s[0], ref, (size_t)N * D, 1e-6);
    check_threads("rows_scatter", s, (size_t)N * D);
    float *p = copy_buf(x, (size_t)N * D);
    CHECK(tf_rows_scatter(kref_k[0], p, xr, idx, R, N, D, 0, &err) == 0);
    ok = same_bits(p + (size_t)3 * D, xr + (size_t)5 * D, (size_t)D * sizeof(float)) && /* the last of the 3s */
         same_bits(p + (size_t)1 * D, x + (size_t)1 * D, (size_t)D * sizeof(float));     /* untouched */
    CHECKF(ok, "rows_scatter overwrite");
    for (int t = 0; t < KREF_CONTEXTS; t++)
        free(s[t]);
    free(x);
    free(xr);
    free(g);
    free(ref);
    free(p);
}

/* ---- layout and elementwise ---- */

static void test_layout(void)
{
    TfKernels *k = kref_k[2];
    TfError err = {{0}};
    const int B = 2, M = 37, N = 45;
    float *x = rand_buf((size_t)B * M * N), *y = zeros((size_t)B * M * N), *z = zeros((size_t)B * M * N);
    CHECK(tf_transpose(k, y, x, B, M, N, &err) == 0);
    int ok = 1;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++)
                ok &= y[((size_t)b * N + j) * M + i] == x[((size_t)b * M + i) * N + j];
    CHECK(tf_transpose(k, z, y, B, N, M, &err) == 0);
    CHECKF(ok && same_bits(z, x, (size_t)B * M * N * sizeof(float)), "transpose and back");

    /* concat / split along channels */
    const int C1 = 3, C2 = 5;
    const size_t HW = 7;
    float *a = rand_buf((size_t)B * C1 * HW), *bb = rand_buf((size_t)B * C2 * HW);
    float *cat = zeros((size_t)B * (C1 + C2) * HW), *da = zeros((size_t)B * C1 * HW), *db = zeros((size_t)B * C2 * HW);
    CHECK(tf_concat_channels(k, cat, a, bb, B, C1, C2, HW, &err) == 0);
    ok = same_bits(cat + (size_t)(C1 + C2) * HW + C1 * HW, bb + (size_t)C2 * HW, (size_t)C2 * HW * sizeof(float));
    CHECK(tf_split_channels(k, da, db, cat, B, C1, C2, HW, &err) == 0);
    CHECKF(ok && same_bits(da, a, (size_t)B * C1 * HW * sizeof(float)) &&
               same_bits(db, bb, (size_t)B * C2 * HW * sizeof(float)),
           "concat_channels / split_channels");

    /* patchify: row (b, py*pw+px), feature (c, dy, dx) = x[b, c, py*p+dy, px*p+dx] */
    const int C = 3, H = 6, W = 4, p = 2;
    float *img = rand_buf((size_t)B * C * H * W), *rows = zeros((size_t)B * C * H * W), *back = zeros((size_t)B * C * H * W);
    CHECK(tf_patchify(k, rows, img, B, C, H, W, p, &err) == 0);
    ok = 1;
    for (int b = 0; b < B; b++)
        for (int py = 0; py < H / p; py++)
            for (int px = 0; px < W / p; px++)
                for (int c = 0; c < C; c++)
                    for (int dy = 0; dy < p; dy++)
                        for (int dx = 0; dx < p; dx++) {
                            size_t r = (size_t)b * (H / p) * (W / p) + (size_t)py * (W / p) + px;
                            ok &= rows[r * C * p * p + ((size_t)c * p + dy) * p + dx] ==
                                  img[(((size_t)b * C + c) * H + py * p + dy) * W + px * p + dx];
                        }
    CHECK(tf_unpatchify(k, back, rows, B, C, H, W, p, &err) == 0);
    CHECKF(ok && same_bits(back, img, (size_t)B * C * H * W * sizeof(float)), "patchify / unpatchify");

    /* rows bias and its gradient; channel broadcast and its gradient */
    const int NR = 150, D = 300;
    float *m = rand_buf((size_t)NR * D), *bias = rand_buf(D), *m2 = copy_buf(m, (size_t)NR * D);
    CHECK(tf_add_rows(k, m2, bias, NR, D, &err) == 0);
    ok = 1;
    for (int r = 0; r < NR; r++)
        for (int j = 0; j < D; j++)
            ok &= m2[(size_t)r * D + j] == m[(size_t)r * D + j] + bias[j];
    CHECKF(ok, "add_rows");
    double *rs = dzeros(D);
    for (int j = 0; j < D; j++) {
        rs[j] = 0.5;
        for (int r = 0; r < NR; r++)
            rs[j] += m[(size_t)r * D + j];
    }
    float *cs[KREF_CONTEXTS];
    for (int t = 0; t < KREF_CONTEXTS; t++) {
        cs[t] = zeros(D);
        for (int j = 0; j < D; j++)
            cs[t][j] = 0.5f;
        CHECK(tf_sum_rows(kref_k[t], cs[t], m, NR, D, &err) == 0);
    }
    CHECK_REL("sum_rows (accumulated)", cs[0], rs, D, 1e-6);
    check_threads("sum_rows", cs, D);
    const int CB = 4;
    float *map = rand_buf((size_t)B * CB * HW), *vec = rand_buf((size_t)B * CB), *map2 = copy_buf(map, (size_t)B * CB * HW);
    CHECK(tf_add_channels(k, map2, vec, B, CB, HW, &err) == 0);
    ok = 1;
    for (int bc = 0; bc < B * CB; bc++)
        for (size_t i = 0; i < HW; i++)
            ok &= map2[(size_t)bc * HW + i] == map[(size_t)bc * HW + i] + vec[bc];
    CHECKF(ok, "add_channels");
    float *dv = zeros((size_t)B * CB);
    double *rdv = dzeros((size_t)B * CB);
    for (int bc = 0; bc < B * CB; bc++)
        for (size_t i = 0; i < HW; i++)
            rdv[bc] += map[(size_t)bc * HW + i];
    CHECK(tf_sum_channels(k, dv, map, B, CB, HW, &err) == 0);
    CHECK_REL("sum_channels", dv, rdv, (size_t)B * CB, 1e-6);

    /* elementwise */
    const size_t n = 777;
    float *e1 = rand_buf(n), *e2 = rand_buf(n), *e3 = zeros(n);
    CHECK(tf_mul(k, e3, e1, e2, n, &err) == 0);
    ok = 1;
    for (size_t i = 0; i < n; i++)
        ok &= e3[i] == e1[i] * e2[i];
    CHECKF(ok, "mul");
    float *e4 = copy_buf(e2, n);
    CHECK(tf_axpby(k, e4, 2.0f, e1, -0.5f, n, &err) == 0);
    ok = 1;
    for (size_t i = 0; i < n; i++)
        ok &= e4[i] == 2.0f * e1[i] + -0.5f * e2[i];
    CHECKF(ok, "axpby");
    for (size_t i = 0; i < n; i++)
        e4[i] = NAN;
    CHECK(tf_axpby(k, e4, 3.0f, e1, 0.0f, n, &err) == 0); /* beta 0 ignores what y held */
    CHECKF(e4[5] == 3.0f * e1[5], "axpby with beta 0 over NaN");
    CHECK(tf_fill(k, e3, 0.25f, n, &err) == 0);
    CHECKF(e3[0] == 0.25f && e3[n - 1] == 0.25f, "fill");
    CHECK(tf_copy(k, e3, e1, n, &err) == 0);
    CHECKF(same_bits(e3, e1, n * sizeof(float)), "copy");
    uint16_t *h16 = malloc(n * sizeof *h16);
    CHECK(tf_convert(k, h16, TF_DTYPE_BF16, tf_buf_f32(e1), n, &err) == 0);
    CHECK(tf_convert(k, e3, TF_DTYPE_F32, tf_buf_bf16(h16), n, &err) == 0);
    ok = 1;
    for (size_t i = 0; i < n; i++)
        ok &= h16[i] == tf_f32_to_bf16(e1[i]) && e3[i] == tf_bf16_to_f32(h16[i]);
    CHECKF(ok, "convert f32 -> bf16 -> f32");
    free(h16);
    free(e1);
    free(e2);
    free(e3);
    free(e4);
    for (int t = 0; t < KREF_CONTEXTS; t++)
        free(cs[t]);
    free(x);
    free(y);
    free(z);
    free(a);
    free(bb);
    free(cat);
    free(da);
    free(db);
    free(img);
    free(rows);
    free(back);
    free(m);
    free(bias);
    free(m2);
    free(rs);
    free(map);
    free(vec);
    free(map2);
    free(dv);
    free(rdv);
}

int main(void)
{
    kref_open();
    test_matmul();
    test_linear();
    test_norms();
    test_activations();
    test_embedding();
    test_rows();
    test_layout();
    kref_close();
    return test_main_end("test_kernels_dense");
}
