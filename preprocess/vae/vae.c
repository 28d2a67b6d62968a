/* vae.c: the diffusers AutoencoderKL on the shared kernels.
 *
 * The architecture is written once, as a walk that registers every tensor
 * with its diffusers name and shape (vae_layout). The same walk sizes the
 * single parameter allocation (llm.c style), loads a checkpoint (with the
 * older attention names as fallbacks), and writes random checkpoints for
 * `vae init`, so names, shapes and code cannot drift apart. Activations live
 * in three buffers of the largest stage that trade places layer by layer.
 * The encoder takes a group of images through each layer together (per-layer
 * costs such as Winograd filter transforms are paid once per group); the
 * decoder, whose largest stage is several times bigger, goes one image at a
 * time. */
#include "preprocess.h"
#include "vae_internal.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define VAE_EPS 1e-6f
#define VAE_MAX_CHANNELS 8192
#define VAE_MAX_LAYERS 8

typedef struct VaeConv {
    float *w, *b; /* w (cout,cin,r,r), b (cout) */
    int cin, cout, r;
} VaeConv;

typedef struct VaeNorm {
    float *g, *b; /* (c) */
    int c;
} VaeNorm;

typedef struct VaeResnet {
    VaeNorm n1, n2;
    VaeConv c1, c2, sc;
    int has_sc;
} VaeResnet;

typedef struct VaeAttn {
    VaeNorm gn;
    VaeConv q, k, v, o; /* 1x1 convs: diffusers' linear layers in channel-major form */
} VaeAttn;

typedef struct VaeMid {
    VaeResnet r0, r1;
    VaeAttn attn;
    int has_attn;
} VaeMid;

typedef struct VaeEncoder {
    VaeConv conv_in;
    VaeResnet res[VAE_MAX_BLOCKS][VAE_MAX_LAYERS];
    VaeConv down[VAE_MAX_BLOCKS];
    VaeMid mid;
    VaeNorm norm_out;
    VaeConv conv_out;
    VaeConv quant;
} VaeEncoder;

typedef struct VaeDecoder {
    VaeConv post_quant;
    VaeConv conv_in;
    VaeMid mid;
    VaeResnet res[VAE_MAX_BLOCKS][VAE_MAX_LAYERS + 1];
    VaeConv up[VAE_MAX_BLOCKS];
    VaeNorm norm_out;
    VaeConv conv_out;
} VaeDecoder;

struct Vae {
    VaeConfig cfg;
    VaeEncoder enc;
    VaeDecoder dec;
    int parts;
    float *params;
    size_t nparams;
    char identity[65];
};

/* ---- config ---- */

int vae_downsample_factor(const VaeConfig *cfg)
{
    return 1 << (cfg->nblocks - 1);
}

int vae_config_layout(const char *layout, VaeConfig *cfg, TfError *err)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->in_channels = cfg->out_channels = 3;
    cfg->nblocks = 4;
    static const int sd[4] = {128, 256, 512, 512}, tiny[4] = {16, 32, 64, 64};
    memcpy(cfg->block_out_channels, sd, sizeof sd);
    cfg->layers_per_block = 2;
    cfg->norm_num_groups = 32;
    cfg->latent_channels = 4;
    cfg->use_quant_conv = cfg->use_post_quant_conv = 1;
    cfg->mid_block_add_attention = 1;
    if (!strcmp(layout, "sd")) {
        cfg->scaling_factor = 0.18215f;
    } else if (!strcmp(layout, "sdxl")) {
        cfg->scaling_factor = 0.13025f;
    } else if (!strcmp(layout, "flux")) {
        cfg->latent_channels = 16;
        cfg->scaling_factor = 0.3611f;
        cfg->shift_factor = 0.1159f;
        cfg->use_quant_conv = cfg->use_post_quant_conv = 0;
    } else if (!strcmp(layout, "tiny")) {
        memcpy(cfg->block_out_channels, tiny, sizeof tiny);
        cfg->layers_per_block = 1;
        cfg->norm_num_groups = 8;
        cfg->scaling_factor = 0.18215f;
    } else {
        return tf_fail(err, "unknown layout '%s' (sd, sdxl, flux, tiny)", layout);
    }
    return 0;
}

static int get_int(const json_t *root, const char *label, const char *key, int def, int lo, int hi, int *out,
                   TfError *err)
{
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return tf_fail(err, "%s: '%s' must be an integer in [%d, %d]", label, key, lo, hi);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_bool(const json_t *root, const char *label, const char *key, int def, int *out, TfError *err)
{
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v))
        return tf_fail(err, "%s: '%s' must be true or false", label, key);
    *out = json_is_true(v);
    return 0;
}

static int get_float(const json_t *root, const char *label, const char *key, float def, float *out, TfError *err)
{
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_number(v) || !isfinite(json_number_value(v)))
        return tf_fail(err, "%s: '%s' must be a number", label, key);
    *out = (float)json_number_value(v);
    return 0;
}

static int check_types(const json_t *root, const char *label, const char *key, const char *want, int n,
                       TfError *err)
{
    const json_t *v = json_object_get(root, key);
    if (!v)
        return 0;
    if (!json_is_array(v) || (int)json_array_size(v) != n)
        return tf_fail(err, "%s: '%s' must list %d blocks, one per block_out_channels entry", label, key, n);
    for (int i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(v, (size_t)i));
        if (!s || strcmp(s, want) != 0)
            return tf_fail(err, "%s: %s[%d] is '%s'; only %s is supported", label, key, i, s ? s : "?", want);
    }
    return 0;
}

