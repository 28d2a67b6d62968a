/* ingest: from a manifest of (image, caption) rows to a dataset of Sample
 * records.
 *
 * A manifest is TSV, CSV (RFC 4180 quoting) or JSON lines, with a header
 * naming the columns (TSV/CSV) or keys (JSONL): an image column (default
 * `url`), a caption column (default `caption`), optionally a key column;
 * every other column is kept in the record's `extra` map. Images are local
 * paths or file:// URLs here; fetching http(s) URLs with libcurl is the
 * fetcher's job (not built yet), and such rows fail with that reason.
 *
 * Each row is read, hashed (SHA-256 of the original bytes), decoded and
 * center-cropped (preprocess image), its caption tokenized (preprocess
 * tokenizer), and the crop encoded to a latent posterior (preprocess VAE);
 * the Sample goes to a shard writer (shards). A bad row is one counted
 * failure with its class and reason; it never stops the run. Running again
 * on the same output resumes: rows whose key is already in the dataset are
 * skipped, and a shard interrupted by a kill was never published, so
 * nothing is lost or duplicated. */
#ifndef TRANSFUSE_INGEST_H
#define TRANSFUSE_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"
#include "preprocess.h"
#include "shards.h"

/* ---- manifests ---- */

typedef struct IngestRow {
    char *image;            /* path or URL */
    char *caption;
    char *key;              /* from the key column, or derived from the row (IngestColumns) */
    char **extra_names;     /* other columns, kept in Sample.extra */
    char **extra_values;
    size_t n_extra;
    uint64_t line;          /* 1-based line of the manifest */
    uint64_t offset;        /* byte offset of the row in the manifest's (decompressed) text */
    unsigned char sha256[32]; /* expected SHA-256 of the image bytes (hash column), when has_sha256 */
    int has_sha256;
} IngestRow;

typedef struct IngestManifest {
    IngestRow *rows;
    size_t n_rows;
} IngestManifest;

typedef struct IngestColumns {
    const char *image;      /* default "url" */
    const char *caption;    /* default "caption" */
    const char *key;        /* NULL: the key is derived from the row: the first
                               INGEST_KEY_HEX hex digits of SHA-256 over the row's
                               line number, image and caption, so every row has its
                               own key (the same image with two captions gives two
                               samples) and the same manifest gives the same keys on
                               every run */
    const char *hash;       /* NULL: none; else a column of SHA-256 hex digests of the
                               image bytes: a download that differs is hash_mismatch
                               (an empty value: not checked) */
} IngestColumns;

#define INGEST_KEY_HEX 24

/* Loads a manifest; the format comes from the extension (.tsv, .csv,
 * .jsonl/.json) and relative image paths are taken relative to the
 * manifest's folder. Returns NULL with err naming the file and line when a
 * row cannot be parsed or a named column is missing. */
IngestManifest *ingest_manifest_load(const char *path, const IngestColumns *cols, TfError *err);
void ingest_manifest_free(IngestManifest *m);

/* ---- the local pipeline ---- */

typedef struct IngestOptions {
    const char *manifest;
    const char *out;              /* dataset folder */
    const char *tokenizer;        /* tokenizer.json or tokenizer.model */
    const char *vae;              /* diffusers AutoencoderKL folder */
    IngestColumns columns;
    int size;                     /* crop side, default 256 */
    int threads;                  /* default: all cores */
    int batch;                    /* VAE batch, default 8 */
    const char *latent_dtype;     /* "bf16" (default), "f16", "f32" */
    uint64_t shard_records;       /* default 100000 (shards' default) */
    uint64_t shard_bytes;         /* default 256 MiB */
    int bos;                      /* prepend BOS to token ids (default 1) */
    int regex_rust;               /* split pattern as Hugging Face's Rust library runs it
                                     (default 0: as the transformers.js reference) */
    const TfStopFlag *stop;       /* NULL: never stops; see ingest_run */
} IngestOptions;

/* Failure classes beyond the image ones, indexed after IMAGE_STATUS_COUNT:
 * the image could not be read; the caption could not be tokenized; the
 * row's key is the key of an earlier row of the same manifest (only with a
 * key column: derived keys are unique per row). */
enum { INGEST_FAIL_READ = 0, INGEST_FAIL_TOKENIZE, INGEST_FAIL_DUPLICATE_KEY, INGEST_FAIL_COUNT };

