/* pipeline.c: the local ingest pipeline. Rows are processed in chunks:
 * worker threads read, hash, decode/crop and tokenize the rows of a chunk
 * in parallel (each with its own cropper and tokenizer session), then the
 * chunk's crops go through the VAE encoder in batches (the kernels use the
 * same threads), and the records are appended in manifest order. A stop
 * request (IngestOptions.stop) is seen between rows and between VAE layers:
 * the batch in hand is dropped, the records appended before it are
 * published, and the next run resumes after them. */
#include "ingest.h"
#include "ingest_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels.h"
#include "preprocess.h"
#include "shards.h"

#define TAG "ingest"
#define MAX_IMAGE_BYTES ((size_t)256 << 20)

/* ---- metrics (core.h registry; served when the CLI was given --metrics-port) ---- */

typedef struct IngestMetrics {
    TfCounter *ok, *skipped, *failed, *failures[INGEST_FAIL_CLASSES];
    TfCounter *bytes, *encoded;
    TfHistogram *encode_batch, *prepare;
    TfGauge *planned, *in_flight, *encode_queue;
} IngestMetrics;

/* Looks every series up once (they live as long as the process). The names
 * are the contract with `transfuse top` and the alert rules
 * (docs/OPERATIONS.md): rows by outcome, failures by reason, bytes, rows in
 * flight, queue depth, rows planned; the VAE stage as `encode`. A series
 * the registry refuses is NULL, which every update takes as a no-op. */
static void metrics_init(IngestMetrics *m)
{
    static const char rows_help[] = "Manifest rows that reached an outcome: ok (written), failed, skipped "
                                    "(already in the dataset)";
    m->ok = tf_counter("transfuse_ingest_rows_total", rows_help, "outcome", "ok", NULL);
    m->failed = tf_counter("transfuse_ingest_rows_total", rows_help, "outcome", "failed", NULL);
    m->skipped = tf_counter("transfuse_ingest_rows_total", rows_help, "outcome", "skipped", NULL);
    for (int c = 1; c < INGEST_FAIL_CLASSES; c++)
        m->failures[c] = tf_counter("transfuse_ingest_failures_total", "Failed rows by reason", "reason",
                                    ingest_failure_name(c), NULL);
    m->bytes = tf_counter("transfuse_ingest_bytes_total", "Bytes of images read", NULL);
    m->planned = tf_gauge("transfuse_ingest_rows_planned", "Rows in the manifest of the run", NULL);
    m->in_flight = tf_gauge("transfuse_ingest_in_flight", "Rows taken into the pipeline without an outcome yet", NULL);
    m->encode_queue = tf_gauge("transfuse_ingest_queue_depth", "Items waiting in a queue of the pipeline", "queue",
                               "encode", NULL);
    m->prepare = tf_histogram("transfuse_ingest_prepare_seconds", "Time to read, hash, decode, crop and tokenize "
                              "one row", TF_SECONDS_BUCKETS, TF_SECONDS_BUCKETS_N, NULL);
    m->encoded = tf_counter("transfuse_encode_images_total", "Crops encoded by the VAE", NULL);
    m->encode_batch = tf_histogram("transfuse_encode_batch_seconds", "Time of one VAE encoder batch",
                                   TF_SECONDS_BUCKETS, TF_SECONDS_BUCKETS_N, NULL);
}

int ingest_folder_keys(const char *dir, ShardKeySet *keys, TfError *err)
{
    char path[4096];
    if (tf_path_join(path, sizeof path, dir, SHARD_MANIFEST_NAME) || access(path, F_OK) != 0)
        return 0;
    uint64_t damaged = 0;
    if (record_source_keys(dir, keys, &damaged, err))
        return -1;
    if (damaged)
        tf_log(TF_LOG_WARN, TAG, "%s: %llu damaged record(s) skipped; their rows are done again", dir,
               (unsigned long long)damaged);
    return 0;
}

