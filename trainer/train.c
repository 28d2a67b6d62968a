/* train.c: `transfuse train`: the training loop of LlamaFusion over the
 * record source. Options come from defaults, the resumed checkpoint's
 * config, --config FILE and the command line (in that order); each step
 * accumulates --accum micro-batches (trainer/data.c) through
 * fusion_forward_backward, then one AdamW update (optim.c); a JSON line per
 * step to --log, a held-out loss every --val-every steps, checkpoints
 * (checkpoint.c) every --checkpoint-every steps, at a stop request and at
 * the end. docs/TRAINER.md "transfuse train". */
#include <getopt.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "preprocess.h"
#include "train_internal.h"

#define TAG "train"
#define VAL_SEED_MIX 0x76616c5f73656564ull /* "val_seed": the held-out batch's draws */

/* ---- the run's config: one table for flags, --config files and checkpoints ---- */

typedef struct RunConfig {
    char llama[1024], data[1024], val[1024], tokenizer[1024], vae[1024], adapter[16], latent[48], kafka_group[256];
    long batch, seq, accum, steps, warmup, val_every, checkpoint_every, keep_last, keep_every, patch;
    double lr_image, lr_text, lr_floor, weight_decay, clip, caption_dropout, latent_scale, latent_shift;
    long seed;
} RunConfig;

enum { K_STR, K_LONG, K_DBL };

typedef struct ConfigKey {
    const char *name;
    int kind;
    size_t off, size;
    double min, max;
    const char *help;
} ConfigKey;

#define S(f) K_STR, offsetof(RunConfig, f), sizeof(((RunConfig *)0)->f), 0, 0
#define L(f, lo, hi) K_LONG, offsetof(RunConfig, f), 0, lo, hi
#define D(f, lo, hi) K_DBL, offsetof(RunConfig, f), 0, lo, hi

static const ConfigKey KEYS[] = {
    {"llama", S(llama), "Llama checkpoint folder (Hugging Face layout; required)"},
    {"data", S(data), "dataset folder, shard file or kafka://HOST:PORT/TOPIC (required)"},
    {"steps", L(steps, 1, 1e12), "optimizer steps (default 1000; the cosine reaches the floor here)"},
    {"batch", L(batch, 1, 1 << 20), "rows per micro-batch (default 1)"},
    {"seq", L(seq, 8, 1 << 24), "positions per row, T (default 1024)"},
    {"accum", L(accum, 1, 1 << 20), "micro-batches per step, gradient accumulation (default 1)"},
    {"lr-image", D(lr_image, 0, 1e30), "peak learning rate of the image weights (default 1e-4)"},
    {"lr-text", D(lr_text, 0, 1e30), "peak learning rate of the text weights (default 0: frozen)"},
    {"warmup", L(warmup, 0, 1e12), "linear warmup steps (default 4000)"},
    {"lr-floor", D(lr_floor, 0, 10), "learning rate at the last step, after cosine decay (default 1.5e-5)"},
    {"weight-decay", D(weight_decay, 0, 10), "AdamW weight decay, not on norms, biases, special rows (default 0.1)"},
    {"clip", D(clip, 0, 1e30), "gradient-norm clip (default 1.0; 0 = none)"},
    {"seed", L(seed, 0, 9.2e18), "seed of the adapters' initialisation and of every data draw (default 0)"},
    {"adapter", S(adapter), "unet (default) or linear"},
    {"patch", L(patch, 1, 64), "latent pixels per position side (default 2)"},
    {"latent", S(latent), "latent shape C,H,W (default: the dataset's manifest; 4,32,32 for a topic)"},
    {"latent-scale", D(latent_scale, 0, 1e30), "VAE scaling factor for data that records none (a topic; --vae gives it)"},
    {"latent-shift", D(latent_shift, -1e30, 1e30), "VAE shift factor with --latent-scale (default 0)"},
    {"kafka-group", S(kafka_group), "topics: consumer group the position is committed under (default trainer)"},
    {"caption-dropout", D(caption_dropout, 0, 1), "fraction of caption-first samples without caption (default 0.1)"},
    {"tokenizer", S(tokenizer), "refuse data not tokenized by this tokenizer.json / tokenizer.model"},
    {"vae", S(vae), "refuse data not encoded by this VAE folder"},
    {"val", S(val), "held-out dataset folder: its first batch, fixed draws, evaluated every --val-every steps"},
    {"val-every", L(val_every, 0, 1e12), "steps between held-out evaluations, also at 0 and the last (default 100)"},
    {"checkpoint-every", L(checkpoint_every, 0, 1e12), "steps between checkpoints (default 1000; 0: end and stop only)"},
    {"keep-last", L(keep_last, 1, 1e9), "checkpoints kept, newest first (default 3)"},
    {"keep-every", L(keep_every, 0, 1e12), "also keep checkpoints of steps that are multiples of N (default 0: none)"},
};
#define NKEYS (sizeof KEYS / sizeof KEYS[0])

