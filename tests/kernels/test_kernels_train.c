/* test_kernels_train.c: the kernels of the objective and the optimiser
 * against double-precision references: the LM-head cross-entropy
 * (vocabularies crossing tiles and the full 128,256 words; untargeted
 * rows; dh; dw for listed rows; bf16 heads), MSE, AdamW over several
 * steps with weight decay and a clipping factor (and one step worked by
 * hand), the squared sum and clipping factor, Philox noise (known-answer
 * vectors, independence of threads and of how a fill is split, moments),
 * noise mixing, latent sampling and the timestep embedding. */
#include "kref.h"

/* ---- cross-entropy ---- */

static void check_ce(const char *what, int N, int D, int V, int bf16, int with_dw)
{
    float *h = rand_buf((size_t)N * D), *w = rand_buf((size_t)V * D);
    for (size_t i = 0; i < (size_t)N * D; i++)
        h[i] *= 2.0f;
    uint16_t *wh = malloc((size_t)V * D * sizeof *wh);
    for (size_t i = 0; i < (size_t)V * D; i++) {
        wh[i] = tf_f32_to_bf16(w[i]);
        if (bf16)
            w[i] = tf_bf16_to_f32(wh[i]);
    }
    int32_t *tg = malloc((size_t)N * sizeof *tg);
    int count = 0;
    for (int n = 0; n < N; n++) {
        tg[n] = n % 4 == 1 ? -1 : (int)((n * 2654435761u) % (unsigned)V);
        count += tg[n] >= 0;
    }
    if (N > 2)
        tg[2] = V - 1; /* the last word, in the last (partial) tile */
    const int32_t rows[3] = {V - 1, 0, V / 2};
    const int R = with_dw ? 3 : 0;
    const float gs = count ? 1.0f / count : 1.0f;
    /* reference: dense logits in double */
    double *rl = dzeros(N), *rdh = dzeros((size_t)N * D), *rdw = dzeros((size_t)3 * D), *lg = dzeros(V);
    double mean = 0;
    for (int n = 0; n < N; n++) {
        if (tg[n] < 0)
            continue;
        double mx = -INFINITY, sum = 0;
        for (int v = 0; v < V; v++) {
            double s = 0;
            for (int d = 0; d < D; d++)
                s += (double)h[(size_t)n * D + d] * w[(size_t)v * D + d];
            lg[v] = s;
            mx = fmax(mx, s);
        }
        for (int v = 0; v < V; v++)
            sum += exp(lg[v] - mx);
        const double lse = mx + log(sum);
        rl[n] = lse - lg[tg[n]];
        mean += rl[n] / count;
        for (int v = 0; v < V; v++) {
            const double g = gs * (exp(lg[v] - lse) - (v == tg[n]));
            for (int d = 0; d < D; d++)
                rdh[(size_t)n * D + d] += g * w[(size_t)v * D + d];
            for (int r = 0; r < R; r++)
                if (rows[r] == v)
                    for (int d = 0; d < D; d++)
                        rdw[(size_t)r * D + d] += g * h[(size_t)n * D + d];
        }
    }
    for (int r = 0; r < R; r++)
        rdw[(size_t)r * D] += 1.0; /* dw accumulates */
    float *loss[KREF_CONTEXTS], *dh[KREF_CONTEXTS], *dw[KREF_CONTEXTS];
    double m[KREF_CONTEXTS];
    for (int t = 0; t < KREF_CONTEXTS; t++) {
        TfError err = {{0}};
        loss[t] = rand_buf(N);
        dh[t] = rand_buf((size_t)N * D);
        dw[t] = zeros((size_t)3 * D);
        for (int r = 0; r < 3; r++)
            dw[t][(size_t)r * D] = 1.0f;
        TfBuf wb = bf16 ? tf_buf_bf16(wh) : tf_buf_f32(w);
        CHECKF(tf_cross_entropy_lm_head(kref_k[t], loss[t], &m[t], dh[t], with_dw ? dw[t] : NULL, rows, R, h, wb, tg,
                                        N, D, V, gs, &err) == 0,
               "%s", err.msg);
    }
    char line[160];
    snprintf(line, sizeof line, "cross-entropy %s N%d D%d V%d%s: losses", what, N, D, V, bf16 ? " bf16" : "");
    CHECK_REL(line, loss[0], rl, N, 1e-5);
    fprintf(stderr, "  %-52s %.9g vs %.9g\n", "  mean loss", m[0], mean);
    CHECKF(fabs(m[0] - mean) < 1e-5 * fabs(mean), "%s mean loss %.9g vs %.9g", what, m[0], mean);
    snprintf(line, sizeof line, "cross-entropy %s: dh", what);
    CHECK_REL(line, dh[0], rdh, (size_t)N * D, 1e-5);
    if (with_dw) {
        snprintf(line, sizeof line, "cross-entropy %s: dw (3 listed rows)", what);
        CHECK_REL(line, dw[0], rdw, (size_t)3 * D, 1e-5);
        check_threads("ce dw", dw, (size_t)3 * D);
    }
    check_threads("ce losses", loss, N);
    check_threads("ce dh", dh, (size_t)N * D);
    CHECK(m[0] == m[1] && m[0] == m[2]);
    /* losses alone (no gradient) are the same numbers */
    float *l2 = zeros(N);
    TfError err = {{0}};
    CHECK(tf_cross_entropy_lm_head(kref_k[1], l2, NULL, NULL, NULL, NULL, 0, h, bf16 ? tf_buf_bf16(wh) : tf_buf_f32(w),
                                   tg, N, D, V, 1.0f, &err) == 0);
    CHECK(same_bits(l2, loss[0], (size_t)N * sizeof(float)));
    for (int t = 0; t < KREF_CONTEXTS; t++) {
        free(loss[t]);
        free(dh[t]);
        free(dw[t]);
    }
    free(l2);
    free(h);
    free(w);
    free(wh);
    free(tg);
    free(rl);
    free(rdh);
    free(rdw);
    free(lg);
}

