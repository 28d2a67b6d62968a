/* model.c: the LlamaFusion model's configuration, its tensors (frozen text
 * weights in one allocation, trainable image weights and their gradients
 * in one allocation each, with views), loading a Llama checkpoint,
 * initialisation, saving and loading the trainable tensors, and batches. */
#include "model_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- FusionConfig ------------------------------------------------------------------ */

void fusion_config_default(FusionConfig *c)
{
    memset(c, 0, sizeof *c);
    c->adapter = FUSION_ADAPTER_UNET;
    c->latent_c = 4, c->latent_h = 32, c->latent_w = 32;
    c->patch = 2;
    c->unet_ch[0] = 64, c->unet_ch[1] = 128;
    c->unet_groups = 1;
    c->boi_id = 128002, c->eoi_id = 128003;
    c->seed = 0;
}

int fusion_config_patches(const FusionConfig *c)
{
    return c->patch > 0 ? (c->latent_h / c->patch) * (c->latent_w / c->patch) : 0;
}

int fusion_adapter_parse(const char *name, FusionAdapter *out, TfError *err)
{
    if (!strcmp(name, "unet"))
        *out = FUSION_ADAPTER_UNET;
    else if (!strcmp(name, "linear"))
        *out = FUSION_ADAPTER_LINEAR;
    else
        return tf_fail(err, "adapter \"%s\" is not unet or linear", name);
    return 0;
}

const char *fusion_adapter_name(FusionAdapter a)
{
    return a == FUSION_ADAPTER_LINEAR ? "linear" : "unet";
}

json_t *fusion_config_to_json(const FusionConfig *c)
{
    return json_pack("{s:s,s:[i,i,i],s:i,s:[i,i],s:i,s:i,s:i,s:I,s:b}", "adapter", fusion_adapter_name(c->adapter),
                     "latent", c->latent_c, c->latent_h, c->latent_w, "patch", c->patch, "unet_channels",
                     c->unet_ch[0], c->unet_ch[1], "unet_groups", c->unet_groups, "boi_id", c->boi_id, "eoi_id",
                     c->eoi_id, "seed", (json_int_t)c->seed, "train_text", c->train_text);
}

int fusion_config_from_json(const json_t *j, FusionConfig *c, TfError *err)
{
    fusion_config_default(c);
    const char *ad = NULL;
    json_int_t seed = 0;
    json_error_t je;
    if (json_unpack_ex((json_t *)j, &je, 0, "{s:s,s:[i,i,i],s:i,s:[i,i],s:i,s:i,s:i,s:I}", "adapter", &ad, "latent",
                       &c->latent_c, &c->latent_h, &c->latent_w, "patch", &c->patch, "unet_channels", &c->unet_ch[0],
                       &c->unet_ch[1], "unet_groups", &c->unet_groups, "boi_id", &c->boi_id, "eoi_id", &c->eoi_id,
                       "seed", &seed) != 0)
        return tf_fail(err, "fusion config: %s", je.text);
    c->seed = (uint64_t)seed;
    const json_t *tt = json_object_get(j, "train_text");
    c->train_text = tt && json_is_true(tt);
    return fusion_adapter_parse(ad, &c->adapter, err);
}

/* Checks a FusionConfig against a Llama config. */
static int config_check(const LlamaConfig *lc, const FusionConfig *c, TfError *err)
{
    if (c->latent_c < 1 || c->latent_h < 1 || c->latent_w < 1 || c->latent_c > 4096 || c->latent_h > 4096 ||
        c->latent_w > 4096)
        return tf_fail(err, "fusion config: latent shape %dx%dx%d is out of range", c->latent_c, c->latent_h,
                       c->latent_w);
    if (c->patch < 1 || c->latent_h % c->patch || c->latent_w % c->patch)
        return tf_fail(err, "fusion config: patch %d does not divide the latent %dx%d", c->patch, c->latent_h,
                       c->latent_w);
    if (c->adapter == FUSION_ADAPTER_UNET) {
        if (c->patch != 1 && c->patch != 2 && c->patch != 4)
            return tf_fail(err, "fusion config: the U-Net adapter takes patch 1, 2 or 4 (one stride-2 "
                                "downsampler per down block), not %d", c->patch);
        for (int i = 0; i < 2; i++)
            if (c->unet_ch[i] < 1 || c->unet_ch[i] > 8192 || c->unet_groups < 1 || c->unet_ch[i] % c->unet_groups)
                return tf_fail(err, "fusion config: U-Net width %d does not split into %d groups", c->unet_ch[i],
                               c->unet_groups);
    }
    if (c->boi_id < 0 || c->boi_id >= lc->vocab || c->eoi_id < 0 || c->eoi_id >= lc->vocab || c->boi_id == c->eoi_id)
        return tf_fail(err, "fusion config: BOI %d and EOI %d must be distinct ids below the vocabulary %d",
                       c->boi_id, c->eoi_id, lc->vocab);
    return 0;
}