/* ---- per-row work ---- */

#define PLAN_DO 0
#define PLAN_SKIP UINT64_MAX

/* Decides before any work what becomes of each row: skipped when its key
 * is in the dataset already, a duplicate_key failure when an earlier row of
 * the manifest has its key, else done. Fills plan[0..n_rows). */
static int rows_plan(const IngestManifest *m, const ShardKeySet *existing, uint64_t *plan, TfError *err)
{
    ShardKeySet *seen = shard_keyset_new();
    if (!seen)
        return tf_fail(err, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < m->n_rows; i++) {
        const IngestRow *r = &m->rows[i];
        size_t klen = strlen(r->key);
        uint64_t first = 0;
        int added;
        if (shard_keyset_has(existing, r->key, klen, NULL)) {
            plan[i] = PLAN_SKIP;
        } else if ((added = shard_keyset_add(seen, r->key, klen, r->line, &first)) < 0) {
            rc = tf_fail(err, "out of memory");
            break;
        } else {
            plan[i] = added ? PLAN_DO : first;
        }
    }
    shard_keyset_free(seen);
    return rc;
}

enum { SLOT_PENDING = 0, SLOT_OK, SLOT_FAILED, SLOT_SKIPPED };

typedef struct Slot {
    const IngestRow *row;
    int state;
    int fail_class;          /* ImageStatus, or IMAGE_STATUS_COUNT + INGEST_FAIL_* */
    char why[256];
    unsigned char sha256[32];
    uint8_t *rgb;            /* (S,S,3) u8, owned by the chunk */
    ImageCropInfo info;
    TokenIds tokens;
} Slot;

typedef struct Worker {
    ImageCropper *cropper;
    TokenizerSession *session;
    pthread_t thread;
    struct Chunk *chunk;
} Worker;

typedef struct Chunk {
    Slot *slots;
    size_t n;
    size_t next;             /* next slot to claim */
    pthread_mutex_t lock;
    const TfStopFlag *stop;  /* workers stop claiming rows when set */
    IngestMetrics *metrics;
    const IngestRow *rows;   /* the manifest's rows, for plan[] */
    const uint64_t *plan;    /* per row: PLAN_DO, PLAN_SKIP, or the line of an earlier row with its key */
    unsigned tok_flags;
} Chunk;

/* Reads a local path or file:// URL. */
static unsigned char *read_image(const char *image, size_t *len, TfError *err)
{
    const char *path = image;
    if (!strncmp(image, "file://", 7))
        path = image + 7;
    else if (strstr(image, "://")) {
        tf_fail(err, "fetching URLs is not built yet (local paths and file:// only)");
        return NULL;
    }
    return (unsigned char *)tf_read_file(path, MAX_IMAGE_BYTES, len, err);
}

static void process_slot(Worker *w, Slot *s, const Chunk *c)
{
    TfError err = {{0}};
    uint64_t plan = c->plan[s->row - c->rows];
    if (plan == PLAN_SKIP) {
        s->state = SLOT_SKIPPED;
        return;
    }
    if (plan != PLAN_DO) {
        s->state = SLOT_FAILED;
        s->fail_class = IMAGE_STATUS_COUNT + INGEST_FAIL_DUPLICATE_KEY;
        snprintf(s->why, sizeof s->why, "duplicate_key: key '%.64s' is the key of line %llu already", s->row->key,
                 (unsigned long long)plan);
        return;
    }
    size_t len = 0;
    unsigned char *bytes = read_image(s->row->image, &len, &err);
    if (!bytes) {
        s->state = SLOT_FAILED;
        s->fail_class = IMAGE_STATUS_COUNT + INGEST_FAIL_READ;
        snprintf(s->why, sizeof s->why, "%s", err.msg);
        return;
    }
    tf_counter_add(c->metrics->bytes, len);
    tf_sha256(bytes, len, s->sha256);
    ImageStatus st = image_cropper_run(w->cropper, bytes, len, s->rgb, &s->info, &err);
    free(bytes);
    if (st != IMAGE_OK) {
        s->state = SLOT_FAILED;
        s->fail_class = (int)st;
        snprintf(s->why, sizeof s->why, "%s: %s", image_status_name(st), err.msg);
        return;
    }
    s->tokens.len = 0;
    if (tokenizer_encode(w->session, s->row->caption, strlen(s->row->caption), c->tok_flags, &s->tokens, &err)) {
        s->state = SLOT_FAILED;
        s->fail_class = IMAGE_STATUS_COUNT + INGEST_FAIL_TOKENIZE;
        snprintf(s->why, sizeof s->why, "tokenize: %s", err.msg);
        return;
    }
    s->state = SLOT_OK;
}

