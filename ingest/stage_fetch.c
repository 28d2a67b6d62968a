/* stage_fetch.c: stage 1 of ingest from the web (ingest_stage_fetch): one
 * job = one manifest slice to Samples carrying the crop, tokens and
 * provenance (no latents).
 *
 * The calling thread owns the manifest reader, the fetcher and the sinks:
 * it reads rows while fewer than max_rows_in_flight are in flight, submits
 * their URLs, hands every body the fetcher returns to a queue that worker
 * threads take from (SHA-256, decode + centre crop, tokenize, encode the
 * Sample), and writes what they finish to the sinks. Workers wake the
 * fetcher's poll (fetcher_wakeup) when they finish one, so the one thread
 * sleeps in fetcher_poll and never spins. Every row read ends as exactly one
 * of: written, skipped (key already there), failed (one reason); a stop
 * request drops what is in flight (it is not done, a rerun redoes it). */
#include "ingest_internal.h"
#include "stats_internal.h"

#include <errno.h>
#include <png.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TAG "ingest-fetch"

void ingest_fetch_options_init(IngestFetchOptions *o)
{
    memset(o, 0, sizeof *o);
    fetch_options_init(&o->fetch);
    image_crop_options_init(&o->crop);
    o->tokenizer_flags = TOKENIZER_ADD_BOS;
    o->crop_format = INGEST_CROP_RAW;
    o->crop_png_level = 1;
}

/* ---- crops in records ---- */

int ingest_crop_pixels(const Sample *s, int size, uint8_t *rgb, TfError *err)
{
    const Transfuse__V1__EncodedImage *im = s ? s->image : NULL;
    size_t want = (size_t)size * (size_t)size * 3;
    if (!im || !im->format)
        return tf_fail(err, "the record has no crop (Sample.image)");
    if (im->width != (uint32_t)size || im->height != (uint32_t)size)
        return tf_fail(err, "the crop is %ux%u, not %dx%d", im->width, im->height, size, size);
    if (!strcmp(im->format, "rgb8")) {
        if (im->data.len != want)
            return tf_fail(err, "rgb8 crop of %zu bytes, not %zu", im->data.len, want);
        memcpy(rgb, im->data.data, want);
        return 0;
    }
    if (strcmp(im->format, "png"))
        return tf_fail(err, "crop format '%s' is neither rgb8 nor png", im->format);
    png_image pi;
    memset(&pi, 0, sizeof pi);
    pi.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&pi, im->data.data, im->data.len))
        return tf_fail(err, "png crop: %s", pi.message);
    if (pi.width != (png_uint_32)size || pi.height != (png_uint_32)size) {
        png_image_free(&pi);
        return tf_fail(err, "png crop is %ux%u, not %dx%d", pi.width, pi.height, size, size);
    }
    pi.format = PNG_FORMAT_RGB;
    if (!png_image_finish_read(&pi, NULL, rgb, 0, NULL)) {
        tf_fail(err, "png crop: %s", pi.message);
        png_image_free(&pi);
        return -1;
    }
    return 0;
}

/* ---- rows in flight ---- */

typedef struct Item {
    IngestRow row;          /* deep copy (owned) */
    struct Item *next;      /* queue link */
    struct Item *all_prev, *all_next; /* every live item (the calling thread's list) */
    FetchResult *res;       /* FETCH_OK: the body, for the crop thread */
    int to_folder, to_topic; /* sinks that still lack the key */
    int ok;                 /* after the crop thread: 1 with payload, else reason/why */
    uint8_t *payload;
    size_t len;
    char reason[32];
    char why[256];
    int transient;
} Item;

/* The calling thread's list of live items: whatever a stop or an error
 * leaves in the fetcher or the queues is freed from it. */
typedef struct ItemList {
    Item *head;
} ItemList;

static void item_link(ItemList *l, Item *it)
{
    it->all_prev = NULL;
    it->all_next = l->head;
    if (l->head)
        l->head->all_prev = it;
    l->head = it;
}