static void config_default(RunConfig *c)
{
    *c = (RunConfig){.batch = 1, .seq = 1024, .accum = 1, .steps = 1000, .warmup = 4000, .checkpoint_every = 1000,
                     .keep_last = 3, .patch = 2, .lr_image = 1e-4, .lr_floor = 1.5e-5, .weight_decay = 0.1,
                     .clip = 1.0, .caption_dropout = 0.1};
    snprintf(c->adapter, sizeof c->adapter, "unet");
    snprintf(c->kafka_group, sizeof c->kafka_group, "trainer");
}

static const ConfigKey *config_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(KEYS[i].name, name))
            return &KEYS[i];
    return NULL;
}

/* Sets one key from its text. Returns 0, or -1 with err naming the flag. */
static int config_set(RunConfig *c, const ConfigKey *k, const char *text, TfError *err)
{
    char *p = (char *)c + k->off, *end;
    if (k->kind == K_STR) {
        if (strlen(text) >= k->size)
            return tf_fail(err, "--%s: \"%.60s...\" is too long", k->name, text);
        memcpy(p, text, strlen(text) + 1);
        return 0;
    }
    if (k->kind == K_LONG) {
        long v;
        if (tf_parse_long(k->name, text, (long)k->min, (long)k->max, &v, err) != 0)
            return tf_fail(err, "--%s: \"%s\" is not an integer in [%.0f, %.0f]", k->name, text, k->min, k->max);
        memcpy(p, &v, sizeof v);
        return 0;
    }
    double v = strtod(text, &end);
    if (!*text || *end || !(v >= k->min && v <= k->max))
        return tf_fail(err, "--%s: \"%s\" is not a number in [%g, %g]", k->name, text, k->min, k->max);
    memcpy(p, &v, sizeof v);
    return 0;
}

/* Applies a JSON object of keys (a --config file or a checkpoint's config). */
static int config_apply_json(RunConfig *c, const json_t *j, const char *label, TfError *err)
{
    if (!json_is_object(j))
        return tf_fail(err, "%s: a JSON object of option names expected", label);
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)j, name, v)
    {
        const ConfigKey *k = config_key(name);
        char text[1100];
        if (!k)
            return tf_fail(err, "%s: unknown option \"%s\"", label, name);
        if (json_is_string(v))
            snprintf(text, sizeof text, "%s", json_string_value(v));
        else if (json_is_integer(v))
            snprintf(text, sizeof text, "%lld", (long long)json_integer_value(v));
        else if (json_is_real(v))
            snprintf(text, sizeof text, "%.17g", json_real_value(v));
        else
            return tf_fail(err, "%s: \"%s\" must be a string or a number", label, name);
        if (config_set(c, k, text, err) != 0)
            return tf_fail_context(err, "%s", label);
    }
    return 0;
}

static json_t *config_json(const RunConfig *c)
{
    json_t *j = json_object();
    for (size_t i = 0; j && i < NKEYS; i++) {
        const char *p = (const char *)c + KEYS[i].off;
        json_t *v;
        if (KEYS[i].kind == K_STR)
            v = json_string(p);
        else if (KEYS[i].kind == K_LONG) {
            long x;
            memcpy(&x, p, sizeof x);
            v = json_integer(x);
        } else {
            double x;
            memcpy(&x, p, sizeof x);
            v = json_real(x);
        }
        json_object_set_new(j, KEYS[i].name, v);
    }
    return j;
}

/* ---- helpers ------------------------------------------------------------------ */

/* A number for the log: null for NaN and infinities (JSON has neither). */
static json_t *num(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

static int parse_latent(const char *text, int out[3], TfError *err)
{
    char tail;
    if (sscanf(text, "%d,%d,%d%c", &out[0], &out[1], &out[2], &tail) != 3 || out[0] < 1 || out[1] < 1 || out[2] < 1)
        return tf_fail(err, "--latent: \"%s\" is not C,H,W", text);
    return 0;
}

static void facts_from_json(const json_t *j, ShardFacts *f)
{
    memset(f, 0, sizeof *f);
    const char *s;
    if ((s = json_string_value(json_object_get(j, "tokenizer_id"))))
        snprintf(f->tokenizer_id, sizeof f->tokenizer_id, "%s", s);
    if ((s = json_string_value(json_object_get(j, "vae_id"))))
        snprintf(f->vae_id, sizeof f->vae_id, "%s", s);
    f->latent_scaling = json_number_value(json_object_get(j, "latent_scaling"));
    f->latent_shift = json_number_value(json_object_get(j, "latent_shift"));
}

static json_t *facts_json(const ShardFacts *f)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:f, s:f, s:s}", "tokenizer_id", f->tokenizer_id, "tokenizer_name",
                     f->tokenizer_name, "vae_id", f->vae_id, "vae_name", f->vae_name, "latent_scaling",
                     f->latent_scaling, "latent_shift", f->latent_shift, "latent_dtype", f->latent_dtype);
}

/* The latent shape (--latent, else the dataset's manifest, else 4,32,32)
 * written into c->latent, and the checks of the shapes that need no
 * work: the adapter's name, the patch dividing the latent, a sequence
 * that holds one image. Returns 0, or -1 with err filled (a usage error). */
