/* llama.c: Llama checkpoints in Hugging Face layout: config.json facts,
 * the named layouts (tiny, 1b, 8b) and random-initialised checkpoints
 * (config.json, generation_config.json, model.safetensors or shards + the
 * index) for tests and demos. */
#include "trainer_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- config.json ------------------------------------------------------------ */

static int json_int(const json_t *root, const char *file, const char *key, int def, int lo, int hi, int *out,
                    TfError *err)
{
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (def == INT32_MIN)
            return tf_fail(err, "%s: \"%s\" is missing", file, key);
        *out = def;
        return 0;
    }
    if (json_is_array(v) && json_array_size(v) > 0) /* eos_token_id may be a list */
        v = json_array_get(v, 0);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return tf_fail(err, "%s: \"%s\" must be an integer in [%d, %d]", file, key, lo, hi);
    *out = (int)json_integer_value(v);
    return 0;
}

static int json_num(const json_t *root, const char *file, const char *key, double def, double lo, double hi,
                    double *out, TfError *err)
{
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (isnan(def))
            return tf_fail(err, "%s: \"%s\" is missing", file, key);
        *out = def;
        return 0;
    }
    if (!json_is_number(v) || !(json_number_value(v) >= lo && json_number_value(v) <= hi))
        return tf_fail(err, "%s: \"%s\" must be a number in [%g, %g]", file, key, lo, hi);
    *out = json_number_value(v);
    return 0;
}

int llama_config_from_json(const json_t *root, const char *file, LlamaConfig *cfg, TfError *err)
{
    memset(cfg, 0, sizeof *cfg);
    if (!json_is_object(root))
        return tf_fail(err, "%s: not a JSON object", file);
    const char *mt = json_string_value(json_object_get(root, "model_type"));
    if (mt && strcmp(mt, "llama") != 0)
        return tf_fail(err, "%s: model_type \"%s\" is not llama", file, mt);
    const int M = INT32_MIN;
    if (json_int(root, file, "hidden_size", M, 1, 1 << 16, &cfg->hidden, err) ||
        json_int(root, file, "num_hidden_layers", M, 1, 1024, &cfg->layers, err) ||
        json_int(root, file, "num_attention_heads", M, 1, 1024, &cfg->heads, err) ||
        json_int(root, file, "num_key_value_heads", cfg->heads, 1, 1024, &cfg->kv_heads, err) ||
        json_int(root, file, "intermediate_size", M, 1, 1 << 20, &cfg->intermediate, err) ||
        json_int(root, file, "vocab_size", M, 1, 1 << 24, &cfg->vocab, err) ||
        json_int(root, file, "max_position_embeddings", 8192, 1, 1 << 30, &cfg->max_position, err) ||
        json_int(root, file, "bos_token_id", -1, -1, 1 << 24, &cfg->bos_id, err) ||
        json_int(root, file, "eos_token_id", -1, -1, 1 << 24, &cfg->eos_id, err))
        return -1;
    if (json_int(root, file, "head_dim", cfg->hidden / cfg->heads, 2, 1 << 12, &cfg->head_dim, err))
        return -1;
    if (cfg->heads % cfg->kv_heads)
        return tf_fail(err, "%s: %d attention heads do not split into %d key/value heads", file, cfg->heads,
                       cfg->kv_heads);
    if (cfg->head_dim % 2)
        return tf_fail(err, "%s: head_dim %d is odd (RoPE pairs dimensions)", file, cfg->head_dim);
    double eps, theta;
    if (json_num(root, file, "rms_norm_eps", 1e-6, 0, 1, &eps, err) ||
        json_num(root, file, "rope_theta", 10000.0, 1, 1e12, &theta, err))
        return -1;
    cfg->rms_eps = (float)eps;
    cfg->rope_theta = theta;
    const json_t *tie = json_object_get(root, "tie_word_embeddings");
    if (tie && !json_is_boolean(tie))
        return tf_fail(err, "%s: \"tie_word_embeddings\" must be true or false", file);
    cfg->tie_word_embeddings = tie ? json_is_true(tie) : 0; /* transformers' LlamaConfig default is false */
    cfg->rope_factor = 1.0;
    const json_t *rs = json_object_get(root, "rope_scaling");
    if (rs && !json_is_null(rs)) {
        if (!json_is_object(rs))
            return tf_fail(err, "%s: \"rope_scaling\" must be an object or null", file);
        const char *type = json_string_value(json_object_get(rs, "rope_type"));
        if (!type)
            type = json_string_value(json_object_get(rs, "type"));
        if (!type || strcmp(type, "llama3") != 0)
            return tf_fail(err, "%s: rope_scaling type \"%s\" is not supported (only llama3)", file,
                           type ? type : "(none)");
        char label[600];
        snprintf(label, sizeof label, "%s: rope_scaling", file);
        if (json_num(rs, label, "factor", NAN, 1, 1e6, &cfg->rope_factor, err) ||
            json_num(rs, label, "low_freq_factor", NAN, 1e-6, 1e6, &cfg->rope_low_freq_factor, err) ||
            json_num(rs, label, "high_freq_factor", NAN, 1e-6, 1e6, &cfg->rope_high_freq_factor, err) ||
            json_int(rs, label, "original_max_position_embeddings", M, 1, 1 << 30, &cfg->rope_original_max_position,
                     err))
            return -1;
        if (cfg->rope_high_freq_factor <= cfg->rope_low_freq_factor)
            return tf_fail(err, "%s: high_freq_factor must exceed low_freq_factor", label);
    }
    const char *dt = json_string_value(json_object_get(root, "torch_dtype"));
    snprintf(cfg->torch_dtype, sizeof cfg->torch_dtype, "%s", dt ? dt : "");
    return 0;
}

