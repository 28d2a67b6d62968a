/* cli.c: `transfuse shards`, what operators run daily on datasets:
 *   ls      shards with records, bytes, checksum and state, from the
 *           manifest and indexes without reading payloads
 *   stat    totals, latent shapes/dtypes, caption and token distributions,
 *           provenance summary (reads every record)
 *   verify  every CRC, every parse, manifest counts and checksums; each
 *           problem with its location; exit 1 when anything is wrong
 *   cat     records as JSON lines (or one record's raw payload)
 *   import  JSON lines to a dataset (the inverse of cat)
 * Human tables by default, --json for scripts. */
#include "file_internal.h"
#include "kafka_internal.h" /* Kafka: dispatch of kafka:// paths */

#include <dirent.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TAG "shards"

/* ---- what a PATH names: a dataset folder or one shard file ---- */

typedef struct Dataset {
    char dir[4096];
    ShardManifest *manifest;   /* NULL for a lone file or a folder without one */
    char manifest_error[512];  /* why there is no manifest, for a folder */
    char **paths;              /* shard files in order */
    char **names;
    size_t n;
} Dataset;

static void dataset_free(Dataset *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->paths[i]);
        free(d->names[i]);
    }
    free(d->paths);
    free(d->names);
    shard_manifest_free(d->manifest);
    memset(d, 0, sizeof *d);
}

static int dataset_add(Dataset *d, const char *name)
{
    char path[4096];
    if (tf_path_join(path, sizeof path, d->dir, name))
        return -1;
    char **p = realloc(d->paths, (d->n + 1) * sizeof *p), **nm;
    if (!p)
        return -1;
    d->paths = p;
    nm = realloc(d->names, (d->n + 1) * sizeof *nm);
    if (!nm)
        return -1;
    d->names = nm;
    d->paths[d->n] = strdup(path);
    d->names[d->n] = strdup(name);
    d->n++;
    return d->paths[d->n - 1] && d->names[d->n - 1] ? 0 : -1;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists NAME.tfrecord files of a folder, sorted (used without a manifest,
 * and by verify to find shards the manifest does not list). */
static char **list_shard_files(const char *dir, size_t *n)
{
    *n = 0;
    DIR *dp = opendir(dir);
    if (!dp)
        return NULL;
    char **out = NULL;
    size_t cap = 0;
    struct dirent *e;
    size_t sl = strlen(SHARD_FILE_SUFFIX);
    while ((e = readdir(dp))) {
        size_t l = strlen(e->d_name);
        if (e->d_name[0] == '.' || l <= sl || strcmp(e->d_name + l - sl, SHARD_FILE_SUFFIX))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            char **grown = realloc(out, cap * sizeof *out);
            if (!grown)
                break;
            out = grown;
        }
        out[(*n)++] = strdup(e->d_name);
    }
    closedir(dp);
    if (out)
        qsort(out, *n, sizeof *out, cmp_str);
    return out;
}

