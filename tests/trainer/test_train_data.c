/* test_train_data: records to batches (trainer/data.c) on datasets written
 * here: every document's layout and targets read back from the batches
 * against the records (caption first / image first / dropped, BOS not
 * repeated, truncation, padding as its own document, the pending document
 * carried to the next row and batch), the mask through fusion_batch_check,
 * x_t against (mean - shift) * scale and eps for f32, bf16 and f16
 * latents (with and without log-variance), the 80/20 order and the 10%
 * dropout over many samples, timesteps (t <= 500 image first),
 * determinism and resume from the state JSON (equal batches), epochs, and
 * refusal of another tokenizer and latent shape naming both.
 *
 *   test_train_data check LLAMA_DIR WORKDIR
 *   test_train_data make DIR N [--latent C,H,W] [--dtype f32|bf16|f16] [--logvar]
 *                   [--tokenizer-id ID] [--vae-id ID] [--shard-records R]
 *     (writes a dataset for the trainer's command-line tests) */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "test.h"
#include "train_internal.h"

#define SCALE 0.18215
#define SHIFT 0.125
#define BOS 128000
#define EOS 128001

/* Record i's caption: 2..41 tokens (some with a leading BOS; record 7 mod
 * 50 is long, 300 tokens, to be cut). */
static int rec_tokens(uint32_t i, uint32_t *tok)
{
    int n = (i % 50 == 7) ? 300 : 2 + (int)((i * 2654435761u >> 7) % 40);
    for (int j = 0; j < n; j++)
        tok[j] = (uint32_t)((i * 131u + (uint32_t)j * 17u) % 127000u);
    if (i % 3 == 0)
        tok[0] = BOS;
    return n;
}

/* Latent value k of record i: exact in bf16 and f16. */
static float rec_mean(uint32_t i, size_t k)
{
    return (float)((int)((i * 7u + (uint32_t)k * 3u) % 33u) - 16) / 8.0f;
}

typedef struct MakeOpts {
    uint32_t c, h, w;
    int dtype; /* Transfuse__V1__DType */
    int logvar;
    const char *tokenizer_id;
    uint64_t shard_records;
    const char *vae_id;
} MakeOpts;

static void put_value(uint8_t *p, int dtype, size_t k, float v)
{
    uint16_t h;
    switch (dtype) {
    case TRANSFUSE__V1__DTYPE__DTYPE_F32: memcpy(p + 4 * k, &v, 4); break;
    case TRANSFUSE__V1__DTYPE__DTYPE_F16: h = tf_f32_to_f16(v); memcpy(p + 2 * k, &h, 2); break;
    default: h = tf_f32_to_bf16(v); memcpy(p + 2 * k, &h, 2); break;
    }
}

/* Empties a (flat) dataset folder left by an earlier run. */
static void clear_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    closedir(d);
}

