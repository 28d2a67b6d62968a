/* model_run.c: forward and backward of the LlamaFusion transformer over a
 * FusionBatch, and the losses (L = L_LM + 5 L_diffusion).
 *
 * The residual stream is (N, D), N = B*T rows. Each layer gathers the text
 * rows and the image rows (index lists), runs each through its own
 * modality's RMSNorm and Q/K/V projections, scatters Q, K, V back into
 * full (N, .) tensors, applies RoPE (positions i - lo) and the shared
 * masked attention over all N rows, then gathers per modality again for
 * the O projection and the FFN. Text weights are frozen: their backward
 * computes only input gradients (dw = NULL). */
#include "model_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One modality's weights in a layer: text (frozen: grads NULL) or image. */
typedef struct ModW {
    TfBuf ln1, q, k, v, o, ln2, gate, up, down;
    float *gln1, *gq, *gk, *gv, *go, *gln2, *ggate, *gup, *gdown;
} ModW;

typedef struct LayerActs {
    float *x;                   /* (N,D) layer input */
    float *xg[2], *hn[2], *r1[2]; /* per modality: gathered input, normed, rstd */
    float *q, *kk, *v;          /* (N,Q), (N,KV), (N,KV); q, k after RoPE */
    float *att, *lse;           /* (N,Q), (B,NH,T) */
    float *ag[2];               /* gathered attention output (n,Q) */
    float *xm;                  /* (N,D) after the attention residual */
    float *mg[2], *n2[2], *r2[2], *g[2], *u[2], *h[2];
} LayerActs;

typedef struct Run {
    int B, T, N, n[2], K;
    int32_t *tok, *sid, *pos, *lo, *hi, *tgt, *idx[2]; /* kernel buffers */
    long ntargets;
    float *x_t, *eps, *ts;
    LayerActs *L;
    float *xf, *fg[2], *fn[2], *fr[2]; /* final stream, gathered, normed, rstd */
    float *pred;
    AdapterActs *aa;
} Run;

#define A(n) arena_get(m, (n), err)
#define AI(n) ((int32_t *)arena_get(m, (n), err))

static ModW mod_weights(FusionModel *m, int l, int md)
{
    ModW w;
    memset(&w, 0, sizeof w);
    if (md == FUSION_TEXT) {
        const TextLayer *t = &m->text[l];
        w.ln1 = t->ln1, w.q = t->q, w.k = t->k, w.v = t->v, w.o = t->o;
        w.ln2 = t->ln2, w.gate = t->gate, w.up = t->up, w.down = t->down;
        if (!m->txt)
            return w; /* frozen: no gradients */
    }
    const int *ix = (md == FUSION_TEXT ? m->txt : m->img) + l * IL_COUNT;
#define S(f, g, i) (w.f = tf_buf_f32(TP(m, ix[i])), w.g = TG(m, ix[i]))
    S(ln1, gln1, IL_LN1), S(q, gq, IL_Q), S(k, gk, IL_K), S(v, gv, IL_V), S(o, go, IL_O);
    S(ln2, gln2, IL_LN2), S(gate, ggate, IL_GATE), S(up, gup, IL_UP), S(down, gdown, IL_DOWN);
#undef S
    return w;
}

static int upload_i32(FusionModel *m, int32_t **dst, const int32_t *host, size_t n, TfError *err)
{
    if (!(*dst = AI(n)))
        return -1;
    return tf_kernels_upload_bytes(m->k, *dst, host, n * sizeof *host, err);
}

