/* adapter.c: the image input and output adapters of LlamaFusion and the
 * timestep embedding, forward and backward, on the kernels.
 *
 * Time embedding (diffusers' Timesteps + TimestepEmbedding): sinusoid of
 * width F (cos first), linear_1 F -> TD, SiLU, linear_2 TD -> TD.
 *
 * Linear adapter: patchify p x p -> rows of C p p, image_in.proj to D, plus
 * the time embedding (TD = D) on every patch; out: image_out.proj D ->
 * C p p, unpatchify.
 *
 * U-Net adapter (c0, c1 = unet_ch, GroupNorm with unet_groups groups, eps
 * 1e-6; ResBlock = norm1, SiLU, conv1 3x3, + time_emb_proj(SiLU(temb)) per
 * channel, norm2, SiLU, conv2 3x3, + skip (1x1 conv_shortcut when the width
 * changes)); log2(p) of the two down blocks end in a stride-2 3x3 conv:
 *   in:  conv_in C->c0; down0 ResBlock c0->c0 (skip s0) [downsample];
 *        down1 ResBlock c0->c1 (skip s1) [downsample]; rows; proj c1 -> D
 *   out: proj D -> c1; map; up0 [nearest 2x + conv] cat s1, ResBlock
 *        2c1->c1; up1 [nearest 2x + conv] cat s0, ResBlock c1+c0->c0;
 *        conv_norm_out, SiLU, conv_out c0->C (the predicted noise).
 */
#include "model_internal.h"

#include <stdlib.h>
#include <string.h>

#define GN_EPS 1e-6f

typedef struct ResActs {
    const float *x;
    int H, W;
    float *n1, *mean1, *rstd1, *a1, *h1, *n2, *mean2, *rstd2, *a2;
} ResActs;

struct AdapterActs {
    int K;
    /* time embedding */
    const float *t;
    float *tsin, *l1, *s1, *temb, *stemb, *dtemb, *dstemb;
    /* linear */
    float *patches;
    const float *rows_out;
    /* U-Net */
    const float *x_t;
    int res_h[3], res_w[3]; /* resolution at level 0, 1, 2 */
    float *h0, *s[2], *d[2], *dskip[2];
    ResActs down[2], up[2];
    float *map_in;
    float *proj_out, *map_out, *nn[2], *upc[2], *cat[2], *u[2];
    float *no, *mo, *ro, *ao;
};

/* ---- layout ------------------------------------------------------------------------ */

static int add(FusionModel *m, const char *prefix, const char *name, int ndim, int64_t a, int64_t b, int64_t c,
               int64_t d, int init, TfError *err)
{
    char full[160];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    const int64_t shape[4] = {a, b, c, d};
    return model_add_tensor(m, full, ndim, shape, ndim >= 2 && init == INIT_FANIN, init, err);
}

static int add_conv(FusionModel *m, const char *prefix, int cout, int cin, int R, int *w, int *b, TfError *err)
{
    char nm[160];
    snprintf(nm, sizeof nm, "%s.weight", prefix);
    if ((*w = add(m, "", nm, 4, cout, cin, R, R, INIT_FANIN, err)) < 0)
        return -1;
    snprintf(nm, sizeof nm, "%s.bias", prefix);
    return (*b = add(m, "", nm, 1, cout, 0, 0, 0, INIT_ZERO, err)) < 0 ? -1 : 0;
}

static int add_linear(FusionModel *m, const char *prefix, int out, int in, int *w, int *b, TfError *err)
{
    char nm[160];
    snprintf(nm, sizeof nm, "%s.weight", prefix);
    if ((*w = add(m, "", nm, 2, out, in, 0, 0, INIT_FANIN, err)) < 0)
        return -1;
    snprintf(nm, sizeof nm, "%s.bias", prefix);
    return (*b = add(m, "", nm, 1, out, 0, 0, 0, INIT_ZERO, err)) < 0 ? -1 : 0;
}