/* ---- the trainable table --------------------------------------------------------------- */

int model_add_tensor(FusionModel *m, const char *name, int ndim, const int64_t *shape, int decay, int init,
                     TfError *err)
{
    if (m->nt == m->tcap) {
        size_t cap = m->tcap ? 2 * m->tcap : 64;
        FusionTensor *t = realloc(m->t, cap * sizeof *t);
        if (!t)
            return tf_fail(err, "out of memory");
        m->t = t;
        int *in = realloc(m->init, cap * sizeof *in);
        if (!in)
            return tf_fail(err, "out of memory");
        m->init = in;
        m->tcap = cap;
    }
    FusionTensor *t = &m->t[m->nt];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name)))
        return tf_fail(err, "out of memory");
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->numel *= (size_t)shape[i];
    }
    /* 16-float alignment of every view (64 bytes) */
    t->offset = (m->nparams + 15) & ~(size_t)15;
    m->nparams = t->offset + t->numel;
    t->decay = decay;
    m->init[m->nt] = init;
    return (int)m->nt++;
}

static int build_table(FusionModel *m, TfError *err)
{
    const LlamaConfig *c = &m->lc;
    const int64_t D = c->hidden;
    if (!(m->img = calloc((size_t)c->layers * IL_COUNT, sizeof *m->img)))
        return tf_fail(err, "out of memory");
    char name[128];
    for (int l = 0; l < c->layers; l++)
        for (int s = 0; s < IL_COUNT; s++) {
            int64_t sh[2];
            llama_layer_shape(c, s, sh, NULL);
            snprintf(name, sizeof name, "model.layers.%d.%s_image.weight", l, LLAMA_LAYER_TENSORS[s]);
            int nd = sh[1] ? 2 : 1;
            int i = model_add_tensor(m, name, nd, sh, nd == 2, INIT_COPY, err);
            if (i < 0)
                return -1;
            m->img[l * IL_COUNT + s] = i;
        }
    if ((m->norm_image = model_add_tensor(m, "model.norm_image.weight", 1, &D, 0, INIT_COPY, err)) < 0)
        return -1;
    const int64_t sp[2] = {2, D};
    if ((m->special = model_add_tensor(m, "model.embed_tokens_special.weight", 2, sp, 0, INIT_SPECIAL, err)) < 0)
        return -1;
    if (adapter_layout(m, err) != 0)
        return -1;
    m->norm_text = -1;
    if (!m->fc.train_text)
        return 0;
    if (!(m->txt = calloc((size_t)c->layers * IL_COUNT, sizeof *m->txt)))
        return tf_fail(err, "out of memory");
    for (int l = 0; l < c->layers; l++)
        for (int s = 0; s < IL_COUNT; s++) {
            int64_t sh[2];
            llama_layer_shape(c, s, sh, NULL);
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, LLAMA_LAYER_TENSORS[s]);
            int nd = sh[1] ? 2 : 1;
            int i = model_add_tensor(m, name, nd, sh, nd == 2, INIT_COPY, err);
            if (i < 0)
                return -1;
            m->t[i].text = 1;
            m->txt[l * IL_COUNT + s] = i;
        }
    if ((m->norm_text = model_add_tensor(m, "model.norm.weight", 1, &D, 0, INIT_COPY, err)) < 0)
        return -1;
    m->t[m->norm_text].text = 1;
    return 0;
}

static void table_free(FusionModel *m)
{
    for (size_t i = 0; i < m->nt; i++)
        free((char *)m->t[i].name);
    free(m->t);
    free(m->init);
    free(m->img);
    free(m->txt);
    m->txt = NULL;
    m->t = NULL;
    m->init = NULL;
    m->img = NULL;
    m->nt = m->tcap = 0;
}