/* Host-side index lists and inputs of a batch, uploaded into the arena. */
static int run_prepare(FusionModel *m, const FusionBatch *b, Run *r, TfError *err)
{
    const int N = b->B * b->T;
    r->B = b->B, r->T = b->T, r->N = N, r->K = b->n_images;
    int32_t *h = malloc((size_t)N * 7 * sizeof *h);
    if (!h)
        return tf_fail(err, "out of memory");
    int32_t *tok = h, *sid = h + N, *pos = h + 2 * N, *tidx = h + 3 * N, *iidx = h + 4 * N, *tgt = h + 5 * N;
    r->n[0] = r->n[1] = 0;
    r->ntargets = 0;
    for (int n = 0; n < N; n++) {
        int i = n % b->T;
        pos[n] = i - b->lo[n];
        sid[n] = -1;
        tok[n] = -1;
        if (b->modality[n] == FUSION_IMAGE) {
            iidx[r->n[1]++] = n;
            continue;
        }
        if (b->tokens[n] == m->fc.boi_id)
            sid[n] = 0;
        else if (b->tokens[n] == m->fc.eoi_id)
            sid[n] = 1;
        else
            tok[n] = b->tokens[n];
        tgt[r->n[0]] = b->targets[n];
        if (b->targets[n] >= 0)
            r->ntargets++;
        tidx[r->n[0]++] = n;
    }
    int rc = -1;
    if (upload_i32(m, &r->tok, tok, N, err) || upload_i32(m, &r->sid, sid, N, err) ||
        upload_i32(m, &r->pos, pos, N, err) || upload_i32(m, &r->lo, b->lo, N, err) ||
        upload_i32(m, &r->hi, b->hi, N, err) || upload_i32(m, &r->idx[0], tidx, r->n[0] ? r->n[0] : 1, err) ||
        upload_i32(m, &r->idx[1], iidx, r->n[1] ? r->n[1] : 1, err) ||
        upload_i32(m, &r->tgt, tgt, r->n[0] ? r->n[0] : 1, err))
        goto out;
    if (r->K > 0) {
        const size_t L = (size_t)r->K * b->latent_numel;
        if (!(r->x_t = A(L)) || !(r->eps = A(L)) || !(r->ts = A((size_t)r->K)) ||
            tf_kernels_upload(m->k, r->x_t, b->x_t, L, err) || tf_kernels_upload(m->k, r->eps, b->eps, L, err) ||
            tf_kernels_upload(m->k, r->ts, b->timestep, (size_t)r->K, err))
            goto out;
    }
    rc = 0;
out:
    free(h);
    return rc;
}

static int ensure_rope(FusionModel *m, int P, TfError *err)
{
    if (m->rope_positions >= P)
        return 0;
    tf_kernels_release(m->k, m->rope_cos);
    tf_kernels_release(m->k, m->rope_sin);
    m->rope_cos = m->rope_sin = NULL;
    m->rope_positions = 0;
    const size_t n = (size_t)P * (m->lc.head_dim / 2);
    if (!(m->rope_cos = tf_kernels_alloc(m->k, n, err)) || !(m->rope_sin = tf_kernels_alloc(m->k, n, err)) ||
        tf_rope_table(m->k, m->rope_cos, m->rope_sin, &m->rope, P, err))
        return -1;
    m->rope_positions = P;
    return 0;
}

static TfAttnShape attn_shape(const FusionModel *m, const Run *r)
{
    return (TfAttnShape){r->B, r->T, m->lc.heads, m->lc.kv_heads, m->lc.head_dim,
                         (float)(1.0 / sqrt((double)m->lc.head_dim))};
}

/* ---- forward -------------------------------------------------------------------------- */