static void free_list(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

static int dataset_open(Dataset *d, const char *path, TfError *err)
{
    memset(d, 0, sizeof *d);
    struct stat st;
    if (stat(path, &st) != 0)
        return tf_fail(err, "%s: no such file or folder", path);
    if (!S_ISDIR(st.st_mode)) {
        const char *slash = strrchr(path, '/');
        snprintf(d->dir, sizeof d->dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
        if (dataset_add(d, slash ? slash + 1 : path))
            return tf_fail(err, "out of memory");
        return 0;
    }
    snprintf(d->dir, sizeof d->dir, "%s", path);
    TfError merr = {{0}};
    d->manifest = shard_manifest_load(path, &merr);
    if (d->manifest) {
        for (size_t i = 0; i < d->manifest->n_shards; i++)
            if (dataset_add(d, d->manifest->shards[i].name))
                return tf_fail(err, "out of memory");
        return 0;
    }
    snprintf(d->manifest_error, sizeof d->manifest_error, "%s", merr.msg);
    size_t n;
    char **files = list_shard_files(path, &n);
    for (size_t i = 0; i < n; i++)
        if (dataset_add(d, files[i])) {
            free_list(files, n);
            return tf_fail(err, "out of memory");
        }
    free_list(files, n);
    if (!d->n)
        return tf_fail(err, "%s: no manifest and no shard files (%s)", path, merr.msg);
    tf_log(TF_LOG_WARN, TAG, "%s; using the %zu shard files found", merr.msg, d->n);
    return 0;
}

static const ShardEntry *dataset_entry(const Dataset *d, size_t i)
{
    return d->manifest ? &d->manifest->shards[i] : NULL;
}

/* ---- small helpers ---- */

static const char *dtype_name(int dtype)
{
    switch (dtype) {
    case TRANSFUSE__V1__DTYPE__DTYPE_F32: return "f32";
    case TRANSFUSE__V1__DTYPE__DTYPE_F16: return "f16";
    case TRANSFUSE__V1__DTYPE__DTYPE_BF16: return "bf16";
    case TRANSFUSE__V1__DTYPE__DTYPE_U8: return "u8";
    default: return "unspecified";
    }
}

static size_t dtype_size(int dtype)
{
    switch (dtype) {
    case TRANSFUSE__V1__DTYPE__DTYPE_F32: return 4;
    case TRANSFUSE__V1__DTYPE__DTYPE_F16:
    case TRANSFUSE__V1__DTYPE__DTYPE_BF16: return 2;
    case TRANSFUSE__V1__DTYPE__DTYPE_U8: return 1;
    default: return 0;
    }
}

static void human_bytes(uint64_t b, char *out, size_t cap)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int i = 0;
    while (v >= 1024 && i < 4) {
        v /= 1024;
        i++;
    }
    snprintf(out, cap, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

static void tensor_desc(const Transfuse__V1__Tensor *t, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s [", dtype_name(t->dtype));
    for (size_t i = 0; i < t->n_shape && n > 0 && (size_t)n < cap; i++)
        n += snprintf(out + n, cap - (size_t)n, "%s%u", i ? "," : "", t->shape[i]);
    if (n > 0 && (size_t)n < cap)
        snprintf(out + n, cap - (size_t)n, "]");
}

/* Checks a tensor's byte count against dtype and shape. Returns NULL or why not. */
static const char *tensor_problem(const Transfuse__V1__Tensor *t)
{
    size_t es = dtype_size(t->dtype);
    if (!es)
        return "tensor has no dtype";
    uint64_t n = es;
    for (size_t i = 0; i < t->n_shape; i++) {
        if (!t->shape[i] || n > UINT64_MAX / t->shape[i])
            return "tensor shape is empty or too large";
        n *= t->shape[i];
    }
    return n == t->data.len ? NULL : "tensor data size does not match dtype x shape";
}

static void print_usage_error(const char *cmd, const char *msg)
{
    fprintf(stderr, "transfuse shards %s: %s (see transfuse shards %s --help)\n", cmd, msg, cmd);
}

/* Parses `[--json] PATH` for subcommand `cmd` and opens the dataset.
 * Returns 0 with *d open, -1 after printing help, or an exit status (2 for
 * usage, 1 when PATH cannot be opened). */
static int open_path_arg(const char *cmd, const char *help, int argc, char **argv, int *json, Dataset *d)
{
    static const struct option opts[] = {{"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j')
            *json = 1;
        else if (c == 'h') {
            fputs(help, stdout);
            return -1;
        } else
            return 2;
    }
    if (optind != argc - 1) {
        print_usage_error(cmd, "needs exactly one PATH");
        return 2;
    }
    TfError err = {{0}};
    if (dataset_open(d, argv[optind], &err)) {
        fprintf(stderr, "transfuse shards %s: %s\n", cmd, err.msg);
        return 1;
    }
    return 0;
}

/* ---- ls ---- */

static const char LS_HELP[] =
    "usage: transfuse shards ls [--json] PATH\n\n"
    "Lists the shards of a dataset folder (or one shard file) with their record\n"
    "counts, bytes, CRC-32C and state, from the manifest and the index files,\n"
    "without reading payloads. State is `ok`, or what disagrees: a missing file,\n"
    "a size that differs from the manifest, a missing or damaged index, an index\n"
    "whose count differs. Checksums are compared by `shards verify`, which reads\n"
    "everything.\n\n"
    "  --json   one JSON object on stdout instead of a table\n";

static int cmd_ls(int argc, char **argv)
{
    int json = 0, status;
    Dataset d;
    if ((status = open_path_arg("ls", LS_HELP, argc, argv, &json, &d)) != 0)
        return status < 0 ? 0 : status;
    int bad = 0;
    json_t *arr = json_array();
    uint64_t tot_records = 0, tot_bytes = 0;
    if (!json)
        printf("%-32s %10s %14s  %-8s  %s\n", "SHARD", "RECORDS", "BYTES", "CRC32C", "STATE");
    for (size_t i = 0; i < d.n; i++) {
        const ShardEntry *e = dataset_entry(&d, i);
        char state[512] = "ok", crc[9] = "-";
        struct stat st;
        uint64_t bytes = 0;
        int64_t records = -1;
        if (stat(d.paths[i], &st) != 0) {
            snprintf(state, sizeof state, "missing");
        } else {
            bytes = (uint64_t)st.st_size;
            TfError ferr = {{0}};
            ShardFile *f = shard_file_open(d.paths[i], &ferr);
            if (!f)
                snprintf(state, sizeof state, "%s", ferr.msg);
            else {
                records = shard_file_index_count(f);
                if (records < 0)
                    snprintf(state, sizeof state, "%s", shard_file_index_problem(f));
                else if (e && (uint64_t)records != e->records)
                    snprintf(state, sizeof state, "index lists %lld records, manifest %llu", (long long)records,
                             (unsigned long long)e->records);
                shard_file_free(f);
            }
            if (e && bytes != e->bytes && !strcmp(state, "ok"))
                snprintf(state, sizeof state, "size %llu differs from manifest %llu", (unsigned long long)bytes,
                         (unsigned long long)e->bytes);
        }
        if (e) {
            snprintf(crc, sizeof crc, "%08x", e->crc32c);
            records = (int64_t)e->records;
            bytes = e->bytes;
        }
        if (strcmp(state, "ok"))
            bad = 1;
        tot_records += records > 0 ? (uint64_t)records : 0;
        tot_bytes += bytes;
        if (json) {
            json_array_append_new(arr, json_pack("{s:s,s:I,s:I,s:s,s:s}", "name", d.names[i], "records",
                                                 (json_int_t)records, "bytes", (json_int_t)bytes, "crc32c", crc,
                                                 "state", state));
        } else {
            char rec[32];
            snprintf(rec, sizeof rec, records >= 0 ? "%lld" : "?", (long long)records);
            printf("%-32s %10s %14llu  %-8s  %s\n", d.names[i], rec, (unsigned long long)bytes, crc, state);
        }
    }
    if (json) {
        json_t *out = json_pack("{s:s,s:b,s:I,s:I,s:I,s:o}", "path", argv[optind], "manifest", d.manifest != NULL,
                                "shards", (json_int_t)d.n, "records", (json_int_t)tot_records, "bytes",
                                (json_int_t)tot_bytes, "list", arr);
        json_dumpf(out, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
        putchar('\n');
        json_decref(out);
    } else {
        char hb[32];
        human_bytes(tot_bytes, hb, sizeof hb);
        printf("%zu shard%s, %llu records, %s%s\n", d.n, d.n == 1 ? "" : "s", (unsigned long long)tot_records, hb,
               d.manifest ? "" : " (no manifest)");
        json_decref(arr);
    }
    dataset_free(&d);
    return bad ? 1 : 0;
}

/* ---- verify ---- */

static const char VERIFY_HELP[] =
    "usage: transfuse shards verify [--json] [--quiet] PATH\n\n"
    "Reads every byte of a dataset folder (or one shard file): the CRC of every\n"
    "frame, the parse of every record, tensor sizes against their dtype and\n"
    "shape, latent shape/dtype against the manifest, record counts against the\n"
    "manifest and index, the CRC-32C of each whole file against the manifest,\n"
    "and shard files the manifest does not list. Each problem is printed with\n"
    "its shard, record index and byte offset. Exit status 1 if anything is\n"
    "wrong, 0 if all is well. A progress line is drawn on a terminal.\n\n"
    "  --json    one JSON object on stdout (ok, counts, problems)\n"
    "  --quiet   print only the summary (problems are still counted)\n";

typedef struct Verify {
    int json, quiet;
    json_t *problems;
    uint64_t n_problems, records, bytes, done_bytes;
    TfProgress progress;
    ShardArena arena;
    const ShardFacts *facts;
    ShardKeySet *keys;
    const Dataset *d;
    size_t shard;
} Verify;

static void verify_report(Verify *v, const char *shard, uint64_t record, uint64_t offset, const char *what)
{
    v->n_problems++;
    if (v->json) {
        if (json_array_size(v->problems) < 100000)
            json_array_append_new(v->problems, json_pack("{s:s,s:I,s:I,s:s}", "shard", shard, "record",
                                                         (json_int_t)record, "offset", (json_int_t)offset, "what",
                                                         what));
    } else if (!v->quiet) {
        if (v->progress.enabled)
            fputs("\r\033[K", stderr);
        printf("PROBLEM %s: record %llu at byte %llu: %s\n", shard, (unsigned long long)record,
               (unsigned long long)offset, what);
    }
}

static void verify_record(Verify *v, const char *name, uint64_t rec, uint64_t off, const uint8_t *payload,
                          size_t len)
{
    TfError err = {{0}};
    shard_arena_reset(&v->arena);
    Sample *s = sample_decode(payload, len, &v->arena, &err);
    if (!s) {
        verify_report(v, name, rec, off, err.msg);
        return;
    }
    if (!s->key || !*s->key)
        verify_report(v, name, rec, off, "record has no key");
    uint64_t first = 0;
    int fresh = s->key && *s->key ? shard_keyset_add(v->keys, s->key, strlen(s->key), (uint64_t)v->shard << 40 | rec,
                                                     &first)
                                  : 1;
    if (fresh < 0)
        verify_report(v, name, rec, off, "out of memory for the key set");
    else if (!fresh) {
        char what[400];
        snprintf(what, sizeof what, "key '%.200s' appears more than once (first in %s record %llu)", s->key,
                 v->d->names[first >> 40], (unsigned long long)(first & ((1ull << 40) - 1)));
        verify_report(v, name, rec, off, what);
    }
    const Transfuse__V1__Tensor *ts[2] = {s->latent_mean, s->latent_logvar};
    for (int k = 0; k < 2; k++) {
        const char *why = ts[k] ? tensor_problem(ts[k]) : NULL;
        if (why) {
            char what[160];
            snprintf(what, sizeof what, "%s: %s", k ? "latent_logvar" : "latent_mean", why);
            verify_report(v, name, rec, off, what);
            ts[k] = NULL;
        }
    }
    const ShardFacts *f = v->facts;
    if (ts[0] && f && *f->latent_dtype && strcmp(f->latent_dtype, dtype_name(ts[0]->dtype)))
        verify_report(v, name, rec, off, "latent_mean dtype differs from the manifest");
    if (ts[0] && f && f->latent_rank &&
        ((size_t)f->latent_rank != ts[0]->n_shape ||
         memcmp(f->latent_shape, ts[0]->shape, sizeof(uint32_t) * ts[0]->n_shape)))
        verify_report(v, name, rec, off, "latent_mean shape differs from the manifest");
    if (ts[0] && ts[1] &&
        (ts[0]->n_shape != ts[1]->n_shape || memcmp(ts[0]->shape, ts[1]->shape, sizeof(uint32_t) * ts[0]->n_shape)))
        verify_report(v, name, rec, off, "latent_logvar shape differs from latent_mean");
}

static void verify_shard(Verify *v, const Dataset *d, size_t i)
{
    const ShardEntry *e = dataset_entry(d, i);
    const char *name = d->names[i];
    TfError err = {{0}};
    ShardFile *f = shard_file_load(d->paths[i], &err);
    if (!f) {
        verify_report(v, name, 0, 0, err.msg);
        return;
    }
    uint64_t size = shard_file_size(f);
    char what[512];
    if (e && size != e->bytes) {
        snprintf(what, sizeof what, "file has %llu bytes, manifest says %llu", (unsigned long long)size,
                 (unsigned long long)e->bytes);
        verify_report(v, name, 0, size, what);
    }
    if (shard_file_index_count(f) < 0)
        verify_report(v, name, 0, 0, shard_file_index_problem(f));
    /* One pass: frame CRCs are checked record by record, and the whole-file
     * checksum is assembled from them (CRC combination), with any bytes
     * between good frames added directly. */
    const uint8_t *data = shard_file_data(f);
    uint32_t file_crc = 0;
    uint64_t covered = 0;
    ShardCursor c;
    shard_cursor_init(&c, f);
    const uint8_t *payload;
    size_t len;
    ShardProblem p;
    uint64_t good = 0, seen = 0;
    int rc;
    while ((rc = shard_cursor_next(&c, &payload, &len, &p)) != 0) {
        seen++;
        if (rc < 0) {
            verify_report(v, name, p.record, p.offset, p.what);
        } else {
            good++;
            uint64_t start = (uint64_t)(payload - data) - SHARD_FRAME_HEADER;
            if (start > covered)
                file_crc = shard_crc32c(file_crc, data + covered, start - covered);
            file_crc = shard_crc32c(file_crc, data + start, SHARD_FRAME_HEADER);
            file_crc = shard_crc32c_combine(file_crc, c.payload_crc, len);
            file_crc = shard_crc32c(file_crc, payload + len, SHARD_FRAME_FOOTER);
            covered = start + SHARD_FRAME_HEADER + len + SHARD_FRAME_FOOTER;
            verify_record(v, name, c.record - 1, start, payload, len);
        }
        if ((seen & 255) == 0)
            tf_progress_update(&v->progress, v->done_bytes + c.offset);
    }
    if (covered < size)
        file_crc = shard_crc32c(file_crc, data + covered, size - covered);
    if (e && file_crc != e->crc32c) {
        snprintf(what, sizeof what, "file CRC-32C %08x differs from manifest %08x", file_crc, e->crc32c);
        verify_report(v, name, 0, 0, what);
    }
    int64_t indexed = shard_file_index_count(f);
    uint64_t records = c.record;
    if (e && records != e->records) {
        snprintf(what, sizeof what, "shard holds %llu records, manifest says %llu", (unsigned long long)records,
                 (unsigned long long)e->records);
        verify_report(v, name, records, size, what);
    }
    if (indexed >= 0 && (uint64_t)indexed != records) {
        snprintf(what, sizeof what, "shard holds %llu records, index lists %lld", (unsigned long long)records,
                 (long long)indexed);
        verify_report(v, name, records, size, what);
    }
    v->records += good;
    v->bytes += size;
    v->done_bytes += size;
    shard_file_free(f);
}

static int cmd_verify(int argc, char **argv)
{
    Verify v = {0};
    static const struct option opts[] = {
        {"json", no_argument, 0, 'j'}, {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}, {0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "hq", opts, NULL)) != -1) {
        if (c == 'j')
            v.json = 1;
        else if (c == 'q')
            v.quiet = 1;
        else if (c == 'h') {
            fputs(VERIFY_HELP, stdout);
            return 0;
        } else
            return 2;
    }
    if (optind != argc - 1) {
        print_usage_error("verify", "needs exactly one PATH");
        return 2;
    }
    Dataset d;
    TfError err = {{0}};
    if (dataset_open(&d, argv[optind], &err)) {
        fprintf(stderr, "transfuse shards verify: %s\n", err.msg);
        return 1;
    }
    v.problems = json_array();
    shard_arena_init(&v.arena, 1 << 20);
    v.facts = d.manifest ? &d.manifest->facts : NULL;
    double t0 = tf_now();
    uint64_t total = 0;
    for (size_t i = 0; i < d.n; i++) {
        struct stat st;
        if (stat(d.paths[i], &st) == 0)
            total += (uint64_t)st.st_size;
    }
    tf_progress_init(&v.progress, "verify", total, "B");
    struct stat st;
    int is_dir = stat(argv[optind], &st) == 0 && S_ISDIR(st.st_mode);
    if (is_dir && !d.manifest)
        verify_report(&v, SHARD_MANIFEST_NAME, 0, 0, d.manifest_error);
    v.keys = shard_keyset_new();
    v.d = &d;
    for (size_t i = 0; i < d.n; i++) {
        v.shard = i;
        verify_shard(&v, &d, i);
    }
    shard_keyset_free(v.keys);
    if (is_dir && d.manifest) { /* shard files the manifest does not list */
        size_t n;
        char **files = list_shard_files(d.dir, &n);
        for (size_t i = 0; i < n; i++) {
            int listed = 0;
            for (size_t k = 0; k < d.n && !listed; k++)
                listed = !strcmp(files[i], d.names[k]);
            if (!listed)
                verify_report(&v, files[i], 0, 0, "shard file is not listed in the manifest");
        }
        free_list(files, n);
    }
    tf_progress_finish(&v.progress, v.done_bytes);
    double dt = tf_now() - t0;
    if (v.json) {
        json_t *out = json_pack("{s:s,s:b,s:I,s:I,s:I,s:f,s:I,s:o}", "path", argv[optind], "ok", v.n_problems == 0,
                                "shards", (json_int_t)d.n, "records", (json_int_t)v.records, "bytes",
                                (json_int_t)v.bytes, "seconds", dt, "problem_count", (json_int_t)v.n_problems,
                                "problems", v.problems);
        json_dumpf(out, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
        putchar('\n');
        json_decref(out);
    } else {
        char hb[32];
        human_bytes(v.bytes, hb, sizeof hb);
        printf("%s: %zu shard%s, %llu good records, %s in %.2f s (%.0f MB/s): %llu problem%s\n",
               v.n_problems ? "FAILED" : "OK", d.n, d.n == 1 ? "" : "s", (unsigned long long)v.records, hb, dt,
               dt > 0 ? (double)v.bytes / dt / 1e6 : 0.0, (unsigned long long)v.n_problems,
               v.n_problems == 1 ? "" : "s");
        json_decref(v.problems);
    }
    shard_arena_deinit(&v.arena);
    dataset_free(&d);
    return v.n_problems ? 1 : 0;
}

/* ---- stat ---- */

static const char STAT_HELP[] =
    "usage: transfuse shards stat [--json] PATH\n\n"
    "Reads every record of a dataset folder (or one shard file) and prints\n"
    "totals; the latent shapes and dtypes found; distributions (min, p50, p90,\n"
    "p99, max, mean) of caption length in bytes and of token count; and a\n"
    "provenance summary (source URLs and hosts, original formats and sizes,\n"
    "EXIF orientations applied, embedded images). Damaged records are counted\n"
    "and skipped (run `shards verify` for their locations).\n\n"
    "  --json   one JSON object on stdout instead of text\n";

/* A string -> count table for distinct values (hosts, shapes), hashed so a
 * dataset of millions of records with many hosts stays linear. */
typedef struct Counter {
    char **keys;
    uint64_t *counts;
    size_t n, cap;
    uint32_t *slots;   /* open addressing: index + 1, 0 = empty */
    size_t n_slots;
    uint64_t overflow; /* values not tracked once the table is full */
} Counter;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void counter_add(Counter *c, const char *key)
{
    if (c->n * 2 >= c->n_slots) { /* grow and rehash */
        size_t ns = c->n_slots ? c->n_slots * 2 : 64;
        uint32_t *slots = calloc(ns, sizeof *slots);
        if (!slots)
            return;
        for (size_t i = 0; i < c->n; i++) {
            size_t h = hash_str(c->keys[i]) & (ns - 1);
            while (slots[h])
                h = (h + 1) & (ns - 1);
            slots[h] = (uint32_t)i + 1;
        }
        free(c->slots);
        c->slots = slots;
        c->n_slots = ns;
    }
    size_t h = hash_str(key) & (c->n_slots - 1);
    while (c->slots[h]) {
        if (!strcmp(c->keys[c->slots[h] - 1], key)) {
            c->counts[c->slots[h] - 1]++;
            return;
        }
        h = (h + 1) & (c->n_slots - 1);
    }
    if (c->n == 100000) {
        c->overflow++;
        return;
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        char **k = realloc(c->keys, cap * sizeof *k);
        if (!k)
            return;
        c->keys = k;
        uint64_t *n = realloc(c->counts, cap * sizeof *n);
        if (!n)
            return;
        c->counts = n;
        c->cap = cap;
    }
    if (!(c->keys[c->n] = strdup(key)))
        return;
    c->counts[c->n] = 1;
    c->slots[h] = (uint32_t)++c->n;
}

static void counter_free(Counter *c)
{
    free_list(c->keys, c->n);
    free(c->counts);
    free(c->slots);
}

/* The most frequent entries as a JSON object (at most `top`). */
static json_t *counter_json(const Counter *c, size_t top)
{
    json_t *o = json_object();
    char *used = calloc(c->n ? c->n : 1, 1);
    for (size_t t = 0; t < top && t < c->n && used; t++) {
        size_t best = SIZE_MAX;
        for (size_t i = 0; i < c->n; i++)
            if (!used[i] && (best == SIZE_MAX || c->counts[i] > c->counts[best]))
                best = i;
        used[best] = 1;
        json_object_set_new(o, c->keys[best], json_integer((json_int_t)c->counts[best]));
    }
    free(used);
    return o;
}

typedef struct Series {
    uint32_t *v;
    size_t n, cap;
} Series;

static void series_add(Series *s, uint32_t x)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        uint32_t *g = realloc(s->v, cap * sizeof *g);
        if (!g)
            return;
        s->v = g;
        s->cap = cap;
    }
    s->v[s->n++] = x;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static json_t *series_json(Series *s)
{
    if (!s->n)
        return json_pack("{s:i}", "count", 0);
    qsort(s->v, s->n, sizeof *s->v, cmp_u32);
    double sum = 0;
    for (size_t i = 0; i < s->n; i++)
        sum += s->v[i];
#define PCT(p) (json_int_t) s->v[(size_t)((double)(s->n - 1) * (p))]
    return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:f}", "count", (json_int_t)s->n, "min", (json_int_t)s->v[0], "p50",
                     PCT(0.5), "p90", PCT(0.9), "p99", PCT(0.99), "max", (json_int_t)s->v[s->n - 1], "mean",
                     sum / (double)s->n);
#undef PCT
}

static void print_series(const char *label, json_t *j)
{
    if (!json_integer_value(json_object_get(j, "count"))) {
        printf("%-16s none\n", label);
        return;
    }
    printf("%-16s min %lld  p50 %lld  p90 %lld  p99 %lld  max %lld  mean %.1f\n", label,
           (long long)json_integer_value(json_object_get(j, "min")),
           (long long)json_integer_value(json_object_get(j, "p50")),
           (long long)json_integer_value(json_object_get(j, "p90")),
           (long long)json_integer_value(json_object_get(j, "p99")),
           (long long)json_integer_value(json_object_get(j, "max")), json_real_value(json_object_get(j, "mean")));
}

static void print_counter(const char *label, json_t *o)
{
    printf("%-16s", label);
    const char *k;
    json_t *v;
    int first = 1;
    json_object_foreach(o, k, v)
    {
        printf("%s%s: %lld", first ? "" : ", ", k, (long long)json_integer_value(v));
        first = 0;
    }
    printf("%s\n", first ? "none" : "");
}

static void url_host(const char *url, char *out, size_t cap)
{
    const char *p = strstr(url, "://");
    if (!p || !strncmp(url, "file://", 7)) {
        snprintf(out, cap, "(local files)");
        return;
    }
    p += 3;
    size_t n = strcspn(p, "/:?#");
    snprintf(out, cap, "%.*s", (int)n, p);
}

static int cmd_stat(int argc, char **argv)
{
    int json = 0, status;
    Dataset d;
    TfError err = {{0}};
    if ((status = open_path_arg("stat", STAT_HELP, argc, argv, &json, &d)) != 0)
        return status < 0 ? 0 : status;
    Counter means = {0}, logvars = {0}, hosts = {0}, formats = {0}, images = {0}, orient = {0};
    Series caption = {0}, tokens = {0}, short_side = {0};
    uint64_t records = 0, damaged = 0, bytes = 0, with_url = 0, with_sha = 0, unreadable = 0;
    ShardArena arena;
    shard_arena_init(&arena, 1 << 20);
    TfProgress prog;
    tf_progress_init(&prog, "stat", 0, "records");
    for (size_t i = 0; i < d.n; i++) {
        ShardFile *f = shard_file_load(d.paths[i], &err);
        if (!f) {
            unreadable++;
            tf_log(TF_LOG_WARN, TAG, "%s", err.msg);
            continue;
        }
        bytes += shard_file_size(f);
        ShardCursor cur;
        shard_cursor_init(&cur, f);
        const uint8_t *payload;
        size_t len;
        ShardProblem p;
        int rc;
        while ((rc = shard_cursor_next(&cur, &payload, &len, &p)) != 0) {
            shard_arena_reset(&arena);
            Sample *s = rc > 0 ? sample_decode(payload, len, &arena, NULL) : NULL;
            if (!s) {
                damaged++;
                continue;
            }
            records++;
            char desc[128];
            if (s->latent_mean) {
                tensor_desc(s->latent_mean, desc, sizeof desc);
                counter_add(&means, desc);
            } else
                counter_add(&means, "absent");
            if (s->latent_logvar) {
                tensor_desc(s->latent_logvar, desc, sizeof desc);
                counter_add(&logvars, desc);
            } else
                counter_add(&logvars, "absent");
            series_add(&caption, (uint32_t)strlen(s->caption ? s->caption : ""));
            series_add(&tokens, (uint32_t)s->n_tokens);
            if (s->image) {
                snprintf(desc, sizeof desc, "%s %ux%u", *s->image->format ? s->image->format : "?",
                         s->image->width, s->image->height);
                counter_add(&images, desc);
            }
            Transfuse__V1__Provenance *pv = s->provenance;
            if (pv) {
                if (pv->source_url && *pv->source_url) {
                    with_url++;
                    url_host(pv->source_url, desc, sizeof desc);
                    counter_add(&hosts, desc);
                }
                with_sha += pv->sha256.len == 32;
                counter_add(&formats, pv->original_format && *pv->original_format ? pv->original_format : "unknown");
                snprintf(desc, sizeof desc, "%u", pv->exif_orientation);
                counter_add(&orient, desc);
                if (pv->original_width && pv->original_height)
                    series_add(&short_side, pv->original_width < pv->original_height ? pv->original_width
                                                                                        : pv->original_height);
            }
            if ((records & 1023) == 0)
                tf_progress_update(&prog, records);
        }
        shard_file_free(f);
    }
    tf_progress_finish(&prog, records);
    json_t *out = json_pack(
        "{s:s,s:I,s:I,s:I,s:I,s:I,s:o,s:o,s:o,s:o,s:o,s:{s:I,s:I,s:I,s:o,s:o,s:o,s:o}}", "path", argv[optind],
        "shards", (json_int_t)d.n, "records", (json_int_t)records, "damaged_records", (json_int_t)damaged,
        "unreadable_shards", (json_int_t)unreadable, "bytes", (json_int_t)bytes, "latent_mean",
        counter_json(&means, 10), "latent_logvar", counter_json(&logvars, 10), "caption_bytes",
        series_json(&caption), "tokens", series_json(&tokens), "images", counter_json(&images, 10), "provenance",
        "with_source_url", (json_int_t)with_url, "with_sha256", (json_int_t)with_sha, "distinct_hosts",
        (json_int_t)(hosts.n + hosts.overflow), "top_hosts", counter_json(&hosts, 5), "original_formats",
        counter_json(&formats, 10), "exif_orientation", counter_json(&orient, 9), "original_short_side",
        series_json(&short_side));
    if (d.manifest)
        json_object_set_new(out, "facts", shard_facts_to_json(&d.manifest->facts));
    if (json) {
        json_dumpf(out, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
        putchar('\n');
    } else {
        char hb[32];
        human_bytes(bytes, hb, sizeof hb);
        printf("%-16s %s\n", "path", argv[optind]);
        printf("%-16s %zu shards, %llu records, %s", "totals", d.n, (unsigned long long)records, hb);
        if (damaged || unreadable)
            printf(" (%llu damaged records, %llu unreadable shards: run shards verify)", (unsigned long long)damaged,
                   (unsigned long long)unreadable);
        putchar('\n');
        if (d.manifest) {
            const ShardFacts *f = &d.manifest->facts;
            printf("%-16s %s %s\n", "tokenizer", *f->tokenizer_id ? f->tokenizer_id : "(not recorded)",
                   f->tokenizer_name);
            printf("%-16s %s %s (scaling %g, shift %g)\n", "vae", *f->vae_id ? f->vae_id : "(not recorded)",
                   f->vae_name, f->latent_scaling, f->latent_shift);
        }
        print_counter("latent_mean", json_object_get(out, "latent_mean"));
        print_counter("latent_logvar", json_object_get(out, "latent_logvar"));
        print_series("caption bytes", json_object_get(out, "caption_bytes"));
        print_series("tokens", json_object_get(out, "tokens"));
        print_counter("images", json_object_get(out, "images"));
        json_t *pv = json_object_get(out, "provenance");
        printf("%-16s %llu with source URL from %llu hosts, %llu with sha256\n", "provenance",
               (unsigned long long)with_url, (unsigned long long)(hosts.n + hosts.overflow),
               (unsigned long long)with_sha);
        print_counter("top hosts", json_object_get(pv, "top_hosts"));
        print_counter("orig. formats", json_object_get(pv, "original_formats"));
        print_counter("exif applied", json_object_get(pv, "exif_orientation"));
        print_series("orig. short side", json_object_get(pv, "original_short_side"));
    }
    json_decref(out);
    counter_free(&means);
    counter_free(&logvars);
    counter_free(&hosts);
    counter_free(&formats);
    counter_free(&images);
    counter_free(&orient);
    free(caption.v);
    free(tokens.v);
    free(short_side.v);
    shard_arena_deinit(&arena);
    dataset_free(&d);
    return 0;
}

/* ---- cat ---- */

static const char CAT_HELP[] =
    "usage: transfuse shards cat [options] PATH\n\n"
    "Prints records of a dataset folder (or one shard file) as JSON lines on\n"
    "stdout, in shard order. The JSON form uses the proto field names of\n"
    "transfuse.v1.Sample; bytes fields (tensor data, sha256, images) are base64;\n"
    "enums by name; fields at their default value are left out. Damaged\n"
    "records are reported on stderr with their location and skipped (exit 1).\n\n"
    "  --index N       only record N (0-based, counted across the dataset)\n"
    "  --key K         only the record whose key is K\n"
    "  --fields A,B    only these top-level fields (e.g. key,caption,tokens)\n"
    "  --limit N       stop after N records\n"
    "  --raw           write one record's payload bytes instead (needs --index or\n"
    "                  --key), e.g. for: protoc --decode transfuse.v1.Sample\n";

/* Finds record `index` (across the dataset) or the record with `key`. */
static int find_record(const Dataset *d, int64_t index, const char *key, ShardFile **file_out, uint64_t *rec_out,
                       TfError *err)
{
    for (size_t i = 0; i < d->n; i++) {
        ShardFile *f = shard_file_open(d->paths[i], err);
        if (!f)
            return -1;
        if (key) {
            int64_t r = shard_file_find_key(f, key);
            if (r < 0 && shard_file_index_count(f) < 0) { /* no index: scan */
                ShardCursor c;
                shard_cursor_init(&c, f);
                const uint8_t *p;
                size_t len;
                int rc;
                while (r < 0 && (rc = shard_cursor_next(&c, &p, &len, NULL)) != 0) {
                    Sample *s = rc > 0 ? sample_decode(p, len, NULL, NULL) : NULL;
                    if (s && s->key && !strcmp(s->key, key))
                        r = (int64_t)c.record - 1;
                    sample_free(s);
                }
                if (r >= 0) {
                    *file_out = f;
                    *rec_out = (uint64_t)r;
                    return 0;
                }
            } else if (r >= 0) {
                *file_out = f;
                *rec_out = (uint64_t)r;
                return 0;
            }
        } else {
            int64_t count = shard_file_index_count(f);
            if (count < 0) {
                tf_fail(err, "%s: %s: --index needs the index (use cat without --index)", d->paths[i],
                        shard_file_index_problem(f));
                shard_file_free(f);
                return -1;
            }
            if (index < count) {
                *file_out = f;
                *rec_out = (uint64_t)index;
                return 0;
            }
            index -= count;
        }
        shard_file_free(f);
    }
    return tf_fail(err, key ? "no record has key '%s'" : "index is past the last record%s", key ? key : "");
}

/* Splits "a,b,c" into a NULL-terminated list (one allocation). */
static char **split_fields(const char *spec)
{
    size_t n = 1;
    for (const char *p = spec; *p; p++)
        n += *p == ',';
    char **list = malloc((n + 1) * sizeof *list + strlen(spec) + 1);
    if (!list)
        return NULL;
    char *copy = (char *)(list + n + 1);
    strcpy(copy, spec);
    size_t k = 0;
    for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ","))
        list[k++] = tok;
    list[k] = NULL;
    return list;
}

static int print_record(const uint8_t *payload, size_t len, const char *const *fields, ShardArena *arena)
{
    shard_arena_reset(arena);
    Sample *s = sample_decode(payload, len, arena, NULL);
    if (!s)
        return -1;
    json_t *j = shard_message_to_json(&s->base, fields);
    json_dumpf(j, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER);
    putchar('\n');
    json_decref(j);
    return 0;
}

static int cmd_cat(int argc, char **argv)
{
    int64_t index = -1;
    long limit = -1;
    const char *key = NULL, *fields_spec = NULL;
    int raw = 0;
    static const struct option opts[] = {{"index", required_argument, 0, 'i'}, {"key", required_argument, 0, 'k'},
                                         {"fields", required_argument, 0, 'f'}, {"limit", required_argument, 0, 'l'},
                                         {"raw", no_argument, 0, 'r'},          {"help", no_argument, 0, 'h'},
                                         {0}};
    TfError err = {{0}};
    int c;
    long v;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'i':
            if (tf_parse_long("--index", optarg, 0, INT64_MAX > LONG_MAX ? LONG_MAX : INT64_MAX, &v, &err)) {
                print_usage_error("cat", err.msg);
                return 2;
            }
            index = v;
            break;
        case 'l':
            if (tf_parse_long("--limit", optarg, 0, LONG_MAX, &limit, &err)) {
                print_usage_error("cat", err.msg);
                return 2;
            }
            break;
        case 'k': key = optarg; break;
        case 'f': fields_spec = optarg; break;
        case 'r': raw = 1; break;
        case 'h': fputs(CAT_HELP, stdout); return 0;
        default: return 2;
        }
    }
    if (optind != argc - 1) {
        print_usage_error("cat", "needs exactly one PATH");
        return 2;
    }
    if (index >= 0 && key) {
        print_usage_error("cat", "--index and --key are alternatives");
        return 2;
    }
    if (raw && index < 0 && !key) {
        print_usage_error("cat", "--raw writes one record: give --index or --key");
        return 2;
    }
    if (raw && isatty(STDOUT_FILENO)) {
        print_usage_error("cat", "--raw writes binary; redirect stdout to a file or a pipe");
        return 2;
    }
    Dataset d;
    if (dataset_open(&d, argv[optind], &err)) {
        fprintf(stderr, "transfuse shards cat: %s\n", err.msg);
        return 1;
    }
    char **fields = fields_spec ? split_fields(fields_spec) : NULL;
    if (fields) { /* reject unknown names before any output */
        for (char **f = fields; *f; f++)
            if (!protobuf_c_message_descriptor_get_field_by_name(&transfuse__v1__sample__descriptor, *f)) {
                fprintf(stderr, "transfuse shards cat: --fields: transfuse.v1.Sample has no field '%s'\n", *f);
                free(fields);
                dataset_free(&d);
                return 2;
            }
    }
    ShardArena arena;
    shard_arena_init(&arena, 1 << 20);
    int status = 0;
    if (index >= 0 || key) {
        ShardFile *f = NULL;
        uint64_t rec = 0;
        const uint8_t *payload;
        size_t len;
        ShardProblem p;
        if (find_record(&d, index, key, &f, &rec, &err)) {
            fprintf(stderr, "transfuse shards cat: %s\n", err.msg);
            status = 1;
        } else if (shard_file_get(f, rec, &payload, &len, &p) != 1) {
            char line[1024];
            shard_problem_format(&p, line, sizeof line);
            fprintf(stderr, "transfuse shards cat: %s\n", line);
            status = 1;
        } else if (raw) {
            status = fwrite(payload, 1, len, stdout) == len ? 0 : 1;
        } else if (print_record(payload, len, (const char *const *)fields, &arena)) {
            fprintf(stderr, "transfuse shards cat: %s: record %llu does not parse\n", shard_file_path(f),
                    (unsigned long long)rec);
            status = 1;
        }
        shard_file_free(f);
    } else {
        long printed = 0;
        for (size_t i = 0; i < d.n && (limit < 0 || printed < limit); i++) {
            ShardFile *f = shard_file_load(d.paths[i], &err);
            if (!f) {
                fprintf(stderr, "transfuse shards cat: %s\n", err.msg);
                status = 1;
                continue;
            }
            ShardCursor cur;
            shard_cursor_init(&cur, f);
            const uint8_t *payload;
            size_t len;
            ShardProblem p;
            int rc;
            while ((limit < 0 || printed < limit) && (rc = shard_cursor_next(&cur, &payload, &len, &p)) != 0) {
                if (rc > 0 && print_record(payload, len, (const char *const *)fields, &arena) == 0) {
                    printed++;
                    continue;
                }
                if (rc > 0) {
                    p.record = cur.record - 1;
                    p.offset = (uint64_t)(payload - shard_file_data(f)) - SHARD_FRAME_HEADER;
                    snprintf(p.shard, sizeof p.shard, "%s", shard_file_path(f));
                    snprintf(p.what, sizeof p.what, "payload is not a valid transfuse.v1.Sample");
                }
                char line[1024];
                shard_problem_format(&p, line, sizeof line);
                fprintf(stderr, "transfuse shards cat: %s\n", line);
                status = 1;
            }
            shard_file_free(f);
        }
    }
    fflush(stdout);
    free(fields);
    shard_arena_deinit(&arena);
    dataset_free(&d);
    return status;
}