static void *worker_main(void *arg)
{
    Worker *w = arg;
    Chunk *c = w->chunk;
    for (;;) {
        if (tf_stop_requested(c->stop))
            return NULL;
        pthread_mutex_lock(&c->lock);
        size_t i = c->next++;
        pthread_mutex_unlock(&c->lock);
        if (i >= c->n)
            return NULL;
        double t0 = tf_now();
        process_slot(w, &c->slots[i], c);
        if (c->slots[i].state != SLOT_SKIPPED)
            tf_histogram_observe(c->metrics->prepare, tf_now() - t0);
    }
}

/* Runs worker_main on the calling thread (as workers[0]) and on up to
 * n - 1 more threads, and waits for all of them. Rows are claimed one at a
 * time, so a thread that cannot be started only makes the chunk slower:
 * that is logged, not an error. */
static void chunk_crop(Worker *workers, int n)
{
    int started = 1;
    for (; started < n; started++) {
        int e = pthread_create(&workers[started].thread, NULL, worker_main, &workers[started]);
        if (e) {
            tf_log(TF_LOG_WARN, TAG, "could not start thread %d of %d (%s); going on with %d", started + 1, n,
                   strerror(e), started);
            break;
        }
    }
    worker_main(&workers[0]);
    for (int t = 1; t < started; t++)
        pthread_join(workers[t].thread, NULL);
}

/* ---- records ---- */

int ingest_latent_dtype_parse(const char *name, int *proto_dtype, TfDtype *dtype)
{
    if (!strcmp(name, "bf16")) {
        *proto_dtype = TRANSFUSE__V1__DTYPE__DTYPE_BF16;
        *dtype = TF_DTYPE_BF16;
    } else if (!strcmp(name, "f16")) {
        *proto_dtype = TRANSFUSE__V1__DTYPE__DTYPE_F16;
        *dtype = TF_DTYPE_F16;
    } else if (!strcmp(name, "f32")) {
        *proto_dtype = TRANSFUSE__V1__DTYPE__DTYPE_F32;
        *dtype = TF_DTYPE_F32;
    } else {
        return -1;
    }
    return 0;
}

void ingest_pack_floats(const float *x, size_t n, TfDtype dtype, uint8_t *out)
{
    for (size_t i = 0; i < n; i++) {
        if (dtype == TF_DTYPE_F32) {
            uint32_t u;
            memcpy(&u, &x[i], 4);
            for (int b = 0; b < 4; b++)
                out[4 * i + (size_t)b] = (uint8_t)(u >> (8 * b));
        } else {
            uint16_t h = dtype == TF_DTYPE_BF16 ? tf_f32_to_bf16(x[i]) : tf_f32_to_f16(x[i]);
            out[2 * i] = (uint8_t)h;
            out[2 * i + 1] = (uint8_t)(h >> 8);
        }
    }
}

void ingest_crop_to_image(const uint8_t *rgb, int size, float *image)
{
    size_t plane = (size_t)size * (size_t)size;
    for (size_t p = 0; p < plane; p++)
        for (int ch = 0; ch < 3; ch++)
            image[(size_t)ch * plane + p] = rgb[3 * p + (size_t)ch] / 127.5f - 1.0f;
}