int fusion_count(const LlamaConfig *lc, const FusionConfig *fc, FusionCounts *out, TfError *err)
{
    memset(out, 0, sizeof *out);
    if (config_check(lc, fc, err) != 0)
        return -1;
    FusionModel m;
    memset(&m, 0, sizeof m);
    m.lc = *lc;
    m.fc = *fc;
    int rc = build_table(&m, err);
    for (size_t i = 0; rc == 0 && i < m.nt; i++) {
        size_t n = m.t[i].numel;
        if ((int)i == m.special)
            out->special += n;
        else if (m.t[i].text)
            out->text += n;
        else if ((int)i <= m.norm_image)
            out->image_layers += n;
        else
            out->adapters += n;
        out->trainable += n;
    }
    table_free(&m);
    return rc;
}

/* ---- loading ------------------------------------------------------------------------------ */

/* Copies tensor `name` of the checkpoint into dst (dtype m->frozen_dtype),
 * checking its shape. */
static int load_text(FusionModel *m, const TfSafetensors *st, const LlamaTensorSpec *spec, void *dst, float *stage,
                     TfError *err)
{
    const TfTensorInfo *ti = tf_safetensors_find(st, spec->name);
    if (!ti)
        return tf_fail(err, "checkpoint has no tensor %s", spec->name);
    int ok = ti->ndim == spec->ndim;
    for (int i = 0; ok && i < spec->ndim; i++)
        ok = ti->shape[i] == spec->shape[i];
    if (!ok)
        return tf_fail(err, "%s: %s has the wrong shape for config.json", ti->file, spec->name);
    if (m->frozen_dtype == TF_DTYPE_BF16) {
        if (ti->dtype != TF_DTYPE_BF16)
            return tf_fail(err, "%s: %s is %s in a bf16 checkpoint (mixed dtypes are not supported)", ti->file,
                           spec->name, tf_dtype_name(ti->dtype));
        return tf_kernels_upload_bytes(m->k, dst, ti->data, ti->nbytes, err);
    }
    if (tf_tensor_to_f32(ti, stage, spec->numel, err) != 0)
        return -1;
    return tf_kernels_upload(m->k, dst, stage, spec->numel, err);
}

static TfBuf frozen_view(FusionModel *m, size_t off)
{
    TfBuf b = {(const char *)m->frozen + off * tf_dtype_size(m->frozen_dtype), m->frozen_dtype};
    return b;
}