/* Unlinks and frees one item (the calling thread only). */
static void item_free(ItemList *l, Item *it)
{
    if (!it)
        return;
    if (it->all_prev)
        it->all_prev->all_next = it->all_next;
    else if (l->head == it)
        l->head = it->all_next;
    if (it->all_next)
        it->all_next->all_prev = it->all_prev;
    ingest_row_deinit(&it->row);
    fetch_result_free(it->res);
    free(it->payload);
    free(it);
}

/* ---- the crop threads ---- */

typedef struct Stage {
    const IngestFetchOptions *o;
    Fetcher *fetcher;
    pthread_mutex_t lock;
    pthread_cond_t work;     /* crop queue not empty, or quit */
    pthread_cond_t done_cv;  /* an item was finished */
    Item *crop_head, *crop_tail, *done_head, *done_tail;
    size_t crop_n;
    int quit;
    TfGauge *crop_gauge;
} Stage;

typedef struct Worker {
    Stage *st;
    ImageCropper *cropper;
    TokenizerSession *session;
    uint8_t *rgb;            /* (S,S,3) u8 */
    TokenIds tokens;
    pthread_t thread;
    int started;
} Worker;

static void item_fail(Item *it, const char *reason, int transient, const char *why)
{
    it->ok = 0;
    snprintf(it->reason, sizeof it->reason, "%s", reason);
    snprintf(it->why, sizeof it->why, "%s", why);
    it->transient = transient;
}

/* Turns a fetched body into the record bytes, or one failure. */
static void crop_one(Worker *w, Item *it)
{
    const IngestFetchOptions *o = w->st->o;
    TfError err = {{0}};
    FetchResult *res = it->res;
    unsigned char sha[32];
    if (res->has_sha256)
        memcpy(sha, res->sha256, 32);
    else
        tf_sha256(res->body, res->body_len, sha);
    ImageCropInfo info;
    ImageStatus ist = image_cropper_run(w->cropper, res->body, res->body_len, w->rgb, &info, &err);
    if (ist != IMAGE_OK) {
        char why[300];
        snprintf(why, sizeof why, "%s: %s", image_status_name(ist), err.msg);
        item_fail(it, image_status_name(ist), ist == IMAGE_NO_MEMORY, why);
        return;
    }
    w->tokens.len = 0;
    if (tokenizer_encode(w->session, it->row.caption, strlen(it->row.caption), o->tokenizer_flags, &w->tokens, &err)) {
        item_fail(it, "tokenize", 0, err.msg);
        return;
    }
    int size = image_cropper_options(w->cropper)->size;
    size_t raw = (size_t)size * (size_t)size * 3;
    uint8_t *png = NULL;
    size_t png_len = 0;
    if (o->crop_format == INGEST_CROP_PNG &&
        !(png = image_png_encode(w->rgb, size, size, o->crop_png_level, &png_len, &err))) {
        item_fail(it, "internal", 1, err.msg);
        return;
    }
    Transfuse__V1__EncodedImage im = TRANSFUSE__V1__ENCODED_IMAGE__INIT;
    im.format = o->crop_format == INGEST_CROP_PNG ? "png" : "rgb8";
    im.width = im.height = (uint32_t)size;
    im.data = png ? (ProtobufCBinaryData){png_len, png} : (ProtobufCBinaryData){raw, w->rgb};
    Transfuse__V1__CropBox crop = TRANSFUSE__V1__CROP_BOX__INIT;
    crop.x = (uint32_t)info.crop_x;
    crop.y = (uint32_t)info.crop_y;
    crop.width = (uint32_t)info.crop_w;
    crop.height = (uint32_t)info.crop_h;
    Transfuse__V1__Provenance pv = TRANSFUSE__V1__PROVENANCE__INIT;
    pv.source_url = it->row.image;
    pv.sha256 = (ProtobufCBinaryData){32, sha};
    pv.original_width = (uint32_t)info.width;
    pv.original_height = (uint32_t)info.height;
    pv.crop = &crop;
    pv.exif_orientation = info.orientation_applied ? (uint32_t)info.orientation : 0;
    pv.original_format = (char *)image_format_name(info.format);
    size_t n = it->row.n_extra;
    Transfuse__V1__Sample__ExtraEntry *entries = calloc(n ? n : 1, sizeof *entries);
    Transfuse__V1__Sample__ExtraEntry **eptrs = calloc(n ? n : 1, sizeof *eptrs);
    uint32_t *tokens = malloc((w->tokens.len ? w->tokens.len : 1) * sizeof *tokens);
    if (entries && eptrs && tokens) {
        for (size_t i = 0; i < n; i++) {
            transfuse__v1__sample__extra_entry__init(&entries[i]);
            entries[i].key = it->row.extra_names[i];
            entries[i].value = it->row.extra_values[i];
            eptrs[i] = &entries[i];
        }
        for (size_t i = 0; i < w->tokens.len; i++)
            tokens[i] = (uint32_t)w->tokens.ids[i];
        Sample smp = TRANSFUSE__V1__SAMPLE__INIT;
        smp.key = it->row.key;
        smp.caption = it->row.caption;
        smp.n_tokens = w->tokens.len;
        smp.tokens = tokens;
        smp.image = &im;
        smp.provenance = &pv;
        smp.n_extra = n;
        smp.extra = eptrs;
        it->payload = sample_encode(&smp, &it->len);
    }
    free(entries);
    free(eptrs);
    free(tokens);
    free(png);
    if (!it->payload) {
        item_fail(it, "internal", 1, "out of memory encoding the record");
        return;
    }
    it->ok = 1;
}