static int layer_forward(FusionModel *m, Run *r, int l, const float *x, float *xnext, TfError *err)
{
    TfKernels *k = m->k;
    const LlamaConfig *c = &m->lc;
    const int N = r->N, D = c->hidden, Q = c->heads * c->head_dim, KV = c->kv_heads * c->head_dim,
              I = c->intermediate;
    LayerActs *a = &r->L[l];
    a->x = (float *)x;
    if (!(a->q = A((size_t)N * Q)) || !(a->kk = A((size_t)N * KV)) || !(a->v = A((size_t)N * KV)) ||
        !(a->att = A((size_t)N * Q)) || !(a->lse = A((size_t)N * c->heads)) || !(a->xm = A((size_t)N * D)))
        return -1;
    for (int md = 0; md < 2; md++) {
        const int n = r->n[md];
        if (n == 0)
            continue;
        ModW w = mod_weights(m, l, md);
        float *qm, *km, *vm;
        if (!(a->xg[md] = A((size_t)n * D)) || !(a->hn[md] = A((size_t)n * D)) || !(a->r1[md] = A((size_t)n)) ||
            !(qm = A((size_t)n * Q)) || !(km = A((size_t)n * KV)) || !(vm = A((size_t)n * KV)))
            return -1;
        if (tf_rows_gather(k, a->xg[md], x, r->idx[md], n, N, D, err) ||
            tf_rms_norm(k, a->hn[md], a->r1[md], a->xg[md], w.ln1, n, D, c->rms_eps, err) ||
            tf_linear(k, qm, a->hn[md], w.q, NULL, n, D, Q, err) ||
            tf_linear(k, km, a->hn[md], w.k, NULL, n, D, KV, err) ||
            tf_linear(k, vm, a->hn[md], w.v, NULL, n, D, KV, err) ||
            tf_rows_scatter(k, a->q, qm, r->idx[md], n, N, Q, 0, err) ||
            tf_rows_scatter(k, a->kk, km, r->idx[md], n, N, KV, 0, err) ||
            tf_rows_scatter(k, a->v, vm, r->idx[md], n, N, KV, 0, err))
            return -1;
    }
    TfAttnShape as = attn_shape(m, r);
    float *o;
    if (tf_rope(k, a->q, m->rope_cos, m->rope_sin, r->pos, N, c->heads, c->head_dim, m->rope_positions, err) ||
        tf_rope(k, a->kk, m->rope_cos, m->rope_sin, r->pos, N, c->kv_heads, c->head_dim, m->rope_positions, err) ||
        tf_attention_gqa(k, a->att, a->lse, a->q, a->kk, a->v, r->lo, r->hi, &as, err) || !(o = A((size_t)N * D)))
        return -1;
    for (int md = 0; md < 2; md++) {
        const int n = r->n[md];
        if (n == 0)
            continue;
        ModW w = mod_weights(m, l, md);
        float *om;
        if (!(a->ag[md] = A((size_t)n * Q)) || !(om = A((size_t)n * D)) ||
            tf_rows_gather(k, a->ag[md], a->att, r->idx[md], n, N, Q, err) ||
            tf_linear(k, om, a->ag[md], w.o, NULL, n, Q, D, err) || tf_rows_scatter(k, o, om, r->idx[md], n, N, D, 0, err))
            return -1;
    }
    if (tf_add(k, a->xm, x, o, (size_t)N * D, err))
        return -1;
    for (int md = 0; md < 2; md++) {
        const int n = r->n[md];
        if (n == 0)
            continue;
        ModW w = mod_weights(m, l, md);
        float *fm;
        const size_t nI = (size_t)n * I;
        if (!(a->mg[md] = A((size_t)n * D)) || !(a->n2[md] = A((size_t)n * D)) || !(a->r2[md] = A((size_t)n)) ||
            !(a->g[md] = A(nI)) || !(a->u[md] = A(nI)) || !(a->h[md] = A(nI)) || !(fm = A((size_t)n * D)))
            return -1;
        if (tf_rows_gather(k, a->mg[md], a->xm, r->idx[md], n, N, D, err) ||
            tf_rms_norm(k, a->n2[md], a->r2[md], a->mg[md], w.ln2, n, D, c->rms_eps, err) ||
            tf_linear(k, a->g[md], a->n2[md], w.gate, NULL, n, D, I, err) ||
            tf_linear(k, a->u[md], a->n2[md], w.up, NULL, n, D, I, err) ||
            tf_swiglu(k, a->h[md], a->g[md], a->u[md], nI, err) ||
            tf_linear(k, fm, a->h[md], w.down, NULL, n, I, D, err) ||
            tf_rows_scatter(k, o, fm, r->idx[md], n, N, D, 0, err))
            return -1;
    }
    return tf_add(k, xnext, a->xm, o, (size_t)N * D, err);
}

