/* data.c: records to FusionBatch. Reads records through the record source
 * (dataset folder, shard file or Kafka topic; a rank's share by the
 * source's split), turns each into one document of caption tokens and one
 * image (caption first or image first, caption dropout), draws the
 * timestep and the noise from counter-based Philox streams keyed by the
 * seed and the sample's ordinal, samples and normalises the latent and
 * mixes the noise on the kernels, and packs documents into B rows of T
 * positions with the Transfusion mask. docs/TRAINER.md "Data". */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train_internal.h"

/* tf_randn streams (combined with the rank) and the Philox purpose word. */
enum { STREAM_POSTERIOR = 1, STREAM_EPS = 2, PHILOX_DRAWS = 0x7d };

/* One sample drawn from a record: what it contributes to a batch. */
typedef struct DataDoc {
    int32_t *caption;     /* caption ids (a leading BOS removed), after dropout/truncation */
    int n_caption;
    int image_first, dropped;
    int t;                /* timestep */
    uint64_t ordinal;     /* the sample's number in this rank's stream (the RNG counter) */
    float *mean, *logvar; /* host f32 (numel); logvar NULL when the record has none */
    int has_logvar;
    int len;              /* positions */
} DataDoc;

struct TrainData {
    TrainDataOptions o;
    FusionConfig fc;
    LlamaConfig lc;
    TfKernels *k;
    RecordSource *src;
    ShardFacts expect;
    int has_expect;
    int P;                 /* positions per image */
    size_t numel;          /* C*H*W */
    double ab[TRAIN_DDPM_STEPS];
    /* the stream state */
    long epoch;
    uint64_t samples;      /* samples placed in batches (the next sample's ordinal) */
    json_t *position;      /* the source position after the last record placed or skipped */
    int pending;           /* doc holds a sample read but not yet placed */
    DataDoc doc;
    double scale, shift;   /* the data's latent factors (scale 0: not known yet) */
    /* kernel buffers */
    float *k_mean, *k_logvar, *k_noise; /* (numel) */
    float *k_z, *k_eps, *k_xt;          /* (max_images, numel) */
    float *h_a, *h_s;                   /* (max_images) host */
    int max_images;
    TrainDataStats stats;
};

void train_data_options_default(TrainDataOptions *o)
{
    *o = (TrainDataOptions){.world = 1, .B = 1, .T = 1024, .caption_dropout = 0.1, .image_first = 0.2};
}

/* Element i of a latent tensor's bytes as f32. */
static int latent_to_f32(const Transfuse__V1__Tensor *t, float *out, size_t n, TfError *err)
{
    const uint8_t *p = t->data.data;
    const size_t sz = sample_dtype_size(t->dtype);
    if (!sz || t->data.len != n * sz)
        return tf_fail(err, "latent of %zu bytes (%s) is not %zu values", t->data.len, sample_dtype_name(t->dtype), n);
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        switch (t->dtype) {
        case TRANSFUSE__V1__DTYPE__DTYPE_F32: memcpy(&out[i], p + 4 * i, 4); break;
        case TRANSFUSE__V1__DTYPE__DTYPE_F16: memcpy(&h, p + 2 * i, 2); out[i] = tf_f16_to_f32(h); break;
        case TRANSFUSE__V1__DTYPE__DTYPE_BF16: memcpy(&h, p + 2 * i, 2); out[i] = tf_bf16_to_f32(h); break;
        default: return tf_fail(err, "latent dtype %s is not f32, f16 or bf16", sample_dtype_name(t->dtype));
        }
    }
    return 0;
}

/* The sample's draws from (seed, rank, ordinal): image first, caption
 * dropped, timestep. */
static void draw(const TrainData *d, uint64_t ordinal, DataDoc *doc)
{
    const uint32_t ctr[4] = {(uint32_t)ordinal, (uint32_t)(ordinal >> 32), (uint32_t)d->o.rank, PHILOX_DRAWS};
    const uint32_t key[2] = {(uint32_t)d->o.seed, (uint32_t)(d->o.seed >> 32)};
    uint32_t r[4];
    tf_philox4x32(ctr, key, r);
    const double u0 = ((double)r[0] + 0.5) / 4294967296.0, u1 = ((double)r[1] + 0.5) / 4294967296.0;
    doc->image_first = u0 < d->o.image_first;
    doc->dropped = !doc->image_first && u1 < d->o.caption_dropout;
    const uint64_t range = doc->image_first ? TRAIN_IMAGE_FIRST_MAX_T + 1 : TRAIN_DDPM_STEPS;
    doc->t = (int)(((uint64_t)r[2] * range) >> 32);
    doc->ordinal = ordinal;
}