int vae_config_from_json(const json_t *root, const char *label, VaeConfig *cfg, TfError *err)
{
    memset(cfg, 0, sizeof *cfg);
    if (!json_is_object(root))
        return tf_fail(err, "%s: not a JSON object", label);
    const char *cls = json_string_value(json_object_get(root, "_class_name"));
    if (cls && strcmp(cls, "AutoencoderKL") != 0)
        return tf_fail(err, "%s: _class_name is '%s', not AutoencoderKL", label, cls);
    const char *act = json_string_value(json_object_get(root, "act_fn"));
    if (act && strcmp(act, "silu") != 0)
        return tf_fail(err, "%s: act_fn '%s' is not supported (silu is)", label, act);
    const json_t *boc = json_object_get(root, "block_out_channels");
    if (!json_is_array(boc) || json_array_size(boc) < 1 || json_array_size(boc) > VAE_MAX_BLOCKS)
        return tf_fail(err, "%s: block_out_channels must be a list of 1 to %d integers", label, VAE_MAX_BLOCKS);
    cfg->nblocks = (int)json_array_size(boc);
    for (int i = 0; i < cfg->nblocks; i++) {
        const json_t *e = json_array_get(boc, (size_t)i);
        if (!json_is_integer(e) || json_integer_value(e) < 1 || json_integer_value(e) > VAE_MAX_CHANNELS)
            return tf_fail(err, "%s: block_out_channels[%d] must be an integer in [1, %d]", label, i,
                           VAE_MAX_CHANNELS);
        cfg->block_out_channels[i] = (int)json_integer_value(e);
    }
    if (get_int(root, label, "in_channels", 3, 3, 3, &cfg->in_channels, err) ||
        get_int(root, label, "out_channels", 3, 3, 3, &cfg->out_channels, err) ||
        get_int(root, label, "latent_channels", 4, 1, 1024, &cfg->latent_channels, err) ||
        get_int(root, label, "layers_per_block", 1, 1, VAE_MAX_LAYERS, &cfg->layers_per_block, err) ||
        get_int(root, label, "norm_num_groups", 32, 1, VAE_MAX_CHANNELS, &cfg->norm_num_groups, err) ||
        get_float(root, label, "scaling_factor", 0.18215f, &cfg->scaling_factor, err) ||
        get_float(root, label, "shift_factor", 0.0f, &cfg->shift_factor, err) ||
        get_bool(root, label, "use_quant_conv", 1, &cfg->use_quant_conv, err) ||
        get_bool(root, label, "use_post_quant_conv", 1, &cfg->use_post_quant_conv, err) ||
        get_bool(root, label, "mid_block_add_attention", 1, &cfg->mid_block_add_attention, err) ||
        check_types(root, label, "down_block_types", "DownEncoderBlock2D", cfg->nblocks, err) ||
        check_types(root, label, "up_block_types", "UpDecoderBlock2D", cfg->nblocks, err))
        return -1;
    if (cfg->scaling_factor == 0.0f)
        return tf_fail(err, "%s: scaling_factor must not be 0", label);
    for (int i = 0; i < cfg->nblocks; i++)
        if (cfg->block_out_channels[i] % cfg->norm_num_groups)
            return tf_fail(err, "%s: block_out_channels[%d] = %d is not divisible by norm_num_groups %d", label, i,
                           cfg->block_out_channels[i], cfg->norm_num_groups);
    return 0;
}

json_t *vae_config_to_json(const VaeConfig *cfg)
{
    json_t *boc = json_array(), *down = json_array(), *up = json_array();
    for (int i = 0; i < cfg->nblocks; i++) {
        json_array_append_new(boc, json_integer(cfg->block_out_channels[i]));
        json_array_append_new(down, json_string("DownEncoderBlock2D"));
        json_array_append_new(up, json_string("UpDecoderBlock2D"));
    }
    json_t *o = json_object();
    json_object_set_new(o, "_class_name", json_string("AutoencoderKL"));
    json_object_set_new(o, "_diffusers_version", json_string("0.30.0"));
    json_object_set_new(o, "act_fn", json_string("silu"));
    json_object_set_new(o, "block_out_channels", boc);
    json_object_set_new(o, "down_block_types", down);
    json_object_set_new(o, "force_upcast", json_true());
    json_object_set_new(o, "in_channels", json_integer(cfg->in_channels));
    json_object_set_new(o, "latent_channels", json_integer(cfg->latent_channels));
    json_object_set_new(o, "latents_mean", json_null());
    json_object_set_new(o, "latents_std", json_null());
    json_object_set_new(o, "layers_per_block", json_integer(cfg->layers_per_block));
    json_object_set_new(o, "mid_block_add_attention", json_boolean(cfg->mid_block_add_attention));
    json_object_set_new(o, "norm_num_groups", json_integer(cfg->norm_num_groups));
    json_object_set_new(o, "out_channels", json_integer(cfg->out_channels));
    json_object_set_new(o, "sample_size", json_integer(cfg->block_out_channels[0] >= 128 ? 512 : 256));
    json_object_set_new(o, "scaling_factor", json_real(cfg->scaling_factor));
    json_object_set_new(o, "shift_factor", cfg->shift_factor != 0.0f ? json_real(cfg->shift_factor) : json_null());
    json_object_set_new(o, "up_block_types", up);
    json_object_set_new(o, "use_post_quant_conv", json_boolean(cfg->use_post_quant_conv));
    json_object_set_new(o, "use_quant_conv", json_boolean(cfg->use_quant_conv));
    return o;
}