#define INGEST_FAIL_CLASSES (IMAGE_STATUS_COUNT + INGEST_FAIL_COUNT)

/* The stable name of failure class `cls` (an ImageStatus other than
 * IMAGE_OK, or IMAGE_STATUS_COUNT + INGEST_FAIL_*): "truncated", ...,
 * "read", "tokenize", "duplicate_key". Used in the stats JSON and as the
 * metrics' reason label. NULL outside the range. */
const char *ingest_failure_name(int cls);

typedef struct IngestStats {
    uint64_t rows, written, skipped_existing, failed;
    uint64_t failures[INGEST_FAIL_CLASSES]; /* by class (index 0, IMAGE_OK, stays 0) */
    double seconds;
    int stopped;                  /* 1 when the run ended on a stop request */
} IngestStats;

/* Runs the pipeline. Returns 0 when it ran (whatever the per-row
 * outcomes, which are in *stats), -1 with err filled when it could not
 * (bad options, unreadable model files, an output that holds other data,
 * a write error). When opts->stop is set during the run (it is looked at
 * between rows and between the VAE's layers, so within about a second) the
 * batch in hand is dropped, the records finished before it are published,
 * stats->stopped is set and 0 is returned: a rerun resumes after them. */
int ingest_run(const IngestOptions *opts, IngestStats *stats, TfError *err);

/* Failure limits, checked on a finished run's stats: more than
 * max_failures failed rows (< 0: no limit), or a share of failed rows above
 * max_rate (< 0: no limit). The share is failed / rows, rows counting every
 * row that reached an outcome in this run (written, already there, failed),
 * so a rerun that skips the rows done before gets the rate of the whole
 * manifest. Returns 1 with a sentence in why (of size cap) when a limit was
 * passed, else 0. */
int ingest_stats_over_limit(const IngestStats *stats, int64_t max_failures, double max_rate, char *why, size_t cap);

/* `transfuse ingest`. */
int ingest_main(int argc, char **argv);

/* ---- fetching ----
 *
 * The fetcher: many HTTP(S) transfers in flight on one thread (libcurl's
 * multi interface driven through epoll), for manifest rows that name URLs.
 *
 * Every submitted URL ends as exactly one FetchResult: FETCH_OK with the
 * body, or one classified failure (FetchOutcome, a label such as "http_404"
 * and a human reason). On the way the fetcher
 *   - bounds the transfers in flight (`concurrency`), per host as well
 *     (`max_per_host`, also libcurl's per-host connection cap), and spaces
 *     requests to one host with a token bucket (`host_rate`, `host_burst`);
 *     what cannot start yet waits in the fetcher's queue, not in libcurl;
 *   - times out connects and whole attempts, and retries timeouts, network
 *     resets, 429 and 5xx with exponential backoff and jitter, honouring
 *     Retry-After (seconds or HTTP-date) up to `retry_max_s`: a server that
 *     asks for a longer wait gets no early retry, the row fails;
 *   - follows redirects itself (bounded, loops detected), each hop through
 *     the same checks and the same per-host queue;
 *   - refuses, after DNS resolution and for every connection of every hop,
 *     private, loopback, link-local, unique-local, multicast, reserved and
 *     unspecified addresses (IPv4 and IPv6, mapped forms included), unless
 *     `allow_private_networks` or the address is in `allow_addresses`;
 *   - speaks http and https only (TLS verified; HTTP/2 where offered,
 *     keep-alive reuse); file:// and absolute paths are read directly only
 *     with `allow_file`; a redirect never leads to a file;
 *   - caps the body while receiving (`max_bytes`; a declared Content-Length
 *     above it stops the transfer before any body byte), honours the
 *     X-Robots-Tag directives noai, noimageai, noindex, noimageindex and
 *     none (unscoped or scoped to our token) unless `ignore_robots`, and
 *     recognises images by their bytes, not by the Content-Type.
 *
 * A fetcher belongs to the thread that calls it; only fetcher_wakeup may be
 * called from another thread. Several fetchers (one per thread) may share
 * DNS results and TLS sessions through a FetchShare. Metrics (the process
 * registry): transfuse_fetch_in_flight, transfuse_fetch_queued,
 * transfuse_fetch_bytes_total, transfuse_fetch_outcomes_total{outcome},
 * transfuse_fetch_retries_total, transfuse_fetch_redirects_total,
 * transfuse_fetch_seconds (submit to outcome). */