static void test_cross_entropy(void)
{
    check_ce("tiles", 70, 24, 2500, 0, 1);
    check_ce("tiles", 13, 17, 1031, 1, 1);
    check_ce("Llama-3 vocabulary", 5, 8, 128256, 0, 1);
    check_ce("one row", 1, 3, 7, 0, 0);
    /* no targeted row: zero loss, zero gradient */
    float h[6] = {1, 2, 3, 4, 5, 6}, w[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1}, dh[6], loss[2];
    const int32_t tg[2] = {-1, -1};
    double mean = 7;
    TfError err = {{0}};
    memset(dh, 0x7f, sizeof dh);
    CHECK(tf_cross_entropy_lm_head(kref_k[0], loss, &mean, dh, NULL, NULL, 0, h, tf_buf_f32(w), tg, 2, 3, 3, 1.0f,
                                   &err) == 0);
    CHECK(mean == 0 && dh[0] == 0 && dh[5] == 0 && loss[1] == 0);
}

/* ---- MSE ---- */

static void test_mse(void)
{
    const int B = 3;
    const size_t n = 10001;
    float *p = rand_buf((size_t)B * n), *t = rand_buf((size_t)B * n);
    double *rl = dzeros(B), *rd = dzeros((size_t)B * n), mean = 0;
    const float gs = 5.0f / B;
    for (int b = 0; b < B; b++) {
        for (size_t i = 0; i < n; i++) {
            double d = (double)p[b * n + i] - t[b * n + i];
            rl[b] += d * d / n;
            rd[b * n + i] = gs * 2 * d / n;
        }
        mean += rl[b] / B;
    }
    float *l[KREF_CONTEXTS], *d[KREF_CONTEXTS];
    double m[KREF_CONTEXTS];
    for (int k = 0; k < KREF_CONTEXTS; k++) {
        TfError err = {{0}};
        l[k] = zeros(B);
        d[k] = zeros((size_t)B * n);
        CHECK(tf_mse(kref_k[k], l[k], &m[k], d[k], p, t, B, n, gs, &err) == 0);
    }
    CHECK_REL("mse per image", l[0], rl, B, 1e-6);
    CHECK_REL("mse gradient", d[0], rd, (size_t)B * n, 1e-6);
    CHECKF(fabs(m[0] - mean) < 1e-9 * mean, "mse mean %.9g vs %.9g", m[0], mean);
    check_threads("mse", l, B);
    CHECK(m[0] == m[1] && m[1] == m[2]);
    for (int k = 0; k < KREF_CONTEXTS; k++) {
        free(l[k]);
        free(d[k]);
    }
    free(p);
    free(t);
    free(rl);
    free(rd);
}

/* ---- AdamW, norms ---- */

