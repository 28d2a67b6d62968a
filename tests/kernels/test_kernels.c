/* test_kernels.c: the channel-first kernels (kernels/kernels.h) against
 * direct double-precision sums: convolutions of every kind the VAE and the
 * U-Net adapter use (3x3 same, 3x3 stride 2 with right/bottom or symmetric
 * padding, 1x1, 2x2 stride 2), on both the Winograd and the im2col path
 * and at odd sizes, and their backward by finite differences; GroupNorm
 * (+SiLU) and its backward; the VAE's attention; upsampling and its
 * backward. Prints the largest relative error per kernel; backward results
 * are compared bit for bit across 1, 2 and 3 threads. */
#include "kref.h"

static void check_conv(TfKernels *k, TfConv2dShape s, const char *what)
{
    const int Ho = tf_conv2d_out_h(&s), Wo = tf_conv2d_out_w(&s);
    size_t nx = (size_t)s.B * s.C * s.H * s.W, nw = (size_t)s.K * s.C * s.R * s.R, ny = (size_t)s.B * s.K * Ho * Wo;
    float *x = rand_buf(nx), *w = rand_buf(nw), *b = rand_buf((size_t)s.K), *y = malloc(ny * sizeof *y);
    double *ref = calloc(ny, sizeof *ref);
    for (int n = 0; n < s.B; n++)
        for (int o = 0; o < s.K; o++)
            for (int i = 0; i < Ho; i++)
                for (int j = 0; j < Wo; j++) {
                    double acc = b[o];
                    for (int c = 0; c < s.C; c++)
                        for (int ky = 0; ky < s.R; ky++)
                            for (int kx = 0; kx < s.R; kx++) {
                                int iy = i * s.stride - s.pad_top + ky, ix = j * s.stride - s.pad_left + kx;
                                if (iy < 0 || iy >= s.H || ix < 0 || ix >= s.W)
                                    continue;
                                acc += (double)x[(((size_t)n * s.C + c) * s.H + iy) * s.W + ix] *
                                       w[(((size_t)o * s.C + c) * s.R + ky) * s.R + kx];
                            }
                    ref[(((size_t)n * s.K + o) * Ho + i) * Wo + j] = acc;
                }
    for (int wino = 0; wino < 2; wino++) {
        tf_kernels_set_winograd(k, wino);
        TfError err = {{0}};
        CHECKF(tf_conv2d(k, y, x, w, b, &s, &err) == 0, "%s", err.msg);
        double e = rel_err(y, ref, ny);
        fprintf(stderr, "conv %-34s %s path: max rel err %.2e\n", what, wino ? "default" : "im2col ", e);
        CHECKF(e < 1e-5, "conv %s (winograd %d): %.3e", what, wino, e);
    }
    free(x);
    free(w);
    free(b);
    free(y);
    free(ref);
}

static void test_conv(TfKernels *k)
{
    check_conv(k, (TfConv2dShape){2, 16, 9, 7, 12, 3, 1, 1, 1, 1, 1}, "3x3 same, odd 9x7");
    check_conv(k, (TfConv2dShape){1, 32, 16, 16, 24, 3, 1, 1, 1, 1, 1}, "3x3 same 16x16");
    check_conv(k, (TfConv2dShape){1, 3, 10, 12, 8, 3, 1, 1, 1, 1, 1}, "3x3 same, 3 channels");
    check_conv(k, (TfConv2dShape){2, 8, 12, 10, 8, 3, 2, 0, 0, 1, 1}, "3x3 stride 2, pad right/bottom");
    check_conv(k, (TfConv2dShape){1, 8, 11, 9, 4, 3, 2, 0, 0, 1, 1}, "3x3 stride 2, odd 11x9");
    check_conv(k, (TfConv2dShape){2, 20, 6, 5, 7, 1, 1, 0, 0, 0, 0}, "1x1");
    check_conv(k, (TfConv2dShape){1, 520, 4, 4, 9, 3, 1, 1, 1, 1, 1}, "3x3 many channels");
    check_conv(k, (TfConv2dShape){1, 64, 40, 256, 64, 3, 1, 1, 1, 1, 1}, "3x3 40x256 (chunked rows)");
    TfError err = {{0}};
    TfConv2dShape bad = {1, 4, 2, 2, 4, 5, 1, 0, 0, 0, 0};
    CHECK(tf_conv2d(k, NULL, NULL, NULL, NULL, &bad, &err) == -1);
}

