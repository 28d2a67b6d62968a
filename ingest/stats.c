/* stats.c: what both ingest stages share: live progress counters read by
 * the progress line, per-job stats files (JOB.STAGE.json: the job is done
 * once it exists), fetch latency quantiles, the stage metrics, and
 * ingest_job_done / ingest_job_stats_deinit from ingest.h. */
#include "stats_internal.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- progress ---- */

struct IngestProgress {
    _Atomic int64_t v[INGEST_P_COUNT];
};

IngestProgress *ingest_progress_new(void)
{
    IngestProgress *p = calloc(1, sizeof *p);
    if (p)
        for (int i = 0; i < INGEST_P_COUNT; i++)
            atomic_init(&p->v[i], 0);
    return p;
}

void ingest_progress_free(IngestProgress *p)
{
    free(p);
}

void ingest_progress_add(IngestProgress *p, IngestProgressField field, int64_t delta)
{
    if (p && field >= 0 && field < INGEST_P_COUNT)
        atomic_fetch_add_explicit(&p->v[field], delta, memory_order_relaxed);
}

void ingest_progress_plan(IngestProgress *p, uint64_t rows)
{
    ingest_progress_add(p, INGEST_P_PLANNED, (int64_t)rows);
}

void ingest_progress_read(const IngestProgress *p, IngestProgressSnapshot *o)
{
    memset(o, 0, sizeof *o);
    if (!p)
        return;
    int64_t v[INGEST_P_COUNT];
    for (int i = 0; i < INGEST_P_COUNT; i++)
        v[i] = atomic_load_explicit(&((IngestProgress *)p)->v[i], memory_order_relaxed);
    o->rows = (uint64_t)v[INGEST_P_ROWS];
    o->ok = (uint64_t)v[INGEST_P_OK];
    o->failed = (uint64_t)v[INGEST_P_FAILED];
    o->skipped = (uint64_t)v[INGEST_P_SKIPPED];
    o->bytes = (uint64_t)v[INGEST_P_BYTES];
    o->encoded = (uint64_t)v[INGEST_P_ENCODED];
    o->in_flight = v[INGEST_P_IN_FLIGHT];
    o->fetch_queue = v[INGEST_P_FETCH_QUEUE];
    o->crop_queue = v[INGEST_P_CROP_QUEUE];
    o->encode_queue = v[INGEST_P_ENCODE_QUEUE];
    o->planned = (uint64_t)v[INGEST_P_PLANNED];
}