/* ---- import ---- */

static const char IMPORT_HELP[] =
    "usage: transfuse shards import --out DIR [options] < records.jsonl\n\n"
    "Reads JSON lines in the form `shards cat` prints (proto field names,\n"
    "bytes in base64; at least `key` per record) and writes them to shard files\n"
    "with index and manifest in DIR (created if needed; an existing dataset is\n"
    "appended to, after its facts are checked). Bad lines are reported with\n"
    "their line number and skipped (exit 1), or abort the import with --strict\n"
    "(the shard in progress is then discarded, never published).\n\n"
    "  --out DIR             dataset folder (required)\n"
    "  --shard-size SIZE     roll shards at this many bytes (default 256M)\n"
    "  --shard-records N     roll shards at this many records (default 100000)\n"
    "  --prefix NAME         shard file names NAME-NNNNNN.tfrecord (default shard)\n"
    "  --facts FILE          dataset facts as JSON, in the manifest's \"facts\" form\n"
    "  --tokenizer-id ID     tokenizer identity to record (overrides --facts)\n"
    "  --vae-id ID           VAE identity to record (overrides --facts)\n"
    "  --strict              stop at the first bad line\n"
    "Latent dtype and shape are taken from the first record that has a latent\n"
    "when the facts do not give them.\n";