static int add_norm(FusionModel *m, const char *prefix, int C, int *w, int *b, TfError *err)
{
    char nm[160];
    snprintf(nm, sizeof nm, "%s.weight", prefix);
    if ((*w = add(m, "", nm, 1, C, 0, 0, 0, INIT_ONE, err)) < 0)
        return -1;
    snprintf(nm, sizeof nm, "%s.bias", prefix);
    return (*b = add(m, "", nm, 1, C, 0, 0, 0, INIT_ZERO, err)) < 0 ? -1 : 0;
}

static int add_resblock(FusionModel *m, const char *prefix, int cin, int cout, ResBlockIdx *r, TfError *err)
{
    char nm[200];
    r->cin = cin, r->cout = cout;
    r->short_w = r->short_b = -1;
#define P(s) (snprintf(nm, sizeof nm, "%s.%s", prefix, s), nm)
    if (add_norm(m, P("norm1"), cin, &r->norm1_w, &r->norm1_b, err) ||
        add_conv(m, P("conv1"), cout, cin, 3, &r->conv1_w, &r->conv1_b, err) ||
        add_linear(m, P("time_emb_proj"), cout, m->ad.temb_dim, &r->temb_w, &r->temb_b, err) ||
        add_norm(m, P("norm2"), cout, &r->norm2_w, &r->norm2_b, err) ||
        add_conv(m, P("conv2"), cout, cout, 3, &r->conv2_w, &r->conv2_b, err))
        return -1;
    if (cin != cout && add_conv(m, P("conv_shortcut"), cout, cin, 1, &r->short_w, &r->short_b, err))
        return -1;
#undef P
    return 0;
}

int adapter_layout(FusionModel *m, TfError *err)
{
    AdapterIdx *a = &m->ad;
    const FusionConfig *c = &m->fc;
    const int D = m->lc.hidden, C = c->latent_c, p = c->patch, c0 = c->unet_ch[0], c1 = c->unet_ch[1];
    memset(a, 0, sizeof *a);
    a->freq_dim = c0 > 0 ? c0 : 64;
    if (c->adapter == FUSION_ADAPTER_LINEAR) {
        a->temb_dim = D;
        return add_linear(m, "time_embed.linear_1", a->temb_dim, a->freq_dim, &a->t1_w, &a->t1_b, err) ||
                       add_linear(m, "time_embed.linear_2", a->temb_dim, a->temb_dim, &a->t2_w, &a->t2_b, err) ||
                       add_linear(m, "image_in.proj", D, C * p * p, &a->in_w, &a->in_b, err) ||
                       add_linear(m, "image_out.proj", C * p * p, D, &a->out_w, &a->out_b, err)
                   ? -1
                   : 0;
    }
    a->temb_dim = 4 * c0;
    if (add_linear(m, "time_embed.linear_1", a->temb_dim, a->freq_dim, &a->t1_w, &a->t1_b, err) ||
        add_linear(m, "time_embed.linear_2", a->temb_dim, a->temb_dim, &a->t2_w, &a->t2_b, err) ||
        add_conv(m, "image_in.conv_in", c0, C, 3, &a->conv_in_w, &a->conv_in_b, err))
        return -1;
    const int nds = p == 4 ? 2 : p == 2 ? 1 : 0;
    const int width[2] = {c0, c1}, win[2] = {c0, c0};
    char nm[160];
    for (int i = 0; i < 2; i++) {
        snprintf(nm, sizeof nm, "image_in.down_blocks.%d.resnets.0", i);
        if (add_resblock(m, nm, win[i], width[i], &a->down[i], err))
            return -1;
        a->down_conv_w[i] = a->down_conv_b[i] = -1;
        if (i < nds) {
            snprintf(nm, sizeof nm, "image_in.down_blocks.%d.downsamplers.0.conv", i);
            if (add_conv(m, nm, width[i], width[i], 3, &a->down_conv_w[i], &a->down_conv_b[i], err))
                return -1;
        }
    }
    if (add_linear(m, "image_in.proj", D, c1, &a->proj_in_w, &a->proj_in_b, err) ||
        add_linear(m, "image_out.proj", c1, D, &a->proj_out_w, &a->proj_out_b, err))
        return -1;
    for (int j = 0; j < 2; j++) {
        int i = 1 - j; /* the down block it mirrors */
        a->up_conv_w[j] = a->up_conv_b[j] = -1;
        if (i < nds) {
            snprintf(nm, sizeof nm, "image_out.up_blocks.%d.upsamplers.0.conv", j);
            if (add_conv(m, nm, c1, c1, 3, &a->up_conv_w[j], &a->up_conv_b[j], err))
                return -1;
        }
        snprintf(nm, sizeof nm, "image_out.up_blocks.%d.resnets.0", j);
        if (add_resblock(m, nm, c1 + width[i], width[i], &a->up[j], err))
            return -1;
    }
    return add_norm(m, "image_out.conv_norm_out", c0, &a->norm_out_w, &a->norm_out_b, err) ||
                   add_conv(m, "image_out.conv_out", C, c0, 3, &a->conv_out_w, &a->conv_out_b, err)
               ? -1
               : 0;
}