static void test_group_norm(TfKernels *k)
{
    const int B = 2, C = 12, G = 3;
    const size_t HW = 50, n = (size_t)B * C * HW;
    float *x = rand_buf(n), *g = rand_buf(C), *bb = rand_buf(C), *y = malloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] * 3.0f + 100.0f; /* a large offset: needs careful statistics */
    double *ref = malloc(n * sizeof *ref);
    for (int silu = 0; silu < 2; silu++) {
        for (int b = 0; b < B; b++)
            for (int gi = 0; gi < G; gi++) {
                size_t off = ((size_t)b * C + (size_t)gi * (C / G)) * HW, m = (size_t)(C / G) * HW;
                double mean = 0, var = 0;
                for (size_t i = 0; i < m; i++)
                    mean += x[off + i];
                mean /= (double)m;
                for (size_t i = 0; i < m; i++)
                    var += (x[off + i] - mean) * (x[off + i] - mean);
                var /= (double)m;
                for (size_t i = 0; i < m; i++) {
                    int c = gi * (C / G) + (int)(i / HW);
                    double v = (x[off + i] - mean) / sqrt(var + 1e-6) * g[c] + bb[c];
                    ref[off + i] = silu ? v / (1 + exp(-v)) : v;
                }
            }
        CHECK(tf_group_norm(k, y, NULL, NULL, x, g, bb, B, C, HW, G, 1e-6f, silu, NULL) == 0);
        double e = rel_err(y, ref, n);
        fprintf(stderr, "group_norm%s: max rel err %.2e\n", silu ? "+silu" : "     ", e);
        CHECK(e < 1e-5);
    }
    free(x);
    free(g);
    free(bb);
    free(y);
    free(ref);
}

static void check_attention(TfKernels *k, int B, int C, int T, float scale, const char *what)
{
    const size_t n = (size_t)B * C * T;
    float *q = rand_buf(n), *kk = rand_buf(n), *v = rand_buf(n), *y = malloc(n * sizeof *y);
    double *ref = calloc(n, sizeof *ref), *s = malloc((size_t)T * sizeof *s);
    for (int b = 0; b < B; b++) {
        const size_t o = (size_t)b * C * T;
        for (int i = 0; i < T; i++) {
            double mx = -1e300, sum = 0;
            for (int j = 0; j < T; j++) {
                double d = 0;
                for (int c = 0; c < C; c++)
                    d += (double)q[o + (size_t)c * T + i] * kk[o + (size_t)c * T + j];
                s[j] = d * scale;
                mx = fmax(mx, s[j]);
            }
            for (int j = 0; j < T; j++)
                sum += (s[j] = exp(s[j] - mx));
            for (int c = 0; c < C; c++) {
                double acc = 0;
                for (int j = 0; j < T; j++)
                    acc += s[j] / sum * v[o + (size_t)c * T + j];
                ref[o + (size_t)c * T + i] = acc;
            }
        }
    }
    TfError err = {{0}};
    CHECK(tf_attention(k, y, q, kk, v, B, C, T, scale, &err) == 0);
    double e = rel_err(y, ref, n);
    fprintf(stderr, "attention %-28s: max rel err %.2e\n", what, e);
    CHECKF(e < 1e-5, "attention %s: %.3e", what, e);
    free(q);
    free(kk);
    free(v);
    free(y);
    free(ref);
    free(s);
}

static void test_attention_misc(TfKernels *k)
{
    check_attention(k, 2, 8, 37, 2.8f, "sharp (max subtraction)");
    check_attention(k, 1, 4, 4200, 0.5f, "T=4200 (query row blocks)");

    /* Upsampling, add, scale/shift, silu: exact or nearly. */
    float x[6] = {1, 2, 3, 4, 5, 6}, up[24];
    CHECK(tf_upsample_nearest2x(k, up, x, 1, 1, 2, 3, NULL) == 0);
    static const float want[24] = {1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 4, 4, 5, 5, 6, 6};
    CHECK(!memcmp(up, want, sizeof want));
    float a[3] = {1, -2, 0.5f}, b2[3] = {3, 4, -1}, r[3];
    CHECK(tf_add(k, r, a, b2, 3, NULL) == 0);
    CHECK(r[0] == 4 && r[1] == 2 && r[2] == -0.5f);
    CHECK(tf_scale_shift(k, r, a, 2.0f, 1.0f, 3, NULL) == 0);
    CHECK(r[0] == 3 && r[1] == -3 && r[2] == 2);
    CHECK(tf_silu(k, r, a, 3, NULL) == 0);
    CHECK(fabsf(r[0] - 0.7310586f) < 1e-6f && fabsf(r[1] + 0.2384058f) < 1e-6f);
}