static int make_dataset(const char *dir, uint32_t n, const MakeOpts *mo)
{
    clear_dir(dir);
    ShardFacts facts;
    memset(&facts, 0, sizeof facts);
    snprintf(facts.tokenizer_id, sizeof facts.tokenizer_id, "%s", mo->tokenizer_id ? mo->tokenizer_id : "tok-test");
    snprintf(facts.vae_id, sizeof facts.vae_id, "%s", mo->vae_id ? mo->vae_id : "vae-test");
    facts.latent_scaling = SCALE;
    facts.latent_shift = SHIFT;
    snprintf(facts.latent_dtype, sizeof facts.latent_dtype, "%s", sample_dtype_name(mo->dtype));
    facts.latent_rank = 3;
    facts.latent_shape[0] = mo->c, facts.latent_shape[1] = mo->h, facts.latent_shape[2] = mo->w;
    TfError err = {{0}};
    ShardWriterOptions wo = {.max_shard_records = mo->shard_records ? mo->shard_records : 7, .no_fsync = 1};
    ShardWriter *w = shard_writer_open(dir, &wo, &facts, &err);
    if (!w) {
        fprintf(stderr, "make: %s\n", err.msg);
        return -1;
    }
    const size_t numel = (size_t)mo->c * mo->h * mo->w, es = sample_dtype_size(mo->dtype);
    uint8_t *mean = malloc(numel * es), *lv = malloc(numel * es);
    uint32_t tok[300], shape[3] = {mo->c, mo->h, mo->w};
    int rc = 0;
    for (uint32_t i = 0; i < n && !rc; i++) {
        for (size_t k = 0; k < numel; k++) {
            put_value(mean, mo->dtype, k, rec_mean(i, k));
            put_value(lv, mo->dtype, k, -30.0f);
        }
        char key[32];
        snprintf(key, sizeof key, "rec-%06u", i);
        Transfuse__V1__Tensor tm = TRANSFUSE__V1__TENSOR__INIT, tl = TRANSFUSE__V1__TENSOR__INIT;
        tm.dtype = tl.dtype = mo->dtype;
        tm.n_shape = tl.n_shape = 3;
        tm.shape = tl.shape = shape;
        tm.data.len = tl.data.len = numel * es;
        tm.data.data = mean;
        tl.data.data = lv;
        Sample s = TRANSFUSE__V1__SAMPLE__INIT;
        s.key = key;
        s.caption = "a caption";
        s.n_tokens = (size_t)rec_tokens(i, tok);
        s.tokens = tok;
        s.latent_mean = &tm;
        if (mo->logvar)
            s.latent_logvar = &tl;
        rc = shard_writer_append_sample(w, &s, &err);
    }
    free(mean);
    free(lv);
    if (rc || shard_writer_close(w, &err)) {
        fprintf(stderr, "make: %s\n", err.msg);
        return -1;
    }
    return 0;
}

/* ---- reading batches back ---------------------------------------------------------------- */

typedef struct Seen {
    uint64_t docs, image_first, dropped, caption_first, truncated, pads, carried;
    uint32_t next_record; /* the record the next document must come from */
    uint32_t n_records;
    double sum_t_first, n_t_first;
    double max_t_image_first;
    double max_xt_err;
    double eps_sum, eps_sq, eps_n;
} Seen;