static int cmd_import(int argc, char **argv)
{
    const char *out = NULL, *facts_path = NULL, *tok_id = NULL, *vae_id = NULL;
    ShardWriterOptions wo = {0};
    int strict = 0;
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'},          {"shard-size", required_argument, 0, 's'},
        {"shard-records", required_argument, 0, 'n'}, {"prefix", required_argument, 0, 'p'},
        {"facts", required_argument, 0, 'F'},        {"tokenizer-id", required_argument, 0, 't'},
        {"vae-id", required_argument, 0, 'v'},       {"strict", no_argument, 0, 'S'},
        {"help", no_argument, 0, 'h'},               {0}};
    TfError err = {{0}};
    int c;
    long v;
    optind = 1;
    while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 's':
            if (tf_parse_size("--shard-size", optarg, &wo.max_shard_bytes, &err) || wo.max_shard_bytes < 1024) {
                print_usage_error("import", err.msg[0] ? err.msg : "--shard-size must be at least 1K");
                return 2;
            }
            break;
        case 'n':
            if (tf_parse_long("--shard-records", optarg, 1, LONG_MAX, &v, &err)) {
                print_usage_error("import", err.msg);
                return 2;
            }
            wo.max_shard_records = (uint64_t)v;
            break;
        case 'p': wo.name_prefix = optarg; break;
        case 'F': facts_path = optarg; break;
        case 't': tok_id = optarg; break;
        case 'v': vae_id = optarg; break;
        case 'S': strict = 1; break;
        case 'h': fputs(IMPORT_HELP, stdout); return 0;
        default: return 2;
        }
    }
    if (!out || optind != argc) {
        print_usage_error("import", out ? "takes no positional arguments (records come on stdin)" : "--out DIR is required");
        return 2;
    }
    ShardFacts facts = {0};
    if (facts_path) {
        json_t *fj = tf_json_load_file(facts_path, 1 << 20, &err);
        if (!fj || shard_facts_from_json(fj, &facts, &err)) {
            json_decref(fj);
            fprintf(stderr, "transfuse shards import: --facts %s: %s\n", facts_path, err.msg);
            return 2;
        }
        json_decref(fj);
    }
    if (tok_id)
        snprintf(facts.tokenizer_id, sizeof facts.tokenizer_id, "%s", tok_id);
    if (vae_id)
        snprintf(facts.vae_id, sizeof facts.vae_id, "%s", vae_id);

    ShardWriter *w = NULL;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    uint64_t lineno = 0, bad = 0, good = 0;
    int status = 0;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        lineno++;
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = 0;
        if (!n)
            continue;
        json_error_t je;
        json_t *j = json_loadb(line, (size_t)n, 0, &je);
        Sample *s = NULL;
        if (!j) {
            tf_fail(&err, "column %d: %s", je.column, je.text);
        } else if (!(s = (Sample *)shard_message_from_json(&transfuse__v1__sample__descriptor, j, &err))) {
            /* err filled */
        } else if (!s->key || !*s->key) {
            tf_fail(&err, "record has no \"key\"");
        } else if (s->latent_mean && tensor_problem(s->latent_mean)) {
            tf_fail(&err, "latent_mean: %s", tensor_problem(s->latent_mean));
        } else if (s->latent_logvar && tensor_problem(s->latent_logvar)) {
            tf_fail(&err, "latent_logvar: %s", tensor_problem(s->latent_logvar));
        } else {
            err.msg[0] = 0;
        }
        json_decref(j);
        if (err.msg[0]) {
            fprintf(stderr, "transfuse shards import: line %llu: %s\n", (unsigned long long)lineno, err.msg);
            sample_free(s);
            err.msg[0] = 0;
            bad++;
            status = 1;
            if (strict)
                goto abort;
            continue;
        }
        if (!w) { /* facts the flags did not give come from the first record */
            if (!*facts.latent_dtype && s->latent_mean) {
                snprintf(facts.latent_dtype, sizeof facts.latent_dtype, "%s", dtype_name(s->latent_mean->dtype));
                facts.latent_rank = s->latent_mean->n_shape <= 4 ? (int)s->latent_mean->n_shape : 0;
                for (int k = 0; k < facts.latent_rank; k++)
                    facts.latent_shape[k] = s->latent_mean->shape[k];
            }
            if (!(w = shard_writer_open(out, &wo, &facts, &err))) {
                fprintf(stderr, "transfuse shards import: %s\n", err.msg);
                sample_free(s);
                status = 1;
                goto abort;
            }
        }
        if (shard_writer_append_sample(w, s, &err)) {
            fprintf(stderr, "transfuse shards import: %s\n", err.msg);
            sample_free(s);
            status = 1;
            goto abort;
        }
        sample_free(s);
        good++;
    }
    if (!w && !(w = shard_writer_open(out, &wo, &facts, &err))) {
        fprintf(stderr, "transfuse shards import: %s\n", err.msg);
        status = 1;
        goto abort;
    }
    uint64_t shards_written = 0;
    if (shard_writer_flush(w, &err)) {
        fprintf(stderr, "transfuse shards import: %s\n", err.msg);
        status = 1;
        goto abort;
    }
    shards_written = shard_writer_shards(w);
    fprintf(stderr, "imported %llu records into %llu new shard%s in %s%s%llu bad line%s\n", (unsigned long long)good,
            (unsigned long long)shards_written, shards_written == 1 ? "" : "s", out, bad ? "; " : "; ",
            (unsigned long long)bad, bad == 1 ? "" : "s");
