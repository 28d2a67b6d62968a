/* test_kernels_attention.c: RoPE and grouped-query attention against
 * double-precision references.
 *
 * RoPE: the llama3-scaled inverse frequencies against the formula written
 * out here, the table, the rotation (rotate-half pairs i, i+HD/2) at
 * per-row positions, and its backward as the rotation's transpose.
 * Attention: a dense reference with an explicit (T,T) mask built from the
 * (lo, hi) bounds, for causal packed documents, image spans seen
 * bidirectionally, and no mask; GQA group sizes 1, 2 and NH; sequence
 * lengths that cross and skip tiles. The backward against the analytic
 * double reference, which is itself checked by finite differences on a
 * small case. Bit-identical across 1, 2 and 3 threads. */
#include "kref.h"

/* ---- RoPE ---- */

static void test_rope(void)
{
    /* Llama-3.2-1B's parameters (theta 500000, llama3 factor 32, low 1,
     * high 4, original 8192), head dim 64. */
    TfRope rope = {64, 500000.0, 32.0, 1.0, 4.0, 8192};
    const int half = 32;
    double inv[32], want[32];
    TfError err = {{0}};
    CHECKF(tf_rope_inv_freq(&rope, inv, &err) == 0, "%s", err.msg);
    int scaled_low = 0, kept = 0, smoothed = 0;
    for (int i = 0; i < half; i++) {
        double f = pow(500000.0, -(2.0 * i) / 64.0), wl = 2 * M_PI / f;
        if (wl < 8192.0 / 4.0) {
            want[i] = f;
            kept++;
        } else if (wl > 8192.0 / 1.0) {
            want[i] = f / 32.0;
            scaled_low++;
        } else {
            double s = (8192.0 / wl - 1.0) / (4.0 - 1.0);
            want[i] = (1 - s) * f / 32.0 + s * f;
            smoothed++;
        }
    }
    double worst = 0;
    for (int i = 0; i < half; i++)
        worst = fmax(worst, fabs(inv[i] - want[i]) / want[i]);
    fprintf(stderr, "  rope llama3 inv_freq: %d kept, %d smoothed, %d divided; max rel err %.2e\n", kept, smoothed,
            scaled_low, worst);
    CHECK(worst < 1e-14 && kept > 0 && smoothed > 0 && scaled_low > 0);
    TfRope plain = {8, 10000.0, 0.0, 0, 0, 0};
    CHECK(tf_rope_inv_freq(&plain, inv, &err) == 0 && inv[0] == 1.0 && fabs(inv[1] - 0.1) < 1e-15);

    /* table and rotation on (N, H, HD) rows at arbitrary positions */
    const int P = 300, N = 13, H = 3, HD = 64;
    float *cs = zeros((size_t)P * half), *sn = zeros((size_t)P * half);
    CHECK(tf_rope_table(kref_k[0], cs, sn, &rope, P, &err) == 0);
    CHECK(tf_rope_inv_freq(&rope, inv, &err) == 0);
    int32_t pos[13];
    for (int n = 0; n < N; n++)
        pos[n] = (n * 37) % P; /* positions restart per document: any order */
    float *x = rand_buf((size_t)N * H * HD);
    double *ref = dzeros((size_t)N * H * HD);
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < half; i++) {
                const double a = pos[n] * inv[i], c = cos(a), s = sin(a);
                const float *v = x + ((size_t)n * H + h) * HD;
                double *r = ref + ((size_t)n * H + h) * HD;
                r[i] = v[i] * c - v[i + half] * s;
                r[i + half] = v[i + half] * c + v[i] * s;
            }
    float *y[KREF_CONTEXTS];
    for (int t = 0; t < KREF_CONTEXTS; t++) {
        y[t] = copy_buf(x, (size_t)N * H * HD);
        CHECKF(tf_rope(kref_k[t], y[t], cs, sn, pos, N, H, HD, P, &err) == 0, "%s", err.msg);
    }
    CHECK_REL("rope (rotate-half, llama3 scaling, per-row positions)", y[0], ref, (size_t)N * H * HD, 1e-6);
    check_threads("rope", y, (size_t)N * H * HD);
    /* backward = transpose: <R x, g> = <x, R^T g>, and R^T R x = x */
    float *g = rand_buf((size_t)N * H * HD), *gt = copy_buf(g, (size_t)N * H * HD), *back = copy_buf(y[0], (size_t)N * H * HD);
    CHECK(tf_rope_backward(kref_k[1], gt, cs, sn, pos, N, H, HD, P, &err) == 0);
    CHECK(tf_rope_backward(kref_k[1], back, cs, sn, pos, N, H, HD, P, &err) == 0);
    double l = 0, r = 0;
    for (size_t i = 0; i < (size_t)N * H * HD; i++) {
        l += (double)y[0][i] * g[i];
        r += (double)x[i] * gt[i];
    }
    double *xd = to_double(x, (size_t)N * H * HD);
    CHECKF(fabs(l - r) < 1e-4 * fabs(l) + 1e-4, "rope backward is the transpose: %g vs %g", l, r);
    CHECK_REL("rope backward undoes the rotation", back, xd, (size_t)N * H * HD, 1e-6);
    for (int t = 0; t < KREF_CONTEXTS; t++)
        free(y[t]);
    free(cs);
    free(sn);
    free(x);
    free(ref);
    free(g);
    free(gt);
    free(back);
    free(xd);
}