static int resolve_shape(RunConfig *c, TfError *err)
{
    int latent[3] = {4, 32, 32};
    FusionAdapter ad;
    if (fusion_adapter_parse(c->adapter, &ad, err) != 0)
        return -1;
    if (c->latent[0]) {
        if (parse_latent(c->latent, latent, err) != 0)
            return -1;
    } else if (!kafka_url_is(c->data)) {
        ShardManifest *man = shard_manifest_load(c->data, NULL);
        if (man && man->facts.latent_rank == 3)
            for (int i = 0; i < 3; i++)
                latent[i] = (int)man->facts.latent_shape[i];
        shard_manifest_free(man);
    }
    snprintf(c->latent, sizeof c->latent, "%d,%d,%d", latent[0], latent[1], latent[2]);
    if (latent[1] % c->patch || latent[2] % c->patch || (ad == FUSION_ADAPTER_UNET && c->patch != 1 && c->patch != 2 &&
                                                        c->patch != 4))
        return tf_fail(err, "--patch %ld does not divide the latent %dx%dx%d%s", c->patch, latent[0], latent[1],
                       latent[2], ad == FUSION_ADAPTER_UNET ? " (the U-Net takes 1, 2 or 4)" : "");
    const long P = (long)(latent[1] / c->patch) * (latent[2] / c->patch);
    if (c->seq < P + 4)
        return tf_fail(err, "--seq %ld cannot hold one image: %ld positions with BOS, BOI, EOI and EOS (latent %s, "
                            "patch %ld)",
                       c->seq, P + 4, c->latent, c->patch);
    return 0;
}

/* Keeps the lines of a --log file up to step `last` (a resumed run
 * rewrites what follows), atomically. */
static int log_truncate(const char *path, long last, TfError *err)
{
    size_t len;
    char *text = tf_read_file(path, (size_t)1 << 34, &len, NULL);
    if (!text)
        return 0; /* no log yet */
    char *out = malloc(len + 1);
    size_t n = 0;
    if (!out) {
        free(text);
        return tf_fail(err, "out of memory");
    }
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        if (!nl)
            break; /* a line cut by a kill */
        *nl = 0;
        json_t *j = json_loads(line, 0, NULL);
        json_t *st = json_object_get(j, "step");
        if (json_is_integer(st) && json_integer_value(st) <= last) {
            memcpy(out + n, line, (size_t)(nl - line));
            n += (size_t)(nl - line);
            out[n++] = '\n';
        }
        json_decref(j);
        line = nl + 1;
    }
    int rc = tf_write_file_atomic(path, out, n, err);
    free(out);
    free(text);
    return rc;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: transfuse train --llama DIR --data PATH|kafka://HOST:PORT/TOPIC --out DIR [--steps N]\n"
                 "                       [--config FILE] [--resume] [options]\n\n"
                 "Trains LlamaFusion (frozen Llama text path, image copy of every layer, image adapters) with\n"
                 "the Transfusion objective L = L_LM + 5 L_diffusion on records of the dataset or topic.\n"
                 "Options are taken from the defaults, then the resumed checkpoint's config.json, then\n"
                 "--config FILE (a JSON object of the option names below), then the command line.\n\n");
    for (size_t i = 0; i < NKEYS; i++) {
        char flag[48];
        snprintf(flag, sizeof flag, "--%s %s", KEYS[i].name, KEYS[i].kind == K_STR ? "S" : KEYS[i].kind == K_LONG ? "N" : "X");
        fprintf(out, "  %-22s %s\n", flag, KEYS[i].help);
    }
    fprintf(out, "\n  --out DIR              checkpoints: DIR/step-NNNNNNNN/ (required)\n"
                 "  --resume               continue from the newest complete checkpoint in --out (bit-exactly);\n"
                 "                         without one, start fresh\n"
                 "  --config FILE          options as JSON ({\"batch\": 4, \"lr-image\": 1e-4, ...})\n"
                 "  --log FILE             one JSON object per step: step, loss_lm, loss_diffusion, loss,\n"
                 "                         grad_norm, lr, tokens_per_s, samples_per_s, data_position, ...;\n"
                 "                         val_loss_diffusion, val_loss_lm at held-out steps (NaN/inf: null)\n"
                 "  --threads N            CPU threads (default and 0: all CPUs)\n"
                 "  --device D             cpu (default) or cuda\n"
                 "  --metrics-port N       serve Prometheus metrics on http://ADDR:N/metrics (default 0: off)\n"
                 "  --metrics-addr ADDR    address of the metrics endpoint (default 127.0.0.1)\n"
                 "  --register DIR         register the metrics endpoint in DIR for `transfuse top --discover`\n\n"
                 "A folder's data starts over at its end (epochs); a topic that ends ends the run with a\n"
                 "checkpoint. Ctrl-C or SIGTERM stops at the end of the step with a checkpoint.\n\n"
                 "Exit status: 0 done, 2 bad command line or config (nothing done), 3 could not run\n"
                 "(missing input, refused data, I/O), 130 stopped (checkpoint written; --resume continues).\n");
}