/* The whole forward; logits (n_text, V) to host when asked (text only). */
static int forward(FusionModel *m, Run *r, FusionLosses *out, int backward, float gs, float **dft, float **dpred,
                   float *logits, TfError *err)
{
    TfKernels *k = m->k;
    const LlamaConfig *c = &m->lc;
    const int N = r->N, D = c->hidden;
    float *x = A((size_t)N * D);
    if (!x || tf_fill(k, x, 0.0f, (size_t)N * D, err) ||
        tf_embedding(k, x, m->embed, r->tok, N, D, c->vocab, err) ||
        tf_embedding(k, x, tf_buf_f32(TP(m, m->special)), r->sid, N, D, 2, err))
        return -1;
    if (r->K > 0) {
        float *rows = A((size_t)r->n[1] * D);
        if (!rows || adapter_in_forward(m, &r->aa, r->x_t, r->ts, r->K, rows, err) ||
            tf_rows_scatter(k, x, rows, r->idx[1], r->n[1], N, D, 0, err))
            return -1;
    }
    if (ensure_rope(m, r->T, err))
        return -1;
    for (int l = 0; l < c->layers; l++) {
        float *xn = A((size_t)N * D);
        if (!xn || layer_forward(m, r, l, x, xn, err))
            return -1;
        x = xn;
    }
    r->xf = x;
    const TfBuf fnorm[2] = {m->norm, tf_buf_f32(TP(m, m->norm_image))};
    for (int md = 0; md < 2; md++) {
        const int n = r->n[md];
        if (n == 0)
            continue;
        if (!(r->fg[md] = A((size_t)n * D)) || !(r->fn[md] = A((size_t)n * D)) || !(r->fr[md] = A((size_t)n)) ||
            tf_rows_gather(k, r->fg[md], x, r->idx[md], n, N, D, err) ||
            tf_rms_norm(k, r->fn[md], r->fr[md], r->fg[md], fnorm[md], n, D, c->rms_eps, err))
            return -1;
    }
    memset(out, 0, sizeof *out);
    out->lm_tokens = r->ntargets;
    out->images = r->K;
    if (r->n[0] > 0 && backward && !(*dft = A((size_t)r->n[0] * D)))
        return -1;
    if (r->ntargets > 0) {
        if (tf_cross_entropy_lm_head(k, NULL, &out->lm, backward ? *dft : NULL, NULL, NULL, 0, r->fn[0], m->head,
                                     r->tgt, r->n[0], D, c->vocab, gs / (float)r->ntargets, err))
            return -1;
    } else if (r->n[0] > 0 && backward && tf_fill(k, *dft, 0.0f, (size_t)r->n[0] * D, err)) {
        return -1;
    }
    if (logits && r->n[0] > 0) {
        float *lg = A((size_t)r->n[0] * c->vocab);
        if (!lg || tf_matmul(k, lg, r->fn[0], m->head, r->n[0], c->vocab, D, 0, 1, 1.0f, 0.0f, NULL, err) ||
            tf_kernels_download(k, logits, lg, (size_t)r->n[0] * c->vocab, err))
            return -1;
    }
    if (r->K > 0) {
        const size_t L = (size_t)m->fc.latent_c * m->fc.latent_h * m->fc.latent_w;
        if (!(r->pred = A((size_t)r->K * L)) || adapter_out_forward(m, r->aa, r->fn[1], r->pred, err))
            return -1;
        if (backward && !(*dpred = A((size_t)r->K * L)))
            return -1;
        if (tf_mse(k, NULL, &out->diffusion, backward ? *dpred : NULL, r->pred, r->eps, r->K, L,
                   (float)(gs * FUSION_DIFFUSION_WEIGHT / r->K), err))
            return -1;
    }
    out->total = out->lm + FUSION_DIFFUSION_WEIGHT * out->diffusion;
    return 0;
}

/* ---- backward -------------------------------------------------------------------------- */