void adapter_free(FusionModel *m)
{
    free(m->aacts);
    m->aacts = NULL;
}

/* ---- pieces ------------------------------------------------------------------------- */

#define A(n) arena_get(m, (n), err)
#define W(i) tf_buf_f32(TP(m, (i)))

static TfConv2dShape conv_shape(int K, int C, int H, int Wd, int F, int R, int stride)
{
    int pad = R / 2;
    return (TfConv2dShape){K, C, H, Wd, F, R, stride, pad, pad, pad, pad};
}

static int conv(FusionModel *m, float *y, const float *x, int w, int b, const TfConv2dShape *s, TfError *err)
{
    return tf_conv2d(m->k, y, x, TP(m, w), TP(m, b), s, err);
}

static int conv_bwd(FusionModel *m, float *dx, const float *dy, const float *x, int w, int b, const TfConv2dShape *s,
                    TfError *err)
{
    return tf_conv2d_backward(m->k, dx, TG(m, w), TG(m, b), dy, x, TP(m, w), s, err);
}

static int gn(FusionModel *m, float *y, float *mean, float *rstd, const float *x, int w, int b, int K, int C,
              size_t HW, TfError *err)
{
    return tf_group_norm(m->k, y, mean, rstd, x, TP(m, w), TP(m, b), K, C, HW, m->fc.unet_groups, GN_EPS, 0, err);
}

static int gn_bwd(FusionModel *m, float *dx, const float *dy, const float *x, const float *mean, const float *rstd,
                  int w, int b, int K, int C, size_t HW, TfError *err)
{
    return tf_group_norm_backward(m->k, dx, TG(m, w), TG(m, b), dy, x, mean, rstd, TP(m, w), K, C, HW,
                                  m->fc.unet_groups, err);
}