/* ---- attention ---- */

typedef struct AttnRef {
    int B, T, NH, NKV, HD;
    double scale;
    const int32_t *lo, *hi; /* NULL: all visible */
    double *q, *k, *v;      /* (B*T,NH,HD), (B*T,NKV,HD) */
    double *dy;             /* (B*T,NH,HD) weights of the loss sum(dy * y) */
} AttnRef;

static int visible(const AttnRef *a, int b, int i, int j)
{
    if (!a->lo)
        return 1;
    const size_t r = (size_t)b * a->T + i;
    return a->lo[r] <= j && j < a->hi[r];
}

/* Dense forward: y (B*T,NH,HD), lse (B,NH,T) (either may be NULL); returns
 * sum(dy * y) when dy is set. Also the analytic backward when dq is set. */
static double attn_ref(const AttnRef *a, double *y, double *lse, double *dq, double *dk, double *dv)
{
    const int T = a->T, HD = a->HD, rep = a->NH / a->NKV;
    double *p = dzeros((size_t)T), *dp = dzeros((size_t)T), L = 0;
    if (dq) {
        memset(dq, 0, (size_t)a->B * T * a->NH * HD * sizeof *dq);
        memset(dk, 0, (size_t)a->B * T * a->NKV * HD * sizeof *dk);
        memset(dv, 0, (size_t)a->B * T * a->NKV * HD * sizeof *dv);
    }
    for (int b = 0; b < a->B; b++)
        for (int h = 0; h < a->NH; h++)
            for (int i = 0; i < T; i++) {
                const int g = h / rep;
                const double *qi = a->q + (((size_t)b * T + i) * a->NH + h) * HD;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < T; j++) {
                    p[j] = -INFINITY;
                    if (!visible(a, b, i, j))
                        continue;
                    const double *kj = a->k + (((size_t)b * T + j) * a->NKV + g) * HD;
                    double s = 0;
                    for (int d = 0; d < HD; d++)
                        s += qi[d] * kj[d];
                    p[j] = s * a->scale;
                    mx = fmax(mx, p[j]);
                }
                for (int j = 0; j < T; j++)
                    sum += (p[j] = p[j] == -INFINITY ? 0 : exp(p[j] - mx));
                for (int j = 0; j < T; j++)
                    p[j] /= sum;
                if (lse)
                    lse[((size_t)b * a->NH + h) * T + i] = mx + log(sum);
                const double *gi = a->dy ? a->dy + (((size_t)b * T + i) * a->NH + h) * HD : NULL;
                double Di = 0;
                for (int d = 0; d < HD; d++) {
                    double o = 0;
                    for (int j = 0; j < T; j++)
                        o += p[j] * a->v[(((size_t)b * T + j) * a->NKV + g) * HD + d];
                    if (y)
                        y[(((size_t)b * T + i) * a->NH + h) * HD + d] = o;
                    if (gi) {
                        L += gi[d] * o;
                        Di += gi[d] * o;
                    }
                }
                if (!dq)
                    continue;
                for (int j = 0; j < T; j++) {
                    const double *vj = a->v + (((size_t)b * T + j) * a->NKV + g) * HD;
                    double s = 0;
                    for (int d = 0; d < HD; d++)
                        s += gi[d] * vj[d];
                    dp[j] = p[j] * (s - Di); /* dS */
                }
                for (int j = 0; j < T; j++) {
                    if (p[j] == 0)
                        continue;
                    const size_t kr = (((size_t)b * T + j) * a->NKV + g) * HD;
                    for (int d = 0; d < HD; d++) {
                        dq[(((size_t)b * T + i) * a->NH + h) * HD + d] += a->scale * dp[j] * a->k[kr + d];
                        dk[kr + d] += a->scale * dp[j] * qi[d];
                        dv[kr + d] += p[j] * gi[d];
                    }
                }
            }
    free(p);
    free(dp);
    return L;
}

static double attn_loss(void *ctx)
{
    return attn_ref(ctx, NULL, NULL, NULL, NULL, NULL);
}