static void *worker_main(void *arg)
{
    Worker *w = arg;
    Stage *st = w->st;
    for (;;) {
        pthread_mutex_lock(&st->lock);
        while (!st->crop_head && !st->quit)
            pthread_cond_wait(&st->work, &st->lock);
        if (st->quit) {
            pthread_mutex_unlock(&st->lock);
            return NULL;
        }
        Item *it = st->crop_head;
        st->crop_head = it->next;
        if (!st->crop_head)
            st->crop_tail = NULL;
        st->crop_n--;
        pthread_mutex_unlock(&st->lock);
        it->next = NULL;
        ingest_progress_add(st->o->common.progress, INGEST_P_CROP_QUEUE, -1);
        tf_gauge_add(st->crop_gauge, -1);
        crop_one(w, it);
        fetch_result_free(it->res); /* the body is not needed any more */
        it->res = NULL;
        pthread_mutex_lock(&st->lock);
        if (st->done_tail)
            st->done_tail->next = it;
        else
            st->done_head = it;
        st->done_tail = it;
        pthread_cond_signal(&st->done_cv);
        pthread_mutex_unlock(&st->lock);
        fetcher_wakeup(st->fetcher);
    }
}

/* ---- outcomes ---- */

typedef struct Run {
    const IngestFetchOptions *o;
    IngestJobStats *stats;
    IngestStageMetrics m;
    json_t *fail_lines;      /* this call's failures.jsonl objects */
    IngestLatencies lat;
    int64_t in_flight;       /* rows submitted without an outcome */
    int64_t fetch_queue;     /* what was last added to the fetch-queue gauges */
    TfRateLimit limit;
    IngestOut *out;          /* the sinks (ingest_internal.h) */
    ItemList items;
} Run;

static void outcome_ok(Run *r)
{
    r->stats->attempted++;
    r->stats->succeeded++;
    tf_counter_add(r->m.ok, 1);
    ingest_progress_add(r->o->common.progress, INGEST_P_ROWS, 1);
    ingest_progress_add(r->o->common.progress, INGEST_P_OK, 1);
}

static void outcome_skipped(Run *r)
{
    r->stats->attempted++;
    r->stats->skipped++;
    tf_counter_add(r->m.skipped, 1);
    ingest_progress_add(r->o->common.progress, INGEST_P_ROWS, 1);
    ingest_progress_add(r->o->common.progress, INGEST_P_SKIPPED, 1);
}