static int res_fwd(FusionModel *m, const ResBlockIdx *r, ResActs *a, const float *x, int K, int H, int Wd,
                   const float *stemb, float *out, TfError *err)
{
    TfKernels *k = m->k;
    const size_t HW = (size_t)H * Wd, ni = (size_t)K * r->cin * HW, no = (size_t)K * r->cout * HW;
    const int G = m->fc.unet_groups;
    a->x = x, a->H = H, a->W = Wd;
    if (!(a->n1 = A(ni)) || !(a->a1 = A(ni)) || !(a->h1 = A(no)) || !(a->n2 = A(no)) || !(a->a2 = A(no)) ||
        !(a->mean1 = A((size_t)K * G)) || !(a->rstd1 = A((size_t)K * G)) || !(a->mean2 = A((size_t)K * G)) ||
        !(a->rstd2 = A((size_t)K * G)))
        return -1;
    float *tp = A((size_t)K * r->cout);
    if (!tp)
        return -1;
    TfConv2dShape s1 = conv_shape(K, r->cin, H, Wd, r->cout, 3, 1), s2 = conv_shape(K, r->cout, H, Wd, r->cout, 3, 1);
    if (gn(m, a->n1, a->mean1, a->rstd1, x, r->norm1_w, r->norm1_b, K, r->cin, HW, err) ||
        tf_silu(k, a->a1, a->n1, ni, err) || conv(m, a->h1, a->a1, r->conv1_w, r->conv1_b, &s1, err) ||
        tf_linear(k, tp, stemb, W(r->temb_w), TP(m, r->temb_b), K, m->ad.temb_dim, r->cout, err) ||
        tf_add_channels(k, a->h1, tp, K, r->cout, HW, err) ||
        gn(m, a->n2, a->mean2, a->rstd2, a->h1, r->norm2_w, r->norm2_b, K, r->cout, HW, err) ||
        tf_silu(k, a->a2, a->n2, no, err) || conv(m, out, a->a2, r->conv2_w, r->conv2_b, &s2, err))
        return -1;
    if (r->short_w < 0)
        return tf_add(k, out, out, x, no, err);
    float *sc = A(no);
    TfConv2dShape ss = conv_shape(K, r->cin, H, Wd, r->cout, 1, 1);
    if (!sc || conv(m, sc, x, r->short_w, r->short_b, &ss, err))
        return -1;
    return tf_add(k, out, out, sc, no, err);
}

/* dx (overwritten) from dout; dstemb += its share. */
static int res_bwd(FusionModel *m, const ResBlockIdx *r, const ResActs *a, const float *dout, float *dx, int K,
                   float *dstemb, TfError *err)
{
    TfKernels *k = m->k;
    const int H = a->H, Wd = a->W;
    const size_t HW = (size_t)H * Wd, ni = (size_t)K * r->cin * HW, no = (size_t)K * r->cout * HW;
    float *d2 = A(no), *d1 = A(ni), *dtp = A((size_t)K * r->cout);
    if (!d2 || !d1 || !dtp)
        return -1;
    TfConv2dShape s1 = conv_shape(K, r->cin, H, Wd, r->cout, 3, 1), s2 = conv_shape(K, r->cout, H, Wd, r->cout, 3, 1);
    if (conv_bwd(m, d2, dout, a->a2, r->conv2_w, r->conv2_b, &s2, err) || tf_silu_backward(k, d2, d2, a->n2, no, err))
        return -1;
    float *dh1 = A(no);
    if (!dh1 || gn_bwd(m, dh1, d2, a->h1, a->mean2, a->rstd2, r->norm2_w, r->norm2_b, K, r->cout, HW, err) ||
        tf_fill(k, dtp, 0.0f, (size_t)K * r->cout, err) || tf_sum_channels(k, dtp, dh1, K, r->cout, HW, err) ||
        tf_linear_backward(k, dstemb, TG(m, r->temb_w), TG(m, r->temb_b), dtp, m->aacts->stemb, W(r->temb_w), K,
                           m->ad.temb_dim, r->cout, 1, err) ||
        conv_bwd(m, d1, dh1, a->a1, r->conv1_w, r->conv1_b, &s1, err) || tf_silu_backward(k, d1, d1, a->n1, ni, err) ||
        gn_bwd(m, dx, d1, a->x, a->mean1, a->rstd1, r->norm1_w, r->norm1_b, K, r->cin, HW, err))
        return -1;
    if (r->short_w < 0)
        return tf_add(k, dx, dx, dout, ni, err);
    TfConv2dShape ss = conv_shape(K, r->cin, H, Wd, r->cout, 1, 1);
    if (conv_bwd(m, d1, dout, a->x, r->short_w, r->short_b, &ss, err))
        return -1;
    return tf_add(k, dx, dx, d1, ni, err);
}