#include "preprocess.h"

typedef enum FetchOutcome {
    FETCH_OK = 0,
    FETCH_BAD_URL,            /* not a URL we can parse */
    FETCH_FORBIDDEN_SCHEME,   /* not http(s) (file:// without allow_file; any redirect off http(s)) */
    FETCH_DNS,                /* the name did not resolve */
    FETCH_CONNECT,            /* no connection (refused, unreachable) */
    FETCH_PRIVATE_ADDRESS,    /* every address of the name is private, loopback, ... */
    FETCH_TLS,                /* TLS handshake or certificate verification failed */
    FETCH_TIMEOUT,            /* connect or attempt timeout, after the retries */
    FETCH_NETWORK,            /* connection reset, empty reply, send/receive error, after the retries */
    FETCH_HTTP_3XX,           /* a redirect status without a usable Location, or 304 */
    FETCH_HTTP_4XX,           /* label http_NNN */
    FETCH_HTTP_5XX,           /* label http_NNN, after the retries */
    FETCH_REDIRECT_LOOP,      /* a redirect back to a URL of the same chain */
    FETCH_TOO_MANY_REDIRECTS, /* more than max_redirects hops */
    FETCH_TOO_LARGE,          /* body (or its declared Content-Length) above max_bytes */
    FETCH_TRUNCATED,          /* the body ended before its Content-Length */
    FETCH_OPTED_OUT,          /* X-Robots-Tag forbids this use */
    FETCH_NOT_IMAGE,          /* the bytes are no image (HTML, text, empty) */
    FETCH_HASH_MISMATCH,      /* SHA-256 of the body differs from the expected one */
    FETCH_READ,               /* a local file could not be read */
    FETCH_INTERNAL,           /* out of memory, or a libcurl error of no class above */
    FETCH_OUTCOME_COUNT
} FetchOutcome;

/* A stable class name: "ok", "bad_url", ..., "http_4xx", "http_5xx", ... */
const char *fetch_outcome_name(FetchOutcome outcome);

/* 1 when redoing the row later may well succeed (dns, connect, timeout,
 * network, truncated, 408, 429, 5xx): what --retry-failed re-attempts by
 * default. */
int fetch_outcome_transient(FetchOutcome outcome, int http_status);

/* DNS results and TLS sessions shared by several fetchers (locked, safe
 * across threads). Outlives every fetcher using it. */
typedef struct FetchShare FetchShare;
FetchShare *fetch_share_new(TfError *err);
void fetch_share_free(FetchShare *share);

typedef struct FetchOptions {
    int concurrency;              /* transfers in flight at once (default 64) */
    int max_per_host;             /* in flight (and connections) per host name (default 8) */
    double host_rate;             /* requests per second per host name; 0 = unlimited (default 0) */
    double host_burst;            /* token bucket size (default max(1, host_rate)) */
    double connect_timeout_s;     /* DNS + TCP + TLS (default 10) */
    double timeout_s;             /* one attempt, start to last byte (default 30) */
    int max_retries;              /* further attempts after a transient failure (default 2) */
    double retry_base_s;          /* first backoff; doubled per attempt, jittered 50-100% (default 1) */
    double retry_max_s;           /* longest wait before a retry, Retry-After included (default 60) */
    int max_redirects;            /* hops followed (default 5) */
    uint64_t max_bytes;           /* body cap (default 64 MiB) */
    const char *user_agent;       /* default "transfuse/VERSION (+honours X-Robots-Tag noai)" */
    const char *robots_token;     /* X-Robots-Tag scope we answer to (default: the user agent's
                                     product name, "transfuse") */
    int ignore_robots;            /* 1: do not honour X-Robots-Tag */
    int allow_private_networks;   /* 1: connect to any address */
    const char *allow_addresses;  /* comma list of CIDRs allowed although private ("10.1.2.0/24,::1") */
    int allow_file;               /* 1: file:// URLs and absolute paths are read directly */
    int any_content;              /* 1: keep bodies that are no image (no not_image check) */
    const char *const *resolve;   /* "host:port:address" entries, as curl --resolve */
    size_t n_resolve;
    const char *ca_file;          /* PEM bundle to trust instead of the system's */
    long dns_cache_s;             /* DNS cache lifetime (default 300) */
    int hash_bodies;              /* 1: SHA-256 of every ok body (otherwise only of those
                                     submitted with an expected hash) */
    FetchShare *share;            /* NULL: this fetcher's own caches */
    const TfStopFlag *stop;       /* set: no new transfers start, polls return at once */
    uint64_t seed;                /* jitter; 0: from the clock */
} FetchOptions;