/* One failed row: counted, logged (rate-limited), kept for failures.jsonl. */
static int outcome_failed(Run *r, const IngestRow *row, const char *reason, int transient, const char *why,
                          TfError *err)
{
    r->stats->attempted++;
    ingest_job_stats_fail(r->stats, reason);
    tf_counter_add(r->m.failed, 1);
    ingest_metrics_failure(reason);
    ingest_progress_add(r->o->common.progress, INGEST_P_ROWS, 1);
    ingest_progress_add(r->o->common.progress, INGEST_P_FAILED, 1);
    tf_log_limited(&r->limit, TF_LOG_WARN, TAG, "%s line %llu (%s): %s: %s", r->o->common.job,
                   (unsigned long long)row->line, row->image ? row->image : "", reason, why);
    json_t *j = json_pack("{s:I,s:I,s:s,s:s,s:s,s:b,s:s}", "line", (json_int_t)row->line, "offset",
                          (json_int_t)row->offset, "key", row->key ? row->key : "", "url",
                          row->image ? row->image : "", "reason", reason, "transient", transient, "why", why);
    if (!j || json_array_append_new(r->fail_lines, j))
        return tf_fail(err, "out of memory");
    return 0;
}

static void in_flight_add(Run *r, int64_t d)
{
    r->in_flight += d;
    tf_gauge_add(r->m.in_flight, (double)d);
    ingest_progress_add(r->o->common.progress, INGEST_P_IN_FLIGHT, d);
}

/* Writes a finished item to the sinks that lack it, or records its failure;
 * frees it. Returns 0, 1 when a stop ended a wait to send it (no outcome:
 * the row is not done), or -1 with err (a write or send error). */
static int item_finish(Run *r, Item *it, TfError *err)
{
    int rc = 0;
    in_flight_add(r, -1);
    if (!it->ok) {
        rc = outcome_failed(r, &it->row, it->reason, it->transient, it->why, err);
    } else {
        unsigned where = (it->to_folder ? INGEST_OUT_FOLDER : 0) | (it->to_topic ? INGEST_OUT_TOPIC : 0);
        if (ingest_out_append_bytes(r->out, it->payload, it->len, it->row.key, where, err))
            rc = tf_stop_requested(r->o->common.stop) ? 1 : -1; /* a stop ended a flow-control wait */
        else
            outcome_ok(r);
    }
    item_free(&r->items, it);
    return rc;
}

/* ---- --retry-failed: merging with what the job's files say ---- */

/* Reads STATS_DIR/JOB.failures.jsonl into an array of objects (empty when missing). */
static json_t *failures_load(const char *path, TfError *err)
{
    json_t *arr = json_array();
    if (!arr) {
        tf_fail(err, "out of memory");
        return NULL;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT)
            return arr;
        tf_fail(err, "%s: %s", path, strerror(errno));
        json_decref(arr);
        return NULL;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    uint64_t lineno = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (n == 1 && line[0] == '\n')
            continue;
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        if (!json_is_object(j) || !json_is_integer(json_object_get(j, "line"))) {
            json_decref(j);
            tf_fail(err, "%s:%llu: not a failure line (%s)", path, (unsigned long long)lineno, je.text);
            json_decref(arr);
            arr = NULL;
            break;
        }
        json_array_append_new(arr, j);
    }
    free(line);
    fclose(f);
    return arr;
}

long ingest_retry_lines(const char *stats_dir, const char *job, int all, ShardKeySet *lines, TfError *err)
{
    char path[4096];
    if (ingest_stats_path(stats_dir, job, "failures.jsonl", path, sizeof path, err))
        return -1;
    json_t *arr = failures_load(path, err);
    if (!arr)
        return -1;
    long added = 0;
    size_t i;
    json_t *j;
    json_array_foreach(arr, i, j)
    {
        if (!all && !json_is_true(json_object_get(j, "transient")))
            continue;
        char k[32];
        int kl = snprintf(k, sizeof k, "%lld", (long long)json_integer_value(json_object_get(j, "line")));
        int a = shard_keyset_add(lines, k, (size_t)kl, 0, NULL);
        if (a < 0) {
            json_decref(arr);
            return tf_fail(err, "out of memory");
        }
        added += a;
    }
    json_decref(arr);
    return added;
}

static int line_in(const ShardKeySet *set, uint64_t line)
{
    char k[32];
    int kl = snprintf(k, sizeof k, "%llu", (unsigned long long)line);
    return shard_keyset_has(set, k, (size_t)kl, NULL);
}

/* The job's stats and failure lines after this call: for a full run what it
 * saw; for a retry (only_lines) the earlier files with the retried rows
 * replaced by their new outcomes. Returns the stats JSON (new reference)
 * and *lines (new reference), or NULL with err. */