int llama_config_load(const char *dir, LlamaConfig *cfg, TfError *err)
{
    char path[4096];
    if (tf_path_join(path, sizeof path, dir, "config.json") != 0)
        return tf_fail(err, "%s: path too long", dir);
    json_t *root = tf_json_load_file(path, 1u << 20, err);
    if (!root)
        return -1;
    int rc = llama_config_from_json(root, path, cfg, err);
    json_decref(root);
    return rc;
}

json_t *llama_config_to_json(const LlamaConfig *c)
{
    json_t *j = json_object();
    json_object_set_new(j, "architectures", json_pack("[s]", "LlamaForCausalLM"));
    json_object_set_new(j, "attention_bias", json_false());
    json_object_set_new(j, "attention_dropout", json_real(0.0));
    json_object_set_new(j, "bos_token_id", json_integer(c->bos_id));
    json_object_set_new(j, "eos_token_id", json_integer(c->eos_id));
    json_object_set_new(j, "head_dim", json_integer(c->head_dim));
    json_object_set_new(j, "hidden_act", json_string("silu"));
    json_object_set_new(j, "hidden_size", json_integer(c->hidden));
    json_object_set_new(j, "initializer_range", json_real(0.02));
    json_object_set_new(j, "intermediate_size", json_integer(c->intermediate));
    json_object_set_new(j, "max_position_embeddings", json_integer(c->max_position));
    json_object_set_new(j, "mlp_bias", json_false());
    json_object_set_new(j, "model_type", json_string("llama"));
    json_object_set_new(j, "num_attention_heads", json_integer(c->heads));
    json_object_set_new(j, "num_hidden_layers", json_integer(c->layers));
    json_object_set_new(j, "num_key_value_heads", json_integer(c->kv_heads));
    json_object_set_new(j, "pretraining_tp", json_integer(1));
    json_object_set_new(j, "rms_norm_eps", json_real(c->rms_eps));
    if (c->rope_factor > 1.0)
        json_object_set_new(j, "rope_scaling",
                            json_pack("{s:f,s:f,s:f,s:i,s:s}", "factor", c->rope_factor, "low_freq_factor",
                                      c->rope_low_freq_factor, "high_freq_factor", c->rope_high_freq_factor,
                                      "original_max_position_embeddings", c->rope_original_max_position, "rope_type",
                                      "llama3"));
    else
        json_object_set_new(j, "rope_scaling", json_null());
    json_object_set_new(j, "rope_theta", json_real(c->rope_theta));
    json_object_set_new(j, "tie_word_embeddings", json_boolean(c->tie_word_embeddings));
    json_object_set_new(j, "torch_dtype", json_string(c->torch_dtype[0] ? c->torch_dtype : "bfloat16"));
    json_object_set_new(j, "transformers_version", json_string("4.45.0"));
    json_object_set_new(j, "use_cache", json_true());
    json_object_set_new(j, "vocab_size", json_integer(c->vocab));
    return j;
}