/* Fills *o with the defaults above (the only valid way to start one). */
void fetch_options_init(FetchOptions *o);

typedef struct FetchResult {
    void *user;                   /* as submitted */
    const char *url;              /* as submitted */
    const char *final_url;        /* after redirects (the URL itself when none) */
    FetchOutcome outcome;
    char label[24];               /* outcome name, with the code for HTTP: "http_404" */
    char reason[256];             /* for people: what happened ("" when ok) */
    int http_status;              /* last HTTP status, 0 when none came */
    int http_version;             /* 10, 11, 20, 30; 0 when none */
    unsigned char *body;          /* FETCH_OK: the bytes (malloc'd; take it by setting NULL) */
    size_t body_len;
    char *content_type;           /* as the server sent it, or NULL */
    ImageFormat format;           /* sniffed from the bytes */
    unsigned char sha256[32];     /* of body, when has_sha256 */
    int has_sha256;               /* hash_bodies was on or an expected hash was given */
    int attempts;                 /* requests made for this URL, redirects excluded */
    int redirects;                /* hops followed */
    uint64_t bytes;               /* body bytes received over all attempts and hops */
    double queued_s;              /* submit to first request */
    double dns_s, connect_s, tls_s, ttfb_s, transfer_s; /* last request, from its start */
    double elapsed_s;             /* submit to outcome */
} FetchResult;

/* Frees a result and its body (unless taken); NULL is a no-op. */
void fetch_result_free(FetchResult *r);

typedef struct FetchStats {
    uint64_t submitted, completed, ok, retries, redirects, bytes;
    uint64_t outcomes[FETCH_OUTCOME_COUNT];
    size_t queued, in_flight, waiting_retry, done; /* now */
    size_t hosts;                 /* host entries held (queues, buckets) */
} FetchStats;

typedef struct Fetcher Fetcher;

/* A fetcher with the options (copied, strings included; the share and stop
 * flag are borrowed). Returns NULL with err filled on bad options. */
Fetcher *fetcher_new(const FetchOptions *opts, TfError *err);

/* Aborts what is in flight and frees everything, results not yet returned
 * included. NULL is a no-op. */
void fetcher_free(Fetcher *f);

/* Queues `url` (copied) for fetching. `sha256` (32 bytes, copied) is the
 * expected hash of the body or NULL; `user` comes back in the result.
 * Every URL is accepted: bad URLs, refused schemes and local files come
 * back as results from fetcher_poll too. Returns -1 only when out of
 * memory (or url is NULL). The queue is unbounded: the caller keeps
 * fetcher_unfinished() in check. */
int fetcher_submit(Fetcher *f, const char *url, const unsigned char *sha256, void *user, TfError *err);

/* Drives the transfers for up to timeout_ms (0: one pass without waiting),
 * returning as soon as at least one result is ready, when nothing is left
 * to do, or when the stop flag is set (checked at least every 100 ms).
 * Stores up to `cap` results in out[] (the caller owns them: free each with
 * fetch_result_free) and returns how many, or -1 with err filled when the
 * event loop itself failed. After a stop, transfers in flight keep going
 * on later polls; queued ones wait. */
int fetcher_poll(Fetcher *f, int timeout_ms, FetchResult **out, size_t cap, TfError *err);

/* URLs submitted whose result has not been returned by fetcher_poll yet. */
size_t fetcher_unfinished(const Fetcher *f);

/* Makes a fetcher_poll waiting on another thread return soon. Thread-safe. */
void fetcher_wakeup(Fetcher *f);

/* Counters since fetcher_new, and what is held now. */
void fetcher_stats(const Fetcher *f, FetchStats *stats);

/* Parses 64 hex digits into 32 bytes. Returns 0, or -1 when the text is
 * not exactly that. */
int fetch_sha256_from_hex(const char *hex, unsigned char out[32]);

/* `transfuse ingest fetch`: URLs in, one TSV line per URL out. */
int ingest_fetch_main(int argc, char **argv);

/* ---- end of fetching ---- */