/* ---- the tensor table ---- */

typedef struct VaeParam {
    char name[160];
    char old_name[160]; /* older diffusers name, or "" */
    int ndim;
    int64_t shape[4];
    int linear; /* attention projection: (C,C) or, in old files, (C,C,1,1) */
    int norm;   /* GroupNorm weight/bias (random init differs) */
    float **slot;
    size_t numel;
    const TfTensorInfo *src; /* the checkpoint tensor it comes from, once checked */
} VaeParam;

typedef struct VaeTable {
    VaeParam *p;
    size_t n, cap;
    int failed;
} VaeTable;

static void reg(VaeTable *t, float **slot, const char *name, const char *old_name, int ndim, const int64_t *shape,
                int linear, int norm)
{
    if (t->failed)
        return;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        VaeParam *np = realloc(t->p, cap * sizeof *np);
        if (!np) {
            t->failed = 1;
            return;
        }
        t->p = np;
        t->cap = cap;
    }
    VaeParam *p = &t->p[t->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    snprintf(p->old_name, sizeof p->old_name, "%s", old_name ? old_name : "");
    p->ndim = ndim;
    p->numel = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        p->numel *= (size_t)shape[i];
    }
    p->linear = linear;
    p->norm = norm;
    p->slot = slot;
}

static void reg_conv(VaeTable *t, VaeConv *c, const char *prefix, int cin, int cout, int r)
{
    char n[160];
    c->cin = cin;
    c->cout = cout;
    c->r = r;
    int64_t ws[4] = {cout, cin, r, r}, bs[1] = {cout};
    snprintf(n, sizeof n, "%s.weight", prefix);
    reg(t, &c->w, n, NULL, 4, ws, 0, 0);
    snprintf(n, sizeof n, "%s.bias", prefix);
    reg(t, &c->b, n, NULL, 1, bs, 0, 0);
}

static void reg_norm(VaeTable *t, VaeNorm *nm, const char *prefix, int c)
{
    char n[160];
    nm->c = c;
    int64_t s[1] = {c};
    snprintf(n, sizeof n, "%s.weight", prefix);
    reg(t, &nm->g, n, NULL, 1, s, 0, 1);
    snprintf(n, sizeof n, "%s.bias", prefix);
    reg(t, &nm->b, n, NULL, 1, s, 0, 2);
}

static void reg_resnet(VaeTable *t, VaeResnet *r, const char *prefix, int cin, int cout)
{
    char n[160];
    snprintf(n, sizeof n, "%s.norm1", prefix);
    reg_norm(t, &r->n1, n, cin);
    snprintf(n, sizeof n, "%s.conv1", prefix);
    reg_conv(t, &r->c1, n, cin, cout, 3);
    snprintf(n, sizeof n, "%s.norm2", prefix);
    reg_norm(t, &r->n2, n, cout);
    snprintf(n, sizeof n, "%s.conv2", prefix);
    reg_conv(t, &r->c2, n, cout, cout, 3);
    r->has_sc = cin != cout;
    if (r->has_sc) {
        snprintf(n, sizeof n, "%s.conv_shortcut", prefix);
        reg_conv(t, &r->sc, n, cin, cout, 1);
    }
}

static void reg_linear(VaeTable *t, VaeConv *c, const char *prefix, const char *cur, const char *old, int ch)
{
    char n[160], o[160];
    c->cin = c->cout = ch;
    c->r = 1;
    int64_t ws[2] = {ch, ch}, bs[1] = {ch};
    snprintf(n, sizeof n, "%s.%s.weight", prefix, cur);
    snprintf(o, sizeof o, "%s.%s.weight", prefix, old);
    reg(t, &c->w, n, o, 2, ws, 1, 0);
    snprintf(n, sizeof n, "%s.%s.bias", prefix, cur);
    snprintf(o, sizeof o, "%s.%s.bias", prefix, old);
    reg(t, &c->b, n, o, 1, bs, 0, 0);
}

static void reg_mid(VaeTable *t, VaeMid *m, const char *prefix, const VaeConfig *cfg)
{
    char n[160];
    int ch = cfg->block_out_channels[cfg->nblocks - 1];
    snprintf(n, sizeof n, "%s.resnets.0", prefix);
    reg_resnet(t, &m->r0, n, ch, ch);
    m->has_attn = cfg->mid_block_add_attention;
    if (m->has_attn) {
        snprintf(n, sizeof n, "%s.attentions.0.group_norm", prefix);
        reg_norm(t, &m->attn.gn, n, ch);
        snprintf(n, sizeof n, "%s.attentions.0", prefix);
        reg_linear(t, &m->attn.q, n, "to_q", "query", ch);
        reg_linear(t, &m->attn.k, n, "to_k", "key", ch);
        reg_linear(t, &m->attn.v, n, "to_v", "value", ch);
        reg_linear(t, &m->attn.o, n, "to_out.0", "proj_attn", ch);
    }
    snprintf(n, sizeof n, "%s.resnets.1", prefix);
    reg_resnet(t, &m->r1, n, ch, ch);
}