/* ---- the run ------------------------------------------------------------------- */

typedef struct Run {
    RunConfig c;
    const char *out, *log_path;
    int resume, threads;
    TfBackend backend;
    TfKernels *k;
    FusionModel *m;
    TrainOptim o;
    int have_optim;
    TrainParam *params;
    size_t n_params;
    TrainData *data;
    FusionBatch *batch, *val_batch;
    FILE *log;
    json_t *config, *data_state, *facts;
    TfGauge *g_step, *g_planned, *g_lm, *g_diff, *g_norm, *g_lr, *g_pos;
    TfCounter *c_tokens, *c_samples;
    int tty;
    int facts_pending; /* a topic's facts come with its first record */
    ShardFacts expect;
} Run;

/* The facts the checkpoint records: the data's, completed by the configured ones. */
static int update_facts(Run *r)
{
    ShardFacts f = *train_data_facts(r->data);
    if (r->expect.tokenizer_id[0] && !f.tokenizer_id[0])
        snprintf(f.tokenizer_id, sizeof f.tokenizer_id, "%s", r->expect.tokenizer_id);
    if (r->expect.vae_id[0] && !f.vae_id[0])
        snprintf(f.vae_id, sizeof f.vae_id, "%s", r->expect.vae_id);
    json_decref(r->facts);
    return (r->facts = facts_json(&f)) ? 0 : -1;
}

static json_t *run_state(const Run *r, long step)
{
    return json_pack("{s:s, s:I, s:O, s:O, s:{s:s, s:I}}", "format", "transfuse-train-state", "step", (json_int_t)step,
                     "data", r->data_state, "facts", r->facts, "rng", "kind", "philox4x32-10 by (seed, rank, ordinal)",
                     "seed", (json_int_t)r->c.seed);
}

static int checkpoint(Run *r, long step, TfError *err)
{
    json_t *state = run_state(r, step);
    if (!state)
        return tf_fail(err, "out of memory");
    int rc = train_checkpoint_write(r->out, step, r->m, &r->o, state, r->config, err);
    json_decref(state);
    if (rc == 0 && train_checkpoint_prune(r->out, (int)r->c.keep_last, r->c.keep_every, err) != 0)
        rc = -1;
    if (rc == 0)
        tf_log(TF_LOG_INFO, TAG, "checkpoint step %ld in %s", step, r->out);
    return rc;
}

static int log_val(Run *r, long step, json_t *line, TfError *err)
{
    FusionLosses l;
    if (fusion_forward(r->m, r->val_batch, &l, err) != 0)
        return -1;
    json_object_set_new(line, "val_loss_diffusion", num(l.diffusion));
    json_object_set_new(line, "val_loss_lm", num(l.lm));
    json_object_set_new(line, "val_loss", num(l.total));
    tf_log(TF_LOG_INFO, TAG, "step %ld held-out: diffusion %.6f, LM %.6f", step, l.diffusion, l.lm);
    return 0;
}

static void write_line(Run *r, json_t *line)
{
    if (!r->log)
        return;
    char *s = json_dumps(line, JSON_COMPACT | JSON_REAL_PRECISION(17));
    if (s) {
        fprintf(r->log, "%s\n", s);
        fflush(r->log);
        free(s);
    }
}