void ingest_progress_format(const IngestProgressSnapshot *now, const IngestProgressSnapshot *before, double dt,
                            double elapsed, char *out, size_t cap)
{
    double rows_s = dt > 0 ? (double)(now->rows - before->rows) / dt : 0;
    double mb_s = dt > 0 ? (double)(now->bytes - before->bytes) / dt / 1e6 : 0;
    uint64_t judged = now->ok + now->failed;
    double success = judged ? 100.0 * (double)now->ok / (double)judged : 0;
    char eta[32] = "?";
    double avg = elapsed > 0 ? (double)now->rows / elapsed : 0;
    if (now->planned && now->rows >= now->planned)
        snprintf(eta, sizeof eta, "0s");
    else if (now->planned && avg > 0) {
        double s = (double)(now->planned - now->rows) / avg;
        if (s >= 3600)
            snprintf(eta, sizeof eta, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
        else
            snprintf(eta, sizeof eta, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    }
    int k = snprintf(out, cap, "%llu", (unsigned long long)now->rows);
    if (k > 0 && (size_t)k < cap && now->planned)
        k += snprintf(out + k, cap - (size_t)k, "/%llu", (unsigned long long)now->planned);
    if (k > 0 && (size_t)k < cap)
        k += snprintf(out + k, cap - (size_t)k,
                      " rows  %.0f rows/s  ok %.1f%%  %.1f MB/s  in flight %lld  queues fetch %lld crop %lld",
                      rows_s, success, mb_s, (long long)now->in_flight, (long long)now->fetch_queue,
                      (long long)now->crop_queue);
    if (k > 0 && (size_t)k < cap && (now->encoded || now->encode_queue))
        k += snprintf(out + k, cap - (size_t)k, " encode %lld (%llu encoded)", (long long)now->encode_queue,
                      (unsigned long long)now->encoded);
    if (k > 0 && (size_t)k < cap)
        snprintf(out + k, cap - (size_t)k, "  ETA %s", eta);
}

/* ---- per-job stats ---- */

int ingest_job_stats_init(IngestJobStats *st, TfError *err)
{
    memset(st, 0, sizeof *st);
    if (!(st->failures = json_object()))
        return tf_fail(err, "out of memory");
    return 0;
}

void ingest_job_stats_deinit(IngestJobStats *st)
{
    if (!st)
        return;
    json_decref(st->failures);
    st->failures = NULL;
}

void ingest_job_stats_fail(IngestJobStats *st, const char *reason)
{
    st->failed++;
    json_t *n = json_object_get(st->failures, reason);
    json_object_set_new(st->failures, reason, json_integer(n ? json_integer_value(n) + 1 : 1));
}

int ingest_stats_dir(const IngestStageCommon *c, char *out, size_t cap, TfError *err)
{
    if (c->stats_dir) {
        if ((size_t)snprintf(out, cap, "%s", c->stats_dir) >= cap)
            return tf_fail(err, "stats folder path too long");
        return 0;
    }
    if (!c->sink.out)
        return tf_fail(err, "a stats folder is needed when the output is only a topic (stats_dir)");
    if (tf_path_join(out, cap, c->sink.out, "ingest-jobs"))
        return tf_fail(err, "stats folder path too long");
    return 0;
}

int ingest_stats_path(const char *stats_dir, const char *job, const char *suffix, char *out, size_t cap, TfError *err)
{
    if (!ingest_job_name_ok(job))
        return tf_fail(err, "job name '%s' is not [A-Za-z0-9._-]+", job ? job : "(null)");
    int n = snprintf(out, cap, "%s/%s.%s", stats_dir, job, suffix);
    if (n < 0 || (size_t)n >= cap)
        return tf_fail(err, "stats path too long");
    return 0;
}

json_t *ingest_job_stats_json(const char *job, const char *stage, const char *manifest, uint64_t start, uint64_t end,
                              const IngestJobStats *st)
{
    json_t *fs = json_deep_copy(st->failures ? st->failures : json_object());
    json_t *j = json_pack("{s:s,s:s,s:s?,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:I,s:f,s:{s:f,s:f},s:f,s:b}", "job", job,
                          "stage", stage, "manifest", manifest, "start", (json_int_t)start, "end", (json_int_t)end,
                          "attempted", (json_int_t)st->attempted, "succeeded", (json_int_t)st->succeeded, "skipped",
                          (json_int_t)st->skipped, "failed", (json_int_t)st->failed, "failures", fs, "bytes",
                          (json_int_t)st->bytes, "seconds", st->seconds, "fetch_seconds", "p50", st->fetch_p50_s,
                          "p99", st->fetch_p99_s, "rows_per_second",
                          st->seconds > 0 ? (double)st->attempted / st->seconds : 0.0, "stopped", st->stopped);
    return j;
}

int ingest_job_stats_write(const char *stats_dir, const char *job, const char *stage, const json_t *stats,
                           TfError *err)
{
    char path[4096], name[512];
    if (tf_mkdir_p(stats_dir, err))
        return -1;
    snprintf(name, sizeof name, "%s.json", stage);
    if (ingest_stats_path(stats_dir, job, name, path, sizeof path, err))
        return -1;
    return tf_json_write_file_atomic(path, stats, err);
}

int ingest_job_done(const char *stats_dir, const char *job, const char *stage, json_t **out, TfError *err)
{
    if (out)
        *out = NULL;
    char path[4096], name[512];
    snprintf(name, sizeof name, "%s.json", stage);
    if (ingest_stats_path(stats_dir, job, name, path, sizeof path, err))
        return -1;
    if (access(path, F_OK) != 0) {
        if (errno == ENOENT)
            return 0;
        return tf_fail(err, "%s: %s", path, strerror(errno));
    }
    json_t *j = tf_json_load_file(path, 64u << 20, err);
    if (!j)
        return -1;
    json_t *jj = json_object_get(j, "job");
    if (!json_is_object(j) || !json_is_string(jj) || strcmp(json_string_value(jj), job)) {
        json_decref(j);
        return tf_fail(err, "%s: not the stats of job %s (damaged? delete it to redo the job)", path, job);
    }
    if (out)
        *out = j;
    else
        json_decref(j);
    return 1;
}

/* ---- latencies ---- */

void ingest_latencies_add(IngestLatencies *l, double s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        double *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = s;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double ingest_latencies_quantile(IngestLatencies *l, double q)
{
    if (!l->n)
        return 0;
    qsort(l->v, l->n, sizeof *l->v, cmp_double);
    size_t k = (size_t)ceil(q * (double)l->n);
    return l->v[k ? k - 1 : 0];
}

void ingest_latencies_deinit(IngestLatencies *l)
{
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* ---- metrics ---- */

static const char ROWS_HELP[] = "Manifest rows that reached an outcome: ok (written), failed, skipped "
                                "(already in the dataset)";

void ingest_stage_metrics_init(IngestStageMetrics *m)
{
    m->ok = tf_counter("transfuse_ingest_rows_total", ROWS_HELP, "outcome", "ok", NULL);
    m->failed = tf_counter("transfuse_ingest_rows_total", ROWS_HELP, "outcome", "failed", NULL);
    m->skipped = tf_counter("transfuse_ingest_rows_total", ROWS_HELP, "outcome", "skipped", NULL);
    m->bytes = tf_counter("transfuse_ingest_bytes_total", "Bytes of images read", NULL);
    m->encoded = tf_counter("transfuse_encode_images_total", "Crops encoded by the VAE", NULL);
    m->in_flight = tf_gauge("transfuse_ingest_in_flight", "Rows taken into the pipeline without an outcome yet", NULL);
    m->planned = tf_gauge("transfuse_ingest_rows_planned", "Rows in the manifest of the run", NULL);
    static const char qhelp[] = "Items waiting in a queue of the pipeline";
    m->fetch_queue = tf_gauge("transfuse_ingest_queue_depth", qhelp, "queue", "fetch", NULL);
    m->crop_queue = tf_gauge("transfuse_ingest_queue_depth", qhelp, "queue", "crop", NULL);
    m->encode_queue = tf_gauge("transfuse_ingest_queue_depth", qhelp, "queue", "encode", NULL);
    m->encode_batch = tf_histogram("transfuse_encode_batch_seconds", "Time of one VAE encoder batch",
                                   TF_SECONDS_BUCKETS, TF_SECONDS_BUCKETS_N, NULL);
}

void ingest_metrics_failure(const char *reason)
{
    tf_counter_add(tf_counter("transfuse_ingest_failures_total", "Failed rows by reason", "reason", reason, NULL), 1);
}