int llama_config_layout(const char *layout, LlamaConfig *c, TfError *err)
{
    memset(c, 0, sizeof *c);
    c->vocab = 128256;
    c->rope_theta = 500000.0;
    c->rms_eps = 1e-5f;
    c->bos_id = 128000;
    c->eos_id = 128001;
    c->rope_factor = 32.0;
    c->rope_low_freq_factor = 1.0;
    c->rope_high_freq_factor = 4.0;
    c->rope_original_max_position = 8192;
    c->max_position = 131072;
    snprintf(c->torch_dtype, sizeof c->torch_dtype, "bfloat16");
    if (!strcmp(layout, "tiny")) {
        c->hidden = 64, c->layers = 2, c->heads = 4, c->kv_heads = 2, c->head_dim = 16, c->intermediate = 192;
        c->tie_word_embeddings = 1;
        snprintf(c->torch_dtype, sizeof c->torch_dtype, "float32");
    } else if (!strcmp(layout, "50m")) {
        c->hidden = 384, c->layers = 4, c->heads = 6, c->kv_heads = 2, c->head_dim = 64, c->intermediate = 1024;
        c->tie_word_embeddings = 1;
        snprintf(c->torch_dtype, sizeof c->torch_dtype, "float32");
    } else if (!strcmp(layout, "1b")) {
        c->hidden = 2048, c->layers = 16, c->heads = 32, c->kv_heads = 8, c->head_dim = 64, c->intermediate = 8192;
        c->tie_word_embeddings = 1;
    } else if (!strcmp(layout, "8b")) {
        c->hidden = 4096, c->layers = 32, c->heads = 32, c->kv_heads = 8, c->head_dim = 128, c->intermediate = 14336;
        c->tie_word_embeddings = 0;
        c->rope_factor = 1.0; /* Llama-3-8B: no scaling (3.1 has factor 8) */
        c->max_position = 8192;
    } else {
        return tf_fail(err, "unknown layout \"%s\" (tiny, 50m, 1b or 8b)", layout);
    }
    return 0;
}

/* ---- the text tensors of a checkpoint ------------------------------------------ */

