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

/* ---- manifests ---- */

typedef struct IngestRow {
    char *image;            /* path or URL */
    char *caption;
    char *key;              /* from the key column, or derived from the row (IngestColumns) */
    char **extra_names;     /* other columns, kept in Sample.extra */
    char **extra_values;
    size_t n_extra;
    uint64_t line;          /* 1-based line of the manifest */
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

#endif