/* Opens everything: kernels, model, optimizer (resumed), data, val batch, log. */
static int run_open(Run *r, long *step0, TfError *err)
{
    LlamaConfig lc;
    FusionConfig fc;
    int latent[3] = {4, 32, 32};
    json_t *state = NULL;
    int rc = -1;
    if (!(r->k = tf_kernels_new(r->backend, r->threads, err)))
        return -1;
    if (llama_config_load(r->c.llama, &lc, err) != 0)
        return -1;
    if (parse_latent(r->c.latent, latent, err) != 0) /* resolved by resolve_shape */
        return -1;
    fusion_config_default(&fc);
    if (fusion_adapter_parse(r->c.adapter, &fc.adapter, err) != 0)
        return -1;
    fc.latent_c = latent[0], fc.latent_h = latent[1], fc.latent_w = latent[2];
    fc.patch = (int)r->c.patch;
    fc.seed = (uint64_t)r->c.seed;
    fc.train_text = r->c.lr_text != 0;
    if (fc.train_text)
        tf_log(TF_LOG_WARN, TAG,
               "--lr-text %g: the text path is no longer frozen (train_text): its weights train, text logits "
               "change, and `eval text` on these checkpoints says so",
               r->c.lr_text);
    if (!(r->m = fusion_model_new(r->k, r->c.llama, &fc, err)))
        return -1;
    if (train_optim_init(&r->o, r->k, fusion_param_count(r->m), err) != 0)
        return -1;
    r->have_optim = 1;
    r->o.weight_decay = r->c.weight_decay;
    r->o.clip = r->c.clip;
    r->o.image = (TrainSchedule){r->c.lr_image, r->c.lr_floor, r->c.warmup, r->c.steps};
    r->o.text = (TrainSchedule){r->c.lr_text, r->c.lr_text < r->c.lr_floor ? r->c.lr_text : r->c.lr_floor,
                                r->c.warmup, r->c.steps};
    if (!(r->params = train_params_of(r->m, &r->n_params, err)))
        return -1;

    /* the configured identity; a resumed run also the facts it trained on */
    ShardFacts expect;
    memset(&expect, 0, sizeof expect);
    *step0 = 0;
    const json_t *data_state = NULL;
    if (r->resume) {
        char dir[4096];
        long latest = train_checkpoint_latest(r->out, err);
        train_checkpoint_path(r->out, latest, dir, sizeof dir);
        if (train_checkpoint_read(dir, r->m, &r->o, &state, err) != 0)
            goto done;
        *step0 = r->o.step;
        data_state = json_object_get(state, "data");
        facts_from_json(json_object_get(state, "facts"), &expect);
        tf_log(TF_LOG_INFO, TAG, "resuming from %s (step %ld)", dir, *step0);
    }
    if (r->c.tokenizer[0]) {
        Tokenizer *tok = tokenizer_load(r->c.tokenizer, err);
        if (!tok)
            goto done;
        snprintf(expect.tokenizer_id, sizeof expect.tokenizer_id, "%s", tokenizer_identity(tok));
        tokenizer_free(tok);
    }
    if (r->c.vae[0]) {
        Vae *vae = vae_load(r->c.vae, VAE_LOAD_ENCODER, err);
        if (!vae)
            goto done;
        snprintf(expect.vae_id, sizeof expect.vae_id, "%s", vae_identity(vae));
        if (r->c.latent_scale == 0 && kafka_url_is(r->c.data)) { /* a folder's manifest has its own */
            r->c.latent_scale = vae_config(vae)->scaling_factor;
            r->c.latent_shift = vae_config(vae)->shift_factor;
        }
        vae_free(vae);
    }
    if (!(r->config = config_json(&r->c)))
        goto oom;
    TrainDataOptions dopt;
    train_data_options_default(&dopt);
    dopt.path = r->c.data;
    dopt.B = (int)r->c.batch, dopt.T = (int)r->c.seq;
    dopt.seed = (uint64_t)r->c.seed;
    dopt.caption_dropout = r->c.caption_dropout;
    dopt.expect = &expect;
    dopt.state = data_state;
    dopt.stop = tf_cli_stop_flag();
    dopt.latent_scale = r->c.latent_scale;
    dopt.latent_shift = r->c.latent_shift;
    /* a topic: a stream (waits for records), the position committed under
     * the group for lag and flow control; the checkpoint's position is
     * what a resume uses. A fresh run starts at the group's committed
     * offsets, else the beginning (Kafka's way). */
    KafkaSourceOptions ko = {.group_id = r->c.kafka_group, .until = KAFKA_UNTIL_FOREVER};
    dopt.kafka = &ko;
    if (!(r->data = train_data_open(r->k, &fc, &lc, &dopt, err)))
        goto done;
    if (!(r->batch = train_data_batch_new(r->data, err)))
        goto done;
    if (r->c.val[0]) {
        TrainDataOptions vopt = dopt;
        vopt.path = r->c.val;
        vopt.seed = (uint64_t)r->c.seed ^ VAL_SEED_MIX;
        vopt.caption_dropout = 0;
        vopt.no_loop = 1;
        vopt.state = NULL;
        TrainData *vd = train_data_open(r->k, &fc, &lc, &vopt, err);
        if (!vd) {
            tf_fail_context(err, "--val %s", r->c.val);
            goto done;
        }
        int got = -1;
        if ((r->val_batch = train_data_batch_new(vd, err)))
            got = train_data_next(vd, r->val_batch, err);
        train_data_free(vd);
        if (got != TRAIN_DATA_BATCH) {
            if (got >= 0)
                tf_fail(err, "--val %s: no records", r->c.val);
            goto done;
        }
    }
    if (!(r->data_state = data_state ? json_deep_copy(data_state) : train_data_state_json(r->data)))
        goto oom;
    r->expect = expect;
    if (!(r->facts = state ? json_deep_copy(json_object_get(state, "facts")) : NULL)) {
        /* the data's facts: a folder's now, a topic's after its first record */
        if (update_facts(r) != 0)
            goto oom;
        r->facts_pending = kafka_url_is(r->c.data);
    }
    if (r->log_path) {
        if (r->resume ? log_truncate(r->log_path, *step0, err) != 0 : 0)
            goto done;
        if (!(r->log = fopen(r->log_path, r->resume ? "a" : "w"))) {
            tf_fail(err, "--log %s: cannot open", r->log_path);
            goto done;
        }
    }
    rc = 0;
    goto done;
oom:
    tf_fail(err, "out of memory");
done:
    json_decref(state);
    return rc;
}

static void run_close(Run *r)
{
    if (r->log)
        fclose(r->log);
    json_decref(r->config);
    json_decref(r->data_state);
    json_decref(r->facts);
    fusion_batch_free(r->batch);
    fusion_batch_free(r->val_batch);
    train_data_free(r->data);
    free(r->params);
    if (r->have_optim)
        train_optim_deinit(&r->o);
    fusion_model_free(r->m);
    tf_kernels_free(r->k);
}