/* dx: gradient of layer l's output in, of its input out (new buffer). */
static int layer_backward(FusionModel *m, Run *r, int l, const float *dx, float **dxin, TfError *err)
{
    TfKernels *k = m->k;
    const LlamaConfig *c = &m->lc;
    const int N = r->N, D = c->hidden, Q = c->heads * c->head_dim, KV = c->kv_heads * c->head_dim,
              I = c->intermediate;
    const size_t ND = (size_t)N * D;
    LayerActs *a = &r->L[l];
    float *dxm = A(ND), *tmp = A(ND);
    if (!dxm || !tmp)
        return -1;
    /* FFN */
    for (int md = 0; md < 2; md++) {
        const int n = r->n[md];
        if (n == 0)
            continue;
        ModW w = mod_weights(m, l, md);
        const size_t nI = (size_t)n * I;
        float *df = A((size_t)n * D), *dh = A(nI), *dg = A(nI), *du = A(nI), *dn = A((size_t)n * D),
              *dmg = A((size_t)n * D);
        if (!df || !dh || !dg || !du || !dn || !dmg || tf_rows_gather(k, df, dx, r->idx[md], n, N, D, err) ||
            tf_linear_backward(k, dh, w.gdown, NULL, df, a->h[md], w.down, n, I, D, 0, err) ||
            tf_swiglu_backward(k, dg, du, dh, a->g[md], a->u[md], nI, err) ||
            tf_linear_backward(k, dn, w.ggate, NULL, dg, a->n2[md], w.gate, n, D, I, 0, err) ||
            tf_linear_backward(k, dn, w.gup, NULL, du, a->n2[md], w.up, n, D, I, 1, err) ||
            tf_rms_norm_backward(k, dmg, w.gln2, dn, a->mg[md], a->r2[md], w.ln2, n, D, err) ||
            tf_rows_scatter(k, tmp, dmg, r->idx[md], n, N, D, 0, err))
            return -1;
    }
    if (tf_add(k, dxm, dx, tmp, ND, err))
        return -1;
    /* attention */
    float *datt = A((size_t)N * Q), *dq = A((size_t)N * Q), *dk = A((size_t)N * KV), *dv = A((size_t)N * KV);
    if (!datt || !dq || !dk || !dv)
        return -1;
    for (int md = 0; md < 2; md++) {
        const int n = r->n[md];
        if (n == 0)
            continue;
        ModW w = mod_weights(m, l, md);
        float *dom = A((size_t)n * D), *dag = A((size_t)n * Q);
        if (!dom || !dag || tf_rows_gather(k, dom, dxm, r->idx[md], n, N, D, err) ||
            tf_linear_backward(k, dag, w.go, NULL, dom, a->ag[md], w.o, n, Q, D, 0, err) ||
            tf_rows_scatter(k, datt, dag, r->idx[md], n, N, Q, 0, err))
            return -1;
    }
    TfAttnShape as = attn_shape(m, r);
    if (tf_attention_gqa_backward(k, dq, dk, dv, datt, a->att, a->lse, a->q, a->kk, a->v, r->lo, r->hi, &as, err) ||
        tf_rope_backward(k, dq, m->rope_cos, m->rope_sin, r->pos, N, c->heads, c->head_dim, m->rope_positions, err) ||
        tf_rope_backward(k, dk, m->rope_cos, m->rope_sin, r->pos, N, c->kv_heads, c->head_dim, m->rope_positions,
                         err))
        return -1;
    for (int md = 0; md < 2; md++) {
        const int n = r->n[md];
        if (n == 0)
            continue;
        ModW w = mod_weights(m, l, md);
        float *dqm = A((size_t)n * Q), *dkm = A((size_t)n * KV), *dvm = A((size_t)n * KV), *dhn = A((size_t)n * D),
              *dxg = A((size_t)n * D);
        if (!dqm || !dkm || !dvm || !dhn || !dxg || tf_rows_gather(k, dqm, dq, r->idx[md], n, N, Q, err) ||
            tf_rows_gather(k, dkm, dk, r->idx[md], n, N, KV, err) ||
            tf_rows_gather(k, dvm, dv, r->idx[md], n, N, KV, err) ||
            tf_linear_backward(k, dhn, w.gq, NULL, dqm, a->hn[md], w.q, n, D, Q, 0, err) ||
            tf_linear_backward(k, dhn, w.gk, NULL, dkm, a->hn[md], w.k, n, D, KV, 1, err) ||
            tf_linear_backward(k, dhn, w.gv, NULL, dvm, a->hn[md], w.v, n, D, KV, 1, err) ||
            tf_rms_norm_backward(k, dxg, w.gln1, dhn, a->xg[md], a->r1[md], w.ln1, n, D, err) ||
            tf_rows_scatter(k, tmp, dxg, r->idx[md], n, N, D, 0, err))
            return -1;
    }
    if (!(*dxin = A(ND)))
        return -1;
    return tf_add(k, *dxin, dxm, tmp, ND, err);
}

