/* stats_internal.h: what the two stages (stage_fetch.c, stage_encode.c),
 * `ingest run` and `ingest worker` share besides ingest.h: live progress
 * counters, per-job stats files, the stage metrics and the progress line.
 * Private to ingest/. */
#ifndef TRANSFUSE_INGEST_STATS_INTERNAL_H
#define TRANSFUSE_INGEST_STATS_INTERNAL_H

#include "ingest.h"

/* ---- manifest rows (manifest.c) ---- */

/* Frees a row's strings and zeroes it. */
void ingest_row_deinit(IngestRow *r);
/* A deep copy of src (a reader's row lives only until its next read) into
 * dst. Returns 0, or -1 when out of memory (dst then empty). */
int ingest_row_copy(IngestRow *dst, const IngestRow *src);

/* ---- live progress (IngestProgress) ---- */

typedef enum IngestProgressField {
    INGEST_P_ROWS = 0,     /* rows at an outcome */
    INGEST_P_OK,
    INGEST_P_FAILED,
    INGEST_P_SKIPPED,
    INGEST_P_BYTES,        /* image bytes fetched */
    INGEST_P_ENCODED,      /* crops encoded (stage 2) */
    INGEST_P_IN_FLIGHT,    /* rows taken in without an outcome yet (gauge: add +1 / -1) */
    INGEST_P_FETCH_QUEUE,  /* URLs submitted to a fetcher without a result (gauge) */
    INGEST_P_CROP_QUEUE,   /* bodies waiting for a decode/crop thread (gauge) */
    INGEST_P_ENCODE_QUEUE, /* crops waiting for the VAE (gauge) */
    INGEST_P_PLANNED,      /* rows planned */
    INGEST_P_COUNT
} IngestProgressField;

/* Adds delta to one counter (gauges go down with a negative delta). p NULL: no-op. Thread-safe. */
void ingest_progress_add(IngestProgress *p, IngestProgressField field, int64_t delta);

/* One terminal line from two snapshots `dt` seconds apart (rates) and the
 * time since the start (ETA from `planned`): rows/s, success rate, MB/s, in
 * flight, queue depths, ETA. Writes into out (of size cap). */
void ingest_progress_format(const IngestProgressSnapshot *now, const IngestProgressSnapshot *before, double dt,
                            double elapsed, char *out, size_t cap);

/* ---- per-job stats ---- */

/* Zeroes *st and gives it an empty failures object. Returns 0, or -1 with err (out of memory). */
int ingest_job_stats_init(IngestJobStats *st, TfError *err);

/* Counts one failed row of `reason` (failed++, failures[reason]++). */
void ingest_job_stats_fail(IngestJobStats *st, const char *reason);

/* The stats folder of a stage call: common->stats_dir, else OUT/ingest-jobs.
 * Returns 0, or -1 with err when neither is given or the path is too long. */
int ingest_stats_dir(const IngestStageCommon *c, char *out, size_t cap, TfError *err);

/* STATS_DIR/JOB.SUFFIX into out. Returns 0, or -1 with err when it does not fit. */
int ingest_stats_path(const char *stats_dir, const char *job, const char *suffix, char *out, size_t cap, TfError *err);

/* The stats JSON of a finished job (format in ingest.h; new reference, NULL
 * when out of memory). `manifest`, `start`, `end` describe the input
 * (stage 2: the source; manifest may be NULL). */
json_t *ingest_job_stats_json(const char *job, const char *stage, const char *manifest, uint64_t start, uint64_t end,
                              const IngestJobStats *st);

/* Writes the stats JSON as STATS_DIR/JOB.STAGE.json atomically (the folder
 * made when missing): after this the job counts as done. Returns 0 or -1 with err. */
int ingest_job_stats_write(const char *stats_dir, const char *job, const char *stage, const json_t *stats,
                           TfError *err);

/* Fetch latencies of one job, for p50/p99. */
typedef struct IngestLatencies {
    double *v;
    size_t n, cap;
} IngestLatencies;

/* Adds one latency (dropped when out of memory: a statistic, never an error). */
void ingest_latencies_add(IngestLatencies *l, double seconds);
/* The q-quantile (0..1, nearest rank) of what was added; 0 when empty. Sorts in place. */
double ingest_latencies_quantile(IngestLatencies *l, double q);
void ingest_latencies_deinit(IngestLatencies *l);

/* ---- metrics (core registry; names per docs/OPERATIONS.md and ops/top_collect.c) ---- */

typedef struct IngestStageMetrics {
    TfCounter *ok, *failed, *skipped, *bytes, *encoded;
    TfGauge *in_flight, *planned, *fetch_queue, *crop_queue, *encode_queue;
    TfHistogram *encode_batch;
} IngestStageMetrics;

/* Looks the series up (once per call is fine; they live as long as the
 * process). A series the registry refuses is NULL: updates are no-ops. */
void ingest_stage_metrics_init(IngestStageMetrics *m);

/* transfuse_ingest_failures_total{reason} += 1 (looked up per call: reasons are open-ended, "http_NNN"). */
void ingest_metrics_failure(const char *reason);

#endif