/* ---- forward -------------------------------------------------------------------------- */

int adapter_in_forward(FusionModel *m, AdapterActs **acts, const float *x_t, const float *timestep, int K,
                       float *rows, TfError *err)
{
    TfKernels *k = m->k;
    const AdapterIdx *ad = &m->ad;
    const FusionConfig *c = &m->fc;
    const int D = m->lc.hidden, F = ad->freq_dim, TD = ad->temb_dim, P = fusion_config_patches(c);
    const int C = c->latent_c, p = c->patch;
    if (!m->aacts && !(m->aacts = calloc(1, sizeof *m->aacts)))
        return tf_fail(err, "out of memory");
    AdapterActs *a = m->aacts;
    memset(a, 0, sizeof *a);
    *acts = a;
    a->K = K, a->t = timestep, a->x_t = x_t;
    const size_t KT = (size_t)K * TD;
    if (!(a->tsin = A((size_t)K * F)) || !(a->l1 = A(KT)) || !(a->s1 = A(KT)) || !(a->temb = A(KT)) ||
        !(a->stemb = A(KT)) || !(a->dtemb = A(KT)) || !(a->dstemb = A(KT)))
        return -1;
    if (tf_timestep_embedding(k, a->tsin, timestep, K, F, 1, 0.0f, 10000.0f, err) ||
        tf_linear(k, a->l1, a->tsin, W(ad->t1_w), TP(m, ad->t1_b), K, F, TD, err) ||
        tf_silu(k, a->s1, a->l1, KT, err) ||
        tf_linear(k, a->temb, a->s1, W(ad->t2_w), TP(m, ad->t2_b), K, TD, TD, err) ||
        tf_silu(k, a->stemb, a->temb, KT, err))
        return -1;
    if (c->adapter == FUSION_ADAPTER_LINEAR) {
        const int Cpp = C * p * p;
        if (!(a->patches = A((size_t)K * P * Cpp)) ||
            tf_patchify(k, a->patches, x_t, K, C, c->latent_h, c->latent_w, p, err) ||
            tf_linear(k, rows, a->patches, W(ad->in_w), TP(m, ad->in_b), K * P, Cpp, D, err))
            return -1;
        for (int i = 0; i < K; i++)
            if (tf_add_rows(k, rows + (size_t)i * P * D, a->temb + (size_t)i * D, P, D, err))
                return -1;
        return 0;
    }
    const int c0 = c->unet_ch[0], c1 = c->unet_ch[1];
    a->res_h[0] = c->latent_h, a->res_w[0] = c->latent_w;
    const int width[2] = {c0, c1};
    TfConv2dShape s = conv_shape(K, C, c->latent_h, c->latent_w, c0, 3, 1);
    if (!(a->h0 = A((size_t)K * c0 * c->latent_h * c->latent_w)) ||
        conv(m, a->h0, x_t, ad->conv_in_w, ad->conv_in_b, &s, err))
        return -1;
    const float *x = a->h0;
    int H = c->latent_h, Wd = c->latent_w;
    for (int i = 0; i < 2; i++) {
        if (!(a->s[i] = A((size_t)K * width[i] * H * Wd)) ||
            res_fwd(m, &ad->down[i], &a->down[i], x, K, H, Wd, a->stemb, a->s[i], err))
            return -1;
        a->d[i] = a->s[i];
        if (ad->down_conv_w[i] >= 0) {
            TfConv2dShape sd = conv_shape(K, width[i], H, Wd, width[i], 3, 2);
            H = tf_conv2d_out_h(&sd), Wd = tf_conv2d_out_w(&sd);
            if (!(a->d[i] = A((size_t)K * width[i] * H * Wd)) ||
                conv(m, a->d[i], a->s[i], ad->down_conv_w[i], ad->down_conv_b[i], &sd, err))
                return -1;
        }
        a->res_h[i + 1] = H, a->res_w[i + 1] = Wd;
        x = a->d[i];
    }
    if (H * Wd != P)
        return tf_fail(err, "U-Net: %dx%d positions after the down blocks, expected %d", H, Wd, P);
    if (!(a->map_in = A((size_t)K * P * c1)) || tf_transpose(k, a->map_in, x, K, c1, P, err) ||
        tf_linear(k, rows, a->map_in, W(ad->proj_in_w), TP(m, ad->proj_in_b), K * P, c1, D, err))
        return -1;
    return 0;
}