/* The analytic reference backward agrees with finite differences. */
static void test_attention_reference(void)
{
    const int B = 1, T = 7, NH = 2, NKV = 1, HD = 3;
    const int32_t lo[7] = {0, 0, 0, 3, 3, 3, 3}, hi[7] = {1, 2, 3, 7, 7, 7, 7}; /* doc of 3, then an image span */
    const size_t nq = (size_t)B * T * NH * HD, nk = (size_t)B * T * NKV * HD;
    float *fq = rand_buf(nq), *fk = rand_buf(nk), *fv = rand_buf(nk), *fg = rand_buf(nq);
    AttnRef a = {B, T, NH, NKV, HD, 0.7, lo, hi, to_double(fq, nq), to_double(fk, nk), to_double(fv, nk),
                 to_double(fg, nq)};
    double *dq = dzeros(nq), *dk = dzeros(nk), *dv = dzeros(nk), *nq_ = dzeros(nq), *nk_ = dzeros(nk), *nv_ = dzeros(nk);
    attn_ref(&a, NULL, NULL, dq, dk, dv);
    fd_grad(a.q, nq, attn_loss, &a, nq_);
    fd_grad(a.k, nk, attn_loss, &a, nk_);
    fd_grad(a.v, nk, attn_loss, &a, nv_);
    double e = 0;
    for (size_t i = 0; i < nq; i++)
        e = fmax(e, fabs(dq[i] - nq_[i]));
    for (size_t i = 0; i < nk; i++)
        e = fmax(e, fmax(fabs(dk[i] - nk_[i]), fabs(dv[i] - nv_[i])));
    fprintf(stderr, "  attention reference backward vs finite differences: max abs err %.2e\n", e);
    CHECK(e < 1e-7);
    free(fq);
    free(fk);
    free(fv);
    free(fg);
    free(a.q);
    free(a.k);
    free(a.v);
    free(a.dy);
    free(dq);
    free(dk);
    free(dv);
    free(nq_);
    free(nk_);
    free(nv_);
}

/* Mask bounds for B sequences from a layout string per sequence: runs of
 * 't' (text, causal) and 'i' (image patches: the whole span), '|' ends a
 * packed document (positions after it see nothing before it). */
static void build_mask(const char *const *layout, int B, int T, int32_t *lo, int32_t *hi)
{
    for (int b = 0; b < B; b++) {
        const char *s = layout[b];
        int i = 0, doc = 0;
        for (const char *c = s; *c && i < T;) {
            if (*c == '|') {
                doc = i;
                c++;
                continue;
            }
            const char kind = *c;
            int run = 0;
            while (c[run] == kind)
                run++;
            for (int r = 0; r < run && i < T; r++, i++) {
                lo[(size_t)b * T + i] = doc;
                hi[(size_t)b * T + i] = kind == 'i' ? (i - r + run < T ? i - r + run : T) : i + 1;
            }
            c += run;
        }
        for (; i < T; i++) { /* padding: causal text */
            lo[(size_t)b * T + i] = doc;
            hi[(size_t)b * T + i] = i + 1;
        }
    }
}

/* A layout string of `n` copies of `c`. */
static char *run(char *dst, char c, int n)
{
    for (int i = 0; i < n; i++)
        *dst++ = c;
    *dst = 0;
    return dst;
}