/* ---- backward passes ---- */

/* Conv backward reference in double: dx[c,iy,ix] = sum dy[o,oy,ox]
 * w[o,c,ky,kx] over the taps that read the pixel; dw[o,c,ky,kx] = sum
 * dy[o,oy,ox] x[c,iy,ix]; db[o] = sum dy[o]. */
static void conv_backward_ref(const TfConv2dShape *s, const double *x, const double *w, const double *dy, double *dx,
                              double *dw, double *db)
{
    const int Ho = tf_conv2d_out_h(s), Wo = tf_conv2d_out_w(s);
    memset(dx, 0, (size_t)s->B * s->C * s->H * s->W * sizeof *dx);
    memset(dw, 0, (size_t)s->K * s->C * s->R * s->R * sizeof *dw);
    memset(db, 0, (size_t)s->K * sizeof *db);
    for (int n = 0; n < s->B; n++)
        for (int o = 0; o < s->K; o++)
            for (int i = 0; i < Ho; i++)
                for (int j = 0; j < Wo; j++) {
                    const double g = dy[(((size_t)n * s->K + o) * Ho + i) * Wo + j];
                    db[o] += g;
                    for (int c = 0; c < s->C; c++)
                        for (int ky = 0; ky < s->R; ky++)
                            for (int kx = 0; kx < s->R; kx++) {
                                int iy = i * s->stride - s->pad_top + ky, ix = j * s->stride - s->pad_left + kx;
                                if (iy < 0 || iy >= s->H || ix < 0 || ix >= s->W)
                                    continue;
                                size_t xi = (((size_t)n * s->C + c) * s->H + iy) * s->W + ix;
                                size_t wi = (((size_t)o * s->C + c) * s->R + ky) * s->R + kx;
                                dx[xi] += g * w[wi];
                                dw[wi] += g * x[xi];
                            }
                }
}

typedef struct ConvCtx {
    TfConv2dShape s;
    double *x, *w, *dy;
} ConvCtx;

/* sum(dy * conv(x, w)) in double (the bias term is constant in x, w). */
static double conv_loss(void *p)
{
    ConvCtx *c = p;
    const TfConv2dShape *s = &c->s;
    const int Ho = tf_conv2d_out_h(s), Wo = tf_conv2d_out_w(s);
    double L = 0;
    for (int n = 0; n < s->B; n++)
        for (int o = 0; o < s->K; o++)
            for (int i = 0; i < Ho; i++)
                for (int j = 0; j < Wo; j++) {
                    double acc = 0;
                    for (int ch = 0; ch < s->C; ch++)
                        for (int ky = 0; ky < s->R; ky++)
                            for (int kx = 0; kx < s->R; kx++) {
                                int iy = i * s->stride - s->pad_top + ky, ix = j * s->stride - s->pad_left + kx;
                                if (iy >= 0 && iy < s->H && ix >= 0 && ix < s->W)
                                    acc += c->x[(((size_t)n * s->C + ch) * s->H + iy) * s->W + ix] *
                                           c->w[(((size_t)o * s->C + ch) * s->R + ky) * s->R + kx];
                            }
                    L += c->dy[(((size_t)n * s->K + o) * Ho + i) * Wo + j] * acc;
                }
    return L;
}