/* Positions of a document: BOS, caption, BOI, P image positions, EOI, EOS
 * (BOS/EOS only when the checkpoint has them). */
static int doc_len(const TrainData *d, int n_caption)
{
    return (d->lc.bos_id >= 0) + n_caption + 2 + d->P + (d->lc.eos_id >= 0);
}

/* Fills d->doc from a record. Returns 1 (a document), 0 (record skipped,
 * counted, d->stats.last_problem says why), or -1 with err filled (the
 * latent shape differs from the configured one: refused). */
static int doc_from_record(TrainData *d, const Record *rec, TfError *err)
{
    const Sample *s = rec->sample;
    DataDoc *doc = &d->doc;
    if (!s->latent_mean) {
        snprintf(d->stats.last_problem, sizeof d->stats.last_problem, "%s record %llu: no latent", rec->shard,
                 (unsigned long long)rec->record);
        d->stats.skipped++;
        return 0;
    }
    const Transfuse__V1__Tensor *mt = s->latent_mean;
    if (mt->n_shape != 3 || (int)mt->shape[0] != d->fc.latent_c || (int)mt->shape[1] != d->fc.latent_h ||
        (int)mt->shape[2] != d->fc.latent_w) {
        char have[64] = "";
        for (size_t i = 0; i < mt->n_shape && strlen(have) < 40; i++)
            snprintf(have + strlen(have), sizeof have - strlen(have), "%s%u", i ? "x" : "", mt->shape[i]);
        return tf_fail(err, "%.200s record %llu: latent shape %s differs from the configured %dx%dx%d", rec->shard,
                       (unsigned long long)rec->record, have, d->fc.latent_c, d->fc.latent_h, d->fc.latent_w);
    }
    size_t n = s->n_tokens, first = 0;
    if (n > 0 && d->lc.bos_id >= 0 && (int64_t)s->tokens[0] == d->lc.bos_id)
        first = 1;
    for (size_t i = first; i < n; i++)
        if (s->tokens[i] >= (uint32_t)d->lc.vocab) {
            snprintf(d->stats.last_problem, sizeof d->stats.last_problem,
                     "%.200s record %llu: token %u outside the vocabulary %d", rec->shard,
                     (unsigned long long)rec->record, s->tokens[i], d->lc.vocab);
            d->stats.skipped++;
            return 0;
        }
    if (latent_to_f32(mt, doc->mean, d->numel, err) != 0)
        return tf_fail_context(err, "%.200s record %llu", rec->shard, (unsigned long long)rec->record);
    doc->has_logvar = s->latent_logvar && s->latent_logvar->data.len > 0;
    if (doc->has_logvar && latent_to_f32(s->latent_logvar, doc->logvar, d->numel, err) != 0)
        return tf_fail_context(err, "%.200s record %llu: log-variance", rec->shard, (unsigned long long)rec->record);
    draw(d, d->samples, doc);
    size_t nc = doc->dropped ? 0 : n - first;
    /* truncate the caption so the document fits one row */
    const int room = d->o.T - doc_len(d, 0);
    if (nc > (size_t)room) {
        nc = (size_t)room;
        d->stats.truncated++;
    }
    for (size_t i = 0; i < nc; i++)
        doc->caption[i] = (int32_t)s->tokens[first + i];
    doc->n_caption = (int)nc;
    doc->len = doc_len(d, doc->n_caption);
    return 1;
}

/* (Re)opens the source at `position` (NULL: the start). */
static int source_open(TrainData *d, const json_t *position, TfError *err)
{
    record_source_free(d->src);
    RecordSourceOptions so = {.path = d->o.path,
                              .rank = d->o.rank,
                              .world_size = d->o.world,
                              .split = RECORD_SPLIT_BLOCKS,
                              .position = position,
                              .expect = d->has_expect ? &d->expect : NULL,
                              .decode = 1,
                              .check = 1,
                              .stop = d->o.stop,
                              .kafka = d->o.kafka};
    d->src = record_source_open(&so, err);
    if (!d->src)
        return -1;
    json_decref(d->position);
    d->position = record_source_position_json(d->src);
    return d->position ? 0 : tf_fail(err, "out of memory");
}