void ingest_latent_tensors(Transfuse__V1__Tensor *tm, Transfuse__V1__Tensor *tl, const float *mean,
                           const float *logvar, size_t per, uint32_t shape[3], int proto_dtype, TfDtype dtype,
                           uint8_t *scratch)
{
    size_t es = tf_dtype_size(dtype);
    transfuse__v1__tensor__init(tm);
    transfuse__v1__tensor__init(tl);
    tm->dtype = tl->dtype = proto_dtype;
    tm->n_shape = tl->n_shape = 3;
    tm->shape = tl->shape = shape;
    ingest_pack_floats(mean, per, dtype, scratch);
    ingest_pack_floats(logvar, per, dtype, scratch + per * es);
    tm->data = (ProtobufCBinaryData){per * es, scratch};
    tl->data = (ProtobufCBinaryData){per * es, scratch + per * es};
}

static int append_record(ShardWriter *wr, const Slot *s, const float *mean, const float *logvar, size_t per,
                         uint32_t shape[3], int proto_dtype, TfDtype dtype, uint8_t *scratch, TfError *err)
{
    const IngestRow *r = s->row;
    Transfuse__V1__Tensor tm, tl;
    ingest_latent_tensors(&tm, &tl, mean, logvar, per, shape, proto_dtype, dtype, scratch);

    Transfuse__V1__CropBox crop = TRANSFUSE__V1__CROP_BOX__INIT;
    crop.x = (uint32_t)s->info.crop_x;
    crop.y = (uint32_t)s->info.crop_y;
    crop.width = (uint32_t)s->info.crop_w;
    crop.height = (uint32_t)s->info.crop_h;
    Transfuse__V1__Provenance pv = TRANSFUSE__V1__PROVENANCE__INIT;
    pv.source_url = r->image;
    pv.sha256 = (ProtobufCBinaryData){32, (uint8_t *)s->sha256};
    pv.original_width = (uint32_t)s->info.width;
    pv.original_height = (uint32_t)s->info.height;
    pv.crop = &crop;
    pv.exif_orientation = s->info.orientation_applied ? (uint32_t)s->info.orientation : 0;
    pv.original_format = (char *)image_format_name(s->info.format);

    Transfuse__V1__Sample__ExtraEntry *entries = calloc(r->n_extra ? r->n_extra : 1, sizeof *entries);
    Transfuse__V1__Sample__ExtraEntry **eptrs = calloc(r->n_extra ? r->n_extra : 1, sizeof *eptrs);
    uint32_t *tokens = malloc((s->tokens.len ? s->tokens.len : 1) * sizeof *tokens);
    if (!entries || !eptrs || !tokens) {
        free(entries);
        free(eptrs);
        free(tokens);
        return tf_fail(err, "out of memory");
    }
    for (size_t i = 0; i < r->n_extra; i++) {
        transfuse__v1__sample__extra_entry__init(&entries[i]);
        entries[i].key = r->extra_names[i];
        entries[i].value = r->extra_values[i];
        eptrs[i] = &entries[i];
    }
    for (size_t i = 0; i < s->tokens.len; i++)
        tokens[i] = (uint32_t)s->tokens.ids[i];
    Sample smp = TRANSFUSE__V1__SAMPLE__INIT;
    smp.key = r->key;
    smp.caption = r->caption;
    smp.n_tokens = s->tokens.len;
    smp.tokens = tokens;
    smp.latent_mean = &tm;
    smp.latent_logvar = &tl;
    smp.provenance = &pv;
    smp.n_extra = r->n_extra;
    smp.extra = eptrs;
    int rc = shard_writer_append_sample(wr, &smp, err);
    free(entries);
    free(eptrs);
    free(tokens);
    return rc;
}

/* ---- the run ---- */