static json_t *stats_merge(const IngestFetchOptions *o, const char *stats_dir, const IngestJobStats *now,
                           json_t *now_lines, json_t **lines, TfError *err)
{
    const ManifestReaderOptions *mo = &o->manifest;
    *lines = NULL;
    json_t *prev = NULL;
    if (o->only_lines && ingest_job_done(stats_dir, o->common.job, "fetch", &prev, err) < 0)
        return NULL;
    if (!prev) {
        *lines = json_incref(now_lines);
        return ingest_job_stats_json(o->common.job, "fetch", mo->path, mo->start, mo->end, now);
    }
    char path[4096];
    json_t *old = NULL, *merged = json_array();
    IngestJobStats st;
    if (!merged || ingest_job_stats_init(&st, err) ||
        ingest_stats_path(stats_dir, o->common.job, "failures.jsonl", path, sizeof path, err) ||
        !(old = failures_load(path, err))) {
        json_decref(prev);
        json_decref(merged);
        json_decref(old);
        ingest_job_stats_deinit(&st);
        return NULL;
    }
    size_t i;
    json_t *j;
    json_array_foreach(old, i, j)
    {
        if (!line_in(o->only_lines, (uint64_t)json_integer_value(json_object_get(j, "line"))))
            json_array_append(merged, j);
    }
    json_array_extend(merged, now_lines);
    json_array_foreach(merged, i, j)
    {
        ingest_job_stats_fail(&st, json_string_value(json_object_get(j, "reason")) ?: "unknown");
    }
    /* Rows retried that succeeded, or were found written (a retry stopped
     * after writing them), now count as succeeded. */
    st.succeeded = (uint64_t)json_integer_value(json_object_get(prev, "succeeded")) + now->succeeded + now->skipped;
    st.skipped = (uint64_t)json_integer_value(json_object_get(prev, "skipped"));
    st.attempted = st.succeeded + st.skipped + st.failed;
    st.bytes = (uint64_t)json_integer_value(json_object_get(prev, "bytes")) + now->bytes;
    st.seconds = json_number_value(json_object_get(prev, "seconds")) + now->seconds;
    st.fetch_p50_s = now->fetch_p50_s;
    st.fetch_p99_s = now->fetch_p99_s;
    json_t *out = ingest_job_stats_json(o->common.job, "fetch", mo->path, mo->start, mo->end, &st);
    if (out) {
        json_object_set_new(out, "retries",
                            json_integer(json_integer_value(json_object_get(prev, "retries")) + 1));
        json_object_set_new(out, "last_retry",
                            json_pack("{s:I,s:I,s:I,s:I}", "attempted", (json_int_t)now->attempted, "succeeded",
                                      (json_int_t)now->succeeded, "skipped", (json_int_t)now->skipped, "failed",
                                      (json_int_t)now->failed));
    } else
        tf_fail(err, "out of memory");
    ingest_job_stats_deinit(&st);
    json_decref(prev);
    json_decref(old);
    if (!out) {
        json_decref(merged);
        return NULL;
    }
    *lines = merged;
    return out;
}

/* Writes JOB.failures.jsonl, then JOB.fetch.json (the job is done once the latter exists). */
static int stats_files_write(const IngestFetchOptions *o, const char *stats_dir, const IngestJobStats *now,
                             json_t *now_lines, TfError *err)
{
    json_t *lines = NULL;
    json_t *js = stats_merge(o, stats_dir, now, now_lines, &lines, err);
    if (!js)
        return -1;
    int rc = -1;
    char *buf = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&buf, &len);
    if (!mem) {
        tf_fail(err, "out of memory");
        goto done;
    }
    size_t i;
    json_t *j;
    json_array_foreach(lines, i, j)
    {
        if (json_dumpf(j, mem, JSON_COMPACT) || fputc('\n', mem) == EOF)
            break;
    }
    if (fclose(mem) || i < json_array_size(lines)) {
        tf_fail(err, "out of memory");
        goto done;
    }
    char path[4096];
    if (tf_mkdir_p(stats_dir, err) ||
        ingest_stats_path(stats_dir, o->common.job, "failures.jsonl", path, sizeof path, err) ||
        tf_write_file_atomic(path, buf ? buf : "", len, err) ||
        ingest_job_stats_write(stats_dir, o->common.job, "fetch", js, err))
        goto done;
    rc = 0;