/* Registers every tensor of the parts asked for, in diffusers' order. */
static void vae_layout(Vae *vae, VaeTable *t, int parts)
{
    const VaeConfig *cfg = &vae->cfg;
    const int *boc = cfg->block_out_channels, nb = cfg->nblocks, L = cfg->latent_channels;
    char n[160];
    if (parts & VAE_LOAD_ENCODER) {
        VaeEncoder *e = &vae->enc;
        reg_conv(t, &e->conv_in, "encoder.conv_in", cfg->in_channels, boc[0], 3);
        int out = boc[0];
        for (int i = 0; i < nb; i++) {
            int in = out;
            out = boc[i];
            for (int j = 0; j < cfg->layers_per_block; j++) {
                snprintf(n, sizeof n, "encoder.down_blocks.%d.resnets.%d", i, j);
                reg_resnet(t, &e->res[i][j], n, j == 0 ? in : out, out);
            }
            if (i != nb - 1) {
                snprintf(n, sizeof n, "encoder.down_blocks.%d.downsamplers.0.conv", i);
                reg_conv(t, &e->down[i], n, out, out, 3);
            }
        }
        reg_mid(t, &e->mid, "encoder.mid_block", cfg);
        reg_norm(t, &e->norm_out, "encoder.conv_norm_out", boc[nb - 1]);
        reg_conv(t, &e->conv_out, "encoder.conv_out", boc[nb - 1], 2 * L, 3);
        if (cfg->use_quant_conv)
            reg_conv(t, &e->quant, "quant_conv", 2 * L, 2 * L, 1);
    }
    if (parts & VAE_LOAD_DECODER) {
        VaeDecoder *d = &vae->dec;
        if (cfg->use_post_quant_conv)
            reg_conv(t, &d->post_quant, "post_quant_conv", L, L, 1);
        reg_conv(t, &d->conv_in, "decoder.conv_in", L, boc[nb - 1], 3);
        reg_mid(t, &d->mid, "decoder.mid_block", cfg);
        int out = boc[nb - 1];
        for (int i = 0; i < nb; i++) {
            int prev = out;
            out = boc[nb - 1 - i];
            for (int j = 0; j < cfg->layers_per_block + 1; j++) {
                snprintf(n, sizeof n, "decoder.up_blocks.%d.resnets.%d", i, j);
                reg_resnet(t, &d->res[i][j], n, j == 0 ? prev : out, out);
            }
            if (i != nb - 1) {
                snprintf(n, sizeof n, "decoder.up_blocks.%d.upsamplers.0.conv", i);
                reg_conv(t, &d->up[i], n, out, out, 3);
            }
        }
        reg_norm(t, &d->norm_out, "decoder.conv_norm_out", boc[0]);
        reg_conv(t, &d->conv_out, "decoder.conv_out", boc[0], cfg->out_channels, 3);
    }
}

/* Allocates the one parameter block and points every slot into it. When
 * loading, call it only after check_param accepted every tensor: the sizes
 * then come from the checkpoint's bytes, not from what config.json claims. */
static int table_alloc(Vae *vae, VaeTable *t, TfError *err)
{
    if (t->failed)
        return tf_fail(err, "out of memory building the tensor table");
    size_t total = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (t->p[i].numel > SIZE_MAX / sizeof(float) - total)
            return tf_fail(err, "the VAE's parameter count overflows");
        total += t->p[i].numel;
    }
    vae->params = malloc((total ? total : 1) * sizeof(float));
    if (!vae->params)
        return tf_fail(err, "out of memory for %zu parameters", total);
    vae->nparams = total;
    size_t off = 0;
    for (size_t i = 0; i < t->n; i++) {
        *t->p[i].slot = vae->params + off;
        off += t->p[i].numel;
    }
    return 0;
}

/* ---- random init ---- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s)
{
    return (double)(splitmix64(s) >> 11) * (1.0 / 9007199254740992.0);
}

double vae_rng_normal(uint64_t *s)
{
    double u1 = uniform01(s), u2 = uniform01(s);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

int vae_init_write(const VaeConfig *cfg, uint64_t seed, TfDtype dtype, const char *dir, TfError *err)
{
    int rc = -1;
    Vae vae = {0};
    vae.cfg = *cfg;
    VaeTable t = {0};
    TfSafetensorsWriter *w = NULL;
    json_t *cj = NULL;
    char path[4096];
    vae_layout(&vae, &t, VAE_LOAD_ENCODER | VAE_LOAD_DECODER);
    if (table_alloc(&vae, &t, err) != 0)
        goto done;
    if (tf_mkdir_p(dir, err) != 0)
        goto done;
    if (!(w = tf_safetensors_writer_new())) {
        tf_fail(err, "out of memory");
        goto done;
    }
    tf_safetensors_writer_set_metadata(w, "format", "pt", NULL);
    for (size_t i = 0; i < t.n; i++) {
        const VaeParam *p = &t.p[i];
        float *x = *p->slot;
        uint64_t s = seed * 0x9e3779b97f4a7c15ull + i + 1;
        splitmix64(&s);
        if (p->norm == 1 || p->norm == 2) {
            for (size_t j = 0; j < p->numel; j++)
                x[j] = (p->norm == 1 ? 1.0f : 0.0f) + (float)(0.2 * uniform01(&s) - 0.1);
        } else {
            /* PyTorch's default for Conv2d/Linear weights and biases:
             * U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the bias shares the
             * weight's fan_in, which the previous tensor carries. */
            size_t fan_in = p->ndim >= 2 ? p->numel / (size_t)p->shape[0] : t.p[i - 1].numel / (size_t)p->shape[0];
            double bound = 1.0 / sqrt((double)fan_in);
            for (size_t j = 0; j < p->numel; j++)
                x[j] = (float)((2.0 * uniform01(&s) - 1.0) * bound);
        }
        if (tf_safetensors_writer_add_f32(w, p->name, dtype, p->ndim, p->shape, x, p->numel, err) != 0)
            goto done;
    }
    if (tf_path_join(path, sizeof path, dir, "diffusion_pytorch_model.safetensors") != 0) {
        tf_fail(err, "%s: path too long", dir);
        goto done;
    }
    if (tf_safetensors_writer_write(w, path, err) != 0)
        goto done;
    cj = vae_config_to_json(cfg);
    if (tf_path_join(path, sizeof path, dir, "config.json") != 0 || !cj) {
        tf_fail(err, "%s: path too long or out of memory", dir);
        goto done;
    }
    if (tf_json_write_file_atomic(path, cj, err) != 0)
        goto done;
    rc = 0;