int ingest_stats_over_limit(const IngestStats *st, int64_t max_failures, double max_rate, char *why, size_t cap)
{
    if (max_failures >= 0 && st->failed > (uint64_t)max_failures) {
        snprintf(why, cap, "%llu rows failed, more than --max-failures %lld", (unsigned long long)st->failed,
                 (long long)max_failures);
        return 1;
    }
    double rate = st->rows ? (double)st->failed / (double)st->rows : 0.0;
    if (max_rate >= 0 && rate > max_rate) {
        snprintf(why, cap, "%llu of %llu rows failed (%.4g), more than --max-failure-rate %.4g",
                 (unsigned long long)st->failed, (unsigned long long)st->rows, rate, max_rate);
        return 1;
    }
    return 0;
}

const char *ingest_failure_name(int cls)
{
    static const char *const names[INGEST_FAIL_COUNT] = {"read", "tokenize", "duplicate_key"};
    if (cls > IMAGE_OK && cls < IMAGE_STATUS_COUNT)
        return image_status_name((ImageStatus)cls);
    if (cls >= IMAGE_STATUS_COUNT && cls < INGEST_FAIL_CLASSES)
        return names[cls - IMAGE_STATUS_COUNT];
    return NULL;
}

int ingest_run(const IngestOptions *o, IngestStats *stats, TfError *err)
{
    memset(stats, 0, sizeof *stats);
    double t0 = tf_now();
    int size = o->size ? o->size : 256, batch = o->batch ? o->batch : 8;
    int threads = o->threads > 0 ? o->threads : tf_cpu_count();
    int proto_dtype;
    TfDtype dtype;
    if (ingest_latent_dtype_parse(o->latent_dtype ? o->latent_dtype : "bf16", &proto_dtype, &dtype))
        return tf_fail(err, "latent dtype '%s' is not bf16, f16 or f32", o->latent_dtype);
    if (!o->manifest || !o->out || !o->tokenizer || !o->vae)
        return tf_fail(err, "manifest, output folder, tokenizer and VAE are all required");

    int rc = -1;
    IngestManifest *m = NULL;
    Tokenizer *tok = NULL;
    Vae *vae = NULL;
    TfKernels *k = NULL;
    ShardWriter *wr = NULL;
    ShardKeySet *existing = shard_keyset_new();
    Worker *workers = NULL;
    Chunk chunk = {0};
    float *images = NULL, *mean = NULL, *logvar = NULL;
    uint64_t *plan = NULL;
    uint8_t *scratch = NULL;
    int n_workers = 0;
    pthread_mutex_init(&chunk.lock, NULL);

    if (!(m = ingest_manifest_load(o->manifest, &o->columns, err)))
        goto done;
    if (!(tok = tokenizer_load_regex(o->tokenizer, o->regex_rust ? TOKENIZER_REGEX_RUST : TOKENIZER_REGEX_JS, err)))
        goto done;
    if (!(vae = vae_load(o->vae, VAE_LOAD_ENCODER, err)))
        goto done;
    const VaeConfig *cfg = vae_config(vae);
    int f = vae_downsample_factor(cfg);
    if (size % f) {
        tf_fail(err, "crop size %d is not a multiple of the VAE's downsampling factor %d", size, f);
        goto done;
    }
    uint32_t shape[3] = {(uint32_t)cfg->latent_channels, (uint32_t)(size / f), (uint32_t)(size / f)};
    size_t per = (size_t)shape[0] * shape[1] * shape[2];

    ShardFacts facts = {0};
    snprintf(facts.tokenizer_id, sizeof facts.tokenizer_id, "%s", tokenizer_identity(tok));
    snprintf(facts.tokenizer_name, sizeof facts.tokenizer_name, "%s", o->tokenizer);
    snprintf(facts.vae_id, sizeof facts.vae_id, "%s", vae_identity(vae));
    snprintf(facts.vae_name, sizeof facts.vae_name, "%s", o->vae);
    facts.latent_scaling = cfg->scaling_factor;
    facts.latent_shift = cfg->shift_factor;
    snprintf(facts.latent_dtype, sizeof facts.latent_dtype, "%s", o->latent_dtype ? o->latent_dtype : "bf16");
    facts.latent_rank = 3;
    memcpy(facts.latent_shape, shape, sizeof shape);

    ShardWriterOptions wo = {.max_shard_records = o->shard_records, .max_shard_bytes = o->shard_bytes};
    if (!(wr = shard_writer_open(o->out, &wo, &facts, err)))
        goto done;
    if (!existing) {
        tf_fail(err, "out of memory");
        goto done;
    }
    if (ingest_folder_keys(o->out, existing, err))
        goto done;
    if (shard_keyset_count(existing))
        tf_log(TF_LOG_INFO, TAG, "%s already holds %zu records: resuming, their rows are skipped", o->out,
               shard_keyset_count(existing));
    if (!(plan = malloc((m->n_rows ? m->n_rows : 1) * sizeof *plan))) {
        tf_fail(err, "out of memory");
        goto done;
    }
    if (rows_plan(m, existing, plan, err))
        goto done;
    if (!(k = tf_kernels_new(TF_BACKEND_CPU, threads, err)))
        goto done;

    size_t chunk_rows = (size_t)batch * (size_t)(threads > 4 ? threads : 4);
    chunk.slots = calloc(chunk_rows, sizeof *chunk.slots);
    workers = calloc((size_t)threads, sizeof *workers);
    images = malloc((size_t)batch * 3 * (size_t)size * (size_t)size * sizeof *images);
    mean = malloc((size_t)batch * per * sizeof *mean);
    logvar = malloc((size_t)batch * per * sizeof *logvar);
    scratch = malloc(2 * per * 4);
    if (!chunk.slots || !workers || !images || !mean || !logvar || !scratch) {
        tf_fail(err, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < chunk_rows; i++)
        if (!(chunk.slots[i].rgb = malloc((size_t)size * (size_t)size * 3))) {
            tf_fail(err, "out of memory");
            goto done;
        }
    ImageCropOptions copt;
    image_crop_options_init(&copt);
    copt.size = size;
    for (int t = 0; t < threads; t++, n_workers++) {
        if (!(workers[t].cropper = image_cropper_new(&copt, err)) ||
            !(workers[t].session = tokenizer_session_new(tok, err)))
            goto done;
        workers[t].chunk = &chunk;
    }
    chunk.rows = m->rows;
    chunk.plan = plan;
    chunk.tok_flags = o->bos ? TOKENIZER_ADD_BOS : 0;
    chunk.stop = o->stop;
    IngestMetrics metrics;
    metrics_init(&metrics);
    chunk.metrics = &metrics;

    TfRateLimit limit = {.burst = 20, .period_s = 10};
    TfProgress prog;
    tf_progress_init(&prog, "ingest", m->n_rows, "rows");
    tf_gauge_set(metrics.planned, (double)m->n_rows);
    size_t row = 0;
    int failed_write = 0;
    while (row < m->n_rows && !tf_stop_requested(o->stop) && !failed_write) {
        chunk.n = m->n_rows - row < chunk_rows ? m->n_rows - row : chunk_rows;
        chunk.next = 0;
        for (size_t i = 0; i < chunk.n; i++) {
            chunk.slots[i].row = &m->rows[row + i];
            chunk.slots[i].state = SLOT_PENDING;
        }
        size_t outstanding = chunk.n, queued = 0;
        tf_gauge_set(metrics.in_flight, (double)outstanding);
        chunk_crop(workers, threads);
        for (size_t i = 0; i < chunk.n; i++)
            queued += chunk.slots[i].state == SLOT_OK;
        tf_gauge_set(metrics.encode_queue, (double)queued);
        /* Encode the good crops in batches, append records in row order.
         * On a stop the chunk's rows from the batch in hand on are dropped
         * (they are redone by the next run). */
        size_t i = 0;
        while (i < chunk.n && !failed_write && !tf_stop_requested(o->stop)) {
            size_t idx[64];
            int b = 0;
            size_t j = i;
            for (; j < chunk.n && b < batch; j++) {
                Slot *s = &chunk.slots[j];
                if (s->state != SLOT_OK)
                    continue;
                ingest_crop_to_image(s->rgb, size, images + (size_t)b * 3 * (size_t)size * (size_t)size);
                idx[b++] = j;
            }
            double tb = tf_now();
            if (b && vae_encode(vae, k, images, b, size, size, mean, logvar, o->stop, err)) {
                if (tf_stop_requested(o->stop))
                    break;
                failed_write = 1;
                break;
            }
            if (b) {
                tf_histogram_observe(metrics.encode_batch, tf_now() - tb);
                tf_counter_add(metrics.encoded, (uint64_t)b);
                tf_log(TF_LOG_DEBUG, TAG, "encoded a batch of %d crop(s) in %.2f s", b, tf_now() - tb);
            }
            for (size_t q = i; q < j; q++) {
                Slot *s = &chunk.slots[q];
                if (s->state == SLOT_SKIPPED) {
                    stats->rows++;
                    stats->skipped_existing++;
                    tf_counter_add(metrics.skipped, 1);
                } else if (s->state == SLOT_FAILED) {
                    stats->rows++;
                    stats->failed++;
                    stats->failures[s->fail_class]++;
                    tf_counter_add(metrics.failed, 1);
                    tf_counter_add(metrics.failures[s->fail_class], 1);
                    tf_log_limited(&limit, TF_LOG_WARN, TAG, "%s line %llu (%s): %s", o->manifest,
                                   (unsigned long long)s->row->line, s->row->image, s->why);
                }
            }
            for (int q = 0; q < b; q++) {
                Slot *s = &chunk.slots[idx[q]];
                if (append_record(wr, s, mean + (size_t)q * per, logvar + (size_t)q * per, per, shape, proto_dtype,
                                  dtype, scratch, err)) {
                    failed_write = 1;
                    break;
                }
                stats->rows++;
                stats->written++;
                tf_counter_add(metrics.ok, 1);
            }
            outstanding -= j - i;
            queued -= (size_t)b;
            tf_gauge_set(metrics.in_flight, (double)outstanding);
            tf_gauge_set(metrics.encode_queue, (double)queued);
            i = j;
        }
        row += chunk.n;
        tf_progress_update(&prog, row);
    }
    tf_gauge_set(metrics.in_flight, 0);
    tf_gauge_set(metrics.encode_queue, 0);
    tf_progress_finish(&prog, stats->rows);
    if (failed_write)
        goto done;
    if (tf_stop_requested(o->stop)) {
        stats->stopped = 1;
        tf_log(TF_LOG_WARN, TAG, "stopped after %llu of %zu rows (%llu written); run again to resume",
               (unsigned long long)stats->rows, m->n_rows, (unsigned long long)stats->written);
    }
    if (shard_writer_flush(wr, err))
        goto done;
    rc = 0;
done:
    stats->seconds = tf_now() - t0;
    shard_writer_free(wr);
    for (int t = 0; t < n_workers; t++) {
        image_cropper_free(workers[t].cropper);
        tokenizer_session_free(workers[t].session);
    }
    if (chunk.slots)
        for (size_t i = 0; i < ((size_t)batch * (size_t)(threads > 4 ? threads : 4)); i++) {
            free(chunk.slots[i].rgb);
            token_ids_deinit(&chunk.slots[i].tokens);
        }
    free(chunk.slots);
    free(workers);
    free(images);
    free(mean);
    free(logvar);
    free(scratch);
    free(plan);
    pthread_mutex_destroy(&chunk.lock);
    shard_keyset_free(existing);
    tf_kernels_free(k);
    vae_free(vae);
    tokenizer_free(tok);
    ingest_manifest_free(m);
    return rc;
}