/* ---- the stage API (issue 10): manifest slices -> crops -> latents ----
 *
 * Ingest from the web runs in two stages joined by records:
 *   stage 1, ingest_stage_fetch: one job = one slice of one manifest. Rows
 *     are read by a streaming ManifestReader, fetched (the fetcher above),
 *     decoded and center-cropped, their captions tokenized; every row ends
 *     as exactly one success (a Sample with key, caption, tokens, the crop
 *     in Sample.image, provenance and extra; no latents) or one classified
 *     failure (reason = the fetcher's label, "http_404", "timeout", ...,
 *     or the image decoder's class, "corrupt", "too_small", ..., or
 *     "tokenize", "bad_row", "duplicate_key").
 *   stage 2, ingest_stage_encode: Samples read through the record source
 *     (a crops folder, some of its shards, or a topic), the crop encoded by
 *     the VAE to latent mean and log-variance, the crop kept or dropped,
 *     the final record written.
 * Both write through an IngestSink: a dataset folder and/or a Kafka topic.
 *
 * Durability, the contract `ingest worker` builds on: a stage call returns
 * 0 only after everything it wrote is durable (its shards fsynced, renamed
 * and in the folder's manifest; every Kafka delivery report successful),
 * and only then writes its stats file (atomically). So "the stats file of
 * JOB exists" == "JOB is done"; commit a job's offset after the call
 * returned 0. Redoing a job (after a crash, a rebalance, or a rerun) never
 * duplicates a record: rows whose key is already in the sink's folder or
 * topic are skipped (ShardKeySet, IngestStageCommon.done), and a shard
 * interrupted by a kill was never published. Two workers running the SAME
 * job at the same moment can both write it: the consumer group must not
 * hand one job to two live workers (it does not, short of a session
 * timeout). */

/* -- streaming manifest reader -- */

typedef enum ManifestFormat {
    MANIFEST_AUTO = 0,       /* from the name (.tsv/.txt, .csv, .jsonl/.json, each optionally
                                .gz/.zst); compression is always told by the magic bytes */
    MANIFEST_TSV,
    MANIFEST_CSV,            /* RFC 4180 quoting; quoted fields may hold newlines */
    MANIFEST_JSONL,
} ManifestFormat;

typedef struct ManifestReaderOptions {
    const char *path;
    ManifestFormat format;
    IngestColumns columns;   /* image/url, caption, key, hash column names */
    /* The slice [start, end) in bytes of the DECOMPRESSED text: the rows
     * whose first byte lies in it (start 0 = the beginning, header
     * included; end 0 = to the end). `start` must be the offset of a row
     * (IngestRow.offset as a reader gave it, or 0): the planner cuts
     * jobs at row offsets it read, never at arbitrary bytes. */
    uint64_t start, end;
    /* The 1-based line number at `start` (IngestRow.line of that row).
     * 0: the reader counts it by reading [0, start). A plain file with
     * first_line given is read from `start` directly (seek); a compressed
     * one is always decompressed from the beginning (gzip and zstd streams
     * cannot seek), in bounded memory. */
    uint64_t first_line;
    /* Mixed into derived keys (no key column): keys are a function of
     * (identity, line, image, caption). NULL or "": none, the keys of
     * `transfuse ingest` (local files). `ingest run` uses the manifest's
     * file name, so two manifests never share a key by accident. */
    const char *identity;
    int resolve_relative;    /* 1: relative image paths are taken relative to the
                                manifest's folder (local files) */
} ManifestReaderOptions;

typedef struct ManifestReader ManifestReader;

/* Opens the manifest (reads the header of TSV/CSV, positions at start).
 * Returns NULL with err naming the file: unreadable, unknown format, a
 * header without the image or caption column. */
ManifestReader *manifest_reader_open(const ManifestReaderOptions *opts, TfError *err);

/* What manifest_reader_next returns besides -1 (err filled: a read or
 * decompression error; the reader cannot go on). */
#define MANIFEST_END 0
#define MANIFEST_ROW 1       /* *row filled (the reader owns its strings until the next call) */
#define MANIFEST_BAD_ROW 2   /* a row that cannot be used (wrong field count, not a JSON
                                object, no image value...): row->line, row->offset filled,
                                row->image may be NULL; `why` (of size cap) says what.
                                Counts as one failure of reason "bad_row"; reading goes on */

/* The next row of the slice. */
int manifest_reader_next(ManifestReader *r, IngestRow *row, char *why, size_t cap, TfError *err);