static void check_conv_backward(TfConv2dShape s, const char *what, int finite_differences)
{
    const int Ho = tf_conv2d_out_h(&s), Wo = tf_conv2d_out_w(&s);
    const size_t nx = (size_t)s.B * s.C * s.H * s.W, nw = (size_t)s.K * s.C * s.R * s.R, ny = (size_t)s.B * s.K * Ho * Wo;
    float *x = rand_buf(nx), *w = rand_buf(nw), *dy = rand_buf(ny), *db0 = rand_buf((size_t)s.K);
    ConvCtx c = {s, to_double(x, nx), to_double(w, nw), to_double(dy, ny)};
    double *rdx = dzeros(nx), *rdw = dzeros(nw), *rdb = dzeros((size_t)s.K);
    conv_backward_ref(&s, c.x, c.w, c.dy, rdx, rdw, rdb);
    if (finite_differences) { /* the reference itself, against the forward's derivative */
        double *fx = dzeros(nx), *fw = dzeros(nw), e = 0;
        fd_grad(c.x, nx, conv_loss, &c, fx);
        fd_grad(c.w, nw, conv_loss, &c, fw);
        for (size_t i = 0; i < nx; i++)
            e = fmax(e, fabs(fx[i] - rdx[i]));
        for (size_t i = 0; i < nw; i++)
            e = fmax(e, fabs(fw[i] - rdw[i]));
        CHECKF(e < 1e-6, "conv backward reference vs finite differences (%s): %.3e", what, e);
        free(fx);
        free(fw);
    }
    for (int o = 0; o < s.K; o++)
        rdb[o] += db0[o]; /* db accumulates */
    float *dx[KREF_CONTEXTS], *dw[KREF_CONTEXTS], *db[KREF_CONTEXTS];
    for (int t = 0; t < KREF_CONTEXTS; t++) {
        TfError err = {{0}};
        dx[t] = rand_buf(nx); /* overwritten */
        dw[t] = zeros(nw);
        db[t] = copy_buf(db0, (size_t)s.K);
        CHECKF(tf_conv2d_backward(kref_k[t], dx[t], dw[t], db[t], dy, x, w, &s, &err) == 0, "%s", err.msg);
    }
    char line[120];
    snprintf(line, sizeof line, "conv backward %s: dx", what);
    CHECK_REL(line, dx[0], rdx, nx, 1e-5);
    snprintf(line, sizeof line, "conv backward %s: dw", what);
    CHECK_REL(line, dw[0], rdw, nw, 1e-5);
    snprintf(line, sizeof line, "conv backward %s: db", what);
    CHECK_REL(line, db[0], rdb, (size_t)s.K, 1e-5);
    check_threads("conv backward dx", dx, nx);
    check_threads("conv backward dw", dw, nw);
    check_threads("conv backward db", db, (size_t)s.K);
    for (int t = 0; t < KREF_CONTEXTS; t++) {
        free(dx[t]);
        free(dw[t]);
        free(db[t]);
    }
    free(x);
    free(w);
    free(dy);
    free(db0);
    free(c.x);
    free(c.w);
    free(c.dy);
    free(rdx);
    free(rdw);
    free(rdb);
}

static void test_conv_backward(void)
{
    check_conv_backward((TfConv2dShape){2, 5, 9, 7, 4, 3, 1, 1, 1, 1, 1}, "3x3 same, odd 9x7", 1);
    check_conv_backward((TfConv2dShape){1, 3, 8, 10, 6, 3, 2, 0, 0, 1, 1}, "3x3 stride 2, pad right/bottom", 1);
    check_conv_backward((TfConv2dShape){2, 4, 9, 7, 3, 3, 2, 1, 1, 1, 1}, "3x3 stride 2, pad 1", 1);
    check_conv_backward((TfConv2dShape){2, 6, 5, 3, 7, 1, 1, 0, 0, 0, 0}, "1x1", 1);
    check_conv_backward((TfConv2dShape){1, 4, 6, 4, 5, 2, 2, 0, 0, 0, 0}, "2x2 stride 2 (patch embedding)", 1);
    check_conv_backward((TfConv2dShape){2, 9, 7, 5, 10, 3, 1, 1, 1, 1, 1}, "3x3 same, dx by Winograd", 1);
    check_conv_backward((TfConv2dShape){1, 32, 40, 512, 16, 3, 1, 1, 1, 1, 1}, "3x3 40x512 (Winograd dx)", 0);
    for (int t = 0; t < KREF_CONTEXTS; t++)
        tf_kernels_set_winograd(kref_k[t], 0);
    check_conv_backward((TfConv2dShape){1, 32, 40, 512, 16, 3, 1, 1, 1, 1, 1}, "3x3 40x512 (im2col, chunked rows)", 0);
    for (int t = 0; t < KREF_CONTEXTS; t++)
        tf_kernels_set_winograd(kref_k[t], 1);
}

typedef struct GnCtx {
    double *x, *g, *b, *dy;
    int B, C, G;
    size_t HW;
} GnCtx;

static double gn_loss(void *p)
{
    GnCtx *c = p;
    const int cg = c->C / c->G;
    const size_t m = (size_t)cg * c->HW;
    double L = 0;
    for (int b = 0; b < c->B; b++)
        for (int g = 0; g < c->G; g++) {
            const size_t off = ((size_t)b * c->C + (size_t)g * cg) * c->HW;
            double mu = 0, var = 0;
            for (size_t i = 0; i < m; i++)
                mu += c->x[off + i] / m;
            for (size_t i = 0; i < m; i++)
                var += (c->x[off + i] - mu) * (c->x[off + i] - mu) / m;
            for (size_t i = 0; i < m; i++) {
                int ch = g * cg + (int)(i / c->HW);
                L += c->dy[off + i] * ((c->x[off + i] - mu) / sqrt(var + 1e-6) * (c->g ? c->g[ch] : 1.0) +
                                       (c->b ? c->b[ch] : 0.0));
            }
        }
    return L;
}

