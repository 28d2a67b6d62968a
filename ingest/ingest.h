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

#endif