static int load_checkpoint(FusionModel *m, const char *dir, TfError *err)
{
    char path[4096];
    int rc = -1;
    TfSafetensors *st = NULL;
    LlamaTensorSpec *spec = NULL;
    float *stage = NULL;
    if (tf_path_join(path, sizeof path, dir, "model.safetensors.index.json") != 0)
        return tf_fail(err, "%s: path too long", dir);
    FILE *f = fopen(path, "rb");
    if (f)
        fclose(f);
    else
        tf_path_join(path, sizeof path, dir, "model.safetensors");
    if (!(st = tf_safetensors_open(path, err)))
        return -1;
    size_t n = llama_text_tensors(&m->lc, NULL, 0);
    if (!(spec = calloc(n, sizeof *spec)) || !(m->text = calloc((size_t)m->lc.layers, sizeof *m->text))) {
        tf_fail(err, "out of memory");
        goto out;
    }
    llama_text_tensors(&m->lc, spec, n);
    const TfTensorInfo *e = tf_safetensors_find(st, "model.embed_tokens.weight");
    m->frozen_dtype = e && e->dtype == TF_DTYPE_BF16 ? TF_DTYPE_BF16 : TF_DTYPE_F32;
    size_t total = 0, maxn = 0;
    size_t *off = calloc(n, sizeof *off);
    if (!off) {
        tf_fail(err, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        off[i] = total;
        total += (spec[i].numel + 31) & ~(size_t)31;
        if (spec[i].numel > maxn)
            maxn = spec[i].numel;
    }
    m->frozen_numel = total;
    if (!(m->frozen = tf_kernels_alloc_as(m->k, m->frozen_dtype, total, err)) ||
        (m->frozen_dtype == TF_DTYPE_F32 && !(stage = malloc(maxn * sizeof *stage)))) {
        if (m->frozen)
            tf_fail(err, "out of memory");
        free(off);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        void *dst = (char *)m->frozen + off[i] * tf_dtype_size(m->frozen_dtype);
        if (load_text(m, st, &spec[i], dst, stage, err) != 0) {
            free(off);
            goto out;
        }
    }
    /* views, in llama_text_tensors' order */
    size_t i = 0;
    m->embed = frozen_view(m, off[i++]);
    for (int l = 0; l < m->lc.layers; l++) {
        TextLayer *L = &m->text[l];
        TfBuf *slot[IL_COUNT] = {&L->ln1, &L->q, &L->k, &L->v, &L->o, &L->ln2, &L->gate, &L->up, &L->down};
        for (int s = 0; s < IL_COUNT; s++)
            *slot[s] = frozen_view(m, off[i++]);
    }
    m->norm = frozen_view(m, off[i++]);
    m->head = m->lc.tie_word_embeddings ? m->embed : frozen_view(m, off[i++]);
    free(off);
    rc = 0;
out:
    if (rc != 0)
        tf_fail_context(err, "%s", dir);
    free(stage);
    free(spec);
    tf_safetensors_free(st);
    return rc;
}

/* Initialises the trainable tensors: the image copy from the text copy,
 * BOI/EOI rows from the embedding's rows, adapters from fc.seed. */
static int init_params(FusionModel *m, TfError *err)
{
    TfKernels *k = m->k;
    const LlamaConfig *c = &m->lc;
    for (int l = 0; l < c->layers; l++) {
        const TextLayer *L = &m->text[l];
        const TfBuf src[IL_COUNT] = {L->ln1, L->q, L->k, L->v, L->o, L->ln2, L->gate, L->up, L->down};
        for (int s = 0; s < IL_COUNT; s++) {
            const FusionTensor *t = &m->t[m->img[l * IL_COUNT + s]];
            if (tf_convert(k, t->param, TF_DTYPE_F32, src[s], t->numel, err) != 0)
                return -1;
        }
    }
    const FusionTensor *ni = &m->t[m->norm_image];
    if (tf_convert(k, ni->param, TF_DTYPE_F32, m->norm, ni->numel, err) != 0)
        return -1;
    if (m->txt) {
        /* the trainable text copy starts as the checkpoint and replaces the
         * frozen views the forward reads */
        for (int l = 0; l < c->layers; l++) {
            TextLayer *L = &m->text[l];
            TfBuf *slot[IL_COUNT] = {&L->ln1, &L->q, &L->k, &L->v, &L->o, &L->ln2, &L->gate, &L->up, &L->down};
            for (int s = 0; s < IL_COUNT; s++) {
                const FusionTensor *t = &m->t[m->txt[l * IL_COUNT + s]];
                if (tf_convert(k, t->param, TF_DTYPE_F32, *slot[s], t->numel, err) != 0)
                    return -1;
                *slot[s] = tf_buf_f32(t->param);
            }
        }
        const FusionTensor *nt = &m->t[m->norm_text];
        if (tf_convert(k, nt->param, TF_DTYPE_F32, m->norm, nt->numel, err) != 0)
            return -1;
        m->norm = tf_buf_f32(nt->param);
    }
    const size_t D = (size_t)c->hidden;
    const int ids[2] = {m->fc.boi_id, m->fc.eoi_id};
    for (int r = 0; r < 2; r++) {
        TfBuf row = {(const char *)m->embed.data + (size_t)ids[r] * D * tf_dtype_size(m->embed.dtype), m->embed.dtype};
        if (tf_convert(k, TP(m, m->special) + (size_t)r * D, TF_DTYPE_F32, row, D, err) != 0)
            return -1;
    }
    for (size_t i = 0; i < m->nt; i++) {
        const FusionTensor *t = &m->t[i];
        int r = 0;
        switch (m->init[i]) {
        case INIT_ZERO: r = tf_fill(k, t->param, 0.0f, t->numel, err); break;
        case INIT_ONE: r = tf_fill(k, t->param, 1.0f, t->numel, err); break;
        case INIT_FANIN:
            r = tf_randn(k, t->param, t->numel, m->fc.seed, 1000 + i, 0, 0.0f,
                         (float)(1.0 / sqrt((double)(t->numel / (size_t)t->shape[0]))), err);
            break;
        default: break;
        }
        if (r != 0)
            return -1;
    }
    return 0;
}

FusionModel *fusion_model_new(TfKernels *k, const char *llama_dir, const FusionConfig *cfg, TfError *err)
{
    FusionModel *m = calloc(1, sizeof *m);
    if (!m) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    m->k = k;
    m->fc = *cfg;
    if (llama_config_load(llama_dir, &m->lc, err) != 0 || config_check(&m->lc, cfg, err) != 0 ||
        build_table(m, err) != 0 || load_checkpoint(m, llama_dir, err) != 0)
        goto fail;
    if (!(m->params = tf_kernels_alloc(k, m->nparams, err)) || !(m->grads = tf_kernels_alloc(k, m->nparams, err)))
        goto fail;
    if (tf_fill(k, m->params, 0.0f, m->nparams, err) != 0 || tf_fill(k, m->grads, 0.0f, m->nparams, err) != 0)
        goto fail;
    for (size_t i = 0; i < m->nt; i++) {
        m->t[i].param = m->params + m->t[i].offset;
        m->t[i].grad = m->grads + m->t[i].offset;
    }
    if (init_params(m, err) != 0)
        goto fail;
    m->rope = (TfRope){m->lc.head_dim, m->lc.rope_theta, m->lc.rope_factor, m->lc.rope_low_freq_factor,
                       m->lc.rope_high_freq_factor, m->lc.rope_original_max_position};
    return m;
fail:
    fusion_model_free(m);
    return NULL;
}

void fusion_model_free(FusionModel *m)
{
    if (!m)
        return;
    arena_free(m);
    adapter_free(m);
    tf_kernels_release(m->k, m->rope_cos);
    tf_kernels_release(m->k, m->rope_sin);
    tf_kernels_release(m->k, m->params);
    tf_kernels_release(m->k, m->grads);
    tf_kernels_release(m->k, m->frozen);
    free(m->text);
    table_free(m);
    free(m);
}

const LlamaConfig *fusion_llama_config(const FusionModel *m) { return &m->lc; }
const FusionConfig *fusion_config(const FusionModel *m) { return &m->fc; }
size_t fusion_param_count(const FusionModel *m) { return m->nparams; }
size_t fusion_frozen_count(const FusionModel *m) { return llama_param_count(&m->lc); }
float *fusion_params(FusionModel *m) { return m->params; }
float *fusion_grads(FusionModel *m) { return m->grads; }
size_t fusion_tensor_count(const FusionModel *m) { return m->nt; }

const FusionTensor *fusion_tensor_at(const FusionModel *m, size_t i)
{
    return i < m->nt ? &m->t[i] : NULL;
}

const FusionTensor *fusion_tensor_find(const FusionModel *m, const char *name)
{
    for (size_t i = 0; i < m->nt; i++)
        if (!strcmp(m->t[i].name, name))
            return &m->t[i];
    return NULL;
}

int fusion_zero_grad(FusionModel *m, TfError *err)
{
    return tf_fill(m->k, m->grads, 0.0f, m->nparams, err);
}

void fusion_memory(const FusionModel *m, FusionMemory *out)
{
    out->frozen = m->frozen_numel * tf_dtype_size(m->frozen_dtype);
    out->params = m->nparams * sizeof(float);
    out->grads = m->nparams * sizeof(float);
    out->activations = m->arena.total * sizeof(float);
}

/* ---- saving and loading the trainable tensors ----------------------------------------- */

int fusion_save_trainable(FusionModel *m, const char *path, TfError *err)
{
    int rc = -1;
    TfSafetensorsWriter *w = tf_safetensors_writer_new();
    float *host = malloc(m->nparams * sizeof *host);
    json_t *cj = fusion_config_to_json(&m->fc);
    char *cs = cj ? json_dumps(cj, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (!w || !host || !cs) {
        tf_fail(err, "out of memory");
        goto out;
    }
    if (tf_kernels_download(m->k, host, m->params, m->nparams, err) != 0)
        goto out;
    tf_safetensors_writer_set_metadata(w, "format", "pt", NULL);
    if (tf_safetensors_writer_set_metadata(w, "transfuse.fusion_config", cs, err) != 0)
        goto out;
    for (size_t i = 0; i < m->nt; i++) {
        const FusionTensor *t = &m->t[i];
        if (tf_safetensors_writer_add_f32(w, t->name, TF_DTYPE_F32, t->ndim, t->shape, host + t->offset, t->numel,
                                          err) != 0)
            goto out;
    }
    rc = tf_safetensors_writer_write(w, path, err);
out:
    free(cs);
    json_decref(cj);
    free(host);
    tf_safetensors_writer_free(w);
    return rc;
}

int fusion_load_trainable(FusionModel *m, const char *path, TfError *err)
{
    int rc = -1;
    TfSafetensors *st = tf_safetensors_open(path, err);
    float *host = NULL;
    if (!st)
        return -1;
    if (!(host = calloc(m->nparams, sizeof *host))) {
        tf_fail(err, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < m->nt; i++) {
        const FusionTensor *t = &m->t[i];
        if (tf_safetensors_read_f32(st, t->name, t->ndim, t->shape, host + t->offset, err) != 0)
            goto out;
    }
    rc = tf_kernels_upload(m->k, m->params, host, m->nparams, err);
out:
    if (rc != 0)
        tf_fail_context(err, "%s", path);
    free(host);
    tf_safetensors_free(st);
    return rc;
}

int fusion_config_read(const char *path, FusionConfig *cfg, TfError *err)
{
    TfSafetensors *st = tf_safetensors_open(path, err);
    if (!st)
        return -1;
    int rc = -1;
    const char *s = tf_safetensors_metadata(st, "transfuse.fusion_config");
    json_error_t je;
    json_t *j = s ? json_loads(s, 0, &je) : NULL;
    if (!s)
        tf_fail(err, "%s: no transfuse.fusion_config in the metadata", path);
    else if (!j)
        tf_fail(err, "%s: transfuse.fusion_config: %s", path, je.text);
    else if (fusion_config_from_json(j, cfg, err) != 0)
        tf_fail_context(err, "%s", path);
    else
        rc = 0;
    json_decref(j);
    tf_safetensors_free(st);
    return rc;
}

/* ---- batches --------------------------------------------------------------------------- */

FusionBatch *fusion_batch_new(int B, int T, int max_images, size_t latent_numel)
{
    if (B < 1 || T < 1 || max_images < 0)
        return NULL;
    FusionBatch *b = calloc(1, sizeof *b);
    size_t N = (size_t)B * T, L = (size_t)max_images * latent_numel;
    if (!b)
        return NULL;
    b->B = B, b->T = T, b->max_images = max_images, b->latent_numel = latent_numel;
    b->tokens = calloc(N, sizeof *b->tokens);
    b->modality = calloc(N, 1);
    b->lo = calloc(N, sizeof *b->lo);
    b->hi = calloc(N, sizeof *b->hi);
    b->targets = malloc(N * sizeof *b->targets);
    b->images = calloc((size_t)max_images + 1, sizeof *b->images);
    b->x_t = calloc(L + 1, sizeof *b->x_t);
    b->eps = calloc(L + 1, sizeof *b->eps);
    b->timestep = calloc((size_t)max_images + 1, sizeof *b->timestep);
    if (!b->tokens || !b->modality || !b->lo || !b->hi || !b->targets || !b->images || !b->x_t || !b->eps ||
        !b->timestep) {
        fusion_batch_free(b);
        return NULL;
    }
    for (size_t n = 0; n < N; n++) {
        b->targets[n] = -1;
        b->hi[n] = (int32_t)(n % (size_t)T) + 1;
    }
    return b;
}

void fusion_batch_free(FusionBatch *b)
{
    if (!b)
        return;
    free(b->tokens);
    free(b->modality);
    free(b->lo);
    free(b->hi);
    free(b->targets);
    free(b->images);
    free(b->x_t);
    free(b->eps);
    free(b->timestep);
    free(b);
}

void fusion_batch_fill_hi(FusionBatch *b)
{
    for (int r = 0; r < b->B; r++) {
        const uint8_t *mod = b->modality + (size_t)r * b->T;
        int32_t *hi = b->hi + (size_t)r * b->T;
        for (int i = 0; i < b->T;) {
            if (mod[i] != FUSION_IMAGE) {
                hi[i] = i + 1;
                i++;
                continue;
            }
            int j = i;
            while (j < b->T && mod[j] == FUSION_IMAGE)
                j++;
            for (int q = i; q < j; q++)
                hi[q] = j;
            i = j;
        }
    }
}

int fusion_batch_save(const FusionBatch *b, const char *path, TfError *err)
{
    const size_t N = (size_t)b->B * b->T, K = (size_t)b->n_images, L = K * b->latent_numel;
    TfSafetensorsWriter *w = tf_safetensors_writer_new();
    float *f = malloc((N * 5 + K * 3 + 1) * sizeof *f);
    int rc = -1;
    if (!w || !f) {
        tf_fail(err, "out of memory");
        goto out;
    }
    float *arr[5] = {f, f + N, f + 2 * N, f + 3 * N, f + 4 * N}, *sl = f + 5 * N;
    for (size_t n = 0; n < N; n++) {
        arr[0][n] = (float)b->tokens[n], arr[1][n] = b->modality[n], arr[2][n] = (float)b->lo[n];
        arr[3][n] = (float)b->hi[n], arr[4][n] = (float)b->targets[n];
    }
    for (size_t i = 0; i < K; i++) {
        sl[3 * i] = (float)b->images[i].row, sl[3 * i + 1] = (float)b->images[i].start;
        sl[3 * i + 2] = b->timestep[i];
    }
    static const char *const names[5] = {"tokens", "modality", "lo", "hi", "targets"};
    const int64_t sh[2] = {b->B, b->T}, si[2] = {(int64_t)K, 3}, sx[2] = {(int64_t)K, (int64_t)b->latent_numel};
    for (int i = 0; i < 5; i++)
        if (tf_safetensors_writer_add_f32(w, names[i], TF_DTYPE_F32, 2, sh, arr[i], N, err))
            goto out;
    if (tf_safetensors_writer_add_f32(w, "images", TF_DTYPE_F32, 2, si, sl, K * 3, err) ||
        tf_safetensors_writer_add_f32(w, "x_t", TF_DTYPE_F32, 2, sx, b->x_t, L, err) ||
        tf_safetensors_writer_add_f32(w, "eps", TF_DTYPE_F32, 2, sx, b->eps, L, err))
        goto out;
    rc = tf_safetensors_writer_write(w, path, err);
out:
    tf_safetensors_writer_free(w);
    free(f);
    return rc;
}

FusionBatch *fusion_batch_load(const char *path, TfError *err)
{
    TfSafetensors *st = tf_safetensors_open(path, err);
    FusionBatch *b = NULL;
    float *f = NULL;
    if (!st)
        return NULL;
    const TfTensorInfo *tt = tf_safetensors_find(st, "tokens"), *ti = tf_safetensors_find(st, "images"),
                       *tx = tf_safetensors_find(st, "x_t");
    if (!tt || !ti || !tx || tt->ndim != 2 || ti->ndim != 2 || tx->ndim != 2 || ti->shape[1] != 3 ||
        tx->shape[0] != ti->shape[0] || tt->shape[0] < 1 || tt->shape[1] < 1 || tt->shape[0] * tt->shape[1] > (1 << 30)) {
        tf_fail(err, "%s: not a batch file (tokens (B,T), images (K,3), x_t (K,n))", path);
        goto fail;
    }
    const int B = (int)tt->shape[0], T = (int)tt->shape[1], K = (int)ti->shape[0];
    const size_t N = (size_t)B * T, L = (size_t)tx->shape[1];
    if (!(b = fusion_batch_new(B, T, K, L)) || !(f = malloc((N > 3 * (size_t)K ? N : 3 * (size_t)K) * sizeof *f))) {
        tf_fail(err, "out of memory");
        goto fail;
    }
    static const char *const names[5] = {"tokens", "modality", "lo", "hi", "targets"};
    int32_t *dst[5] = {b->tokens, NULL, b->lo, b->hi, b->targets};
    for (int i = 0; i < 5; i++) {
        if (tf_safetensors_read_f32(st, names[i], 2, tt->shape, f, err))
            goto fail;
        for (size_t n = 0; n < N; n++) {
            if (dst[i])
                dst[i][n] = (int32_t)f[n];
            else
                b->modality[n] = (uint8_t)f[n];
        }
    }
    const int64_t sx[2] = {K, (int64_t)L};
    if (tf_safetensors_read_f32(st, "images", 2, ti->shape, f, err) ||
        tf_safetensors_read_f32(st, "x_t", 2, sx, b->x_t, err) || tf_safetensors_read_f32(st, "eps", 2, sx, b->eps, err))
        goto fail;
    for (int i = 0; i < K; i++) {
        b->images[i] = (FusionImageSlot){(int)f[3 * i], (int)f[3 * i + 1]};
        b->timestep[i] = f[3 * i + 2];
    }
    b->n_images = K;
    free(f);
    tf_safetensors_free(st);
    return b;
fail:
    free(f);
    fusion_batch_free(b);
    tf_safetensors_free(st);
    return NULL;
}

int fusion_batch_check(const FusionModel *m, const FusionBatch *b, TfError *err)
{
    const int P = fusion_config_patches(&m->fc);
    const size_t L = (size_t)m->fc.latent_c * m->fc.latent_h * m->fc.latent_w;
    if (b->n_images < 0 || b->n_images > b->max_images)
        return tf_fail(err, "batch: %d images for %d slots", b->n_images, b->max_images);
    if (b->n_images > 0 && b->latent_numel != L)
        return tf_fail(err, "batch: latents of %zu values, the model takes %dx%dx%d", b->latent_numel,
                       m->fc.latent_c, m->fc.latent_h, m->fc.latent_w);
    /* image spans: each slot's P positions are image positions, the slots
     * ordered and not overlapping, and no other position is an image */
    size_t N = (size_t)b->B * b->T, nimg = 0;
    long prev_end = -1;
    for (int i = 0; i < b->n_images; i++) {
        const FusionImageSlot *s = &b->images[i];
        if (s->row < 0 || s->row >= b->B || s->start < 0 || s->start + P > b->T)
            return tf_fail(err, "batch: image %d at row %d position %d does not fit %d positions", i, s->row,
                           s->start, P);
        long g = (long)s->row * b->T + s->start;
        if (g < prev_end)
            return tf_fail(err, "batch: image %d overlaps or precedes image %d", i, i - 1);
        prev_end = g + P;
        for (int p = 0; p < P; p++) {
            if (b->modality[g + p] != FUSION_IMAGE)
                return tf_fail(err, "batch: image %d's position %d is not marked image", i, s->start + p);
            if (b->hi[g + p] != s->start + P)
                return tf_fail(err, "batch: mask bound hi %d at image %d's position %d is not the end of its span %d",
                               b->hi[g + p], i, s->start + p, s->start + P);
        }
        if (!(b->timestep[i] >= 0.0f && b->timestep[i] < 1000.0f))
            return tf_fail(err, "batch: image %d has timestep %g outside [0, 1000)", i, b->timestep[i]);
    }
    for (size_t n = 0; n < N; n++) {
        int i = (int)(n % (size_t)b->T);
        if (b->modality[n] == FUSION_IMAGE)
            nimg++;
        else if (b->modality[n] != FUSION_TEXT)
            return tf_fail(err, "batch: position %zu has modality %d", n, b->modality[n]);
        else if (b->tokens[n] < 0 || b->tokens[n] >= m->lc.vocab)
            return tf_fail(err, "batch: token %d at position %zu is outside the vocabulary %d", b->tokens[n], n,
                           m->lc.vocab);
        if (b->targets[n] >= m->lc.vocab || (b->targets[n] >= 0 && b->modality[n] != FUSION_TEXT))
            return tf_fail(err, "batch: target %d at position %zu (targets are text ids at text positions)",
                           b->targets[n], n);
        if (b->modality[n] == FUSION_TEXT && b->hi[n] != i + 1)
            return tf_fail(err, "batch: mask bound hi %d at text position %zu is not causal (%d)", b->hi[n], n, i + 1);
        if (b->lo[n] < 0 || b->lo[n] > i || b->hi[n] <= i || b->hi[n] > b->T ||
            (i > 0 && b->hi[n] < b->hi[n - 1]))
            return tf_fail(err, "batch: mask bounds [%d, %d) at row %zu position %d are invalid", b->lo[n],
                           b->hi[n], n / (size_t)b->T, i);
    }
    if (nimg != (size_t)b->n_images * (size_t)P)
        return tf_fail(err, "batch: %zu image positions, %d images of %d", nimg, b->n_images, P);
    return 0;
}

/* ---- the activation arena ------------------------------------------------------------------- */

#define ARENA_CHUNK ((size_t)16 << 20) /* floats */

float *arena_get(FusionModel *m, size_t n, TfError *err)
{
    Arena *a = &m->arena;
    n = (n + 15) & ~(size_t)15;
    if (n == 0)
        n = 16;
    while (a->cur < a->n) {
        ArenaChunk *c = &a->chunks[a->cur];
        if (c->cap - c->used >= n) {
            float *p = c->base + c->used;
            c->used += n;
            return p;
        }
        a->cur++;
    }
    ArenaChunk *cs = realloc(a->chunks, (size_t)(a->n + 1) * sizeof *cs);
    if (!cs) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    a->chunks = cs;
    size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
    float *base = tf_kernels_alloc(m->k, cap, err);
    if (!base)
        return NULL;
    a->chunks[a->n] = (ArenaChunk){base, cap, n};
    a->cur = a->n++;
    a->total += cap;
    return base;
}

void arena_reset(FusionModel *m)
{
    for (int i = 0; i < m->arena.n; i++)
        m->arena.chunks[i].used = 0;
    m->arena.cur = 0;
}

void arena_free(FusionModel *m)
{
    for (int i = 0; i < m->arena.n; i++)
        tf_kernels_release(m->k, m->arena.chunks[i].base);
    free(m->arena.chunks);
    memset(&m->arena, 0, sizeof m->arena);
}