static void verify_batch(FusionModel *m, const FusionBatch *b, Seen *s, int P, size_t numel, const double *ab,
                         int check_xt)
{
    TfError err = {{0}};
    CHECKF(fusion_batch_check(m, b, &err) == 0, "%s", err.msg);
    int img = 0;
    for (int r = 0; r < b->B; r++) {
        const int32_t *tok = b->tokens + (size_t)r * b->T, *tg = b->targets + (size_t)r * b->T,
                      *lo = b->lo + (size_t)r * b->T;
        const uint8_t *mod = b->modality + (size_t)r * b->T;
        int a = 0;
        while (a < b->T) {
            int end = a;
            while (end < b->T && lo[end] == a)
                end++;
            CHECKF(end > a, "row %d position %d: lo %d is not a document start", r, a, lo[a]);
            if (end == a)
                return;
            if (tok[a] != BOS) { /* padding: text to the end of the row, no targets */
                CHECK(end == b->T);
                for (int i = a; i < end; i++)
                    CHECK(mod[i] == FUSION_TEXT && tg[i] == -1);
                s->pads++;
                a = end;
                continue;
            }
            /* BOS [caption] BOI P EOI [caption] EOS */
            int boi = a + 1;
            while (boi < end && tok[boi] != 128002)
                boi++;
            REQUIRE(boi + P + 1 < end);
            for (int p = 0; p < P; p++)
                CHECK(mod[boi + 1 + p] == FUSION_IMAGE);
            CHECK(tok[boi + P + 1] == 128003 && tok[end - 1] == EOS);
            int n_before = boi - a - 1, n_after = end - 1 - (boi + P + 2);
            CHECK(n_before == 0 || n_after == 0);
            uint32_t want[300];
            const uint32_t ri = s->next_record % s->n_records;
            int nw = rec_tokens(ri, want), first = (want[0] == BOS);
            const int32_t *cap = n_before ? &tok[a + 1] : &tok[boi + P + 2];
            int nc = n_before ? n_before : n_after;
            if (nc == 0)
                s->dropped++;
            else {
                CHECKF(nc <= nw - first, "record %u: %d caption tokens of %d", ri, nc, nw - first);
                if (nc < nw - first) {
                    s->truncated++;
                    CHECK(end - a == b->T);
                }
                for (int j = 0; j < nc && j < nw - first; j++)
                    CHECKF(cap[j] == (int32_t)want[first + j], "record %u token %d", ri, j);
            }
            if (n_before || nc == 0)
                s->caption_first++;
            else
                s->image_first++;
            /* targets: the next token where the next position is text and not BOI */
            for (int i = a; i < end; i++) {
                int ok = i + 1 < end && mod[i] == FUSION_TEXT && mod[i + 1] == FUSION_TEXT && tok[i + 1] != 128002;
                CHECKF(tg[i] == (ok ? tok[i + 1] : -1), "row %d position %d target %d", r, i, tg[i]);
            }
            /* the image slot and its latent */
            REQUIRE(img < b->n_images);
            CHECK(b->images[img].row == r && b->images[img].start == boi + 1);
            const float t = b->timestep[img];
            CHECK(t == floorf(t) && t >= 0 && t < 1000);
            if (nc > 0 && !n_before) {
                CHECK(t <= 500);
                if (t > s->max_t_image_first)
                    s->max_t_image_first = t;
            } else
                s->sum_t_first += t, s->n_t_first++;
            const double sa = sqrt(ab[(int)t]), ss = sqrt(1 - ab[(int)t]);
            for (size_t k = 0; k < numel; k++) {
                const double e = b->eps[(size_t)img * numel + k];
                s->eps_sum += e, s->eps_sq += e * e, s->eps_n++;
                if (check_xt) {
                    const double z = ((double)rec_mean(ri, k) - SHIFT) * SCALE;
                    const double d = fabs(b->x_t[(size_t)img * numel + k] - (sa * z + ss * e));
                    if (d > s->max_xt_err)
                        s->max_xt_err = d;
                }
            }
            img++;
            s->docs++;
            s->next_record++;
            a = end;
        }
    }
    CHECK(img == b->n_images);
}

static uint64_t batch_hash(const FusionBatch *b)
{
    uint64_t h = 1469598103934665603ull;
#define MIX(p, n)                                                      \
    for (size_t q = 0; q < (n); q++)                                   \
        h = (h ^ ((const uint8_t *)(p))[q]) * 1099511628211ull;
    const size_t N = (size_t)b->B * b->T, L = (size_t)b->n_images * b->latent_numel;
    MIX(b->tokens, N * 4);
    MIX(b->modality, N);
    MIX(b->lo, N * 4);
    MIX(b->hi, N * 4);
    MIX(b->targets, N * 4);
    MIX(&b->n_images, sizeof b->n_images);
    MIX(b->images, (size_t)b->n_images * sizeof *b->images);
    MIX(b->timestep, (size_t)b->n_images * 4);
    MIX(b->x_t, L * 4);
    MIX(b->eps, L * 4);
#undef MIX
    return h;
}

static TrainData *open_data(TfKernels *k, FusionModel *m, const char *path, int B, int T, uint64_t seed,
                            const json_t *state, const ShardFacts *expect, TfError *err)
{
    TrainDataOptions o;
    train_data_options_default(&o);
    o.path = path, o.B = B, o.T = T, o.seed = seed, o.state = state, o.expect = expect;
    return train_data_open(k, fusion_config(m), fusion_llama_config(m), &o, err);
}