done:
    json_decref(cj);
    tf_safetensors_writer_free(w);
    free(t.p);
    free(vae.params);
    return rc;
}

/* ---- loading ---- */

/* Finds the checkpoint tensor of p (current name, else the older one) and
 * checks its shape; on success p->src is set. Allocates nothing. */
static int check_param(const TfSafetensors *st, VaeParam *p, TfError *err)
{
    const TfTensorInfo *ti = tf_safetensors_find(st, p->name);
    if (!ti && p->old_name[0])
        ti = tf_safetensors_find(st, p->old_name);
    if (!ti) {
        const TfTensorInfo *any = tf_safetensors_at(st, 0);
        return tf_fail(err, "%s: tensor '%s'%s%s%s is missing", any ? any->file : "checkpoint", p->name,
                       p->old_name[0] ? " (or '" : "", p->old_name, p->old_name[0] ? "')" : "");
    }
    int ok = 0;
    if (ti->ndim == p->ndim) {
        ok = 1;
        for (int i = 0; i < p->ndim; i++)
            ok = ok && ti->shape[i] == p->shape[i];
    }
    if (!ok && p->linear && ti->ndim == 4) /* old 1x1-conv-shaped projection */
        ok = ti->shape[0] == p->shape[0] && ti->shape[1] == p->shape[1] && ti->shape[2] == 1 && ti->shape[3] == 1;
    if (!ok) {
        char got[96] = "(", want[96] = "(";
        for (int i = 0; i < ti->ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? "," : "", (long long)ti->shape[i]);
        for (int i = 0; i < p->ndim; i++)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? "," : "",
                     (long long)p->shape[i]);
        return tf_fail(err, "%s: tensor '%s' has shape %s), expected %s)", ti->file, ti->name, got, want);
    }
    p->src = ti;
    return 0;
}

/* Converts the checked tensor of p into its slot and checks every value. */
static int load_param(const VaeParam *p, TfError *err)
{
    const TfTensorInfo *ti = p->src;
    if (tf_tensor_to_f32(ti, *p->slot, p->numel, err) != 0)
        return -1;
    const float *x = *p->slot;
    for (size_t i = 0; i < p->numel; i++)
        if (!isfinite(x[i]))
            return tf_fail(err, "%s: tensor '%s' holds a non-finite value at element %zu", ti->file, ti->name, i);
    return 0;
}

static int vae_hash(Vae *vae, const char *config_bytes, size_t config_len, const TfSafetensors *st)
{
    TfSha256 *h = tf_sha256_new();
    if (!h)
        return -1;
    static const char tag[] = "transfuse-vae-v1";
    tf_sha256_update(h, tag, sizeof tag);
    tf_sha256_update(h, config_bytes, config_len);
    size_t len;
    const void *bytes;
    for (size_t i = 0; (bytes = tf_safetensors_file(st, i, &len, NULL)); i++)
        tf_sha256_update(h, bytes, len);
    unsigned char d[32];
    tf_sha256_final(h, d);
    tf_hex(d, 32, vae->identity);
    return 0;
}

Vae *vae_load(const char *dir, int parts, TfError *err)
{
    Vae *vae = calloc(1, sizeof *vae);
    VaeTable t = {0};
    TfSafetensors *st = NULL;
    json_t *cj = NULL;
    char *cbytes = NULL;
    char path[4096];
    if (!vae) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    vae->parts = parts;
    if (tf_path_join(path, sizeof path, dir, "config.json") != 0) {
        tf_fail(err, "%s: path too long", dir);
        goto fail;
    }
    size_t clen;
    if (!(cbytes = tf_read_file(path, 1 << 20, &clen, err)))
        goto fail;
    json_error_t je;
    if (!(cj = json_loadb(cbytes, clen, 0, &je))) {
        tf_fail(err, "%s: line %d: %s", path, je.line, je.text);
        goto fail;
    }
    if (vae_config_from_json(cj, path, &vae->cfg, err) != 0)
        goto fail;
    if (tf_path_join(path, sizeof path, dir, "diffusion_pytorch_model.safetensors") != 0) {
        tf_fail(err, "%s: path too long", dir);
        goto fail;
    }
    if (access(path, F_OK) != 0) {
        char idx[4096];
        snprintf(idx, sizeof idx, "%s.index.json", path);
        if (access(idx, F_OK) != 0) {
            tf_fail(err, "%s: no diffusion_pytorch_model.safetensors (or its .index.json) in this folder", dir);
            goto fail;
        }
        snprintf(path, sizeof path, "%s", idx);
    }
    if (!(st = tf_safetensors_open(path, err)))
        goto fail;
    /* Every tensor the config implies is found and its shape checked before
     * the parameters are allocated, so their size is what the checkpoint
     * holds, never what an untrusted config.json claims. */
    vae_layout(vae, &t, parts);
    if (t.failed) {
        tf_fail(err, "out of memory building the tensor table");
        goto fail;
    }
    for (size_t i = 0; i < t.n; i++)
        if (check_param(st, &t.p[i], err) != 0)
            goto fail;
    if (table_alloc(vae, &t, err) != 0)
        goto fail;
    for (size_t i = 0; i < t.n; i++)
        if (load_param(&t.p[i], err) != 0)
            goto fail;
    if (vae_hash(vae, cbytes, clen, st) != 0) {
        tf_fail(err, "out of memory hashing the checkpoint");
        goto fail;
    }
    free(t.p);
    json_decref(cj);
    free(cbytes);
    tf_safetensors_free(st);
    return vae;
fail:
    free(t.p);
    json_decref(cj);
    free(cbytes);
    tf_safetensors_free(st);
    vae_free(vae);
    return NULL;
}