static void metrics_init(Run *r)
{
    r->g_step = tf_gauge("transfuse_train_step", "Optimizer steps done", "rank", "0", NULL);
    r->g_planned = tf_gauge("transfuse_train_steps_planned", "Optimizer steps of the run", "rank", "0", NULL);
    r->g_lm = tf_gauge("transfuse_train_loss_lm", "LM loss of the last step", "rank", "0", NULL);
    r->g_diff = tf_gauge("transfuse_train_loss_diffusion", "Diffusion loss of the last step", "rank", "0", NULL);
    r->g_norm = tf_gauge("transfuse_train_grad_norm", "Global gradient norm before clipping", "rank", "0", NULL);
    r->g_lr = tf_gauge("transfuse_train_lr", "Learning rate of the image weights", "rank", "0", NULL);
    r->g_pos = tf_gauge("transfuse_train_data_position", "Samples drawn from the data", "rank", "0", NULL);
    r->c_tokens = tf_counter("transfuse_train_tokens_total", "Positions trained on (padding excluded)", "rank", "0",
                             NULL);
    r->c_samples = tf_counter("transfuse_train_samples_total", "Samples trained on", "rank", "0", NULL);
    tf_gauge_set(r->g_planned, (double)r->c.steps);
}

/* The loop. Returns a TF_EXIT_* status. */
static int run_loop(Run *r, long step, TfError *err)
{
    const TfStopFlag *stop = tf_cli_stop_flag();
    TrainDataStats st0, st1;
    tf_gauge_set(r->g_step, (double)step);
    if (r->val_batch && step == 0 && r->c.val_every > 0) {
        json_t *line = json_pack("{s:I}", "step", (json_int_t)0);
        if (!line || log_val(r, 0, line, err) != 0) {
            json_decref(line);
            return TF_EXIT_FAIL;
        }
        write_line(r, line);
        json_decref(line);
    }
    long last_saved = r->resume ? step : -1;
    int status = TF_EXIT_OK;
    while (step < r->c.steps) {
        if (tf_stop_requested(stop)) {
            status = TF_EXIT_STOPPED;
            break;
        }
        const double t0 = tf_now();
        train_data_stats(r->data, &st0);
        double lm = 0, diff = 0, total = 0;
        int got = 0, ended = 0;
        if (fusion_zero_grad(r->m, err) != 0)
            return TF_EXIT_FAIL;
        for (long a = 0; a < r->c.accum; a++) {
            int rc = train_data_next(r->data, r->batch, err);
            if (rc < 0)
                return TF_EXIT_FAIL;
            if (rc != TRAIN_DATA_BATCH) {
                ended = rc;
                break;
            }
            FusionLosses l;
            if (fusion_forward_backward(r->m, r->batch, 1.0f / (float)r->c.accum, &l, err) != 0)
                return TF_EXIT_FAIL;
            lm += l.lm / (double)r->c.accum;
            diff += l.diffusion / (double)r->c.accum;
            total += l.total / (double)r->c.accum;
            got++;
        }
        if (ended) {
            /* the data ended or a stop came while waiting for a topic: this
             * step is not taken; the checkpoint holds the last whole step */
            if (ended == TRAIN_DATA_STOPPED)
                status = TF_EXIT_STOPPED;
            else
                tf_log(TF_LOG_INFO, TAG, "the data ended after step %ld", step);
            break;
        }
        double norm = 0, lr = 0;
        if (train_optim_step(&r->o, r->params, r->n_params, fusion_grads(r->m), &norm, &lr, err) != 0)
            return TF_EXIT_FAIL;
        step = r->o.step;
        if (r->facts_pending) {
            if (update_facts(r) != 0)
                return tf_fail(err, "out of memory"), TF_EXIT_FAIL;
            r->facts_pending = 0;
        }
        json_decref(r->data_state);
        if (!(r->data_state = train_data_state_json(r->data)))
            return tf_fail(err, "out of memory"), TF_EXIT_FAIL;
        train_data_stats(r->data, &st1);
        const double dt = tf_now() - t0;
        const double tokens = (double)(st1.positions - st0.positions), samples = (double)(st1.samples - st0.samples);
        json_t *line = json_pack("{s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:I, s:I, s:O}", "step",
                                 (json_int_t)step, "loss_lm", num(lm), "loss_diffusion", num(diff), "loss", num(total),
                                 "grad_norm", num(norm), "lr", num(lr), "tokens_per_s", num(tokens / dt),
                                 "samples_per_s", num(samples / dt), "tokens", (json_int_t)tokens, "samples",
                                 (json_int_t)samples, "epoch", (json_int_t)st1.epoch, "data_position",
                                 json_object_get(r->data_state, "position"));
        if (!line)
            return tf_fail(err, "out of memory"), TF_EXIT_FAIL;
        if (r->o.text.peak != 0)
            json_object_set_new(line, "lr_text", num(train_lr_at(&r->o.text, step)));
        if (r->val_batch && r->c.val_every > 0 && (step % r->c.val_every == 0 || step == r->c.steps) && log_val(r, step, line, err) != 0) {
            json_decref(line);
            return TF_EXIT_FAIL;
        }
        write_line(r, line);
        json_decref(line);
        tf_gauge_set(r->g_step, (double)step);
        tf_gauge_set(r->g_lm, lm);
        tf_gauge_set(r->g_diff, diff);
        tf_gauge_set(r->g_norm, norm);
        tf_gauge_set(r->g_lr, lr);
        tf_gauge_set(r->g_pos, (double)json_integer_value(json_object_get(r->data_state, "samples")));
        tf_counter_add(r->c_tokens, (uint64_t)tokens);
        tf_counter_add(r->c_samples, (uint64_t)samples);
        if (r->tty)
            fprintf(stderr, "\r\033[Kstep %ld/%ld  loss %.4f (LM %.4f, diffusion %.4f)  grad %.3g  lr %.3g  %.0f tok/s",
                    step, r->c.steps, total, lm, diff, norm, lr, tokens / dt);
        else
            tf_log(TF_LOG_INFO, TAG, "step %ld/%ld loss %.6f LM %.6f diffusion %.6f grad %.4g lr %.4g %.0f tok/s", step,
                   r->c.steps, total, lm, diff, norm, lr, tokens / dt);
        if (r->c.checkpoint_every > 0 && step % r->c.checkpoint_every == 0 && step < r->c.steps) {
            if (r->tty)
                fputc('\n', stderr);
            if (checkpoint(r, step, err) != 0)
                return TF_EXIT_FAIL;
            last_saved = step;
        }
    }
    if (r->tty)
        fputc('\n', stderr);
    if (last_saved != step && checkpoint(r, step, err) != 0)
        return TF_EXIT_FAIL;
    if (status == TF_EXIT_STOPPED)
        tf_log(TF_LOG_INFO, TAG, "stopped at step %ld; --resume continues", step);
    return status;
}