/* Many samples of one dataset: layout, targets, latents, ratios. */
static void check_stream(TfKernels *k, FusionModel *m, const char *path, uint32_t n_records, int nbatches, int check_xt,
                         Seen *s)
{
    TfError err = {{0}};
    const FusionConfig *fc = fusion_config(m);
    const size_t numel = (size_t)fc->latent_c * fc->latent_h * fc->latent_w;
    double ab[TRAIN_DDPM_STEPS];
    train_ddpm_alpha_bars(ab, TRAIN_DDPM_STEPS);
    TrainData *d = open_data(k, m, path, 3, 96, 11, NULL, NULL, &err);
    REQUIRE(d);
    FusionBatch *b = train_data_batch_new(d, &err);
    REQUIRE(b);
    memset(s, 0, sizeof *s);
    s->n_records = n_records;
    for (int i = 0; i < nbatches; i++) {
        int rc = train_data_next(d, b, &err);
        CHECKF(rc == TRAIN_DATA_BATCH, "batch %d: %d %s", i, rc, err.msg);
        if (rc != TRAIN_DATA_BATCH)
            break;
        verify_batch(m, b, s, fusion_config_patches(fc), numel, ab, check_xt);
    }
    TrainDataStats st;
    train_data_stats(d, &st);
    CHECKF(st.samples == s->docs && st.image_first == s->image_first && st.dropped == s->dropped,
           "stats %llu %llu %llu, read back %llu %llu %llu", (unsigned long long)st.samples,
           (unsigned long long)st.image_first, (unsigned long long)st.dropped, (unsigned long long)s->docs,
           (unsigned long long)s->image_first, (unsigned long long)s->dropped);
    CHECK(st.epoch == (long)(s->docs / n_records) || st.epoch == (long)(s->docs / n_records) + 1);
    fusion_batch_free(b);
    train_data_free(d);
}

static void check_resume(TfKernels *k, FusionModel *m, const char *path)
{
    enum { NB = 24, CUT = 7 };
    TfError err = {{0}};
    uint64_t h[NB];
    TrainData *d = open_data(k, m, path, 2, 80, 5, NULL, NULL, &err);
    REQUIRE(d);
    FusionBatch *b = train_data_batch_new(d, &err);
    for (int i = 0; i < NB; i++) {
        REQUIRE(train_data_next(d, b, &err) == TRAIN_DATA_BATCH);
        h[i] = batch_hash(b);
    }
    train_data_free(d);
    /* same seed again: the same batches */
    d = open_data(k, m, path, 2, 80, 5, NULL, NULL, &err);
    REQUIRE(d);
    char *state = NULL;
    int carried = 0;
    for (int i = 0; i < NB; i++) {
        REQUIRE(train_data_next(d, b, &err) == TRAIN_DATA_BATCH);
        CHECKF(batch_hash(b) == h[i], "batch %d differs in a second run", i);
        if (i == CUT - 1) {
            json_t *j = train_data_state_json(d);
            REQUIRE(j);
            state = json_dumps(j, JSON_COMPACT);
            json_decref(j);
        }
    }
    train_data_free(d);
    /* resumed from the state after CUT batches (through its text form) */
    json_t *j = json_loads(state, 0, NULL);
    REQUIRE(j);
    d = open_data(k, m, path, 2, 80, 5, j, NULL, &err);
    CHECKF(d, "resume: %s", err.msg);
    if (d) {
        for (int i = CUT; i < NB; i++) {
            REQUIRE(train_data_next(d, b, &err) == TRAIN_DATA_BATCH);
            CHECKF(batch_hash(b) == h[i], "resumed batch %d differs", i);
        }
        json_t *st = train_data_state_json(d);
        carried = json_integer_value(json_object_get(st, "epoch")) > 0;
        json_decref(st);
        train_data_free(d);
    }
    CHECKF(carried, "the resumed stream crossed no epoch boundary (test too short)");
    json_decref(j);
    free(state);
    /* another seed: other batches */
    d = open_data(k, m, path, 2, 80, 6, NULL, NULL, &err);
    REQUIRE(d && train_data_next(d, b, &err) == TRAIN_DATA_BATCH);
    CHECK(batch_hash(b) != h[0]);
    train_data_free(d);
    fusion_batch_free(b);
}