const char *const LLAMA_LAYER_TENSORS[LLAMA_LAYER_COUNT] = {
    "input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};

void llama_layer_shape(const LlamaConfig *c, int slot, int64_t shape[2], LlamaTensorKind *kind)
{
    const int64_t D = c->hidden, Q = (int64_t)c->heads * c->head_dim, KV = (int64_t)c->kv_heads * c->head_dim,
                  I = c->intermediate;
    static const LlamaTensorKind kinds[LLAMA_LAYER_COUNT] = {LLAMA_T_NORM, LLAMA_T_ATTN, LLAMA_T_ATTN,
                                                             LLAMA_T_ATTN, LLAMA_T_ATTN, LLAMA_T_NORM,
                                                             LLAMA_T_MLP,  LLAMA_T_MLP,  LLAMA_T_MLP};
    const int64_t rows[LLAMA_LAYER_COUNT] = {D, Q, KV, KV, D, D, I, I, D};
    const int64_t cols[LLAMA_LAYER_COUNT] = {0, D, D, D, Q, 0, D, D, I};
    shape[0] = rows[slot];
    shape[1] = cols[slot];
    if (kind)
        *kind = kinds[slot];
}

size_t llama_text_tensors(const LlamaConfig *c, LlamaTensorSpec *out, size_t cap)
{
    size_t n = 0;
    const int64_t D = c->hidden, V = c->vocab;
    /* one entry: name, kind, shape (r0) or (r0, r1) */
#define ADD(k, r0, r1, ...)                                                                                        \
    do {                                                                                                           \
        if (n < cap) {                                                                                             \
            snprintf(out[n].name, sizeof out[n].name, __VA_ARGS__);                                                \
            out[n].kind = (k);                                                                                     \
            out[n].ndim = (r1) ? 2 : 1;                                                                            \
            out[n].shape[0] = (r0);                                                                                \
            out[n].shape[1] = (r1);                                                                                \
            out[n].numel = (size_t)(r0) * (size_t)((r1) ? (r1) : 1);                                               \
        }                                                                                                          \
        n++;                                                                                                       \
    } while (0)
    ADD(LLAMA_T_EMBED, V, D, "model.embed_tokens.weight");
    for (int l = 0; l < c->layers; l++)
        for (int s = 0; s < LLAMA_LAYER_COUNT; s++) {
            int64_t sh[2];
            LlamaTensorKind kind;
            llama_layer_shape(c, s, sh, &kind);
            ADD(kind, sh[0], sh[1], "model.layers.%d.%s.weight", l, LLAMA_LAYER_TENSORS[s]);
        }
    ADD(LLAMA_T_NORM, D, 0, "model.norm.weight");
    if (!c->tie_word_embeddings)
        ADD(LLAMA_T_HEAD, V, D, "lm_head.weight");
#undef ADD
    return n;
}

size_t llama_param_count(const LlamaConfig *c)
{
    size_t n = llama_text_tensors(c, NULL, 0);
    LlamaTensorSpec *t = calloc(n, sizeof *t);
    if (!t)
        return 0;
    llama_text_tensors(c, t, n);
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += t[i].numel;
    free(t);
    return total;
}

/* ---- llama init --------------------------------------------------------------------- */

static int write_json(const char *dir, const char *name, json_t *j, TfError *err)
{
    char path[4096];
    int rc = -1;
    if (!j)
        tf_fail(err, "out of memory");
    else if (tf_path_join(path, sizeof path, dir, name) != 0)
        tf_fail(err, "%s: path too long", dir);
    else
        rc = tf_json_write_file_atomic(path, j, err);
    json_decref(j);
    return rc;
}

/* Writes shard `idx` of `count` (or model.safetensors when count is 1) from
 * writer w; records its tensors' file in weight_map. */
static int flush_shard(TfSafetensorsWriter *w, const char *dir, int idx, int count, char *file, size_t cap,
                       TfError *err)
{
    char path[4096];
    if (count == 1)
        snprintf(file, cap, "model.safetensors");
    else
        snprintf(file, cap, "model-%05d-of-%05d.safetensors", idx + 1, count);
    if (tf_path_join(path, sizeof path, dir, file) != 0)
        return tf_fail(err, "%s: path too long", dir);
    return tf_safetensors_writer_write(w, path, err);
}

int llama_init_checkpoint(TfKernels *k, const LlamaInitOptions *opt, const char *dir, TfError *err)
{
    LlamaConfig c;
    if (llama_config_layout(opt->layout, &c, err) != 0)
        return -1;
    if (opt->untied)
        c.tie_word_embeddings = 0;
    int tiny = !strcmp(opt->layout, "tiny") || !strcmp(opt->layout, "50m"); /* small: weights and f32 by default */
    int weights = opt->weights < 0 ? tiny : opt->weights;
    TfDtype dt = opt->dtype == TF_DTYPE_COUNT ? (tiny ? TF_DTYPE_F32 : TF_DTYPE_BF16) : opt->dtype;
    if (dt != TF_DTYPE_F32 && dt != TF_DTYPE_BF16 && dt != TF_DTYPE_F16)
        return tf_fail(err, "llama init: dtype %s is not f32, f16 or bf16", tf_dtype_name(dt));
    snprintf(c.torch_dtype, sizeof c.torch_dtype, "%s",
             dt == TF_DTYPE_F32 ? "float32" : dt == TF_DTYPE_BF16 ? "bfloat16" : "float16");
    uint64_t shard_bytes = opt->shard_bytes ? opt->shard_bytes : 5000000000ull;
    const float std = opt->std > 0 ? (float)opt->std : 0.02f;

    int rc = -1;
    LlamaTensorSpec *t = NULL;
    float *dev = NULL, *host = NULL;
    TfSafetensorsWriter *w = NULL;
    json_t *map = NULL, *index = NULL;
    size_t n = llama_text_tensors(&c, NULL, 0);
    if (tf_mkdir_p(dir, err) != 0)
        return -1;
    if (write_json(dir, "config.json", llama_config_to_json(&c), err) != 0 ||
        write_json(dir, "generation_config.json",
                   json_pack("{s:i,s:b,s:i,s:f,s:f,s:s}", "bos_token_id", c.bos_id, "do_sample", 1, "eos_token_id",
                             c.eos_id, "temperature", 0.6, "top_p", 0.9, "transformers_version", "4.45.0"),
                   err) != 0)
        return -1;
    if (!weights)
        return 0;

    if (!(t = calloc(n, sizeof *t))) {
        tf_fail(err, "out of memory");
        goto out;
    }
    llama_text_tensors(&c, t, n);
    /* Shard plan: tensors in order, a new shard when the next would pass
     * shard_bytes (a tensor larger than a shard gets one of its own). */
    int *shard_of = calloc(n, sizeof *shard_of);
    size_t maxnumel = 0;
    int nshards = 1;
    uint64_t acc = 0;
    for (size_t i = 0; i < n && shard_of; i++) {
        uint64_t b = (uint64_t)t[i].numel * tf_dtype_size(dt);
        if (acc > 0 && acc + b > shard_bytes) {
            nshards++;
            acc = 0;
        }
        acc += b;
        shard_of[i] = nshards - 1;
        if (t[i].numel > maxnumel)
            maxnumel = t[i].numel;
    }
    if (!shard_of || !(dev = tf_kernels_alloc(k, maxnumel, err)) || !(host = malloc(maxnumel * sizeof *host)) ||
        !(map = json_object())) {
        if (!shard_of || !host || !map)
            tf_fail(err, "out of memory");
        free(shard_of);
        goto out;
    }
    uint64_t total_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        if (!w) {
            if (!(w = tf_safetensors_writer_new())) {
                tf_fail(err, "out of memory");
                break;
            }
            tf_safetensors_writer_set_metadata(w, "format", "pt", NULL);
        }
        int r = t[i].kind == LLAMA_T_NORM ? tf_fill(k, dev, 1.0f, t[i].numel, err)
                                          : tf_randn(k, dev, t[i].numel, opt->seed, (uint64_t)i, 0, 0.0f, std, err);
        if (r != 0 || tf_kernels_download(k, host, dev, t[i].numel, err) != 0 ||
            tf_safetensors_writer_add_f32(w, t[i].name, dt, t[i].ndim, t[i].shape, host, t[i].numel, err) != 0)
            break;
        total_bytes += (uint64_t)t[i].numel * tf_dtype_size(dt);
        if (i + 1 == n || shard_of[i + 1] != shard_of[i]) {
            char file[64];
            if (flush_shard(w, dir, shard_of[i], nshards, file, sizeof file, err) != 0)
                break;
            for (size_t j = 0; j <= i; j++)
                if (shard_of[j] == shard_of[i])
                    json_object_set_new(map, t[j].name, json_string(file));
            tf_safetensors_writer_free(w);
            w = NULL;
        }
        if (i + 1 == n)
            rc = 0;
    }
    free(shard_of);
    if (rc != 0)
        goto out;
    if (nshards > 1) {
        rc = -1;
        index = json_pack("{s:{s:I},s:O}", "metadata", "total_size", (json_int_t)total_bytes, "weight_map", map);
        if (write_json(dir, "model.safetensors.index.json", index, err) != 0) {
            index = NULL;
            goto out;
        }
        index = NULL;
        rc = 0;
    }
out:
    json_decref(index);
    json_decref(map);
    tf_safetensors_writer_free(w);
    tf_kernels_release(k, dev);
    free(host);
    free(t);
    return rc;
}