static int backward(FusionModel *m, Run *r, float *dft, float *dpred, TfError *err)
{
    TfKernels *k = m->k;
    const LlamaConfig *c = &m->lc;
    const int N = r->N, D = c->hidden;
    float *dx = A((size_t)N * D);
    if (!dx)
        return -1;
    float *dfn[2] = {dft, NULL};
    if (r->K > 0 && (!(dfn[1] = A((size_t)r->n[1] * D)) || adapter_out_backward(m, r->aa, dpred, dfn[1], err)))
        return -1;
    const TfBuf fnorm[2] = {m->norm, tf_buf_f32(TP(m, m->norm_image))};
    float *gnorm[2] = {m->norm_text >= 0 ? TG(m, m->norm_text) : NULL, TG(m, m->norm_image)};
    for (int md = 0; md < 2; md++) {
        const int n = r->n[md];
        if (n == 0)
            continue;
        float *dg = A((size_t)n * D);
        if (!dg || tf_rms_norm_backward(k, dg, gnorm[md], dfn[md], r->fg[md], r->fr[md], fnorm[md], n, D, err) ||
            tf_rows_scatter(k, dx, dg, r->idx[md], n, N, D, 0, err))
            return -1;
    }
    for (int l = c->layers - 1; l >= 0; l--) {
        float *dxin;
        if (layer_backward(m, r, l, dx, &dxin, err))
            return -1;
        dx = dxin;
    }
    if (tf_embedding_backward(k, TG(m, m->special), dx, r->sid, NULL, 2, N, D, 2, err))
        return -1;
    if (r->K > 0) {
        float *drows = A((size_t)r->n[1] * D);
        if (!drows || tf_rows_gather(k, drows, dx, r->idx[1], r->n[1], N, D, err) ||
            adapter_in_backward(m, r->aa, drows, err))
            return -1;
    }
    return 0;
}

static int run(FusionModel *m, const FusionBatch *b, int do_backward, float gs, FusionLosses *out, float *logits,
               TfError *err)
{
    if (fusion_batch_check(m, b, err))
        return -1;
    Run r;
    memset(&r, 0, sizeof r);
    arena_reset(m);
    m->last_pred = NULL;
    m->last_pred_n = 0;
    FusionLosses tmp;
    if (!out)
        out = &tmp;
    if (!(r.L = calloc((size_t)m->lc.layers, sizeof *r.L)))
        return tf_fail(err, "out of memory");
    float *dft = NULL, *dpred = NULL;
    int rc = -1;
    if (run_prepare(m, b, &r, err) || forward(m, &r, out, do_backward, gs, &dft, &dpred, logits, err))
        goto out;
    m->last_pred = r.pred;
    m->last_pred_n = r.pred ? (size_t)r.K * m->fc.latent_c * m->fc.latent_h * m->fc.latent_w : 0;
    if (do_backward && backward(m, &r, dft, dpred, err))
        goto out;
    rc = tf_kernels_sync(m->k, err);
out:
    free(r.L);
    return rc;
}

int fusion_forward(FusionModel *m, const FusionBatch *b, FusionLosses *out, TfError *err)
{
    return run(m, b, 0, 1.0f, out, NULL, err);
}

int fusion_forward_backward(FusionModel *m, const FusionBatch *b, float grad_scale, FusionLosses *out, TfError *err)
{
    return run(m, b, 1, grad_scale, out, NULL, err);
}

/* A one-row text batch of tokens[0..n), targets the next token. */
static FusionBatch *text_batch(const int32_t *tokens, int n)
{
    FusionBatch *b = fusion_batch_new(1, n, 0, 0);
    if (!b)
        return NULL;
    for (int i = 0; i < n; i++) {
        b->tokens[i] = tokens[i];
        b->targets[i] = i + 1 < n ? tokens[i + 1] : -1;
    }
    return b;
}

int fusion_text_logits(FusionModel *m, const int32_t *tokens, int n, float *logits, TfError *err)
{
    if (n < 1)
        return tf_fail(err, "text logits: no tokens");
    FusionBatch *b = text_batch(tokens, n);
    if (!b)
        return tf_fail(err, "out of memory");
    int rc = run(m, b, 0, 1.0f, NULL, logits, err);
    fusion_batch_free(b);
    return rc;
}

int fusion_text_loss(FusionModel *m, const int32_t *tokens, int n, double *loss, TfError *err)
{
    *loss = 0.0;
    if (n < 2)
        return 0;
    FusionBatch *b = text_batch(tokens, n);
    if (!b)
        return tf_fail(err, "out of memory");
    FusionLosses l;
    int rc = run(m, b, 0, 1.0f, &l, NULL, err);
    if (rc == 0)
        *loss = l.lm;
    fusion_batch_free(b);
    return rc;
}

int fusion_prediction(FusionModel *m, float *host, size_t n, TfError *err)
{
    if (n != m->last_pred_n)
        return tf_fail(err, "prediction: the last run predicted %zu values, not %zu", m->last_pred_n, n);
    return n ? tf_kernels_download(m->k, host, m->last_pred, n, err) : 0;
}