int adapter_out_forward(FusionModel *m, AdapterActs *a, const float *rows, float *pred, TfError *err)
{
    TfKernels *k = m->k;
    const AdapterIdx *ad = &m->ad;
    const FusionConfig *c = &m->fc;
    const int D = m->lc.hidden, P = fusion_config_patches(c), K = a->K, C = c->latent_c, p = c->patch;
    a->rows_out = rows;
    if (c->adapter == FUSION_ADAPTER_LINEAR) {
        const int Cpp = C * p * p;
        float *pr = A((size_t)K * P * Cpp);
        if (!pr || tf_linear(k, pr, rows, W(ad->out_w), TP(m, ad->out_b), K * P, D, Cpp, err) ||
            tf_unpatchify(k, pred, pr, K, C, c->latent_h, c->latent_w, p, err))
            return -1;
        return 0;
    }
    const int c0 = c->unet_ch[0], c1 = c->unet_ch[1];
    const int width[2] = {c0, c1};
    if (!(a->proj_out = A((size_t)K * P * c1)) || !(a->map_out = A((size_t)K * P * c1)) ||
        tf_linear(k, a->proj_out, rows, W(ad->proj_out_w), TP(m, ad->proj_out_b), K * P, D, c1, err) ||
        tf_transpose(k, a->map_out, a->proj_out, K, P, c1, err))
        return -1;
    const float *x = a->map_out;
    int H = a->res_h[2], Wd = a->res_w[2];
    for (int j = 0; j < 2; j++) {
        const int i = 1 - j;
        if (ad->up_conv_w[j] >= 0) {
            if (!(a->nn[j] = A((size_t)K * c1 * 4 * H * Wd)) || tf_upsample_nearest2x(k, a->nn[j], x, K, c1, H, Wd, err))
                return -1;
            H *= 2, Wd *= 2;
            TfConv2dShape su = conv_shape(K, c1, H, Wd, c1, 3, 1);
            if (!(a->upc[j] = A((size_t)K * c1 * H * Wd)) ||
                conv(m, a->upc[j], a->nn[j], ad->up_conv_w[j], ad->up_conv_b[j], &su, err))
                return -1;
            x = a->upc[j];
        }
        if (H != a->res_h[i] || Wd != a->res_w[i])
            return tf_fail(err, "U-Net: up block %d at %dx%d, its skip is %dx%d", j, H, Wd, a->res_h[i], a->res_w[i]);
        const size_t HW = (size_t)H * Wd;
        if (!(a->cat[j] = A((size_t)K * (c1 + width[i]) * HW)) || !(a->u[j] = A((size_t)K * width[i] * HW)) ||
            tf_concat_channels(k, a->cat[j], x, a->s[i], K, c1, width[i], HW, err) ||
            res_fwd(m, &ad->up[j], &a->up[j], a->cat[j], K, H, Wd, a->stemb, a->u[j], err))
            return -1;
        x = a->u[j];
    }
    const size_t n0 = (size_t)K * c0 * H * Wd;
    const int G = c->unet_groups;
    TfConv2dShape so = conv_shape(K, c0, H, Wd, C, 3, 1);
    if (!(a->no = A(n0)) || !(a->mo = A((size_t)K * G)) || !(a->ro = A((size_t)K * G)) || !(a->ao = A(n0)) ||
        gn(m, a->no, a->mo, a->ro, x, ad->norm_out_w, ad->norm_out_b, K, c0, (size_t)H * Wd, err) ||
        tf_silu(k, a->ao, a->no, n0, err) || conv(m, pred, a->ao, ad->conv_out_w, ad->conv_out_b, &so, err))
        return -1;
    return 0;
}