static void check_group_norm_backward(int B, int C, size_t HW, int G, int affine)
{
    const size_t n = (size_t)B * C * HW;
    float *x = rand_buf(n), *gm = rand_buf(C), *bt = rand_buf(C), *dy = rand_buf(n);
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] * 2.0f + 5.0f;
    GnCtx c = {to_double(x, n), affine ? to_double(gm, C) : NULL, affine ? to_double(bt, C) : NULL, to_double(dy, n),
               B, C, G, HW};
    double *rdx = dzeros(n), *rdg = dzeros(C), *rdb = dzeros(C);
    fd_grad(c.x, n, gn_loss, &c, rdx);
    if (affine) {
        fd_grad(c.g, C, gn_loss, &c, rdg);
        fd_grad(c.b, C, gn_loss, &c, rdb);
    }
    float *mean = zeros((size_t)B * G), *rstd = zeros((size_t)B * G), *y = zeros(n);
    float *dx[KREF_CONTEXTS], *dg[KREF_CONTEXTS], *db[KREF_CONTEXTS];
    for (int t = 0; t < KREF_CONTEXTS; t++) {
        TfError err = {{0}};
        dx[t] = zeros(n);
        dg[t] = zeros(C);
        db[t] = zeros(C);
        CHECK(tf_group_norm(kref_k[t], y, mean, rstd, x, affine ? gm : NULL, affine ? bt : NULL, B, C, HW, G, 1e-6f,
                            0, &err) == 0);
        CHECKF(tf_group_norm_backward(kref_k[t], dx[t], affine ? dg[t] : NULL, affine ? db[t] : NULL, dy, x, mean,
                                      rstd, affine ? gm : NULL, B, C, HW, G, &err) == 0,
               "%s", err.msg);
    }
    char line[120];
    snprintf(line, sizeof line, "group_norm backward B%d C%d HW%zu G%d%s: dx", B, C, HW, G, affine ? "" : " no affine");
    CHECK_REL(line, dx[0], rdx, n, 1e-5);
    if (affine) {
        CHECK_REL("  dgamma (finite differences)", dg[0], rdg, C, 1e-5);
        CHECK_REL("  dbeta (finite differences)", db[0], rdb, C, 1e-5);
        check_threads("group_norm dgamma", dg, C);
    }
    check_threads("group_norm dx", dx, n);
    for (int t = 0; t < KREF_CONTEXTS; t++) {
        free(dx[t]);
        free(dg[t]);
        free(db[t]);
    }
    free(x);
    free(gm);
    free(bt);
    free(dy);
    free(c.x);
    free(c.g);
    free(c.b);
    free(c.dy);
    free(rdx);
    free(rdg);
    free(rdb);
    free(mean);
    free(rstd);
    free(y);
}

static void test_backward_misc(void)
{
    check_group_norm_backward(2, 12, 10, 3, 1);
    check_group_norm_backward(3, 8, 7, 1, 1); /* one group: the LayerNorm form of the U-Net adapter */
    check_group_norm_backward(1, 6, 5, 2, 0);

    const int B = 2, C = 3, H = 5, W = 7;
    const size_t nx = (size_t)B * C * H * W;
    float *dy = rand_buf(4 * nx), *dx = zeros(nx);
    double *ref = dzeros(nx);
    for (int bc = 0; bc < B * C; bc++)
        for (int i = 0; i < 2 * H; i++)
            for (int j = 0; j < 2 * W; j++)
                ref[((size_t)bc * H + i / 2) * W + j / 2] += dy[((size_t)bc * 2 * H + i) * 2 * W + j];
    TfError err = {{0}};
    CHECK(tf_upsample_nearest2x_backward(kref_k[1], dx, dy, B, C, H, W, &err) == 0);
    CHECK_REL("upsample_nearest2x backward", dx, ref, nx, 1e-6);
    free(dy);
    free(dx);
    free(ref);
}

int main(void)
{
    TfError err = {{0}};
    for (int threads = 1; threads <= 2; threads++) {
        TfKernels *k = tf_kernels_new(TF_BACKEND_CPU, threads, &err);
        REQUIRE(k);
        CHECK(!strcmp(tf_kernels_backend_name(k), "cpu") && tf_kernels_threads(k) == threads);
        test_conv(k);
        test_group_norm(k);
        test_attention_misc(k);
        tf_kernels_free(k);
    }
    kref_open();
    test_conv_backward();
    test_backward_misc();
    kref_close();
    return test_main_end("test_kernels");
}