static void test_adamw(void)
{
    /* One step by hand: p 1, g 0.5, lr 0.1, wd 0.1: m = 0.05, v = 0.0125,
     * bias-corrected m/sqrt(v) = 0.5/0.5 = 1, p = 0.99 - 0.1 = 0.89. */
    float p = 1.0f, g = 0.5f, m = 0, v = 0;
    TfAdamW h = {0.1, 0.9, 0.95, 1e-8, 0.1, 1};
    TfError err = {{0}};
    CHECK(tf_adamw(kref_k[0], &p, &g, &m, &v, 1, &h, 1.0f, &err) == 0);
    CHECKF(fabs(p - 0.89) < 1e-6 && fabs(m - 0.05) < 1e-8 && fabs(v - 0.0125) < 1e-9, "adamw by hand: %.9g", p);

    /* Ten steps against the same arithmetic in double. */
    const size_t n = 5003;
    float *pp[KREF_CONTEXTS], *mm[KREF_CONTEXTS], *vv[KREF_CONTEXTS];
    float *p0 = rand_buf(n);
    double *rp = to_double(p0, n), *rm = dzeros(n), *rv = dzeros(n);
    for (int k = 0; k < KREF_CONTEXTS; k++) {
        pp[k] = copy_buf(p0, n);
        mm[k] = zeros(n);
        vv[k] = zeros(n);
    }
    for (long step = 1; step <= 10; step++) {
        float *grad = rand_buf(n);
        const float clip = step % 3 ? 1.0f : 0.25f;
        TfAdamW hp = {3e-3, 0.9, 0.95, 1e-8, step % 2 ? 0.1 : 0.0, step};
        for (int k = 0; k < KREF_CONTEXTS; k++)
            CHECK(tf_adamw(kref_k[k], pp[k], grad, mm[k], vv[k], n, &hp, clip, &err) == 0);
        for (size_t i = 0; i < n; i++) {
            double gi = (double)grad[i] * clip;
            rp[i] *= 1 - hp.lr * hp.weight_decay;
            rm[i] = 0.9 * rm[i] + 0.1 * gi;
            rv[i] = 0.95 * rv[i] + 0.05 * gi * gi;
            double mh = rm[i] / (1 - pow(0.9, step)), vh = sqrt(rv[i]) / sqrt(1 - pow(0.95, step));
            rp[i] -= hp.lr * mh / (vh + 1e-8);
        }
        free(grad);
    }
    CHECK_REL("adamw 10 steps (wd, clipping factor): params", pp[0], rp, n, 1e-6);
    CHECK_REL("adamw 10 steps: first moment", mm[0], rm, n, 1e-5);
    CHECK_REL("adamw 10 steps: second moment", vv[0], rv, n, 1e-5);
    check_threads("adamw", pp, n);
    for (int k = 0; k < KREF_CONTEXTS; k++) {
        free(pp[k]);
        free(mm[k]);
        free(vv[k]);
    }
    free(p0);
    free(rp);
    free(rm);
    free(rv);

    /* squared sum and the clipping factor */
    const size_t big = 3000017;
    float *x = rand_buf(big);
    double want = 0, got[KREF_CONTEXTS];
    for (size_t i = 0; i < big; i++)
        want += (double)x[i] * x[i];
    for (int k = 0; k < KREF_CONTEXTS; k++)
        CHECK(tf_sum_squares(kref_k[k], &got[k], x, big, &err) == 0);
    fprintf(stderr, "  sum_squares: %.17g vs %.17g\n", got[0], want);
    CHECK(fabs(got[0] - want) < 1e-12 * want && got[0] == got[1] && got[0] == got[2]);
    free(x);
    CHECK(tf_clip_grad_scale(0.5, 1.0) == 1.0f);
    CHECK(fabsf(tf_clip_grad_scale(4.0, 1.0) - (float)(1.0 / (4.0 + 1e-6))) == 0.0f);
}

/* ---- noise ---- */