/* ---- backward ------------------------------------------------------------------------- */

int adapter_out_backward(FusionModel *m, AdapterActs *a, const float *dpred, float *drows, TfError *err)
{
    TfKernels *k = m->k;
    const AdapterIdx *ad = &m->ad;
    const FusionConfig *c = &m->fc;
    const int D = m->lc.hidden, P = fusion_config_patches(c), K = a->K, C = c->latent_c, p = c->patch;
    const size_t KT = (size_t)K * ad->temb_dim;
    if (tf_fill(k, a->dtemb, 0.0f, KT, err) || tf_fill(k, a->dstemb, 0.0f, KT, err))
        return -1;
    if (c->adapter == FUSION_ADAPTER_LINEAR) {
        const int Cpp = C * p * p;
        float *dpr = A((size_t)K * P * Cpp);
        if (!dpr || tf_patchify(k, dpr, dpred, K, C, c->latent_h, c->latent_w, p, err) ||
            tf_linear_backward(k, drows, TG(m, ad->out_w), TG(m, ad->out_b), dpr, a->rows_out, W(ad->out_w), K * P,
                               D, Cpp, 0, err))
            return -1;
        return 0;
    }
    const int c0 = c->unet_ch[0], c1 = c->unet_ch[1];
    const int width[2] = {c0, c1};
    int H = c->latent_h, Wd = c->latent_w;
    const size_t n0 = (size_t)K * c0 * H * Wd;
    TfConv2dShape so = conv_shape(K, c0, H, Wd, C, 3, 1);
    const float *x1 = a->u[1];
    float *dn = A(n0), *du = A(n0);
    if (!dn || !du || conv_bwd(m, dn, dpred, a->ao, ad->conv_out_w, ad->conv_out_b, &so, err) ||
        tf_silu_backward(k, dn, dn, a->no, n0, err) ||
        gn_bwd(m, du, dn, x1, a->mo, a->ro, ad->norm_out_w, ad->norm_out_b, K, c0, (size_t)H * Wd, err))
        return -1;
    /* dskip[i]: the gradient of skip s[i] from the up path (added to the
     * down path's gradient in adapter_in_backward) */
    float *dcur = du;
    for (int j = 1; j >= 0; j--) {
        const int i = 1 - j;
        H = a->up[j].H, Wd = a->up[j].W;
        const size_t HW = (size_t)H * Wd;
        float *dcat = A((size_t)K * (c1 + width[i]) * HW), *dx = A((size_t)K * c1 * HW);
        float *dskip = A((size_t)K * width[i] * HW);
        if (!dcat || !dx || !dskip || res_bwd(m, &ad->up[j], &a->up[j], dcur, dcat, K, a->dstemb, err) ||
            tf_split_channels(k, dx, dskip, dcat, K, c1, width[i], HW, err))
            return -1;
        a->dskip[i] = dskip;
        if (ad->up_conv_w[j] >= 0) {
            TfConv2dShape su = conv_shape(K, c1, H, Wd, c1, 3, 1);
            float *dnn = A((size_t)K * c1 * HW), *dlow = A((size_t)K * c1 * HW / 4);
            if (!dnn || !dlow || conv_bwd(m, dnn, dx, a->nn[j], ad->up_conv_w[j], ad->up_conv_b[j], &su, err) ||
                tf_upsample_nearest2x_backward(k, dlow, dnn, K, c1, H / 2, Wd / 2, err))
                return -1;
            dx = dlow;
        }
        dcur = dx;
    }
    /* dcur: gradient of map_out (K,c1,P) */
    float *dpo = A((size_t)K * P * c1);
    if (!dpo || tf_transpose(k, dpo, dcur, K, c1, P, err) ||
        tf_linear_backward(k, drows, TG(m, ad->proj_out_w), TG(m, ad->proj_out_b), dpo, a->rows_out,
                           W(ad->proj_out_w), K * P, D, c1, 0, err))
        return -1;
    return 0;
}