static void check_refusals(TfKernels *k, FusionModel *m, const char *work)
{
    TfError err = {{0}};
    char path[4096];
    snprintf(path, sizeof path, "%s/ds_shape", work);
    MakeOpts mo = {4, 8, 8, TRANSFUSE__V1__DTYPE__DTYPE_F32, 0, NULL, 0, NULL};
    REQUIRE(make_dataset(path, 5, &mo) == 0);
    TrainData *d = open_data(k, m, path, 1, 96, 1, NULL, NULL, &err);
    CHECK(!d);
    CHECKF(strstr(err.msg, "4x4x4") && strstr(err.msg, "4x8x8"), "shape refusal: %s", err.msg);
    train_data_free(d);
    snprintf(path, sizeof path, "%s/ds_f32", work);
    ShardFacts want;
    memset(&want, 0, sizeof want);
    snprintf(want.tokenizer_id, sizeof want.tokenizer_id, "tok-other");
    err.msg[0] = 0;
    d = open_data(k, m, path, 1, 96, 1, NULL, &want, &err);
    CHECK(!d);
    CHECKF(strstr(err.msg, "tok-other") && strstr(err.msg, "tok-test"), "tokenizer refusal: %s", err.msg);
    train_data_free(d);
    /* the same identity is accepted */
    snprintf(want.tokenizer_id, sizeof want.tokenizer_id, "tok-test");
    d = open_data(k, m, path, 1, 96, 1, NULL, &want, &err);
    CHECKF(d, "%s", err.msg);
    train_data_free(d);
    /* a sequence too short for one image */
    d = open_data(k, m, path, 1, 6, 1, NULL, NULL, &err);
    CHECK(!d && strstr(err.msg, "cannot hold one image"));
    train_data_free(d);
    /* the end of the data without looping */
    TrainDataOptions o;
    train_data_options_default(&o);
    o.path = path, o.B = 2, o.T = 96, o.no_loop = 1;
    d = train_data_open(k, fusion_config(m), fusion_llama_config(m), &o, &err);
    REQUIRE(d);
    FusionBatch *b = train_data_batch_new(d, &err);
    int batches = 0, rc;
    while ((rc = train_data_next(d, b, &err)) == TRAIN_DATA_BATCH)
        batches++;
    CHECKF(rc == TRAIN_DATA_END && batches > 1, "rc %d after %d batches: %s", rc, batches, err.msg);
    TrainDataStats st;
    train_data_stats(d, &st);
    CHECKF(st.samples == 61, "%llu samples of 61 records", (unsigned long long)st.samples);
    fusion_batch_free(b);
    train_data_free(d);
}