/* Byte offset (decompressed) and 1-based line of the next row: what a
 * planner records as a job's start and first_line after reading N rows. */
uint64_t manifest_reader_offset(const ManifestReader *r);
uint64_t manifest_reader_line(const ManifestReader *r);
/* Bytes read from the file so far (compressed bytes for .gz/.zst). */
uint64_t manifest_reader_file_bytes(const ManifestReader *r);
void manifest_reader_free(ManifestReader *r);

/* -- sinks -- */

typedef struct IngestSink {
    const char *out;              /* dataset folder, or NULL */
    const char *to;               /* kafka://HOST:PORT/TOPIC (existing topic), or NULL;
                                     at least one of the two */
    const char *const *kafka_config; /* extra librdkafka "key=value", NULL-terminated, or NULL */
    const char *flow_group;       /* KafkaSinkOptions.flow_group (the mock broker), or NULL */
    uint64_t shard_records;       /* default 100000 */
    uint64_t shard_bytes;         /* default 256 MiB */
    int no_fsync;                 /* tests only */
} IngestSink;

/* -- per-job stats --
 *
 * Written as STATS_DIR/JOB.STAGE.json (STAGE "fetch" or "encode"; STATS_DIR
 * = IngestStageCommon.stats_dir, default OUT/ingest-jobs) once the job's
 * output is durable:
 *   {"job", "stage", "manifest", "start", "end", "attempted", "succeeded",
 *    "skipped" (key already there), "failed", "failures": {REASON: N},
 *    "bytes" (image bytes fetched), "seconds", "fetch_seconds": {"p50","p99"},
 *    "rows_per_second", "stopped"}
 * and for stage 1 beside it STATS_DIR/JOB.failures.jsonl, one line per
 * failed row {"line","offset","key","url","reason","transient","why"}:
 * the rows --retry-failed redoes. A stopped job writes no stats file (it
 * is not done; a rerun resumes it). */

typedef struct IngestJobStats {
    uint64_t attempted;           /* rows that reached an outcome in this call */
    uint64_t succeeded, skipped, failed;
    json_t *failures;             /* {reason: count} (owned; ingest_job_stats_deinit) */
    uint64_t bytes;               /* image bytes fetched (stage 1) or crop bytes read (stage 2) */
    double seconds;
    double fetch_p50_s, fetch_p99_s; /* stage 1: submit to outcome */
    int stopped;                  /* the stop flag ended the job early: not done */
} IngestJobStats;

void ingest_job_stats_deinit(IngestJobStats *st);

/* Reads STATS_DIR/JOB.STAGE.json: 1 with *out filled (the JSON; new
 * reference) when the job is done, 0 when it is not, -1 on a damaged file. */
int ingest_job_done(const char *stats_dir, const char *job, const char *stage, json_t **out, TfError *err);

/* -- progress and metrics shared by the stages (NULL members: none) -- */

/* Live counters several stage calls (threads of one process) add to, read
 * by a progress line. The stages also update the process metrics
 * (transfuse_ingest_*, transfuse_encode_*) themselves. Thread-safe. */
typedef struct IngestProgress IngestProgress;

typedef struct IngestProgressSnapshot {
    uint64_t rows, ok, failed, skipped; /* rows at an outcome, by outcome */
    uint64_t bytes;                     /* image bytes fetched */
    uint64_t encoded;                   /* crops encoded (stage 2) */
    int64_t in_flight;                  /* rows taken in without an outcome yet */
    int64_t fetch_queue, crop_queue, encode_queue; /* items waiting, by queue */
    uint64_t planned;                   /* rows planned (when known) */
} IngestProgressSnapshot;

IngestProgress *ingest_progress_new(void);   /* NULL when out of memory */
void ingest_progress_free(IngestProgress *p);
void ingest_progress_read(const IngestProgress *p, IngestProgressSnapshot *out);
void ingest_progress_plan(IngestProgress *p, uint64_t rows); /* adds to `planned` */

/* What both stages take besides their own options. */
typedef struct IngestStageCommon {
    const char *job;              /* job name: [A-Za-z0-9._-]+, unique per slice (e.g.
                                     "laion-part3.000042"); names the stats files and is the
                                     prefix of the job's shard files */
    IngestSink sink;
    const char *stats_dir;        /* default OUT/ingest-jobs (needed when only `to` is set) */
    const ShardKeySet *done;      /* keys already in the output (skipped), or NULL: read from
                                     the sink (folder and topic) at the start of the call */
    int threads;                  /* worker threads (decode/tokenize, or VAE kernels); 0: all CPUs */
    const TfStopFlag *stop;       /* finish nothing new: the call returns 0 with stats.stopped */
    IngestProgress *progress;     /* shared live counters, or NULL */
} IngestStageCommon;