int adapter_in_backward(FusionModel *m, AdapterActs *a, const float *drows, TfError *err)
{
    TfKernels *k = m->k;
    const AdapterIdx *ad = &m->ad;
    const FusionConfig *c = &m->fc;
    const int D = m->lc.hidden, P = fusion_config_patches(c), K = a->K, C = c->latent_c, p = c->patch;
    const int F = ad->freq_dim, TD = ad->temb_dim;
    const size_t KT = (size_t)K * TD;
    if (c->adapter == FUSION_ADAPTER_LINEAR) {
        const int Cpp = C * p * p;
        for (int i = 0; i < K; i++)
            if (tf_sum_rows(k, a->dtemb + (size_t)i * D, drows + (size_t)i * P * D, P, D, err))
                return -1;
        if (tf_linear_backward(k, NULL, TG(m, ad->in_w), TG(m, ad->in_b), drows, a->patches, W(ad->in_w), K * P, Cpp,
                               D, 0, err))
            return -1;
    } else {
        const int c0 = c->unet_ch[0], c1 = c->unet_ch[1];
        const int width[2] = {c0, c1};
        float *dmap = A((size_t)K * P * c1), *dd = A((size_t)K * P * c1);
        if (!dmap || !dd ||
            tf_linear_backward(k, dmap, TG(m, ad->proj_in_w), TG(m, ad->proj_in_b), drows, a->map_in,
                               W(ad->proj_in_w), K * P, c1, D, 0, err) ||
            tf_transpose(k, dd, dmap, K, P, c1, err))
            return -1;
        float *dcur = dd; /* gradient of d[1] */
        for (int i = 1; i >= 0; i--) {
            const int H = a->down[i].H, Wd = a->down[i].W;
            const size_t HW = (size_t)H * Wd, ns = (size_t)K * width[i] * HW;
            float *ds = dcur;
            if (ad->down_conv_w[i] >= 0) {
                TfConv2dShape sd = conv_shape(K, width[i], H, Wd, width[i], 3, 2);
                if (!(ds = A(ns)) || conv_bwd(m, ds, dcur, a->s[i], ad->down_conv_w[i], ad->down_conv_b[i], &sd, err))
                    return -1;
            }
            const int cin = ad->down[i].cin;
            float *dx = A((size_t)K * cin * HW);
            if (!dx || tf_add(k, ds, ds, a->dskip[i], ns, err) ||
                res_bwd(m, &ad->down[i], &a->down[i], ds, dx, K, a->dstemb, err))
                return -1;
            dcur = dx;
        }
        TfConv2dShape s0 = conv_shape(K, C, c->latent_h, c->latent_w, c0, 3, 1);
        if (conv_bwd(m, NULL, dcur, a->x_t, ad->conv_in_w, ad->conv_in_b, &s0, err))
            return -1;
    }
    /* time embedding: dtemb (+ SiLU'(temb) dstemb for the U-Net) */
    float *ds1 = A(KT), *dst = A(KT);
    if (!ds1 || !dst || tf_silu_backward(k, dst, a->dstemb, a->temb, KT, err) ||
        tf_add(k, a->dtemb, a->dtemb, dst, KT, err) ||
        tf_linear_backward(k, ds1, TG(m, ad->t2_w), TG(m, ad->t2_b), a->dtemb, a->s1, W(ad->t2_w), K, TD, TD, 0, err) ||
        tf_silu_backward(k, ds1, ds1, a->l1, KT, err) ||
        tf_linear_backward(k, NULL, TG(m, ad->t1_w), TG(m, ad->t1_b), ds1, a->tsin, W(ad->t1_w), K, F, TD, 0, err))
        return -1;
    return 0;
}