TrainData *train_data_open(TfKernels *k, const FusionConfig *fc, const LlamaConfig *lc, const TrainDataOptions *o,
                           TfError *err)
{
    TrainData *d = calloc(1, sizeof *d);
    if (!d) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    d->o = *o;
    d->fc = *fc;
    d->lc = *lc;
    d->k = k;
    d->P = fusion_config_patches(fc);
    d->numel = (size_t)fc->latent_c * fc->latent_h * fc->latent_w;
    train_ddpm_alpha_bars(d->ab, TRAIN_DDPM_STEPS);
    if (o->B < 1 || o->T < 1 || o->world < 1 || o->rank < 0 || o->rank >= o->world) {
        tf_fail(err, "data: batch %d x %d, rank %d of %d", o->B, o->T, o->rank, o->world);
        goto fail;
    }
    if (doc_len(d, 0) > o->T) {
        tf_fail(err, "a sequence of %d positions cannot hold one image (%d positions with BOI, EOI, BOS and EOS)",
                o->T, doc_len(d, 0));
        goto fail;
    }
    if (!(o->caption_dropout >= 0 && o->caption_dropout <= 1) || !(o->image_first >= 0 && o->image_first <= 1)) {
        tf_fail(err, "data: caption dropout %g and image-first fraction %g must be in [0, 1]", o->caption_dropout,
                o->image_first);
        goto fail;
    }
    /* identity: the configured facts plus the configured latent shape */
    if (o->expect)
        d->expect = *o->expect;
    d->expect.latent_rank = 3;
    d->expect.latent_shape[0] = (uint32_t)fc->latent_c;
    d->expect.latent_shape[1] = (uint32_t)fc->latent_h;
    d->expect.latent_shape[2] = (uint32_t)fc->latent_w;
    d->has_expect = 1;
    d->max_images = o->B * (o->T / doc_len(d, 0));
    d->doc.caption = malloc((size_t)o->T * sizeof(int32_t));
    d->doc.mean = malloc(d->numel * sizeof(float));
    d->doc.logvar = malloc(d->numel * sizeof(float));
    d->h_a = malloc((size_t)d->max_images * sizeof(float));
    d->h_s = malloc((size_t)d->max_images * sizeof(float));
    if (!d->doc.caption || !d->doc.mean || !d->doc.logvar || !d->h_a || !d->h_s) {
        tf_fail(err, "out of memory");
        goto fail;
    }
    const size_t L = (size_t)d->max_images * d->numel;
    if (!(d->k_mean = tf_kernels_alloc(k, d->numel, err)) || !(d->k_logvar = tf_kernels_alloc(k, d->numel, err)) ||
        !(d->k_noise = tf_kernels_alloc(k, d->numel, err)) || !(d->k_z = tf_kernels_alloc(k, L, err)) ||
        !(d->k_eps = tf_kernels_alloc(k, L, err)) || !(d->k_xt = tf_kernels_alloc(k, L, err)))
        goto fail;
    const json_t *position = NULL;
    if (o->state) {
        json_t *e = json_object_get(o->state, "epoch"), *n = json_object_get(o->state, "samples");
        position = json_object_get(o->state, "position");
        if (!json_is_integer(e) || !json_is_integer(n) || !json_is_object(position)) {
            tf_fail(err, "data state: epoch, samples and position expected");
            goto fail;
        }
        d->epoch = (long)json_integer_value(e);
        d->samples = (uint64_t)json_integer_value(n);
    }
    if (source_open(d, position, err) != 0)
        goto fail;
    d->stats.epoch = d->epoch;
    return d;
fail:
    train_data_free(d);
    return NULL;
}

void train_data_free(TrainData *d)
{
    if (!d)
        return;
    record_source_free(d->src);
    json_decref(d->position);
    free(d->doc.caption);
    free(d->doc.mean);
    free(d->doc.logvar);
    free(d->h_a);
    free(d->h_s);
    tf_kernels_release(d->k, d->k_mean);
    tf_kernels_release(d->k, d->k_logvar);
    tf_kernels_release(d->k, d->k_noise);
    tf_kernels_release(d->k, d->k_z);
    tf_kernels_release(d->k, d->k_eps);
    tf_kernels_release(d->k, d->k_xt);
    free(d);
}

int train_data_max_images(const TrainData *d)
{
    return d->max_images;
}

FusionBatch *train_data_batch_new(const TrainData *d, TfError *err)
{
    FusionBatch *b = fusion_batch_new(d->o.B, d->o.T, d->max_images, d->numel);
    if (!b)
        tf_fail(err, "out of memory for a batch of %d x %d", d->o.B, d->o.T);
    return b;
}

/* Reads the next usable record into d->doc (pending). Returns 1, 0 at the
 * end of the data (after the last epoch), TRAIN_DATA_STOPPED, or -1. */