static int check(const char *llama, const char *work)
{
    TfError err = {{0}};
    TfKernels *k = tf_kernels_new(TF_BACKEND_CPU, 1, &err);
    REQUIRE(k);
    /* the table equals the per-call product */
    double ab[TRAIN_DDPM_STEPS];
    train_ddpm_alpha_bars(ab, TRAIN_DDPM_STEPS);
    for (int t = 0; t < TRAIN_DDPM_STEPS; t++)
        CHECK(ab[t] == train_ddpm_alpha_bar(t, TRAIN_DDPM_STEPS));
    FusionConfig fc;
    fusion_config_default(&fc);
    fc.adapter = FUSION_ADAPTER_LINEAR;
    fc.latent_c = 4, fc.latent_h = 4, fc.latent_w = 4;
    FusionModel *m = fusion_model_new(k, llama, &fc, &err);
    if (!m)
        fprintf(stderr, "%s\n", err.msg);
    REQUIRE(m);
    REQUIRE(fusion_llama_config(m)->bos_id == BOS && fusion_llama_config(m)->eos_id == EOS);
    char path[4096];
    const int dtypes[3] = {TRANSFUSE__V1__DTYPE__DTYPE_F32, TRANSFUSE__V1__DTYPE__DTYPE_BF16,
                           TRANSFUSE__V1__DTYPE__DTYPE_F16};
    const char *names[3] = {"f32", "bf16", "f16"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/ds_%s", work, names[i]);
        MakeOpts mo = {4, 4, 4, dtypes[i], i > 0, NULL, 0, NULL};
        REQUIRE(make_dataset(path, 61, &mo) == 0);
        Seen s;
        check_stream(k, m, path, 61, i == 0 ? 400 : 30, 1, &s);
        CHECKF(s.max_xt_err < 1e-5, "%s: x_t off by %g", names[i], s.max_xt_err);
        CHECK(s.pads > 0 && s.truncated > 0);
        fprintf(stderr, "%s: %llu documents (%llu image first, %llu dropped, %llu cut), %llu pads, x_t within %.2g\n",
                names[i], (unsigned long long)s.docs, (unsigned long long)s.image_first,
                (unsigned long long)s.dropped, (unsigned long long)s.truncated, (unsigned long long)s.pads,
                s.max_xt_err);
        if (i == 0) {
            /* 80/20 and 10% dropout of the caption-first ones; the binomial
             * standard deviations at these counts are under 0.01 */
            const double f = (double)s.image_first / (double)s.docs;
            const double dr = (double)s.dropped / (double)s.caption_first;
            CHECKF(s.docs > 2000, "%llu documents", (unsigned long long)s.docs);
            CHECKF(fabs(f - 0.2) < 0.03, "image first %.4f of %llu", f, (unsigned long long)s.docs);
            CHECKF(fabs(dr - 0.1) < 0.03, "dropped %.4f of %llu", dr, (unsigned long long)s.caption_first);
            CHECKF(s.max_t_image_first > 450, "largest image-first t %g", s.max_t_image_first);
            const double mt = s.sum_t_first / s.n_t_first;
            CHECKF(fabs(mt - 499.5) < 25, "mean caption-first t %g", mt);
            const double em = s.eps_sum / s.eps_n, ev = s.eps_sq / s.eps_n - em * em;
            CHECKF(fabs(em) < 0.02 && fabs(ev - 1) < 0.03, "eps mean %g var %g", em, ev);
        }
    }
    snprintf(path, sizeof path, "%s/ds_f32", work);
    check_resume(k, m, path);
    check_refusals(k, m, work);
    fusion_model_free(m);
    tf_kernels_free(k);
    return test_main_end("test_train_data");
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "check"))
        return check(argv[2], argv[3]);
    if (argc >= 4 && !strcmp(argv[1], "make")) {
        MakeOpts mo = {4, 8, 8, TRANSFUSE__V1__DTYPE__DTYPE_F32, 0, NULL, 0, NULL};
        for (int i = 4; i < argc; i++) {
            if (!strcmp(argv[i], "--latent") && i + 1 < argc)
                sscanf(argv[++i], "%u,%u,%u", &mo.c, &mo.h, &mo.w);
            else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
                i++;
                mo.dtype = !strcmp(argv[i], "bf16")  ? TRANSFUSE__V1__DTYPE__DTYPE_BF16
                           : !strcmp(argv[i], "f16") ? TRANSFUSE__V1__DTYPE__DTYPE_F16
                                                     : TRANSFUSE__V1__DTYPE__DTYPE_F32;
            } else if (!strcmp(argv[i], "--logvar"))
                mo.logvar = 1;
            else if (!strcmp(argv[i], "--tokenizer-id") && i + 1 < argc)
                mo.tokenizer_id = argv[++i];
            else if (!strcmp(argv[i], "--vae-id") && i + 1 < argc)
                mo.vae_id = argv[++i];
            else if (!strcmp(argv[i], "--shard-records") && i + 1 < argc)
                mo.shard_records = (uint64_t)atol(argv[++i]);
            else {
                fprintf(stderr, "make: unknown argument %s\n", argv[i]);
                return 2;
            }
        }
        return make_dataset(argv[2], (uint32_t)atol(argv[3]), &mo) ? 1 : 0;
    }
    fprintf(stderr, "usage: test_train_data check LLAMA_DIR WORKDIR | make DIR N [options]\n");
    return 2;
}