void vae_free(Vae *vae)
{
    if (!vae)
        return;
    free(vae->params);
    free(vae);
}

const VaeConfig *vae_config(const Vae *vae)
{
    return &vae->cfg;
}

const char *vae_identity(const Vae *vae)
{
    return vae->identity;
}

/* ---- forward ---- */

/* Per-image working memory: three buffers of the largest stage, and four
 * (C,T) buffers for the mid-block attention. */
typedef struct VaeWork {
    float *a, *b, *c;
    float *q, *k, *v, *o;
} VaeWork;

static void work_free(TfKernels *k, VaeWork *w)
{
    tf_kernels_release(k, w->a);
    tf_kernels_release(k, w->b);
    tf_kernels_release(k, w->c);
    tf_kernels_release(k, w->q);
    memset(w, 0, sizeof *w);
}

static int work_alloc(TfKernels *k, VaeWork *w, size_t big, size_t mid, TfError *err)
{
    memset(w, 0, sizeof *w);
    if (!(w->a = tf_kernels_alloc(k, big, err)) || !(w->b = tf_kernels_alloc(k, big, err)) ||
        !(w->c = tf_kernels_alloc(k, big, err)) || !(w->q = tf_kernels_alloc(k, 4 * mid, err))) {
        work_free(k, w);
        return -1;
    }
    w->k = w->q + mid;
    w->v = w->k + mid;
    w->o = w->v + mid;
    return 0;
}

static int conv(TfKernels *k, float *y, const float *x, const VaeConv *c, int B, int H, int W, int stride_pad_rb,
                TfError *err)
{
    TfConv2dShape s = {.B = B, .C = c->cin, .H = H, .W = W, .K = c->cout, .R = c->r, .stride = 1};
    if (stride_pad_rb) { /* diffusers Downsample2D: pad right/bottom by 1, stride 2 */
        s.stride = 2;
        s.pad_bottom = s.pad_right = 1;
    } else {
        s.pad_top = s.pad_left = s.pad_bottom = s.pad_right = c->r / 2;
    }
    return tf_conv2d(k, y, x, c->w, c->b, &s, err);
}

/* Returns -1 with "stopped" in err when a stop was requested: checked
 * between layers, the longest of which (a 3x3 convolution at full
 * resolution over a group of images) takes about a second on one core. */
static int stop_check(const TfStopFlag *stop, TfError *err)
{
    return tf_stop_requested(stop) ? tf_fail(err, "stopped") : 0;
}

/* x (B,cin,H,W) -> x (B,cout,H,W), using t1 and t2 (each the largest stage);
 * the three buffers may trade places. */
static int resnet(TfKernels *k, const VaeConfig *cfg, const VaeResnet *r, float **x, float **t1, float **t2, int B,
                  int H, int W, const TfStopFlag *stop, TfError *err)
{
    const size_t HW = (size_t)H * W, BHW = (size_t)B * HW;
    const int cin = r->c1.cin, cout = r->c1.cout;
    if (tf_group_norm(k, *t1, NULL, NULL, *x, r->n1.g, r->n1.b, B, cin, HW, cfg->norm_num_groups, VAE_EPS, 1, err) ||
        conv(k, *t2, *t1, &r->c1, B, H, W, 0, err) || stop_check(stop, err))
        return -1;
    if (tf_group_norm(k, *t2, NULL, NULL, *t2, r->n2.g, r->n2.b, B, cout, HW, cfg->norm_num_groups, VAE_EPS, 1,
                      err) ||
        conv(k, *t1, *t2, &r->c2, B, H, W, 0, err)) /* t1 = h */
        return -1;
    if (r->has_sc) {
        if (conv(k, *t2, *x, &r->sc, B, H, W, 0, err))
            return -1;
        if (tf_add(k, *t2, *t2, *t1, (size_t)cout * BHW, err))
            return -1;
        float *old = *x;
        *x = *t2;
        *t2 = old;
    } else {
        if (tf_add(k, *x, *x, *t1, (size_t)cout * BHW, err))
            return -1;
    }
    return 0;
}