done:
    free(buf);
    json_decref(lines);
    json_decref(js);
    return rc;
}

/* ---- the stage ---- */

int ingest_stage_fetch(const IngestFetchOptions *o, IngestJobStats *stats, TfError *err)
{
    if (ingest_job_stats_init(stats, err))
        return -1;
    double t0 = tf_now();
    const IngestStageCommon *c = &o->common;
    const TfStopFlag *stop = c->stop;
    if (!ingest_job_name_ok(c->job) || strlen(c->job) > 60)
        return tf_fail(err, "job name '%s' is not [A-Za-z0-9._-]+ of at most 60 bytes (it prefixes shard names)",
                       c->job ? c->job : "(null)");
    if (!o->tokenizer || !o->manifest.path)
        return tf_fail(err, "job %s: a tokenizer and a manifest are required", c->job);
    if (!c->sink.out && !c->sink.to)
        return tf_fail(err, "job %s: no output (a folder and/or a kafka:// topic)", c->job);
    char stats_dir[4096];
    if (ingest_stats_dir(c, stats_dir, sizeof stats_dir, err))
        return -1;

    int rc = -1, threads = c->threads > 0 ? c->threads : tf_cpu_count();
    Run r = {.o = o, .stats = stats, .limit = {.burst = 10, .period_s = 10}};
    ingest_stage_metrics_init(&r.m);
    Stage st = {.o = o, .crop_gauge = r.m.crop_queue};
    pthread_mutex_init(&st.lock, NULL);
    pthread_cond_init(&st.work, NULL);
    pthread_cond_init(&st.done_cv, NULL);
    Worker *workers = calloc((size_t)threads, sizeof *workers);
    ShardKeySet *folder_done = NULL, *topic_done = NULL, *seen = shard_keyset_new();
    ManifestReader *rd = NULL;
    FetchResult *res[256];
    r.fail_lines = json_array();
    if (!workers || !seen || !r.fail_lines) {
        tf_fail(err, "out of memory");
        goto done;
    }

    /* keys already written: the caller's set, else each sink's own (a
     * folder's: the job's shards JOB-*, where its rows can only be) */
    if (!c->done) {
        char prefix[256];
        snprintf(prefix, sizeof prefix, "%s-", c->job);
        if ((c->sink.out && !(folder_done = shard_keyset_new())) || (c->sink.to && !(topic_done = shard_keyset_new()))) {
            tf_fail(err, "out of memory");
            goto done;
        }
        if (ingest_sink_keys(&c->sink, prefix, folder_done, topic_done, err))
            goto done;
    }

    ShardFacts facts = {0};
    snprintf(facts.tokenizer_id, sizeof facts.tokenizer_id, "%s", tokenizer_identity(o->tokenizer));
    if (!(r.out = ingest_out_open(&c->sink, c->job, &facts, stop, err)))
        goto done;
    if (!(rd = manifest_reader_open(&o->manifest, err)))
        goto done;
    FetchOptions fo = o->fetch;
    if (!fo.stop)
        fo.stop = stop;
    if (!(st.fetcher = fetcher_new(&fo, err)))
        goto done;
    for (int t = 0; t < threads; t++) {
        Worker *w = &workers[t];
        w->st = &st;
        size_t side = (size_t)(o->crop.size > 0 ? o->crop.size : 256);
        if (!(w->cropper = image_cropper_new(&o->crop, err)) || !(w->session = tokenizer_session_new(o->tokenizer, err)))
            goto done;
        if (!(w->rgb = malloc(side * side * 3))) {
            tf_fail(err, "out of memory");
            goto done;
        }
        int e = pthread_create(&w->thread, NULL, worker_main, w);
        if (e) {
            tf_fail(err, "cannot start a crop thread: %s", strerror(e));
            goto done;
        }
        w->started = 1;
    }

    size_t max_in_flight = o->max_rows_in_flight ? o->max_rows_in_flight : 4 * (size_t)(fo.concurrency > 0 ? fo.concurrency : 64);
    int eof = 0, failed = 0;
    IngestRow row;
    char why[256];
    while (!failed) {
        if (tf_stop_requested(stop))
            break;
        /* take rows in */
        while (!eof && (size_t)r.in_flight < max_in_flight && !tf_stop_requested(stop)) {
            memset(&row, 0, sizeof row);
            why[0] = 0;
            int k = manifest_reader_next(rd, &row, why, sizeof why, err);
            if (k < 0) {
                failed = 1;
                break;
            }
            if (k == MANIFEST_END) {
                eof = 1;
                break;
            }
            if (o->only_lines && !line_in(o->only_lines, row.line))
                continue;
            if (k == MANIFEST_BAD_ROW) {
                if (outcome_failed(&r, &row, "bad_row", 0, why, err))
                    failed = 1;
                continue;
            }
            size_t klen = strlen(row.key);
            int in_folder = !c->sink.out || (c->done ? shard_keyset_has(c->done, row.key, klen, NULL)
                                               : shard_keyset_has(folder_done, row.key, klen, NULL));
            int in_topic = !c->sink.to || (c->done ? shard_keyset_has(c->done, row.key, klen, NULL)
                                              : shard_keyset_has(topic_done, row.key, klen, NULL));
            if (in_folder && in_topic) {
                outcome_skipped(&r);
                continue;
            }
            uint64_t first = 0;
            int added = shard_keyset_add(seen, row.key, klen, row.line, &first);
            if (added < 0) {
                tf_fail(err, "out of memory");
                failed = 1;
                break;
            }
            if (!added) {
                char w2[160];
                snprintf(w2, sizeof w2, "key '%.64s' is the key of line %llu already", row.key,
                         (unsigned long long)first);
                if (outcome_failed(&r, &row, "duplicate_key", 0, w2, err))
                    failed = 1;
                continue;
            }
            Item *it = calloc(1, sizeof *it);
            if (!it || ingest_row_copy(&it->row, &row)) {
                free(it);
                it = NULL;
                tf_fail(err, "out of memory");
                failed = 1;
                break;
            }
            item_link(&r.items, it);
            it->to_folder = !in_folder;
            it->to_topic = !in_topic;
            if (fetcher_submit(st.fetcher, it->row.image, it->row.has_sha256 ? it->row.sha256 : NULL, it, err)) {
                item_free(&r.items, it);
                failed = 1;
                break;
            }
            in_flight_add(&r, 1);
        }
        if (failed || (eof && r.in_flight == 0))
            break;
        int64_t fq = (int64_t)fetcher_unfinished(st.fetcher);
        tf_gauge_add(r.m.fetch_queue, (double)(fq - r.fetch_queue));
        ingest_progress_add(c->progress, INGEST_P_FETCH_QUEUE, fq - r.fetch_queue);
        r.fetch_queue = fq;
        /* results of the fetcher: failures end here, bodies go to the crop threads */
        int n = 0;
        if (fq > 0) {
            n = fetcher_poll(st.fetcher, 100, res, sizeof res / sizeof res[0], err);
            if (n < 0) {
                failed = 1;
                break;
            }
        } else {
            pthread_mutex_lock(&st.lock);
            if (!st.done_head) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 100 * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&st.done_cv, &st.lock, &ts);
            }
            pthread_mutex_unlock(&st.lock);
        }
        for (int i = 0; i < n; i++) {
            Item *it = res[i]->user;
            stats->bytes += res[i]->bytes;
            tf_counter_add(r.m.bytes, res[i]->bytes);
            ingest_progress_add(c->progress, INGEST_P_BYTES, (int64_t)res[i]->bytes);
            ingest_latencies_add(&r.lat, res[i]->elapsed_s);
            if (res[i]->outcome != FETCH_OK) {
                in_flight_add(&r, -1);
                if (!failed && outcome_failed(&r, &it->row, res[i]->label,
                                              fetch_outcome_transient(res[i]->outcome, res[i]->http_status),
                                              res[i]->reason, err))
                    failed = 1;
                fetch_result_free(res[i]);
                item_free(&r.items, it);
                continue;
            }
            it->res = res[i];
            pthread_mutex_lock(&st.lock);
            if (st.crop_tail)
                st.crop_tail->next = it;
            else
                st.crop_head = it;
            st.crop_tail = it;
            st.crop_n++;
            pthread_cond_signal(&st.work);
            pthread_mutex_unlock(&st.lock);
            ingest_progress_add(c->progress, INGEST_P_CROP_QUEUE, 1);
            tf_gauge_add(r.m.crop_queue, 1);
        }
        /* finished crops to the sinks */
        pthread_mutex_lock(&st.lock);
        Item *done_list = st.done_head;
        st.done_head = st.done_tail = NULL;
        pthread_mutex_unlock(&st.lock);
        while (done_list) {
            Item *it = done_list;
            done_list = it->next;
            it->next = NULL;
            if (!failed && item_finish(&r, it, err) < 0)
                failed = 1;
            else if (failed) {
                in_flight_add(&r, -1);
                item_free(&r.items, it);
            }
        }
    }
    /* stop the crop threads; what they still hold is dropped (not done) */
    pthread_mutex_lock(&st.lock);
    st.quit = 1;
    pthread_cond_broadcast(&st.work);
    pthread_mutex_unlock(&st.lock);
    for (int t = 0; t < threads; t++)
        if (workers[t].started) {
            pthread_join(workers[t].thread, NULL);
            workers[t].started = 0;
        }
    if (failed)
        goto done;
    int stopped = tf_stop_requested(stop) && !(eof && r.in_flight == 0);
    /* publish: shards renamed into place and in the manifest, every delivery report in */
    if (ingest_out_finish(r.out, err)) {
        if (stopped)
            tf_log(TF_LOG_WARN, TAG, "job %s: stopped before its output was durable: %s", c->job, err->msg);
        else
            goto done;
    }
    stats->seconds = tf_now() - t0;
    stats->fetch_p50_s = ingest_latencies_quantile(&r.lat, 0.5);
    stats->fetch_p99_s = ingest_latencies_quantile(&r.lat, 0.99);
    if (stopped) {
        stats->stopped = 1;
        tf_log(TF_LOG_INFO, TAG, "job %s stopped after %llu row(s); a rerun resumes it", c->job,
               (unsigned long long)stats->attempted);
        rc = 0;
        goto done;
    }
    if (stats_files_write(o, stats_dir, stats, r.fail_lines, err))
        goto done;
    rc = 0;