abort:
    shard_writer_free(w);
    free(line);
    return status;
}

/* ---- dispatch ---- */

static const TfCommand SHARDS_COMMANDS[] = {
    {"ls", "list shards with records, bytes, checksum and state (no payload reads)", cmd_ls},
    {"stat", "totals, latent shapes, caption/token distributions, provenance", cmd_stat},
    {"verify", "check every CRC, parse and count; exit 1 on any problem", cmd_verify},
    {"cat", "print records as JSON lines, or one record's raw bytes", cmd_cat},
    {"import", "write JSON lines from stdin into a dataset folder", cmd_import},
};

int shards_main(int argc, char **argv)
{
    size_t n = sizeof SHARDS_COMMANDS / sizeof SHARDS_COMMANDS[0];
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        FILE *o = argc < 2 ? stderr : stdout;
        fprintf(o, "usage: transfuse shards <command> [options] PATH\n\n"
                   "PATH is a dataset folder (shard files + manifest.json) or one shard file.\n\n"
                   "commands:\n");
        for (size_t i = 0; i < n; i++)
            fprintf(o, "  %-8s %s\n", SHARDS_COMMANDS[i].name, SHARDS_COMMANDS[i].summary);
        /* Kafka */
        fprintf(o, "\nOn Kafka topics (PATH = kafka://HOST:PORT/TOPIC): ls, cat and verify, and\n"
                   "  %-8s %s\n  %-8s %s\n  %-8s %s\n",
                "publish", "publish a dataset folder to a topic (DIR --to kafka://...)", "archive",
                "write a topic range into shard files with a manifest (--out DIR)", "create",
                "create a topic on a real cluster (--partitions N)");
        fprintf(o, "\nRun `transfuse shards <command> --help` for its options.\n");
        return argc < 2 ? 2 : 0;
    }
    /* ---- Kafka (shards/cli_kafka.c): kafka:// paths, publish, archive, create ---- */
    if (shards_kafka_wants(argc, argv))
        return shards_kafka_main(argc, argv);
    /* ---- end Kafka ---- */
    for (size_t i = 0; i < n; i++)
        if (!strcmp(argv[1], SHARDS_COMMANDS[i].name))
            return SHARDS_COMMANDS[i].run(argc - 1, argv + 1);
    fprintf(stderr, "transfuse shards: unknown command '%s' (see transfuse shards --help)\n", argv[1]);
    return 2;
}