static int attention(TfKernels *k, const VaeConfig *cfg, const VaeAttn *a, float *x, float *tmp, VaeWork *w, int B,
                     int H, int W, TfError *err)
{
    const int C = a->q.cin, T = H * W;
    if (tf_group_norm(k, tmp, NULL, NULL, x, a->gn.g, a->gn.b, B, C, (size_t)T, cfg->norm_num_groups, VAE_EPS, 0,
                      err))
        return -1;
    if (conv(k, w->q, tmp, &a->q, B, H, W, 0, err) || conv(k, w->k, tmp, &a->k, B, H, W, 0, err) ||
        conv(k, w->v, tmp, &a->v, B, H, W, 0, err))
        return -1;
    if (tf_attention(k, w->o, w->q, w->k, w->v, B, C, T, 1.0f / sqrtf((float)C), err))
        return -1;
    if (conv(k, tmp, w->o, &a->o, B, H, W, 0, err))
        return -1;
    return tf_add(k, x, x, tmp, (size_t)B * C * T, err);
}

static int mid(TfKernels *k, const VaeConfig *cfg, const VaeMid *m, VaeWork *w, int B, int H, int W,
               const TfStopFlag *stop, TfError *err)
{
    if (resnet(k, cfg, &m->r0, &w->a, &w->b, &w->c, B, H, W, stop, err) || stop_check(stop, err))
        return -1;
    if (m->has_attn && (attention(k, cfg, &m->attn, w->a, w->b, w, B, H, W, err) || stop_check(stop, err)))
        return -1;
    return resnet(k, cfg, &m->r1, &w->a, &w->b, &w->c, B, H, W, stop, err);
}

static size_t encoder_max(const VaeConfig *cfg, int H, int W)
{
    size_t m = (size_t)cfg->in_channels * H * W;
    int prev = cfg->block_out_channels[0];
    for (int i = 0; i < cfg->nblocks; i++) {
        size_t hw = (size_t)(H >> i) * (size_t)(W >> i);
        int c = cfg->block_out_channels[i] > prev ? cfg->block_out_channels[i] : prev;
        if ((size_t)c * hw > m)
            m = (size_t)c * hw;
        prev = cfg->block_out_channels[i];
    }
    size_t lat = (size_t)(H >> (cfg->nblocks - 1)) * (size_t)(W >> (cfg->nblocks - 1)) * 2 * cfg->latent_channels;
    return lat > m ? lat : m;
}

static int check_geometry(const VaeConfig *cfg, int H, int W, TfError *err)
{
    int f = vae_downsample_factor(cfg);
    if (H <= 0 || W <= 0 || H % f || W % f || H > 8192 || W > 8192)
        return tf_fail(err, "image size %dx%d must be a positive multiple of %d, at most 8192", W, H, f);
    return 0;
}

int vae_encode(Vae *vae, TfKernels *k, const float *image, int B, int H, int W, float *mean, float *logvar,
               const TfStopFlag *stop, TfError *err)
{
    const VaeConfig *cfg = &vae->cfg;
    const VaeEncoder *e = &vae->enc;
    if (!(vae->parts & VAE_LOAD_ENCODER))
        return tf_fail(err, "the encoder was not loaded");
    if (check_geometry(cfg, H, W, err))
        return -1;
    const int nb = cfg->nblocks, L = cfg->latent_channels, f = vae_downsample_factor(cfg), C = cfg->in_channels;
    const int h = H / f, wd = W / f;
    const size_t hw = (size_t)h * wd, HW = (size_t)H * W;
    /* Images go through each layer together, up to a group whose largest
     * activation stays under about 256 MiB, so per-layer costs (filter
     * transforms, first touches of memory) are paid once per group. */
    const size_t big = encoder_max(cfg, H, W);
    int group = (int)(((size_t)64 << 20) / big);
    group = group < 1 ? 1 : group > B ? B : group;
    VaeWork w;
    if (work_alloc(k, &w, big * (size_t)group, (size_t)group * cfg->block_out_channels[nb - 1] * hw, err))
        return -1;
    int rc = -1;
    for (int b0 = 0; b0 < B; b0 += group) {
        const int n = B - b0 < group ? B - b0 : group;
        int ch = H, cw = W;
        if (stop_check(stop, err) || tf_kernels_upload(k, w.b, image + (size_t)b0 * C * HW, (size_t)n * C * HW, err) ||
            conv(k, w.a, w.b, &e->conv_in, n, ch, cw, 0, err))
            goto done;
        for (int i = 0; i < nb; i++) {
            for (int j = 0; j < cfg->layers_per_block; j++)
                if (stop_check(stop, err) || resnet(k, cfg, &e->res[i][j], &w.a, &w.b, &w.c, n, ch, cw, stop, err))
                    goto done;
            if (i != nb - 1) {
                if (stop_check(stop, err) || conv(k, w.b, w.a, &e->down[i], n, ch, cw, 1, err))
                    goto done;
                float *t = w.a;
                w.a = w.b;
                w.b = t;
                ch /= 2;
                cw /= 2;
            }
        }
        if (stop_check(stop, err) || mid(k, cfg, &e->mid, &w, n, ch, cw, stop, err) || stop_check(stop, err))
            goto done;
        if (tf_group_norm(k, w.b, NULL, NULL, w.a, e->norm_out.g, e->norm_out.b, n, e->norm_out.c, hw,
                          cfg->norm_num_groups, VAE_EPS, 1, err) ||
            conv(k, w.c, w.b, &e->conv_out, n, ch, cw, 0, err))
            goto done;
        float *moments = w.c; /* (n,2L,h,w) */
        if (cfg->use_quant_conv) {
            if (conv(k, w.b, w.c, &e->quant, n, ch, cw, 0, err))
                goto done;
            moments = w.b;
        }
        for (int b = 0; b < n; b++) {
            const float *mo = moments + (size_t)b * 2 * L * hw;
            float *lv = logvar + (size_t)(b0 + b) * L * hw;
            if (tf_kernels_download(k, mean + (size_t)(b0 + b) * L * hw, mo, (size_t)L * hw, err) ||
                tf_kernels_download(k, lv, mo + (size_t)L * hw, (size_t)L * hw, err))
                goto done;
            for (size_t i = 0; i < (size_t)L * hw; i++)
                lv[i] = lv[i] < -30.0f ? -30.0f : lv[i] > 20.0f ? 20.0f : lv[i];
        }
    }
    rc = 0;
done:
    work_free(k, &w);
    return rc;
}