done:
    stats->seconds = tf_now() - t0;
    if (workers) {
        pthread_mutex_lock(&st.lock);
        st.quit = 1;
        pthread_cond_broadcast(&st.work);
        pthread_mutex_unlock(&st.lock);
        for (int t = 0; t < threads; t++) {
            if (workers[t].started)
                pthread_join(workers[t].thread, NULL);
            image_cropper_free(workers[t].cropper);
            tokenizer_session_free(workers[t].session);
            token_ids_deinit(&workers[t].tokens);
            free(workers[t].rgb);
        }
    }
    /* what is left in the queues and the fetcher was not done: the fetcher
     * frees its results, the items are freed from the list */
    ingest_progress_add(c->progress, INGEST_P_CROP_QUEUE, -(int64_t)st.crop_n);
    tf_gauge_add(r.m.crop_queue, -(double)st.crop_n);
    fetcher_free(st.fetcher);
    while (r.items.head)
        item_free(&r.items, r.items.head);
    in_flight_add(&r, -r.in_flight);
    tf_gauge_add(r.m.fetch_queue, (double)-r.fetch_queue);
    ingest_progress_add(c->progress, INGEST_P_FETCH_QUEUE, -r.fetch_queue);
    ingest_out_free(r.out);
    manifest_reader_free(rd);
    shard_keyset_free(folder_done);
    shard_keyset_free(topic_done);
    shard_keyset_free(seen);
    json_decref(r.fail_lines);
    ingest_latencies_deinit(&r.lat);
    free(workers);
    pthread_cond_destroy(&st.work);
    pthread_cond_destroy(&st.done_cv);
    pthread_mutex_destroy(&st.lock);
    return rc;
}