/* -- stage 1 -- */

typedef enum IngestCropFormat {
    INGEST_CROP_RAW = 0,          /* Sample.image.format "rgb8": size*size*3 bytes, HWC (default:
                                     see docs/INGEST.md "crop format" for the measurement) */
    INGEST_CROP_PNG,              /* "png", zlib level crop_png_level (default 1) */
} IngestCropFormat;

typedef struct IngestFetchOptions {
    IngestStageCommon common;
    ManifestReaderOptions manifest;  /* the job's slice */
    const Tokenizer *tokenizer;      /* loaded once by the caller, shared */
    unsigned tokenizer_flags;        /* TOKENIZER_ADD_BOS, ... */
    FetchOptions fetch;              /* fetch_options_init, then change; fetch.stop is set from
                                        common.stop when NULL */
    ImageCropOptions crop;           /* image_crop_options_init */
    IngestCropFormat crop_format;
    int crop_png_level;
    /* --retry-failed: only the rows of this set of lines are attempted
     * (NULL: every row of the slice). The caller builds it from the job's
     * failures file (ingest_retry_lines). */
    const ShardKeySet *only_lines;   /* keys: decimal line numbers */
    size_t max_rows_in_flight;       /* default 4 x fetch.concurrency */
} IngestFetchOptions;

/* Fills defaults (fetch and crop defaults included). */
void ingest_fetch_options_init(IngestFetchOptions *o);

/* Runs stage 1 for one job. Returns 0 when the job ran (per-row outcomes
 * in *stats; the output durable and the stats files written unless
 * stats->stopped), -1 with err on what stops the job (sink unusable, write
 * or delivery failure, manifest unreadable): then nothing of it counts as
 * done, and a redo is safe. */
int ingest_stage_fetch(const IngestFetchOptions *opts, IngestJobStats *stats, TfError *err);

/* Reads STATS_DIR/JOB.failures.jsonl into `lines` (keys: decimal line
 * numbers) for the rows to redo: transient failures only, or every
 * failure with all = 1. Returns the number added, or -1 with err. */
long ingest_retry_lines(const char *stats_dir, const char *job, int all, ShardKeySet *lines, TfError *err);

/* -- stage 2 -- */

typedef struct IngestEncodeOptions {
    IngestStageCommon common;
    const char *from;                /* crops: dataset folder, shard file or kafka://HOST:PORT/TOPIC */
    const char *from_prefix;         /* folders: only shards whose name starts with this (a stage-1
                                        job's shards: its job name followed by '-'), or NULL: all */
    const KafkaSourceOptions *kafka; /* topics: consumer settings (group, partitions, until), or NULL:
                                        read to the high watermarks seen at the start */
    Vae *vae;                        /* loaded once by the caller (VAE_LOAD_ENCODER) */
    TfKernels *kernels;              /* the caller's, sized by common.threads */
    const char *tokenizer_id;        /* ShardFacts of the output (from the crops' facts when NULL) */
    int batch;                       /* VAE batch, default 8 */
    const char *latent_dtype;        /* "bf16" (default), "f16", "f32" */
    int keep_crop;                   /* 1: keep Sample.image in the final record (default 0) */
} IngestEncodeOptions;

void ingest_encode_options_init(IngestEncodeOptions *o);

/* Runs stage 2 over its input. Same return contract as ingest_stage_fetch;
 * a crop that cannot be used (missing, wrong size or format) is one
 * failure of reason "bad_crop". */
int ingest_stage_encode(const IngestEncodeOptions *opts, IngestJobStats *stats, TfError *err);

/* The Sample.image of a stage-1 record as (size,size,3) u8 RGB into rgb
 * (size*size*3 bytes): "rgb8" copied, "png" decoded. Returns 0, or -1 with
 * err when the image is absent or not of that size. Thread-safe. */
int ingest_crop_pixels(const Sample *s, int size, uint8_t *rgb, TfError *err);

/* `transfuse ingest run|encode|fetch` and the local `transfuse ingest`. */
int ingest_dispatch(int argc, char **argv);
int ingest_run_main(int argc, char **argv);
int ingest_encode_main(int argc, char **argv);