void vae_latent_sample(const VaeConfig *cfg, float *latent, const float *mean, const float *logvar, int B, size_t per,
                       uint64_t seed, uint64_t first_index, float eps_scale)
{
    for (int b = 0; b < B; b++) {
        uint64_t s = seed ^ ((first_index + (uint64_t)b + 1) * 0xd1b54a32d192ed03ull);
        splitmix64(&s);
        for (size_t i = 0; i < per; i++) {
            size_t j = (size_t)b * per + i;
            float eps = (float)vae_rng_normal(&s) * eps_scale;
            float z = mean[j] + expf(0.5f * logvar[j]) * eps;
            latent[j] = (z - cfg->shift_factor) * cfg->scaling_factor;
        }
    }
}

static size_t decoder_max(const VaeConfig *cfg, int h, int w)
{
    const int nb = cfg->nblocks;
    size_t m = (size_t)cfg->out_channels * (size_t)h * w << (2 * (nb - 1));
    int out = cfg->block_out_channels[nb - 1];
    for (int i = 0; i < nb; i++) {
        int prev = out;
        out = cfg->block_out_channels[nb - 1 - i];
        size_t hw = ((size_t)h * w) << (2 * i);
        size_t c = (size_t)(prev > out ? prev : out);
        if (c * hw > m)
            m = c * hw;
        if (i != nb - 1 && (size_t)out * hw * 4 > m)
            m = (size_t)out * hw * 4;
    }
    if ((size_t)h * w * cfg->latent_channels > m)
        m = (size_t)h * w * cfg->latent_channels;
    return m;
}

int vae_decode(Vae *vae, TfKernels *k, const float *latent, int B, int h, int w, float *image, TfError *err)
{
    const VaeConfig *cfg = &vae->cfg;
    const VaeDecoder *d = &vae->dec;
    if (!(vae->parts & VAE_LOAD_DECODER))
        return tf_fail(err, "the decoder was not loaded");
    const int nb = cfg->nblocks, L = cfg->latent_channels, f = vae_downsample_factor(cfg);
    if (h <= 0 || w <= 0 || h > 8192 / f || w > 8192 / f)
        return tf_fail(err, "latent size %dx%d out of range", w, h);
    const size_t hw = (size_t)h * w, HW = hw * (size_t)f * f;
    VaeWork wk;
    if (work_alloc(k, &wk, decoder_max(cfg, h, w), (size_t)cfg->block_out_channels[nb - 1] * hw, err))
        return -1;
    int rc = -1;
    for (int b = 0; b < B; b++) {
        int ch = h, cw = w;
        if (tf_kernels_upload(k, wk.b, latent + (size_t)b * L * hw, (size_t)L * hw, err) ||
            tf_scale_shift(k, wk.b, wk.b, 1.0f / cfg->scaling_factor, cfg->shift_factor, (size_t)L * hw, err))
            goto done;
        if (cfg->use_post_quant_conv) {
            if (conv(k, wk.c, wk.b, &d->post_quant, 1, ch, cw, 0, err))
                goto done;
            float *t = wk.b;
            wk.b = wk.c;
            wk.c = t;
        }
        if (conv(k, wk.a, wk.b, &d->conv_in, 1, ch, cw, 0, err))
            goto done;
        if (mid(k, cfg, &d->mid, &wk, 1, ch, cw, NULL, err))
            goto done;
        for (int i = 0; i < nb; i++) {
            for (int j = 0; j < cfg->layers_per_block + 1; j++)
                if (resnet(k, cfg, &d->res[i][j], &wk.a, &wk.b, &wk.c, 1, ch, cw, NULL, err))
                    goto done;
            if (i != nb - 1) {
                if (tf_upsample_nearest2x(k, wk.b, wk.a, 1, d->up[i].cin, ch, cw, err))
                    goto done;
                ch *= 2;
                cw *= 2;
                if (conv(k, wk.a, wk.b, &d->up[i], 1, ch, cw, 0, err))
                    goto done;
            }
        }
        if (tf_group_norm(k, wk.b, NULL, NULL, wk.a, d->norm_out.g, d->norm_out.b, 1, d->norm_out.c, HW,
                          cfg->norm_num_groups, VAE_EPS, 1, err) ||
            conv(k, wk.c, wk.b, &d->conv_out, 1, ch, cw, 0, err) ||
            tf_kernels_download(k, image + (size_t)b * cfg->out_channels * HW, wk.c, (size_t)cfg->out_channels * HW,
                                err))
            goto done;
    }
    rc = 0;
done:
    work_free(k, &wk);
    return rc;
}