static int read_doc(TrainData *d, TfError *err)
{
    long empty_epochs = 0;
    for (;;) {
        Record rec;
        ShardProblem prob;
        int rc = record_source_next(d->src, &rec, 200, &prob, err);
        if (rc < 0)
            return -1;
        if (rc == RECORD_SOURCE_IDLE) {
            if (tf_stop_requested(d->o.stop))
                return TRAIN_DATA_STOPPED;
            continue;
        }
        if (rc == RECORD_SOURCE_PROBLEM) {
            shard_problem_format(&prob, d->stats.last_problem, sizeof d->stats.last_problem);
            d->stats.skipped++;
        } else if (rc == RECORD_SOURCE_END) {
            if (d->o.no_loop || record_source_is_kafka(d->src) || ++empty_epochs > 1)
                return 0; /* a folder with no usable record does not loop */
            if (source_open(d, NULL, err) != 0)
                return -1;
            d->stats.epoch = ++d->epoch;
            continue;
        } else {
            d->stats.records++;
            int got = doc_from_record(d, &rec, err);
            if (got < 0)
                return -1;
            if (got) {
                d->pending = 1;
                return 1;
            }
        }
        /* skipped: the position moves past it */
        json_decref(d->position);
        if (!(d->position = record_source_position_json(d->src)))
            return tf_fail(err, "out of memory");
    }
}

/* Places d->doc at position `at` of row `row`: tokens, modality, lo,
 * targets, the image slot, and the latent sampled into slot k of k_z. */
static int place_doc(TrainData *d, FusionBatch *b, int row, int at, TfError *err)
{
    DataDoc *doc = &d->doc;
    const int T = b->T, P = d->P, kimg = b->n_images;
    int32_t *tok = b->tokens + (size_t)row * T;
    uint8_t *mod = b->modality + (size_t)row * T;
    int i = at;
    if (d->lc.bos_id >= 0)
        tok[i] = d->lc.bos_id, mod[i++] = FUSION_TEXT;
    if (!doc->image_first)
        for (int c = 0; c < doc->n_caption; c++)
            tok[i] = doc->caption[c], mod[i++] = FUSION_TEXT;
    tok[i] = d->fc.boi_id, mod[i++] = FUSION_TEXT;
    b->images[kimg] = (FusionImageSlot){row, i};
    for (int p = 0; p < P; p++)
        tok[i] = -1, mod[i++] = FUSION_IMAGE;
    tok[i] = d->fc.eoi_id, mod[i++] = FUSION_TEXT;
    if (doc->image_first)
        for (int c = 0; c < doc->n_caption; c++)
            tok[i] = doc->caption[c], mod[i++] = FUSION_TEXT;
    if (d->lc.eos_id >= 0)
        tok[i] = d->lc.eos_id, mod[i++] = FUSION_TEXT;
    const int end = i;
    for (i = at; i < end; i++) {
        b->lo[(size_t)row * T + i] = at;
        /* next-token targets inside the document, none where the next
         * position is BOI or an image position (or past the document) */
        int next_ok = i + 1 < end && mod[i] == FUSION_TEXT && mod[i + 1] == FUSION_TEXT && tok[i + 1] != d->fc.boi_id;
        b->targets[(size_t)row * T + i] = next_ok ? tok[i + 1] : -1;
        if (next_ok)
            d->stats.lm_tokens++;
    }
    b->timestep[kimg] = (float)doc->t;
    const double ab = d->ab[doc->t];
    d->h_a[kimg] = (float)sqrt(ab);
    d->h_s[kimg] = (float)sqrt(1.0 - ab);
    /* the latent: z = (mean + exp(logvar/2) n - shift) * scale */
    float *z = d->k_z + (size_t)kimg * d->numel;
    const uint64_t stream = ((uint64_t)d->o.rank << 8);
    if (tf_kernels_upload(d->k, d->k_mean, doc->mean, d->numel, err) != 0)
        return -1;
    if (doc->has_logvar &&
        (tf_kernels_upload(d->k, d->k_logvar, doc->logvar, d->numel, err) != 0 ||
         tf_randn(d->k, d->k_noise, d->numel, d->o.seed, stream | STREAM_POSTERIOR, doc->ordinal * d->numel, 0, 1,
                  err) != 0))
        return -1;
    if (tf_latent_sample(d->k, z, d->k_mean, doc->has_logvar ? d->k_logvar : NULL, doc->has_logvar ? d->k_noise : NULL,
                         d->numel, (float)d->shift, (float)d->scale, err) != 0)
        return -1;
    if (tf_randn(d->k, d->k_eps + (size_t)kimg * d->numel, d->numel, d->o.seed, stream | STREAM_EPS,
                 doc->ordinal * d->numel, 0, 1, err) != 0)
        return -1;
    b->n_images = kimg + 1;
    d->stats.samples++;
    d->stats.image_first += doc->image_first;
    d->stats.dropped += doc->dropped;
    d->stats.positions += (uint64_t)(end - at);
    d->samples++;
    d->pending = 0;
    json_decref(d->position);
    if (!(d->position = record_source_position_json(d->src)))
        return tf_fail(err, "out of memory");
    return end;
}