static void check_attention(const char *what, int B, int T, int NH, int NKV, int HD, const char *const *layout)
{
    int32_t *lo = NULL, *hi = NULL;
    if (layout) {
        lo = malloc((size_t)B * T * sizeof *lo);
        hi = malloc((size_t)B * T * sizeof *hi);
        build_mask(layout, B, T, lo, hi);
    }
    const size_t nq = (size_t)B * T * NH * HD, nk = (size_t)B * T * NKV * HD, nl = (size_t)B * NH * T;
    float *q = rand_buf(nq), *k = rand_buf(nk), *v = rand_buf(nk), *dy = rand_buf(nq);
    for (size_t i = 0; i < nq; i++)
        q[i] *= 3.0f; /* sharp rows: the max subtraction matters */
    const float scale = 1.0f / sqrtf((float)HD);
    AttnRef a = {B, T, NH, NKV, HD, scale, lo, hi, to_double(q, nq), to_double(k, nk), to_double(v, nk),
                 to_double(dy, nq)};
    double *ry = dzeros(nq), *rl = dzeros(nl), *rdq = dzeros(nq), *rdk = dzeros(nk), *rdv = dzeros(nk);
    attn_ref(&a, ry, rl, rdq, rdk, rdv);
    TfAttnShape s = {B, T, NH, NKV, HD, scale};
    float *y[KREF_CONTEXTS], *lse[KREF_CONTEXTS], *dq[KREF_CONTEXTS], *dk[KREF_CONTEXTS], *dv[KREF_CONTEXTS];
    for (int t = 0; t < KREF_CONTEXTS; t++) {
        TfError err = {{0}};
        y[t] = zeros(nq);
        lse[t] = zeros(nl);
        dq[t] = zeros(nq);
        dk[t] = zeros(nk);
        dv[t] = zeros(nk);
        CHECKF(tf_attention_gqa(kref_k[t], y[t], lse[t], q, k, v, lo, hi, &s, &err) == 0, "%s", err.msg);
        CHECKF(tf_attention_gqa_backward(kref_k[t], dq[t], dk[t], dv[t], dy, y[t], lse[t], q, k, v, lo, hi, &s,
                                         &err) == 0,
               "%s", err.msg);
    }
    char line[160];
    snprintf(line, sizeof line, "gqa %s B%d T%d NH%d NKV%d HD%d: y", what, B, T, NH, NKV, HD);
    CHECK_REL(line, y[0], ry, nq, 1e-5);
    snprintf(line, sizeof line, "gqa %s: lse", what);
    CHECK_REL(line, lse[0], rl, nl, 1e-6);
    snprintf(line, sizeof line, "gqa %s: dq", what);
    CHECK_REL(line, dq[0], rdq, nq, 1e-5);
    snprintf(line, sizeof line, "gqa %s: dk", what);
    CHECK_REL(line, dk[0], rdk, nk, 1e-5);
    snprintf(line, sizeof line, "gqa %s: dv", what);
    CHECK_REL(line, dv[0], rdv, nk, 1e-5);
    check_threads("gqa y", y, nq);
    check_threads("gqa lse", lse, nl);
    check_threads("gqa dq", dq, nq);
    check_threads("gqa dk", dk, nk);
    check_threads("gqa dv", dv, nk);
    /* the forward without lse and the backward of one input give the same bits */
    float *y2 = zeros(nq), *dv2 = zeros(nk);
    TfError err = {{0}};
    CHECK(tf_attention_gqa(kref_k[1], y2, NULL, q, k, v, lo, hi, &s, &err) == 0);
    CHECK(tf_attention_gqa_backward(kref_k[1], NULL, NULL, dv2, dy, y[0], lse[0], q, k, v, lo, hi, &s, &err) == 0);
    CHECK(same_bits(y2, y[0], nq * sizeof(float)) && same_bits(dv2, dv[0], nk * sizeof(float)));
    for (int t = 0; t < KREF_CONTEXTS; t++) {
        free(y[t]);
        free(lse[t]);
        free(dq[t]);
        free(dk[t]);
        free(dv[t]);
    }
    free(y2);
    free(dv2);
    free(lo);
    free(hi);
    free(q);
    free(k);
    free(v);
    free(dy);
    free(a.q);
    free(a.k);
    free(a.v);
    free(a.dy);
    free(ry);
    free(rl);
    free(rdq);
    free(rdk);
    free(rdv);
}

static void test_attention(void)
{
    char s0[400], s1[400], *p;
    /* Two sequences: causal text; caption then an image span then text. */
    run(s0, 't', 75);
    p = run(s1, 't', 10);
    p = run(p, 'i', 40);
    run(p, 't', 25);
    const char *const two[2] = {s0, s1};
    check_attention("causal | caption+image+text", 2, 75, 4, 2, 16, two);
    /* Packed documents with images, T crossing several tiles: whole tiles
     * are skipped (earlier documents), others fully visible (inside an
     * image span of 130 > 2 tiles). */
    p = run(s0, 't', 20);
    p = run(p, 'i', 130);
    p = run(p, 't', 9);
    *p++ = '|';
    p = run(p, 'i', 64);
    p = run(p, 't', 33);
    *p++ = '|';
    run(p, 't', 44);
    const char *const packed[1] = {s0};
    check_attention("packed docs, image spans", 1, 300, 2, 1, 8, packed);
    /* image first (captioning), odd head dim, NKV = NH */
    p = run(s0, 'i', 33);
    run(p, 't', 14);
    const char *const imgfirst[1] = {s0};
    check_attention("image first, NKV = NH", 1, 47, 3, 3, 5, imgfirst);
    /* no mask, one kv head for four query heads */
    check_attention("unmasked, NKV 1", 2, 70, 4, 1, 12, NULL);
    check_attention("one position", 1, 1, 2, 1, 4, two);
}

int main(void)
{
    kref_open();
    test_rope();
    test_attention_reference();
    test_attention();
    kref_close();
    return test_main_end("test_kernels_attention");
}