static void test_randn(void)
{
    /* Random123's known-answer vectors for philox4x32-10. */
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d, 0x41c83b0e, 0xa20bc7c6,
         0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09, 0x94fdcceb, 0x5001e420,
         0x24126ea1},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        tf_philox4x32(kat[i], kat[i] + 4, out);
        CHECKF(!memcmp(out, kat[i] + 6, sizeof out), "philox4x32-10 known answer %d: %08x %08x %08x %08x", i, out[0],
               out[1], out[2], out[3]);
    }
    const size_t n = 1000001;
    float *y[KREF_CONTEXTS];
    TfError err = {{0}};
    for (int k = 0; k < KREF_CONTEXTS; k++) {
        y[k] = zeros(n);
        CHECK(tf_randn(kref_k[k], y[k], n, 1234, 7, 0, 0.0f, 1.0f, &err) == 0);
    }
    check_threads("randn", y, n);
    double s1 = 0, s2 = 0, s4 = 0;
    for (size_t i = 0; i < n; i++) {
        s1 += y[0][i];
        s2 += (double)y[0][i] * y[0][i];
        s4 += (double)y[0][i] * y[0][i] * y[0][i] * y[0][i];
    }
    s1 /= n;
    s2 /= n;
    s4 /= n;
    fprintf(stderr, "  randn moments over %zu: mean %.4f, var %.4f, 4th %.4f\n", n, s1, s2, s4);
    CHECK(fabs(s1) < 0.005 && fabs(s2 - 1) < 0.01 && fabs(s4 - 3) < 0.05);
    /* split fills, odd offsets: the same values */
    float *parts = zeros(n);
    CHECK(tf_randn(kref_k[1], parts, 333, 1234, 7, 0, 0.0f, 1.0f, &err) == 0);
    CHECK(tf_randn(kref_k[1], parts + 333, 1, 1234, 7, 333, 0.0f, 1.0f, &err) == 0);
    CHECK(tf_randn(kref_k[2], parts + 334, n - 334, 1234, 7, 334, 0.0f, 1.0f, &err) == 0);
    CHECKF(same_bits(parts, y[0], n * sizeof(float)), "randn split at odd offsets");
    /* another stream or seed: other values; mean and std applied */
    CHECK(tf_randn(kref_k[0], parts, 16, 1234, 8, 0, 0.0f, 1.0f, &err) == 0);
    CHECK(!same_bits(parts, y[0], 16 * sizeof(float)));
    CHECK(tf_randn(kref_k[0], parts, 16, 1234, 7, 0, 2.0f, 0.5f, &err) == 0);
    CHECK(fabsf(parts[3] - (2.0f + 0.5f * y[0][3])) < 1e-6f);
    for (int k = 0; k < KREF_CONTEXTS; k++)
        free(y[k]);
    free(parts);
}

/* ---- diffusion inputs ---- */

static void test_diffusion_inputs(void)
{
    TfKernels *k = kref_k[1];
    TfError err = {{0}};
    const int B = 3;
    const size_t n = 101;
    float *x0 = rand_buf(B * n), *eps = rand_buf(B * n), *xt = zeros(B * n);
    const float a[3] = {0.9f, 0.5f, 0.01f}, s[3] = {0.43588989f, 0.8660254f, 0.99995f};
    CHECK(tf_noise_mix(k, xt, x0, eps, a, s, B, n, &err) == 0);
    int ok = 1;
    for (int b = 0; b < B; b++)
        for (size_t i = 0; i < n; i++)
            ok &= xt[b * n + i] == a[b] * x0[b * n + i] + s[b] * eps[b * n + i];
    CHECKF(ok, "noise_mix");

    float *mean = rand_buf(n), *lv = rand_buf(n), *z = zeros(n);
    lv[0] = -100.0f; /* clamped to -30 */
    lv[1] = 50.0f;   /* clamped to 20 */
    CHECK(tf_latent_sample(k, z, mean, lv, eps, n, 0.1f, 0.18215f, &err) == 0);
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double l = fmin(fmax(lv[i], -30.0), 20.0);
        double want = (mean[i] + exp(0.5 * l) * eps[i] - 0.1) * 0.18215;
        worst = fmax(worst, fabs(z[i] - want) / fmax(1.0, fabs(want)));
    }
    CHECKF(worst < 1e-6, "latent_sample: %.3e", worst);
    CHECK(tf_latent_sample(k, z, mean, NULL, NULL, n, 0.1f, 2.0f, &err) == 0);
    CHECK(z[7] == (mean[7] - 0.1f) * 2.0f);

    /* diffusers' get_timestep_embedding, odd and even widths, both orders */
    const float ts[4] = {0, 1, 499, 999};
    for (int D = 7; D <= 8; D++)
        for (int flip = 0; flip < 2; flip++) {
            float *e = zeros((size_t)4 * D);
            double *r = dzeros((size_t)4 * D);
            const int half = D / 2;
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < half; j++) {
                    double f = exp(-log(10000.0) * j / (half - 1.0)), arg = ts[i] * f;
                    r[i * D + (flip ? half + j : j)] = sin(arg);
                    r[i * D + (flip ? j : half + j)] = cos(arg);
                }
            CHECK(tf_timestep_embedding(k, e, ts, 4, D, flip, 1.0f, 10000.0f, &err) == 0);
            char line[80];
            snprintf(line, sizeof line, "timestep embedding D%d flip %d shift 1", D, flip);
            CHECK_REL(line, e, r, (size_t)4 * D, 1e-6);
            if (D % 2)
                CHECK(e[D - 1] == 0.0f && e[4 * D - 1] == 0.0f);
            free(e);
            free(r);
        }
    free(x0);
    free(eps);
    free(xt);
    free(mean);
    free(lv);
    free(z);
}

int main(void)
{
    kref_open();
    test_cross_entropy();
    test_mse();
    test_adamw();
    test_randn();
    test_diffusion_inputs();
    kref_close();
    return test_main_end("test_kernels_train");
}