/* Pads positions [from, T) of a row: one text document of its own. */
static void pad_row(const TrainData *d, FusionBatch *b, int row, int from)
{
    const size_t base = (size_t)row * b->T;
    for (int i = from; i < b->T; i++) {
        b->tokens[base + i] = d->lc.eos_id >= 0 ? d->lc.eos_id : 0;
        b->modality[base + i] = FUSION_TEXT;
        b->lo[base + i] = from;
        b->targets[base + i] = -1;
    }
}

/* The latent scaling and shift of the data (known from a folder's
 * manifest at once, from a topic after its first record). */
static int data_factors(TrainData *d, TfError *err)
{
    if (d->scale != 0)
        return 0;
    const ShardFacts *f = record_source_facts(d->src);
    if (f->latent_scaling != 0) {
        if (d->o.latent_scale != 0 && (d->o.latent_scale != f->latent_scaling || d->o.latent_shift != f->latent_shift))
            return tf_fail(err, "%s: latent scaling and shift %g, %g configured, the data records %g, %g", d->o.path,
                           d->o.latent_scale, d->o.latent_shift, f->latent_scaling, f->latent_shift);
        d->scale = f->latent_scaling;
        d->shift = f->latent_shift;
        return 0;
    }
    if (d->o.latent_scale == 0)
        return tf_fail(err, "%s: the data records no latent scaling factor (give the VAE's scaling_factor)", d->o.path);
    d->scale = d->o.latent_scale;
    d->shift = d->o.latent_shift;
    return 0;
}

int train_data_next(TrainData *d, FusionBatch *b, TfError *err)
{
    if (b->B != d->o.B || b->T != d->o.T || b->max_images < d->max_images || b->latent_numel != d->numel)
        return tf_fail(err, "data: batch not made by train_data_batch_new");
    const size_t N = (size_t)b->B * b->T;
    for (size_t n = 0; n < N; n++) {
        b->tokens[n] = 0;
        b->modality[n] = FUSION_TEXT;
        b->lo[n] = 0;
        b->targets[n] = -1;
    }
    b->n_images = 0;
    int row = 0, at = 0, placed = 0;
    while (row < b->B) {
        if (!d->pending) {
            int rc = read_doc(d, err);
            if (rc < 0 || rc == TRAIN_DATA_STOPPED)
                return rc;
            if (rc == 0) {
                if (!placed)
                    return TRAIN_DATA_END;
                break; /* the last, partly filled batch */
            }
        }
        if (data_factors(d, err) != 0)
            return -1;
        if (at + d->doc.len > b->T) {
            pad_row(d, b, row, at);
            row++, at = 0;
            continue; /* the pending document starts the next row, or the next batch */
        }
        int end = place_doc(d, b, row, at, err);
        if (end < 0)
            return -1;
        placed++;
        at = end;
        if (at == b->T)
            row++, at = 0;
    }
    if (row < b->B)
        pad_row(d, b, row, at);
    for (int r = row + 1; r < b->B; r++)
        pad_row(d, b, r, 0);
    fusion_batch_fill_hi(b);
    /* x_t = sqrt(ab) z + sqrt(1 - ab) eps for every image, then to the batch */
    const size_t L = (size_t)b->n_images * d->numel;
    if (b->n_images > 0 &&
        (tf_noise_mix(d->k, d->k_xt, d->k_z, d->k_eps, d->h_a, d->h_s, b->n_images, d->numel, err) != 0 ||
         tf_kernels_download(d->k, b->x_t, d->k_xt, L, err) != 0 ||
         tf_kernels_download(d->k, b->eps, d->k_eps, L, err) != 0))
        return -1;
    d->stats.batches++;
    return TRAIN_DATA_BATCH;
}

json_t *train_data_state_json(const TrainData *d)
{
    json_t *pos = json_deep_copy(d->position);
    if (!pos)
        return NULL;
    return json_pack("{s:I, s:I, s:o}", "epoch", (json_int_t)d->epoch, "samples", (json_int_t)d->samples, "position",
                     pos);
}

const ShardFacts *train_data_facts(const TrainData *d)
{
    return record_source_facts(d->src);
}

void train_data_stats(const TrainData *d, TrainDataStats *out)
{
    *out = d->stats;
}