/* ---- end of the stage API ---- */

/* ---- distributed ingest: jobs for `ingest plan` and `ingest worker` ----
 *
 * A job is a transfuse.v1.Job (proto/transfuse.proto): one slice of one
 * manifest, [start, end) in bytes of its (decompressed) text, with the
 * line number at start, the manifest's identity (size and mtime as
 * planned, and the name mixed into derived keys) and the digest of the
 * stage options the plan was made for. On Kafka: key = job id, value =
 * the packed message; in files: one JSON object per line (the proto JSON
 * form of shard_message_to_json). Compressed manifests (gzip, zstd) are
 * planned by offsets of the decompressed text: a worker decompresses from
 * byte 0 and skips to its slice (bounded memory, CPU proportional to the
 * offset), so split big compressed manifests into files, or plan large
 * jobs. */

typedef Transfuse__V1__Job IngestJob;

#define INGEST_DIGEST_HEX 16

/* The packed message (malloc'd, *len set), or NULL when out of memory. */
uint8_t *ingest_job_encode(const IngestJob *j, size_t *len);
/* Unpacks and checks (ingest_job_check). Returns a job to free with
 * ingest_job_free, or NULL with err filled. */
IngestJob *ingest_job_decode(const uint8_t *data, size_t len, TfError *err);
void ingest_job_free(IngestJob *j);
/* The JSON form (new reference) and its inverse (checked; free with ingest_job_free). */
json_t *ingest_job_to_json(const IngestJob *j);
IngestJob *ingest_job_from_json(const json_t *obj, TfError *err);

/* 1 when s is a usable job name ([A-Za-z0-9._-]+, at most 200 bytes). */
int ingest_job_name_ok(const char *s);
/* Returns 0 when the job is well-formed (name, manifest, range, first
 * line), else -1 with err saying what is wrong. */
int ingest_job_check(const IngestJob *j, TfError *err);
/* Returns 0 when the manifest the job names is the file that was planned
 * (same size and mtime), else -1 with err saying to plan again. */
int ingest_job_check_file(const IngestJob *j, TfError *err);

/* The digest (INGEST_DIGEST_HEX hex digits) of the stage-1 options that
 * change the records: columns, crop size and format, PNG level, BOS. */
void ingest_options_digest(const IngestColumns *cols, int crop_size, int crop_format, int png_level, int bos,
                           char out[INGEST_DIGEST_HEX + 1]);

/* The job-name stem of a manifest (its file name, other characters as
 * '_'; a name longer than 48 bytes cut to 39 and followed by '_' and 8 hex
 * digits of its SHA-256, so job ids fit shard-name prefixes) and its
 * identity (the file name as is, as `ingest run` uses it). */
void ingest_job_name_base(const char *manifest, char *out, size_t cap);
void ingest_manifest_identity(const char *manifest, char *out, size_t cap);

typedef struct IngestPlanOptions {
    const char *const *manifests;     /* paths read by the planner */
    const char *const *manifest_uris; /* what workers open instead (NULL entries: the path), or NULL */
    size_t n_manifests;
    ManifestFormat format;            /* MANIFEST_AUTO: from each name */
    IngestColumns columns;
    uint64_t job_rows;                /* rows per job (bad rows count), >= 1 */
    const char *options_digest;       /* ingest_options_digest, or NULL */
} IngestPlanOptions;

typedef struct IngestPlanStats {
    uint64_t jobs, rows, bad_rows, bytes; /* bytes: read from the files (compressed bytes) */
} IngestPlanStats;

/* Streams every manifest once and calls emit for each job in order (ids
 * NAME.NNNNNN); the job passed lives only during the call. Returns 0, or
 * -1 with err filled (an unreadable manifest, or emit's error). */
int ingest_plan(const IngestPlanOptions *opts, int (*emit)(void *ctx, const IngestJob *job, TfError *err), void *ctx,
                IngestPlanStats *stats, TfError *err);

/* `transfuse ingest plan`. */
int ingest_plan_main(int argc, char **argv);

/* `transfuse ingest worker`: a consumer-group member running stage-1 jobs
 * (--jobs) or stage-2 chunks of a crops topic (--encode); see worker.c. */
int ingest_worker_main(int argc, char **argv);

/* ---- end of distributed ingest ---- */

#endif