int train_main(int argc, char **argv)
{
    enum { O_OUT = 1000, O_RESUME, O_CONFIG, O_LOG, O_THREADS, O_DEVICE, O_MPORT, O_MADDR, O_REGISTER, O_KEY };
    struct option longopts[NKEYS + 11];
    size_t nl = 0;
    for (size_t i = 0; i < NKEYS; i++)
        longopts[nl++] = (struct option){KEYS[i].name, required_argument, 0, O_KEY + (int)i};
    longopts[nl++] = (struct option){"out", required_argument, 0, O_OUT};
    longopts[nl++] = (struct option){"resume", no_argument, 0, O_RESUME};
    longopts[nl++] = (struct option){"config", required_argument, 0, O_CONFIG};
    longopts[nl++] = (struct option){"log", required_argument, 0, O_LOG};
    longopts[nl++] = (struct option){"threads", required_argument, 0, O_THREADS};
    longopts[nl++] = (struct option){"device", required_argument, 0, O_DEVICE};
    longopts[nl++] = (struct option){"metrics-port", required_argument, 0, O_MPORT};
    longopts[nl++] = (struct option){"metrics-addr", required_argument, 0, O_MADDR};
    longopts[nl++] = (struct option){"register", required_argument, 0, O_REGISTER};
    longopts[nl++] = (struct option){"help", no_argument, 0, 'h'};
    longopts[nl] = (struct option){0, 0, 0, 0};

    TfError err = {{0}};
    Run r;
    memset(&r, 0, sizeof r);
    r.backend = TF_BACKEND_CPU;
    const char *config_file = NULL, *metrics_addr = NULL, *register_dir = NULL;
    long metrics_port = 0;
    /* the command line's option keys, applied after the base config */
    int *set_key = calloc((size_t)argc + 1, sizeof *set_key);
    const char **set_val = calloc((size_t)argc + 1, sizeof *set_val);
    int nset = 0, status = TF_EXIT_USAGE;
    json_t *ck = NULL;
    TfMetricsServer *metrics = NULL;
    if (!set_key || !set_val) {
        fprintf(stderr, "transfuse train: out of memory\n");
        free(set_key);
        free(set_val);
        return TF_EXIT_FAIL;
    }
    TfOpts op = {.prog = "transfuse train", .argc = argc, .argv = argv, .shortopts = "h", .longopts = longopts};
    int c;
    while ((c = tf_opts_next(&op)) != -1) {
        switch (c) {
        case O_OUT: r.out = op.arg; break;
        case O_RESUME: r.resume = 1; break;
        case O_CONFIG: config_file = op.arg; break;
        case O_LOG: r.log_path = op.arg; break;
        case O_THREADS:
            if (tf_parse_threads("--threads", op.arg, 4096, &r.threads, &err) != 0)
                goto usage;
            break;
        case O_DEVICE:
            if (tf_backend_parse(op.arg, &r.backend, &err) != 0)
                goto usage;
            break;
        case O_MPORT:
            if (tf_parse_long("--metrics-port", op.arg, 0, 65535, &metrics_port, &err) != 0)
                goto usage;
            break;
        case O_MADDR: metrics_addr = op.arg; break;
        case O_REGISTER: register_dir = op.arg; break;
        case 'h':
            usage(stdout);
            status = TF_EXIT_OK;
            goto done;
        default:
            if (c >= O_KEY && c < O_KEY + (int)NKEYS) {
                set_key[nset] = c - O_KEY;
                set_val[nset++] = op.arg;
                /* parse now too, so a bad value fails before any work */
                RunConfig probe;
                config_default(&probe);
                if (config_set(&probe, &KEYS[c - O_KEY], op.arg, &err) != 0)
                    goto usage;
                break;
            }
            goto done; /* tf_opts_next said what */
        }
    }
    if (op.first_operand < argc) {
        tf_fail(&err, "unexpected operand \"%s\"", argv[op.first_operand]);
        goto usage;
    }
    if (!r.out) {
        tf_fail(&err, "--out is required");
        goto usage;
    }
    /* the base: defaults, or the checkpoint resumed */
    config_default(&r.c);
    long latest = train_checkpoint_latest(r.out, &err);
    if (latest == -2) {
        fprintf(stderr, "transfuse train: %s\n", err.msg);
        status = TF_EXIT_FAIL;
        goto done;
    }
    if (latest >= 0 && !r.resume) {
        tf_fail(&err, "%s holds checkpoints (newest: step %ld): pass --resume to continue, or another --out", r.out,
                latest);
        goto usage;
    }
    if (r.resume && latest < 0) {
        tf_log(TF_LOG_INFO, TAG, "--resume: no complete checkpoint in %s, starting fresh", r.out);
        r.resume = 0;
    }
    if (r.resume) {
        char dir[4096];
        train_checkpoint_path(r.out, latest, dir, sizeof dir);
        if (!(ck = train_checkpoint_config(dir, &err)) || config_apply_json(&r.c, ck, dir, &err) != 0) {
            fprintf(stderr, "transfuse train: %s\n", err.msg);
            status = TF_EXIT_FAIL;
            goto done;
        }
    }
    if (config_file) {
        json_error_t je;
        json_t *j = json_load_file(config_file, 0, &je);
        if (!j) {
            tf_fail(&err, "--config %s: %s (line %d)", config_file, je.text, je.line);
            goto usage;
        }
        int rc = config_apply_json(&r.c, j, config_file, &err);
        json_decref(j);
        if (rc != 0)
            goto usage;
    }
    for (int i = 0; i < nset; i++)
        if (config_set(&r.c, &KEYS[set_key[i]], set_val[i], &err) != 0)
            goto usage;
    if (!r.c.llama[0] || !r.c.data[0]) {
        tf_fail(&err, "--llama and --data are required");
        goto usage;
    }
    if (resolve_shape(&r.c, &err) != 0)
        goto usage;
    if (kafka_url_is(r.c.val)) {
        tf_fail(&err, "--val takes a dataset folder or shard file (its first batch is the held-out batch), not a topic");
        goto usage;
    }
    if (r.c.val[0] && r.c.val_every == 0)
        r.c.val_every = 100;
    if (ck) {
        /* a resumed run with other options is not the run it continues */
        json_t *now = config_json(&r.c);
        const char *name;
        json_t *v;
        json_object_foreach(ck, name, v)
        {
            json_t *w = json_object_get(now, name);
            if (w && !json_equal(v, w) && strcmp(name, "steps") && strncmp(name, "val", 3) &&
                strncmp(name, "keep", 4) && strcmp(name, "checkpoint-every"))
                tf_log(TF_LOG_WARN, TAG, "--%s differs from the resumed checkpoint's: the run no longer continues "
                                         "the same one",
                       name);
        }
        json_decref(now);
    }

    r.tty = isatty(STDERR_FILENO);
    metrics = tf_metrics_cli_start_registered("train", metrics_addr, metrics_port, register_dir, &err);
    if (!metrics && err.msg[0]) {
        fprintf(stderr, "transfuse train: %s\n", err.msg);
        status = TF_EXIT_FAIL;
        goto done;
    }
    metrics_init(&r);
    long step0 = 0;
    if (run_open(&r, &step0, &err) != 0) {
        fprintf(stderr, "transfuse train: %s\n", err.msg);
        status = TF_EXIT_FAIL;
        goto close;
    }
    tf_log(TF_LOG_INFO, TAG, "%zu trainable parameters (%s adapter, latent %s, patch %ld); batch %ld x %ld, accum %ld",
           fusion_param_count(r.m), r.c.adapter, r.c.latent, r.c.patch, r.c.batch, r.c.seq, r.c.accum);
    status = run_loop(&r, step0, &err);
    if (status == TF_EXIT_FAIL)
        fprintf(stderr, "transfuse train: %s\n", err.msg);
close:
    run_close(&r);
    tf_metrics_server_free(metrics);
    goto done;
usage:
    fprintf(stderr, "transfuse train: %s\n", err.msg);
    status = TF_EXIT_USAGE;
done:
    json_decref(ck);
    free(set_key);
    free(set_val);
    return status;
}
